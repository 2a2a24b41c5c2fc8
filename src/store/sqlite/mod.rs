//! A store in SQLite (through rusqlite): conversations survive a restart,
//! and the processes of one host may share the database file.
//!
//! The store has one connection. An operation that finds it free runs at
//! once on the calling thread (a statement on a local file takes
//! microseconds; handing it to another thread and back costs more), and
//! never waits there: whatever would wait (for the connection, for another
//! process's write lock, for a checkpoint's file syncs) runs on the
//! connection's own thread instead (module `connection`); module `schema`
//! opens the database and migrates it (`migrations/`), and module `queries`
//! names the statements (`queries/`).
//!
//! Every operation is one statement or one transaction, so SQLite runs it
//! atomically, and a transaction that writes takes the write lock before it
//! reads anything (`BEGIN IMMEDIATE`): writers in several processes wait
//! for each other (up to the busy timeout) instead of failing on a stale
//! snapshot. Operations that queue for the connection's thread together
//! commit as one transaction.

mod connection;
mod queries;
mod schema;

use std::sync::{Arc, mpsc};
use std::time::SystemTime;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use self::connection::{Job, Shared, mark_connection_thread, serve, stopped};
use self::queries::*;
use self::schema::{Location, open};
use super::rows::{
    TranscriptRow, backend, claim, decode_state, direction_name, encode_state, inbox_entry, ms, time, to_i64,
    to_u64, transcript_entries,
};
use super::{Claim, Direction, Enqueued, InboxEntry, Save, Store, StoreError, TranscriptEntry};
use crate::conversation::Conversation;

/// A [`Store`] in a SQLite database.
///
/// The schema is created (and later migrated) by [`SqliteStore::connect`].
/// A file database runs in WAL mode; `sqlite::memory:` gives a fresh
/// in-memory database, for tests and demos. Clones share one connection,
/// which closes when the last clone is dropped.
///
/// The host may read the tables of a file database from connections of its
/// own (WAL mode lets them read during the store's writes); the schema is in
/// `src/store/sqlite/migrations/`.
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

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// `sqlite://path/to/file.db` (or `sqlite:path/to/file.db`) opens the
    /// file, creating it if missing; `?mode=rw` requires it to exist.
    /// `sqlite::memory:` is a new in-memory database that lives as long as
    /// the store and its clones. File databases are put in WAL mode with
    /// `synchronous = NORMAL` (every committed write survives a crash of
    /// the process, not necessarily of the machine); a new file gets 2 KiB
    /// pages, so a turn writes fewer bytes. Connections have foreign
    /// keys on. Processes opening one file together are safe: the
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
                    mark_connection_thread();
                    let shared = Arc::new(Shared::new(conn, journal));
                    let _ = opened.send(Ok(shared.clone()));
                    serve(&shared, &queue);
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(backend("starting the SQLite connection's thread"))?;
        let shared = open_result.await.map_err(|_| stopped())??;
        Ok(SqliteStore { shared, jobs })
    }

    /// Runs `f` on the store's connection, between the store's own
    /// operations (tests read and plant rows with it). `f` runs on the
    /// connection's thread. A store operation called from inside `f` fails
    /// (it would wait for `f`), and a transaction `f` leaves open is rolled
    /// back.
    #[cfg(test)]
    pub(crate) async fn with_connection<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        connection::refuse_on_connection_thread()?;
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job::Alone(Box::new(move |conn: &mut Connection| {
                let _ = done.send(f(conn));
            })))
            .map_err(|_| stopped())?;
        result.await.map_err(|_| connection::panicked())
    }
}

/// One operation's transaction, rolled back unless committed (also when the
/// operation fails or panics half-way). On its own it is `BEGIN IMMEDIATE`:
/// it takes the write lock before reading anything, so a write in another
/// process cannot make what it read stale; inside a batch's transaction it
/// is a savepoint. The statements are cached: `execute_batch` would parse
/// them anew at every operation.
struct Write<'c> {
    conn: &'c Connection,
    savepoint: bool,
    committed: bool,
}

impl<'c> Write<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Write<'c>> {
        let savepoint = !conn.is_autocommit();
        let begin = if savepoint {
            "SAVEPOINT chatflow_op"
        } else {
            "BEGIN IMMEDIATE"
        };
        conn.prepare_cached(begin)?.execute([])?;
        Ok(Write {
            conn,
            savepoint,
            committed: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        let commit = if self.savepoint {
            "RELEASE chatflow_op"
        } else {
            "COMMIT"
        };
        self.conn.prepare_cached(commit)?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let rollback = if self.savepoint {
            "ROLLBACK TO chatflow_op; RELEASE chatflow_op"
        } else {
            "ROLLBACK"
        };
        // Fails only when SQLite already rolled the transaction back.
        let _ = self.conn.execute_batch(rollback);
    }
}

/// Runs `f` in one [`Write`]: everything or nothing of it is written.
fn atomically<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    let write = Write::begin(conn)?;
    let result = f(conn)?;
    write.commit()?;
    Ok(result)
}

/// [`Store::enqueue`]: records the message id as seen, appends the user
/// entry to the transcript and the text to the inbox (creating the
/// conversation's row), and returns the entry's seq; `None`, writing
/// nothing, for an id already seen. Runs inside a [`Write`].
fn record_message(
    conn: &Connection,
    id: &str,
    message_id: &str,
    text: &str,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    // What the writes need, in one read (the transaction holds the write
    // lock already).
    let (seen, inbox_seq, last): (bool, i64, i64) = conn
        .prepare_cached(ENQUEUE_READ)?
        .query_row(params![id, message_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    if seen {
        return Ok(None);
    }
    conn.prepare_cached(ENQUEUE_CONVERSATION)?
        .execute(params![id, inbox_seq + 1])?;
    let seq = last + 1;
    conn.prepare_cached(ENQUEUE_SEEN)?
        .execute(params![id, message_id])?;
    conn.prepare_cached(ENQUEUE_TRANSCRIPT)?
        .execute(params![id, seq, text, now, message_id])?;
    conn.prepare_cached(ENQUEUE_INBOX)?
        .execute(params![id, inbox_seq, text, now])?;
    Ok(Some(seq))
}

/// What [`take_lease`] reads: the state and the inbox, in order.
type Taken = (Option<String>, Vec<InboxEntry>);

fn read_transcript(conn: &Connection, id: &str, after_seq: i64) -> rusqlite::Result<Vec<TranscriptRow>> {
    conn.prepare_cached(TRANSCRIPT)?
        .query_map(params![id, after_seq], |row| {
            Ok(TranscriptRow {
                seq: row.get(0)?,
                direction: row.get(1)?,
                text: row.get(2)?,
                at_ms: row.get(3)?,
            })
        })?
        .collect()
}

/// [`Store::acquire`]: creates the row if missing and takes the lease when
/// it is free, expired or already ours (`None` otherwise), then reads what
/// the turn needs. Runs inside a [`Write`].
fn take_lease(
    conn: &Connection,
    id: &str,
    owner: &str,
    lease_until: i64,
    now: i64,
) -> rusqlite::Result<Option<Taken>> {
    let taken = conn
        .prepare_cached(ACQUIRE_LEASE)?
        .execute(params![id, owner, lease_until, now])?;
    if taken == 0 {
        return Ok(None);
    }
    let state = conn.prepare_cached(LOAD)?.query_row([id], |row| row.get(0))?;
    let inbox = conn
        .prepare_cached(ACQUIRE_INBOX)?
        .query_map([id], |row| Ok(inbox_entry(row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some((state, inbox)))
}

/// The claim from what [`take_lease`] read.
fn claim_of(conversation_id: &str, (state, inbox): Taken) -> Result<Claim, StoreError> {
    claim(conversation_id, state.as_deref(), inbox)
}

/// A save, owned, for an operation that may run twice (see
/// [`SqliteStore::run`]).
struct SaveRow {
    id: String,
    owner: String,
    state: String,
    wake_at: Option<i64>,
    lease_until: i64,
    consumed_up_to: i64,
    outgoing: Vec<(Direction, String)>,
    now: i64,
}

/// What [`SaveRow::execute`] found: the lease was someone else's, and
/// nothing was written.
struct LeaseLost;

impl SaveRow {
    fn new(conversation_id: &str, owner: &str, save: &Save<'_>) -> Result<SaveRow, StoreError> {
        Ok(SaveRow {
            id: conversation_id.to_string(),
            owner: owner.to_string(),
            state: encode_state(save.conversation)?,
            wake_at: save.wake_at.map(ms),
            lease_until: ms(save.lease_until),
            consumed_up_to: to_i64(save.consumed_up_to),
            outgoing: save.outgoing.to_vec(),
            // The turn's own time is not in `Save`: like the memory store,
            // stamp outgoing entries with the caller's clock.
            now: ms(save.now),
        })
    }

    /// Saves, then runs `then`, [`atomically`]. A [`LeaseLost`] has
    /// written nothing, and `then` does not run.
    fn save_then<R>(
        &self,
        conn: &Connection,
        then: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<Result<R, LeaseLost>> {
        atomically(conn, |conn| match self.execute(conn)? {
            Ok(()) => then(conn).map(Ok),
            Err(lost) => Ok(Err(lost)),
        })
    }

    /// Writes state, wake-up, consumed inbox and outgoing entries, when
    /// `owner` holds the lease. Runs inside a [`Write`] (see
    /// [`SaveRow::save_then`]).
    fn execute(&self, conn: &Connection) -> rusqlite::Result<Result<(), LeaseLost>> {
        let saved = conn.prepare_cached(SAVE_STATE)?.execute(params![
            self.id,
            self.owner,
            self.state,
            self.lease_until
        ])?;
        if saved == 0 {
            return Ok(Err(LeaseLost));
        }
        // Apart, and only when it changes: the runtime's mid-turn saves
        // repeat the turn's wake-up.
        conn.prepare_cached(SAVE_WAKE_AT)?
            .execute(params![self.id, self.wake_at])?;
        if self.consumed_up_to > 0 {
            // Usually one message was consumed: deleting it by its key is
            // one seek, where a range delete first copies the range into a
            // temporary B-tree. A later save of the turn finds it gone.
            conn.prepare_cached(SAVE_CONSUME)?
                .execute(params![self.id, self.consumed_up_to])?;
            let more = conn
                .prepare_cached(SAVE_CONSUMED_BEFORE)?
                .exists(params![self.id, self.consumed_up_to])?;
            if more {
                conn.prepare_cached(SAVE_CONSUME_BEFORE)?
                    .execute(params![self.id, self.consumed_up_to])?;
            }
        }
        if !self.outgoing.is_empty() {
            let mut seq: i64 = conn
                .prepare_cached(SAVE_LAST_SEQ)?
                .query_row([&self.id], |row| row.get(0))?;
            let mut insert = conn.prepare_cached(SAVE_TRANSCRIPT)?;
            for (direction, text) in &self.outgoing {
                seq += 1;
                insert.execute(params![self.id, seq, direction_name(*direction), text, self.now])?;
            }
        }
        Ok(Ok(()))
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
        let seq = self
            .run(move |conn| atomically(conn, |conn| record_message(conn, &id, &message_id, &text, now)))
            .await?
            .map_err(backend("SQLite enqueue"))?;
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
            .run(move |conn| atomically(conn, |conn| take_lease(conn, &id, &owner, lease_until, now)))
            .await?
            .map_err(backend("SQLite acquire"))?;
        taken.map(|taken| claim_of(conversation_id, taken)).transpose()
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
        // One transaction: one commit, and the claim sees the message.
        let recorded = self
            .run(move |conn| {
                atomically(conn, |conn| {
                    let Some(seq) = record_message(conn, &id, &message_id, &text, now)? else {
                        return Ok(None);
                    };
                    let taken = take_lease(conn, &id, &owner, lease_until, now)?;
                    Ok(Some((seq, taken)))
                })
            })
            .await?
            .map_err(backend("SQLite enqueue_and_acquire"))?;
        let Some((seq, taken)) = recorded else {
            return Ok(None);
        };
        Ok(Some(Enqueued {
            seq: to_u64(seq),
            claim: taken.map(|taken| claim_of(conversation_id, taken)).transpose()?,
        }))
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        let row = SaveRow::new(conversation_id, owner, &save)?;
        self.run(move |conn| row.save_then(conn, |_| Ok(())))
            .await?
            .map_err(backend("SQLite save"))?
            .map_err(|LeaseLost| StoreError::LeaseLost(conversation_id.to_string()))
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
            .run(move |conn| row.save_then(conn, |conn| read_transcript(conn, &row.id, after_seq)))
            .await?
            .map_err(backend("SQLite save_and_read_replies"))?
            .map_err(|LeaseLost| StoreError::LeaseLost(conversation_id.to_string()))?;
        let mut entries = transcript_entries(conversation_id, rows)?;
        entries.retain(|e| e.direction != Direction::In);
        Ok(entries)
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        let (id, owner) = (conversation_id.to_string(), owner.to_string());
        self.run(move |conn| conn.prepare_cached(RELEASE)?.execute(params![id, owner]))
            .await?
            .map_err(backend("SQLite release"))?;
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
            conn.prepare_cached(DUE)?
                .query_map(params![now, limit], |row| row.get(0))?
                .collect()
        })
        .await?
        .map_err(backend("SQLite due"))
    }

    async fn counts(&self, now: SystemTime) -> Result<super::ConversationCounts, StoreError> {
        let now = ms(now);
        let (sleeping, parked): (i64, i64) = self
            .run(move |conn| {
                conn.prepare_cached(COUNTS)?
                    .query_row([now], |row| Ok((row.get(0)?, row.get(1)?)))
            })
            .await?
            .map_err(backend("SQLite counts"))?;
        Ok(super::ConversationCounts {
            sleeping: to_u64(sleeping),
            parked: to_u64(parked),
        })
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        let earliest: Option<i64> = self
            .run(|conn| conn.prepare_cached(NEXT_WAKE)?.query_row([], |row| row.get(0)))
            .await?
            .map_err(backend("SQLite next_wake"))?;
        Ok(earliest.map(time))
    }

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let after = ms(after);
        // Rows saved mid-turn (due at once, under a lease) are passed over.
        let earliest: Option<i64> = self
            .run(move |conn| {
                conn.prepare_cached(NEXT_WAKE_AFTER)?
                    .query_row([after], |row| row.get(0))
            })
            .await?
            .map_err(backend("SQLite next_wake_after"))?;
        Ok(earliest.map(time))
    }

    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        let id = conversation_id.to_string();
        let state: Option<Option<String>> = self
            .run(move |conn| {
                conn.prepare_cached(LOAD)?
                    .query_row([&id], |row| row.get(0))
                    .optional()
            })
            .await?
            .map_err(backend("SQLite load"))?;
        state
            .flatten()
            .map(|s| decode_state(conversation_id, &s))
            .transpose()
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
            .map_err(backend("SQLite transcript"))?;
        transcript_entries(conversation_id, rows)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::SqliteStore;
    use super::schema::{Location, MIGRATIONS, supported};
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
        // Migration 0005 kept the entry's message id, under its new name.
        let source: Option<String> = store
            .with_connection(|conn| {
                conn.query_row(
                    "SELECT source_message_id FROM transcript WHERE conversation_id = 'old'",
                    [],
                    |row| row.get(0),
                )
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(source.as_deref(), Some("m1"));
        let version: i64 = store
            .with_connection(|conn| conn.query_row("PRAGMA user_version", [], |row| row.get(0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    /// An older process still running beside a database migrated to 0005:
    /// its enqueue (which left the inbox to a trigger 0005 dropped) fails,
    /// rather than recording a message that would never be answered.
    #[tokio::test]
    async fn an_older_process_enqueue_fails_on_a_migrated_database() {
        const ENQUEUE_BEFORE_0005: &str =
            "INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id)
             SELECT ?1, last + 1, 'in', ?3, ?4, ?2
             FROM (SELECT COALESCE(MAX(seq), 0) AS last FROM transcript WHERE conversation_id = ?1)
             WHERE NOT EXISTS (SELECT 1 FROM seen_messages WHERE conversation_id = ?1 AND message_id = ?2)
             RETURNING seq";
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let old: rusqlite::Result<i64> = store
            .with_connection(|conn| {
                conn.query_row(
                    ENQUEUE_BEFORE_0005,
                    rusqlite::params!["c", "m1", "hi", 0],
                    |row| row.get(0),
                )
            })
            .await
            .unwrap();
        let error = old.unwrap_err().to_string();
        assert!(error.contains("message_id"), "{error}");
        assert!(store.transcript("c", 0).await.unwrap().is_empty());
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

    /// The WAL is copied into the database file as operations go, so it
    /// does not grow without end.
    #[tokio::test]
    async fn checkpoints_copy_the_wal_into_the_database_file() {
        let db = TempDb::new("checkpoint");
        let store = SqliteStore::connect(&db.url()).await.unwrap();
        let file_size = || std::fs::metadata(&db.0).map(|m| m.len()).unwrap_or(0);
        let before = file_size();
        let text = "x".repeat(4096);
        for i in 0..super::connection::CHECKPOINT_EVERY {
            store
                .enqueue("c", &format!("m{i}"), &text, SystemTime::now())
                .await
                .unwrap();
        }
        // The checkpoint runs on the connection's thread: wait for it, briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while file_size() < before + 256 * 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint: {} bytes",
                file_size()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(store.transcript("c", 0).await.unwrap().len(), 256);
    }

    /// A checkpoint that copies the whole WAL lets the next write start it
    /// over from the beginning, so the file stays the size of what is
    /// written between two checkpoints. That is why checkpoints run on the
    /// store's connection, between its writes: run from a second connection
    /// beside the writes, under load they never copied the whole WAL, and it
    /// grew by every page written (900 MB in 15,000 turns).
    #[tokio::test]
    async fn the_wal_starts_over_after_checkpoints_under_steady_writes() {
        let db = TempDb::new("wal-size");
        let store = SqliteStore::connect(&db.url()).await.unwrap();
        let mut wal = db.0.clone().into_os_string();
        wal.push("-wal");
        let every = super::connection::CHECKPOINT_EVERY;
        for round in 0..8 {
            for i in round * every..(round + 1) * every {
                store
                    .enqueue(
                        &format!("c{}", i % 16),
                        &format!("m{i}"),
                        "hello",
                        SystemTime::now(),
                    )
                    .await
                    .unwrap();
            }
            // The connection's thread runs its jobs in order: once this
            // one has run, so has the round's checkpoint.
            store.with_connection(|_| ()).await.unwrap();
        }
        let wal_size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // Each enqueue writes 4 pages (plus a frame header each) to the
        // WAL: never starting over would leave 8 rounds of them.
        let page = u64::try_from(super::schema::PAGE_SIZE).unwrap();
        let one_round = u64::from(every) * 4 * page;
        assert!(wal_size < 2 * one_round, "WAL of {wal_size} bytes");
    }

    /// A new file gets the store's page size; a file made before keeps its
    /// own (SQLite changes it only by rebuilding the file).
    #[tokio::test]
    async fn a_new_file_gets_small_pages_and_an_existing_one_keeps_its_own() {
        let page_size = |store: SqliteStore| async move {
            store
                .with_connection(|conn| conn.query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0)))
                .await
                .unwrap()
                .unwrap()
        };
        let new = TempDb::new("page-new");
        let store = SqliteStore::connect(&new.url()).await.unwrap();
        assert_eq!(page_size(store).await, super::schema::PAGE_SIZE);

        let existing = TempDb::new("page-existing");
        rusqlite::Connection::open(&existing.0)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE host_table (x INTEGER);")
            .unwrap();
        let store = SqliteStore::connect(&existing.url()).await.unwrap();
        store
            .enqueue("c", "m1", "hello", SystemTime::now())
            .await
            .unwrap();
        assert_eq!(page_size(store).await, 4096);
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
        assert!(error.contains("would wait for itself"), "{error}");
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
        assert!(matches!(result, Err(StoreError::Backend { .. })), "{result:?}");
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
        // SQLite's own error is kept as the source.
        let source = std::error::Error::source(&error);
        assert!(
            source.is_some_and(|s| s.downcast_ref::<rusqlite::Error>().is_some()),
            "{error:?}"
        );
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
