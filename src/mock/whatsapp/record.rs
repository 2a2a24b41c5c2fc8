//! What the mock remembers of the requests it answered: the sends it
//! accepted, the read receipts, and every request with its status.

use std::time::SystemTime;

use serde_json::Value;

/// One send the mock accepted (answered 200 with a `wamid`).
///
/// ```
/// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, SentKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// // ... run the code under test against mock.uri(), then:
/// for sent in mock.sent() {
///     if sent.kind == SentKind::ReplyButtons {
///         println!("{} got {:?}", sent.wa_id, sent.options);
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SentMessage {
    /// The id the mock answered (`wamid.…`), unique within the mock.
    pub wamid: String,
    /// `to` as the request gave it (`"+1 555 123 4567"`).
    pub to: String,
    /// `to` reduced to its digits: the user's WhatsApp id.
    pub wa_id: String,
    /// What kind of message it is.
    pub kind: SentKind,
    /// The text: a text message's body, an interactive message's body text, a
    /// media caption, a reaction's emoji; `None` for a template.
    pub text: Option<String>,
    /// The reply buttons or list rows, in order (empty for other kinds).
    pub options: Vec<SentOption>,
    /// A list's menu button label (`action.button`).
    pub menu_button: Option<String>,
    /// A template's name and language.
    pub template: Option<SentTemplate>,
    /// `context.message_id`: the message this one replies to.
    pub reply_to: Option<String>,
    /// The request body as received.
    pub body: Value,
    /// When the mock accepted it, on its clock.
    pub at: SystemTime,
}

/// The kinds of message the mock accepts.
///
/// ```
/// use chatflow::mock::whatsapp::{SentKind, SentMessage};
///
/// fn questions(sent: &[SentMessage]) -> usize {
///     sent.iter()
///         .filter(|s| matches!(s.kind, SentKind::ReplyButtons | SentKind::List))
///         .count()
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SentKind {
    /// `"type": "text"`.
    Text,
    /// `"type": "interactive"` with `"interactive": {"type": "button"}`.
    ReplyButtons,
    /// `"type": "interactive"` with `"interactive": {"type": "list"}`.
    List,
    /// `"type": "template"`.
    Template,
    /// `"type": "image"`.
    Image,
    /// `"type": "audio"`.
    Audio,
    /// `"type": "video"`.
    Video,
    /// `"type": "document"`.
    Document,
    /// `"type": "sticker"`.
    Sticker,
    /// `"type": "reaction"`.
    Reaction,
}

/// A reply button or a list row of a sent message.
///
/// ```
/// use chatflow::mock::whatsapp::SentMessage;
///
/// fn option_ids(sent: &SentMessage) -> Vec<&str> {
///     sent.options.iter().map(|o| o.id.as_str()).collect()
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentOption {
    /// The id the user's tap comes back with.
    pub id: String,
    /// The title shown.
    pub title: String,
    /// A list row's description.
    pub description: Option<String>,
}

/// The template a message named.
///
/// ```
/// use chatflow::mock::whatsapp::SentMessage;
///
/// fn template_name(sent: &SentMessage) -> Option<&str> {
///     sent.template.as_ref().map(|t| t.name.as_str())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentTemplate {
    /// `template.name`.
    pub name: String,
    /// `template.language.code`.
    pub language: String,
}

/// A mark-as-read request the mock accepted
/// (`{"messaging_product": "whatsapp", "status": "read", "message_id"}`).
///
/// ```
/// use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mock = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
/// let inbound = mock.notification().text("15551234567", "Hi").build();
/// let read = serde_json::json!({
///     "messaging_product": "whatsapp",
///     "status": "read",
///     "message_id": inbound.message_ids()[0],
/// });
/// reqwest::Client::new()
///     .post(mock.messages_url())
///     .bearer_auth(mock.access_token())
///     .header("content-type", "application/json")
///     .body(read.to_string())
///     .send()
///     .await?;
/// let receipt = &mock.reads()[0];
/// assert!(receipt.known && !receipt.typing_indicator);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadReceipt {
    /// The inbound message marked as read.
    pub message_id: String,
    /// Whether the request also asked for a typing indicator.
    pub typing_indicator: bool,
    /// Whether the id is one of the inbound messages this mock built.
    pub known: bool,
    /// When the mock accepted it, on its clock.
    pub at: SystemTime,
}

/// One request the Graph side received, refused or not.
///
/// ```
/// use chatflow::mock::whatsapp::MockWhatsApp;
///
/// fn refusals(mock: &MockWhatsApp) -> Vec<(u16, Option<i64>)> {
///     mock.requests()
///         .iter()
///         .filter(|r| r.status != 200)
///         .map(|r| (r.status, r.error_code))
///         .collect()
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GraphRequest {
    /// The HTTP method, upper case.
    pub method: String,
    /// The path, e.g. `/v23.0/106540352242922/messages`.
    pub path: String,
    /// The headers with lower-case names; the `authorization` value is
    /// reduced to its scheme (`Bearer <redacted>`).
    pub headers: Vec<(String, String)>,
    /// The body as JSON; `None` if it was not JSON.
    pub body: Option<Value>,
    /// The body as text (invalid UTF-8 replaced).
    pub body_text: String,
    /// The HTTP status the mock answered.
    pub status: u16,
    /// The Graph error code, for a refused request.
    pub error_code: Option<i64>,
    /// The `wamid` of an accepted send.
    pub wamid: Option<String>,
    /// When it arrived, on the mock's clock.
    pub at: SystemTime,
}

impl GraphRequest {
    /// The first value of a header, by case-insensitive name.
    ///
    /// ```
    /// # use chatflow::mock::whatsapp::GraphRequest;
    /// fn content_type(request: &GraphRequest) -> Option<&str> {
    ///     request.header("Content-Type")
    /// }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
