//! The durable driver, and the entry point for hosts: an [`Engine`] plus a
//! [`Store`], applying each user message exactly once, in order, and
//! resuming sleeping conversations when their Delay ends — in one process or
//! in many sharing a store.
//!
//! - `mod.rs`: [`Runtime`], its options, and taking a user message;
//! - [`turn`]: the turn protocol — leases, where a turn saves, and **what
//!   survives a crash** (the crash-safety rules are written there, once);
//! - [`scheduler`]: resuming conversations that are due;
//! - [`local_lock`]: one turn at a time per conversation within a process.

mod builder;
mod delivery;
mod local_lock;
mod scheduler;
mod subscription;
mod turn;

use std::sync::Arc;
use std::time::Duration;

use crate::conversation::Status;
use crate::engine::Engine;
use crate::store::{Direction, InboundMessage, Store, StoreError, TranscriptEntry};
use crate::time::Clock;

use crate::channel::Channel;
use crate::event::EventSink;

pub use builder::RuntimeBuilder;
pub use delivery::DeliveryReport;
pub use subscription::Subscription;

use local_lock::LocalLocks;
use scheduler::LocalWakeups;

/// Runtime settings: start from the defaults and change a few with the
/// `with_*` setters.
///
/// ```
/// use std::time::Duration;
/// use chatflow::RuntimeOptions;
///
/// let options = RuntimeOptions::default()
///     .with_lease(Duration::from_secs(60))
///     .with_scheduler_batch(16);
/// assert_eq!(options.lease(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RuntimeOptions {
    pub(crate) lease: Duration,
    pub(crate) busy_retry: Duration,
    pub(crate) busy_timeout: Duration,
    pub(crate) scheduler_batch: usize,
    pub(crate) scheduler_poll: Duration,
    pub(crate) delivery_lease: Duration,
    pub(crate) delivery_max_attempts: u32,
    pub(crate) delivery_backoff: Duration,
    pub(crate) seen_retention: Duration,
}

impl RuntimeOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a runner may hold a conversation between saves before
    /// another runner may take it over (default 5 minutes: longer than any
    /// Api call with its retries).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Sets [`RuntimeOptions::lease`].
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often to try again for a conversation another runner holds (default 20 ms).
    pub fn busy_retry(&self) -> Duration {
        self.busy_retry
    }

    /// Sets [`RuntimeOptions::busy_retry`].
    pub fn with_busy_retry(mut self, busy_retry: Duration) -> Self {
        self.busy_retry = busy_retry;
        self
    }

    /// How long to keep trying before giving up with [`RuntimeError::Busy`]
    /// (default 30 s, on the engine's clock: a [`crate::VirtualClock`] in a
    /// test spends it at once).
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Sets [`RuntimeOptions::busy_timeout`].
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// How many due conversations the scheduler resumes at once (default
    /// 64): the turns of one [`Runtime::wake_due`] pass, and the turns
    /// [`Runtime::run_scheduler`] keeps in flight. A turn waiting on a slow
    /// Api call holds one slot, not the others.
    pub fn scheduler_batch(&self) -> usize {
        self.scheduler_batch
    }

    /// Sets [`RuntimeOptions::scheduler_batch`].
    pub fn with_scheduler_batch(mut self, scheduler_batch: usize) -> Self {
        self.scheduler_batch = scheduler_batch;
        self
    }

    /// The longest the scheduler waits between passes (default 1 s). It
    /// wakes on time for every wake-up stored when it went to sleep and for
    /// every turn of this process that ends in a Delay; the poll is for
    /// wake-ups other processes stored meanwhile, and for conversations
    /// whose runner died (once their lease expires).
    pub fn scheduler_poll(&self) -> Duration {
        self.scheduler_poll
    }

    /// Sets [`RuntimeOptions::scheduler_poll`].
    pub fn with_scheduler_poll(mut self, scheduler_poll: Duration) -> Self {
        self.scheduler_poll = scheduler_poll;
        self
    }
}

impl RuntimeOptions {
    /// How long a delivery worker may hold a conversation's outbox before
    /// another process may take it over (default 60 s: longer than any
    /// channel call).
    pub fn delivery_lease(&self) -> Duration {
        self.delivery_lease
    }

    /// Sets [`RuntimeOptions::delivery_lease`].
    pub fn with_delivery_lease(mut self, delivery_lease: Duration) -> Self {
        self.delivery_lease = delivery_lease;
        self
    }

    /// How many times one entry is tried before it is refused for good
    /// (default 10).
    pub fn delivery_max_attempts(&self) -> u32 {
        self.delivery_max_attempts
    }

    /// Sets [`RuntimeOptions::delivery_max_attempts`].
    pub fn with_delivery_max_attempts(mut self, delivery_max_attempts: u32) -> Self {
        self.delivery_max_attempts = delivery_max_attempts.max(1);
        self
    }

    /// The wait before an entry's first retry (default 1 s), doubled at each
    /// retry up to 5 minutes; a channel that asks for longer gets longer.
    pub fn delivery_backoff(&self) -> Duration {
        self.delivery_backoff
    }

    /// Sets [`RuntimeOptions::delivery_backoff`].
    pub fn with_delivery_backoff(mut self, delivery_backoff: Duration) -> Self {
        self.delivery_backoff = delivery_backoff;
        self
    }

    /// How long a message id is remembered, so that a redelivered message
    /// changes nothing (default 7 days: Meta redelivers webhooks for up to
    /// 7). The scheduler forgets older ids in batches; a message redelivered
    /// later than this would be taken as new.
    pub fn seen_retention(&self) -> Duration {
        self.seen_retention
    }

    /// Sets [`RuntimeOptions::seen_retention`].
    pub fn with_seen_retention(mut self, seen_retention: Duration) -> Self {
        self.seen_retention = seen_retention;
        self
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            lease: Duration::from_secs(300),
            busy_retry: Duration::from_millis(20),
            busy_timeout: Duration::from_secs(30),
            scheduler_batch: 64,
            scheduler_poll: Duration::from_secs(1),
            delivery_lease: Duration::from_secs(60),
            delivery_max_attempts: 10,
            delivery_backoff: Duration::from_secs(1),
            seen_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What one user message led to. Serializes with serde (for a test's
/// snapshot, or an HTTP answer).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Turn {
    /// The conversation.
    pub conversation_id: String,
    /// The message id was seen before: nothing ran.
    pub duplicate: bool,
    /// What the bot said (and any handoff) after the message, in order.
    pub replies: Vec<TranscriptEntry>,
    /// Where the conversation stands now.
    pub status: Status,
    /// The options of the Question the conversation now waits at, for a
    /// client to show as buttons (empty when there are none, or when the
    /// message was a duplicate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<crate::QuestionOption>,
}

impl Turn {
    /// The texts the bot sent after the message, in order (handoff notices
    /// left out).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let flow = Flow::from_json(r#"{"name": "echo", "steps": [
    ///   {"type": "question", "name": "Ask", "text": "Say something"},
    ///   {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
    /// ]}"#)?;
    /// let runtime = Runtime::new(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()));
    /// let turn = runtime.handle_message("user-1", None, "hi").await?;
    /// assert_eq!(turn.texts(), ["Say something", "You said hi", "Say something"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn texts(&self) -> Vec<&str> {
        self.replies
            .iter()
            .filter(|entry| entry.direction == Direction::Out)
            .map(|entry| entry.text.as_str())
            .collect()
    }

    /// Whether the conversation was handed to a human.
    pub fn handed_off(&self) -> bool {
        matches!(self.status, Status::HandedOff { .. })
    }
}

/// Why the runtime could not apply a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The message was refused (too long).
    #[error(transparent)]
    Reply(#[from] crate::engine::ReplyError),
    /// Another runner held the conversation for longer than
    /// [`RuntimeOptions::busy_timeout`] (a runner that died keeps it until
    /// its lease expires).
    #[error("conversation {0} is busy in another runner")]
    Busy(String),
}

/// An engine and a store: the object a host keeps for the life of its process.
///
/// After a crash, an Api call whose answer was not saved may run again; a
/// reply is produced once (and delivered through a channel at least once)
/// and a user message is applied exactly once.
/// The full rules, and where a turn saves, are written once, in the turn
/// protocol's module docs (`src/runtime/turn.rs`).
///
/// ```
/// use std::sync::Arc;
/// use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let flow = Flow::from_json(r#"{"name": "echo", "steps": [
///   {"type": "question", "name": "Ask", "text": "Say something"},
///   {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
/// ]}"#)?;
/// let runtime = Runtime::new(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()));
///
/// let turn = runtime.handle_message("user-1", Some("m1"), "hello").await?;
/// let texts: Vec<&str> = turn.replies.iter().map(|r| r.text.as_str()).collect();
/// assert_eq!(texts, ["Say something", "You said hello", "Say something"]);
///
/// // A redelivered webhook is ignored.
/// assert!(runtime.handle_message("user-1", Some("m1"), "hello").await?.duplicate);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    owner: String,
    options: RuntimeOptions,
    /// One turn at a time per conversation within this process; the lease
    /// does the same across processes.
    running: LocalLocks,
    /// Wake-ups of turns of this process that ended in a Delay, for the
    /// scheduler.
    wakeups: LocalWakeups,
    /// Channels by conversation id prefix.
    channels: Vec<(String, Arc<dyn Channel>)>,
    /// Where delivery refusals and failed receipts are reported.
    events: Option<Arc<dyn EventSink>>,
    /// Signalled when a turn of this process left entries in the outbox.
    outbox: tokio::sync::Notify,
    /// The id of every conversation whose transcript a commit of this
    /// process extended with bot entries, for subscriptions.
    committed: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Failed receipts that came before their send was recorded, by
    /// channel message id: reported once the send is.
    early_failures: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("engine", &self.inner.engine)
            .field("owner", &self.inner.owner)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// `auto-` and 32 random hex digits: the id of a message that came without
/// one. Written digit by digit: `format!` cost more than the rest of taking
/// the message on the memory store.
fn auto_message_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(37);
    id.push_str("auto-");
    for word in [fastrand::u64(..), fastrand::u64(..)] {
        for digit in (0..16).rev() {
            id.push(char::from(HEX[((word >> (digit * 4)) & 0xf) as usize]));
        }
    }
    id
}

impl Runtime {
    /// A runtime with default options, using the engine's clock.
    pub fn new(engine: Engine, store: Arc<dyn Store>) -> Runtime {
        Self::with_options(engine, store, RuntimeOptions::default())
    }

    /// A runtime with these options.
    pub fn with_options(engine: Engine, store: Arc<dyn Store>, options: RuntimeOptions) -> Runtime {
        Runtime::builder(engine, store).options(options).build()
    }

    /// A builder, for a runtime with channels or an event sink.
    pub fn builder(engine: Engine, store: Arc<dyn Store>) -> RuntimeBuilder {
        RuntimeBuilder::new(engine, store)
    }

    /// The options.
    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    /// The channel a conversation's replies are delivered through: the one
    /// registered for its id's prefix (before the first `:`).
    pub fn channel_of(&self, conversation_id: &str) -> Option<&Arc<dyn Channel>> {
        let (prefix, _) = conversation_id.split_once(':')?;
        self.inner
            .channels
            .iter()
            .find(|(name, _)| name == prefix)
            .map(|(_, channel)| channel)
    }

    /// Records a user message that came through a channel (durable before
    /// this returns; `None`, changing nothing, for a message id seen
    /// before), then runs the conversation's turn on a task of its own: a
    /// webhook answers at once, and the replies go out through the
    /// conversation's channel. Should this process die first, the scheduler
    /// of any process sharing the store runs the turn.
    pub async fn accept(
        &self,
        conversation_id: &str,
        message: crate::store::InboundMessage<'_>,
    ) -> Result<Option<u64>, RuntimeError> {
        let inner = &*self.inner;
        let seq = inner
            .store
            .enqueue_message(conversation_id, message, inner.clock.now())
            .await?;
        // A message the flow does not take (a reaction) only joins the transcript.
        if seq.is_some() && message.answers {
            let runtime = self.clone();
            let id = conversation_id.to_string();
            tokio::spawn(async move {
                let busy_wait = runtime.inner.options.busy_timeout;
                match runtime.run_turn(&id, busy_wait).await {
                    Ok(_) => {}
                    // Its holder, or the scheduler, takes the message.
                    Err(RuntimeError::Busy(_)) => {}
                    Err(e) => tracing::warn!(conversation = %id, error = %e, "turn failed"),
                }
            });
        }
        Ok(seq)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Applies one user message: records it (once per `message_id`; a
    /// message without an id is never treated as a repeat), runs the
    /// conversation — starting it if new — until it waits for the user,
    /// hands off or ends, sleeping through Delays, and returns what the bot
    /// said after the message.
    pub async fn handle_message(
        &self,
        conversation_id: &str,
        message_id: Option<&str>,
        text: &str,
    ) -> Result<Turn, RuntimeError> {
        let generated;
        let message_id = match message_id {
            Some(id) => id,
            None => {
                generated = auto_message_id();
                &generated
            }
        };
        self.handle_inbound(conversation_id, InboundMessage::new(message_id, text))
            .await
    }

    /// [`Runtime::handle_message`] for a message with details (what its
    /// channel said about it: `<<conversation.message.…>>` in templates),
    /// or one that answers nothing ([`InboundMessage::answers`]: it is
    /// recorded and no turn runs).
    pub async fn handle_inbound(
        &self,
        conversation_id: &str,
        message: InboundMessage<'_>,
    ) -> Result<Turn, RuntimeError> {
        let inner = &*self.inner;
        let (message_id, text) = (message.message_id, message.text);
        let now = inner.clock.now();
        let mut local = self.inner.running.turn(conversation_id);
        // A plain text message takes the fast path.
        let plain = message.details.is_none() && message.answers;
        // Usually no other turn of this conversation runs in this process:
        // then one store write records the message and takes the lease. The
        // claim is read under the in-process lock, so it cannot list
        // messages that a turn running here is about to apply. Otherwise the
        // message is recorded at once and the lease taken after that turn.
        let recorded = if plain && local.try_lock() {
            inner
                .store
                .enqueue_and_acquire(
                    conversation_id,
                    message_id,
                    text,
                    &inner.owner,
                    now + inner.options.lease,
                    now,
                )
                .await?
                .map(|e| (e.seq, e.claim))
        } else {
            inner
                .store
                .enqueue_message(conversation_id, message, now)
                .await?
                .map(|seq| (seq, None))
        };
        let Some((seq, mut claim)) = recorded else {
            drop(local);
            tracing::info!(
                conversation = conversation_id,
                message_id,
                "duplicate message ignored"
            );
            let status = inner
                .store
                .load(conversation_id)
                .await?
                .map_or(Status::Running, |c| c.status().clone());
            return Ok(Turn {
                conversation_id: conversation_id.to_string(),
                duplicate: true,
                replies: Vec::new(),
                status,
                options: Vec::new(),
            });
        };
        if !message.answers {
            drop(local);
            let status = inner
                .store
                .load(conversation_id)
                .await?
                .map_or(Status::Running, |c| c.status().clone());
            return Ok(Turn {
                conversation_id: conversation_id.to_string(),
                duplicate: false,
                replies: Vec::new(),
                status,
                options: Vec::new(),
            });
        }
        let (status, replies, options) = loop {
            local.lock().await;
            let busy_wait = inner.options.busy_timeout;
            match self
                .run_turn_held(&mut local, busy_wait, claim.take(), Some(seq))
                .await?
            {
                (Status::Sleeping { until }, _, _) => {
                    // Other turns of the conversation may run meanwhile.
                    local.unlock();
                    inner.clock.sleep_until(until).await;
                }
                done => break done,
            }
        };
        drop(local);
        let replies = match replies {
            Some(replies) => replies,
            // Not reached (the last save of a turn that does not sleep
            // reads the replies); kept so that the answer never depends on it.
            None => {
                let mut entries = inner.store.transcript(conversation_id, seq).await?;
                entries.retain(|e| e.reply_to == Some(seq));
                entries
            }
        };
        Ok(Turn {
            conversation_id: conversation_id.to_string(),
            duplicate: false,
            replies,
            status,
            options,
        })
    }
}
