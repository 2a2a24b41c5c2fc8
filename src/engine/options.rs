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

/// Engine settings. Change a few with struct update syntax:
/// `EngineOptions { max_steps_without_reply: 200, ..EngineOptions::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Steps a conversation may run without a user reply before it fails
    /// (default 1,000): the last guard against a flow that loops.
    pub max_steps_without_reply: u32,
    /// How queued replies reach Questions.
    pub reply_mode: ReplyMode,
    /// Retry policy for Api steps; steps override fields.
    pub retry: RetryPolicy,
    /// Timeout of one Api attempt when the step sets none (default 30 s).
    pub api_timeout: Duration,
    /// Largest response body an Api step accepts when the step sets none (default 10 MiB).
    pub max_response_bytes: usize,
    /// Longest user reply accepted by [`crate::Engine::receive`], in bytes (default 1 MiB).
    pub max_reply_bytes: usize,
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
