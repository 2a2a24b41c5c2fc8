//! The scheduler: resumes conversations whose Delay ended, and those a
//! runner that died left behind (once their lease expires).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{Runtime, RuntimeError};
use crate::conversation::Status;

/// The earliest wake-up a turn of this process stored since the scheduler
/// last looked, and a signal for it: a conversation that falls asleep while
/// the scheduler sleeps until a later time is still resumed on time.
#[derive(Default)]
pub(super) struct LocalWakeups {
    earliest: Mutex<Option<SystemTime>>,
    pub(super) changed: tokio::sync::Notify,
}

impl LocalWakeups {
    /// A turn ended sleeping until `at` (called after its save committed).
    pub(super) fn note(&self, at: SystemTime) {
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

/// How often the scheduler forgets message ids past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How many message ids one prune statement forgets.
const PRUNE_BATCH: usize = 1000;

/// A scheduler turn's conversation and result.
type Resumed = (String, Result<Status, RuntimeError>);

impl Runtime {
    /// Advances every conversation that is due now (Delays that ended,
    /// messages left by a crashed runner), up to
    /// [`crate::RuntimeOptions::scheduler_batch`] of them, concurrently; returns how
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
    /// Up to [`crate::RuntimeOptions::scheduler_batch`] turns run at once, each on
    /// its own task; a free slot is filled as soon as a turn ends, so a turn
    /// stuck in a slow Api call holds back no other conversation. Between
    /// passes the scheduler sleeps until the earliest stored wake-up, or
    /// until a turn of this process ends in a Delay that wakes earlier, or
    /// at most [`crate::RuntimeOptions::scheduler_poll`]. On shutdown it starts no
    /// new turn and returns once the turns in flight have ended.
    ///
    /// About once a minute it also forgets message ids older than
    /// [`crate::RuntimeOptions::seen_retention`] ([`Runtime::prune_seen`]).
    pub async fn run_scheduler(&self, shutdown: impl std::future::Future<Output = ()>) {
        let inner = &*self.inner;
        let limit = inner.options.scheduler_batch.max(1);
        let mut turns = tokio::task::JoinSet::new();
        // Conversations whose turn this scheduler started, by task.
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        tokio::pin!(shutdown);
        // Forgetting old message ids is housekeeping: about once a minute.
        let mut next_prune = inner.clock.now();
        'passes: loop {
            // Wake-ups noted so far are committed: this pass's queries see them.
            inner.wakeups.take();
            let now = inner.clock.now();
            if now >= next_prune {
                next_prune = now + PRUNE_EVERY;
                match self.prune_seen(PRUNE_BATCH).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(forgotten = n, "old message ids forgotten"),
                    Err(e) => tracing::warn!(error = %e, "cannot forget old message ids"),
                }
            }
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
}
