//! Channels: how the bot's replies reach the customer where they are.
//!
//! A [`Channel`] delivers one outbound transcript entry (a message, a
//! question with its options, a handoff notice) to one conversation, and
//! answers whether the channel took it ([`DeliveryOutcome`]). The
//! [`crate::Runtime`] calls it from its delivery worker
//! ([`crate::Runtime::run_deliveries`]) for every outbound entry of every
//! conversation routed to it — a request's replies, a Delay's follow-up
//! resumed by the scheduler, later an agent's answer — from a durable
//! outbox in the store:
//!
//! - an entry is recorded as delivered only after the channel accepted it,
//!   and the outbox survives restarts: a reply is sent **at least once**, and
//!   twice only when the process dies between the channel's acceptance and
//!   its record (one store write later);
//! - per conversation, entries go out in order: entry n+1 waits until n was
//!   accepted or refused for good;
//! - [`DeliveryOutcome::RetryAfter`] backs off (never sooner than the channel
//!   asks, and exponentially with the attempts), up to
//!   [`crate::RuntimeOptions::delivery_max_attempts`]; a refusal is recorded
//!   on the entry with its reason and never retried;
//! - across processes sharing a store, one process at a time delivers a
//!   conversation's entries (a delivery lease, apart from the turn's).
//!
//! Conversations are routed by their id's prefix: with a channel registered
//! as `"whatsapp"`, the conversation `whatsapp:15551234567` is delivered
//! through it. A conversation no channel is registered for (the `/chat`
//! route's) has no outbox: its replies are returned by the call that
//! produced them, and a host sees the others through
//! [`crate::Runtime::subscribe`].
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use chatflow::channel::{Channel, Delivery, DeliveryOutcome};
//!
//! /// Sends every reply to a push service (here: keeps them in a list).
//! #[derive(Default)]
//! struct Pusher {
//!     sent: Mutex<Vec<String>>,
//! }
//!
//! #[async_trait::async_trait]
//! impl Channel for Pusher {
//!     async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
//!         let mut sent = self.sent.lock().unwrap();
//!         sent.push(format!("{}: {}", delivery.conversation_id, delivery.entry.text));
//!         DeliveryOutcome::accepted(format!("push-{}", sent.len()))
//!     }
//! }
//!
//! # use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let flow = Flow::from_json(r#"{"name": "hello", "steps": [
//!   {"type": "message", "name": "Hi", "text": "Hello!"}
//! ]}"#)?;
//! let pusher = Arc::new(Pusher::default());
//! let runtime = Runtime::builder(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()))
//!     .channel("push", pusher.clone())
//!     .build();
//! runtime.handle_message("push:ada", Some("m1"), "hi").await?;
//! // The delivery worker (`run_deliveries`) would do this in the background.
//! runtime.deliver_due().await?;
//! assert_eq!(*pusher.sent.lock().unwrap(), ["push:ada: Hello!"]);
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::TranscriptEntry;

/// Delivers outbound entries to the customer. Object-safe: a runtime holds
/// channels as `Arc<dyn Channel>`.
///
/// A channel does not retry by itself: it answers
/// [`DeliveryOutcome::RetryAfter`] and the runtime tries again later, from
/// the store, so a retry survives a restart.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Delivers one entry; called again for the same entry only after a
    /// [`DeliveryOutcome::RetryAfter`], or after a crash that came between
    /// the acceptance and its record.
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome;
}

// Runtimes hold channels as trait objects.
fn _assert_object_safe(_: &dyn Channel) {}

/// One outbound entry to deliver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delivery {
    /// The conversation (with its channel prefix, e.g. `whatsapp:15551234567`).
    pub conversation_id: String,
    /// The entry: its text, and for a question its options
    /// ([`TranscriptEntry::options`]); for a Message with a fallback
    /// template, the template in [`TranscriptEntry::details`].
    pub entry: TranscriptEntry,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// The user's latest message (with its channel message id in
    /// [`TranscriptEntry::message_id`] and its time), when there is one: a
    /// channel with a reply window (WhatsApp's 24 hours) measures it from
    /// there, and may mark that message read.
    pub last_inbound: Option<TranscriptEntry>,
}

impl Delivery {
    /// A delivery of `entry` to `conversation_id` (first attempt, no inbound
    /// message known): for a channel's own tests.
    pub fn new(conversation_id: impl Into<String>, entry: TranscriptEntry) -> Delivery {
        Delivery {
            conversation_id: conversation_id.into(),
            entry,
            attempt: 1,
            last_inbound: None,
        }
    }

    /// Sets [`Delivery::attempt`].
    pub fn with_attempt(mut self, attempt: u32) -> Delivery {
        self.attempt = attempt;
        self
    }

    /// Sets [`Delivery::last_inbound`].
    pub fn with_last_inbound(mut self, entry: TranscriptEntry) -> Delivery {
        self.last_inbound = Some(entry);
        self
    }

    /// The part of the conversation id after the channel's prefix (for
    /// `whatsapp:15551234567`, `15551234567`): the channel's address of
    /// the customer.
    pub fn recipient(&self) -> &str {
        self.conversation_id
            .split_once(':')
            .map_or(self.conversation_id.as_str(), |(_, rest)| rest)
    }
}

/// What a channel did with a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// The channel took it; the entry is recorded as delivered.
    Accepted {
        /// The channel's id of the sent message (WhatsApp's `wamid…`), by
        /// which later receipts ([`Receipt`]) find the entry.
        channel_message_id: Option<String>,
    },
    /// Not now (rate limited, the channel is down): try again after
    /// `delay` at the earliest.
    RetryAfter {
        /// How long the channel asks to wait.
        delay: Duration,
        /// Why, for the entry's record and the logs (no secrets).
        reason: String,
    },
    /// Never: recorded on the entry with the reason, not retried.
    Refused {
        /// Why (for example: the 24-hour window has closed).
        reason: String,
    },
}

impl DeliveryOutcome {
    /// Accepted, with the channel's message id.
    pub fn accepted(channel_message_id: impl Into<String>) -> DeliveryOutcome {
        DeliveryOutcome::Accepted {
            channel_message_id: Some(channel_message_id.into()),
        }
    }

    /// Accepted by a channel that gives no message id.
    pub fn accepted_without_id() -> DeliveryOutcome {
        DeliveryOutcome::Accepted {
            channel_message_id: None,
        }
    }

    /// Try again after `delay`.
    pub fn retry_after(delay: Duration, reason: impl Into<String>) -> DeliveryOutcome {
        DeliveryOutcome::RetryAfter {
            delay,
            reason: reason.into(),
        }
    }

    /// Refused for good.
    pub fn refused(reason: impl Into<String>) -> DeliveryOutcome {
        DeliveryOutcome::Refused {
            reason: reason.into(),
        }
    }
}

/// Where an outbound entry of a conversation with a channel stands
/// ([`TranscriptEntry::delivery`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeliveryState {
    /// Pending, accepted or refused.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The channel's id of the sent message, once accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_message_id: Option<String>,
    /// Why it was refused, or why its last attempt is to be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the channel reported later (sent, delivered, read, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

impl DeliveryState {
    /// A pending entry, not tried yet.
    pub fn pending() -> DeliveryState {
        DeliveryState {
            status: DeliveryStatus::Pending,
            attempts: 0,
            channel_message_id: None,
            detail: None,
            receipt: None,
        }
    }
}

/// Whether an outbound entry has been handed to its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Not yet (waiting its turn, or for a retry).
    Pending,
    /// The channel accepted it.
    Accepted,
    /// Refused for good (see [`DeliveryState::detail`]).
    Refused,
}

/// A report a channel sends after accepting a message (WhatsApp's
/// `statuses`), recorded on the entry with the same channel message id
/// ([`crate::store::Store::record_receipt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Receipt {
    /// Sent, delivered, read or failed.
    pub status: ReceiptStatus,
    /// For a failure, what the channel said (error code and title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When, as milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl Receipt {
    /// A receipt with this status at `at`.
    pub fn new(status: ReceiptStatus, at: SystemTime) -> Receipt {
        Receipt {
            status,
            detail: None,
            at_ms: at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// Sets [`Receipt::detail`].
    pub fn with_detail(mut self, detail: impl Into<String>) -> Receipt {
        self.detail = Some(detail.into());
        self
    }
}

/// A channel's report on a sent message. Receipts may arrive late, twice
/// or out of order: a store keeps the furthest one (`failed` beyond all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReceiptStatus {
    /// The channel sent it.
    Sent,
    /// It reached the customer's device.
    Delivered,
    /// The customer read it.
    Read,
    /// It could not be delivered after all.
    Failed,
}

impl ReceiptStatus {
    /// The name stored and shown: `sent`, `delivered`, `read`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Sent => "sent",
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Read => "read",
            ReceiptStatus::Failed => "failed",
        }
    }

    /// The status named by [`ReceiptStatus::as_str`].
    pub fn from_name(name: &str) -> Option<ReceiptStatus> {
        Some(match name {
            "sent" => ReceiptStatus::Sent,
            "delivered" => ReceiptStatus::Delivered,
            "read" => ReceiptStatus::Read,
            "failed" => ReceiptStatus::Failed,
            _ => return None,
        })
    }
}
