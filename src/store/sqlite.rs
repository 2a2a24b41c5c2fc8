//! A store in SQLite (through sqlx): conversations survive a restart, and
//! the processes of one host may share the database file.
//!
//! Every operation is one statement. sqlx runs each statement on the
//! connection's worker thread, so a statement (and a `BEGIN` or `COMMIT`)
//! costs a round trip between threads; one statement also needs no explicit
//! transaction: SQLite runs it atomically, and a statement that writes takes
//! the write lock before it reads anything, so concurrent writers wait for
//! each other (up to the busy timeout) instead of failing on a stale
//! snapshot. Writes that span tables are finished inside the statement by
//! the triggers of migration 0003 (`transcript_enqueue` for
//! [`Store::enqueue`], the `turn_saves` view for [`Store::save`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::sql::*;
use super::{Claim, Direction, InboxEntry, Save, Store, StoreError, TranscriptEntry, decode};
use crate::conversation::Conversation;

/// A [`Store`] in a SQLite database.
///
/// The schema is created (and later migrated) by [`SqliteStore::connect`].
/// A file database runs in WAL mode; `sqlite::memory:` gives a fresh
/// in-memory database, for tests and demos.
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
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The connection the store's own statements run on, taken out of the
    /// pool: each operation is one statement, and a pool checkout and
    /// return cost more thread hand-offs than the statement itself. It also
    /// keeps an in-memory database alive as long as the store.
    conn: Arc<tokio::sync::Mutex<SqliteConnection>>,
}

impl SqliteStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// `sqlite://path/to/file.db` opens the file, creating it if missing
    /// (`?mode=rw` requires it to exist); `sqlite::memory:` is a new
    /// in-memory database that lives as long as the store and its clones.
    /// File databases are put in WAL mode; connections have foreign keys on
    /// and a 10 s busy timeout.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), chatflow::store::StoreError> {
    /// let store = chatflow::store::SqliteStore::connect("sqlite://chatflow.db").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut options = SqliteConnectOptions::from_str(url).map_err(backend)?;
        if !url.contains("mode=") {
            options = options.create_if_missing(true);
        }
        let options = options.foreign_keys(true).busy_timeout(Duration::from_secs(10));
        if !in_memory {
            // One connection: SQLite runs one writer at a time anyway, and
            // writers on several connections wait in its busy handler (which
            // sleeps for milliseconds) instead of in the pool's queue.
            // WAL with synchronous=NORMAL survives a crash of the process
            // (not of the machine) with every committed write. No ping
            // before each checkout: the database is in-process, and a ping
            // is one more round trip to the connection's worker thread.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(
                    options
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal),
                )
                .await
                .map_err(backend)?;
            return Self::from_pool(pool).await;
        }
        // An in-memory database lives as long as a connection to it: the
        // store's own connection holds it. The pool has one connection too,
        // as connections sharing an in-memory database lock whole tables.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(backend)?;
        Self::from_pool(pool).await
    }

    /// A store on a pool the host configured itself; brings the schema up
    /// to date. The pool's connections should have foreign keys on and a
    /// busy timeout (sqlx's defaults).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new()
    ///     .max_connections(4)
    ///     .connect("sqlite://chatflow.db?mode=rwc")
    ///     .await?;
    /// let store = chatflow::store::SqliteStore::from_pool(pool).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&pool)
            .await
            .map_err(backend)?;
        if !supported(&version) {
            return Err(StoreError::Backend(format!(
                "SQLite {version} is too old: the store needs {}.{} or later \
                 (sqlx's bundled SQLite is recent enough)",
                MIN_SQLITE_VERSION.0, MIN_SQLITE_VERSION.1
            )));
        }
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(backend)?;
        let conn = pool.acquire().await.map_err(backend)?.detach();
        Ok(SqliteStore {
            pool,
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    /// The connection pool, e.g. for the host's own queries on the tables.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = chatflow::store::SqliteStore::connect("sqlite::memory:").await?;
    /// let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM conversations")
    ///     .fetch_one(store.pool())
    ///     .await?;
    /// assert_eq!(n, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
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

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        // One statement: the user entry, numbered after the transcript's
        // last, unless the id was seen; the `transcript_enqueue` trigger
        // records the id and fills the inbox. No row comes back for a
        // duplicate.
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id)
             SELECT ?1, last + 1, 'in', ?3, ?4, ?2
             FROM (SELECT COALESCE(MAX(seq), 0) AS last FROM transcript WHERE conversation_id = ?1)
             WHERE NOT EXISTS (
                 SELECT 1 FROM seen_messages WHERE conversation_id = ?1 AND message_id = ?2
             )
             RETURNING seq",
        )
        .bind(conversation_id)
        .bind(message_id)
        .bind(text)
        .bind(ms(now))
        .fetch_optional(&mut *self.conn.lock().await)
        .await
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
        // One statement: creates the row if missing; takes the lease only
        // when it is free, expired or already ours (no row comes back
        // otherwise), and reads the inbox, as JSON, under the same lock.
        let taken: Option<(Option<String>, String)> = sqlx::query_as(
            "INSERT INTO conversations (id, lease_owner, lease_until_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE
                SET lease_owner = excluded.lease_owner, lease_until_ms = excluded.lease_until_ms
                WHERE conversations.lease_owner IS NULL
                   OR conversations.lease_owner = excluded.lease_owner
                   OR conversations.lease_until_ms <= ?4
             RETURNING state, (
                 SELECT json_group_array(json_array(seq, text))
                 FROM (SELECT seq, text FROM inbox WHERE conversation_id = ?1 ORDER BY seq)
             )",
        )
        .bind(conversation_id)
        .bind(owner)
        .bind(ms(lease_until))
        .bind(ms(now))
        .fetch_optional(&mut *self.conn.lock().await)
        .await
        .map_err(backend)?;
        let Some((state, inbox)) = taken else {
            return Ok(None);
        };
        let mut inbox: Vec<(i64, String)> =
            serde_json::from_str(&inbox).map_err(|e| StoreError::Corrupt {
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
        Ok(Some(Claim { conversation, inbox }))
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        let state = serde_json::to_string(save.conversation).map_err(backend)?;
        // One statement: the `turn_saves_insert` trigger checks the lease
        // and writes state, wake-up, inbox and transcript, or aborts the
        // whole statement when the lease is not `owner`'s.
        let result = sqlx::query(
            "INSERT INTO turn_saves
                (conversation_id, owner, state, wake_at_ms, lease_until_ms, consumed_up_to, outgoing, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(conversation_id)
        .bind(owner)
        .bind(&state)
        .bind(save.wake_at.map(ms))
        .bind(ms(save.lease_until))
        .bind(to_i64(save.consumed_up_to))
        .bind(outgoing_json(save.outgoing))
        // The turn's own time is not in `Save`: like the memory store, stamp
        // outgoing entries with the caller's clock.
        .bind(ms(save.now))
        .execute(&mut *self.conn.lock().await)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.message() == LEASE_LOST => {
                Err(StoreError::LeaseLost(conversation_id.to_string()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET lease_owner = NULL, lease_until_ms = NULL
             WHERE id = ?1 AND lease_owner = ?2",
        )
        .bind(conversation_id)
        .bind(owner)
        .execute(&mut *self.conn.lock().await)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        // Overdue since: the wake-up time if it has come, or the arrival of
        // the oldest unapplied message, whichever is earlier. Each side
        // yields at most `limit` free conversations in its own order (the
        // wake-up side walks the (wake_at_ms, id) index and stops there),
        // which holds the first `limit` of the merged order: whatever comes
        // before one of those on its side comes before it overall too.
        sqlx::query_scalar(
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
        )
        .bind(ms(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *self.conn.lock().await)
        .await
        .map_err(backend)
    }

    async fn counts(&self, now: SystemTime) -> Result<super::ConversationCounts, StoreError> {
        let (sleeping, parked): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN wake_at_ms > ?1 THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN wake_at_ms IS NULL THEN 1 ELSE 0 END), 0)
             FROM conversations WHERE state IS NOT NULL",
        )
        .bind(ms(now))
        .fetch_one(&mut *self.conn.lock().await)
        .await
        .map_err(backend)?;
        Ok(super::ConversationCounts {
            sleeping: u64::try_from(sleeping).unwrap_or(0),
            parked: u64::try_from(parked).unwrap_or(0),
        })
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        let earliest: Option<i64> = sqlx::query_scalar("SELECT MIN(wake_at_ms) FROM conversations")
            .fetch_one(&mut *self.conn.lock().await)
            .await
            .map_err(backend)?;
        Ok(earliest.map(time))
    }

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        // A range scan of the wake_at index: rows saved mid-turn (due at
        // once, under a lease) are passed over.
        let earliest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(wake_at_ms) FROM conversations WHERE wake_at_ms > ?1")
                .bind(ms(after))
                .fetch_one(&mut *self.conn.lock().await)
                .await
                .map_err(backend)?;
        Ok(earliest.map(time))
    }

    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        let state: Option<Option<String>> =
            sqlx::query_scalar("SELECT state FROM conversations WHERE id = ?1")
                .bind(conversation_id)
                .fetch_optional(&mut *self.conn.lock().await)
                .await
                .map_err(backend)?;
        state.flatten().map(|s| decode(conversation_id, &s)).transpose()
    }

    async fn transcript(
        &self,
        conversation_id: &str,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, direction, text, at_ms FROM transcript
             WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .bind(conversation_id)
        .bind(to_i64(after_seq))
        .fetch_all(&mut *self.conn.lock().await)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                let direction: String = row.try_get("direction").map_err(backend)?;
                Ok(TranscriptEntry {
                    seq: to_u64(row.try_get("seq").map_err(backend)?),
                    direction: parse_direction(conversation_id, &direction)?,
                    text: row.try_get("text").map_err(backend)?,
                    at_ms: to_u64(row.try_get("at_ms").map_err(backend)?),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::supported;

    #[test]
    fn sqlite_versions_are_compared_as_numbers() {
        assert!(supported("3.46.0"));
        assert!(supported("3.41.0"));
        assert!(supported("4.0.0"));
        assert!(!supported("3.40.1"));
        assert!(!supported("3.9.2"));
        assert!(!supported("garbage"));
    }
}
