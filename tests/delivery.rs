//! Push delivery through channels: the outbox, in order per conversation,
//! with retries, refusals, receipts and the at-least-once guarantee; reply
//! ownership for synchronous callers; subscriptions; channel messages with
//! details.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chatflow::channel::{Channel, Delivery, DeliveryOutcome, DeliveryStatus, Receipt, ReceiptStatus};
use chatflow::store::{
    DeliveryRecord, Direction, InboundMessage, MemoryStore, SqliteStore, Store, StoreError, TranscriptEntry,
};
use chatflow::{Engine, Event, EventLog, Flow, Runtime, RuntimeOptions, Status, VirtualClock};
use serde_json::json;

/// Each store the outbox runs on.
async fn stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    vec![
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Store>),
        (
            "sqlite",
            Arc::new(SqliteStore::connect("sqlite::memory:").await.unwrap()),
        ),
    ]
}

/// What a scripted channel answers to each attempt, in order; accepts once
/// the script runs out.
#[derive(Default)]
struct Scripted {
    script: Mutex<Vec<DeliveryOutcome>>,
    /// (conversation, text, attempt) of every call.
    calls: Mutex<Vec<(String, String, u32)>>,
}

impl Scripted {
    fn with(script: Vec<DeliveryOutcome>) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Mutex::new(script),
            calls: Mutex::default(),
        })
    }

    fn texts(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t, _)| t.clone())
            .collect()
    }
}

#[async_trait]
impl Channel for Scripted {
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        let mut calls = self.calls.lock().unwrap();
        calls.push((
            delivery.conversation_id.clone(),
            delivery.entry.text.clone(),
            delivery.attempt,
        ));
        let mut script = self.script.lock().unwrap();
        if script.is_empty() {
            DeliveryOutcome::accepted(format!("msg-{}", calls.len()))
        } else {
            script.remove(0)
        }
    }
}

fn flow() -> Flow {
    Flow::from_json(
        r#"{"name": "f", "start": "start_flow", "steps": [
          {"type": "message", "name": "Hello", "text": "Hello"},
          {"type": "question", "name": "Ask", "text": "Pick one", "options": ["Yes", "No"]},
          {"type": "message", "name": "Got", "text": "You chose <<step.Ask.option>>"},
          {"type": "delay", "name": "Wait", "seconds": 60},
          {"type": "message", "name": "Later", "text": "A minute later",
           "whatsapp_template": {"name": "follow_up", "language": {"code": "en_US"}}}
        ]}"#,
    )
    .unwrap()
}

fn runtime(
    store: Arc<dyn Store>,
    clock: Arc<VirtualClock>,
    channel: Arc<Scripted>,
) -> (Runtime, Arc<EventLog>) {
    let events = Arc::new(EventLog::new());
    let engine = Engine::builder(flow()).shared_clock(clock).build().unwrap();
    let runtime = Runtime::builder(engine, store)
        .options(RuntimeOptions::default().with_delivery_max_attempts(3))
        .channel("chan", channel)
        .events(events.clone())
        .build();
    (runtime, events)
}

fn bot_entries(transcript: &[TranscriptEntry]) -> Vec<&TranscriptEntry> {
    transcript
        .iter()
        .filter(|e| e.direction != Direction::In)
        .collect()
}

#[tokio::test]
async fn every_reply_goes_out_once_in_order_and_is_recorded_with_the_channels_id() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![]);
        let (runtime, _) = runtime(store.clone(), clock.clone(), channel.clone());
        runtime
            .handle_message("chan:ada", Some("m1"), "hi")
            .await
            .unwrap();
        let report = runtime.deliver_due().await.unwrap();
        assert_eq!(report.accepted, 2, "{name}");
        assert_eq!(channel.texts(), ["Hello", "Pick one"], "{name}");
        // Nothing is delivered twice.
        assert_eq!(runtime.deliver_due().await.unwrap().accepted, 0, "{name}");
        let transcript = store.transcript("chan:ada", 0).await.unwrap();
        let bot = bot_entries(&transcript);
        let delivered: Vec<_> = bot
            .iter()
            .map(|e| {
                let d = e.delivery.as_ref().unwrap();
                (d.status, d.channel_message_id.as_deref(), d.attempts)
            })
            .collect();
        assert_eq!(
            delivered,
            [
                (DeliveryStatus::Accepted, Some("msg-1"), 1),
                (DeliveryStatus::Accepted, Some("msg-2"), 1)
            ],
            "{name}"
        );
        // The question's options travel with it, for the channel to render.
        let titles: Vec<_> = bot[1].options.iter().map(|o| o.title.as_str()).collect();
        assert_eq!(titles, ["Yes", "No"], "{name}");
    }
}

#[tokio::test]
async fn a_retried_entry_holds_back_the_ones_after_it_until_it_goes() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![DeliveryOutcome::retry_after(
            Duration::from_secs(30),
            "rate limited",
        )]);
        let (runtime, _) = runtime(store.clone(), clock.clone(), channel.clone());
        runtime
            .handle_message("chan:ada", Some("m1"), "hi")
            .await
            .unwrap();
        let report = runtime.deliver_due().await.unwrap();
        assert_eq!((report.accepted, report.retried), (0, 1), "{name}");
        // "Pick one" waits behind "Hello".
        assert_eq!(channel.texts(), ["Hello"], "{name}");
        // Not before the channel's 30 s.
        clock.advance(Duration::from_secs(29));
        assert_eq!(runtime.deliver_due().await.unwrap().accepted, 0, "{name}");
        let next = store.next_delivery_after(clock.now_for_test()).await.unwrap();
        assert!(next.is_some(), "{name}: the retry is scheduled");
        clock.advance(Duration::from_secs(1));
        assert_eq!(runtime.deliver_due().await.unwrap().accepted, 2, "{name}");
        let calls = channel.calls.lock().unwrap().clone();
        let attempts: Vec<_> = calls.iter().map(|(_, t, a)| (t.as_str(), *a)).collect();
        assert_eq!(attempts, [("Hello", 1), ("Hello", 2), ("Pick one", 1)], "{name}");
    }
}

trait NowForTest {
    fn now_for_test(&self) -> SystemTime;
}

impl NowForTest for VirtualClock {
    fn now_for_test(&self) -> SystemTime {
        chatflow::Clock::now(self)
    }
}

#[tokio::test]
async fn a_refusal_is_recorded_reported_and_not_retried_and_the_next_entry_goes() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![DeliveryOutcome::refused("131026 undeliverable")]);
        let (runtime, events) = runtime(store.clone(), clock.clone(), channel.clone());
        runtime
            .handle_message("chan:ada", Some("m1"), "hi")
            .await
            .unwrap();
        let report = runtime.deliver_due().await.unwrap();
        assert_eq!((report.accepted, report.refused), (1, 1), "{name}");
        assert_eq!(channel.texts(), ["Hello", "Pick one"], "{name}");
        let transcript = store.transcript("chan:ada", 0).await.unwrap();
        let hello = bot_entries(&transcript)[0].delivery.clone().unwrap();
        assert_eq!(hello.status, DeliveryStatus::Refused, "{name}");
        assert_eq!(hello.detail.as_deref(), Some("131026 undeliverable"), "{name}");
        assert_eq!(
            events.take(),
            [Event::Undelivered {
                conversation_id: "chan:ada".into(),
                seq: 2,
                reason: "131026 undeliverable".into()
            }],
            "{name}"
        );
        clock.advance(Duration::from_secs(3600));
        assert_eq!(runtime.deliver_due().await.unwrap(), Default::default(), "{name}");
    }
}

#[tokio::test]
async fn retries_stop_after_the_last_attempt_with_the_reason() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let down = || DeliveryOutcome::retry_after(Duration::ZERO, "503 from the channel");
        let channel = Scripted::with(vec![down(), down(), down()]);
        let (runtime, events) = runtime(store.clone(), clock.clone(), channel.clone());
        runtime
            .handle_message("chan:ada", Some("m1"), "hi")
            .await
            .unwrap();
        for _ in 0..3 {
            runtime.deliver_due().await.unwrap();
            // The backoff grows: 1 s, then 2 s.
            clock.advance(Duration::from_secs(4));
        }
        let transcript = store.transcript("chan:ada", 0).await.unwrap();
        let hello = bot_entries(&transcript)[0].delivery.clone().unwrap();
        assert_eq!(
            (hello.status, hello.attempts),
            (DeliveryStatus::Refused, 3),
            "{name}"
        );
        let reason = match &events.take()[..] {
            [Event::Undelivered { reason, .. }] => reason.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(reason, "gave up after 3 attempts: 503 from the channel", "{name}");
    }
}

#[tokio::test]
async fn a_delay_follow_up_resumed_by_the_scheduler_reaches_the_channel() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![]);
        let (runtime, _) = runtime(store.clone(), clock.clone(), channel.clone());
        runtime
            .handle_message("chan:ada", Some("m1"), "hi")
            .await
            .unwrap();
        // The channel's button gives the option's id.
        let mut turn = runtime.subscribe("chan:ada", 0);
        let answer = runtime
            .accept("chan:ada", InboundMessage::new("m2", "2"))
            .await
            .unwrap();
        assert!(answer.is_some(), "{name}");
        // The turn runs on its own task.
        loop {
            if turn.next().await.unwrap().text == "You chose No" {
                break;
            }
        }
        clock.advance(Duration::from_secs(60));
        assert_eq!(runtime.wake_due().await.unwrap(), 1, "{name}");
        runtime.deliver_due().await.unwrap();
        assert_eq!(
            channel.texts(),
            ["Hello", "Pick one", "You chose No", "A minute later"],
            "{name}"
        );
        // The follow-up carries the template a channel sends outside its window.
        let transcript = store.transcript("chan:ada", 0).await.unwrap();
        let later = transcript.last().unwrap();
        assert_eq!(
            later.details,
            Some(json!({"whatsapp_template": {"name": "follow_up", "language": {"code": "en_US"}}})),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_conversation_without_a_channel_has_no_outbox_and_its_replies_reach_subscribers() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![]);
        let (runtime, _) = runtime(store.clone(), clock.clone(), channel.clone());
        let mut replies = runtime.subscribe("web-1", 0);
        runtime.handle_message("web-1", Some("m1"), "hi").await.unwrap();
        runtime.handle_message("web-1", Some("m2"), "yes").await.unwrap();
        assert_eq!(runtime.deliver_due().await.unwrap(), Default::default(), "{name}");
        assert!(channel.texts().is_empty(), "{name}");
        let mut texts = Vec::new();
        for _ in 0..3 {
            let entry = replies.next().await.unwrap();
            assert_eq!(entry.delivery, None, "{name}");
            texts.push(entry.text);
        }
        assert_eq!(texts, ["Hello", "Pick one", "You chose Yes"], "{name}");
        // The Delay's follow-up comes later, from the scheduler.
        clock.advance(Duration::from_secs(60));
        runtime.wake_due().await.unwrap();
        assert_eq!(replies.next().await.unwrap().text, "A minute later", "{name}");
        // A subscriber that resumes after seq n gets only what came after.
        let mut resumed = runtime.subscribe("web-1", replies.last_seq() - 1);
        assert_eq!(resumed.next().await.unwrap().text, "A minute later", "{name}");
    }
}

#[tokio::test]
async fn each_reply_belongs_to_the_response_of_the_message_it_answers() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let engine = Engine::builder(
            Flow::from_json(
                r#"{"name": "echo", "steps": [
                  {"type": "question", "name": "Ask", "text": "Say something"},
                  {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
                ]}"#,
            )
            .unwrap(),
        )
        .shared_clock(clock)
        .build()
        .unwrap();
        let runtime = Runtime::new(engine, store.clone());
        runtime.handle_message("c", Some("m0"), "start").await.unwrap();
        // Many messages at once on one conversation: turns overlap, and a
        // turn may take several messages.
        let mut tasks = Vec::new();
        for i in 1..=20 {
            let runtime = runtime.clone();
            tasks.push(tokio::spawn(async move {
                runtime
                    .handle_message("c", Some(&format!("m{i}")), &format!("n{i}"))
                    .await
                    .unwrap()
            }));
        }
        let mut answered: Vec<u64> = Vec::new();
        for task in tasks {
            answered.extend(task.await.unwrap().replies.iter().map(|r| r.seq));
        }
        answered.sort();
        let before = answered.len();
        answered.dedup();
        assert_eq!(before, answered.len(), "{name}: a reply was in two responses");
        // Every reply after the first message was in one response.
        let transcript = store.transcript("c", 0).await.unwrap();
        let first_in = transcript
            .iter()
            .filter(|e| e.direction == Direction::In)
            .nth(1)
            .unwrap()
            .seq;
        let expected: Vec<u64> = transcript
            .iter()
            .filter(|e| e.direction != Direction::In && e.seq > first_in)
            .map(|e| e.seq)
            .collect();
        assert_eq!(answered, expected, "{name}");
    }
}

#[tokio::test]
async fn a_channel_message_with_details_is_readable_and_a_reaction_answers_nothing() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let engine = Engine::builder(
            Flow::from_json(
                r#"{"name": "media", "start": "start_flow", "steps": [
                  {"type": "question", "name": "Ask", "text": "Send a photo"},
                  {"type": "message", "name": "Saw", "text": "<<conversation.message.type>> from <<conversation.message.profile_name>>: <<step.Ask.response>>"}
                ]}"#,
            )
            .unwrap(),
        )
        .shared_clock(clock)
        .build()
        .unwrap();
        let runtime = Runtime::new(engine, store.clone());
        runtime.handle_message("wa:1", Some("m0"), "hi").await.unwrap();
        let reaction = json!({"type": "reaction", "emoji": "👍"});
        let taken = runtime
            .accept(
                "wa:1",
                InboundMessage::new("m1", "👍")
                    .with_details(&reaction)
                    .with_answers(false),
            )
            .await
            .unwrap();
        assert!(taken.is_some(), "{name}");
        let photo = json!({"type": "image", "media_id": "MEDIA-1", "profile_name": "Ada"});
        let turn = runtime
            .handle_inbound("wa:1", InboundMessage::new("m2", "a cat").with_details(&photo))
            .await
            .unwrap();
        assert_eq!(turn.texts(), ["image from Ada: a cat"], "{name}");
        let transcript = store.transcript("wa:1", 0).await.unwrap();
        let inbound: Vec<_> = transcript
            .iter()
            .filter(|e| e.direction == Direction::In)
            .map(|e| (e.message_id.as_deref(), e.text.as_str(), e.details.clone()))
            .collect();
        assert_eq!(
            inbound,
            [
                (Some("m0"), "hi", None),
                (Some("m1"), "👍", Some(reaction.clone())),
                (Some("m2"), "a cat", Some(photo.clone()))
            ],
            "{name}"
        );
        assert_eq!(
            store.load("wa:1").await.unwrap().unwrap().status(),
            &Status::Finished,
            "{name}"
        );
    }
}

#[tokio::test]
async fn receipts_are_kept_on_their_entry_whichever_comes_first_and_a_failure_is_reported() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![]);
        let (runtime, events) = runtime(store.clone(), clock.clone(), channel.clone());
        // Receipts for msg-2 come before its send is recorded: delivered,
        // then failed after all.
        let early = Receipt::new(ReceiptStatus::Delivered, SystemTime::UNIX_EPOCH);
        assert_eq!(
            runtime.record_receipt("msg-2", &early).await.unwrap(),
            None,
            "{name}"
        );
        let early_failure =
            Receipt::new(ReceiptStatus::Failed, SystemTime::UNIX_EPOCH).with_detail("131026 undeliverable");
        assert_eq!(
            runtime.record_receipt("msg-2", &early_failure).await.unwrap(),
            None,
            "{name}"
        );
        assert_eq!(events.take(), [], "{name}: its entry is not known yet");
        runtime
            .handle_message("chan:ada", Some("m1"), "hi")
            .await
            .unwrap();
        runtime.deliver_due().await.unwrap();
        // Reported once the send is recorded.
        let undelivered = |seq, reason: &str| Event::Undelivered {
            conversation_id: "chan:ada".into(),
            seq,
            reason: reason.into(),
        };
        assert_eq!(events.take(), [undelivered(3, "131026 undeliverable")], "{name}");
        let read = Receipt::new(ReceiptStatus::Read, SystemTime::UNIX_EPOCH);
        let found = runtime.record_receipt("msg-1", &read).await.unwrap();
        assert_eq!(found, Some(("chan:ada".to_string(), 2)), "{name}");
        // A late "sent" does not undo "read".
        let sent = Receipt::new(ReceiptStatus::Sent, SystemTime::UNIX_EPOCH);
        runtime.record_receipt("msg-1", &sent).await.unwrap();
        let transcript = store.transcript("chan:ada", 0).await.unwrap();
        let receipts: Vec<_> = bot_entries(&transcript)
            .iter()
            .map(|e| e.delivery.as_ref().unwrap().receipt.as_ref().map(|r| r.status))
            .collect();
        assert_eq!(
            receipts,
            [Some(ReceiptStatus::Read), Some(ReceiptStatus::Failed)],
            "{name}"
        );
        // A failure after the record is reported at once.
        let failed = Receipt::new(ReceiptStatus::Failed, SystemTime::UNIX_EPOCH)
            .with_detail("131047 Re-engagement message");
        runtime.record_receipt("msg-1", &failed).await.unwrap();
        assert_eq!(
            events.take(),
            [undelivered(2, "131047 Re-engagement message")],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_message_id_is_remembered_for_the_retention_then_forgotten() {
    for (name, store) in stores().await {
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![]);
        let (runtime, _) = runtime(store.clone(), clock.clone(), channel.clone());
        assert!(
            runtime
                .accept("chan:ada", InboundMessage::new("wamid.1", "hi"))
                .await
                .unwrap()
                .is_some()
        );
        clock.advance(Duration::from_secs(6 * 24 * 3600));
        assert_eq!(runtime.prune_seen(100).await.unwrap(), 0, "{name}");
        assert!(
            runtime
                .accept("chan:ada", InboundMessage::new("wamid.1", "hi"))
                .await
                .unwrap()
                .is_none(),
            "{name}: redelivered within 7 days"
        );
        clock.advance(Duration::from_secs(2 * 24 * 3600));
        assert_eq!(runtime.prune_seen(100).await.unwrap(), 1, "{name}");
        // Redelivered 8 days later: taken as a new message (documented).
        assert!(
            runtime
                .accept("chan:ada", InboundMessage::new("wamid.1", "hi"))
                .await
                .unwrap()
                .is_some(),
            "{name}"
        );
    }
}

/// A store that loses the record of the first acceptance, as a process that
/// dies between the channel's answer and its record would.
struct LosesFirstRecord {
    inner: Arc<dyn Store>,
    lost: Mutex<bool>,
}

#[async_trait]
impl Store for LosesFirstRecord {
    async fn enqueue_message(
        &self,
        id: &str,
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.enqueue_message(id, message, now).await
    }
    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<chatflow::store::Claim>, StoreError> {
        self.inner.acquire(id, owner, lease_until, now).await
    }
    async fn save(&self, id: &str, owner: &str, save: chatflow::store::Save<'_>) -> Result<(), StoreError> {
        self.inner.save(id, owner, save).await
    }
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release(id, owner).await
    }
    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn counts(&self, now: SystemTime) -> Result<chatflow::store::ConversationCounts, StoreError> {
        self.inner.counts(now).await
    }
    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_wake().await
    }
    async fn load(&self, id: &str) -> Result<Option<chatflow::Conversation>, StoreError> {
        self.inner.load(id).await
    }
    async fn transcript(&self, id: &str, after: u64) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.inner.transcript(id, after).await
    }
    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<chatflow::store::PendingDeliveries>, StoreError> {
        self.inner.claim_deliveries(owner, lease_until, now, limit).await
    }
    async fn record_delivery(
        &self,
        id: &str,
        owner: &str,
        seq: u64,
        record: DeliveryRecord<'_>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        if std::mem::replace(&mut *self.lost.lock().unwrap(), false) {
            return Err(StoreError::backend("test", "the process died here"));
        }
        self.inner.record_delivery(id, owner, seq, record, now).await
    }
    async fn release_deliveries(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_deliveries(id, owner).await
    }
    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_delivery_after(after).await
    }
    async fn record_receipt(&self, id: &str, receipt: &Receipt) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.record_receipt(id, receipt).await
    }
    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_seen(before, limit).await
    }
}

#[tokio::test]
async fn a_reply_is_sent_twice_only_when_its_acceptance_was_not_recorded() {
    for (name, inner) in stores().await {
        let store: Arc<dyn Store> = Arc::new(LosesFirstRecord {
            inner,
            lost: Mutex::new(true),
        });
        let clock = Arc::new(VirtualClock::new());
        let channel = Scripted::with(vec![]);
        let (runtime, _) = runtime(store.clone(), clock.clone(), channel.clone());
        runtime
            .handle_message("chan:ada", Some("m1"), "hi")
            .await
            .unwrap();
        assert!(runtime.deliver_due().await.is_err(), "{name}");
        // The lease of the "dead" deliverer expires; another takes over.
        clock.advance(RuntimeOptions::default().delivery_lease());
        runtime.deliver_due().await.unwrap();
        assert_eq!(
            channel.texts(),
            ["Hello", "Hello", "Pick one"],
            "{name}: one repeat, no loss"
        );
    }
}

/// Holds the first delivery to `held` until released; accepts the others.
struct Holding {
    held: &'static str,
    release: tokio::sync::Notify,
    delivered: Mutex<Vec<String>>,
}

#[async_trait]
impl Channel for Holding {
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        if delivery.conversation_id == self.held && delivery.entry.text == "Hello" {
            self.release.notified().await;
        }
        self.delivered
            .lock()
            .unwrap()
            .push(format!("{}: {}", delivery.conversation_id, delivery.entry.text));
        DeliveryOutcome::accepted_without_id()
    }
}

#[tokio::test]
async fn a_channel_call_that_hangs_holds_back_its_own_conversation_only() {
    for (name, store) in stores().await {
        let channel = Arc::new(Holding {
            held: "chan:slow",
            release: tokio::sync::Notify::new(),
            delivered: Mutex::default(),
        });
        let engine = Engine::builder(flow()).build().unwrap();
        let runtime = Runtime::builder(engine, store)
            .channel("chan", channel.clone())
            .build();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn({
            let runtime = runtime.clone();
            async move {
                runtime
                    .run_deliveries(async { stopped.await.unwrap_or(()) })
                    .await
            }
        });
        runtime
            .handle_message("chan:slow", Some("m1"), "hi")
            .await
            .unwrap();
        runtime
            .handle_message("chan:fast", Some("m1"), "hi")
            .await
            .unwrap();
        let fast = ["chan:fast: Hello", "chan:fast: Pick one"];
        for _ in 0..200 {
            if channel.delivered.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*channel.delivered.lock().unwrap(), fast, "{name}");
        // Shutdown waits for the delivery in flight, which then ends.
        stop.send(()).unwrap();
        channel.release.notify_one();
        worker.await.unwrap();
        let delivered = channel.delivered.lock().unwrap().clone();
        assert_eq!(
            delivered[2..],
            ["chan:slow: Hello", "chan:slow: Pick one"],
            "{name}"
        );
    }
}
