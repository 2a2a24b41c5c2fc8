//! How the message that starts a conversation is used.

use serde::{Deserialize, Serialize};

/// Whether the message that starts a conversation answers the flow's first
/// Question, or only starts the flow. In flow JSON: `"start":
/// "answer_first_question"` (the default) or `"start": "start_flow"`.
///
/// Either way the starting text is readable by templates as
/// `<<conversation.start_text>>`.
///
/// ```
/// use chatflow::{Flow, StartMode};
///
/// let flow = Flow::from_json(r#"{
///   "name": "triggered",
///   "start": "start_flow",
///   "steps": [
///     {"type": "message", "name": "Echo", "text": "You wrote: <<conversation.start_text>>"},
///     {"type": "question", "name": "Ask", "text": "Anything else?"}
///   ]
/// }"#)?;
/// assert_eq!(flow.start_mode(), StartMode::StartFlow);
/// # Ok::<(), chatflow::LoadError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartMode {
    /// The starting message is the reply to the first Question the flow
    /// asks: the Question's text is sent and its answer is already there.
    /// Today's behaviour, and the default.
    #[default]
    AnswerFirstQuestion,
    /// The starting message only starts the flow (as a trigger does): the
    /// first Question waits for the user's next message.
    StartFlow,
}

impl StartMode {
    /// The mode's name in flow JSON (`"start_flow"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StartMode::AnswerFirstQuestion => "answer_first_question",
            StartMode::StartFlow => "start_flow",
        }
    }

    /// Whether this is the default mode (left out when a flow is written).
    pub(crate) fn is_default(&self) -> bool {
        *self == StartMode::default()
    }
}
