//! What a conversation tells its host as it happens: messages to show,
//! handoffs, the end.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::conversation::Assignment;

/// Something the host should act on, emitted the moment it happens (a
/// message is not held back behind a following Delay or API call).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Show this text to the user.
    Message {
        /// The conversation.
        conversation_id: String,
        /// The Message or Question step that sent it.
        step: String,
        /// The rendered text.
        text: String,
        /// Whether it is a Question, now waiting for the user's reply.
        question: bool,
        /// The Question's options, to show as buttons or a list (left out
        /// of the JSON when there are none).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        options: Vec<crate::flow::QuestionOption>,
    },
    /// An Assign step handed the conversation to a human.
    Handoff {
        /// The conversation.
        conversation_id: String,
        /// To whom, with the note for the agent.
        assignment: Assignment,
        /// The contact attributes, for the agent's context.
        contact: BTreeMap<String, Value>,
    },
    /// The flow reached its end.
    Finished {
        /// The conversation.
        conversation_id: String,
    },
    /// The conversation stopped on an error (secrets masked).
    Failed {
        /// The conversation.
        conversation_id: String,
        /// What went wrong and where.
        error: String,
    },
    /// A bot entry did not reach the customer: its channel refused it for
    /// good, it ran out of attempts, or the channel reported it failed
    /// after accepting it (a runtime's event sink receives it, see
    /// [`crate::RuntimeBuilder::events`]).
    Undelivered {
        /// The conversation.
        conversation_id: String,
        /// The entry's transcript seq.
        seq: u64,
        /// Why (the channel's reason, or its error code and title).
        reason: String,
    },
}

impl Event {
    /// The conversation the event belongs to.
    pub fn conversation_id(&self) -> &str {
        match self {
            Event::Message { conversation_id, .. }
            | Event::Handoff { conversation_id, .. }
            | Event::Finished { conversation_id }
            | Event::Failed { conversation_id, .. }
            | Event::Undelivered { conversation_id, .. } => conversation_id,
        }
    }

    /// The text to show, for a [`Event::Message`].
    pub fn text(&self) -> Option<&str> {
        match self {
            Event::Message { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Receives events as they happen.
///
/// Any `Fn(Event) + Send + Sync` closure is a sink, so forwarding to a
/// channel is one line:
///
/// ```
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<chatflow::Event>();
/// let sink = move |event: chatflow::Event| {
///     let _ = tx.send(event); // the receiver may be gone; nothing to do then
/// };
/// # let _: &dyn chatflow::EventSink = &sink;
/// ```
pub trait EventSink: Send + Sync {
    /// Called once per event, in order, from the task running the conversation.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// An [`EventSink`] that keeps every event, for tests and simple hosts.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<Vec<Event>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the events logged so far, leaving the log empty.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock())
    }

    /// A copy of the events logged so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// The texts of the messages logged so far.
    pub fn texts(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|e| e.text().map(str::to_string))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventSink for EventLog {
    fn emit(&self, event: Event) {
        self.lock().push(event);
    }
}
