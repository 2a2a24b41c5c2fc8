//! A conversation running on its own task, and the handle to talk to it.

use tokio::sync::mpsc;

use super::ReplyError;
use crate::conversation::{Conversation, Status};
use crate::error::RunError;

/// A conversation running on its own task (see [`crate::Engine::spawn`]).
#[derive(Debug)]
pub struct ConversationHandle {
    pub(super) sender: mpsc::UnboundedSender<String>,
    pub(super) task: tokio::task::JoinHandle<(Conversation, Result<Status, RunError>)>,
    pub(super) max_reply_bytes: usize,
}

impl ConversationHandle {
    /// Sends a user message. It reaches the next Question, in order.
    /// Returns an error when the text is too long or the conversation has
    /// already ended.
    pub fn send(&self, text: impl Into<String>) -> Result<(), SendError> {
        let text = text.into();
        if text.len() > self.max_reply_bytes {
            return Err(SendError::Reply(ReplyError::TooLong {
                len: text.len(),
                limit: self.max_reply_bytes,
            }));
        }
        self.sender.send(text).map_err(|_| SendError::Ended)
    }

    /// Stops taking messages and waits until the conversation waits for a
    /// reply with none queued, or ends; returns its state to park or inspect.
    pub async fn finish(self) -> Result<(Conversation, Result<Status, RunError>), SendError> {
        drop(self.sender);
        self.task.await.map_err(|_| SendError::Ended)
    }
}

/// Why a message could not be sent to a running conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The reply was refused.
    #[error(transparent)]
    Reply(ReplyError),
    /// The conversation's task has ended.
    #[error("the conversation has ended")]
    Ended,
}
