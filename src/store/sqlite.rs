//! A store in SQLite (through rusqlite): conversations survive a restart,
//! and the processes of one host may share the database file.
//!
//! The store has one connection. An operation that finds it free runs at
//! once on the calling thread (a statement on a local file takes
//! microseconds; handing it to another thread and back costs more), and
//! never waits there: whatever would wait (for the connection, for another
//! process's write lock, for a checkpoint's file syncs) runs on the
//! connection's own thread instead. See `SqliteStore::run`.
//!
//! Every operation is one statement or one transaction, so SQLite runs it
//! atomically, and its first statement writes, taking the write lock before
//! it reads anything: writers in several processes wait for each other (up
//! to the busy timeout) instead of failing on a stale snapshot. Writes that
//! span tables are finished inside the statement by the triggers of
//! migration 0003 (`transcript_enqueue` for [`Store::enqueue`], the
//! `turn_saves` view for [`Store::save`]). Operations that queue for the
//! connection's thread together commit as one transaction.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError, mpsc};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use percent_encoding::percent_decode_str;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::sql::*;
use super::{Claim, Direction, Enqueued, InboxEntry, Save, Store, StoreError, TranscriptEntry, decode};
use crate::conversation::Conversation;

/// The rusqlite version the store is built on, for
/// [`SqliteStore::with_connection`].
pub use rusqlite;

/// A [`Store`] in a SQLite database.
///
/// The schema is created (and later migrated) by [`SqliteStore::connect`].
/// A file database runs in WAL mode; `sqlite::memory:` gives a fresh
/// in-memory database, for tests and demos. Clones share one connection,
/// which closes when the last clone is dropped.
///
/// ```
/// use std::time::SystemTime;
/// use chatflow::store::{SqliteStore, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A file would be `sqlite://chatflow.db` (created if missing).
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// assert_eq!(store.enqueue("user-1", "m1", "hello", SystemTime::now()).await?, Some(1));
/// // A redelivered webhook changes nothing.
/// assert_eq!(store.enqueue("user-1", "m1", "hello", SystemTime::now()).await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// Operations for the connection's thread, which ends when the last
    /// clone of the store is dropped.
    jobs: mpsc::Sender<Job>,
}

struct Shared {
    conn: Mutex<Connection>,
    /// Operations since the last checkpoint was started.
    operations: AtomicU32,
    journal: Journal,
}

/// Work for the connection's thread.
enum Job {
    /// One of the store's operations: it may share a transaction with
    /// other operations queued with it, and its answer waits for the commit.
    Operation(Operation),
    /// Runs on its own, outside any transaction: a host's closure (it may
    /// open transactions of its own), a checkpoint.
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// A store operation: runs its statements and returns how to deliver its
/// answer once the outcome of its transaction is known.
type Operation = Box<dyn FnOnce(&mut Connection) -> Answer + Send>;

/// Delivers an operation's answer, or the error that its batch's commit
/// failed with (then nothing of the batch was written).
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// How long a statement on the connection's thread waits for another
/// process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Operations between two checkpoints of the WAL into the database file
/// (about 50 turns; SQLite's own default is every 1,000 pages written).
const CHECKPOINT_EVERY: u32 = 256;

impl SqliteStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// `sqlite://path/to/file.db` (or `sqlite:path/to/file.db`) opens the
    /// file, creating it if missing; `?mode=rw` requires it to exist.
    /// `sqlite::memory:` is a new in-memory database that lives as long as
    /// the store and its clones. File databases are put in WAL mode with
    /// `synchronous = NORMAL` (every committed write survives a crash of
    /// the process, not necessarily of the machine); connections have
    /// foreign keys on. Processes opening one file together are safe: the
    /// schema is migrated under SQLite's write lock, and a statement waits
    /// up to 10 s for another process's write.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), chatflow::store::StoreError> {
    /// let store = chatflow::store::SqliteStore::connect("sqlite://chatflow.db").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let location = Location::parse(url)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, open_result) = oneshot::channel();
        std::thread::Builder::new()
            .name("chatflow-sqlite".to_string())
            .spawn(move || match open(&location) {
                Ok((conn, journal)) => {
                    ON_CONNECTION_THREAD.set(true);
                    let shared = Arc::new(Shared {
                        conn: Mutex::new(conn),
                        operations: AtomicU32::new(0),
                        journal,
                    });
                    let _ = opened.send(Ok(shared.clone()));
                    serve(&shared, &queue);
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the SQLite thread: {e}")))?;
        let shared = open_result.await.map_err(|_| stopped())??;
        Ok(SqliteStore { shared, jobs })
    }

    /// Runs `f` on the store's connection, between the store's own
    /// operations, e.g. for the host's queries on the tables. `f` runs on
    /// the connection's thread: keep it short, as the store's operations
    /// wait for it. A store operation called from inside `f` fails (it
    /// would wait for `f`), and a transaction `f` leaves open is rolled
    /// back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = chatflow::store::SqliteStore::connect("sqlite::memory:").await?;
    /// let n: i64 = store
    ///     .with_connection(|conn| conn.query_row("SELECT COUNT(*) FROM conversations", [], |row| row.get(0)))
    ///     .await??;
    /// assert_eq!(n, 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the connection's thread has stopped, or
    /// `f` panicked.
    pub async fn with_connection<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        refuse_on_connection_thread()?;
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job::Alone(Box::new(move |conn: &mut Connection| {
                let _ = done.send(f(conn));
            })))
            .map_err(|_| stopped())?;
        result.await.map_err(|_| panicked())
    }

    /// Runs one of the store's operations on the connection's thread.
    async fn queue<R, F>(&self, op: F) -> Result<rusqlite::Result<R>, StoreError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        refuse_on_connection_thread()?;
        let (done, result) = oneshot::channel();
        let operation: Operation = Box::new(move |conn: &mut Connection| {
            let outcome = op(conn);
            Box::new(move |commit_error: Option<&str>| {
                let _ = done.send(match commit_error {
                    None => Ok(outcome),
                    Some(e) => Err(StoreError::Backend(format!(
                        "committing a batch of SQLite writes failed, nothing of it was written: {e}"
                    ))),
                });
            })
        });
        self.jobs.send(Job::Operation(operation)).map_err(|_| stopped())?;
        result.await.map_err(|_| panicked())?
    }

    /// Runs one of the store's operations.
    ///
    /// When the connection is free, the operation runs at once on the
    /// calling thread: a statement on a local file takes microseconds, and
    /// handing it to another thread and back costs more than that. SQLite
    /// must then not wait: its busy timeout is zero there, and an operation
    /// that meets another process's write lock (`SQLITE_BUSY`, nothing
    /// written) runs again on the connection's thread, where it may wait.
    /// Operations that find the connection taken queue for that thread too,
    /// which runs them one after another. Checkpoints, which sync the files,
    /// also run there: the connection's automatic ones are off.
    ///
    /// `op` may run twice, so it must write nothing unless it succeeds:
    /// one statement, or one transaction (a savepoint, so that it can join
    /// a batch's).
    async fn run<R, F>(&self, op: F) -> Result<rusqlite::Result<R>, StoreError>
    where
        F: Fn(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let inline = match self.shared.journal {
            Journal::Other => None,
            Journal::Memory | Journal::Wal => match self.shared.conn.try_lock() {
                Ok(mut conn) => Some(op(&mut conn)),
                Err(TryLockError::Poisoned(poisoned)) => Some(op(&mut poisoned.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            },
        };
        let result = match inline {
            Some(Err(e)) if is_busy(&e) => self.queue(op).await?,
            Some(result) => result,
            None => self.queue(op).await?,
        };
        self.count_operation();
        Ok(result)
    }

    /// Every [`CHECKPOINT_EVERY`] operations, has the connection's thread
    /// copy the WAL into the database file.
    fn count_operation(&self) {
        let shared = &self.shared;
        if shared.journal != Journal::Wal
            || shared.operations.fetch_add(1, Ordering::Relaxed) + 1 < CHECKPOINT_EVERY
        {
            return;
        }
        shared.operations.store(0, Ordering::Relaxed);
        let _ = self.jobs.send(Job::Alone(Box::new(|conn: &mut Connection| {
            // PASSIVE: copies what it can without waiting for readers in
            // other processes; the next checkpoint takes the rest.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
        })));
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the SQLite connection's thread has stopped".to_string())
}

thread_local! {
    /// Set on the connection's thread.
    static ON_CONNECTION_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A store call from a closure running on the connection's thread would
/// wait for that thread: it fails instead.
fn refuse_on_connection_thread() -> Result<(), StoreError> {
    if ON_CONNECTION_THREAD.get() {
        return Err(StoreError::Backend(
            "a store operation was called from a `with_connection` closure: it would wait for itself"
                .to_string(),
        ));
    }
    Ok(())
}

fn panicked() -> StoreError {
    StoreError::Backend("a SQLite operation panicked on the connection's thread".to_string())
}

/// The connection's thread: runs queued jobs until every sender is gone.
/// There (only) SQLite may wait for other processes' locks. The store's
/// operations queued together run in one transaction: one commit, one WAL
/// flush, for the lot (they are queued because the connection was busy, so
/// under load they come in groups). A job that panics loses only its own
/// answer: its caller sees the channel closed.
fn serve(shared: &Shared, queue: &mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| queue.recv().ok()) else {
            return;
        };
        let mut conn = shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
        match job {
            Job::Alone(f) => {
                if std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut conn))).is_err() {
                    tracing::error!("a SQLite operation panicked; the store goes on");
                }
                // The store's statements must not run inside a transaction
                // a host's closure left open.
                if !conn.is_autocommit() {
                    tracing::warn!("a `with_connection` closure left a transaction open: rolled back");
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
            Job::Operation(first) => {
                let mut batch = vec![first];
                while let Ok(job) = queue.try_recv() {
                    match job {
                        Job::Operation(operation) => batch.push(operation),
                        alone => {
                            next = Some(alone);
                            break;
                        }
                    }
                }
                run_batch(&mut conn, batch);
            }
        }
        let _ = conn.busy_timeout(Duration::ZERO);
    }
}

/// Runs operations in one transaction and answers them after its commit.
fn run_batch(conn: &mut Connection, batch: Vec<Operation>) {
    let run = |conn: &mut Connection, operation: Operation| {
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| operation(conn)));
        if answer.is_err() {
            tracing::error!("a SQLite operation panicked; the store goes on");
        }
        answer.ok()
    };
    if batch.len() == 1 {
        for operation in batch {
            if let Some(answer) = run(conn, operation) {
                answer(None);
            }
        }
        return;
    }
    // Without a transaction (BEGIN failed), each operation commits alone.
    let mut in_transaction = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    let mut answers = Vec::with_capacity(batch.len());
    for operation in batch {
        let Some(answer) = run(conn, operation) else {
            continue;
        };
        if !in_transaction {
            answer(None);
        } else if conn.is_autocommit() {
            // Some errors (a full disk, an I/O error) roll the whole
            // transaction back: the operations before this one were undone
            // with it. This one answers with its own error.
            for earlier in answers.drain(..) {
                let earlier: Answer = earlier;
                earlier(Some("rolled back by another write's error"));
            }
            answer(None);
            in_transaction = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        } else {
            answers.push(answer);
        }
    }
    if in_transaction {
        let failed = conn.execute_batch("COMMIT").err().map(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        for answer in answers {
            answer(failed.as_deref());
        }
    }
}

/// Whether SQLite refused to wait for a lock (nothing was written).
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Where the database is, from a `sqlite:` URL.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    Memory,
    File { path: PathBuf, create: bool },
}

impl Location {
    fn parse(url: &str) -> Result<Location, StoreError> {
        // The URL is not repeated: a misplaced one may hold a password.
        let invalid = |why: &str| StoreError::Backend(format!("invalid SQLite URL: {why}"));
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid("it must start with `sqlite:`"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut mode = "rwc";
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("mode", value @ ("rw" | "rwc" | "memory"))) => mode = value,
                Some(("mode", _)) => {
                    return Err(invalid("`mode` must be rw, rwc or memory (the store writes)"));
                }
                _ => {
                    return Err(invalid("only the `mode` parameter is read"));
                }
            }
        }
        if path == ":memory:" || mode == "memory" {
            return Ok(Location::Memory);
        }
        let path = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| invalid("the path is not UTF-8 once percent-decoded"))?;
        if path.is_empty() {
            return Err(invalid("no file path"));
        }
        Ok(Location::File {
            path: PathBuf::from(path.as_ref()),
            create: mode == "rwc",
        })
    }
}

/// How the database keeps its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Journal {
    /// An in-memory database.
    Memory,
    /// A file in WAL mode: commits do not sync, the store checkpoints.
    Wal,
    /// A file where WAL did not take (some network file systems): commits
    /// sync and may wait for readers, so nothing runs on the caller's
    /// thread.
    Other,
}

/// Opens the connection, sets it up and migrates the schema.
fn open(location: &Location) -> Result<(Connection, Journal), StoreError> {
    // The connection is used by one thread only: SQLite's own mutexes are
    // not needed.
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = match location {
        Location::Memory => Connection::open_in_memory_with_flags(flags | OpenFlags::SQLITE_OPEN_READ_WRITE),
        Location::File { path, create } => {
            flags |= OpenFlags::SQLITE_OPEN_READ_WRITE;
            if *create {
                flags |= OpenFlags::SQLITE_OPEN_CREATE;
            }
            Connection::open_with_flags(path, flags)
        }
    }
    .map_err(|e| StoreError::Backend(format!("cannot open the SQLite database: {e}")))?;
    let version = rusqlite::version();
    if !supported(version) {
        return Err(StoreError::Backend(format!(
            "SQLite {version} is too old: the store needs {}.{} or later",
            MIN_SQLITE_VERSION.0, MIN_SQLITE_VERSION.1
        )));
    }
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(backend)?;
    let mut journal = Journal::Memory;
    if matches!(location, Location::File { .. }) {
        // WAL lets readers in other processes go on during a write;
        // synchronous=NORMAL syncs at checkpoints rather than at each commit.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(backend)?;
        journal = if mode.eq_ignore_ascii_case("wal") {
            Journal::Wal
        } else {
            tracing::warn!(
                journal_mode = %mode,
                "the SQLite database is not in WAL mode: every operation runs on the connection's thread"
            );
            Journal::Other
        };
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
    }
    migrate(&mut conn)?;
    // From here on the store decides where to wait (see `SqliteStore::run`)
    // and when to checkpoint.
    conn.busy_timeout(Duration::ZERO).map_err(backend)?;
    if journal == Journal::Wal {
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
    }
    Ok((conn, journal))
}

/// The schema's migrations, in order; `PRAGMA user_version` is the number of
/// those applied.
const MIGRATIONS: [&str; 4] = [
    include_str!("../../migrations/sqlite/0001_conversations.sql"),
    include_str!("../../migrations/sqlite/0002_due_index.sql"),
    include_str!("../../migrations/sqlite/0003_one_statement_writes.sql"),
    include_str!("../../migrations/sqlite/0004_without_rowid.sql"),
];

/// Applies the migrations the database lacks, in one transaction under the
/// write lock, so two processes opening a new file together migrate it once.
/// (rusqlite_migration does the `user_version` part, but pins an older
/// rusqlite and knows nothing of the sqlx history below.)
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| StoreError::Backend(format!("migrating the SQLite schema: {e}"));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let mut applied: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(failed)?;
    if applied == 0 {
        // Databases made by chatflow 0.1, whose store ran on sqlx, record
        // the migrations sqlx applied in its own table.
        let from_sqlx: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
                [],
                |row| row.get(0),
            )
            .map_err(failed)?;
        if from_sqlx {
            applied = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                    [],
                    |row| row.get(0),
                )
                .map_err(failed)?;
        }
    }
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::Backend(format!(
            "the SQLite database's schema is at version {applied}, newer than this chatflow knows ({known})"
        )));
    }
    for (n, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(applied).unwrap_or(0))
    {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Backend(format!("SQLite migration {:04} failed: {e}", n + 1)))?;
    }
    tx.pragma_update(None, "user_version", known).map_err(failed)?;
    tx.commit().map_err(failed)
}

/// The error `turn_saves_insert` (migration 0003) raises when the saving
/// runner does not hold the lease.
const LEASE_LOST: &str = "chatflow: lease lost";

/// A turn's outgoing entries as `turn_saves` takes them: a JSON array of
/// `[direction, hex of the UTF-8 text]`.
fn outgoing_json(outgoing: &[(Direction, String)]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len: usize = outgoing.iter().map(|(_, text)| text.len() * 2 + 16).sum();
    let mut json = String::with_capacity(len + 2);
    json.push('[');
    for (i, (direction, text)) in outgoing.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("[\"");
        json.push_str(direction_name(*direction));
        json.push_str("\",\"");
        for byte in text.bytes() {
            json.push(char::from(HEX[usize::from(byte >> 4)]));
            json.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        json.push_str("\"]");
    }
    json.push(']');
    json
}

/// The oldest SQLite the store's statements run on (`unhex`, 3.41).
const MIN_SQLITE_VERSION: (u32, u32) = (3, 41);

/// Whether `version` (as `sqlite_version()` gives it, "3.46.0") is at least
/// [`MIN_SQLITE_VERSION`].
fn supported(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= MIN_SQLITE_VERSION
}

/// [`Store::enqueue`]: the user entry, numbered after the transcript's last,
/// unless the id was seen; the `transcript_enqueue` trigger records the id
/// and fills the inbox. No row comes back for a duplicate.
const ENQUEUE: &str = "INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id)
     SELECT ?1, last + 1, 'in', ?3, ?4, ?2
     FROM (SELECT COALESCE(MAX(seq), 0) AS last FROM transcript WHERE conversation_id = ?1)
     WHERE NOT EXISTS (SELECT 1 FROM seen_messages WHERE conversation_id = ?1 AND message_id = ?2)
     RETURNING seq";

/// [`Store::acquire`]: creates the row if missing; takes the lease only when
/// it is free, expired or already ours (no row comes back otherwise), and
/// reads the inbox, as JSON, under the same lock.
const ACQUIRE: &str = "INSERT INTO conversations (id, lease_owner, lease_until_ms) VALUES (?1, ?2, ?3)
     ON CONFLICT (id) DO UPDATE
        SET lease_owner = excluded.lease_owner, lease_until_ms = excluded.lease_until_ms
        WHERE conversations.lease_owner IS NULL
           OR conversations.lease_owner = excluded.lease_owner
           OR conversations.lease_until_ms <= ?4
     RETURNING state, (
         SELECT json_group_array(json_array(seq, text))
         FROM (SELECT seq, text FROM inbox WHERE conversation_id = ?1 ORDER BY seq)
     )";

/// [`Store::save`]: the `turn_saves_insert` trigger checks the lease and
/// writes state, wake-up, inbox and transcript, or aborts the whole
/// statement when the lease is not `owner`'s.
const SAVE: &str = "INSERT INTO turn_saves
        (conversation_id, owner, state, wake_at_ms, lease_until_ms, consumed_up_to, outgoing, at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// [`Store::transcript`].
const TRANSCRIPT: &str = "SELECT seq, direction, text, at_ms FROM transcript
     WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq";

/// A transcript row as read.
type TranscriptRow = (i64, String, String, i64);

/// What [`ACQUIRE`] returns: the state, and the inbox as JSON.
type Taken = (Option<String>, String);

fn read_transcript(conn: &Connection, id: &str, after_seq: i64) -> rusqlite::Result<Vec<TranscriptRow>> {
    conn.prepare_cached(TRANSCRIPT)?
        .query_map(params![id, after_seq], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect()
}

fn take_lease(
    conn: &Connection,
    id: &str,
    owner: &str,
    lease_until: i64,
    now: i64,
) -> rusqlite::Result<Option<Taken>> {
    conn.prepare_cached(ACQUIRE)?
        .query_row(params![id, owner, lease_until, now], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
}

/// The claim from what [`ACQUIRE`] returned.
fn claim(conversation_id: &str, (state, inbox): Taken) -> Result<Claim, StoreError> {
    let mut inbox: Vec<(i64, String)> = serde_json::from_str(&inbox).map_err(|e| StoreError::Corrupt {
        id: conversation_id.to_string(),
        message: format!("inbox read back as unexpected JSON: {e}"),
    })?;
    inbox.sort_unstable_by_key(|(seq, _)| *seq);
    let inbox = inbox
        .into_iter()
        .map(|(seq, text)| InboxEntry {
            seq: to_u64(seq),
            text,
        })
        .collect();
    // As in the memory store, the lease stays taken even when the state
    // turns out to be unreadable.
    let conversation = state.as_deref().map(|s| decode(conversation_id, s)).transpose()?;
    Ok(Claim { conversation, inbox })
}

fn transcript_entries(
    conversation_id: &str,
    rows: Vec<TranscriptRow>,
) -> Result<Vec<TranscriptEntry>, StoreError> {
    rows.into_iter()
        .map(|(seq, direction, text, at_ms)| {
            Ok(TranscriptEntry {
                seq: to_u64(seq),
                direction: parse_direction(conversation_id, &direction)?,
                text,
                at_ms: to_u64(at_ms),
            })
        })
        .collect()
}

/// The arguments of [`SAVE`], owned, for an operation that may run twice
/// (see [`SqliteStore::run`]).
struct SaveRow {
    id: String,
    owner: String,
    state: String,
    wake_at: Option<i64>,
    lease_until: i64,
    consumed_up_to: i64,
    outgoing: String,
    now: i64,
}

impl SaveRow {
    fn new(conversation_id: &str, owner: &str, save: &Save<'_>) -> Result<SaveRow, StoreError> {
        Ok(SaveRow {
            id: conversation_id.to_string(),
            owner: owner.to_string(),
            state: serde_json::to_string(save.conversation).map_err(backend)?,
            wake_at: save.wake_at.map(ms),
            lease_until: ms(save.lease_until),
            consumed_up_to: to_i64(save.consumed_up_to),
            outgoing: outgoing_json(save.outgoing),
            // The turn's own time is not in `Save`: like the memory store,
            // stamp outgoing entries with the caller's clock.
            now: ms(save.now),
        })
    }

    fn execute(&self, conn: &Connection) -> rusqlite::Result<usize> {
        conn.prepare_cached(SAVE)?.execute(params![
            self.id,
            self.owner,
            self.state,
            self.wake_at,
            self.lease_until,
            self.consumed_up_to,
            self.outgoing,
            self.now
        ])
    }
}

/// A save's error: [`StoreError::LeaseLost`] for the trigger's refusal.
fn save_error(conversation_id: &str, error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(_, Some(message)) if message == LEASE_LOST => {
            StoreError::LeaseLost(conversation_id.to_string())
        }
        e => backend(e),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        let (id, message_id, text) = (
            conversation_id.to_string(),
            message_id.to_string(),
            text.to_string(),
        );
        let now = ms(now);
        let seq: Option<i64> = self
            .run(move |conn| {
                conn.prepare_cached(ENQUEUE)?
                    .query_row(params![id, message_id, text, now], |row| row.get(0))
                    .optional()
            })
            .await?
            .map_err(backend)?;
        Ok(seq.map(to_u64))
    }

    async fn acquire(
        &self,
        conversation_id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        let (id, owner) = (conversation_id.to_string(), owner.to_string());
        let (lease_until, now) = (ms(lease_until), ms(now));
        let taken = self
            .run(move |conn| take_lease(conn, &id, &owner, lease_until, now))
            .await?
            .map_err(backend)?;
        taken.map(|taken| claim(conversation_id, taken)).transpose()
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
        let (id, message_id, text) = (
            conversation_id.to_string(),
            message_id.to_string(),
            text.to_string(),
        );
        let owner = owner.to_string();
        let (lease_until, now) = (ms(lease_until), ms(now));
        // Both statements in one transaction (a savepoint: it may be part of
        // a batch's transaction): one commit, and the claim sees the message.
        let recorded = self
            .run(move |conn| {
                let tx = conn.savepoint()?;
                let seq: Option<i64> = tx
                    .prepare_cached(ENQUEUE)?
                    .query_row(params![id, message_id, text, now], |row| row.get(0))
                    .optional()?;
                let Some(seq) = seq else {
                    return Ok(None);
                };
                let taken = take_lease(&tx, &id, &owner, lease_until, now)?;
                tx.commit()?;
                Ok(Some((seq, taken)))
            })
            .await?
            .map_err(backend)?;
        let Some((seq, taken)) = recorded else {
            return Ok(None);
        };
        Ok(Some(Enqueued {
            seq: to_u64(seq),
            claim: taken.map(|taken| claim(conversation_id, taken)).transpose()?,
        }))
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        let row = SaveRow::new(conversation_id, owner, &save)?;
        self.run(move |conn| row.execute(conn))
            .await?
            .map_err(|e| save_error(conversation_id, e))?;
        Ok(())
    }

    async fn save_and_read_replies(
        &self,
        conversation_id: &str,
        owner: &str,
        save: Save<'_>,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let row = SaveRow::new(conversation_id, owner, &save)?;
        let after_seq = to_i64(after_seq);
        // The read follows the save in the same transaction: no other
        // turn's replies can come in between, and an operation that fails
        // half-way (busy, say) wrote nothing and may run again.
        let rows = self
            .run(move |conn| {
                let tx = conn.savepoint()?;
                row.execute(&tx)?;
                let rows = read_transcript(&tx, &row.id, after_seq)?;
                tx.commit()?;
                Ok(rows)
            })
            .await?
            .map_err(|e| save_error(conversation_id, e))?;
        let mut entries = transcript_entries(conversation_id, rows)?;
        entries.retain(|e| e.direction != Direction::In);
        Ok(entries)
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        let (id, owner) = (conversation_id.to_string(), owner.to_string());
        self.run(move |conn| {
            conn.prepare_cached(
                "UPDATE conversations SET lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = ?1 AND lease_owner = ?2",
            )?
            .execute(params![id, owner])
        })
        .await?
        .map_err(backend)?;
        Ok(())
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        let now = ms(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Overdue since: the wake-up time if it has come, or the arrival of
        // the oldest unapplied message, whichever is earlier. Each side
        // yields at most `limit` free conversations in its own order (the
        // wake-up side walks the (wake_at_ms, id) index and stops there),
        // which holds the first `limit` of the merged order: whatever comes
        // before one of those on its side comes before it overall too.
        self.run(move |conn| {
            conn.prepare_cached(
                "WITH woken (id, since) AS (
                     SELECT id, wake_at_ms FROM conversations
                     WHERE wake_at_ms <= ?1 AND (lease_owner IS NULL OR lease_until_ms <= ?1)
                     ORDER BY wake_at_ms, id
                     LIMIT ?2
                 ),
                 messaged (id, since) AS (
                     SELECT i.conversation_id, MIN(i.at_ms) FROM inbox i
                     JOIN conversations c ON c.id = i.conversation_id
                     WHERE c.lease_owner IS NULL OR c.lease_until_ms <= ?1
                     GROUP BY i.conversation_id
                     ORDER BY MIN(i.at_ms), i.conversation_id
                     LIMIT ?2
                 ),
                 overdue (id, since) AS (
                     SELECT id, MIN(since) FROM (
                         SELECT id, since FROM woken UNION ALL SELECT id, since FROM messaged
                     ) AS pending
                     GROUP BY id
                 )
                 SELECT c.id FROM overdue o JOIN conversations c ON c.id = o.id
                 ORDER BY o.since, c.id
                 LIMIT ?2",
            )?
            .query_map(params![now, limit], |row| row.get(0))?
            .collect()
        })
        .await?
        .map_err(backend)
    }

    async fn counts(&self, now: SystemTime) -> Result<super::ConversationCounts, StoreError> {
        let now = ms(now);
        let (sleeping, parked): (i64, i64) = self
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT COALESCE(SUM(CASE WHEN wake_at_ms > ?1 THEN 1 ELSE 0 END), 0),
                            COALESCE(SUM(CASE WHEN wake_at_ms IS NULL THEN 1 ELSE 0 END), 0)
                     FROM conversations WHERE state IS NOT NULL",
                )?
                .query_row([now], |row| Ok((row.get(0)?, row.get(1)?)))
            })
            .await?
            .map_err(backend)?;
        Ok(super::ConversationCounts {
            sleeping: u64::try_from(sleeping).unwrap_or(0),
            parked: u64::try_from(parked).unwrap_or(0),
        })
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        let earliest: Option<i64> = self
            .run(|conn| {
                conn.prepare_cached("SELECT MIN(wake_at_ms) FROM conversations")?
                    .query_row([], |row| row.get(0))
            })
            .await?
            .map_err(backend)?;
        Ok(earliest.map(time))
    }

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let after = ms(after);
        // A range scan of the wake_at index: rows saved mid-turn (due at
        // once, under a lease) are passed over.
        let earliest: Option<i64> = self
            .run(move |conn| {
                conn.prepare_cached("SELECT MIN(wake_at_ms) FROM conversations WHERE wake_at_ms > ?1")?
                    .query_row([after], |row| row.get(0))
            })
            .await?
            .map_err(backend)?;
        Ok(earliest.map(time))
    }

    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        let id = conversation_id.to_string();
        let state: Option<Option<String>> = self
            .run(move |conn| {
                conn.prepare_cached("SELECT state FROM conversations WHERE id = ?1")?
                    .query_row([&id], |row| row.get(0))
                    .optional()
            })
            .await?
            .map_err(backend)?;
        state.flatten().map(|s| decode(conversation_id, &s)).transpose()
    }

    async fn transcript(
        &self,
        conversation_id: &str,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let id = conversation_id.to_string();
        let after_seq = to_i64(after_seq);
        let rows = self
            .run(move |conn| read_transcript(conn, &id, after_seq))
            .await?
            .map_err(backend)?;
        transcript_entries(conversation_id, rows)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::{Location, MIGRATIONS, SqliteStore, supported};
    use crate::store::{Store, StoreError};

    /// A file path in the temp directory, removed (with its WAL files) on drop.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new(name: &str) -> TempDb {
            TempDb(std::env::temp_dir().join(format!(
                "chatflow-sqlite-{name}-{}-{:016x}.db",
                std::process::id(),
                fastrand::u64(..)
            )))
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = self.0.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }

    #[tokio::test]
    async fn a_database_migrated_by_sqlx_is_taken_over_without_rerunning_migrations() {
        let db = TempDb::new("sqlx");
        {
            let conn = rusqlite::Connection::open(&db.0).unwrap();
            // What the sqlx-based store applied; 0004 came after it.
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                     installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                     checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
                 INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (1, 'conversations', 1, x'00', 0), (2, 'due index', 1, x'00', 0),
                        (3, 'one statement writes', 1, x'00', 0);
                 INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id)
                 VALUES ('old', 1, 'in', 'kept', 0, 'm1');",
            )
            .unwrap();
        }
        // Rerunning migration 0001 would fail: its tables exist.
        let store = SqliteStore::connect(&db.url()).await.unwrap();
        let kept = store.transcript("old", 0).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].text, "kept");
        // Migration 0004 rebuilt the tables with their rows: the message id
        // is still seen, and the message still waits in the inbox.
        assert_eq!(
            store
                .enqueue("old", "m1", "kept", SystemTime::now())
                .await
                .unwrap(),
            None
        );
        let claim = store
            .acquire("old", "me", SystemTime::now(), SystemTime::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.inbox.len(), 1);
        assert_eq!(claim.inbox[0].text, "kept");
        let version: i64 = store
            .with_connection(|conn| conn.query_row("PRAGMA user_version", [], |row| row.get(0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn reopening_a_file_keeps_its_conversations_and_a_newer_schema_is_refused() {
        let db = TempDb::new("reopen");
        let store = SqliteStore::connect(&db.url()).await.unwrap();
        assert_eq!(
            store.enqueue("c", "m1", "hi", SystemTime::now()).await.unwrap(),
            Some(1)
        );
        store
            .with_connection(|conn| conn.pragma_update(None, "user_version", 99))
            .await
            .unwrap()
            .unwrap();
        drop(store);
        let error = SqliteStore::connect(&db.url()).await.unwrap_err().to_string();
        assert!(error.contains("version 99"), "{error}");

        let db = TempDb::new("reopen2");
        drop(SqliteStore::connect(&db.url()).await.unwrap());
        let store = SqliteStore::connect(&db.url()).await.unwrap();
        assert_eq!(
            store.enqueue("c", "m1", "hi", SystemTime::now()).await.unwrap(),
            Some(1)
        );
    }

    /// Another process holding the write lock makes an operation wait on
    /// the connection's thread, not on the runtime's: on this one-thread
    /// runtime, a wait in SQLite's busy handler would stop the test itself.
    #[tokio::test(flavor = "current_thread")]
    async fn an_operation_waits_for_another_writer_without_blocking_the_runtime() {
        let db = TempDb::new("busy");
        let store = SqliteStore::connect(&db.url()).await.unwrap();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let path = db.0.clone();
        let other = std::thread::spawn(move || {
            let mut conn = rusqlite::Connection::open(path).unwrap();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            tx.commit().unwrap();
        });
        locked_rx.recv().unwrap();
        let started = std::time::Instant::now();
        let enqueue = tokio::spawn({
            let store = store.clone();
            async move { store.enqueue("c", "m1", "hi", SystemTime::now()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!enqueue.is_finished(), "the write lock is held elsewhere");
        // Had the runtime waited in SQLite's busy handler (10 s), the sleep
        // would have ended that much later.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        release_tx.send(()).unwrap();
        assert_eq!(enqueue.await.unwrap().unwrap(), Some(1));
        other.join().unwrap();
    }

    /// Operations queued while the connection is busy run in one
    /// transaction: a refused save among them fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operations_queued_together_commit_together_and_fail_alone() {
        let db = TempDb::new("batch");
        let store = SqliteStore::connect(&db.url()).await.unwrap();
        let now = SystemTime::now();
        store
            .acquire("held", "owner", now + std::time::Duration::from_secs(60), now)
            .await
            .unwrap();
        // The connection's thread runs this while the operations below
        // queue behind it.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let store = store.clone();
            async move { store.with_connection(move |_| released.recv()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut enqueues = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            enqueues.push(tokio::spawn(async move {
                store
                    .enqueue(&format!("c{i}"), "m1", "hi", SystemTime::now())
                    .await
            }));
        }
        let refused = tokio::spawn({
            let store = store.clone();
            async move {
                let engine = crate::Engine::builder(
                    crate::Flow::from_json(
                        r#"{"name": "f", "steps": [{"type": "question", "name": "Ask", "text": "?"}]}"#,
                    )
                    .unwrap(),
                )
                .build()
                .unwrap();
                let conversation = engine.start("held");
                let save = crate::store::Save {
                    conversation: &conversation,
                    consumed_up_to: 0,
                    outgoing: &[],
                    wake_at: None,
                    lease_until: now,
                    now,
                };
                store.save("held", "intruder", save).await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap().unwrap();
        for enqueue in enqueues {
            assert_eq!(enqueue.await.unwrap().unwrap(), Some(1));
        }
        assert!(matches!(refused.await.unwrap(), Err(StoreError::LeaseLost(_))));
        for i in 0..20 {
            assert_eq!(store.transcript(&format!("c{i}"), 0).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn a_host_closure_calling_the_store_fails_instead_of_waiting_for_itself() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let handle = tokio::runtime::Handle::current();
        let inner = store.clone();
        let nested = store
            .with_connection(move |_| handle.block_on(inner.load("c")))
            .await
            .unwrap();
        let error = nested.unwrap_err().to_string();
        assert!(error.contains("with_connection"), "{error}");
    }

    #[tokio::test]
    async fn a_transaction_a_host_closure_left_open_is_rolled_back() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store
            .with_connection(|conn| {
                conn.execute_batch("BEGIN; INSERT INTO conversations (id) VALUES ('half-done');")
            })
            .await
            .unwrap()
            .unwrap();
        // The store's own writes, including one in a transaction, go on.
        let now = SystemTime::now();
        let recorded = store
            .enqueue_and_acquire("c", "m1", "hi", "me", now, now)
            .await
            .unwrap();
        assert_eq!(recorded.map(|r| r.seq), Some(1));
        assert_eq!(store.load("half-done").await.unwrap(), None);
        let rows: i64 = store
            .with_connection(|conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM conversations WHERE id = 'half-done'",
                    [],
                    |row| row.get(0),
                )
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn a_panicking_host_closure_fails_alone_and_the_store_goes_on() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let result = store.with_connection(|_| -> () { panic!("host bug") }).await;
        assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
        assert_eq!(
            store.enqueue("c", "m1", "hi", SystemTime::now()).await.unwrap(),
            Some(1)
        );
    }

    #[tokio::test]
    async fn a_missing_file_is_created_unless_the_url_says_rw() {
        let db = TempDb::new("missing");
        let error = SqliteStore::connect(&format!("{}?mode=rw", db.url()))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("cannot open"), "{error}");
        SqliteStore::connect(&db.url()).await.unwrap();
        assert!(db.0.exists());
    }

    #[test]
    fn sqlite_versions_are_compared_as_numbers() {
        assert!(supported("3.46.0"));
        assert!(supported("3.41.0"));
        assert!(supported("4.0.0"));
        assert!(!supported("3.40.1"));
        assert!(!supported("3.9.2"));
        assert!(!supported("garbage"));
    }

    #[test]
    fn urls_name_a_file_or_memory() {
        let file = |path: &str, create| Location::File {
            path: path.into(),
            create,
        };
        assert_eq!(Location::parse("sqlite::memory:").ok(), Some(Location::Memory));
        assert_eq!(
            Location::parse("sqlite://x.db?mode=memory").ok(),
            Some(Location::Memory)
        );
        assert_eq!(
            Location::parse("sqlite://chatflow.db").ok(),
            Some(file("chatflow.db", true))
        );
        assert_eq!(
            Location::parse("sqlite:///var/lib/a%20b.db").ok(),
            Some(file("/var/lib/a b.db", true))
        );
        assert_eq!(
            Location::parse("sqlite:x.db?mode=rw").ok(),
            Some(file("x.db", false))
        );
        for bad in [
            "postgres://app:s3cret@db/chat",
            "sqlite://",
            "sqlite://x.db?mode=ro",
            "sqlite://x.db?cache=shared&password=s3cret",
        ] {
            let error = Location::parse(bad).expect_err(bad).to_string();
            assert!(error.starts_with("store error: invalid SQLite URL: "), "{error}");
            assert!(!error.contains("s3cret"), "the URL is not repeated: {error}");
        }
    }
}
