//! What the core asks of its driver ([`Effect`]), and what it sends out
//! ([`Outbound`]).

use std::sync::Arc;
use std::time::SystemTime;

use crate::conversation::Assignment;
use crate::error::RunError;
use crate::http::HttpRequest;

/// The next thing a conversation needs, from [`super::Machine::poll`].
///
/// An effect either asks the driver to do something and poll again
/// ([`Effect::Send`], [`Effect::Http`], [`Effect::Sleep`]), or says the
/// conversation waits or has stopped. More kinds will come (delivering a
/// reply through a channel, a tool call, an agent message): match with a
/// `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Effect<'a> {
    /// Deliver this entry to the user (or the host), then poll again. It
    /// counts as sent once the driver has delivered or recorded it.
    Send(Outbound),
    /// Send this request through the HTTP client and hand its outcome to
    /// [`super::Machine::http_done`], then poll again.
    Http {
        /// The request: the Api step's, rendered (it may hold secrets: log
        /// its `display_url`).
        request: &'a HttpRequest,
        /// 1 for the first attempt, 2 for the first retry, …
        attempt: u32,
    },
    /// Nothing to do before `until`: poll again when the time has come
    /// (polling earlier returns the same effect).
    Sleep {
        /// When to poll again.
        until: SystemTime,
        /// Why: a Delay step, or a retry's backoff.
        wake: Wake,
    },
    /// The conversation waits at a Question for the user: queue the reply
    /// ([`crate::Engine::receive`]) and poll again.
    AwaitReply,
    /// The conversation has just been handed to a human (after the
    /// [`Outbound::Handoff`] notice): the bot's part is over.
    HandOff,
    /// The conversation has just reached the end of its flow.
    Finish,
    /// The conversation has just failed; its status holds the message,
    /// secrets masked.
    Fail(RunError),
    /// The conversation had already ended (handed off, finished or failed)
    /// before this poll: nothing to do.
    Ended,
}

/// Why the core sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// A Delay step: the conversation is [`crate::Status::Sleeping`] and may
    /// be parked until then.
    Delay,
    /// The backoff before retrying an Api call; the call is in progress and
    /// its state lives in the [`super::Machine`] only.
    Retry {
        /// The attempt that follows the backoff (2 for the first retry).
        attempt: u32,
    },
}

/// An entry the bot sends, in the order the flow sends them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outbound {
    /// A Message step's text.
    Message {
        /// The step that sent it.
        step: Arc<str>,
        /// The rendered text.
        text: String,
        /// The Message's `whatsapp_template`, rendered: what a WhatsApp
        /// conversation gets instead outside its 24-hour window.
        whatsapp_template: Option<serde_json::Value>,
    },
    /// A Question step's text; the conversation now waits for the reply.
    Question {
        /// The step that asked.
        step: Arc<str>,
        /// The rendered text.
        text: String,
        /// The choices to show as buttons or a list (empty: a free answer).
        options: Vec<crate::flow::QuestionOption>,
    },
    /// The notice that an Assign step handed the conversation to a human.
    Handoff(Assignment),
}

impl Outbound {
    /// The text shown to the user; `None` for a handoff notice.
    pub fn text(&self) -> Option<&str> {
        match self {
            Outbound::Message { text, .. } | Outbound::Question { text, .. } => Some(text),
            Outbound::Handoff(_) => None,
        }
    }
}
