//! The conversation test file, as serde reads it. The field-by-field
//! description for users lives in the module docs (`super`); every struct
//! here refuses unknown fields, so a misspelt key is an error with its line.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;

use crate::http::Method;

/// One conversation test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestFile {
    /// What the test shows, for reports; the file name otherwise.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// A path to the flow's JSON (relative to the test file), or the flow inline.
    pub(crate) flow: Value,
    /// The conversation's id (`<<conversation.id>>`).
    #[serde(default = "default_conversation_id")]
    pub(crate) conversation_id: String,
    /// Host values, `<<var.NAME>>`.
    #[serde(default)]
    pub(crate) vars: BTreeMap<String, Value>,
    /// Secrets, `<<secret.NAME>>`.
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, String>,
    /// Stubbed API answers.
    #[serde(default)]
    pub(crate) stubs: Vec<Stub>,
    /// The conversation, turn by turn.
    pub(crate) turns: Vec<TurnSpec>,
    /// How the conversation stands after the last turn.
    #[serde(default)]
    pub(crate) expect: Expect,
}

fn default_conversation_id() -> String {
    "test".to_string()
}

/// Answers for the requests of one step, or of one method and URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stub {
    /// The Api step whose requests this answers.
    #[serde(default)]
    pub(crate) step: Option<String>,
    /// The method the requests must have.
    #[serde(default)]
    pub(crate) method: Option<Method>,
    /// The URL (secrets masked as `***`): whole, or its ending when it starts with `/`.
    #[serde(default)]
    pub(crate) url: Option<String>,
    /// What the JSON body of every request it answers must hold.
    #[serde(default)]
    pub(crate) request_body: Option<Value>,
    /// The answer to every request.
    #[serde(default)]
    pub(crate) response: Option<StubResponse>,
    /// One answer per request, in order; the last one repeats.
    #[serde(default)]
    pub(crate) responses: Option<Vec<StubResponse>>,
}

/// One stubbed answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StubResponse {
    /// The status (default 200).
    #[serde(default = "ok")]
    pub(crate) status: u16,
    /// Response headers.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default)]
    pub(crate) body: Option<Value>,
    /// A body sent as is, not as JSON.
    #[serde(default)]
    pub(crate) text: Option<String>,
    /// A `text/event-stream` body made of these events.
    #[serde(default)]
    pub(crate) sse: Option<Vec<SseSpec>>,
    /// How long the server takes to answer, in virtual time.
    #[serde(default, deserialize_with = "optional_duration")]
    pub(crate) delay: Option<Duration>,
    /// No answer at all: the exchange fails this way.
    #[serde(default)]
    pub(crate) error: Option<TransportFailure>,
}

fn ok() -> u16 {
    200
}

/// One server-sent event of a stubbed stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SseSpec {
    /// The `event:` field.
    #[serde(default)]
    pub(crate) event: Option<String>,
    /// The `data:`: a string is sent as is, anything else as JSON.
    pub(crate) data: Value,
}

/// A stubbed exchange that gives no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TransportFailure {
    /// The server could not be reached.
    Connect,
    /// No answer within the request's timeout (the clock moves by it).
    Timeout,
    /// The connection broke mid-exchange.
    Transport,
}

/// One turn: maybe some time passes, maybe the user says something, then
/// the bot runs until it waits again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TurnSpec {
    /// Virtual time that passes before the turn.
    #[serde(default, deserialize_with = "optional_duration")]
    pub(crate) wait: Option<Duration>,
    /// What the user says.
    #[serde(default)]
    pub(crate) user: Option<String>,
    /// What the bot says, in order: exactly these messages.
    #[serde(default)]
    pub(crate) bot: OneOrMany,
    /// How the conversation stands after the turn.
    #[serde(default)]
    pub(crate) status: Option<StatusName>,
    /// The virtual time the turn took.
    #[serde(default, deserialize_with = "optional_duration")]
    pub(crate) elapsed: Option<Duration>,
    /// The requests sent during the turn, by step name, retries included.
    #[serde(default)]
    pub(crate) calls: Option<Vec<String>>,
}

/// The expectations on the end of the conversation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// The final status.
    #[serde(default)]
    pub(crate) status: Option<StatusName>,
    /// The handoff (implies `status: handed_off`).
    #[serde(default)]
    pub(crate) handoff: Option<HandoffSpec>,
    /// Words the failure message holds (implies `status: failed`).
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// Contact attributes that must hold these values (others may exist).
    #[serde(default)]
    pub(crate) contact: BTreeMap<String, Value>,
}

impl Expect {
    /// The status the expectations imply, if any.
    pub(crate) fn status(&self) -> Option<StatusName> {
        self.status.or_else(|| {
            if self.handoff.is_some() {
                Some(StatusName::HandedOff)
            } else if self.error.is_some() {
                Some(StatusName::Failed)
            } else {
                None
            }
        })
    }
}

/// The expected handoff; absent fields are not checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandoffSpec {
    #[serde(default)]
    pub(crate) team: Option<String>,
    #[serde(default)]
    pub(crate) agent: Option<String>,
    #[serde(default)]
    pub(crate) note: Option<String>,
}

/// A status as a test file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StatusName {
    AwaitingReply,
    HandedOff,
    Finished,
    Failed,
}

impl StatusName {
    pub(crate) fn of(status: &crate::Status) -> Option<StatusName> {
        match status {
            crate::Status::AwaitingReply => Some(StatusName::AwaitingReply),
            crate::Status::HandedOff { .. } => Some(StatusName::HandedOff),
            crate::Status::Finished => Some(StatusName::Finished),
            crate::Status::Failed { .. } => Some(StatusName::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for StatusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatusName::AwaitingReply => "awaiting_reply",
            StatusName::HandedOff => "handed_off",
            StatusName::Finished => "finished",
            StatusName::Failed => "failed",
        })
    }
}

/// `bot: text` or `bot: [text, …]`.
#[derive(Debug, Default)]
pub(crate) struct OneOrMany(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message text or a list of them")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![text.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut texts = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    texts.push(text);
                }
                Ok(OneOrMany(texts))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A duration written `30s`, `250ms`, `1.5s`, `2m`, `1h`, or a number of seconds.
fn optional_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 30s, 250ms, 1.5s, 2m, or a number of seconds")
        }
        fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| E::custom(format!("{seconds} is not a duration")))
        }
        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(seconds))
        }
        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
            u64::try_from(seconds)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{seconds} is not a duration")))
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).ok_or_else(|| {
                E::custom(format!(
                    "{text:?} is not a duration: write it like 30s, 250ms, 1.5s, 2m or 1h"
                ))
            })
        }
    }
    deserializer.deserialize_any(Visitor).map(Some)
}

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`. Fractions are
/// allowed (`0.25s`, as flows write Delays), which `humantime` refuses.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_flows_write_them() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "30", "30 parsecs", "-1s", "1.2.3s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
