//! The state of one conversation: plain data that serializes with serde, so
//! a host can park it between user messages and resume it anywhere.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::flow::StartMode;

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
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub(crate) id: String,
    pub(crate) flow: FlowStamp,
    pub(crate) status: Status,
    /// `None` once the conversation has ended.
    pub(crate) cursor: Option<Cursor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) contact: BTreeMap<String, Value>,
    /// Results of the steps that ran, by step name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) steps: BTreeMap<Arc<str>, Arc<Value>>,
    /// User messages not yet taken by a Question, oldest first.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub(crate) inbox: VecDeque<String>,
    /// Steps run since the user last replied (the loop guard).
    #[serde(default)]
    pub(crate) steps_since_reply: u32,
    /// Per-step visit counts since the user last replied (GoTo bounds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) visits: BTreeMap<Arc<str>, u32>,
    /// The text of the first message the conversation received,
    /// `<<conversation.start_text>>` in templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start_text: Option<String>,
    /// What the channel said about the latest user message (type, media
    /// id, caption, …): `<<conversation.message.…>>` in templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<Value>,
    /// The transcript seq of the latest user message taken (the runtime's):
    /// the message the bot's next replies answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replying_to: Option<u64>,
}

// Written out for `clone_from`: a store that keeps the conversation it
// saved last overwrites it in place with the next save of the same turn,
// reusing its strings and map nodes, instead of cloning a new one and
// dropping the old (a measured part of the CPU of a turn on MemoryStore).
impl Clone for Conversation {
    fn clone(&self) -> Self {
        Conversation {
            id: self.id.clone(),
            flow: self.flow.clone(),
            status: self.status.clone(),
            cursor: self.cursor.clone(),
            contact: self.contact.clone(),
            steps: self.steps.clone(),
            inbox: self.inbox.clone(),
            steps_since_reply: self.steps_since_reply,
            visits: self.visits.clone(),
            start_text: self.start_text.clone(),
            message: self.message.clone(),
            replying_to: self.replying_to,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        // Destructured so that a new field cannot be forgotten here.
        let Conversation {
            id,
            flow,
            status,
            cursor,
            contact,
            steps,
            inbox,
            steps_since_reply,
            visits,
            start_text,
            message,
            replying_to,
        } = source;
        self.id.clone_from(id);
        self.flow.name.clone_from(&flow.name);
        self.flow.hash.clone_from(&flow.hash);
        self.status.clone_from(status);
        self.cursor.clone_from(cursor);
        clone_map_from(&mut self.contact, contact, |to, from| match (to, from) {
            (Value::String(to), Value::String(from)) => to.clone_from(from),
            (to, from) => *to = from.clone(),
        });
        clone_map_from(&mut self.steps, steps, Clone::clone_from);
        self.inbox.clone_from(inbox);
        self.steps_since_reply = *steps_since_reply;
        clone_map_from(&mut self.visits, visits, Clone::clone_from);
        self.start_text.clone_from(start_text);
        self.message.clone_from(message);
        self.replying_to = *replying_to;
    }
}

/// Makes `to` equal to `from`, keeping `to`'s nodes when both hold the same
/// keys (the usual case between two saves of a conversation).
fn clone_map_from<K: Ord + Clone, V: Clone>(
    to: &mut BTreeMap<K, V>,
    from: &BTreeMap<K, V>,
    clone_value: impl Fn(&mut V, &V),
) {
    let same_keys = to.len() == from.len() && to.keys().zip(from.keys()).all(|(a, b)| a == b);
    if same_keys {
        for (to, from) in to.values_mut().zip(from.values()) {
            clone_value(to, from);
        }
    } else {
        *to = from.clone();
    }
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
        self.steps.get(step).map(|v| &**v)
    }

    /// Queues a user message. The next Question takes it; a message sent
    /// while the bot is busy (calling an API, in a Delay) waits here, in order.
    ///
    /// This queues the text as an answer whatever the flow's
    /// [`StartMode`]; [`crate::Engine::receive`] honours the start mode.
    pub fn push_reply(&mut self, text: impl Into<String>) {
        self.inbox.push_back(text.into());
    }

    /// The text of the first message the conversation received
    /// (`<<conversation.start_text>>`), once one has arrived.
    /// `None` when the flow reads no `<<conversation.start_text>>`: the
    /// state then keeps no copy of it.
    pub fn start_text(&self) -> Option<&str> {
        self.start_text.as_deref().filter(|text| !text.is_empty())
    }

    /// Takes a user message in. The first message a conversation receives
    /// is kept as its start text; under [`StartMode::StartFlow`], when it
    /// arrives before any step ran, it only starts the flow instead of
    /// answering the first Question.
    ///
    /// `keep_text` says whether the flow reads the start text: when it does
    /// not, an empty text marks that the first message has come, and the
    /// state does not grow by a copy of it.
    pub(crate) fn accept_message(
        &mut self,
        text: String,
        details: Option<Value>,
        mode: StartMode,
        keep_text: bool,
    ) {
        // Only a channel's messages carry details; a plain one leaves none
        // from an earlier message behind.
        if details.is_some() || self.message.is_some() {
            self.message = details;
        }
        if self.start_text.is_none() {
            let starts_flow = mode == StartMode::StartFlow && self.is_fresh();
            if starts_flow {
                self.start_text = Some(if keep_text { text } else { String::new() });
                return;
            }
            self.start_text = Some(if keep_text { text.clone() } else { String::new() });
        }
        self.inbox.push_back(text);
    }

    /// Whether a `start_flow` conversation still waits for the message that
    /// starts it: no message came and no step ran.
    pub(crate) fn waits_for_start(&self, mode: StartMode) -> bool {
        mode == StartMode::StartFlow && self.start_text.is_none() && self.is_fresh()
    }

    /// No step has run and no message is queued.
    fn is_fresh(&self) -> bool {
        self.status == Status::Running
            && self.steps_since_reply == 0
            && self.steps.is_empty()
            && self.inbox.is_empty()
            && self.cursor.as_ref().is_some_and(|c| c.index == 0)
    }

    /// User messages waiting for a Question.
    pub fn pending_replies(&self) -> impl ExactSizeIterator<Item = &str> {
        self.inbox.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(answer: &str, steps: &[&str]) -> Conversation {
        Conversation {
            id: "c1".into(),
            flow: FlowStamp {
                name: "f".into(),
                hash: "h".into(),
            },
            status: Status::Running,
            cursor: Some(Cursor {
                index: steps.len(),
                name: "Ask".into(),
            }),
            contact: BTreeMap::from([
                ("answer".to_string(), Value::from(answer)),
                ("count".to_string(), Value::from(steps.len())),
            ]),
            steps: steps
                .iter()
                .map(|s| (Arc::from(*s), Arc::new(Value::from(format!("{s} {answer}")))))
                .collect(),
            inbox: VecDeque::from([answer.to_string()]),
            steps_since_reply: steps.len() as u32,
            visits: steps.iter().map(|s| (Arc::from(*s), 1)).collect(),
            start_text: Some(answer.to_string()),
            message: None,
            replying_to: None,
        }
    }

    #[test]
    fn clone_from_equals_clone_with_the_same_or_other_keys() {
        let sources = [
            conversation("a much longer answer than before", &["A", "B"]),
            conversation("x", &["A", "B"]),
            conversation("y", &["A", "C", "D"]),
            conversation("", &[]),
        ];
        for from in &sources {
            for start in &sources {
                let mut to = start.clone();
                to.clone_from(from);
                assert_eq!(&to, from);
            }
        }
    }
}
