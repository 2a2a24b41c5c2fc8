//! Where conversations live between turns: state, the inbox of user
//! messages not yet applied, the transcript, wake-up times, and the lease
//! that lets one runner at a time (in one process or many) advance a
//! conversation.
//!
//! # What a store guarantees
//!
//! - [`Store::enqueue`] records an inbound message exactly once per
//!   `(conversation, message id)`: a redelivered webhook changes nothing.
//!   The message is durable before any step runs, so it cannot be lost.
//! - A runner [`Store::acquire`]s a conversation's lease before advancing it
//!   and [`Store::save`]s under that lease; a save from a runner whose lease
//!   was taken over (after it expired) is refused ([`StoreError::LeaseLost`]),
//!   so two runners can never both commit a turn.
//! - [`Store::save`] commits the state, the transcript entries the turn
//!   produced, the inbox entries it consumed and the wake-up time in one
//!   atomic write.
//!
//! What the runtime builds on these (when it saves, what a crash can repeat
//! and what it never can) is written once, in the crash-safety rules of the
//! runtime's turn module, not here.
//!
//! # Choosing a store
//!
//! [`MemoryStore`] for tests, demos and a single process that may lose its
//! conversations on restart. `SqliteStore` (feature `sqlite`) for one
//! host: conversations survive restarts, and several processes of the host
//! may share the file. `PostgresStore` (feature `postgres`) for several
//! hosts against one database. Each SQL store creates and migrates its own
//! tables on connect; existing databases are migrated in place.
//!
//! # Layout
//!
//! One module per backend (`memory`, `sqlite/`, `postgres/`); a SQL
//! backend keeps its statements as named `.sql` files (`queries/`) and its
//! schema's migrations (`migrations/`) in its folder. Every statement takes
//! the caller's time as a parameter: no store reads the database's clock,
//! so an injected clock governs leases and wake-ups. Decoding rows into
//! these types is shared (`rows`). Every backend passes one conformance
//! suite, `tests/store_conformance.rs`: the contract is the suite.

mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use error::{BoxError, StoreError};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::channel::Receipt;
use crate::conversation::Conversation;

/// Who said a transcript entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Direction {
    /// The user.
    In,
    /// The bot.
    Out,
    /// A handoff to a human (the entry's text says to whom).
    Handoff,
}

/// One line of a conversation's transcript.
///
/// Serialized, the fields that are empty or absent are left out, so an
/// entry of a conversation without a channel reads as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TranscriptEntry {
    /// Position in the transcript, from 1.
    pub seq: u64,
    /// Who said it.
    pub direction: Direction,
    /// What was said.
    pub text: String,
    /// When, as milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// For a user message, the id it came with (a channel's message id,
    /// such as WhatsApp's `wamid…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// For a question, the options it offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<crate::flow::QuestionOption>,
    /// Structured details: for a user message, what its channel said about
    /// it (type, media id, caption, coordinates); for a bot message, what a
    /// channel needs besides the text (a Message's `whatsapp_template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// For a bot entry, the transcript `seq` of the user message it answers
    /// (the latest one the conversation had taken when the entry was
    /// produced): the reply belongs to the response to that message, and to
    /// no other. `None` for entries produced before any user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// For a bot entry of a conversation with a channel, where its
    /// delivery stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::channel::DeliveryState>,
}

impl TranscriptEntry {
    /// An entry with these fields and no others.
    pub fn new(seq: u64, direction: Direction, text: impl Into<String>, at_ms: u64) -> TranscriptEntry {
        TranscriptEntry {
            seq,
            direction,
            text: text.into(),
            at_ms,
            message_id: None,
            options: Vec::new(),
            details: None,
            reply_to: None,
            delivery: None,
        }
    }
}

/// A user message as its channel received it, for [`Store::enqueue_message`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct InboundMessage<'a> {
    /// The message's id: a message id recorded before changes nothing.
    pub message_id: &'a str,
    /// The text the flow reads as the answer (for media, a text form).
    pub text: &'a str,
    /// What the channel said about it (type, media id, caption,
    /// coordinates, the sender's profile), readable by the flow as
    /// `<<conversation.message.…>>`.
    pub details: Option<&'a serde_json::Value>,
    /// Whether the flow takes it as the user's message (the default). A
    /// message that is not one (a reaction, a system notice, a type the
    /// channel does not support) is only recorded: its id is seen and it
    /// is kept in the transcript, but it joins no inbox and answers no
    /// Question.
    pub answers: bool,
}

impl<'a> InboundMessage<'a> {
    /// A text message.
    pub fn new(message_id: &'a str, text: &'a str) -> InboundMessage<'a> {
        InboundMessage {
            message_id,
            text,
            details: None,
            answers: true,
        }
    }

    /// Sets [`InboundMessage::answers`].
    pub fn with_answers(mut self, answers: bool) -> InboundMessage<'a> {
        self.answers = answers;
        self
    }

    /// Sets [`InboundMessage::details`].
    pub fn with_details(mut self, details: &'a serde_json::Value) -> InboundMessage<'a> {
        self.details = Some(details);
        self
    }
}

/// A user message waiting to be applied.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InboxEntry {
    /// Arrival order within the conversation, from 1.
    pub seq: u64,
    /// The text.
    pub text: String,
    /// The message's `seq` in the transcript.
    pub transcript_seq: u64,
    /// Its details ([`InboundMessage::details`]).
    pub details: Option<serde_json::Value>,
}

impl InboxEntry {
    /// An inbox entry.
    pub fn new(seq: u64, text: impl Into<String>, transcript_seq: u64) -> InboxEntry {
        InboxEntry {
            seq,
            text: text.into(),
            transcript_seq,
            details: None,
        }
    }
}

/// A conversation taken for one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The stored state; `None` for a conversation that has not started.
    pub conversation: Option<Conversation>,
    /// Messages not yet applied, in arrival order.
    pub inbox: Vec<InboxEntry>,
}

/// A new message recorded by [`Store::enqueue_and_acquire`].
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The message's transcript `seq`, as [`Store::enqueue`] returns it.
    pub seq: u64,
    /// The conversation taken for a turn, as [`Store::acquire`] returns it:
    /// `None` when another owner holds an unexpired lease.
    pub claim: Option<Claim>,
}

/// A bot entry a turn appends to the transcript.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutgoingEntry {
    /// [`Direction::Out`] or [`Direction::Handoff`].
    pub direction: Direction,
    /// The text.
    pub text: String,
    /// A question's options ([`TranscriptEntry::options`]).
    pub options: Vec<crate::flow::QuestionOption>,
    /// Details for the channel ([`TranscriptEntry::details`]).
    pub details: Option<serde_json::Value>,
}

impl OutgoingEntry {
    /// An entry with a text only.
    pub fn new(direction: Direction, text: impl Into<String>) -> OutgoingEntry {
        OutgoingEntry {
            direction,
            text: text.into(),
            options: Vec::new(),
            details: None,
        }
    }
}

/// What a turn commits in one atomic write.
#[derive(Debug, Clone, PartialEq)]
pub struct Save<'a> {
    /// The conversation's new state.
    pub conversation: &'a Conversation,
    /// Inbox entries up to this `seq` are applied and removed.
    pub consumed_up_to: u64,
    /// Bot messages (and handoffs) to append to the transcript.
    pub outgoing: &'a [OutgoingEntry],
    /// The [`TranscriptEntry::reply_to`] of every entry in `outgoing`.
    pub reply_to: Option<u64>,
    /// Whether `outgoing` goes to the outbox: each entry is recorded
    /// [`crate::channel::DeliveryStatus::Pending`] (in the same write), and
    /// the conversation's deliveries are due at `now` unless some already
    /// wait.
    pub deliver: bool,
    /// When the conversation needs a runner even if no message comes: a
    /// Delay's end, or at once for one saved mid-turn (so a crashed turn is
    /// picked up when its lease expires); `None` when it waits for the user
    /// or has ended.
    pub wake_at: Option<SystemTime>,
    /// The lease is extended to this time (the last save of a turn passes
    /// `now`, giving the lease up in the same write).
    pub lease_until: SystemTime,
    /// The caller's clock, for the transcript entries' times.
    pub now: SystemTime,
}

/// A conversation's pending deliveries, taken by
/// [`Store::claim_deliveries`] under its delivery lease.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PendingDeliveries {
    /// The conversation.
    pub conversation_id: String,
    /// Its pending entries in transcript order (each with its
    /// [`TranscriptEntry::delivery`], attempts included).
    pub entries: Vec<TranscriptEntry>,
    /// The user's latest message in the transcript, if any.
    pub last_inbound: Option<TranscriptEntry>,
}

impl PendingDeliveries {
    /// Pending deliveries of one conversation.
    pub fn new(
        conversation_id: impl Into<String>,
        entries: Vec<TranscriptEntry>,
        last_inbound: Option<TranscriptEntry>,
    ) -> PendingDeliveries {
        PendingDeliveries {
            conversation_id: conversation_id.into(),
            entries,
            last_inbound,
        }
    }
}

/// The outcome of one delivery attempt, for [`Store::record_delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryRecord<'a> {
    /// The channel accepted the entry.
    Accepted {
        /// The channel's message id.
        channel_message_id: Option<&'a str>,
    },
    /// Try the entry again at `at` (the conversation's later entries wait).
    Retry {
        /// When the conversation's deliveries are due again.
        at: SystemTime,
        /// Why (kept on the entry).
        reason: &'a str,
    },
    /// Refused for good (kept on the entry); the next entry may go.
    Refused {
        /// Why.
        reason: &'a str,
    },
}

/// Conversations by what they wait for (see [`Store::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationCounts {
    /// In a Delay.
    pub sleeping: u64,
    /// Waiting for the user, handed off or ended.
    pub parked: u64,
}

/// Durable storage for conversations. Implementations: [`MemoryStore`];
/// SQLite and Postgres behind the `sqlite` and `postgres` features.
///
/// A store implements the core operations; three combined ones are
/// optional fast paths with defaults built from the core ones:
/// [`Store::enqueue_and_acquire`], [`Store::save_and_read_replies`] and
/// [`Store::next_wake_after`] (the shipped SQL stores answer each in one
/// statement or transaction). A failing database is reported as
/// [`StoreError::Backend`], made with [`StoreError::backend`].
///
/// Every implementation passes the same conformance suite
/// (`tests/store_conformance.rs`).
#[async_trait]
pub trait Store: Send + Sync {
    /// Records an inbound message and appends it to the inbox and the
    /// transcript (with its id and details), atomically; returns its
    /// transcript `seq`. Returns `None`, changing nothing, when this
    /// `message_id` was recorded for this conversation before (and not
    /// forgotten since: [`Store::prune_seen`]).
    async fn enqueue_message(
        &self,
        conversation_id: &str,
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError>;

    /// [`Store::enqueue_message`] for a text message without details.
    async fn enqueue(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.enqueue_message(conversation_id, InboundMessage::new(message_id, text), now)
            .await
    }

    /// Takes the conversation's lease for `owner` until `lease_until`, when no
    /// other owner holds an unexpired one; returns `None` when it is held.
    /// Taking a lease one already holds renews it.
    async fn acquire(
        &self,
        conversation_id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError>;

    /// [`Store::enqueue`] followed, for a message not seen before, by
    /// [`Store::acquire`]: returns `None`, changing nothing and taking no
    /// lease, for a repeated `message_id`. The claim lists every unapplied
    /// message up to and including this one.
    ///
    /// The default calls the two in turn. A store may do both in one write
    /// (the Postgres store does, saving a round trip per message); the
    /// message is then as durable as with [`Store::enqueue`], and the lease
    /// is taken in the same commit.
    async fn enqueue_and_acquire(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Enqueued>, StoreError> {
        let Some(seq) = self.enqueue(conversation_id, message_id, text, now).await? else {
            return Ok(None);
        };
        let claim = self.acquire(conversation_id, owner, lease_until, now).await?;
        Ok(Some(Enqueued { seq, claim }))
    }

    /// Commits a turn's progress under `owner`'s lease, atomically; refused
    /// with [`StoreError::LeaseLost`] when the lease is not `owner`'s (another
    /// runner took it over after it expired).
    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError>;

    /// [`Store::save`], then the transcript entries whose
    /// [`TranscriptEntry::reply_to`] is `reply_to`, in order, as they stand
    /// once the save has committed (the save's own entries included): the
    /// replies a turn returns for the message at that transcript seq. Every
    /// such entry comes after that message in the transcript.
    ///
    /// Only a lease holder writes bot entries, so what a store reads with
    /// the save's own write is what [`Store::transcript`] would list right
    /// after it. The default calls the two in turn; the Postgres store
    /// answers from the save's statement, saving a round trip per turn.
    async fn save_and_read_replies(
        &self,
        conversation_id: &str,
        owner: &str,
        save: Save<'_>,
        reply_to: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.save(conversation_id, owner, save).await?;
        let mut entries = self.transcript(conversation_id, reply_to).await?;
        entries.retain(|e| e.reply_to == Some(reply_to));
        Ok(entries)
    }

    /// Gives the lease up.
    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError>;

    /// Conversations that need a runner and whose lease is free or expired:
    /// those whose `wake_at` has come, and those with unapplied messages. At
    /// most `limit`, the most overdue first.
    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError>;

    /// How many stored conversations are sleeping (their `wake_at` is in the
    /// future) and how many wait with no wake-up (for the user, or ended).
    async fn counts(&self, now: SystemTime) -> Result<ConversationCounts, StoreError>;

    /// The earliest `wake_at` of any conversation.
    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError>;

    /// The earliest `wake_at` later than `after`: when the next sleeping
    /// conversation falls due. The scheduler sleeps until then. Unlike
    /// [`Store::next_wake`], wake-ups that have passed (a conversation a
    /// runner holds mid-turn is stored due at once) do not hide the next one.
    ///
    /// The default asks [`Store::next_wake`] and returns its answer when it
    /// is later than `after`; the shipped stores answer with one indexed
    /// query.
    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        Ok(self.next_wake().await?.filter(|at| *at > after))
    }

    /// The stored state, without taking the lease.
    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError>;

    /// Transcript entries after `after_seq` (0 for all), in order, each
    /// with its delivery state and the furthest receipt recorded for its
    /// channel message id.
    async fn transcript(
        &self,
        conversation_id: &str,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError>;

    /// Takes up to `limit` conversations whose pending deliveries are due
    /// (their next attempt's time has come) and whose delivery lease is
    /// free or expired — held by no one, `owner` included: a conversation
    /// this owner is delivering is not handed out again — the most overdue
    /// first; their delivery lease is
    /// `owner`'s until `lease_until` (a lease apart from the turn's: a turn
    /// and a delivery of the same conversation may run at once). Returns,
    /// for each, its pending entries in order and the user's latest message.
    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDeliveries>, StoreError>;

    /// Records one delivery attempt of the entry at `seq`, under `owner`'s
    /// delivery lease ([`StoreError::LeaseLost`] when another owner took it
    /// over or it was released; an entry that is no longer pending is left
    /// as it is). An accepted
    /// or refused entry leaves the pending ones; after a retry the
    /// conversation's deliveries are due at its `at`, and its attempts
    /// grow by one.
    async fn record_delivery(
        &self,
        conversation_id: &str,
        owner: &str,
        seq: u64,
        record: DeliveryRecord<'_>,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Gives the delivery lease up.
    async fn release_deliveries(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError>;

    /// When the next pending delivery after `after` falls due (the delivery
    /// worker sleeps until then).
    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError>;

    /// Records a channel's receipt for the message it knows as
    /// `channel_message_id`, keeping the furthest one
    /// ([`crate::channel::ReceiptStatus`] order). A receipt may come before
    /// the acceptance that names the id is recorded: it is kept and shown
    /// once it is. Returns the conversation and `seq` of the entry it
    /// belongs to, when that is known already.
    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &Receipt,
    ) -> Result<Option<(String, u64)>, StoreError>;

    /// Forgets up to `limit` message ids recorded before `before`, the
    /// oldest first (they would then be taken again as new), and up to
    /// `limit` receipts whose time is before it; returns how many message
    /// ids were forgotten. The scheduler calls it in batches until a batch
    /// comes back short.
    ///
    /// The SQL stores' ids recorded before they kept the time (chatflow
    /// before channels) count as recorded at their conversation's latest
    /// transcript entry: never earlier than they were, so an upgrade never
    /// makes a redelivered message new.
    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError>;
}

// Runtimes hold stores as trait objects.
fn _assert_object_safe(_: &dyn Store) {}

#[cfg(test)]
mod tests {
    /// Every statement and migration of the SQL stores takes the time from
    /// the caller (an injected clock governs leases and wake-ups): none
    /// reads the database's clock.
    #[test]
    fn no_statement_reads_the_database_clock() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut checked = 0;
        for backend in ["sqlite", "postgres"] {
            for folder in ["queries", "migrations"] {
                let dir = root.join(backend).join(folder);
                for file in std::fs::read_dir(&dir).unwrap() {
                    let path = file.unwrap().path();
                    let sql = std::fs::read_to_string(&path).unwrap().to_lowercase();
                    for clock in [
                        "now()",
                        "current_timestamp",
                        "current_date",
                        "current_time",
                        "localtime",
                        "clock_timestamp",
                        "statement_timestamp",
                        "transaction_timestamp",
                        "'now'",
                        "julianday",
                        "unixepoch",
                        "strftime",
                    ] {
                        assert!(
                            !sql.contains(clock),
                            "{} reads the clock: {clock}",
                            path.display()
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 30, "{checked} files");
    }
}
