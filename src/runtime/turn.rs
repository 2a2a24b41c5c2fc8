//! The turn protocol: how a runner takes a conversation, performs the core's
//! effects, and saves.
//!
//! # What survives a crash
//!
//! These are the crash-safety rules of chatflow, written here once;
//! `docs/production.md`, the store docs and the rest of the code link here.
//!
//! A turn takes the conversation's lease, then saves the conversation (with
//! the replies it produced, as transcript entries) under the lease at the
//! points listed below, and at its end. After a crash, the lease expires and
//! the next runner continues from the last save:
//!
//! - an Api call whose response was not yet saved (in flight, or answered
//!   just before the crash) runs again: calls happen at least once;
//! - a reply is produced once: it is committed as a transcript entry
//!   together with the state that moved past it, so no turn produces it
//!   again. A caller of `handle_message` receives it once, in the answer to
//!   the message it answers (its `reply_to`); a conversation with a channel
//!   has it delivered from the outbox at least once — twice only when a
//!   process dies between the channel's acceptance and the record of it
//!   (see [`crate::channel`]);
//! - a user message is applied exactly once: it is stored before any step
//!   runs, and moves into the conversation's state in the same write that
//!   records it as applied (a turn that crashes before that write applies
//!   it again from the start).
//!
//! Saves happen only where a crash would cost something, decided from the
//! core's effects ([`crate::core::Effect`]): before an Api call that follows
//! a reply or the response of a call that changed something (so neither is
//! repeated after a crash), before a call that changes something and follows
//! any unsaved response (so the call a crash repeats is the same call, built
//! from the same data), before a retry backoff when anything is unsaved
//! (the wait may be long), and at the turn's end. Local steps between saves,
//! and idempotent calls (GET, HEAD, PUT, DELETE: the ones the retry policy
//! repeats anyway) followed by more of them, simply run again after a
//! crash; so does taking the message, which stays in the inbox until a save
//! consumes it.

use std::time::{Duration, SystemTime};

use tracing::Instrument;

use super::local_lock::LocalTurn;
use super::{Runtime, RuntimeError};
use crate::conversation::{Conversation, Status};
use crate::core::{Effect, Outbound, Wake};
use crate::http::Method;
use crate::store::{Claim, Direction, OutgoingEntry, Save, StoreError, TranscriptEntry};

/// Entries the bot sent since the last save.
type Outgoing = Vec<OutgoingEntry>;

/// What every save of one turn shares.
struct TurnWrite<'a> {
    conversation_id: &'a str,
    /// Inbox entries taken into the state by this turn.
    consumed_up_to: u64,
    /// The transcript seq of the user message the turn's replies answer.
    reply_to: Option<u64>,
    /// Whether the conversation has a channel: its replies go to the outbox.
    deliver: bool,
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

    /// After the response of a call with this method was kept.
    fn after_call(self, method: Method) -> Unsaved {
        let call = if method.is_idempotent() {
            Unsaved::Reads
        } else {
            Unsaved::Effects
        };
        self.max(call)
    }
}

impl Runtime {
    /// Runs one turn; waits up to `busy_wait` for a conversation another
    /// runner holds, then gives up with [`RuntimeError::Busy`].
    pub(super) async fn run_turn(
        &self,
        conversation_id: &str,
        busy_wait: Duration,
    ) -> Result<Status, RuntimeError> {
        let mut local = self.inner.running.turn(conversation_id);
        local.lock().await;
        let (status, _, _) = self.run_turn_held(&mut local, busy_wait, None, None).await?;
        Ok(status)
    }

    /// Runs one turn of a conversation under its lease, with its in-process
    /// lock held: until it waits for the user, sleeps, hands off, ends or
    /// fails. `claim` is the lease already taken, if it was; with
    /// `replies_after`, a turn that does not end asleep also returns the
    /// replies after that transcript seq, read by its last save.
    pub(super) async fn run_turn_held(
        &self,
        local: &mut LocalTurn<'_>,
        busy_wait: Duration,
        claim: Option<Claim>,
        replies_after: Option<u64>,
    ) -> Result<TurnEnd, RuntimeError> {
        let conversation_id = local.conversation_id;
        let span = tracing::info_span!("turn", conversation = conversation_id);
        let result = self
            .run_turn_locked(conversation_id, busy_wait, claim, replies_after)
            .instrument(span)
            .await;
        // Committed asleep: the scheduler must not sleep past its wake-up.
        if let Ok((Status::Sleeping { until }, _, _)) = &result {
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
    ) -> Result<TurnEnd, RuntimeError> {
        let inner = &*self.inner;
        let clock = &inner.clock;
        let claim = match claim {
            Some(claim) => claim,
            None => {
                let waiting_since = clock.now();
                loop {
                    let now = clock.now();
                    let lease_until = now + inner.options.lease;
                    match inner
                        .store
                        .acquire(conversation_id, &inner.owner, lease_until, now)
                        .await?
                    {
                        Some(claim) => break claim,
                        None if now.duration_since(waiting_since).unwrap_or_default() >= busy_wait => {
                            return Err(RuntimeError::Busy(conversation_id.to_string()));
                        }
                        // Another process is running a turn: it will reach a
                        // save point soon.
                        None => clock.sleep_until(now + inner.options.busy_retry).await,
                    }
                }
            }
        };
        let engine = &inner.engine;
        let consumed_up_to = claim.inbox.last().map_or(0, |e| e.seq);
        let newest_message = claim.inbox.last().map(|e| e.transcript_seq);
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
                engine.accept(&mut conversation, entry.text, entry.details);
            }
        }
        // The replies answer the newest message the conversation has taken,
        // by this turn or an earlier one (a Delay's follow-up answers the
        // message before the Delay).
        if let Some(seq) = newest_message {
            conversation.replying_to = Some(seq);
        }
        let turn = TurnWrite {
            conversation_id,
            consumed_up_to,
            reply_to: conversation.replying_to,
            deliver: self.channel_of(conversation_id).is_some(),
            started: clock.now(),
        };
        let mut outgoing = Outgoing::new();
        // A conversation stored under an edited flow continues at its step,
        // found by name, or fails saying the step is gone (the first effect).
        let mut machine = engine.machine(&mut conversation);
        // Where to save: see the module docs.
        let mut unsaved = Unsaved::Nothing;
        // Read again after every wait only (see the engine's driver).
        let mut now = clock.now();
        let status = loop {
            match machine.poll(&mut conversation, now) {
                Effect::Send(entry) => {
                    outgoing.push(transcript_entry(entry));
                    unsaved = Unsaved::Effects;
                }
                Effect::Http { request, attempt } => {
                    let method = request.method;
                    if attempt == 1 && unsaved.needs_save_before(method) {
                        self.commit(&turn, &conversation, &mut outgoing, SavePoint::MidTurn)
                            .await?;
                        unsaved = Unsaved::Nothing;
                    }
                    let outcome = engine.http().send(request).await;
                    now = clock.now();
                    machine.http_done(&mut conversation, outcome, now);
                    if !machine.calling() {
                        unsaved = unsaved.after_call(method);
                    }
                }
                Effect::Sleep {
                    until,
                    wake: Wake::Retry { .. },
                } => {
                    // The backoff is idle time: a save costs the turn nothing.
                    if unsaved != Unsaved::Nothing {
                        self.commit(&turn, &conversation, &mut outgoing, SavePoint::MidTurn)
                            .await?;
                        unsaved = Unsaved::Nothing;
                    }
                    clock.sleep_until(until).await;
                    now = clock.now();
                }
                // The core logged the failure, secrets masked.
                Effect::Fail(_) => break conversation.status().clone(),
                // Waiting for the user or for a Delay, handed off, finished, ended.
                _ => break conversation.status().clone(),
            }
        };
        // Always written, even when there was nothing to do: it also clears a
        // wake-up left by a runner that died after the state had moved on.
        // A turn that answers a message reads its replies in the same write.
        let replies_after = replies_after.filter(|_| !matches!(status, Status::Sleeping { .. }));
        let replies = self
            .commit(
                &turn,
                &conversation,
                &mut outgoing,
                SavePoint::Last { replies_after },
            )
            .await?;
        let options = crate::flow::waiting_options(engine.flow(), &conversation);
        Ok((status, replies, options))
    }

    /// Saves a turn's progress under the lease. The last save of a turn gives
    /// the lease up in the same write, so a crash right after it leaves
    /// nothing held; it returns the replies when asked to.
    async fn commit(
        &self,
        turn: &TurnWrite<'_>,
        conversation: &Conversation,
        outgoing: &mut Outgoing,
        point: SavePoint,
    ) -> Result<Option<Vec<TranscriptEntry>>, StoreError> {
        let (last, replies_after) = match point {
            SavePoint::MidTurn => (false, None),
            SavePoint::Last { replies_after } => (true, replies_after),
        };
        let outgoing = std::mem::take(outgoing);
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
            reply_to: turn.reply_to,
            deliver: turn.deliver,
            wake_at,
            lease_until,
            now,
        };
        let (store, id, owner) = (&inner.store, turn.conversation_id, inner.owner.as_str());
        let result = match replies_after {
            Some(seq) => store.save_and_read_replies(id, owner, save, seq).await.map(Some),
            None => store.save(id, owner, save).await.map(|()| None),
        };
        if result.is_ok() && !outgoing.is_empty() {
            if turn.deliver {
                inner.outbox.notify_one();
            }
            self.note_committed(id);
        }
        result
    }
}

/// How a turn left its conversation: the status, the replies read by its
/// last save (see `run_turn_held`), and the options of the Question it now
/// waits at.
pub(super) type TurnEnd = (Status, Option<Vec<TranscriptEntry>>, Vec<crate::QuestionOption>);

/// How an entry the bot sent is written in the transcript.
fn transcript_entry(entry: Outbound) -> OutgoingEntry {
    match entry {
        Outbound::Message {
            text,
            whatsapp_template,
            ..
        } => {
            let mut entry = OutgoingEntry::new(Direction::Out, text);
            entry.details = whatsapp_template.map(|t| serde_json::json!({ "whatsapp_template": t }));
            entry
        }
        Outbound::Question { text, options, .. } => {
            let mut entry = OutgoingEntry::new(Direction::Out, text);
            entry.options = options;
            entry
        }
        Outbound::Handoff(assignment) => {
            let to = assignment
                .team
                .or(assignment.agent)
                .unwrap_or_else(|| "a human agent".into());
            OutgoingEntry::new(Direction::Handoff, to)
        }
    }
}
