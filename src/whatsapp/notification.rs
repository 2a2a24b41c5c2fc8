//! A webhook notification's body: its envelope (entries, changes) read
//! into the messages and statuses it carries. Each message is read by
//! [`super::inbound`]; this file knows only the envelope and the statuses.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use super::inbound::{self, InboundWhatsApp};
use crate::channel::{Receipt, ReceiptStatus};

/// What one notification carries, in the order of the body.
///
/// ```
/// use chatflow::whatsapp::parse_notification;
///
/// let body = br#"{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
///   {"field": "messages", "value": {
///     "metadata": {"display_phone_number": "15550000000", "phone_number_id": "123"},
///     "contacts": [{"profile": {"name": "Ada"}, "wa_id": "15551234567"}],
///     "messages": [{"from": "15551234567", "id": "wamid.1", "timestamp": "1767225600",
///                   "type": "text", "text": {"body": "Where is my order?"}}]}}]}]}"#;
/// let notification = parse_notification(body)?;
/// let message = &notification.messages[0];
/// assert_eq!(message.conversation_id(), "whatsapp:15551234567");
/// assert_eq!(message.profile_name.as_deref(), Some("Ada"));
/// assert_eq!(message.text, "Where is my order?");
/// # Ok::<(), chatflow::whatsapp::NotificationError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Notification {
    /// The user messages, every type included (see
    /// [`InboundWhatsApp::answers`] for those that answer no Question).
    pub messages: Vec<InboundWhatsApp>,
    /// The status reports on messages the bot sent.
    pub statuses: Vec<StatusUpdate>,
    /// What was not read, one line each (a change field other than
    /// `messages`, a message type this crate does not know, a status
    /// without an id): for the logs, never an error.
    pub skipped: Vec<String>,
}

/// A status report on a message the bot sent (`value.statuses[]`), as the
/// [`Receipt`] to record on the entry with that channel message id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusUpdate {
    /// The `wamid` of the message the bot sent.
    pub message_id: String,
    /// The wa_id it was sent to.
    pub recipient: String,
    /// Sent, delivered, read, or failed with `"<code> <title>"` as detail.
    pub receipt: Receipt,
}

/// Why a body is not a notification. The routes answer 400.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotificationError {
    /// The body is not JSON.
    #[error("the body is not JSON (line {line}, column {column}): {source}")]
    Malformed {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The body is JSON but not a WhatsApp notification (`object` is not
    /// `whatsapp_business_account`, or `entry` is not a list of entries).
    #[error("the body is not a WhatsApp notification: {reason}")]
    NotANotification {
        /// What is wrong, with the JSON path.
        reason: String,
    },
}

/// The envelope. Unknown fields are ignored everywhere: Meta adds fields.
#[derive(Deserialize)]
struct Envelope {
    object: String,
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: String,
    #[serde(default)]
    value: Value,
}

/// The object of a change with field `messages`. Messages and statuses are
/// kept as JSON and read one by one, so that one odd message does not cost
/// the others.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MessagesValue {
    contacts: Vec<Value>,
    messages: Vec<Value>,
    statuses: Vec<Value>,
}

/// Reads a notification body (`POST /webhooks/whatsapp`), after its
/// signature was checked ([`super::verify_signature`]).
///
/// One body may carry several entries, changes and messages; all are
/// returned in order. Unknown fields are ignored; change fields other than
/// `messages`, unknown message types and unreadable statuses are noted in
/// [`Notification::skipped`], never an error. An error means the body is
/// not JSON, or is JSON but no WhatsApp notification.
///
/// ```
/// use chatflow::whatsapp::{NotificationError, parse_notification};
///
/// assert!(matches!(
///     parse_notification(b"{\"object\": "),
///     Err(NotificationError::Malformed { line: 1, .. })
/// ));
/// assert!(matches!(
///     parse_notification(br#"{"object": "page", "entry": []}"#),
///     Err(NotificationError::NotANotification { .. })
/// ));
/// let empty = parse_notification(br#"{"object": "whatsapp_business_account", "entry": []}"#)?;
/// assert!(empty.messages.is_empty() && empty.statuses.is_empty());
/// # Ok::<(), NotificationError>(())
/// ```
pub fn parse_notification(body: &[u8]) -> Result<Notification, NotificationError> {
    let value: Value = serde_json::from_slice(body).map_err(|source| NotificationError::Malformed {
        line: source.line(),
        column: source.column(),
        source,
    })?;
    let envelope: Envelope =
        serde_path_to_error::deserialize(value).map_err(|error| NotificationError::NotANotification {
            reason: format!("at `{}`: {}", error.path(), error.inner()),
        })?;
    if envelope.object != "whatsapp_business_account" {
        return Err(NotificationError::NotANotification {
            reason: format!(
                "`object` is {:?}, not \"whatsapp_business_account\"",
                envelope.object
            ),
        });
    }
    let mut notification = Notification::default();
    for (e, entry) in envelope.entry.into_iter().enumerate() {
        for (c, change) in entry.changes.into_iter().enumerate() {
            let at = format!("entry[{e}].changes[{c}]");
            if change.field != "messages" {
                notification
                    .skipped
                    .push(format!("{at}: change field `{}` is not read", change.field));
                continue;
            }
            match serde_path_to_error::deserialize::<_, MessagesValue>(change.value) {
                Ok(value) => read_messages_value(value, &at, &mut notification),
                Err(error) => notification.skipped.push(format!(
                    "{at}.value: unreadable at `{}`: {}",
                    error.path(),
                    error.inner()
                )),
            }
        }
    }
    Ok(notification)
}

fn read_messages_value(value: MessagesValue, at: &str, notification: &mut Notification) {
    for (i, message) in value.messages.iter().enumerate() {
        let at = format!("{at}.value.messages[{i}]");
        match inbound::read_message(message, &value.contacts) {
            Ok((message, note)) => {
                if let Some(note) = note {
                    notification.skipped.push(format!("{at}: {note}"));
                }
                notification.messages.push(message);
            }
            Err(reason) => notification.skipped.push(format!("{at}: {reason}")),
        }
    }
    for (i, status) in value.statuses.iter().enumerate() {
        match read_status(status) {
            Ok(status) => notification.statuses.push(status),
            Err(reason) => notification
                .skipped
                .push(format!("{at}.value.statuses[{i}]: {reason}")),
        }
    }
}

/// A `statuses[]` item; an unknown status string is an `Err` (skipped).
fn read_status(status: &Value) -> Result<StatusUpdate, String> {
    let message_id = string(status, "id").ok_or("a status without an `id`")?;
    let name = string(status, "status").ok_or("a status without a `status`")?;
    let receipt_status =
        ReceiptStatus::from_name(&name).ok_or_else(|| format!("status `{name}` is not read"))?;
    let mut receipt = Receipt::new(receipt_status, timestamp(status.get("timestamp")));
    if receipt_status == ReceiptStatus::Failed {
        receipt = receipt.with_detail(failure_detail(status));
    }
    Ok(StatusUpdate {
        message_id,
        recipient: string(status, "recipient_id").unwrap_or_default(),
        receipt,
    })
}

/// `"<code> <title>"` from a failed status's first error.
fn failure_detail(status: &Value) -> String {
    let error = status.get("errors").and_then(|e| e.get(0));
    let code = error.and_then(|e| e.get("code")).map(|code| match code {
        Value::String(code) => code.clone(),
        other => other.to_string(),
    });
    let title = error
        .and_then(|e| e.get("title").or_else(|| e.get("message")))
        .and_then(Value::as_str);
    match (code, title) {
        (Some(code), Some(title)) => format!("{code} {title}"),
        (Some(code), None) => code,
        (None, Some(title)) => title.to_string(),
        (None, None) => "failed (no error given)".to_string(),
    }
}

/// A string field, or a number field written as text.
pub(super) fn string(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Meta's `timestamp`: unix seconds as text (a number is taken too). An
/// unreadable one is the epoch: the time is informative, never a reason to
/// drop what the user said.
pub(super) fn timestamp(value: Option<&Value>) -> SystemTime {
    let seconds = match value {
        Some(Value::String(text)) => text.trim().parse::<u64>().ok(),
        Some(Value::Number(number)) => number.as_u64(),
        _ => None,
    };
    // checked: a hostile timestamp must not overflow the clock's range.
    seconds
        .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
#[path = "notification_tests.rs"]
mod tests;
