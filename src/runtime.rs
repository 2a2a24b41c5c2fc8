//! The entry point for hosts: an [`Engine`] plus a [`Store`], applying each
//! user message exactly once, in order, and resuming sleeping conversations
//! when their Delay ends — in one process or in many sharing a store.
//!
//! # What survives a crash
//!
//! A turn saves the conversation (with the replies it produced, as
//! transcript entries) before every Api call that follows an unsaved reply
//! or an unsaved Api response, and at its end, under the conversation's
//! lease. After a crash, the
//! lease expires and the next runner continues from the last save:
//!
//! - an Api call whose response was not yet saved (in flight, or answered
//!   just before the crash) runs again: calls happen at least once;
//! - a reply is never sent twice: it counts as sent when its transcript
//!   entry is committed, together with the state that moved past it;
//! - a user message is applied exactly once: it is stored before any step
//!   runs, and moves into the conversation's state in the same write that
//!   records it as applied (a turn that crashes before that write applies
//!   it again from the start).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::Instrument;

use crate::conversation::{Conversation, Status};
use crate::engine::Engine;
use crate::event::{Event, EventSink};
use crate::http::Method;
use crate::store::{Claim, Direction, Save, Store, StoreError, TranscriptEntry};
use crate::time::Clock;

/// Runtime settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeOptions {
    /// How long a runner may hold a conversation between saves before
    /// another runner may take it over (default 5 minutes: longer than any
    /// Api call with its retries).
    pub lease: Duration,
    /// How often to try again for a conversation another runner holds (default 20 ms).
    pub busy_retry: Duration,
    /// How long to keep trying before giving up with [`RuntimeError::Busy`]
    /// (default 30 s, real time).
    pub busy_timeout: Duration,
    /// How many due conversations the scheduler resumes at once (default
    /// 64): the turns of one [`Runtime::wake_due`] pass, and the turns
    /// [`Runtime::run_scheduler`] keeps in flight. A turn waiting on a slow
    /// Api call holds one slot, not the others.
    pub scheduler_batch: usize,
    /// The longest the scheduler waits between passes (default 1 s). It
    /// wakes on time for every wake-up stored when it went to sleep and for
    /// every turn of this process that ends in a Delay; the poll is for
    /// wake-ups other processes stored meanwhile, and for conversations
    /// whose runner died (once their lease expires).
    pub scheduler_poll: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            lease: Duration::from_secs(300),
            busy_retry: Duration::from_millis(20),
            busy_timeout: Duration::from_secs(30),
            scheduler_batch: 64,
            scheduler_poll: Duration::from_secs(1),
        }
    }
}

/// What one user message led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The conversation.
    pub conversation_id: String,
    /// The message id was seen before: nothing ran.
    pub duplicate: bool,
    /// What the bot said (and any handoff) after the message, in order.
    pub replies: Vec<TranscriptEntry>,
    /// Where the conversation stands now.
    pub status: Status,
}

impl Turn {
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
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Wake-ups of turns of this process that ended in a Delay, for the
    /// scheduler.
    wakeups: LocalWakeups,
}

/// The earliest wake-up a turn of this process stored since the scheduler
/// last looked, and a signal for it: a conversation that falls asleep while
/// the scheduler sleeps until a later time is still resumed on time.
#[derive(Default)]
struct LocalWakeups {
    earliest: Mutex<Option<SystemTime>>,
    changed: tokio::sync::Notify,
}

impl LocalWakeups {
    /// A turn ended sleeping until `at` (called after its save committed).
    fn note(&self, at: SystemTime) {
        let mut earliest = self.earliest.lock().unwrap_or_else(|e| e.into_inner());
        if earliest.is_none_or(|e| at < e) {
            *earliest = Some(at);
            drop(earliest);
            // Stores a permit when the scheduler is not waiting yet.
            self.changed.notify_one();
        }
    }

    /// The earliest wake-up noted since the last call.
    fn take(&self) -> Option<SystemTime> {
        self.earliest.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
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

/// A scheduler turn's conversation and result.
type Resumed = (String, Result<Status, RuntimeError>);

/// What every save of one turn shares.
struct TurnWrite<'a> {
    conversation_id: &'a str,
    /// Inbox entries taken into the state by this turn.
    consumed_up_to: u64,
    /// Replies produced since the last save.
    outbox: &'a Outbox,
    /// When the turn took the conversation: the wake-up of its mid-turn
    /// saves. The same instant at every one of them leaves the stores'
    /// wake-up index as it is after the first.
    started: SystemTime,
}

/// Which of a turn's saves a commit is.
enum SavePoint {
    /// Before an Api call: the turn goes on under the lease.
    MidTurn,
    /// The turn's end: gives the lease up, and reads the replies after this
    /// transcript seq when there is one.
    Last { replies_after: Option<u64> },
}

/// What a turn has done since its last save, for deciding where to save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unsaved {
    Nothing,
    /// Responses of idempotent calls: repeating them is harmless, but a call
    /// that changes something must not be built from a repeat's answer.
    Reads,
    /// A reply, or the response of a call that changed something: neither
    /// may be repeated.
    Effects,
}

impl Unsaved {
    fn needs_save_before(self, next: Method) -> bool {
        match self {
            Unsaved::Nothing => false,
            Unsaved::Reads => !next.is_idempotent(),
            Unsaved::Effects => true,
        }
    }

    /// After a step that made `call` (if it was an Api step) and `replied`.
    fn after(self, call: Option<Method>, replied: bool) -> Unsaved {
        let step = match call {
            _ if replied => Unsaved::Effects,
            Some(method) if !method.is_idempotent() => Unsaved::Effects,
            Some(_) => Unsaved::Reads,
            None => Unsaved::Nothing,
        };
        self.max(step)
    }
}

/// Collects a step's events for the next save.
#[derive(Default)]
struct Outbox(Mutex<Vec<(Direction, String)>>);

impl EventSink for Outbox {
    fn emit(&self, event: Event) {
        let entry = match event {
            Event::Message { text, .. } => (Direction::Out, text),
            Event::Handoff { assignment, .. } => {
                let to = assignment
                    .team
                    .or(assignment.agent)
                    .unwrap_or_else(|| "a human agent".into());
                (Direction::Handoff, to)
            }
            _ => return,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }
}

impl Outbox {
    fn take(&self) -> Vec<(Direction, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
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
        let clock = engine.clock();
        Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                store,
                clock,
                owner: format!("runner-{:016x}", fastrand::u64(..)),
                options,
                running: Mutex::default(),
                wakeups: LocalWakeups::default(),
            }),
        }
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
        let inner = &*self.inner;
        let generated;
        let message_id = match message_id {
            Some(id) => id,
            None => {
                generated = auto_message_id();
                &generated
            }
        };
        let now = inner.clock.now();
        let mut local = self.local_turn(conversation_id);
        // Usually no other turn of this conversation runs in this process:
        // then one store write records the message and takes the lease. The
        // claim is read under the in-process lock, so it cannot list
        // messages that a turn running here is about to apply. Otherwise the
        // message is recorded at once and the lease taken after that turn.
        let recorded = if local.try_lock() {
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
                .enqueue(conversation_id, message_id, text, now)
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
            });
        };
        let (status, replies) = loop {
            local.lock().await;
            let busy_wait = inner.options.busy_timeout;
            match self
                .run_turn_held(&mut local, busy_wait, claim.take(), Some(seq))
                .await?
            {
                (Status::Sleeping { until }, _) => {
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
                entries.retain(|e| e.direction != Direction::In);
                entries
            }
        };
        Ok(Turn {
            conversation_id: conversation_id.to_string(),
            duplicate: false,
            replies,
            status,
        })
    }

    /// Advances every conversation that is due now (Delays that ended,
    /// messages left by a crashed runner), up to
    /// [`RuntimeOptions::scheduler_batch`] of them, concurrently; returns how
    /// many it advanced once all their turns ended. A conversation another
    /// runner holds is skipped. On a store error the other turns still run,
    /// and the first error is returned.
    pub async fn wake_due(&self) -> Result<usize, RuntimeError> {
        let inner = &*self.inner;
        let due = inner
            .store
            .due(inner.clock.now(), inner.options.scheduler_batch)
            .await?;
        let mut turns = tokio::task::JoinSet::new();
        for id in due {
            turns.spawn(self.clone().resume(id));
        }
        let mut advanced = 0;
        let mut failed = None;
        while let Some(done) = turns.join_next().await {
            match done {
                Ok((_, Ok(_))) => advanced += 1,
                // One held by another runner is that runner's to finish.
                Ok((_, Err(RuntimeError::Busy(_)))) => {}
                Ok((_, Err(e))) => {
                    failed.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(advanced),
        }
    }

    /// Resumes due conversations until `shutdown` completes: the scheduler
    /// a host runs beside its message handling. Wake-ups that fell due while
    /// no process was running are taken at once.
    ///
    /// Up to [`RuntimeOptions::scheduler_batch`] turns run at once, each on
    /// its own task; a free slot is filled as soon as a turn ends, so a turn
    /// stuck in a slow Api call holds back no other conversation. Between
    /// passes the scheduler sleeps until the earliest stored wake-up, or
    /// until a turn of this process ends in a Delay that wakes earlier, or
    /// at most [`RuntimeOptions::scheduler_poll`]. On shutdown it starts no
    /// new turn and returns once the turns in flight have ended.
    pub async fn run_scheduler(&self, shutdown: impl std::future::Future<Output = ()>) {
        let inner = &*self.inner;
        let limit = inner.options.scheduler_batch.max(1);
        let mut turns = tokio::task::JoinSet::new();
        // Conversations whose turn this scheduler started, by task.
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        tokio::pin!(shutdown);
        'passes: loop {
            // Wake-ups noted so far are committed: this pass's queries see them.
            inner.wakeups.take();
            let now = inner.clock.now();
            let room = limit.saturating_sub(in_flight.len());
            let mut saturated = room == 0;
            if room > 0 {
                // Ask for more than there is room for: some may be ours
                // already, listed again before their turn took the lease.
                match inner.store.due(now, room + in_flight.len()).await {
                    Ok(due) => {
                        let mut started = 0;
                        for id in due {
                            if started == room {
                                break;
                            }
                            if in_flight.values().any(|running| *running == id) {
                                continue;
                            }
                            let task = turns.spawn(self.clone().resume(id.clone()));
                            in_flight.insert(task.id(), id);
                            started += 1;
                        }
                        saturated = started == room;
                    }
                    Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
                }
            }
            let poll = now + inner.options.scheduler_poll;
            // Saturated: more may be due; the next pass comes when a slot frees.
            let mut until = poll;
            if !saturated {
                // The same `now` as `due`: a wake-up that fell due since is
                // in the past here, and the next pass starts at once.
                match inner.store.next_wake_after(now).await {
                    Ok(Some(at)) => until = until.min(at),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "scheduler cannot read the next wake-up"),
                }
            }
            loop {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break 'passes,
                    Some(done) = turns.join_next_with_id(), if !turns.is_empty() => {
                        Self::turn_ended(done, &mut in_flight);
                        if saturated {
                            continue 'passes;
                        }
                    }
                    _ = inner.wakeups.changed.notified() => {
                        if let Some(at) = inner.wakeups.take() {
                            until = until.min(at);
                        }
                    }
                    _ = inner.clock.sleep_until(until) => continue 'passes,
                }
            }
        }
        // Turns in flight reach their end, as a pass's turns always did.
        while let Some(done) = turns.join_next_with_id().await {
            Self::turn_ended(done, &mut in_flight);
        }
    }

    /// One scheduler turn, on its own task.
    async fn resume(self, id: String) -> Resumed {
        // One held by another runner is that runner's to finish: no waiting.
        let result = self.run_turn(&id, Duration::ZERO).await;
        (id, result)
    }

    /// Books a scheduler turn that ended.
    fn turn_ended(
        done: Result<(tokio::task::Id, Resumed), tokio::task::JoinError>,
        in_flight: &mut HashMap<tokio::task::Id, String>,
    ) {
        match done {
            Ok((task, (id, result))) => {
                in_flight.remove(&task);
                match result {
                    Ok(_) | Err(RuntimeError::Busy(_)) => {}
                    Err(e) => tracing::warn!(conversation = %id, error = %e, "scheduled turn failed"),
                }
            }
            Err(e) => {
                let id = in_flight.remove(&e.id());
                if e.is_panic() {
                    tracing::error!(conversation = ?id, "scheduled turn panicked");
                }
            }
        }
    }

    /// Runs one turn; waits up to `busy_wait` for a conversation another
    /// runner holds, then gives up with [`RuntimeError::Busy`].
    async fn run_turn(&self, conversation_id: &str, busy_wait: Duration) -> Result<Status, RuntimeError> {
        let mut local = self.local_turn(conversation_id);
        local.lock().await;
        let (status, _) = self.run_turn_held(&mut local, busy_wait, None, None).await?;
        Ok(status)
    }

    /// The in-process turn lock of a conversation, not yet taken.
    fn local_turn<'a>(&'a self, conversation_id: &'a str) -> LocalTurn<'a> {
        let lock = {
            let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
            running.entry(conversation_id.to_string()).or_default().clone()
        };
        LocalTurn {
            running: &self.inner.running,
            conversation_id,
            lock,
            guard: None,
        }
    }

    /// Runs one turn of a conversation under its lease, with its in-process
    /// lock held: until it waits for the user, sleeps, hands off, ends or
    /// fails. `claim` is the lease already taken, if it was; with
    /// `replies_after`, a turn that does not end asleep also returns the
    /// replies after that transcript seq, read by its last save.
    async fn run_turn_held(
        &self,
        local: &mut LocalTurn<'_>,
        busy_wait: Duration,
        claim: Option<Claim>,
        replies_after: Option<u64>,
    ) -> Result<(Status, Option<Vec<TranscriptEntry>>), RuntimeError> {
        let conversation_id = local.conversation_id;
        let span = tracing::info_span!("turn", conversation = conversation_id);
        let result = self
            .run_turn_locked(conversation_id, busy_wait, claim, replies_after)
            .instrument(span)
            .await;
        // Committed asleep: the scheduler must not sleep past its wake-up.
        if let Ok((Status::Sleeping { until }, _)) = &result {
            self.inner.wakeups.note(*until);
        }
        result
    }

    async fn run_turn_locked(
        &self,
        conversation_id: &str,
        busy_wait: Duration,
        claim: Option<Claim>,
        replies_after: Option<u64>,
    ) -> Result<(Status, Option<Vec<TranscriptEntry>>), RuntimeError> {
        let inner = &*self.inner;
        let waiting_since = std::time::Instant::now();
        let claim = match claim {
            Some(claim) => claim,
            None => loop {
                let now = inner.clock.now();
                let lease_until = now + inner.options.lease;
                match inner
                    .store
                    .acquire(conversation_id, &inner.owner, lease_until, now)
                    .await?
                {
                    Some(claim) => break claim,
                    None if waiting_since.elapsed() >= busy_wait => {
                        return Err(RuntimeError::Busy(conversation_id.to_string()));
                    }
                    // Another process is running a turn: it will reach a save
                    // point soon. Real time, so a virtual clock cannot expire it.
                    None => tokio::time::sleep(inner.options.busy_retry).await,
                }
            },
        };
        let engine = &inner.engine;
        let consumed_up_to = claim.inbox.last().map_or(0, |e| e.seq);
        let mut conversation = match claim.conversation {
            // A message after the flow's end starts it again.
            Some(c) if *c.status() == Status::Finished && consumed_up_to > 0 => engine.start(conversation_id),
            Some(c) => c,
            None => engine.start(conversation_id),
        };
        // After a handoff (or a failure) messages are for people: they stay
        // in the transcript and do not pile up in the state.
        if !conversation.status().is_ended() {
            for entry in claim.inbox {
                conversation.push_reply(entry.text);
            }
        }
        let outbox = Outbox::default();
        // A conversation stored under an edited flow continues at its step,
        // found by name, or fails saying the step is gone.
        if let Err(error) = engine.adopt(&mut conversation, &outbox) {
            tracing::warn!(error = %error, "conversation cannot continue under this flow");
        }
        let turn = TurnWrite {
            conversation_id,
            consumed_up_to,
            outbox: &outbox,
            started: inner.clock.now(),
        };
        // Saves happen only where a crash would cost something: before an Api
        // call that follows a reply or the response of a call that changed
        // something (so neither is repeated after a crash), before a call
        // that changes something and follows any unsaved response (so the
        // call a crash repeats is the same call, built from the same data),
        // and at the turn's end. Local steps between saves, and idempotent
        // calls (GET, HEAD, PUT, DELETE: the ones the retry policy repeats
        // anyway) followed by more of them, simply run again after a crash;
        // so does taking the message, which stays in the inbox until a save
        // consumes it.
        let mut unsaved = Unsaved::Nothing;
        let status = loop {
            let call = engine.api_call_next(&conversation);
            if let Some(method) = call
                && unsaved.needs_save_before(method)
            {
                self.commit(&turn, &conversation, SavePoint::MidTurn).await?;
                unsaved = Unsaved::Nothing;
            }
            match engine.advance_once(&mut conversation, &outbox).await {
                Ok(None) => unsaved = unsaved.after(call, !outbox.is_empty()),
                Ok(Some(status)) => break status,
                Err(error) => {
                    tracing::warn!(error = %error, "turn failed");
                    break conversation.status().clone();
                }
            }
        };
        // Always written, even when there was nothing to do: it also clears a
        // wake-up left by a runner that died after the state had moved on.
        // A turn that answers a message reads its replies in the same write.
        let replies_after = replies_after.filter(|_| !matches!(status, Status::Sleeping { .. }));
        let replies = self
            .commit(&turn, &conversation, SavePoint::Last { replies_after })
            .await?;
        Ok((status, replies))
    }

    /// Saves a turn's progress under the lease. The last save of a turn gives
    /// the lease up in the same write, so a crash right after it leaves
    /// nothing held; it returns the replies when asked to.
    async fn commit(
        &self,
        turn: &TurnWrite<'_>,
        conversation: &Conversation,
        point: SavePoint,
    ) -> Result<Option<Vec<TranscriptEntry>>, StoreError> {
        let (last, replies_after) = match point {
            SavePoint::MidTurn => (false, None),
            SavePoint::Last { replies_after } => (true, replies_after),
        };
        let outgoing = turn.outbox.take();
        let inner = &*self.inner;
        let now = inner.clock.now();
        let wake_at = match conversation.status() {
            Status::Sleeping { until } => Some(*until),
            // Mid-turn (a reply may still be queued inside the state): due at
            // once should this runner die before its last save.
            _ if !last => Some(turn.started.min(now)),
            Status::Running => Some(now),
            _ => None,
        };
        let lease_until = if last { now } else { now + inner.options.lease };
        let save = Save {
            conversation,
            consumed_up_to: turn.consumed_up_to,
            outgoing: &outgoing,
            wake_at,
            lease_until,
            now,
        };
        let (store, id, owner) = (&inner.store, turn.conversation_id, inner.owner.as_str());
        match replies_after {
            Some(seq) => store.save_and_read_replies(id, owner, save, seq).await.map(Some),
            None => store.save(id, owner, save).await.map(|()| None),
        }
    }
}

/// A conversation's in-process turn lock: one turn at a time per
/// conversation within this process (the lease does the same across
/// processes). Dropping it lets the lock go and forgets it when no other
/// turn waits on it, so the map does not grow with every conversation ever
/// seen.
struct LocalTurn<'a> {
    running: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    conversation_id: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl LocalTurn<'_> {
    /// Takes the lock if it is free; true when it is held now.
    fn try_lock(&mut self) -> bool {
        if self.guard.is_none() {
            self.guard = self.lock.clone().try_lock_owned().ok();
        }
        self.guard.is_some()
    }

    /// Takes the lock, waiting for the turn that holds it.
    async fn lock(&mut self) {
        if self.guard.is_none() {
            self.guard = Some(self.lock.clone().lock_owned().await);
        }
    }

    fn unlock(&mut self) {
        self.guard = None;
    }
}

impl Drop for LocalTurn<'_> {
    fn drop(&mut self) {
        self.guard = None;
        // Each `LocalTurn` is made under the map's lock and holds its clone
        // for life (its guard's clone only while it lives), so under that
        // lock a count of 2, the map's and this one, means no other turn is
        // waiting or about to.
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&self.lock) == 2 {
            running.remove(self.conversation_id);
        }
    }
}
