//! How late sleeping conversations resume: N conversations (100,000 by
//! default) sleep in a Delay, with wake-ups spread evenly over a window,
//! and `Runtime::run_scheduler` resumes them on the real clock. For each
//! resume it measures the lateness
//!
//! - of the turn's start: when the scheduler's runner took the
//!   conversation's lease, minus its wake-up time (µs precision);
//! - of the reply: the transcript time of the message after the Delay,
//!   minus the wake-up time (the store keeps milliseconds, so this figure
//!   is up to 1 ms low),
//!
//! and prints count, mean, p50, p99 and max. Targets: p99 ≤ 10 ms in one
//! process on SQLite, ≤ 50 ms across two processes on Postgres.
//!
//! Cases:
//!
//! - SQLite, a WAL file, one process;
//! - Postgres, two processes sharing one database (this binary runs itself
//!   again as the second process), when `CHATFLOW_TEST_POSTGRES_URL` is
//!   set; a fresh schema, dropped afterwards.
//!
//! The sleepers are written through the `Store` API before the window
//! opens. The wake-up times are fixed while filling, before it is known how
//! long filling takes, so the runtimes' clock is the system clock shifted by
//! a constant: real timers, real sleeps, the window starting two seconds
//! after the fill ended.
//!
//! ```text
//! cargo bench --bench wakeups                 # 100,000 sleepers over 100 s
//! cargo bench --bench wakeups -- 10000 10     # 10,000 sleepers over 10 s
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it runs 200 sleepers over
//! one second on SQLite, to check that it works.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chatflow::store::{
    Claim, ConversationCounts, PostgresStore, Save, SqliteStore, Store, StoreError, TranscriptEntry,
};
use chatflow::{Clock, Conversation, Engine, Flow, Runtime, RuntimeOptions, Status, VirtualClock};
use tokio::io::AsyncReadExt;

/// Delay → Message → Question: a resume runs two local steps and one save.
const FLOW: &str = r#"{"name": "wakeups", "steps": [
  {"type": "delay", "name": "Wait", "seconds": 60},
  {"type": "message", "name": "Back", "text": "back"},
  {"type": "question", "name": "Ask", "text": "anything else?"}
]}"#;
const DELAY: Duration = Duration::from_secs(60);

/// How the second process learns its part.
const CHILD_ENV: &str = "CHATFLOW_WAKEUPS_CHILD";

#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Sleepers.
    n: u64,
    /// The first wake-up, Unix ms (shifted clock).
    first_ms: u64,
    /// Wake-ups are spread evenly over this many ms.
    window_ms: u64,
}

impl Plan {
    fn wake_ms(&self, i: u64) -> u64 {
        self.first_ms + i * self.window_ms / self.n.max(1)
    }

    fn id(i: u64) -> String {
        format!("sleeper-{i:06}")
    }

    fn index(id: &str) -> Option<u64> {
        id.strip_prefix("sleeper-")?.parse().ok()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let measuring = args.iter().any(|a| a == "--bench");
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (n, window_s) = if measuring {
        (
            numbers.first().copied().unwrap_or(100_000).max(1),
            numbers.get(1).copied().unwrap_or(100).max(1),
        )
    } else {
        (200, 1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Ok(child) = std::env::var(CHILD_ENV) {
        runtime.block_on(child_main(&child));
        return;
    }
    runtime.block_on(async {
        sqlite_case(n, window_s * 1000).await;
        if !measuring {
            return;
        }
        match std::env::var("CHATFLOW_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => postgres_case(&url, n, window_s * 1000).await,
            _ => println!("postgres, two processes: skipped (set CHATFLOW_TEST_POSTGRES_URL=postgres://…)"),
        }
    });
}

/// The system clock shifted by a constant (see the module docs).
#[derive(Debug, Clone, Copy)]
struct Shifted {
    /// Added to the system time, in ms (may be negative).
    offset_ms: i64,
}

impl Shifted {
    fn at(&self, real: SystemTime) -> SystemTime {
        if self.offset_ms >= 0 {
            real + Duration::from_millis(self.offset_ms.unsigned_abs())
        } else {
            real - Duration::from_millis(self.offset_ms.unsigned_abs())
        }
    }
}

#[async_trait]
impl Clock for Shifted {
    fn now(&self) -> SystemTime {
        self.at(SystemTime::now())
    }

    async fn sleep_until(&self, deadline: SystemTime) {
        if let Ok(wait) = deadline.duration_since(self.now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A store that records, for every resume, how late its turn started: the
/// first lease taken on a conversation whose Delay has ended.
struct Timed {
    inner: Arc<dyn Store>,
    clock: Shifted,
    late_us: Mutex<Vec<i64>>,
}

#[async_trait]
impl Store for Timed {
    async fn enqueue(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.enqueue(conversation_id, message_id, text, now).await
    }

    async fn acquire(
        &self,
        conversation_id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        let claim = self
            .inner
            .acquire(conversation_id, owner, lease_until, now)
            .await?;
        if let Some(Claim {
            conversation: Some(c),
            ..
        }) = &claim
            && let Status::Sleeping { until } = c.status()
        {
            let late = unix_us(self.clock.now()) - unix_us(*until);
            self.late_us.lock().unwrap_or_else(|e| e.into_inner()).push(late);
        }
        Ok(claim)
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        self.inner.save(conversation_id, owner, save).await
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release(conversation_id, owner).await
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

    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        self.inner.load(conversation_id).await
    }

    async fn transcript(
        &self,
        conversation_id: &str,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.inner.transcript(conversation_id, after_seq).await
    }
}

fn flow() -> Flow {
    Flow::from_json(FLOW).expect("the bench flow loads")
}

/// Puts sleepers `from..to` (every `step`-th) to sleep through the `Store`
/// API: the state a turn leaves at the Delay, its wake-up, no lease.
async fn fill(store: Arc<dyn Store>, plan: Plan, from: u64, to: u64, step: u64) {
    let base = SystemTime::UNIX_EPOCH + Duration::from_millis(plan.first_ms) - DELAY;
    let clock = Arc::new(VirtualClock::starting_at(base));
    let engine = Engine::builder(flow())
        .shared_clock(clock.clone())
        .build()
        .expect("the bench engine builds");
    let mut at = base;
    let mut i = from;
    while i < to {
        let target = SystemTime::UNIX_EPOCH + Duration::from_millis(plan.wake_ms(i)) - DELAY;
        clock.advance(target.duration_since(at).unwrap_or_default());
        at = target;
        let id = Plan::id(i);
        let mut conversation = engine.start(id.clone());
        let status = engine
            .run_until_parked(&mut conversation, &chatflow::EventLog::new())
            .await
            .expect("the bench flow runs");
        let Status::Sleeping { until } = status else {
            panic!("expected a Delay, got {status:?}")
        };
        let now = clock.now();
        store
            .acquire(&id, "filler", now + Duration::from_secs(60), now)
            .await
            .expect("acquire")
            .expect("free");
        store
            .save(
                &id,
                "filler",
                Save {
                    conversation: &conversation,
                    consumed_up_to: 0,
                    outgoing: &[],
                    wake_at: Some(until),
                    lease_until: now,
                    now,
                },
            )
            .await
            .expect("save");
        i += step;
    }
}

/// Fills with `tasks` writers; returns how long it took.
async fn fill_all(store: Arc<dyn Store>, plan: Plan, tasks: u64) -> Duration {
    let started = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for k in 0..tasks {
        set.spawn(fill(store.clone(), plan, k, plan.n, tasks));
    }
    while let Some(done) = set.join_next().await {
        done.expect("a fill task");
    }
    started.elapsed()
}

/// The shift that opens the window two seconds from now.
fn shift_for(plan: Plan) -> Shifted {
    let open = unix_ms(SystemTime::now()) as i64 + 2000;
    Shifted {
        offset_ms: plan.first_ms as i64 - open,
    }
}

/// Runs a scheduler on `store` until no conversation has a wake-up left
/// (or a deadline passes); returns the turns' start lateness, in µs.
async fn resume_all(store: Arc<dyn Store>, clock: Shifted, plan: Plan) -> Vec<i64> {
    let timed = Arc::new(Timed {
        inner: store,
        clock,
        late_us: Mutex::default(),
    });
    let engine = Engine::builder(flow())
        .clock(clock)
        .build()
        .expect("the bench engine builds");
    let runtime = Runtime::with_options(engine, timed.clone(), RuntimeOptions::default());
    let end = SystemTime::UNIX_EPOCH + Duration::from_millis(plan.first_ms + plan.window_ms);
    let deadline = end + Duration::from_secs(60);
    let store = timed.clone();
    let done = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = clock.now();
            if now > deadline {
                eprintln!("deadline passed with wake-ups left");
                return;
            }
            if now > end && matches!(store.next_wake().await, Ok(None)) {
                return;
            }
        }
    };
    runtime.run_scheduler(done).await;
    let late = std::mem::take(&mut *timed.late_us.lock().unwrap_or_else(|e| e.into_inner()));
    late
}

/// Reply lateness from the transcripts, in µs (ms precision).
fn reply_lateness(plan: Plan, rows: Vec<(String, i64)>) -> Vec<i64> {
    rows.into_iter()
        .filter_map(|(id, at_ms)| {
            let i = Plan::index(&id)?;
            Some((at_ms - plan.wake_ms(i) as i64) * 1000)
        })
        .collect()
}

fn report(case: &str, what: &str, mut samples: Vec<i64>) {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        println!("{case}: {what}: no samples");
        return;
    }
    let ms = |us: i64| us as f64 / 1000.0;
    let mean = samples.iter().map(|&s| s as f64).sum::<f64>() / n as f64 / 1000.0;
    let pct = |p: f64| samples[((n as f64 * p).ceil() as usize).clamp(1, n) - 1];
    println!(
        "{case}: {what}: count {n}, mean {mean:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(samples[n - 1]),
    );
}

fn plan_for(n: u64, window_ms: u64) -> Plan {
    Plan {
        n,
        // Any fixed origin: the clock is shifted onto it.
        first_ms: 1_900_000_000_000,
        window_ms,
    }
}

async fn sqlite_case(n: u64, window_ms: u64) {
    let case = format!("sqlite, one process, {n} sleepers over {} s", window_ms / 1000);
    let path = std::env::temp_dir().join(format!("chatflow-wakeups-{}.db", std::process::id()));
    let sqlite = SqliteStore::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("the SQLite file opens");
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let plan = plan_for(n, window_ms);
    let filled = fill_all(store.clone(), plan, 1).await;
    println!("{case}: filled in {:.1} s", filled.as_secs_f64());
    let clock = shift_for(plan);
    let starts = resume_all(store, clock, plan).await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT conversation_id, at_ms FROM transcript WHERE text = 'back'")
            .fetch_all(sqlite.pool())
            .await
            .expect("transcript rows");
    check_once(&case, n, &rows);
    report(&case, "turn start", starts);
    report(&case, "reply", reply_lateness(plan, rows));
    sqlite.pool().close().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// Each sleeper answered exactly once.
fn check_once(case: &str, n: u64, rows: &[(String, i64)]) {
    let distinct: std::collections::HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(rows.len() as u64, n, "{case}: replies after the Delay");
    assert_eq!(distinct.len() as u64, n, "{case}: conversations answered");
}

async fn postgres_case(url: &str, n: u64, window_ms: u64) {
    let case = format!("postgres, two processes, {n} sleepers over {} s", window_ms / 1000);
    let schema = format!("chatflow_wakeups_{}", std::process::id());
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("cannot connect to CHATFLOW_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    let schema_url = format!("{url}{separator}options[search_path]={schema}");
    let postgres = PostgresStore::connect(&schema_url).await.expect("Postgres connects");
    let store: Arc<dyn Store> = Arc::new(postgres.clone());
    let plan = plan_for(n, window_ms);
    let filled = fill_all(store.clone(), plan, 8).await;
    println!("{case}: filled in {:.1} s", filled.as_secs_f64());
    let clock = shift_for(plan);

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("this binary"))
        .env(
            CHILD_ENV,
            format!(
                "{} {} {} {} {}",
                plan.n, plan.first_ms, plan.window_ms, clock.offset_ms, schema_url
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("the second process starts");
    let mut child_out = child.stdout.take().expect("piped stdout");
    let reader = tokio::spawn(async move {
        let mut out = String::new();
        child_out.read_to_string(&mut out).await.map(|_| out)
    });
    let mine = resume_all(store, clock, plan).await;
    let status = child.wait().await.expect("the second process ends");
    assert!(status.success(), "the second process failed: {status}");
    let theirs: Vec<i64> = reader
        .await
        .expect("reader")
        .expect("the second process's output")
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    println!("{case}: resumed by this process {}, by the other {}", mine.len(), theirs.len());
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT conversation_id, at_ms FROM transcript WHERE text = 'back'")
            .fetch_all(postgres.pool())
            .await
            .expect("transcript rows");
    check_once(&case, n, &rows);
    let mut starts = mine;
    starts.extend(theirs);
    report(&case, "turn start", starts);
    report(&case, "reply", reply_lateness(plan, rows));
    postgres.pool().close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
}

/// The second process: a scheduler on the shared database; prints its
/// turns' start lateness (µs), one per line.
async fn child_main(spec: &str) {
    let mut parts = spec.splitn(5, ' ');
    let mut number = || -> i64 {
        parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("a number in the child spec")
    };
    let plan = Plan {
        n: number() as u64,
        first_ms: number() as u64,
        window_ms: number() as u64,
    };
    let clock = Shifted { offset_ms: number() };
    let url = parts.next().expect("a URL in the child spec");
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(url).await.expect("Postgres connects"));
    let late = resume_all(store, clock, plan).await;
    let mut out = String::with_capacity(late.len() * 8);
    for l in late {
        out.push_str(&l.to_string());
        out.push('\n');
    }
    print!("{out}");
}
