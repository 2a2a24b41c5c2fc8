//! One user message of a notification (`value.messages[]`), read into the
//! text the flow reads and the details it may branch on.

use std::time::SystemTime;

use serde_json::{Map, Value};

use super::notification::{string, timestamp};
use crate::store::InboundMessage;

/// A user message from WhatsApp, ready for the store's inbox
/// ([`InboundWhatsApp::as_inbound`]).
///
/// | `kind` | `text` (what the flow reads) | `details` besides `type`, `wa_id`, `profile_name` | answers a Question |
/// |---|---|---|---|
/// | `text` | the body | — | yes |
/// | `interactive` | the tapped option's id | `reply_type`, `id`, `title`, `description`? | yes |
/// | `button` (template quick reply) | the payload, else the button text | `payload`, `title` | yes |
/// | `image`, `audio`, `video`, `document`, `sticker` | the caption, else `[image]` (`[document: name.pdf]`) | `media_id`, `mime_type`, `caption`?, `filename`? | yes |
/// | `location` | `Location: name, address (lat, long)` | `latitude`, `longitude`, `name`?, `address`? | yes |
/// | `reaction`, `system`, `unsupported`, `contacts`, `order`, any other | `[reaction 👍]`, the system notice, `[<type>]` | what the message carries | no |
///
/// Every details object also has `message_id`, and `context_id` when the
/// user replied to an earlier message.
///
/// ```
/// use chatflow::whatsapp::parse_notification;
///
/// let body = br#"{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
///   {"field": "messages", "value": {
///     "contacts": [{"profile": {"name": "Ada"}, "wa_id": "15551234567"}],
///     "messages": [{"from": "15551234567", "id": "wamid.2", "timestamp": "1767225600",
///       "type": "interactive",
///       "interactive": {"type": "button_reply", "button_reply": {"id": "track", "title": "Track an order"}}}]}}]}]}"#;
/// let message = &parse_notification(body)?.messages[0];
/// assert_eq!(message.kind, "interactive");
/// assert_eq!(message.text, "track");
/// assert_eq!(message.details["title"], "Track an order");
/// assert_eq!(message.details["profile_name"], "Ada");
/// let inbound = message.as_inbound();
/// assert_eq!((inbound.message_id, inbound.text, inbound.answers), ("wamid.2", "track", true));
/// # Ok::<(), chatflow::whatsapp::NotificationError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InboundWhatsApp {
    /// The sender's WhatsApp id (their number, digits only).
    pub wa_id: String,
    /// The sender's profile name, when the notification gives it.
    pub profile_name: Option<String>,
    /// The message's id (`wamid…`): the key messages are deduplicated on.
    pub message_id: String,
    /// When the user sent it (whole seconds).
    pub timestamp: SystemTime,
    /// WhatsApp's type (`text`, `interactive`, `image`, …).
    pub kind: String,
    /// The text the flow reads as the user's message.
    pub text: String,
    /// What the flow can read as `<<conversation.message.…>>`: always
    /// `type`, `wa_id`, `message_id`, and `profile_name` when known.
    pub details: Value,
    /// Whether it answers (reactions, system notices and unsupported types
    /// are kept in the transcript and answer nothing).
    pub answers: bool,
}

impl InboundWhatsApp {
    /// The conversation it belongs to: `whatsapp:<wa_id>`.
    pub fn conversation_id(&self) -> String {
        format!("whatsapp:{}", self.wa_id)
    }

    /// The message as the store takes it ([`crate::store::Store::enqueue_message`]),
    /// with its details and whether it answers.
    pub fn as_inbound(&self) -> InboundMessage<'_> {
        InboundMessage::new(&self.message_id, &self.text)
            .with_details(&self.details)
            .with_answers(self.answers)
    }
}

/// The types that reach the flow as media.
const MEDIA: &[&str] = &["image", "audio", "video", "document", "sticker"];

/// Reads one `messages[]` item; `contacts` is the change's `contacts` (for
/// the profile name). `Ok` with a note when the type is unknown (kept, not
/// answering); `Err` when it cannot be kept at all (no sender or no id).
pub(super) fn read_message(
    message: &Value,
    contacts: &[Value],
) -> Result<(InboundWhatsApp, Option<String>), String> {
    let wa_id = string(message, "from")
        .filter(|s| !s.is_empty())
        .ok_or("a message without `from`")?;
    let message_id = string(message, "id")
        .filter(|s| !s.is_empty())
        .ok_or("a message without `id`")?;
    let kind = string(message, "type").unwrap_or_else(|| "unknown".to_string());
    let profile_name = profile_name(contacts, &wa_id);

    let mut details = Map::new();
    details.insert("type".into(), kind.clone().into());
    details.insert("wa_id".into(), wa_id.clone().into());
    details.insert("message_id".into(), message_id.clone().into());
    if let Some(name) = &profile_name {
        details.insert("profile_name".into(), name.clone().into());
    }
    if let Some(context) = message
        .get("context")
        .and_then(|c| c.get("id"))
        .and_then(Value::as_str)
    {
        details.insert("context_id".into(), context.into());
    }
    let content = message.get(&kind).unwrap_or(&Value::Null);
    let mut note = None;
    let (text, answers) = match kind.as_str() {
        "text" => (str_field(content, "body").unwrap_or_default(), true),
        "interactive" => interactive(content, &mut details),
        "button" => {
            let payload = str_field(content, "payload").unwrap_or_default();
            let title = str_field(content, "text").unwrap_or_default();
            details.insert("payload".into(), payload.clone().into());
            details.insert("title".into(), title.clone().into());
            (if payload.is_empty() { title } else { payload }, true)
        }
        media if MEDIA.contains(&media) => (self::media(media, content, &mut details), true),
        "location" => (location(content, &mut details), true),
        "reaction" => {
            let emoji = str_field(content, "emoji").unwrap_or_default();
            details.insert("emoji".into(), emoji.clone().into());
            if let Some(id) = str_field(content, "message_id") {
                details.insert("reacted_to".into(), id.into());
            }
            // An empty emoji is a reaction taken back.
            let text = if emoji.is_empty() {
                "[reaction removed]".to_string()
            } else {
                format!("[reaction {emoji}]")
            };
            (text, false)
        }
        "system" => {
            details.insert("system".into(), content.clone());
            let body = str_field(content, "body").unwrap_or_else(|| "[system]".to_string());
            (body, false)
        }
        "unsupported" | "contacts" | "order" => {
            let raw = match kind.as_str() {
                "unsupported" => message.get("errors").or(message.get("unsupported")),
                _ => message.get(&kind),
            };
            details.insert(kind.clone(), raw.cloned().unwrap_or(Value::Null));
            (format!("[{kind}]"), false)
        }
        _ => {
            // Under `content`, not its own name: a type called `wa_id`
            // must not overwrite the sender.
            details.insert("content".into(), content.clone());
            note = Some(format!(
                "message type `{kind}` is not read: kept without answering"
            ));
            (format!("[{kind}]"), false)
        }
    };
    Ok((
        InboundWhatsApp {
            wa_id,
            profile_name,
            message_id,
            timestamp: timestamp(message.get("timestamp")),
            kind,
            text,
            details: Value::Object(details),
            answers,
        },
        note,
    ))
}

/// The profile name of the contact with this wa_id; with one contact and
/// no match, that contact's (the usual single-sender notification).
fn profile_name(contacts: &[Value], wa_id: &str) -> Option<String> {
    let name = |c: &Value| {
        c.get("profile")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    contacts
        .iter()
        .find(|c| c.get("wa_id").and_then(Value::as_str) == Some(wa_id))
        .or(match contacts {
            [only] if only.get("wa_id").is_none() => Some(only),
            _ => None,
        })
        .and_then(name)
}

fn str_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A button or list reply: the flow reads the option's id (options are
/// matched by id first).
fn interactive(content: &Value, details: &mut Map<String, Value>) -> (String, bool) {
    let reply_type = str_field(content, "type").unwrap_or_default();
    details.insert("reply_type".into(), reply_type.clone().into());
    let Some(reply) = content
        .get(&reply_type)
        .filter(|_| matches!(reply_type.as_str(), "button_reply" | "list_reply"))
    else {
        // A Flow's `nfm_reply` and anything newer: kept, answers nothing.
        details.insert("interactive".into(), content.clone());
        return (format!("[interactive {reply_type}]"), false);
    };
    let id = str_field(reply, "id").unwrap_or_default();
    let title = str_field(reply, "title").unwrap_or_default();
    details.insert("id".into(), id.clone().into());
    details.insert("title".into(), title.clone().into());
    if let Some(description) = str_field(reply, "description") {
        details.insert("description".into(), description.into());
    }
    (if id.is_empty() { title } else { id }, true)
}

fn media(kind: &str, content: &Value, details: &mut Map<String, Value>) -> String {
    for (key, name) in [
        ("id", "media_id"),
        ("mime_type", "mime_type"),
        ("caption", "caption"),
        ("filename", "filename"),
    ] {
        if let Some(text) = str_field(content, key) {
            details.insert(name.into(), text.into());
        }
    }
    let caption = str_field(content, "caption").filter(|c| !c.trim().is_empty());
    let filename = str_field(content, "filename").filter(|f| !f.trim().is_empty());
    match (caption, filename) {
        (Some(caption), _) => caption,
        (None, Some(filename)) => format!("[{kind}: {filename}]"),
        (None, None) => format!("[{kind}]"),
    }
}

fn location(content: &Value, details: &mut Map<String, Value>) -> String {
    let latitude = content.get("latitude").cloned().unwrap_or(Value::Null);
    let longitude = content.get("longitude").cloned().unwrap_or(Value::Null);
    let name = str_field(content, "name").filter(|n| !n.is_empty());
    let address = str_field(content, "address").filter(|a| !a.is_empty());
    let coordinates = format!("({}, {})", coordinate(&latitude), coordinate(&longitude));
    details.insert("latitude".into(), latitude);
    details.insert("longitude".into(), longitude);
    let mut text = String::from("Location: ");
    for part in [&name, &address].into_iter().flatten() {
        text.push_str(part);
        text.push_str(", ");
    }
    text.push_str(&coordinates);
    if let Some(name) = name {
        details.insert("name".into(), name.into());
    }
    if let Some(address) = address {
        details.insert("address".into(), address.into());
    }
    text
}

fn coordinate(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "?".to_string(),
        other => other.to_string(),
    }
}
