//! Server-sent events (`text/event-stream`): an incremental parser that
//! follows the WHATWG HTML "event stream interpretation" rules, and the
//! selection an Api step with `stream_until` applies to a stream.
//!
//! The parser is fed bytes as they arrive, in chunks of any size, and hands
//! back every event completed by them. The same parser reads a whole body
//! ([`parse`]), so a transport that stops reading early and one that returns
//! the complete body give a step the same result.
//!
//! ```
//! use chatflow::http::sse::{SseParser, parse};
//!
//! let body = b"event: thread.message.completed\r\ndata: {\"id\": \"msg_1\"}\r\n\r\n: a comment\n\nevent: done\ndata: [DONE]\n\n";
//!
//! // All at once...
//! let events = parse(body);
//! assert_eq!(events.len(), 2);
//! assert_eq!(events[0].event.as_deref(), Some("thread.message.completed"));
//! assert_eq!(events[0].data, r#"{"id": "msg_1"}"#);
//! assert_eq!(events[1].data, "[DONE]");
//!
//! // ...or a byte at a time: the same events.
//! let mut parser = SseParser::new();
//! let mut one_by_one = Vec::new();
//! for byte in body {
//!     one_by_one.extend(parser.push(std::slice::from_ref(byte)));
//! }
//! assert_eq!(one_by_one, events);
//! ```

use std::borrow::Cow;

use serde_json::Value;

/// The `Content-Type` of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// One dispatched server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` when the event had none (the spec's
    /// default type, `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The last event id seen in the stream so far (`id:`), if any.
    pub id: Option<String>,
    /// The reconnection time the event set (`retry:`, milliseconds), if any.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The event's name: its `event:` field or, when it has none, the
    /// `"type"` of its JSON data (data-only streams name events that way).
    ///
    /// ```
    /// use chatflow::http::sse::SseEvent;
    ///
    /// let named = SseEvent { event: Some("done".into()), data: "[DONE]".into(), ..Default::default() };
    /// assert_eq!(named.name().as_deref(), Some("done"));
    /// let typed = SseEvent { data: r#"{"type": "response.completed"}"#.into(), ..Default::default() };
    /// assert_eq!(typed.name().as_deref(), Some("response.completed"));
    /// assert_eq!(SseEvent::default().name(), None);
    /// ```
    pub fn name(&self) -> Option<Cow<'_, str>> {
        if let Some(event) = &self.event {
            return Some(Cow::Borrowed(event));
        }
        let value: Value = serde_json::from_str(&self.data).ok()?;
        value
            .get("type")
            .and_then(Value::as_str)
            .map(|t| Cow::Owned(t.to_owned()))
    }

    /// Whether a reader waiting for one of `until` may stop after this
    /// event: it is one of them, or it is an `error` event.
    pub fn ends(&self, until: &[String]) -> bool {
        self.name()
            .is_some_and(|name| name == "error" || until.iter().any(|u| *u == name))
    }
}

/// An incremental event-stream parser. Feed it bytes with
/// [`SseParser::push`]; it keeps an unfinished line or event for the next
/// chunk. An event is dispatched by the blank line after it: one still
/// unfinished when the stream ends is dropped, as the spec says.
#[derive(Debug, Clone, Default)]
pub struct SseParser {
    /// Bytes of the line being read (decoded once the line is complete, so a
    /// UTF-8 character split between chunks stays whole).
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting this one belongs to it.
    after_cr: bool,
    /// Whether the first line was read (a UTF-8 BOM may precede it).
    started: bool,
    event: Option<String>,
    data: String,
    last_id: Option<String>,
    retry: Option<u64>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Reads `bytes` and returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\r' || *b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_done(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// Interprets one complete line; a blank line dispatches the event.
    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.first() == Some(&b':') {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let retry = self.retry.take();
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        Some(SseEvent {
            event: event.filter(|e| !e.is_empty()),
            data,
            id: self.last_id.clone(),
            retry,
        })
    }
}

/// Every event of a complete stream body.
pub fn parse(body: &[u8]) -> Vec<SseEvent> {
    SseParser::new().push(body)
}

/// Whether a `Content-Type` value is `text/event-stream` (parameters and
/// case ignored).
///
/// ```
/// assert!(chatflow::http::sse::is_event_stream("text/event-stream; charset=utf-8"));
/// assert!(!chatflow::http::sse::is_event_stream("application/json"));
/// ```
pub fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// The event an Api step keeps from a stream, with its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// The event's name ([`SseEvent::name`]); empty for an unnamed event.
    pub name: String,
    /// Its data, parsed as JSON.
    pub data: Value,
}

/// Why a stream gave an Api step no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The stream sent an `error` event before any awaited one.
    #[error("the stream sent an `error` event: {message}")]
    ErrorEvent {
        /// The error's message (or its raw data when it has none).
        message: String,
    },
    /// The awaited event's data is not JSON.
    #[error("the data of event `{event}` is not JSON")]
    NotJson {
        /// The event's name.
        event: String,
    },
    /// No awaited event came, and no event carried JSON to fall back on.
    #[error("the stream ended without any of the events {until:?} and without a JSON event")]
    NoJsonEvent {
        /// The awaited names.
        until: Vec<String>,
    },
}

/// What an Api step with `stream_until` keeps from a stream: the data of the
/// first event named in `until`. An `error` event before it fails; a stream
/// that ends without one yields its last JSON event (so a run that failed
/// gives its failed run object).
///
/// ```
/// use chatflow::http::sse::{parse, select};
///
/// let body = b"event: thread.run.in_progress\ndata: {\"status\": \"in_progress\"}\n\n\
///              event: thread.run.failed\ndata: {\"status\": \"failed\"}\n\n\
///              event: done\ndata: [DONE]\n\n";
/// let until = vec!["thread.message.completed".to_string()];
/// let selected = select(&parse(body), &until)?;
/// assert_eq!(selected.name, "thread.run.failed");
/// assert_eq!(selected.data["status"], "failed");
/// # Ok::<(), chatflow::http::sse::SelectError>(())
/// ```
pub fn select(events: &[SseEvent], until: &[String]) -> Result<Selected, SelectError> {
    let mut last_json = None;
    for event in events {
        let name = event.name().map(Cow::into_owned).unwrap_or_default();
        let data = serde_json::from_str::<Value>(&event.data).ok();
        if until.contains(&name) {
            return match data {
                Some(data) => Ok(Selected { name, data }),
                None => Err(SelectError::NotJson { event: name }),
            };
        }
        if name == "error" {
            let message = data
                .as_ref()
                .and_then(|d| {
                    d.pointer("/message")
                        .or_else(|| d.pointer("/error/message"))
                        .and_then(Value::as_str)
                })
                .map(str::to_owned)
                // JSON written back has canonical escapes (`sk\/x` and
                // `\u0073k` become `sk/x` and `sk`), so masking finds a
                // secret in it.
                .or_else(|| data.as_ref().map(Value::to_string))
                .unwrap_or_else(|| event.data.clone());
            return Err(SelectError::ErrorEvent { message });
        }
        if let Some(data) = data {
            last_json = Some(Selected { name, data });
        }
    }
    last_json.ok_or_else(|| SelectError::NoJsonEvent {
        until: until.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(events: &[SseEvent]) -> Vec<Option<&str>> {
        events.iter().map(|e| e.event.as_deref()).collect()
    }

    #[test]
    fn line_endings_of_every_kind() {
        for body in [
            "event: a\ndata: 1\n\nevent: b\ndata: 2\n\n",
            "event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n",
            "event: a\rdata: 1\r\revent: b\rdata: 2\r\r",
            "event: a\r\ndata: 1\n\revent: b\rdata: 2\r\n\n",
        ] {
            let events = parse(body.as_bytes());
            assert_eq!(names(&events), [Some("a"), Some("b")], "{body:?}");
            assert_eq!(events[1].data, "2");
        }
    }

    #[test]
    fn a_crlf_split_between_chunks_is_one_line_ending() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: x\r").is_empty());
        assert!(parser.push(b"").is_empty(), "an empty chunk changes nothing");
        assert!(parser.push(b"\n").is_empty(), "the \\n ends the same line");
        assert_eq!(parser.push(b"\r\n")[0].data, "x");
    }

    #[test]
    fn data_lines_are_joined_and_fields_read_per_spec() {
        let events =
            parse(b"data:no space\ndata:  two spaces\ndata\nid: 7\nretry: 1500\nunknown: x\n: comment\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "no space\n two spaces\n");
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].retry, Some(1500));
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn events_without_data_are_not_dispatched_and_reset_the_type() {
        let events = parse(b"event: lonely\n\ndata: after\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_dropped() {
        assert!(parse(b"event: a\ndata: 1\n").is_empty());
        assert!(parse(b"data: 1").is_empty());
    }

    #[test]
    fn a_bom_is_skipped_and_invalid_utf8_replaced() {
        let events = parse(b"\xEF\xBB\xBFdata: caf\xC3\xA9 \xFF\n\n");
        assert_eq!(events[0].data, "café \u{FFFD}");
    }

    #[test]
    fn the_id_carries_over_and_bad_retry_is_ignored() {
        let events = parse(b"id: 1\ndata: a\n\nretry: 10s\ndata: b\n\nid\ndata: c\n\n");
        assert_eq!(events[1].id.as_deref(), Some("1"));
        assert_eq!(events[1].retry, None);
        assert_eq!(events[2].id.as_deref(), Some(""));
    }

    #[test]
    fn selection_prefers_the_first_awaited_event() {
        let events = parse(
            b"data: {\"type\": \"response.created\"}\n\n\
              data: {\"type\": \"response.completed\", \"n\": 1}\n\n\
              data: {\"type\": \"response.completed\", \"n\": 2}\n\n",
        );
        let until = vec!["response.completed".to_string()];
        let selected = select(&events, &until).unwrap();
        assert_eq!(selected.name, "response.completed");
        assert_eq!(selected.data["n"], 1);
    }

    #[test]
    fn selection_failures_say_why() {
        let until = vec!["x".to_string()];
        let error = select(
            &parse(b"event: error\ndata: {\"message\": \"overloaded\"}\n\n"),
            &until,
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "the stream sent an `error` event: overloaded");
        let error = select(&parse(b"event: x\ndata: [DONE]\n\n"), &until).unwrap_err();
        assert_eq!(error, SelectError::NotJson { event: "x".into() });
        let error = select(&parse(b"event: done\ndata: [DONE]\n\n"), &until).unwrap_err();
        assert!(matches!(error, SelectError::NoJsonEvent { .. }));
        // `error` may be awaited, then it is the response.
        let until = vec!["error".to_string()];
        let selected = select(&parse(b"event: error\ndata: {\"code\": 1}\n\n"), &until).unwrap();
        assert_eq!(selected.data["code"], 1);
    }
}
