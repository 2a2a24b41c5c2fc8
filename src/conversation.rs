//! The state of one conversation: plain data that serializes with serde, so
//! a host can park it between user messages and resume it anywhere.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a conversation stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Ready to run its current step.
    Running,
    /// Its current step, a Question, was sent; waiting for the user.
    AwaitingReply,
    /// In a Delay until the given time.
    Sleeping {
        /// When the Delay ends.
        #[serde(with = "crate::time::unix_ms")]
        until: SystemTime,
    },
    /// Handed to a human by an Assign step; the bot's part is over.
    HandedOff {
        /// To whom.
        assignment: Assignment,
    },
    /// Reached the end of the flow.
    Finished,
    /// Stopped by an error; the message says what and where.
    Failed {
        /// The error, secrets masked.
        error: String,
    },
}

impl Status {
    /// Whether the conversation is over (handed off, finished or failed).
    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            Status::HandedOff { .. } | Status::Finished | Status::Failed { .. }
        )
    }
}

/// Who a conversation was handed to, as rendered by the Assign step.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Assignment {
    /// The Assign step's name.
    pub step: String,
    /// The team, if the step names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The agent, if the step names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The note for the agent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Which flow a conversation runs: its name and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStamp {
    /// The flow's name.
    pub name: String,
    /// The flow's [`crate::Flow::hash`].
    pub hash: String,
}

/// The step a conversation is at, by position and by name (the name lets a
/// conversation find its place again in an edited flow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
}

/// One conversation's whole state.
///
/// Made by [`crate::Engine::start`], advanced by [`crate::Engine::run`]; it
/// holds no secrets and no host values, only what the conversation produced.
///
/// ```
/// # let flow = chatflow::Flow::from_json(r#"{"name": "f", "steps": [
/// #   {"type": "question", "name": "Ask", "text": "?"}]}"#).unwrap();
/// # let engine = chatflow::Engine::builder(flow).build().unwrap();
/// let mut conversation = engine.start("user-42");
/// conversation.push_reply("hello");
/// let parked = serde_json::to_string(&conversation)?;
/// let resumed: chatflow::Conversation = serde_json::from_str(&parked)?;
/// assert_eq!(resumed, conversation);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub(crate) id: String,
    pub(crate) flow: FlowStamp,
    pub(crate) status: Status,
    /// `None` once the conversation has ended.
    pub(crate) cursor: Option<Cursor>,
    #[serde(default, skip_serializing_if = "ParkedMap::is_empty")]
    pub(crate) contact: ParkedMap,
    /// Results of the steps that ran, by step name.
    #[serde(default, skip_serializing_if = "ParkedMap::is_empty")]
    pub(crate) steps: ParkedMap,
    /// User messages not yet taken by a Question, oldest first.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub(crate) inbox: VecDeque<String>,
    /// Steps run since the user last replied (the loop guard).
    #[serde(default)]
    pub(crate) steps_since_reply: u32,
    /// Per-step visit counts since the user last replied (GoTo bounds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) visits: BTreeMap<String, u32>,
}

impl Conversation {
    /// The conversation's id, as the host gave it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the conversation stands.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The flow the conversation runs.
    pub fn flow(&self) -> &FlowStamp {
        &self.flow
    }

    /// The name of the step the conversation is at (`None` once ended).
    pub fn current_step(&self) -> Option<&str> {
        self.cursor.as_ref().map(|c| &*c.name)
    }

    /// Contact attributes set so far.
    pub fn contact(&self) -> &BTreeMap<String, Value> {
        &self.contact
    }

    /// A step's result (`{"response": …, "status": …}`), if it ran.
    pub fn step_result(&self, step: &str) -> Option<&Value> {
        self.steps.get(step)
    }

    /// Queues a user message. The next Question takes it; a message sent
    /// while the bot is busy (calling an API, in a Delay) waits here, in order.
    pub fn push_reply(&mut self, text: impl Into<String>) {
        self.inbox.push_back(text.into());
    }

    /// User messages waiting for a Question.
    pub fn pending_replies(&self) -> impl ExactSizeIterator<Item = &str> {
        self.inbox.iter().map(String::as_str)
    }
}

/// A JSON map (contact attributes, step results) that a copy keeps as JSON
/// text rather than as values.
///
/// A parked conversation is cloned into and out of the memory store, and
/// as values its step results cost a 632-byte B-tree node for every JSON
/// object in them (a kept answer, `response.data.0.content.0.text.value`,
/// is five): about 9 KB for the guide's flow at its "Answer" question,
/// against about 1 KB as text. So a clone holds the text only, and the map
/// is parsed again the first time it is read. A map whose text would not
/// parse back to the same values (floating-point numbers, deep nesting) is
/// cloned as values. Reading and changing it work
/// as for the map itself (`Deref`, `DerefMut`); the serialized form is the
/// map's.
#[derive(Default)]
pub(crate) struct ParkedMap {
    /// The map as JSON, when known: set by a clone, cleared by a change.
    json: OnceLock<String>,
    /// The map, once read or changed. One of the two is always set.
    map: OnceLock<BTreeMap<String, Value>>,
}

/// Nesting up to which a map's JSON is sure to parse again (serde_json
/// refuses more than 128 levels); deeper maps are copied as values.
const MAX_PARKED_DEPTH: usize = 100;

impl ParkedMap {
    /// Whether the map has no entries (without parsing it).
    pub(crate) fn is_empty(&self) -> bool {
        match (self.map.get(), self.json.get()) {
            (Some(map), _) => map.is_empty(),
            (None, Some(json)) => json == "{}",
            (None, None) => true,
        }
    }

    fn parsed(json: Option<&str>) -> BTreeMap<String, Value> {
        // Only JSON this type wrote, of a map it could parse, gets here.
        json.and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }
}

impl From<BTreeMap<String, Value>> for ParkedMap {
    fn from(map: BTreeMap<String, Value>) -> Self {
        ParkedMap {
            json: OnceLock::new(),
            map: OnceLock::from(map),
        }
    }
}

impl Deref for ParkedMap {
    type Target = BTreeMap<String, Value>;

    fn deref(&self) -> &Self::Target {
        self.map
            .get_or_init(|| Self::parsed(self.json.get().map(String::as_str)))
    }
}

impl DerefMut for ParkedMap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        let json = self.json.take();
        if self.map.get().is_none() {
            self.map = OnceLock::from(Self::parsed(json.as_deref()));
        }
        self.map
            .get_mut()
            .unwrap_or_else(|| unreachable!("the map was set just above"))
    }
}

impl Clone for ParkedMap {
    fn clone(&self) -> Self {
        if let Some(json) = self.json.get() {
            return ParkedMap {
                json: OnceLock::from(json.clone()),
                map: OnceLock::new(),
            };
        }
        let map = &**self;
        let json = map
            .values()
            .all(|value| round_trips(value, 1))
            .then(|| serde_json::to_string(map).ok())
            .flatten();
        match json {
            Some(json) => {
                let copy = ParkedMap {
                    json: OnceLock::from(json.clone()),
                    map: OnceLock::new(),
                };
                // The original keeps its text too, for the next clone.
                let _ = self.json.set(json);
                copy
            }
            None => ParkedMap::from(map.clone()),
        }
    }
}

/// Whether `value`, at nesting `depth`, parses back from its JSON exactly:
/// not too deep, and no floating-point numbers (serde_json parses those
/// to the nearest value only within a unit in the last place).
fn round_trips(value: &Value, depth: usize) -> bool {
    match value {
        Value::Number(n) => !n.is_f64(),
        Value::Array(items) => depth < MAX_PARKED_DEPTH && items.iter().all(|v| round_trips(v, depth + 1)),
        Value::Object(map) => depth < MAX_PARKED_DEPTH && map.values().all(|v| round_trips(v, depth + 1)),
        _ => true,
    }
}

impl PartialEq for ParkedMap {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for ParkedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl Serialize for ParkedMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ParkedMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(ParkedMap::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_parked_map_reads_and_changes_like_the_map() {
        let original = ParkedMap::from(map(json!({"a": {"b": [1, {"c": "d"}]}, "e": "f"})));
        let mut copy = original.clone();
        assert!(copy.map.get().is_none(), "a copy holds text");
        assert_eq!(copy, original);
        assert_eq!(copy.get("e"), Some(&json!("f")));
        copy.insert("g".into(), json!(1));
        assert!(copy.json.get().is_none(), "a change drops the text");
        assert_eq!(copy.len(), 3);
        assert_eq!(original.len(), 2);
        let again = copy.clone();
        assert_eq!(again, copy);
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            json!({"a": {"b": [1, {"c": "d"}]}, "e": "f", "g": 1})
        );
        let empty = ParkedMap::default().clone();
        assert!(empty.is_empty() && ParkedMap::default().is_empty());
    }

    #[test]
    fn deep_values_are_copied_as_values() {
        let mut deep = json!("x");
        for _ in 0..126 {
            deep = json!([deep]);
        }
        let original = ParkedMap::from(map(json!({ "deep": deep })));
        let copy = original.clone();
        assert!(copy.map.get().is_some());
        assert_eq!(copy, original);
    }

    #[test]
    fn floats_are_copied_as_values() {
        let original = ParkedMap::from(map(json!({"a": {"x": [0.1 + 0.2, 1e300]}, "b": 3})));
        let copy = original.clone();
        assert!(copy.map.get().is_some());
        assert_eq!(copy, original);
    }
}
