//! What the mock assistant answers: [`ReplyInput`] in, [`Reply`] out.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// What the mock's assistant sees when it has to answer a run or a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyInput {
    /// The text of the newest user message (empty if there is none).
    pub user_text: String,
    /// The whole conversation as `(role, text)` pairs, oldest first, including
    /// the newest user message.
    pub history: Vec<(String, String)>,
    /// The instructions of the run or response. For a run with both
    /// `instructions` and `additional_instructions`, they are joined by a newline.
    pub instructions: Option<String>,
    /// The `model` the request named, if any.
    pub model: Option<String>,
}

impl ReplyInput {
    /// An input with a single user message and no instructions or model; handy
    /// for testing a reply function directly.
    pub fn new(user_text: impl Into<String>) -> Self {
        let user_text = user_text.into();
        ReplyInput {
            history: vec![("user".to_owned(), user_text.clone())],
            user_text,
            instructions: None,
            model: None,
        }
    }

    /// Builds the input from a history, taking `user_text` from its newest user message.
    pub(crate) fn from_history(
        history: Vec<(String, String)>,
        instructions: Option<String>,
        model: Option<String>,
    ) -> Self {
        let user_text = history
            .iter()
            .rev()
            .find(|(role, _)| role == "user")
            .map(|(_, text)| text.clone())
            .unwrap_or_default();
        ReplyInput {
            user_text,
            history,
            instructions,
            model,
        }
    }
}

/// How the mock's assistant ends a run or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Answer with this text: the run ends `completed` with an assistant
    /// message, the response ends `completed` with an `output_text`.
    Text(String),
    /// The run ends `failed` with `last_error: {code, message}`; the response
    /// ends `failed` with `error: {code, message}`. OpenAI's codes are
    /// `server_error`, `rate_limit_exceeded` and `invalid_prompt`.
    Fail {
        /// The error code.
        code: String,
        /// The human-readable message.
        message: String,
    },
    /// The run ends `expired` (a response ends `cancelled`).
    Expire,
    /// The run or the response ends `cancelled`.
    Cancel,
    /// The run or the response ends `incomplete`, without answer text.
    Incomplete,
}

impl Reply {
    /// Shorthand for [`Reply::Text`].
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Text(text.into())
    }

    /// Shorthand for [`Reply::Fail`].
    pub fn fail(code: impl Into<String>, message: impl Into<String>) -> Self {
        Reply::Fail {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The demo assistant's answer when a user asks for a person.
pub const HANDOFF_REPLY: &str = "HANDOFF: Let me connect you with a member of our support team.";

/// The mock's default assistant, good enough for a terminal demo.
///
/// If the user's text mentions (case-insensitively) "human", "agent",
/// "person" or "handoff", it answers [`HANDOFF_REPLY`]; otherwise a friendly
/// canned answer quoting the question.
///
/// ```
/// use chatflow::mock::{demo_reply, Reply, ReplyInput};
///
/// let reply = demo_reply(&ReplyInput::new("Can I talk to a human?"));
/// assert_eq!(reply, Reply::text(chatflow::mock::HANDOFF_REPLY));
/// ```
pub fn demo_reply(input: &ReplyInput) -> Reply {
    let lower = input.user_text.to_lowercase();
    if ["human", "agent", "person", "handoff"]
        .iter()
        .any(|word| lower.contains(word))
    {
        return Reply::text(HANDOFF_REPLY);
    }
    let question = input.user_text.trim();
    if question.is_empty() {
        return Reply::text(
            "Hi! I'm chatflow's built-in demo assistant (set OPENAI_API_KEY to talk to a real \
             model). How can I help?",
        );
    }
    Reply::Text(format!(
        "Thanks for your question about \"{}\". (This is chatflow's built-in demo assistant: \
         set OPENAI_API_KEY to talk to a real model.) Anything else I can help with?",
        shorten(question, 80)
    ))
}

/// At most `max` characters, with an ellipsis when cut (keeps terminal lines short).
fn shorten(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{}…", head.trim_end())
    } else {
        head
    }
}

/// The reply function as stored by the mock.
pub(crate) type ReplyFn = Arc<dyn Fn(&ReplyInput) -> Reply + Send + Sync>;

/// Calls the user's reply function. A panic in it (an `assert!` in a test's
/// closure, say) becomes a failed run instead of a dropped connection.
pub(crate) fn call_reply(reply: &ReplyFn, input: &ReplyInput) -> Reply {
    match catch_unwind(AssertUnwindSafe(|| reply(input))) {
        Ok(reply) => reply,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::warn!(%detail, "mock OpenAI reply function panicked");
            Reply::fail(
                "server_error",
                format!("The mock's reply function panicked: {detail}"),
            )
        }
    }
}
