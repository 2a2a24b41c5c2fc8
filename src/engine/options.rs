//! Engine settings and what a user reply may be.

use std::time::Duration;

use crate::core::RetryPolicy;
use crate::http::DEFAULT_MAX_RESPONSE_BYTES;

/// What a Question does with several replies queued while the bot was busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplyMode {
    /// Join all queued replies into one, separated by newlines (default):
    /// three short chat messages in a row are one answer.
    #[default]
    Join,
    /// Give each Question one reply; the rest wait for the following Questions.
    OnePerQuestion,
}

/// Engine settings: start from the defaults and change a few with the
/// `with_*` setters (new settings may come; the type grows without breaking).
///
/// ```
/// use chatflow::{EngineOptions, ReplyMode};
///
/// let options = EngineOptions::default()
///     .with_max_steps_without_reply(200)
///     .with_reply_mode(ReplyMode::OnePerQuestion);
/// assert_eq!(options.max_steps_without_reply(), 200);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EngineOptions {
    pub(crate) max_steps_without_reply: u32,
    pub(crate) reply_mode: ReplyMode,
    pub(crate) retry: RetryPolicy,
    pub(crate) api_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_reply_bytes: usize,
}

impl EngineOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Steps a conversation may run without a user reply before it fails
    /// (default 1,000): the last guard against a flow that loops.
    pub fn max_steps_without_reply(&self) -> u32 {
        self.max_steps_without_reply
    }

    /// Sets [`EngineOptions::max_steps_without_reply`].
    pub fn with_max_steps_without_reply(mut self, max_steps_without_reply: u32) -> Self {
        self.max_steps_without_reply = max_steps_without_reply;
        self
    }

    /// How queued replies reach Questions.
    pub fn reply_mode(&self) -> ReplyMode {
        self.reply_mode
    }

    /// Sets [`EngineOptions::reply_mode`].
    pub fn with_reply_mode(mut self, reply_mode: ReplyMode) -> Self {
        self.reply_mode = reply_mode;
        self
    }

    /// Retry policy for Api steps; steps override fields.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Sets [`EngineOptions::retry`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Timeout of one Api attempt when the step sets none (default 30 s).
    pub fn api_timeout(&self) -> Duration {
        self.api_timeout
    }

    /// Sets [`EngineOptions::api_timeout`].
    pub fn with_api_timeout(mut self, api_timeout: Duration) -> Self {
        self.api_timeout = api_timeout;
        self
    }

    /// Largest response body an Api step accepts when the step sets none (default 10 MiB).
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Sets [`EngineOptions::max_response_bytes`].
    pub fn with_max_response_bytes(mut self, max_response_bytes: usize) -> Self {
        self.max_response_bytes = max_response_bytes;
        self
    }

    /// Longest user reply accepted by [`crate::Engine::receive`], in bytes (default 1 MiB).
    pub fn max_reply_bytes(&self) -> usize {
        self.max_reply_bytes
    }

    /// Sets [`EngineOptions::max_reply_bytes`].
    pub fn with_max_reply_bytes(mut self, max_reply_bytes: usize) -> Self {
        self.max_reply_bytes = max_reply_bytes;
        self
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_steps_without_reply: 1000,
            reply_mode: ReplyMode::default(),
            retry: RetryPolicy::default(),
            api_timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_reply_bytes: 1024 * 1024,
        }
    }
}

/// A user reply the engine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// Longer than [`EngineOptions::max_reply_bytes`].
    #[error("reply of {len} bytes is longer than the limit of {limit} bytes")]
    TooLong {
        /// The reply's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}
