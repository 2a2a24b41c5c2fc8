//! The bodies of `POST /{phone-number-id}/messages`: text, reply buttons,
//! lists, templates, and the read receipt; and how one transcript entry
//! becomes one or more of them.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::limits::{self, Layout, MAX_BODY_CHARS, MAX_TEXT_CHARS};
use crate::flow::QuestionOption;
use crate::store::{Direction, TranscriptEntry};

/// One message to send. Every message carries `messaging_product`,
/// `recipient_type` (Meta's schema requires it) and `to`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OutgoingMessage<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    to: &'a str,
    #[serde(flatten)]
    content: Content<'a>,
}

impl<'a> OutgoingMessage<'a> {
    fn new(to: &'a str, content: Content<'a>) -> Self {
        OutgoingMessage {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to,
            content,
        }
    }

    /// A text message (no link preview: a bot's links should not fetch).
    pub(crate) fn text(to: &'a str, body: impl Into<Cow<'a, str>>) -> Self {
        Self::new(
            to,
            Content::Text {
                text: Text {
                    preview_url: false,
                    body: body.into(),
                },
            },
        )
    }

    /// A template message.
    pub(crate) fn template(to: &'a str, template: Template) -> Self {
        Self::new(to, Content::Template { template })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Content<'a> {
    Text { text: Text<'a> },
    Interactive { interactive: Interactive<'a> },
    Template { template: Template },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Text<'a> {
    preview_url: bool,
    body: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Interactive<'a> {
    Button { body: Body<'a>, action: Buttons<'a> },
    List { body: Body<'a>, action: List<'a> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Body<'a> {
    text: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Buttons<'a> {
    buttons: Vec<Button<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Button<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    reply: Reply<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Reply<'a> {
    id: &'a str,
    title: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct List<'a> {
    button: &'a str,
    sections: Vec<Section<'a>>,
}

/// One section: its title is required only with several sections.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Section<'a> {
    rows: Vec<Row<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Row<'a> {
    id: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

/// An approved template, from a Message's `whatsapp_template`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Template {
    name: String,
    language: Language,
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<Value>,
}

/// Meta's schema requires `policy` beside `code`; `deterministic` is its
/// only value.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Language {
    policy: &'static str,
    code: String,
}

impl Template {
    /// Reads a `whatsapp_template`: `{"name", "language": "en_US" or
    /// {"code": "en_US"}, "components"?: [...]}`.
    pub(crate) fn from_details(spec: &Value) -> Result<Template, String> {
        let name = spec
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or("it has no `name`")?;
        let code = match spec.get("language") {
            Some(Value::String(code)) => Some(code.as_str()),
            Some(language) => language.get("code").and_then(Value::as_str),
            None => None,
        }
        .filter(|c| !c.trim().is_empty())
        .ok_or("it has no `language` code (such as \"en_US\")")?;
        let components = match spec.get("components") {
            None | Some(Value::Null) => None,
            Some(list @ Value::Array(_)) => Some(list.clone()),
            Some(_) => return Err("its `components` is not a list".into()),
        };
        Ok(Template {
            name: name.to_string(),
            language: Language {
                policy: "deterministic",
                code: code.to_string(),
            },
            components,
        })
    }
}

/// The read receipt for a user's message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MarkRead<'a> {
    messaging_product: &'static str,
    status: &'static str,
    message_id: &'a str,
}

impl<'a> MarkRead<'a> {
    pub(crate) fn new(message_id: &'a str) -> Self {
        MarkRead {
            messaging_product: "whatsapp",
            status: "read",
            message_id,
        }
    }
}

/// The fixed texts a channel sends besides the flow's.
#[derive(Debug, Clone)]
pub(crate) struct Wording {
    /// Sent for a handoff entry.
    pub(crate) handoff: String,
    /// The list's menu button (at most 20 characters).
    pub(crate) list_button: String,
    /// The body of buttons or a list whose Question has no text (Meta
    /// requires one).
    pub(crate) choose: String,
}

/// The messages that deliver `entry` to `to` inside the 24-hour window, in
/// order (empty when there is nothing to say).
///
/// - a handoff: [`Wording::handoff`];
/// - a question with options: its text, then buttons or a list
///   ([`limits::layout`]) whose body is the question's last 1,024
///   characters — a longer question goes first as text message(s), so the
///   options stay with the end of the question; options that fit neither
///   go as numbered lines the user answers by number;
/// - any other text: split into messages of at most 4,096 characters.
pub(crate) fn messages_for<'a>(
    entry: &'a TranscriptEntry,
    to: &'a str,
    wording: &'a Wording,
) -> Vec<OutgoingMessage<'a>> {
    if entry.direction == Direction::Handoff {
        return vec![OutgoingMessage::text(to, wording.handoff.as_str())];
    }
    if entry.options.is_empty() {
        return texts(to, &entry.text);
    }
    let layout = limits::layout(&entry.options);
    if layout == Layout::Text {
        return split_text(&numbered(entry), MAX_TEXT_CHARS)
            .into_iter()
            .map(|part| OutgoingMessage::text(to, Cow::Owned(part.to_string())))
            .collect();
    }
    let (leading, body) = split_last(&entry.text, MAX_BODY_CHARS);
    let mut messages = texts(to, leading);
    let body = Body {
        text: if body.trim().is_empty() {
            &wording.choose
        } else {
            body
        },
    };
    let interactive = match layout {
        Layout::Buttons => Interactive::Button {
            body,
            action: Buttons {
                buttons: entry.options.iter().map(button).collect(),
            },
        },
        _ => Interactive::List {
            body,
            action: List {
                button: &wording.list_button,
                sections: vec![Section {
                    rows: entry.options.iter().map(row).collect(),
                }],
            },
        },
    };
    messages.push(OutgoingMessage::new(to, Content::Interactive { interactive }));
    messages
}

/// A question whose options fit neither buttons nor a list, as text with
/// the options numbered (the user answers with the number or the title).
fn numbered(entry: &TranscriptEntry) -> String {
    let mut text = entry.text.trim_end().to_string();
    for (i, option) in entry.options.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        } else if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&format!("{}. {}", i + 1, option.title));
    }
    text
}

/// `text` as text messages of at most 4,096 characters.
pub(crate) fn texts<'a>(to: &'a str, text: &'a str) -> Vec<OutgoingMessage<'a>> {
    split_text(text, MAX_TEXT_CHARS)
        .into_iter()
        .map(|part| OutgoingMessage::text(to, part))
        .collect()
}

// Ids and titles go trimmed: Meta refuses an id with spaces around it, and
// a tapped id is matched trimmed anyway.
fn button(option: &QuestionOption) -> Button<'_> {
    Button {
        kind: "reply",
        reply: Reply {
            id: option.id.trim(),
            title: option.title.trim(),
        },
    }
}

fn row(option: &QuestionOption) -> Row<'_> {
    Row {
        id: option.id.trim(),
        title: option.title.trim(),
        description: option.description.as_deref().map(str::trim),
    }
}

/// `text` cut in two: the last part of at most `max_chars` characters (cut
/// on a line or word boundary as [`split_text`] does), and what comes
/// before it (trimmed at the cut; empty when the whole text fits).
fn split_last(text: &str, max_chars: usize) -> (&str, &str) {
    let parts = split_text(text, max_chars);
    match parts.last() {
        None => ("", ""),
        Some(last) => {
            // `last` is a slice of `text`: its offset says where it starts.
            let start = (last.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
            (text.get(..start).unwrap_or("").trim_end(), last)
        }
    }
}

/// Splits `text` into parts of at most `max_chars` characters, for
/// WhatsApp's 4,096-character limit on a text message.
///
/// A part ends on a line break when one falls in the second half of the
/// part, else on the last space, else (one word longer than the limit) it
/// is cut between two characters, never inside one. The whitespace at a
/// cut and around the text is dropped; no part is empty, and a text that
/// is only whitespace gives no parts.
///
/// ```
/// use chatflow::whatsapp::split_text;
///
/// assert_eq!(split_text("short", 4096), ["short"]);
/// assert_eq!(split_text("one two three", 8), ["one two", "three"]);
/// assert_eq!(split_text("first line\nsecond line", 16), ["first line", "second line"]);
/// assert_eq!(split_text("abcdefghij", 4), ["abcd", "efgh", "ij"]);
/// assert!(split_text(" \n ", 10).is_empty());
/// ```
pub fn split_text(text: &str, max_chars: usize) -> Vec<&str> {
    let max_chars = max_chars.max(1);
    let mut parts = Vec::new();
    // Whitespace around the text goes too: it would start or end a part.
    let mut rest = text.trim();
    loop {
        if rest.is_empty() {
            return parts;
        }
        // The byte index just past `max_chars` characters, and the
        // character there (a space there is a boundary too).
        let Some((end, next)) = rest.char_indices().nth(max_chars) else {
            parts.push(rest);
            return parts;
        };
        let candidate = &rest[..end + next.len_utf8()];
        let cut = cut_at(candidate, end);
        match cut {
            Some(at) => {
                parts.push(rest[..at].trim_end());
                rest = rest[at..].trim_start();
            }
            None => {
                parts.push(&rest[..end]);
                rest = &rest[end..];
            }
        }
    }
}

/// Where to cut `candidate` (the allowed characters and the next one): the
/// byte index of a whitespace character with text before it, preferring a
/// line break in the second half.
fn cut_at(candidate: &str, end: usize) -> Option<usize> {
    let with_text_before = |at: &usize| !candidate[..*at].trim_end().is_empty();
    let last_newline = candidate.rfind('\n').filter(with_text_before);
    if let Some(at) = last_newline.filter(|at| *at >= end / 2) {
        return Some(at);
    }
    candidate
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map(|(at, _)| at)
        .filter(with_text_before)
        .or(last_newline)
}

#[cfg(test)]
#[path = "send_tests.rs"]
mod tests;
