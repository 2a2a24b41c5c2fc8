//! The delivery worker: hands the outbox's entries to their channels, in
//! order per conversation, recording each outcome (see [`crate::channel`]
//! for the guarantees).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Runtime, RuntimeError};
use crate::channel::{Channel, Delivery, DeliveryOutcome, Receipt, ReceiptStatus};
use crate::event::Event;
use crate::store::{DeliveryRecord, PendingDeliveries, StoreError};

/// How many failed receipts that came before their send's record are kept
/// to report.
const MAX_EARLY_FAILURES: usize = 10_000;

/// The longest wait between two attempts of one entry.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one pass of the delivery worker did, summed over its conversations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// Entries the channels accepted.
    pub accepted: u64,
    /// Attempts to be retried later.
    pub retried: u64,
    /// Entries refused for good (or out of attempts).
    pub refused: u64,
}

impl DeliveryReport {
    fn add(&mut self, other: DeliveryReport) {
        self.accepted += other.accepted;
        self.retried += other.retried;
        self.refused += other.refused;
    }
}

impl Runtime {
    /// Delivers every pending outbox entry that is due now, up to
    /// [`crate::RuntimeOptions::scheduler_batch`] conversations, each on its
    /// own task; returns what it did once they are done. For tests, and for
    /// hosts that drive deliveries themselves; [`Runtime::run_deliveries`]
    /// is the worker that runs beside the scheduler.
    pub async fn deliver_due(&self) -> Result<DeliveryReport, RuntimeError> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let claimed = inner
            .store
            .claim_deliveries(
                &inner.owner,
                now + inner.options.delivery_lease,
                now,
                inner.options.scheduler_batch.max(1),
            )
            .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for pending in claimed {
            tasks.spawn(self.clone().deliver_conversation(pending));
        }
        let mut report = DeliveryReport::default();
        let mut failed = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(done)) => report.add(done),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }

    /// Delivers outbox entries until `shutdown` completes: the worker a host
    /// runs beside [`Runtime::run_scheduler`], with the same shutdown
    /// contract (no new delivery starts; the ones in flight end first).
    ///
    /// Up to [`crate::RuntimeOptions::scheduler_batch`] conversations are
    /// delivered at once, each on its own task; a free slot is filled as
    /// soon as one ends, so a channel call that hangs holds back its own
    /// conversation only. It looks for work when a turn of this process
    /// leaves replies in the outbox, when a delivery ends, when a retry
    /// falls due, and at least every
    /// [`crate::RuntimeOptions::scheduler_poll`] (for other processes'
    /// replies, and conversations whose deliverer died).
    pub async fn run_deliveries(&self, shutdown: impl std::future::Future<Output = ()>) {
        let inner = &*self.inner;
        let limit = inner.options.scheduler_batch.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        // Conversations this worker is delivering, by task.
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        tokio::pin!(shutdown);
        'passes: loop {
            // Replies committed from here on signal again.
            let notified = inner.outbox.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = inner.clock.now();
            let room = limit.saturating_sub(in_flight.len());
            let mut saturated = room == 0;
            if room > 0 {
                // Those in flight here hold their lease: not listed again.
                let claimed = inner
                    .store
                    .claim_deliveries(&inner.owner, now + inner.options.delivery_lease, now, room)
                    .await;
                match claimed {
                    Ok(claimed) => {
                        let mut started = 0;
                        for pending in claimed {
                            if started == room {
                                break;
                            }
                            // One listed while its task here is still being
                            // joined: that task has released it, done.
                            let id = pending.conversation_id.clone();
                            let task = tasks.spawn(self.clone().deliver_conversation(pending));
                            in_flight.insert(task.id(), id);
                            started += 1;
                        }
                        saturated = started == room;
                    }
                    Err(e) => tracing::warn!(error = %e, "delivery pass failed"),
                }
            }
            let mut until = now + inner.options.scheduler_poll;
            if !saturated {
                match inner.store.next_delivery_after(now).await {
                    Ok(Some(at)) => until = until.min(at),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "delivery worker cannot read the next retry"),
                }
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'passes,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    // Its conversation may have more by now: a new pass.
                    Self::delivery_ended(done, &mut in_flight);
                }
                _ = notified, if !saturated => {}
                _ = inner.clock.sleep_until(until), if !saturated => {}
            }
        }
        // Deliveries in flight reach their end: one cut between the
        // channel's acceptance and its record would be sent again.
        while let Some(done) = tasks.join_next_with_id().await {
            Self::delivery_ended(done, &mut in_flight);
        }
    }

    /// Books a delivery task that ended.
    fn delivery_ended(
        done: Result<(tokio::task::Id, Result<DeliveryReport, StoreError>), tokio::task::JoinError>,
        in_flight: &mut HashMap<tokio::task::Id, String>,
    ) {
        match done {
            Ok((task, result)) => {
                let id = in_flight.remove(&task);
                if let Err(e) = result {
                    tracing::warn!(conversation = ?id, error = %e, "delivery failed");
                }
            }
            Err(e) => {
                let id = in_flight.remove(&e.id());
                if e.is_panic() {
                    tracing::error!(conversation = ?id, "a channel panicked");
                }
            }
        }
    }

    /// Delivers one conversation's pending entries in order, under its
    /// delivery lease; stops at the first entry to retry.
    async fn deliver_conversation(self, pending: PendingDeliveries) -> Result<DeliveryReport, StoreError> {
        let inner = &*self.inner;
        let id = pending.conversation_id.as_str();
        let mut report = DeliveryReport::default();
        let result = match self.channel_of(id).cloned() {
            Some(channel) => self.deliver_entries(&channel, &pending, &mut report).await,
            None => {
                // No channel for it in this process (another process may
                // have one): its entries wait, not refused.
                tracing::warn!(
                    conversation = id,
                    "no channel registered for this conversation's replies"
                );
                Ok(())
            }
        };
        let released = inner.store.release_deliveries(id, &inner.owner).await;
        result.and(released).map(|()| report)
    }

    async fn deliver_entries(
        &self,
        channel: &Arc<dyn Channel>,
        pending: &PendingDeliveries,
        report: &mut DeliveryReport,
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let id = pending.conversation_id.as_str();
        for entry in &pending.entries {
            let attempts = entry.delivery.as_ref().map_or(0, |d| d.attempts);
            let delivery = Delivery {
                conversation_id: pending.conversation_id.clone(),
                entry: entry.clone(),
                attempt: attempts + 1,
                last_inbound: pending.last_inbound.clone(),
            };
            let outcome = channel.deliver(&delivery).await;
            let now = inner.clock.now();
            let record = match &outcome {
                DeliveryOutcome::Accepted { channel_message_id } => {
                    report.accepted += 1;
                    DeliveryRecord::Accepted {
                        channel_message_id: channel_message_id.as_deref(),
                    }
                }
                DeliveryOutcome::RetryAfter { reason, .. }
                    if delivery.attempt >= inner.options.delivery_max_attempts =>
                {
                    report.refused += 1;
                    DeliveryRecord::Refused { reason }
                }
                DeliveryOutcome::RetryAfter { delay, reason } => {
                    report.retried += 1;
                    let at = now + self.backoff(delivery.attempt).max(*delay);
                    DeliveryRecord::Retry { at, reason }
                }
                DeliveryOutcome::Refused { reason } => {
                    report.refused += 1;
                    DeliveryRecord::Refused { reason }
                }
            };
            inner
                .store
                .record_delivery(id, &inner.owner, entry.seq, record, now)
                .await?;
            match record {
                DeliveryRecord::Accepted {
                    channel_message_id: Some(message_id),
                } => {
                    if let Some(reason) = self.take_early_failure(message_id) {
                        self.emit(Event::Undelivered {
                            conversation_id: id.to_string(),
                            seq: entry.seq,
                            reason,
                        });
                    }
                }
                DeliveryRecord::Retry { reason, .. } => {
                    tracing::info!(
                        conversation = id,
                        seq = entry.seq,
                        attempt = delivery.attempt,
                        reason,
                        "delivery to retry"
                    );
                    return Ok(());
                }
                DeliveryRecord::Refused { reason } => {
                    let reason = if matches!(outcome, DeliveryOutcome::RetryAfter { .. }) {
                        format!("gave up after {} attempts: {reason}", delivery.attempt)
                    } else {
                        reason.to_string()
                    };
                    tracing::warn!(conversation = id, seq = entry.seq, reason = %reason, "delivery refused");
                    self.emit(Event::Undelivered {
                        conversation_id: id.to_string(),
                        seq: entry.seq,
                        reason,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The wait before the attempt after `attempt`.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.options.delivery_backoff;
        base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
            .min(MAX_BACKOFF)
    }

    fn emit(&self, event: Event) {
        if let Some(events) = &self.inner.events {
            events.emit(event);
        }
    }

    /// Records a channel's receipt for one of its sent messages (WhatsApp's
    /// statuses), whichever comes first, the receipt or the record of the
    /// send; a `failed` one is reported as [`Event::Undelivered`] once its
    /// entry is known. Returns the conversation and seq of the entry.
    pub async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &Receipt,
    ) -> Result<Option<(String, u64)>, RuntimeError> {
        let found = self
            .inner
            .store
            .record_receipt(channel_message_id, receipt)
            .await?;
        if receipt.status == ReceiptStatus::Failed {
            tracing::warn!(channel_message_id, detail = ?receipt.detail, "channel reports a message failed");
            let reason = receipt.detail.clone().unwrap_or_else(|| "failed".into());
            match &found {
                Some((conversation_id, seq)) => self.emit(Event::Undelivered {
                    conversation_id: conversation_id.clone(),
                    seq: *seq,
                    reason,
                }),
                // The send's record comes later (in this process, usually):
                // reported then.
                None => self.note_early_failure(channel_message_id, reason),
            }
        }
        Ok(found)
    }

    fn note_early_failure(&self, channel_message_id: &str, reason: String) {
        let mut early = self
            .inner
            .early_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Bounded: ids whose send is never recorded here must not pile up.
        if early.len() >= MAX_EARLY_FAILURES {
            early.clear();
        }
        early.insert(channel_message_id.to_string(), reason);
    }

    fn take_early_failure(&self, channel_message_id: &str) -> Option<String> {
        let mut early = self
            .inner
            .early_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if early.is_empty() {
            return None;
        }
        early.remove(channel_message_id)
    }

    /// Forgets message ids (and receipts) older than
    /// [`crate::RuntimeOptions::seen_retention`], in batches of `batch`;
    /// returns how many. The scheduler calls it about once a minute.
    pub async fn prune_seen(&self, batch: usize) -> Result<u64, RuntimeError> {
        let inner = &*self.inner;
        let before = inner
            .clock
            .now()
            .checked_sub(inner.options.seen_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let batch = batch.max(1);
        let mut pruned = 0;
        loop {
            let n = inner.store.prune_seen(before, batch).await?;
            pruned += n;
            if n < batch as u64 {
                return Ok(pruned);
            }
            // Turns go first between batches.
            tokio::task::yield_now().await;
        }
    }
}
