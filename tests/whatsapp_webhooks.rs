//! The WhatsApp webhook routes, signed as Meta signs them, without a
//! socket (`tower::ServiceExt::oneshot`): the verification handshake, the
//! signature, malformed bodies, unknown types, batches, redeliveries (also
//! after the dedup retention, on the virtual clock) and a thousand
//! notifications with redeliveries out of order.
//!
//! Replies go to a recording channel registered as `whatsapp`, delivered
//! with `Runtime::deliver_due`. Tokio's clock is paused: a sleep returns
//! once every spawned turn has nothing left to do, with no real wait.
#![cfg(feature = "whatsapp")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chatflow::channel::{Channel, Delivery, DeliveryOutcome, ReceiptStatus};
use chatflow::store::{
    Claim, ConversationCounts, DeliveryRecord, Direction, InboundMessage, MemoryStore, PendingDeliveries,
    Save, Store, StoreError, TranscriptEntry,
};
use chatflow::whatsapp::{WhatsAppSettings, router, sign};
use chatflow::{Engine, Flow, Runtime, RuntimeOptions, VirtualClock};
use serde_json::{Value, json};
use tower::ServiceExt;

const VERIFY_TOKEN: &str = "verify-me-please";
const APP_SECRET: &str = "app-secret-for-tests";
const PHONE_NUMBER_ID: &str = "106540352242922";
const ADA: &str = "15551234567";

const ECHO_FLOW: &str = r#"{"name": "echo", "steps": [
  {"type": "question", "name": "Ask", "text": "Say something"},
  {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
]}"#;

/// What the channel was handed, in order.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, u64, String)>>,
}

#[async_trait]
impl Channel for Recorder {
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        let mut sent = self.sent.lock().unwrap();
        sent.push((
            delivery.conversation_id.clone(),
            delivery.entry.seq,
            delivery.entry.text.clone(),
        ));
        DeliveryOutcome::accepted(format!("wamid.out.{}", sent.len()))
    }
}

struct Bot {
    runtime: Runtime,
    app: Router,
    channel: Arc<Recorder>,
    clock: Arc<VirtualClock>,
}

impl Bot {
    fn new() -> Bot {
        let clock = Arc::new(VirtualClock::new());
        let engine = Engine::builder(Flow::from_json(ECHO_FLOW).unwrap())
            .shared_clock(clock.clone())
            .build()
            .unwrap();
        let channel = Arc::new(Recorder::default());
        let runtime = Runtime::builder(engine, Arc::new(MemoryStore::new()))
            .options(RuntimeOptions::default().with_scheduler_batch(1000))
            .channel("whatsapp", channel.clone())
            .build();
        Bot {
            app: router(runtime.clone(), settings()),
            runtime,
            channel,
            clock,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        (status, body)
    }

    /// POSTs `body` signed with the app secret.
    async fn post(&self, body: &Value) -> (StatusCode, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        self.send(signed(&raw, APP_SECRET)).await
    }

    async fn transcript(&self, wa_id: &str) -> Vec<TranscriptEntry> {
        self.runtime
            .store()
            .transcript(&format!("whatsapp:{wa_id}"), 0)
            .await
            .unwrap()
    }

    /// The inbound message ids and the bot's texts, in transcript order.
    async fn lines(&self, wa_id: &str) -> Vec<String> {
        self.transcript(wa_id)
            .await
            .iter()
            .map(|e| match e.direction {
                Direction::In => format!("in {}", e.message_id.as_deref().unwrap_or("?")),
                _ => format!("out {}", e.text),
            })
            .collect()
    }

    /// The inbound message ids, in order, and what the bot echoed, in
    /// order, one line per message: messages that arrive while a turn runs
    /// are taken together by the next Question (joined by newlines), so
    /// how they group depends on timing, but never their order.
    async fn applied(&self, wa_id: &str) -> (Vec<String>, Vec<String>) {
        let transcript = self.transcript(wa_id).await;
        let ids = transcript
            .iter()
            .filter(|e| e.direction == Direction::In)
            .map(|e| e.message_id.clone().unwrap_or_default())
            .collect();
        let echoed = transcript
            .iter()
            .filter_map(|e| e.text.strip_prefix("You said "))
            .flat_map(|said| said.lines().map(str::to_string))
            .collect();
        (ids, echoed)
    }

    /// Delivers until nothing is pending.
    async fn deliver_all(&self) {
        loop {
            let report = self.runtime.deliver_due().await.unwrap();
            if report.accepted == 0 && report.retried == 0 && report.refused == 0 {
                return;
            }
        }
    }
}

fn settings() -> WhatsAppSettings {
    WhatsAppSettings::new(VERIFY_TOKEN, APP_SECRET, "EAAG-access-token", PHONE_NUMBER_ID)
}

/// Lets every spawned turn run to its end: with tokio's clock paused, the
/// sleep ends only once no task has anything left to do.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn signed(raw: &[u8], secret: &str) -> Request<Body> {
    Request::post("/webhooks/whatsapp")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(secret, raw))
        .body(Body::from(raw.to_vec()))
        .unwrap()
}

fn text(wa_id: &str, wamid: &str, body: &str) -> Value {
    json!({"from": wa_id, "id": wamid, "timestamp": "1767225600", "type": "text", "text": {"body": body}})
}

/// One change of the `messages` field, for one contact.
fn change(wa_id: &str, messages: Vec<Value>) -> Value {
    json!({"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Ada"}, "wa_id": wa_id}],
        "messages": messages
    }})
}

fn notification(changes: Vec<Value>) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA_ID", "changes": changes}]})
}

fn one_text(wa_id: &str, wamid: &str, body: &str) -> Value {
    notification(vec![change(wa_id, vec![text(wa_id, wamid, body)])])
}

fn get(query: &str) -> Request<Body> {
    Request::get(format!("/webhooks/whatsapp?{query}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn verification_answers_the_challenge_for_the_right_token_only() {
    let bot = Bot::new();
    let (status, body) = bot
        .send(get(&format!(
            "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        )))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The challenge is echoed as it came (plain text, here a number).
    assert_eq!(body, json!(1158201444));

    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444".to_string(),
        format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        format!("hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        "hub.mode=subscribe&hub.challenge=1".to_string(),
        format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"),
        // A prefix of the token is not the token.
        format!(
            "hub.mode=subscribe&hub.verify_token={}&hub.challenge=1",
            &VERIFY_TOKEN[..5]
        ),
        String::new(),
    ] {
        let (status, _) = bot.send(get(&query)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{query}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_missing_or_wrong_signature_is_a_401_and_records_nothing() {
    let bot = Bot::new();
    let raw = serde_json::to_vec(&one_text(ADA, "wamid.A1", "hello")).unwrap();
    let unsigned = Request::post("/webhooks/whatsapp")
        .header("content-type", "application/json")
        .body(Body::from(raw.clone()))
        .unwrap();
    let mut tampered = raw.clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 1;
    let tampered = Request::post("/webhooks/whatsapp")
        .header("x-hub-signature-256", sign(APP_SECRET, &raw))
        .body(Body::from(tampered))
        .unwrap();
    let malformed_header = Request::post("/webhooks/whatsapp")
        .header("x-hub-signature-256", "sha256=not-hex")
        .body(Body::from(raw.clone()))
        .unwrap();
    for request in [
        unsigned,
        signed(&raw, "another-apps-secret"),
        tampered,
        malformed_header,
    ] {
        let (status, _) = bot.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    settle().await;
    assert!(bot.transcript(ADA).await.is_empty());
    // The message id was not marked seen either: signed, it is new.
    let (status, body) = bot.post(&one_text(ADA, "wamid.A1", "hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["messages"], 1, "{body}");
}

#[tokio::test(start_paused = true)]
async fn malformed_bodies_are_a_400_never_a_500() {
    let bot = Bot::new();
    for raw in [
        &b"{not json"[..],
        b"",
        b"\xff\xfe",
        b"[1, 2, 3]",
        br#"{"object": "whatsapp_business_account", "entry": 5}"#,
    ] {
        let (status, body) = bot.send(signed(raw, APP_SECRET)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{:?}: {body}",
            String::from_utf8_lossy(raw)
        );
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test(start_paused = true)]
async fn unknown_types_are_recorded_and_skipped_with_a_200() {
    let bot = Bot::new();
    let reaction = json!({"from": ADA, "id": "wamid.R1", "timestamp": "1767225600", "type": "reaction",
        "reaction": {"message_id": "wamid.out.1", "emoji": "👍"}});
    let future = json!({"from": ADA, "id": "wamid.F1", "timestamp": "1767225600", "type": "hologram",
        "hologram": {"depth": 3}});
    let mut body = notification(vec![
        change(ADA, vec![reaction, future]),
        json!({"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}),
    ]);
    let (status, applied) = bot.post(&body).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["messages"], 2, "{applied}");
    assert!(applied["skipped"].as_u64().unwrap() >= 1, "{applied}");
    settle().await;
    // Kept in the transcript, and no turn ran: they answer nothing.
    assert_eq!(bot.lines(ADA).await, ["in wamid.R1", "in wamid.F1"]);

    // The next text is the answer the flow takes.
    body = one_text(ADA, "wamid.T1", "hello");
    assert_eq!(bot.post(&body).await.0, StatusCode::OK);
    settle().await;
    let texts: Vec<String> = bot
        .transcript(ADA)
        .await
        .into_iter()
        .filter(|e| e.direction == Direction::Out)
        .map(|e| e.text)
        .collect();
    assert_eq!(texts, ["Say something", "You said hello", "Say something"]);
}

#[tokio::test(start_paused = true)]
async fn one_post_with_several_entries_changes_and_messages() {
    let bot = Bot::new();
    let (bob, cy) = ("15557654321", "15550009999");
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "WABA_ID", "changes": [
            change(ADA, vec![text(ADA, "wamid.A1", "one"), text(ADA, "wamid.A2", "two")]),
            change(bob, vec![text(bob, "wamid.B1", "bob here")]),
        ]},
        {"id": "WABA_ID", "changes": [change(cy, vec![text(cy, "wamid.C1", "cy here")])]}
    ]});
    let (status, applied) = bot.post(&body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(applied["messages"], 4, "{applied}");
    settle().await;
    assert_eq!(
        bot.applied(ADA).await,
        (
            vec!["wamid.A1".to_string(), "wamid.A2".to_string()],
            vec!["one".to_string(), "two".to_string()]
        )
    );
    assert_eq!(
        bot.lines(bob).await,
        [
            "in wamid.B1",
            "out Say something",
            "out You said bob here",
            "out Say something"
        ]
    );
    assert_eq!(
        bot.lines(cy).await,
        [
            "in wamid.C1",
            "out Say something",
            "out You said cy here",
            "out Say something"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_notification_is_applied_once() {
    let bot = Bot::new();
    let body = one_text(ADA, "wamid.A1", "hello");
    let (_, first) = bot.post(&body).await;
    settle().await;
    let (status, again) = bot.post(&body).await;
    settle().await;
    assert_eq!(
        (first["messages"].clone(), first["duplicates"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (again["messages"].clone(), again["duplicates"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        bot.lines(ADA).await,
        [
            "in wamid.A1",
            "out Say something",
            "out You said hello",
            "out Say something"
        ]
    );
    bot.deliver_all().await;
    assert_eq!(bot.channel.sent.lock().unwrap().len(), 3);
}

/// Meta redelivers for up to 7 days; chatflow remembers message ids for
/// `RuntimeOptions::seen_retention` (7 days by default), forgotten by
/// `Runtime::prune_seen`. A redelivery within the retention changes
/// nothing; one that comes after it (8 days later, ids pruned) is taken as
/// a new message: recorded again and answered again.
#[tokio::test(start_paused = true)]
async fn a_redelivery_after_the_retention_is_taken_as_new() {
    let bot = Bot::new();
    let body = one_text(ADA, "wamid.A1", "hello");
    assert_eq!(bot.post(&body).await.1["messages"], 1);
    settle().await;

    bot.clock.advance(Duration::from_secs(6 * 24 * 3600));
    bot.runtime.prune_seen(100).await.unwrap();
    assert_eq!(
        bot.post(&body).await.1["duplicates"],
        1,
        "6 days later: still a duplicate"
    );
    settle().await;
    assert_eq!(bot.lines(ADA).await.len(), 4);

    bot.clock.advance(Duration::from_secs(2 * 24 * 3600));
    assert!(bot.runtime.prune_seen(100).await.unwrap() >= 1);
    let (status, applied) = bot.post(&body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        applied["messages"], 1,
        "8 days later the id is forgotten: {applied}"
    );
    settle().await;
    assert_eq!(
        bot.lines(ADA).await,
        [
            "in wamid.A1",
            "out Say something",
            "out You said hello",
            "out Say something",
            "in wamid.A1",
            "out You said hello",
            "out Say something"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn statuses_are_recorded_on_the_entry_they_belong_to() {
    let bot = Bot::new();
    bot.post(&one_text(ADA, "wamid.A1", "hello")).await;
    settle().await;
    bot.deliver_all().await;
    let status = |id: &str, status: &str| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA_ID", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [{"id": id, "status": status, "timestamp": "1767225700", "recipient_id": ADA}]
        }}]}]})
    };
    // wamid.out.2 is the second reply ("You said hello"); a status for a
    // send not (yet) recorded is kept too; statuses are redelivered.
    for (id, name) in [
        ("wamid.out.2", "delivered"),
        ("wamid.unknown", "read"),
        ("wamid.out.2", "read"),
        ("wamid.out.2", "read"),
    ] {
        let (code, applied) = bot.post(&status(id, name)).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(applied["statuses"], 1, "{applied}");
    }
    let transcript = bot.transcript(ADA).await;
    let answered = transcript.iter().find(|e| e.text == "You said hello").unwrap();
    let delivery = answered.delivery.as_ref().unwrap();
    assert_eq!(delivery.channel_message_id.as_deref(), Some("wamid.out.2"));
    assert_eq!(delivery.receipt.as_ref().unwrap().status, ReceiptStatus::Read);
}

/// 1,000 notifications (100 customers × 10 messages), each customer's in
/// order but the customers interleaved, plus 100 of them sent again later,
/// out of order: every message is applied once, and every customer gets
/// the replies to their messages in order, each delivered once.
#[tokio::test(start_paused = true)]
async fn a_thousand_notifications_with_redeliveries_out_of_order() {
    const CUSTOMERS: usize = 100;
    const PER_CUSTOMER: usize = 10;
    let bot = Bot::new();
    let mut rng = fastrand::Rng::with_seed(16);
    let wa_id = |c: usize| format!("1555{c:07}");
    let message = |c: usize, m: usize| one_text(&wa_id(c), &format!("wamid.{c}.{m}"), &format!("m{m}"));

    // Interleave the customers at random, each one's messages in order.
    let mut next = vec![0usize; CUSTOMERS];
    let mut posts: Vec<(usize, usize)> = Vec::new();
    while posts.len() < CUSTOMERS * PER_CUSTOMER {
        let c = rng.usize(..CUSTOMERS);
        if next[c] < PER_CUSTOMER {
            posts.push((c, next[c]));
            next[c] += 1;
        }
    }
    // 10% sent again, each at a random later place.
    for _ in 0..CUSTOMERS * PER_CUSTOMER / 10 {
        let first = rng.usize(..posts.len());
        let again = posts[first];
        let at = rng.usize(first + 1..=posts.len());
        posts.insert(at, again);
    }

    let (mut applied, mut duplicates) = (0, 0);
    for (i, (c, m)) in posts.iter().enumerate() {
        let (status, body) = bot.post(&message(*c, *m)).await;
        assert_eq!(status, StatusCode::OK);
        applied += body["messages"].as_u64().unwrap();
        duplicates += body["duplicates"].as_u64().unwrap();
        if i % 97 == 0 {
            // Turns run while notifications keep coming.
            settle().await;
        }
    }
    settle().await;
    bot.deliver_all().await;
    assert_eq!(applied, (CUSTOMERS * PER_CUSTOMER) as u64);
    assert_eq!(duplicates, posts.len() as u64 - applied);

    let sent = bot.channel.sent.lock().unwrap().clone();
    let mut delivered: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (conversation, seq, text) in sent {
        delivered.entry(conversation).or_default().push((seq, text));
    }
    for c in 0..CUSTOMERS {
        let (ids, echoed) = bot.applied(&wa_id(c)).await;
        let expected_ids: Vec<String> = (0..PER_CUSTOMER).map(|m| format!("wamid.{c}.{m}")).collect();
        let expected_echoes: Vec<String> = (0..PER_CUSTOMER).map(|m| format!("m{m}")).collect();
        assert_eq!(
            ids, expected_ids,
            "customer {c}: each message recorded once, in order"
        );
        assert_eq!(
            echoed, expected_echoes,
            "customer {c}: each message answered once, in order"
        );
        // Every reply delivered once, in transcript order.
        let out: Vec<(u64, String)> = bot
            .transcript(&wa_id(c))
            .await
            .into_iter()
            .filter(|e| e.direction == Direction::Out)
            .map(|e| (e.seq, e.text))
            .collect();
        assert_eq!(delivered[&format!("whatsapp:{}", wa_id(c))], out, "customer {c}");
    }
}

/// Beside the server's routes (`ServerSettings::with_routes`, as the
/// `chatflow-server` binary mounts them), the webhook needs no bearer token
/// (Meta signs instead) while `/chat` and `/conversations` still do, and a
/// WhatsApp conversation's transcript is at `/conversations/whatsapp:<wa_id>`.
#[tokio::test(start_paused = true)]
async fn beside_the_server_routes_the_webhook_needs_no_bearer_token() {
    use chatflow::server::ServerSettings;
    let bot = Bot::new();
    let app = chatflow::server::router(
        bot.runtime.clone(),
        ServerSettings::new()
            .with_api_token("server-token")
            .with_routes(router(bot.runtime.clone(), settings())),
    );
    let bot = Bot { app, ..bot };
    let (status, applied) = bot.post(&one_text(ADA, "wamid.A1", "hello")).await;
    assert_eq!((status, applied["messages"].clone()), (StatusCode::OK, json!(1)));
    settle().await;
    let conversation = |token: Option<&str>| {
        let mut request = Request::get(format!("/conversations/whatsapp:{ADA}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    assert_eq!(bot.send(conversation(None)).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = bot.send(conversation(Some("server-token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["transcript"][0]["message_id"], "wamid.A1", "{body}");
    assert_eq!(body["transcript"][2]["text"], "You said hello", "{body}");
}

/// A [`MemoryStore`] whose message and receipt writes fail while `down`.
#[derive(Default)]
struct Flaky {
    inner: MemoryStore,
    down: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::LeaseLost("the database is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Flaky {
    async fn enqueue_message(
        &self,
        id: &str,
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.check()?;
        self.inner.enqueue_message(id, message, now).await
    }
    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        self.inner.acquire(id, owner, lease_until, now).await
    }
    async fn save(&self, id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        self.inner.save(id, owner, save).await
    }
    async fn save_and_read_replies(
        &self,
        id: &str,
        owner: &str,
        save: Save<'_>,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.inner.save_and_read_replies(id, owner, save, after_seq).await
    }
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release(id, owner).await
    }
    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn counts(&self, now: SystemTime) -> Result<ConversationCounts, StoreError> {
        self.inner.counts(now).await
    }
    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_wake().await
    }
    async fn load(&self, id: &str) -> Result<Option<chatflow::Conversation>, StoreError> {
        self.inner.load(id).await
    }
    async fn transcript(&self, id: &str, after_seq: u64) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.inner.transcript(id, after_seq).await
    }
    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDeliveries>, StoreError> {
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
        self.inner.record_delivery(id, owner, seq, record, now).await
    }
    async fn release_deliveries(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_deliveries(id, owner).await
    }
    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_delivery_after(after).await
    }
    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &chatflow::channel::Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        self.check()?;
        self.inner.record_receipt(channel_message_id, receipt).await
    }
    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_seen(before, limit).await
    }
}

/// A store that fails is a 500, so that Meta sends the notification again;
/// once the store is back, the redelivery is applied (once).
#[tokio::test(start_paused = true)]
async fn a_store_error_is_a_500_and_the_redelivery_is_applied() {
    let store = Arc::new(Flaky::default());
    let engine = Engine::builder(Flow::from_json(ECHO_FLOW).unwrap())
        .shared_clock(Arc::new(VirtualClock::new()))
        .build()
        .unwrap();
    let runtime = Runtime::builder(engine, store.clone())
        .channel("whatsapp", Arc::new(Recorder::default()))
        .build();
    let bot = Bot {
        app: router(runtime.clone(), settings()),
        runtime,
        channel: Arc::new(Recorder::default()),
        clock: Arc::new(VirtualClock::new()),
    };
    let body = one_text(ADA, "wamid.A1", "hello");
    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, answer) = bot.post(&body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert!(
        !answer.to_string().contains("down"),
        "no store detail leaks: {answer}"
    );
    store.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, answer) = bot.post(&body).await;
    assert_eq!((status, answer["messages"].clone()), (StatusCode::OK, json!(1)));
    settle().await;
    assert_eq!(
        bot.lines(ADA).await[..3],
        ["in wamid.A1", "out Say something", "out You said hello"]
    );
}

/// Meta's notifications stay under 3 MB; a body over the 4 MiB limit is
/// refused before its signature is even computed.
#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_a_413() {
    let bot = Bot::new();
    let mut body = one_text(ADA, "wamid.BIG", "hello");
    body["padding"] = json!("x".repeat(4 * 1024 * 1024));
    let (status, _) = bot.post(&body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    settle().await;
    assert!(bot.transcript(ADA).await.is_empty());
}
