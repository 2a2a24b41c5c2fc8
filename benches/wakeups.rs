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
//! The sleepers' states are made by the engine and written in one
//! transaction before the window opens. The wake-up times are fixed while filling, before it is known how
//! long filling takes, so the runtimes' clock is the system clock shifted by
//! a constant: real timers, real sleeps, the window starting two seconds
//! after the fill ended.
//!
//! Arguments: sleepers (default 100,000), the window in seconds (default
//! 1000: 100 wake-ups a second), and how many seconds of it to run
//! (default 60):
//!
//! ```text
//! cargo bench --bench wakeups                     # 100,000 sleepers, 100/s, 60 s
//! cargo bench --bench wakeups -- 10000 20 20      # 10,000 sleepers, 500/s, all
//! ```
//!
//! `CHATFLOW_WAKEUPS_BATCH` sets `RuntimeOptions::scheduler_batch` (how
//! many turns run at once; default 64).
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
    /// The schedulers stop this many ms after the first wake-up.
    measure_ms: u64,
}

impl Plan {
    fn wake_ms(&self, i: u64) -> u64 {
        self.first_ms + i * self.window_ms / self.n.max(1)
    }

    /// When the schedulers stop.
    fn stop(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.first_ms + self.measure_ms)
    }

    /// Sleepers that must have been resumed by the stop (a second's margin).
    fn must_resume(&self) -> u64 {
        (0..self.n)
            .take_while(|&i| self.wake_ms(i) + 1000 <= self.first_ms + self.measure_ms)
            .count() as u64
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
    let plan = if measuring {
        let n = numbers.first().copied().unwrap_or(100_000).max(1);
        let window_s = numbers.get(1).copied().unwrap_or(1000).max(1);
        let measure_s = numbers.get(2).copied().unwrap_or(60).clamp(1, window_s);
        plan_for(n, window_s * 1000, measure_s * 1000)
    } else {
        plan_for(200, 1000, 1000)
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
        sqlite_case(plan).await;
        if !measuring {
            return;
        }
        match std::env::var("CHATFLOW_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => postgres_case(&url, plan).await,
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
    async fn enqueue_message(
        &self,
        conversation_id: &str,
        message: chatflow::store::InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.enqueue_message(conversation_id, message, now).await
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

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_wake_after(after).await
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
        conversation_id: &str,
        owner: &str,
        seq: u64,
        record: chatflow::store::DeliveryRecord<'_>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner
            .record_delivery(conversation_id, owner, seq, record, now)
            .await
    }

    async fn release_deliveries(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_deliveries(conversation_id, owner).await
    }

    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_delivery_after(after).await
    }

    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &chatflow::channel::Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.record_receipt(channel_message_id, receipt).await
    }

    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_seen(before, limit).await
    }
}

fn flow() -> Flow {
    Flow::from_json(FLOW).expect("the bench flow loads")
}

/// The sleepers' rows: id, the state a turn leaves at the Delay (made by
/// the engine on a virtual clock set so that the Delay ends at the planned
/// wake-up), and the wake-up in ms.
async fn sleepers(plan: Plan) -> Vec<(String, String, i64)> {
    let base = SystemTime::UNIX_EPOCH + Duration::from_millis(plan.first_ms) - DELAY;
    let clock = Arc::new(VirtualClock::starting_at(base));
    let engine = Engine::builder(flow())
        .shared_clock(clock.clone())
        .build()
        .expect("the bench engine builds");
    let mut at = base;
    let mut rows = Vec::with_capacity(plan.n as usize);
    for i in 0..plan.n {
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
        let state = serde_json::to_string(&conversation).expect("state serializes");
        rows.push((id, state, unix_ms(until) as i64));
    }
    rows
}

/// Rows per INSERT.
const CHUNK: usize = 1000;
const INSERT: &str = "INSERT INTO conversations (id, state, wake_at_ms) ";

/// Writes the sleepers in one transaction, from a connection of the
/// bench's own beside the store's (the `Store` API writes one conversation
/// per transaction, minutes for 100,000 on SQLite); returns how long it took.
fn fill_sqlite(conn: &mut rusqlite::Connection, rows: Vec<(String, String, i64)>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(&format!("{INSERT} VALUES (?1, ?2, ?3)"))?;
        for (id, state, wake) in &rows {
            insert.execute(rusqlite::params![id, state, wake])?;
        }
    }
    tx.commit()
}

/// As [`fill_sqlite`], on Postgres.
async fn fill_postgres(pool: &sqlx::PgPool, plan: Plan) -> Duration {
    let started = std::time::Instant::now();
    let rows = sleepers(plan).await;
    let mut tx = pool.begin().await.expect("begin");
    for chunk in rows.chunks(CHUNK) {
        sqlx::QueryBuilder::<sqlx::Postgres>::new(INSERT)
            .push_values(chunk, |mut b, (id, state, wake)| {
                b.push_bind(id).push_bind(state).push_bind(wake);
            })
            .build()
            .execute(&mut *tx)
            .await
            .expect("insert sleepers");
    }
    tx.commit().await.expect("commit");
    sqlx::query("ANALYZE conversations")
        .execute(pool)
        .await
        .expect("analyze");
    started.elapsed()
}

/// The shift that opens the window two seconds from now.
fn shift_for(plan: Plan) -> Shifted {
    let open = unix_ms(SystemTime::now()) as i64 + 2000;
    Shifted {
        offset_ms: plan.first_ms as i64 - open,
    }
}

/// Runs a scheduler on `store` until the plan's stop; returns the turns' start lateness, in µs.
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
    let mut options = RuntimeOptions::default();
    if let Some(batch) = std::env::var("CHATFLOW_WAKEUPS_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        options = options.with_scheduler_batch(batch);
    }
    let runtime = Runtime::with_options(engine, timed.clone(), options);
    runtime.run_scheduler(clock.sleep_until(plan.stop())).await;
    std::mem::take(&mut *timed.late_us.lock().unwrap_or_else(|e| e.into_inner()))
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

fn plan_for(n: u64, window_ms: u64, measure_ms: u64) -> Plan {
    Plan {
        n,
        // Any fixed origin: the clock is shifted onto it.
        first_ms: 1_900_000_000_000,
        window_ms,
        measure_ms,
    }
}

fn describe(plan: Plan, how: &str) -> String {
    format!(
        "{how}, {} sleepers, wake-ups over {} s ({:.0}/s), first {} s measured",
        plan.n,
        plan.window_ms / 1000,
        plan.n as f64 * 1000.0 / plan.window_ms as f64,
        plan.measure_ms / 1000
    )
}

async fn sqlite_case(plan: Plan) {
    let case = describe(plan, "sqlite, one process");
    let path = std::env::temp_dir().join(format!("chatflow-wakeups-{}.db", std::process::id()));
    let sqlite = SqliteStore::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("the SQLite file opens");
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let mut tables = rusqlite::Connection::open(&path).expect("the SQLite file opens");
    tables
        .busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let started = std::time::Instant::now();
    fill_sqlite(&mut tables, sleepers(plan).await).expect("insert sleepers");
    let filled = started.elapsed();
    println!("{case}: filled in {:.1} s", filled.as_secs_f64());
    let clock = shift_for(plan);
    let starts = resume_all(store, clock, plan).await;
    let rows: Vec<(String, i64)> = tables
        .prepare("SELECT conversation_id, at_ms FROM transcript WHERE text = 'back'")
        .and_then(|mut rows| {
            rows.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .expect("transcript rows");
    drop(tables);
    check_once(&case, plan, &rows);
    report(&case, "turn start", starts);
    report(&case, "reply", reply_lateness(plan, rows));
    drop(sqlite);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// Each sleeper due before the stop answered, and none twice.
fn check_once(case: &str, plan: Plan, rows: &[(String, i64)]) {
    let distinct: std::collections::HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        distinct.len(),
        rows.len(),
        "{case}: a conversation answered twice"
    );
    let must = plan.must_resume();
    let resumed = (0..must)
        .filter(|&i| distinct.contains(Plan::id(i).as_str()))
        .count() as u64;
    assert_eq!(resumed, must, "{case}: sleepers due before the stop resumed");
}

async fn postgres_case(url: &str, plan: Plan) {
    let case = describe(plan, "postgres, two processes");
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
    let postgres = PostgresStore::connect(&schema_url)
        .await
        .expect("Postgres connects");
    let store: Arc<dyn Store> = Arc::new(postgres.clone());
    // The tables, from a pool of the bench's own.
    let tables = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&schema_url)
        .await
        .expect("Postgres connects");
    let filled = fill_postgres(&tables, plan).await;
    println!("{case}: filled in {:.1} s", filled.as_secs_f64());
    let clock = shift_for(plan);

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("this binary"))
        .env(
            CHILD_ENV,
            format!(
                "{} {} {} {} {} {}",
                plan.n, plan.first_ms, plan.window_ms, plan.measure_ms, clock.offset_ms, schema_url
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
    println!(
        "{case}: resumed by this process {}, by the other {}",
        mine.len(),
        theirs.len()
    );
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT conversation_id, at_ms FROM transcript WHERE text = 'back'")
            .fetch_all(&tables)
            .await
            .expect("transcript rows");
    check_once(&case, plan, &rows);
    let mut starts = mine;
    starts.extend(theirs);
    report(&case, "turn start", starts);
    report(&case, "reply", reply_lateness(plan, rows));
    tables.close().await;
    drop(postgres);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
}

/// The second process: a scheduler on the shared database; prints its
/// turns' start lateness (µs), one per line.
async fn child_main(spec: &str) {
    let mut parts = spec.splitn(6, ' ');
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
        measure_ms: number() as u64,
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
