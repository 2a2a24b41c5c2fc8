//! A stateful stand-in of the WhatsApp Cloud API for your tests (feature `mock`).
//!
//! [`MockWhatsApp`] plays both of Meta's parts:
//!
//! - **The Graph API** your channel sends to: `POST /v23.0/{phone-number-id}/messages`
//!   under [`MockWhatsApp::uri`] (give it as `WHATSAPP_GRAPH_URL`). Sends are
//!   checked as the real API checks them, independently of chatflow's own
//!   channel: the bearer token (401, code 190), the phone number id (400,
//!   code 100), the body against Meta's published schema with Prism's reading
//!   (`recipient_type: "individual"` required, unknown keys refused) and the
//!   documented limits (text ≤ 4,096 characters; ≤ 3 reply buttons, title ≤ 20,
//!   id ≤ 256, body ≤ 1,024; a list of ≤ 10 rows in all, row title ≤ 24,
//!   description ≤ 72, menu label ≤ 20; a template's `name` and
//!   `language.code` and `language.policy`), each breach a 400 with code 100
//!   naming the parameter; and the **24-hour window**: a message other than a
//!   template to a user whose last message is more than 24 hours old on the
//!   mock's clock (or who never wrote) gets 400 with code 131047. Accepted
//!   sends answer `{"messaging_product", "contacts": [{"input", "wa_id"}],
//!   "messages": [{"id": "wamid.…"}]}` and are recorded ([`MockWhatsApp::sent`]);
//!   mark-as-read bodies answer `{"success": true}` and are recorded apart
//!   ([`MockWhatsApp::reads`]); every request is logged with its status
//!   ([`MockWhatsApp::requests`]). [`MockWhatsApp::fail_next`] injects
//!   130429, 131056, 131047 or 500 into the next sends.
//! - **The webhook sender**: notifications shaped as Meta sends them, signed
//!   with the app secret (`X-Hub-Signature-256`), posted to the server under
//!   test ([`MockWhatsApp::post_text`], [`MockWhatsApp::post_button_reply`],
//!   [`MockWhatsApp::post_statuses`], [`MockWhatsApp::redeliver`], …) or
//!   built for you to post ([`MockWhatsApp::notification`]). Every inbound
//!   message it builds opens that user's 24-hour window. It also performs
//!   the verification handshake ([`MockWhatsApp::verify_webhook`]), and can
//!   post each send's `sent` status before answering the send
//!   ([`MockWhatsAppConfig::statuses_before_answers`]).
//!
//! Errors have Graph's shape: `{"error": {"message", "type", "code",
//! "error_data": {"messaging_product", "details"}, "fbtrace_id"}}`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use chatflow::{Clock, VirtualClock};
//! use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = Arc::new(VirtualClock::new());
//! let mock = MockWhatsApp::start(MockWhatsAppConfig::new().clock(clock.clone())).await;
//!
//! // The user wrote (a webhook the mock posted would do the same).
//! mock.note_inbound("15551234567", clock.now());
//!
//! let send = |text: &str| {
//!     reqwest::Client::new()
//!         .post(mock.messages_url())
//!         .bearer_auth(mock.access_token())
//!         .header("content-type", "application/json")
//!         .body(
//!             json!({
//!                 "messaging_product": "whatsapp",
//!                 "recipient_type": "individual",
//!                 "to": "15551234567",
//!                 "type": "text",
//!                 "text": {"body": text},
//!             })
//!             .to_string(),
//!         )
//!         .send()
//! };
//! assert_eq!(send("Your order left today.").await?.status(), 200);
//! assert_eq!(mock.texts_to("15551234567"), ["Your order left today."]);
//!
//! // A day later the window has closed: only a template may go out.
//! clock.advance(Duration::from_secs(25 * 3600));
//! let refused = send("Still there?").await?;
//! assert_eq!(refused.status(), 400);
//! let body: serde_json::Value = serde_json::from_str(&refused.text().await?)?;
//! assert_eq!(body["error"]["code"], 131047);
//! # Ok(())
//! # }
//! ```

mod error;
mod fault;
mod record;
mod send;
mod state;
mod webhook;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::{Clock, SystemClock};

pub use error::WebhookError;
pub use fault::SendFault;
pub use record::{GraphRequest, ReadReceipt, SentKind, SentMessage, SentOption, SentTemplate};
pub use webhook::{
    DEFAULT_PROFILE_NAME, Notification, NotificationBuilder, StatusKind, Verification, WebhookPost,
};

use state::State;

/// The access token the mock accepts unless configured otherwise.
pub const DEFAULT_ACCESS_TOKEN: &str = "EAAMOCK-access-token";
/// The phone number id the mock serves unless configured otherwise.
pub const DEFAULT_PHONE_NUMBER_ID: &str = "106540352242922";
/// The app secret webhooks are signed with unless configured otherwise.
pub const DEFAULT_APP_SECRET: &str = "mock-app-secret";
/// The Graph API version in [`MockWhatsApp::uri`].
pub const GRAPH_VERSION: &str = state::VERSION;
/// How long after a user's last message free-form messages may reach them.
pub const CUSTOMER_SERVICE_WINDOW: Duration = state::WINDOW;

/// What a [`MockWhatsApp`] is: its credentials, its number, its clock.
///
/// ```
/// use std::sync::Arc;
/// use chatflow::VirtualClock;
/// use chatflow::mock::whatsapp::MockWhatsAppConfig;
///
/// let config = MockWhatsAppConfig::new()
///     .access_token("EAAtest")
///     .phone_number_id("1234567890")
///     .app_secret("shh")
///     .clock(Arc::new(VirtualClock::new()));
/// // Secrets never print.
/// assert!(!format!("{config:?}").contains("EAAtest"));
/// assert!(!format!("{config:?}").contains("shh"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MockWhatsAppConfig {
    /// The bearer token sends must carry (default [`DEFAULT_ACCESS_TOKEN`]).
    pub access_token: String,
    /// The only phone number id sends may name (default [`DEFAULT_PHONE_NUMBER_ID`]).
    pub phone_number_id: String,
    /// The key of the webhooks' HMAC (default [`DEFAULT_APP_SECRET`]).
    pub app_secret: String,
    /// `metadata.display_phone_number` in notifications.
    pub display_phone_number: String,
    /// `entry[].id` in notifications: the WhatsApp Business Account id.
    pub business_account_id: String,
    /// The clock of the 24-hour window, of timestamps and records (default
    /// [`SystemClock`]; give tests a [`crate::VirtualClock`]).
    pub clock: Arc<dyn Clock>,
    /// Where to post each accepted send's `sent` status before answering the
    /// send (default: nowhere); see [`MockWhatsAppConfig::statuses_before_answers`].
    pub statuses_before_answers: Option<String>,
}

impl MockWhatsAppConfig {
    /// The defaults: [`DEFAULT_ACCESS_TOKEN`], [`DEFAULT_PHONE_NUMBER_ID`],
    /// [`DEFAULT_APP_SECRET`], the system clock.
    pub fn new() -> Self {
        MockWhatsAppConfig {
            access_token: DEFAULT_ACCESS_TOKEN.to_owned(),
            phone_number_id: DEFAULT_PHONE_NUMBER_ID.to_owned(),
            app_secret: DEFAULT_APP_SECRET.to_owned(),
            display_phone_number: "15550783881".to_owned(),
            business_account_id: "102290129340398".to_owned(),
            clock: Arc::new(SystemClock),
            statuses_before_answers: None,
        }
    }

    /// Sets the access token.
    pub fn access_token(mut self, token: impl Into<String>) -> Self {
        self.access_token = token.into();
        self
    }

    /// Sets the phone number id.
    pub fn phone_number_id(mut self, id: impl Into<String>) -> Self {
        self.phone_number_id = id.into();
        self
    }

    /// Sets the app secret.
    pub fn app_secret(mut self, secret: impl Into<String>) -> Self {
        self.app_secret = secret.into();
        self
    }

    /// Sets the display phone number of notifications.
    pub fn display_phone_number(mut self, number: impl Into<String>) -> Self {
        self.display_phone_number = number.into();
        self
    }

    /// Sets the business account id of notifications.
    pub fn business_account_id(mut self, id: impl Into<String>) -> Self {
        self.business_account_id = id.into();
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Posts each accepted send's `sent` status (signed, as any notification)
    /// to `url`, the webhook route of the server under test, and answers the
    /// send only once that post was answered: the server sees the status of a
    /// message whose id its send has not returned yet, as happens with Meta.
    ///
    /// ```
    /// use chatflow::mock::whatsapp::MockWhatsAppConfig;
    ///
    /// let config = MockWhatsAppConfig::new()
    ///     .statuses_before_answers("http://127.0.0.1:8080/webhooks/whatsapp");
    /// assert!(config.statuses_before_answers.is_some());
    /// ```
    pub fn statuses_before_answers(mut self, url: impl Into<String>) -> Self {
        self.statuses_before_answers = Some(url.into());
        self
    }
}

impl Default for MockWhatsAppConfig {
    fn default() -> Self {
        MockWhatsAppConfig::new()
    }
}

impl fmt::Debug for MockWhatsAppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockWhatsAppConfig")
            .field("access_token", &"<redacted>")
            .field("phone_number_id", &self.phone_number_id)
            .field("app_secret", &"<redacted>")
            .field("display_phone_number", &self.display_phone_number)
            .field("business_account_id", &self.business_account_id)
            .field("statuses_before_answers", &self.statuses_before_answers)
            .finish_non_exhaustive()
    }
}

/// A running WhatsApp Cloud API stand-in. Dropping it stops the server.
/// See the [module documentation](self) for what it checks.
///
/// ```
/// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, SentKind};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// // What the code under test is given:
/// let graph_url = mock.uri(); // WHATSAPP_GRAPH_URL
/// let (token, number) = (mock.access_token(), mock.phone_number_id());
///
/// mock.note_inbound("15551234567", std::time::SystemTime::now());
/// let body = json!({
///     "messaging_product": "whatsapp",
///     "recipient_type": "individual",
///     "to": "15551234567",
///     "type": "interactive",
///     "interactive": {
///         "type": "button",
///         "body": {"text": "How can I help?"},
///         "action": {"buttons": [
///             {"type": "reply", "reply": {"id": "track", "title": "Track an order"}},
///             {"type": "reply", "reply": {"id": "agent", "title": "Talk to a person"}},
///         ]},
///     },
/// });
/// let answer = reqwest::Client::new()
///     .post(format!("{graph_url}/{number}/messages"))
///     .bearer_auth(token)
///     .header("content-type", "application/json")
///     .body(body.to_string())
///     .send()
///     .await?;
/// assert_eq!(answer.status(), 200);
///
/// let sent = &mock.sent()[0];
/// assert_eq!(sent.kind, SentKind::ReplyButtons);
/// assert_eq!(sent.text.as_deref(), Some("How can I help?"));
/// assert_eq!(sent.options[1].id, "agent");
/// assert_eq!(sent.body, body);
/// assert_eq!(mock.sent_to("15551234567").len(), 1);
/// assert_eq!(mock.requests()[0].status, 200);
/// assert!(mock.reads().is_empty());
/// # Ok(())
/// # }
/// ```
pub struct MockWhatsApp {
    server: MockServer,
    state: Arc<Mutex<State>>,
    /// For posting webhooks; `None` if it could not be built (then each post
    /// tries again and reports why).
    client: Option<reqwest::Client>,
}

impl MockWhatsApp {
    /// Starts the mock on a free local port. Needs a Tokio runtime.
    ///
    /// ```
    /// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mock = MockWhatsApp::start(MockWhatsAppConfig::new().phone_number_id("42")).await;
    /// assert!(mock.uri().ends_with("/v23.0"));
    /// assert_eq!(mock.messages_url(), format!("{}/42/messages", mock.uri()));
    /// # }
    /// ```
    pub async fn start(config: MockWhatsAppConfig) -> MockWhatsApp {
        let state = Arc::new(Mutex::new(State::new(config)));
        // A server of its own rather than one from wiremock's pool, so that
        // dropping the mock really shuts it down. The mock keeps its own log.
        let server = MockServer::builder().disable_request_recording().start().await;
        Mock::given(any())
            .respond_with(Responder {
                state: Arc::clone(&state),
            })
            .named("chatflow mock WhatsApp Cloud API")
            .mount(&server)
            .await;
        MockWhatsApp {
            server,
            state,
            client: http_client().ok(),
        }
    }

    /// The Graph API base URL, with the version: `http://127.0.0.1:PORT/v23.0`
    /// (what a channel takes as `WHATSAPP_GRAPH_URL`).
    pub fn uri(&self) -> String {
        format!("{}/{GRAPH_VERSION}", self.server.uri())
    }

    /// Where sends go: `{uri}/{phone_number_id}/messages`.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/{}/messages",
            self.uri(),
            lock(&self.state).config.phone_number_id
        )
    }

    /// The access token sends must carry.
    pub fn access_token(&self) -> String {
        lock(&self.state).config.access_token.clone()
    }

    /// The phone number id sends must name.
    pub fn phone_number_id(&self) -> String {
        lock(&self.state).config.phone_number_id.clone()
    }

    /// The app secret webhooks are signed with.
    pub fn app_secret(&self) -> String {
        lock(&self.state).config.app_secret.clone()
    }

    /// Every send accepted so far, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.state).sent.clone()
    }

    /// The accepted sends to `wa_id` (digits only), in order.
    pub fn sent_to(&self, wa_id: &str) -> Vec<SentMessage> {
        lock(&self.state)
            .sent
            .iter()
            .filter(|s| s.wa_id == wa_id)
            .cloned()
            .collect()
    }

    /// The texts of the accepted sends to `wa_id`, in order: a text message's
    /// body, an interactive message's body text, a caption (templates have none).
    ///
    /// ```
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// assert!(mock.texts_to("15551234567").is_empty());
    /// # }
    /// ```
    pub fn texts_to(&self, wa_id: &str) -> Vec<String> {
        lock(&self.state)
            .sent
            .iter()
            .filter(|s| s.wa_id == wa_id)
            .filter_map(|s| s.text.clone())
            .collect()
    }

    /// Every mark-as-read request accepted so far, in order.
    pub fn reads(&self) -> Vec<ReadReceipt> {
        lock(&self.state).reads.clone()
    }

    /// Every request received so far, refused ones included, in order.
    pub fn requests(&self) -> Vec<GraphRequest> {
        lock(&self.state).requests.clone()
    }

    /// Makes the next `n` sends fail with `fault` (after any faults already
    /// queued). A fault is used by a message send that passed the token and
    /// phone-number checks, before its body is checked; mark-as-read requests
    /// never use one. Refused sends are still in [`MockWhatsApp::requests`].
    ///
    /// ```
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, SendFault};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// mock.fail_next(3, SendFault::PairRateLimit);
    /// assert_eq!(mock.pending_faults(), 3);
    /// # }
    /// ```
    pub fn fail_next(&self, n: usize, fault: SendFault) {
        let mut state = lock(&self.state);
        state.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// How many injected faults are still waiting for a send.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state).faults.len()
    }

    /// Drops the faults still waiting.
    pub fn clear_faults(&self) {
        lock(&self.state).faults = VecDeque::new();
    }

    /// Notes that `wa_id` wrote at `at` (as a notification the mock builds
    /// does): free-form messages may reach them until `at` + 24 hours. An
    /// earlier time than the one known changes nothing.
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// let now = SystemTime::now();
    /// mock.note_inbound("15551234567", now);
    /// assert_eq!(mock.last_inbound("15551234567"), Some(now));
    /// # }
    /// ```
    pub fn note_inbound(&self, wa_id: &str, at: SystemTime) {
        lock(&self.state).note_inbound(wa_id, at);
    }

    /// The time of `wa_id`'s last inbound message, if any.
    pub fn last_inbound(&self, wa_id: &str) -> Option<SystemTime> {
        lock(&self.state).last_inbound.get(wa_id).copied()
    }

    /// Whether a free-form message may reach `wa_id` now, on the mock's clock.
    ///
    /// ```
    /// # use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    /// assert!(!mock.window_open("15551234567")); // never wrote
    /// # }
    /// ```
    pub fn window_open(&self, wa_id: &str) -> bool {
        let state = lock(&self.state);
        state.window_open(wa_id, state.now())
    }
}

impl fmt::Debug for MockWhatsApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockWhatsApp")
            .field("uri", &self.uri())
            .finish_non_exhaustive()
    }
}

/// The client webhooks are posted with. A timeout, so that a server under
/// test that never answers fails the post instead of hanging the test.
fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
}

/// The single catch-all responder: everything goes through [`State::handle`].
struct Responder {
    state: Arc<Mutex<State>>,
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let (template, early) = {
            let mut state = lock(&self.state);
            let template = state.handle(request);
            let early = early_status(&mut state);
            (template, early)
        };
        // Posted without the lock: the server under test may call the mock.
        if let Some((url, notification)) = early {
            webhook::post_blocking(&url, &notification);
        }
        template
    }
}

/// The `sent` status of the send just accepted, when configured to go first.
fn early_status(state: &mut State) -> Option<(String, Notification)> {
    let url = state.config.statuses_before_answers.clone()?;
    let wamid = state.requests.last()?.wamid.clone()?;
    let status = webhook::status_json(&wamid, StatusKind::Sent);
    Some((url, webhook::assemble(state, None, Vec::new(), &[], vec![status])))
}

/// Locks the state. A poisoned lock is still usable: every handler leaves the
/// state consistent before doing anything that could panic.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
