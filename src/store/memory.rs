//! A store in process memory: for tests, demos, and one-process hosts that
//! can lose conversations on restart.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{
    Claim, ConversationCounts, DeliveryRecord, Direction, Enqueued, InboundMessage, InboxEntry,
    PendingDeliveries, Save, Store, StoreError, TranscriptEntry,
    rows::{decode_state, from_unix_ms, unix_ms},
};
use crate::channel::{DeliveryState, DeliveryStatus, Receipt};
use crate::conversation::{Conversation, Status};

/// A [`Store`] in memory.
///
/// A conversation in the middle of a turn is kept as a value (cheap to
/// replace at each of the turn's saves), and so are the last
/// 1,024 conversations that parked, as the ones likeliest to be taken
/// again soon; the others that wait — for the user, a Delay, or nothing
/// more — are kept as their JSON, as a database would keep them: a parked
/// conversation's values take several times the memory of their text.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    conversations: HashMap<String, Record>,
    /// Message ids recorded, with the time they were.
    seen: HashMap<(String, String), u64>,
    /// (due ms, id) of every conversation with pending deliveries.
    deliveries_due: BTreeSet<(u64, String)>,
    /// Receipts by channel message id, with their time of arrival.
    receipts: HashMap<String, Receipt>,
    /// The entry each accepted channel message id belongs to.
    sent: HashMap<String, (String, u64)>,
    /// (wake_at ms, id) for every conversation with a wake-up time.
    wakes: BTreeSet<(u64, String)>,
    /// (id, save number) of the conversations that parked as values, oldest
    /// first; past [`PARKED_VALUES`], the oldest is turned into JSON unless
    /// it was saved again since.
    parked_values: VecDeque<(String, u64)>,
}

/// How many parked conversations stay values.
const PARKED_VALUES: usize = 1024;

#[derive(Debug, Default)]
struct Record {
    state: Option<Stored>,
    inbox: Vec<InboxEntry>,
    next_inbox_seq: u64,
    transcript: Vec<TranscriptEntry>,
    wake_at: Option<u64>,
    lease: Option<(String, SystemTime)>,
    /// How many times the conversation was saved.
    saves: u64,
    /// When its pending deliveries are due; `None` when none are pending.
    deliveries_due: Option<u64>,
    /// The delivery lease.
    delivery_lease: Option<(String, SystemTime)>,
    /// Transcript positions (0-based) of the pending entries, in order.
    pending: VecDeque<usize>,
}

/// A conversation as the store holds it.
#[derive(Debug)]
enum Stored {
    /// Mid-turn, or parked lately: cheap to hand out again.
    Value(Box<Conversation>),
    /// Parked for a while: compact until a runner takes it again.
    Json(String),
}

impl Stored {
    fn conversation(&self, id: &str) -> Result<Conversation, StoreError> {
        match self {
            Stored::Value(conversation) => Ok((**conversation).clone()),
            Stored::Json(json) => decode_state(id, json),
        }
    }
}

impl Record {
    fn leased_to_other(&self, owner: &str, now: SystemTime) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|(o, until)| o != owner && *until > now)
    }

    fn append(&mut self, mut entry: TranscriptEntry) {
        entry.seq = self.transcript.len() as u64 + 1;
        self.transcript.push(entry);
    }
}

impl Inner {
    fn enqueue(
        &mut self,
        conversation_id: &str,
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Option<u64> {
        let key = (conversation_id.to_string(), message.message_id.to_string());
        if self.seen.contains_key(&key) {
            return None;
        }
        self.seen.insert(key, unix_ms(now));
        let record = self.conversations.entry(conversation_id.to_string()).or_default();
        let transcript_seq = record.transcript.len() as u64 + 1;
        if message.answers {
            record.next_inbox_seq += 1;
            let mut inbox = InboxEntry::new(record.next_inbox_seq, message.text, transcript_seq);
            inbox.details = message.details.cloned();
            record.inbox.push(inbox);
        }
        let mut entry = TranscriptEntry::new(0, Direction::In, message.text, unix_ms(now));
        entry.message_id = Some(message.message_id.to_string());
        entry.details = message.details.cloned();
        record.append(entry);
        Some(transcript_seq)
    }

    fn acquire(
        &mut self,
        conversation_id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        let record = self.conversations.entry(conversation_id.to_string()).or_default();
        if record.leased_to_other(owner, now) {
            return Ok(None);
        }
        record.lease = Some((owner.to_string(), lease_until));
        Ok(Some(Claim {
            conversation: record
                .state
                .as_ref()
                .map(|s| s.conversation(conversation_id))
                .transpose()?,
            inbox: record.inbox.clone(),
        }))
    }

    fn save(&mut self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        let inner = self;
        let Some(record) = inner.conversations.get_mut(conversation_id) else {
            return Err(StoreError::LeaseLost(conversation_id.to_string()));
        };
        if record.lease.as_ref().is_none_or(|(o, _)| o != owner) {
            return Err(StoreError::LeaseLost(conversation_id.to_string()));
        }
        match &mut record.state {
            // Usually the state this turn saved last: overwritten in place.
            Some(Stored::Value(stored)) => (**stored).clone_from(save.conversation),
            state => *state = Some(Stored::Value(Box::new(save.conversation.clone()))),
        }
        record.saves += 1;
        let parked = (*save.conversation.status() != Status::Running).then_some(record.saves);
        record.inbox.retain(|e| e.seq > save.consumed_up_to);
        let at_ms = unix_ms(save.now);
        for outgoing in save.outgoing {
            let mut entry = TranscriptEntry::new(0, outgoing.direction, outgoing.text.clone(), at_ms);
            entry.options.clone_from(&outgoing.options);
            entry.details.clone_from(&outgoing.details);
            entry.reply_to = save.reply_to;
            if save.deliver {
                entry.delivery = Some(DeliveryState::pending());
                record.pending.push_back(record.transcript.len());
            }
            record.append(entry);
        }
        if save.deliver && !save.outgoing.is_empty() && record.deliveries_due.is_none() {
            record.deliveries_due = Some(at_ms);
            inner.deliveries_due.insert((at_ms, conversation_id.to_string()));
        }
        let wake_at = save.wake_at.map(unix_ms);
        if record.wake_at != wake_at {
            if let Some(old) = record.wake_at {
                inner.wakes.remove(&(old, conversation_id.to_string()));
            }
            if let Some(new) = wake_at {
                inner.wakes.insert((new, conversation_id.to_string()));
            }
            record.wake_at = wake_at;
        }
        // The lease is this owner's (checked above): only its end moves.
        if let Some((_, until)) = &mut record.lease {
            *until = save.lease_until;
        }
        if let Some(saves) = parked {
            inner
                .parked_values
                .push_back((conversation_id.to_string(), saves));
            if inner.parked_values.len() > PARKED_VALUES {
                inner.compact_oldest_parked();
            }
        }
        Ok(())
    }

    /// Turns the longest-parked value into JSON, unless it was saved again
    /// since it parked (then a later entry stands for it).
    fn compact_oldest_parked(&mut self) {
        let Some((id, saves)) = self.parked_values.pop_front() else {
            return;
        };
        let Some(record) = self.conversations.get_mut(&id) else {
            return;
        };
        if record.saves != saves {
            return;
        }
        if let Some(Stored::Value(conversation)) = &record.state {
            // A state that does not serialize stays a value.
            match serde_json::to_string(conversation) {
                Ok(json) => record.state = Some(Stored::Json(json)),
                Err(e) => tracing::warn!(conversation = %id, error = %e, "parked state kept as a value"),
            }
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn enqueue_message(
        &self,
        conversation_id: &str,
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().enqueue(conversation_id, message, now))
    }

    async fn enqueue_and_acquire(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Enqueued>, StoreError> {
        let mut inner = self.lock();
        let message = InboundMessage::new(message_id, text);
        let Some(seq) = inner.enqueue(conversation_id, message, now) else {
            return Ok(None);
        };
        let claim = inner.acquire(conversation_id, owner, lease_until, now)?;
        Ok(Some(Enqueued { seq, claim }))
    }

    async fn acquire(
        &self,
        conversation_id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        self.lock().acquire(conversation_id, owner, lease_until, now)
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        self.lock().save(conversation_id, owner, save)
    }

    async fn save_and_read_replies(
        &self,
        conversation_id: &str,
        owner: &str,
        save: Save<'_>,
        reply_to: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let mut inner = self.lock();
        inner.save(conversation_id, owner, save)?;
        let Some(record) = inner.conversations.get(conversation_id) else {
            return Ok(Vec::new());
        };
        let after = usize::try_from(reply_to).unwrap_or(usize::MAX);
        Ok(record
            .transcript
            .get(after.min(record.transcript.len())..)
            .unwrap_or_default()
            .iter()
            .filter(|t| t.reply_to == Some(reply_to))
            .map(|t| inner.with_receipt(t))
            .collect())
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(record) = inner.conversations.get_mut(conversation_id)
            && record.lease.as_ref().is_some_and(|(o, _)| o == owner)
        {
            record.lease = None;
        }
        Ok(())
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let now_ms = unix_ms(now);
        let free = |id: &str| {
            inner
                .conversations
                .get(id)
                .is_some_and(|r| r.lease.as_ref().is_none_or(|(_, until)| *until <= now))
        };
        let mut out: Vec<String> = inner
            .wakes
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter(|(_, id)| free(id))
            .map(|(_, id)| id.clone())
            .take(limit)
            .collect();
        if out.len() < limit {
            let mut waiting: Vec<(u64, &String)> = inner
                .conversations
                .iter()
                .filter(|(id, r)| !r.inbox.is_empty() && free(id) && !out.contains(id))
                .map(|(id, r)| (r.transcript.first().map_or(0, |t| t.at_ms), id))
                .collect();
            waiting.sort();
            out.extend(
                waiting
                    .into_iter()
                    .map(|(_, id)| id.clone())
                    .take(limit - out.len()),
            );
        }
        Ok(out)
    }

    async fn counts(&self, now: SystemTime) -> Result<ConversationCounts, StoreError> {
        let inner = self.lock();
        let now_ms = unix_ms(now);
        let mut counts = ConversationCounts::default();
        for record in inner.conversations.values().filter(|r| r.state.is_some()) {
            match record.wake_at {
                Some(at) if at > now_ms => counts.sleeping += 1,
                Some(_) => {}
                None => counts.parked += 1,
            }
        }
        Ok(counts)
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .wakes
            .first()
            .map(|(ms, _)| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(*ms)))
    }

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let inner = self.lock();
        let after_ms = unix_ms(after);
        Ok(inner
            .wakes
            .range((after_ms.saturating_add(1), String::new())..)
            .next()
            .map(|(ms, _)| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(*ms)))
    }

    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        let inner = self.lock();
        inner
            .conversations
            .get(conversation_id)
            .and_then(|r| r.state.as_ref())
            .map(|s| s.conversation(conversation_id))
            .transpose()
    }

    async fn transcript(
        &self,
        conversation_id: &str,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .conversations
            .get(conversation_id)
            .map(|r| {
                r.transcript
                    .iter()
                    .filter(|t| t.seq > after_seq)
                    .map(|t| inner.with_receipt(t))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDeliveries>, StoreError> {
        let mut inner = self.lock();
        let now_ms = unix_ms(now);
        let due: Vec<String> = inner
            .deliveries_due
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter(|(_, id)| {
                inner
                    .conversations
                    .get(id)
                    .is_some_and(|r| r.delivery_lease.as_ref().is_none_or(|(_, until)| *until <= now))
            })
            .map(|(_, id)| id.clone())
            .take(limit)
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            let Some(record) = inner.conversations.get_mut(&id) else {
                continue;
            };
            record.delivery_lease = Some((owner.to_string(), lease_until));
            let entries = record
                .pending
                .iter()
                .filter_map(|&i| record.transcript.get(i).cloned())
                .collect();
            let last_inbound = record
                .transcript
                .iter()
                .rev()
                .find(|t| t.direction == Direction::In)
                .cloned();
            claimed.push(PendingDeliveries::new(id, entries, last_inbound));
        }
        Ok(claimed)
    }

    async fn record_delivery(
        &self,
        conversation_id: &str,
        owner: &str,
        seq: u64,
        record: DeliveryRecord<'_>,
        _now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let lost = || StoreError::LeaseLost(conversation_id.to_string());
        let conversation = inner.conversations.get_mut(conversation_id).ok_or_else(lost)?;
        if conversation
            .delivery_lease
            .as_ref()
            .is_none_or(|(o, _)| o != owner)
        {
            return Err(lost());
        }
        let index = usize::try_from(seq.saturating_sub(1)).unwrap_or(usize::MAX);
        if !conversation.pending.contains(&index) {
            return Ok(());
        }
        let Some(state) = conversation
            .transcript
            .get_mut(index)
            .and_then(|t| t.delivery.as_mut())
        else {
            return Ok(());
        };
        state.attempts += 1;
        let due = match record {
            DeliveryRecord::Accepted { channel_message_id } => {
                state.status = DeliveryStatus::Accepted;
                state.detail = None;
                state.channel_message_id = channel_message_id.map(str::to_string);
                if let Some(id) = channel_message_id {
                    inner
                        .sent
                        .insert(id.to_string(), (conversation_id.to_string(), seq));
                }
                conversation.pending.retain(|&i| i != index);
                None
            }
            DeliveryRecord::Refused { reason } => {
                state.status = DeliveryStatus::Refused;
                state.detail = Some(reason.to_string());
                conversation.pending.retain(|&i| i != index);
                None
            }
            DeliveryRecord::Retry { at, reason } => {
                state.detail = Some(reason.to_string());
                Some(unix_ms(at))
            }
        };
        let due = match due {
            Some(at) => Some(at),
            // The next pending entry may go at once.
            None if !conversation.pending.is_empty() => conversation.deliveries_due,
            None => None,
        };
        if conversation.deliveries_due != due {
            if let Some(old) = conversation.deliveries_due {
                inner.deliveries_due.remove(&(old, conversation_id.to_string()));
            }
            if let Some(new) = due {
                inner.deliveries_due.insert((new, conversation_id.to_string()));
            }
            conversation.deliveries_due = due;
        }
        Ok(())
    }

    async fn release_deliveries(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(record) = inner.conversations.get_mut(conversation_id)
            && record.delivery_lease.as_ref().is_some_and(|(o, _)| o == owner)
        {
            record.delivery_lease = None;
        }
        Ok(())
    }

    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let inner = self.lock();
        let after_ms = unix_ms(after);
        Ok(inner
            .deliveries_due
            .range((after_ms.saturating_add(1), String::new())..)
            .next()
            .map(|(ms, _)| from_unix_ms(*ms)))
    }

    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let mut inner = self.lock();
        let keep = inner
            .receipts
            .get(channel_message_id)
            .is_none_or(|kept| kept.status < receipt.status);
        if keep {
            inner
                .receipts
                .insert(channel_message_id.to_string(), receipt.clone());
        }
        Ok(inner.sent.get(channel_message_id).cloned())
    }

    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before_ms = unix_ms(before);
        let old: Vec<(String, String)> = inner
            .seen
            .iter()
            .filter(|(_, at)| **at < before_ms)
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect();
        for key in &old {
            inner.seen.remove(key);
        }
        let receipts: Vec<String> = inner
            .receipts
            .iter()
            .filter(|(_, r)| r.at_ms < before_ms)
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect();
        for id in &receipts {
            inner.receipts.remove(id);
            inner.sent.remove(id);
        }
        Ok(old.len() as u64)
    }
}

impl Inner {
    /// An entry as handed out: with the receipt recorded for its channel
    /// message id.
    fn with_receipt(&self, entry: &TranscriptEntry) -> TranscriptEntry {
        let mut entry = entry.clone();
        if let Some(state) = &mut entry.delivery
            && let Some(id) = &state.channel_message_id
        {
            state.receipt = self.receipts.get(id).cloned();
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::{MemoryStore, PARKED_VALUES, Stored};
    use crate::conversation::Status;
    use crate::store::{Save, Store};
    use crate::{Engine, Flow};

    async fn park(store: &MemoryStore, engine: &Engine, id: &str) {
        let mut conversation = engine.start(id);
        conversation.status = Status::AwaitingReply;
        let now = SystemTime::now();
        store.acquire(id, "me", now, now).await.unwrap();
        let save = Save {
            conversation: &conversation,
            consumed_up_to: 0,
            outgoing: &[],
            reply_to: None,
            deliver: false,
            wake_at: None,
            lease_until: now,
            now,
        };
        store.save(id, "me", save).await.unwrap();
    }

    fn is_json(store: &MemoryStore, id: &str) -> bool {
        matches!(store.lock().conversations[id].state, Some(Stored::Json(_)))
    }

    #[tokio::test]
    async fn the_conversations_parked_longest_are_kept_as_json() {
        let flow =
            Flow::from_json(r#"{"name": "f", "steps": [{"type": "question", "name": "Ask", "text": "?"}]}"#);
        let engine = Engine::builder(flow.unwrap()).build().unwrap();
        let store = MemoryStore::new();
        for i in 0..PARKED_VALUES + 2 {
            park(&store, &engine, &format!("c{i}")).await;
        }
        // Saved again after parking: it is now among the latest.
        park(&store, &engine, "c2").await;
        park(&store, &engine, "c3").await;
        assert!(is_json(&store, "c0") && is_json(&store, "c1"));
        assert!(!is_json(&store, "c2") && !is_json(&store, "c3"));
        assert!(!is_json(&store, &format!("c{}", PARKED_VALUES + 1)));
        // Either way, what comes back is the conversation saved.
        let back = store.load("c0").await.unwrap().unwrap();
        assert_eq!((back.id(), back.status()), ("c0", &Status::AwaitingReply));
    }
}
