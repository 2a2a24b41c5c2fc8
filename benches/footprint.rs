//! What parked conversations cost in memory: N conversations (100,000 by
//! default) of the guide's flow (`flows/openai_assistant.json`) parked at
//! its "Answer" question in a `MemoryStore`, each brought there by one
//! `Runtime::handle_message` against an in-process stand-in for the
//! Assistants API that answers from memory with OpenAI's JSON shapes.
//!
//! ```text
//! cargo bench --bench footprint            # 100,000 conversations
//! cargo bench --bench footprint -- 20000   # or FOOTPRINT_N=20000
//! ```
//!
//! It reports the resident set size (`VmRSS`) before and after, per
//! conversation; the live heap bytes per conversation (counted by this
//! binary's global allocator, so the figure does not depend on how the
//! allocator returns memory); allocations per turn; and the serialized size
//! (serde_json) of one parked state, with and without the texts it holds
//! (the user's message, stored twice, and the assistant's answer).
//! Without `--bench` (as `cargo test --benches` runs it) it parks 500
//! conversations and checks them, as a smoke test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse, Method};
use chatflow::store::{Claim, ConversationCounts, MemoryStore, Save, Store, StoreError, TranscriptEntry};
use chatflow::{Engine, Flow, Runtime, Status};

/// Counts allocations and live heap bytes.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
/// Allocations made by the HTTP stand-in while answering.
static STAND_IN_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Allocations made inside the store's methods.
static STORE_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Calls to the store: the counting wrapper costs one allocation each.
static STORE_CALLS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// updates two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BASE_URL: &str = "http://openai.test/v1";

/// The user's first message, 40 to 100 characters.
fn user_text(n: u64) -> String {
    const OPENERS: [&str; 4] = [
        "Hi, where is my order #{}? It should have arrived last week.",
        "Hello! I was charged twice for order {} and would like a refund for the second charge, please.",
        "Can I change the delivery address of order {}?",
        "My parcel {} arrived damaged: the box was crushed and the mug inside is broken.",
    ];
    OPENERS[(n % 4) as usize].replace("{}", &(100_000 + n).to_string())
}

/// The assistant's answer, about 200 characters.
fn answer_text(n: u64) -> String {
    format!(
        "Thanks for reaching out about order {}. I checked our records: it left our warehouse two days \
         ago and should arrive within three business days. You can follow it with the tracking link in \
         your confirmation email.",
        100_000 + n
    )
}

/// The Assistants API endpoints the guide's flow calls, answered from
/// memory: a thread, a user message, a run, and the run's answer already
/// listed (so each turn makes exactly four calls and no Delay).
struct Assistants {
    threads: AtomicU64,
}

impl Assistants {
    fn answer(&self, request: &HttpRequest) -> Result<HttpResponse, String> {
        let path = request
            .url()
            .strip_prefix(BASE_URL)
            .ok_or_else(|| format!("unexpected URL {}", request.url()))?;
        let (path, _query) = path.split_once('?').unwrap_or((path, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let body = match (request.method(), parts.as_slice()) {
            (Method::Post, ["", "threads"]) => {
                let n = self.threads.fetch_add(1, Ordering::Relaxed);
                format!(
                    r#"{{"id":"thread_{n:024}","object":"thread","created_at":1764000000,"metadata":{{}},"tool_resources":{{}}}}"#
                )
            }
            (Method::Post, ["", "threads", thread, "messages"]) => {
                let content = request
                    .body()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|b| b.get("content").cloned())
                    .unwrap_or_default();
                format!(
                    r#"{{"id":"msg_{thread}u","object":"thread.message","created_at":1764000001,"assistant_id":null,"thread_id":"{thread}","run_id":null,"role":"user","content":[{{"type":"text","text":{{"value":{content},"annotations":[]}}}}],"attachments":[],"metadata":{{}}}}"#
                )
            }
            (Method::Post, ["", "threads", thread, "runs"]) => format!(
                r#"{{"id":"run_{thread}","object":"thread.run","created_at":1764000002,"assistant_id":"asst_footprint","thread_id":"{thread}","status":"queued","started_at":null,"expires_at":1764000602,"cancelled_at":null,"failed_at":null,"completed_at":null,"required_action":null,"last_error":null,"model":"gpt-4o-mini","instructions":"You are Acme's support assistant.","tools":[],"metadata":{{}},"usage":null,"temperature":1.0,"top_p":1.0,"max_prompt_tokens":null,"max_completion_tokens":null,"truncation_strategy":{{"type":"auto","last_messages":null}},"response_format":"auto","tool_choice":"auto","parallel_tool_calls":true}}"#
            ),
            (Method::Get, ["", "threads", thread, "messages"]) => {
                let n: u64 = thread
                    .strip_prefix("thread_")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("unknown thread {thread}"))?;
                let answer = serde_json::to_string(&answer_text(n)).map_err(|e| e.to_string())?;
                format!(
                    r#"{{"object":"list","data":[{{"id":"msg_{thread}a","object":"thread.message","created_at":1764000004,"assistant_id":"asst_footprint","thread_id":"{thread}","run_id":"run_{thread}","role":"assistant","content":[{{"type":"text","text":{{"value":{answer},"annotations":[]}}}}],"attachments":[],"metadata":{{}}}}],"first_id":"msg_{thread}a","last_id":"msg_{thread}a","has_more":false}}"#
                )
            }
            _ => return Err(format!("unexpected call {} {}", request.method(), request.url())),
        };
        Ok(HttpResponse::new(200, body).with_header("content-type", "application/json"))
    }
}

#[async_trait]
impl HttpClient for Assistants {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        // The stand-in's own work is not the engine's: count it apart (the
        // bench runs on one thread, so nothing else allocates meanwhile).
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let response = self.answer(request).map_err(HttpError::InvalidRequest);
        STAND_IN_ALLOCATIONS.fetch_add(ALLOCATIONS.load(Ordering::Relaxed) - before, Ordering::Relaxed);
        response
    }
}

/// A `MemoryStore` that counts the allocations made inside its methods
/// (the future each call returns is allocated by the caller, outside).
struct CountedStore(MemoryStore);

async fn counted<T>(call: impl std::future::Future<Output = T>) -> T {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let out = call.await;
    STORE_CALLS.fetch_add(1, Ordering::Relaxed);
    STORE_ALLOCATIONS.fetch_add(ALLOCATIONS.load(Ordering::Relaxed) - before, Ordering::Relaxed);
    out
}

#[async_trait]
impl Store for CountedStore {
    async fn enqueue_message(
        &self,
        conversation_id: &str,
        message: chatflow::store::InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        counted(self.0.enqueue_message(conversation_id, message, now)).await
    }

    async fn acquire(
        &self,
        conversation_id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        counted(self.0.acquire(conversation_id, owner, lease_until, now)).await
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        counted(self.0.save(conversation_id, owner, save)).await
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        counted(self.0.release(conversation_id, owner)).await
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        counted(self.0.due(now, limit)).await
    }

    async fn counts(&self, now: SystemTime) -> Result<ConversationCounts, StoreError> {
        counted(self.0.counts(now)).await
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        counted(self.0.next_wake()).await
    }

    async fn load(&self, conversation_id: &str) -> Result<Option<chatflow::Conversation>, StoreError> {
        counted(self.0.load(conversation_id)).await
    }

    async fn transcript(
        &self,
        conversation_id: &str,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        counted(self.0.transcript(conversation_id, after_seq)).await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<chatflow::store::PendingDeliveries>, StoreError> {
        counted(self.0.claim_deliveries(owner, lease_until, now, limit)).await
    }

    async fn record_delivery(
        &self,
        conversation_id: &str,
        owner: &str,
        seq: u64,
        record: chatflow::store::DeliveryRecord<'_>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        counted(self.0.record_delivery(conversation_id, owner, seq, record, now)).await
    }

    async fn release_deliveries(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        counted(self.0.release_deliveries(conversation_id, owner)).await
    }

    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        counted(self.0.next_delivery_after(after)).await
    }

    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &chatflow::channel::Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        counted(self.0.record_receipt(channel_message_id, receipt)).await
    }

    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        counted(self.0.prune_seen(before, limit)).await
    }
}

/// The resident set size, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let measuring = args.iter().any(|a| a == "--bench");
    let n: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("FOOTPRINT_N").ok()?.parse().ok())
        .unwrap_or(if measuring { 100_000 } else { 500 });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(park(n));
}

async fn park(n: u64) {
    let flow = Flow::from_path(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/flows/openai_assistant.json"
    ))
    .expect("the guide's flow loads");
    let engine = Engine::builder(flow)
        .http_client(Assistants {
            threads: AtomicU64::new(0),
        })
        .var("openai_base_url", BASE_URL)
        .var("assistant_id", "asst_footprint")
        .secret("OPENAI_API_KEY", "sk-footprint-0123456789abcdef")
        .build()
        .expect("the engine builds");
    let store = Arc::new(CountedStore(MemoryStore::new()));
    let runtime = Runtime::new(engine, store.clone());
    let id = |i: u64| format!("conversation-{i:08}");

    // One turn first, so lazily built statics are not counted per conversation.
    let warm = runtime
        .handle_message("warm-up", Some("m-0"), &user_text(0))
        .await
        .expect("the warm-up turn runs");
    assert_eq!(warm.status, Status::AwaitingReply, "{warm:?}");

    let (rss_before, live_before) = (rss(), live_bytes());
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let stand_in_before = STAND_IN_ALLOCATIONS.load(Ordering::Relaxed);
    let store_before = STORE_ALLOCATIONS.load(Ordering::Relaxed);
    let calls_before = STORE_CALLS.load(Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..n {
        let turn = runtime
            .handle_message(&id(i), Some("m-1"), &user_text(i))
            .await
            .expect("the turn runs");
        assert_eq!(turn.status, Status::AwaitingReply, "{turn:?}");
        assert_eq!(turn.replies.len(), 2, "the welcome and the answer: {turn:?}");
    }
    let elapsed = started.elapsed();
    let stand_in = STAND_IN_ALLOCATIONS.load(Ordering::Relaxed) - stand_in_before;
    let in_store = STORE_ALLOCATIONS.load(Ordering::Relaxed) - store_before;
    let wrapper = STORE_CALLS.load(Ordering::Relaxed) - calls_before;
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before - stand_in - wrapper;
    let (rss_after, live_after) = (rss(), live_bytes());

    // One parked state, as a SQL store would keep it.
    let last = n.saturating_sub(1);
    let parked = store_state(&runtime, &id(last)).await;
    if std::env::var_os("FOOTPRINT_SHOW").is_some() {
        println!("{parked}");
    }
    let conversation: chatflow::Conversation = serde_json::from_str(&parked).expect("the state deserializes");
    assert_eq!(conversation.current_step(), Some("Answer"));
    let answer = conversation
        .step_result("Get generated GPT response")
        .and_then(|r| r.pointer("/response/data/0/content/0/text/value"))
        .and_then(|v| v.as_str())
        .expect("the parked state holds the answer")
        .to_string();
    let texts: usize = [user_text(last), answer]
        .iter()
        .map(|text| {
            let escaped = serde_json::to_string(text).expect("a string serializes");
            let inner = &escaped[1..escaped.len() - 1];
            parked.matches(inner).count() * inner.len()
        })
        .sum();
    let breakdown = Breakdown::of(&conversation);

    let per = |bytes: f64| bytes / n as f64;
    println!("footprint: {n} conversations parked at \"Answer\" in a MemoryStore");
    println!(
        "  turns: {:.1} s, {:.1} µs per turn; {:.0} allocations per turn ({:.0} in the store's methods, \
         {:.0} in the runtime and engine), besides the stand-in's {:.0}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / n as f64,
        allocations as f64 / n as f64,
        in_store as f64 / n as f64,
        (allocations - in_store) as f64 / n as f64,
        stand_in as f64 / n as f64
    );
    println!(
        "  resident: {} before, {} after: {} for the conversations, {:.0} bytes each",
        mib(rss_before as f64),
        mib(rss_after as f64),
        mib(rss_after as f64 - rss_before as f64),
        per(rss_after as f64 - rss_before as f64)
    );
    println!(
        "  live heap: {} for the conversations, {:.0} bytes each",
        mib((live_after - live_before) as f64),
        per((live_after - live_before) as f64)
    );
    println!(
        "  serialized state: {} bytes, of which {} bytes are the texts it holds: {} bytes without them",
        parked.len(),
        texts,
        parked.len() - texts
    );
    println!(
        "  one parked state: {:.0} heap bytes as the store keeps it (its maps as JSON text); {:.0} once read \
         ({} JSON objects, each a B-tree node of {} bytes); JSON round trip {:.1} µs",
        breakdown.parked_bytes,
        breakdown.value_bytes,
        breakdown.objects,
        LEAF_NODE_BYTES,
        breakdown.round_trip_us
    );
    println!(
        "  the rest of a conversation's bytes (store record, transcript, message id, maps): {:.0}",
        per((live_after - live_before) as f64) - breakdown.parked_bytes
    );
    if n >= 100_000 {
        let per_100k = (rss_after as f64 - rss_before as f64) * 100_000.0 / n as f64;
        println!("  per 100,000 conversations: {} resident", mib(per_100k));
    }
    drop(runtime);
    drop(store);
}

/// The serialized state of a parked conversation.
async fn store_state(runtime: &Runtime, id: &str) -> String {
    let conversation = runtime
        .store()
        .load(id)
        .await
        .expect("the store answers")
        .expect("the conversation is stored");
    serde_json::to_string(&conversation).expect("the state serializes")
}

/// Bytes of a `BTreeMap<String, Value>` leaf node: 11 keys of 24 bytes, 11
/// values of 32 bytes, a parent pointer, its index and the length.
const LEAF_NODE_BYTES: usize = 11 * 24 + 11 * 32 + 8 + 2 + 2 + 4;

/// What one parked state costs in memory, as a value and as JSON text.
struct Breakdown {
    /// Heap bytes of a copy, as the store keeps it.
    parked_bytes: f64,
    /// Heap bytes of a copy once read (its maps parsed into values).
    value_bytes: f64,
    objects: usize,
    round_trip_us: f64,
}

impl Breakdown {
    fn of(conversation: &chatflow::Conversation) -> Breakdown {
        const COPIES: usize = 1000;
        let inline = std::mem::size_of::<chatflow::Conversation>() as f64;
        let live = live_bytes();
        let copies: Vec<chatflow::Conversation> = (0..COPIES).map(|_| conversation.clone()).collect();
        let parked_bytes = (live_bytes() - live) as f64 / COPIES as f64 - inline;
        // Reading the contact and a step result parses the copies' maps.
        let live = live_bytes();
        for copy in &copies {
            std::hint::black_box((copy.contact().len(), copy.step_result("Welcome")));
        }
        let value_bytes = parked_bytes + (live_bytes() - live) as f64 / COPIES as f64;
        drop(copies);
        let started = Instant::now();
        for _ in 0..COPIES {
            let text = serde_json::to_string(std::hint::black_box(conversation)).expect("serializes");
            let back: chatflow::Conversation = serde_json::from_str(&text).expect("parses");
            std::hint::black_box(back);
        }
        let round_trip_us = started.elapsed().as_secs_f64() * 1e6 / COPIES as f64;
        let objects = conversation.contact().values().map(objects).sum::<usize>()
            + usize::from(!conversation.contact().is_empty())
            + 1
            + [
                "Get generated GPT response",
                "Run assistant",
                "Send message",
                "Start GPT thread",
                "Welcome",
            ]
            .iter()
            .filter_map(|s| conversation.step_result(s))
            .map(objects)
            .sum::<usize>();
        Breakdown {
            parked_bytes,
            value_bytes,
            objects,
            round_trip_us,
        }
    }
}

/// JSON objects in a value.
fn objects(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => 1 + map.values().map(objects).sum::<usize>(),
        serde_json::Value::Array(items) => items.iter().map(objects).sum(),
        _ => 0,
    }
}
