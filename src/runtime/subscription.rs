//! Following a conversation's bot entries as they are committed.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::{Runtime, RuntimeError};
use crate::store::{Direction, TranscriptEntry};

/// A conversation's bot entries (messages, questions, handoff notices), in
/// transcript order, as turns commit them: a request's replies, a Delay's
/// follow-up resumed by the scheduler, later an agent's answer. From
/// [`Runtime::subscribe`].
///
/// Entries are read from the store, so none is missed or repeated: a
/// subscriber that reconnects passes the last `seq` it saw (an SSE
/// client's `Last-Event-ID`). Commits of this process wake it at once;
/// another process's commits are seen within
/// [`crate::RuntimeOptions::scheduler_poll`] of real time (whatever the
/// engine's clock).
///
/// ```
/// # use std::sync::Arc;
/// # use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let flow = Flow::from_json(r#"{"name": "f", "start": "start_flow", "steps": [
///   {"type": "question", "name": "Ask", "text": "Name?"},
///   {"type": "message", "name": "Hi", "text": "Hi <<step.Ask.response>>"}
/// ]}"#)?;
/// let runtime = Runtime::new(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()));
/// let mut replies = runtime.subscribe("c1", 0);
/// runtime.handle_message("c1", Some("m1"), "hello").await?;
/// runtime.handle_message("c1", Some("m2"), "Ada").await?;
/// assert_eq!(replies.next().await?.text, "Name?");
/// assert_eq!(replies.next().await?.text, "Hi Ada");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Subscription {
    runtime: Runtime,
    conversation_id: String,
    after: u64,
    ready: VecDeque<TranscriptEntry>,
    commits: broadcast::Receiver<Arc<str>>,
}

impl Runtime {
    /// Follows the bot entries of `conversation_id` that come after
    /// transcript seq `after_seq` (0 for all of them).
    pub fn subscribe(&self, conversation_id: &str, after_seq: u64) -> Subscription {
        Subscription {
            runtime: self.clone(),
            conversation_id: conversation_id.to_string(),
            after: after_seq,
            ready: VecDeque::new(),
            commits: self.inner.committed.subscribe(),
        }
    }

    /// Tells subscriptions that a commit added bot entries to this
    /// conversation.
    pub(super) fn note_committed(&self, conversation_id: &str) {
        if self.inner.committed.receiver_count() > 0 {
            // No receiver left is not an error.
            let _ = self.inner.committed.send(Arc::from(conversation_id));
        }
    }
}

impl Subscription {
    /// The next bot entry; waits until there is one. Fails only when the
    /// store does (the subscription stays usable).
    pub async fn next(&mut self) -> Result<TranscriptEntry, RuntimeError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                self.after = entry.seq;
                return Ok(entry);
            }
            let inner = &*self.runtime.inner;
            // Listening before reading: a commit between the two still wakes us.
            let entries = inner.store.transcript(&self.conversation_id, self.after).await?;
            self.ready
                .extend(entries.into_iter().filter(|e| e.direction != Direction::In));
            if !self.ready.is_empty() {
                continue;
            }
            // Real time, not the engine's clock: the poll is for other
            // processes' commits, and a virtual clock would be moved by it.
            let sleep = tokio::time::sleep(inner.options.scheduler_poll);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    commit = self.commits.recv() => match commit {
                        Ok(id) if *id == *self.conversation_id => break,
                        Ok(_) => continue,
                        // Missed some: read again.
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => {
                            (&mut sleep).await;
                            break;
                        }
                    },
                    _ = &mut sleep => break,
                }
            }
        }
    }

    /// The last transcript seq returned (or the one the subscription
    /// started after).
    pub fn last_seq(&self) -> u64 {
        self.after
    }
}
