//! The webhook side: notifications built exactly as Meta sends them
//! (`object`, `entry[].changes[].value` with `metadata`, `contacts`,
//! `messages` or `statuses`), signed with the app secret
//! (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw bytes>`), and
//! POSTed to the server under test.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::error::WebhookError;
use super::record::SentKind;
use super::state::State;
use super::{MockWhatsApp, lock};

/// The profile name of a user no notification named.
pub const DEFAULT_PROFILE_NAME: &str = "Mock User";

/// One status of a sent message, for [`NotificationBuilder::status`].
///
/// ```
/// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, StatusKind};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// let read = mock.notification().status("wamid.x", StatusKind::Read).build();
/// assert_eq!(read.json()["entry"][0]["changes"][0]["value"]["statuses"][0]["status"], "read");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusKind {
    /// `"sent"`: the message left WhatsApp's servers.
    Sent,
    /// `"delivered"`: it reached the user's device.
    Delivered,
    /// `"read"`: the user opened it.
    Read,
}

impl StatusKind {
    fn as_str(self) -> &'static str {
        match self {
            StatusKind::Sent => "sent",
            StatusKind::Delivered => "delivered",
            StatusKind::Read => "read",
        }
    }
}

/// A notification built by [`NotificationBuilder::build`]: its exact bytes,
/// their signature, and the ids of the messages it carries. Post it with
/// [`MockWhatsApp::post`], or post [`Notification::body`] yourself (with a bad
/// signature, twice, out of order, …).
///
/// ```
/// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// let notification = mock.notification().text("15551234567", "Hi").build();
/// assert_eq!(notification.json()["object"], "whatsapp_business_account");
/// assert_eq!(notification.signature(), mock.sign(notification.body()));
/// assert_eq!(notification.message_ids().len(), 1);
/// assert_eq!(mock.built(notification.id()), Some(notification));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    id: String,
    body: Vec<u8>,
    signature: String,
    message_ids: Vec<String>,
}

impl Notification {
    /// The mock's id for it, for [`MockWhatsApp::redeliver`] (not part of the payload).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw bytes, as posted.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The payload as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `X-Hub-Signature-256` header value: `sha256=<64 hex digits>`.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The `wamid`s of the inbound messages it carries, in order.
    pub fn message_ids(&self) -> &[String] {
        &self.message_ids
    }
}

/// What the server under test answered to a posted notification.
///
/// ```no_run
/// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// let posted = mock
///     .post_text("http://127.0.0.1:8080/webhooks/whatsapp", "15551234567", "Ana", "Hi")
///     .await?;
/// assert_eq!(posted.status, 200, "answered: {}", posted.body);
/// println!("message {} in notification {}", posted.message_ids[0], posted.notification_id);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookPost {
    /// The notification posted (for [`MockWhatsApp::redeliver`]).
    pub notification_id: String,
    /// The `wamid`s of its inbound messages.
    pub message_ids: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The body answered, as text.
    pub body: String,
}

/// What a server answered to the verification handshake
/// ([`MockWhatsApp::verify_webhook`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    /// The HTTP status answered.
    pub status: u16,
    /// The body answered.
    pub body: String,
    /// The `hub.challenge` sent.
    pub challenge: String,
}

impl Verification {
    /// 200 with the challenge, exactly, as the body: what Meta requires.
    ///
    /// ```
    /// # use chatflow::mock::whatsapp::Verification;
    /// fn subscribed(answer: &Verification) -> bool {
    ///     answer.accepted()
    /// }
    /// ```
    pub fn accepted(&self) -> bool {
        self.status == 200 && self.body == self.challenge
    }
}

/// Builds one notification; see [`MockWhatsApp::notification`]. Every
/// message and status goes into one entry: messages (with their contacts) in
/// one change, statuses in another, as Meta sends them.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, StatusKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
/// let notification = mock
///     .notification()
///     .at(an_hour_ago)
///     .contact("15551234567", "Ana")
///     .text("15551234567", "Hi")
///     .button_reply("15551234567", "track", "Track an order")
///     .list_reply("15551234567", "agent", "Talk to a person", Some("Mon-Fri"))
///     .status("wamid.sent-earlier", StatusKind::Delivered)
///     .failed("wamid.sent-earlier", 131026)
///     .build();
/// let value = &notification.json()["entry"][0]["changes"][0]["value"];
/// assert_eq!(value["contacts"][0]["profile"]["name"], "Ana");
/// assert_eq!(value["messages"].as_array().map(Vec::len), Some(3));
/// assert_eq!(mock.last_inbound("15551234567"), Some(an_hour_ago));
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a notification is only built by build()"]
pub struct NotificationBuilder<'m> {
    mock: &'m MockWhatsApp,
    at: Option<SystemTime>,
    names: Vec<(String, String)>,
    messages: Vec<(String, Value)>,
    statuses: Vec<Value>,
}

impl<'m> NotificationBuilder<'m> {
    pub(super) fn new(mock: &'m MockWhatsApp) -> Self {
        NotificationBuilder {
            mock,
            at: None,
            names: Vec::new(),
            messages: Vec::new(),
            statuses: Vec::new(),
        }
    }

    /// The time of every message and status in it (default: the mock's clock now).
    /// The 24-hour window counts from a message's time.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = Some(at);
        self
    }

    /// The profile name of `wa_id` (remembered for later notifications;
    /// default [`DEFAULT_PROFILE_NAME`]).
    pub fn contact(mut self, wa_id: &str, name: &str) -> Self {
        self.names.push((wa_id.to_owned(), name.to_owned()));
        self
    }

    /// A text message from `wa_id`.
    pub fn text(self, wa_id: &str, text: &str) -> Self {
        self.message(wa_id, json!({"type": "text", "text": {"body": text}}))
    }

    /// A tap on a reply button (`interactive.button_reply`), in reply to the
    /// last interactive message the mock accepted for `wa_id`.
    pub fn button_reply(self, wa_id: &str, id: &str, title: &str) -> Self {
        let message = json!({
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}},
        });
        self.reply(wa_id, message)
    }

    /// A choice in a list (`interactive.list_reply`), in reply to the last
    /// interactive message the mock accepted for `wa_id`.
    pub fn list_reply(self, wa_id: &str, id: &str, title: &str, description: Option<&str>) -> Self {
        let mut reply = json!({"id": id, "title": title});
        if let (Some(description), Some(object)) = (description, reply.as_object_mut()) {
            object.insert("description".to_owned(), description.into());
        }
        let message = json!({
            "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": reply},
        });
        self.reply(wa_id, message)
    }

    fn reply(self, wa_id: &str, mut message: Value) -> Self {
        let state = lock(&self.mock.state);
        let last = state
            .sent
            .iter()
            .rev()
            .find(|s| s.wa_id == wa_id && matches!(s.kind, SentKind::ReplyButtons | SentKind::List));
        if let (Some(sent), Some(object)) = (last, message.as_object_mut()) {
            object.insert(
                "context".to_owned(),
                json!({"from": state.config.display_phone_number, "id": sent.wamid}),
            );
        }
        drop(state);
        self.message(wa_id, message)
    }

    /// Any message from `wa_id`: its `type` and type object (and `context`,
    /// …). `from`, `id` and `timestamp` are filled in unless present.
    ///
    /// ```
    /// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let notification = mock
    ///     .notification()
    ///     .message("15551234567", json!({
    ///         "type": "location",
    ///         "location": {"latitude": 38.72, "longitude": -9.14, "name": "Lisbon"},
    ///     }))
    ///     .build();
    /// let message = &notification.json()["entry"][0]["changes"][0]["value"]["messages"][0];
    /// assert_eq!(message["from"], "15551234567");
    /// assert_eq!(message["location"]["name"], "Lisbon");
    /// # }
    /// ```
    pub fn message(mut self, wa_id: &str, message: Value) -> Self {
        self.messages.push((wa_id.to_owned(), message));
        self
    }

    /// A status of a message the mock accepted (`recipient_id` is its
    /// recipient; an unknown `wamid` gets an empty one).
    pub fn status(mut self, wamid: &str, status: StatusKind) -> Self {
        self.statuses.push(status_json(wamid, status));
        self
    }

    /// A `failed` status with one error of `code` (131047, 131026, …): a
    /// send the API accepted that could not be delivered.
    pub fn failed(mut self, wamid: &str, code: i64) -> Self {
        let title = error_title(code);
        self.statuses.push(json!({
            "id": wamid,
            "status": "failed",
            "errors": [{
                "code": code,
                "title": title,
                "message": title,
                "error_data": {"details": format!("{title} (mock failure, code {code}).")},
            }],
        }));
        self
    }

    /// Builds the payload and signs it. Its messages count as the users'
    /// last inbound messages for the 24-hour window from now on, posted or not.
    pub fn build(self) -> Notification {
        let mut state = lock(&self.mock.state);
        assemble(&mut state, self.at, self.names, &self.messages, self.statuses)
    }
}

/// The payload of a notification, signed and kept for redelivery; its
/// messages noted as inbound.
pub(crate) fn assemble(
    state: &mut State,
    at: Option<SystemTime>,
    names: Vec<(String, String)>,
    inbound: &[(String, Value)],
    statuses: Vec<Value>,
) -> Notification {
    let at = at.unwrap_or_else(|| state.now());
    let timestamp = unix_seconds(at).to_string();
    for (wa_id, name) in names {
        state.names.insert(wa_id, name);
    }
    let metadata = json!({
        "display_phone_number": state.config.display_phone_number,
        "phone_number_id": state.config.phone_number_id,
    });

    let mut contacts: Vec<Value> = Vec::new();
    let mut seen_contacts: Vec<&str> = Vec::new();
    let mut messages = Vec::with_capacity(inbound.len());
    let mut message_ids = Vec::with_capacity(inbound.len());
    for (wa_id, message) in inbound {
        let mut object = match message {
            Value::Object(object) => object.clone(),
            other => {
                let mut object = Map::new();
                object.insert("type".to_owned(), "unsupported".into());
                object.insert("unsupported".to_owned(), json!({"value": other}));
                object
            }
        };
        object.entry("from").or_insert_with(|| wa_id.as_str().into());
        let id = match object.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                let id = state.next_id("wamid.MOCKIN");
                object.insert("id".to_owned(), id.as_str().into());
                id
            }
        };
        object
            .entry("timestamp")
            .or_insert_with(|| timestamp.as_str().into());
        state.inbound_ids.insert(id.clone());
        state.note_inbound(wa_id, at);
        message_ids.push(id);
        messages.push(Value::Object(object));
        if !seen_contacts.contains(&wa_id.as_str()) {
            seen_contacts.push(wa_id);
            let name = state
                .names
                .get(wa_id)
                .map_or(DEFAULT_PROFILE_NAME, String::as_str);
            contacts.push(json!({"profile": {"name": name}, "wa_id": wa_id}));
        }
    }

    let statuses: Vec<Value> = statuses
        .into_iter()
        .map(|mut status| {
            let recipient = status
                .get("id")
                .and_then(Value::as_str)
                .and_then(|wamid| state.sent.iter().find(|s| s.wamid == wamid))
                .map(|s| s.wa_id.clone())
                .unwrap_or_default();
            if let Some(object) = status.as_object_mut() {
                object.insert("timestamp".to_owned(), timestamp.as_str().into());
                object.insert("recipient_id".to_owned(), recipient.into());
            }
            status
        })
        .collect();

    let mut changes = Vec::new();
    if !messages.is_empty() {
        changes.push(json!({"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": metadata,
            "contacts": contacts,
            "messages": messages,
        }}));
    }
    if !statuses.is_empty() {
        changes.push(json!({"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": metadata,
            "statuses": statuses,
        }}));
    }
    let payload = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": state.config.business_account_id, "changes": changes}],
    });
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let signature = signature(&state.config.app_secret, &body);
    let id = state.next_id("notification-");
    state.notifications.insert(id.clone(), body.clone());
    Notification {
        id,
        body,
        signature,
        message_ids,
    }
}

/// A status before its `timestamp` and `recipient_id` are filled in.
pub(crate) fn status_json(wamid: &str, status: StatusKind) -> Value {
    json!({"id": wamid, "status": status.as_str()})
}

/// Posts from inside the Graph responder, which is synchronous: on a thread
/// of its own with its own runtime, waited for, so that the notification
/// reaches the server before the send is answered. A failure is logged.
pub(crate) fn post_blocking(url: &str, notification: &Notification) {
    let url = url.to_owned();
    let body = notification.body().to_vec();
    let signature = notification.signature().to_owned();
    let posted = std::thread::spawn(move || -> Result<u16, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client = super::http_client().map_err(|e| e.to_string())?;
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .header("user-agent", "facebookexternalua")
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok(response.status().as_u16())
        })
    })
    .join();
    match posted {
        Ok(Ok(status)) => tracing::debug!(status, "mock WhatsApp posted a status before answering the send"),
        Ok(Err(error)) => tracing::warn!(%error, "mock WhatsApp could not post a status before answering"),
        Err(_) => tracing::warn!("mock WhatsApp's status poster panicked"),
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of every length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The titles Meta gives the error codes a status may carry.
fn error_title(code: i64) -> &'static str {
    match code {
        131_047 => "Re-engagement message",
        131_026 => "Message undeliverable",
        131_056 => "(Business Account, Consumer Account) pair rate limit hit",
        130_429 => "Rate limit hit",
        131_000 => "Something went wrong",
        131_049 => "This message was not delivered to maintain healthy ecosystem engagement.",
        _ => "Message failed to send",
    }
}

impl MockWhatsApp {
    /// Starts a notification to build (and post yourself, or with [`MockWhatsApp::post`]).
    ///
    /// ```
    /// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let notification = mock
    ///     .notification()
    ///     .contact("15551234567", "Ana")
    ///     .text("15551234567", "Hello")
    ///     .text("15551234567", "Are you there?")
    ///     .build();
    /// assert_eq!(notification.message_ids().len(), 2);
    /// assert!(notification.signature().starts_with("sha256="));
    /// // Post it yourself, e.g. with a wrong signature:
    /// let _ = reqwest::Client::new()
    ///     .post("http://127.0.0.1:9/webhooks/whatsapp")
    ///     .header("X-Hub-Signature-256", "sha256=00")
    ///     .body(notification.body().to_vec());
    /// # }
    /// ```
    pub fn notification(&self) -> NotificationBuilder<'_> {
        NotificationBuilder::new(self)
    }

    /// The `X-Hub-Signature-256` value for `body` with the mock's app secret.
    ///
    /// ```
    /// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockWhatsApp::start(MockWhatsAppConfig::new().app_secret("s3cret")).await;
    /// let signature = mock.sign(b"{}");
    /// assert_eq!(signature.len(), "sha256=".len() + 64);
    /// # }
    /// ```
    pub fn sign(&self, body: &[u8]) -> String {
        signature(&lock(&self.state).config.app_secret, body)
    }

    /// Posts a built notification to `url` (the server's webhook route), signed.
    ///
    /// ```no_run
    /// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let notification = mock.notification().text("15551234567", "Hi").build();
    /// let posted = mock.post("http://127.0.0.1:8080/webhooks/whatsapp", &notification).await?;
    /// assert_eq!(posted.status, 200);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn post(&self, url: &str, notification: &Notification) -> Result<WebhookPost, WebhookError> {
        let client = match &self.client {
            Some(client) => client.clone(),
            None => super::http_client().map_err(WebhookError::Client)?,
        };
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", notification.signature())
            .header("user-agent", "facebookexternalua")
            .body(notification.body().to_vec())
            .send()
            .await
            .map_err(|source| WebhookError::Http {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Ok(WebhookPost {
            notification_id: notification.id().to_owned(),
            message_ids: notification.message_ids().to_vec(),
            status,
            body,
        })
    }

    /// Posts a text message from `wa_id` (profile `name`) to `url`.
    ///
    /// ```no_run
    /// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let url = "http://127.0.0.1:8080/webhooks/whatsapp";
    /// let posted = mock.post_text(url, "15551234567", "Ana", "Where is my order?").await?;
    /// assert_eq!(posted.status, 200);
    /// // The user just wrote: free-form answers may reach them for 24 hours.
    /// assert!(mock.last_inbound("15551234567").is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn post_text(
        &self,
        url: &str,
        wa_id: &str,
        name: &str,
        text: &str,
    ) -> Result<WebhookPost, WebhookError> {
        let notification = self.notification().contact(wa_id, name).text(wa_id, text).build();
        self.post(url, &notification).await
    }

    /// Posts a tap on the reply button `id` (titled `title`) from `wa_id`.
    ///
    /// ```no_run
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let url = "http://127.0.0.1:8080/webhooks/whatsapp";
    /// mock.post_button_reply(url, "15551234567", "track", "Track an order").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn post_button_reply(
        &self,
        url: &str,
        wa_id: &str,
        id: &str,
        title: &str,
    ) -> Result<WebhookPost, WebhookError> {
        let notification = self.notification().button_reply(wa_id, id, title).build();
        self.post(url, &notification).await
    }

    /// Posts a choice of the list row `id` from `wa_id`.
    ///
    /// ```no_run
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let url = "http://127.0.0.1:8080/webhooks/whatsapp";
    /// mock.post_list_reply(url, "15551234567", "agent", "Talk to a person", None).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn post_list_reply(
        &self,
        url: &str,
        wa_id: &str,
        id: &str,
        title: &str,
        description: Option<&str>,
    ) -> Result<WebhookPost, WebhookError> {
        let notification = self
            .notification()
            .list_reply(wa_id, id, title, description)
            .build();
        self.post(url, &notification).await
    }

    /// Posts `sent`, `delivered` and `read` statuses for every accepted send
    /// whose statuses were not posted yet (or whose post failed), in one
    /// notification. [`WebhookError::NothingToReport`] when there is none.
    ///
    /// ```no_run
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// // ... after the server under test sent its replies:
    /// mock.post_statuses("http://127.0.0.1:8080/webhooks/whatsapp").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn post_statuses(&self, url: &str) -> Result<WebhookPost, WebhookError> {
        let pending: Vec<String> = {
            let state = lock(&self.state);
            state
                .sent
                .iter()
                .filter(|s| !state.reported.contains(&s.wamid))
                .map(|s| s.wamid.clone())
                .collect()
        };
        if pending.is_empty() {
            return Err(WebhookError::NothingToReport);
        }
        let mut builder = self.notification();
        for wamid in &pending {
            for status in [StatusKind::Sent, StatusKind::Delivered, StatusKind::Read] {
                builder = builder.status(wamid, status);
            }
        }
        let notification = builder.build();
        let posted = self.post(url, &notification).await?;
        // Reported once the server answered, whatever it answered.
        lock(&self.state).reported.extend(pending);
        Ok(posted)
    }

    /// Posts a `failed` status with error `code` for the send `wamid`.
    ///
    /// ```no_run
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let url = "http://127.0.0.1:8080/webhooks/whatsapp";
    /// if let Some(sent) = mock.sent().last() {
    ///     mock.post_failed(url, &sent.wamid, 131026).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn post_failed(&self, url: &str, wamid: &str, code: i64) -> Result<WebhookPost, WebhookError> {
        let notification = self.notification().failed(wamid, code).build();
        self.post(url, &notification).await
    }

    /// Posts the notification `notification_id` again: the same bytes and
    /// signature, as Meta redelivers.
    ///
    /// ```no_run
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let url = "http://127.0.0.1:8080/webhooks/whatsapp";
    /// let first = mock.post_text(url, "15551234567", "Ana", "Hi").await?;
    /// let again = mock.redeliver(url, &first.notification_id).await?;
    /// assert_eq!(again.message_ids, first.message_ids);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn redeliver(&self, url: &str, notification_id: &str) -> Result<WebhookPost, WebhookError> {
        let notification = self
            .built(notification_id)
            .ok_or_else(|| WebhookError::UnknownNotification {
                id: notification_id.to_owned(),
            })?;
        self.post(url, &notification).await
    }

    /// Performs Meta's verification handshake against `url`: `GET
    /// url?hub.mode=subscribe&hub.verify_token=<verify_token>&hub.challenge=<n>`.
    /// A server should answer 200 with the challenge as its body for the right
    /// token ([`Verification::accepted`]), 403 otherwise.
    ///
    /// ```no_run
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let url = "http://127.0.0.1:8080/webhooks/whatsapp";
    /// assert!(mock.verify_webhook(url, "my-verify-token").await?.accepted());
    /// assert_eq!(mock.verify_webhook(url, "wrong").await?.status, 403);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify_webhook(&self, url: &str, verify_token: &str) -> Result<Verification, WebhookError> {
        let client = match &self.client {
            Some(client) => client.clone(),
            None => super::http_client().map_err(WebhookError::Client)?,
        };
        let challenge = fastrand::u32(1_000_000..u32::MAX).to_string();
        // A URL reqwest cannot parse fails like an unreachable one, in send().
        let target = match reqwest::Url::parse(url) {
            Ok(mut target) => {
                target
                    .query_pairs_mut()
                    .append_pair("hub.mode", "subscribe")
                    .append_pair("hub.verify_token", verify_token)
                    .append_pair("hub.challenge", &challenge);
                target.to_string()
            }
            Err(_) => url.to_owned(),
        };
        let response = client
            .get(target)
            .header(
                "user-agent",
                "facebookplatform/1.0 (+http://developers.facebook.com)",
            )
            .send()
            .await
            .map_err(|source| WebhookError::Http {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Ok(Verification {
            status,
            body,
            challenge,
        })
    }

    /// A notification built earlier, by id (the same bytes).
    ///
    /// ```
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let built = mock.notification().text("15551234567", "Hi").build();
    /// assert_eq!(mock.built(built.id()), Some(built));
    /// # }
    /// ```
    pub fn built(&self, notification_id: &str) -> Option<Notification> {
        let state = lock(&self.state);
        let body = state.notifications.get(notification_id)?.clone();
        let message_ids = match serde_json::from_slice::<Value>(&body) {
            Ok(payload) => inbound_ids(&payload),
            Err(_) => Vec::new(),
        };
        Some(Notification {
            id: notification_id.to_owned(),
            signature: signature(&state.config.app_secret, &body),
            body,
            message_ids,
        })
    }
}

/// The message ids of a payload, in order.
fn inbound_ids(payload: &Value) -> Vec<String> {
    let entries = payload["entry"].as_array().into_iter().flatten();
    let changes = entries.flat_map(|e| e["changes"].as_array().into_iter().flatten());
    changes
        .flat_map(|c| c["value"]["messages"].as_array().into_iter().flatten())
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}
