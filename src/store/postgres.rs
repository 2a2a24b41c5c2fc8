//! A store in Postgres (through sqlx): for hosts that run several processes
//! against one database.
//!
//! Every operation is one statement, so one round trip and one transaction
//! (writes across tables are data-modifying CTEs). Each write first locks
//! the conversation's row (the upsert in `enqueue` and `acquire`, the
//! lease-checking `UPDATE` in `save`), so writes to one conversation are
//! serialized and the lease is checked on the row's latest version.

use std::time::SystemTime;

use async_trait::async_trait;
use sqlx::Row;
use std::sync::Arc;

use sqlx::Connection as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};

use super::sql::*;
use super::{Claim, Enqueued, InboxEntry, Save, Store, StoreError, TranscriptEntry, decode};
use crate::conversation::Conversation;

/// How many connections of each kind a store made by
/// [`PostgresStore::connect`] opens for turns' statements.
const TURN_CONNECTIONS: usize = 10;

/// A [`Store`] in a Postgres database.
///
/// The schema is created (and later migrated) by [`PostgresStore::connect`],
/// in the first schema of the connection's `search_path` (`public` unless
/// the URL says otherwise, e.g. `?options[search_path]=chatflow`).
///
/// ```no_run
/// use std::time::SystemTime;
/// use chatflow::store::{PostgresStore, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://chatflow:secret@localhost/chatflow").await?;
/// store.enqueue("user-1", "m1", "hello", SystemTime::now()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The connections of a turn's statements, for a store made by
    /// [`PostgresStore::connect`]; `None` on a host's pool, where they use
    /// `pool`.
    turns: Option<Arc<TurnConnections>>,
}

/// A turn's statements (enqueue, lease, saves) run on connections the
/// store keeps open between statements, outside any sqlx pool: sqlx checks a
/// connection returned to its pool with a round trip (a Sync message), which
/// would double the round trips of these one-statement operations.
#[derive(Debug)]
struct TurnConnections {
    durable: Connections,
    /// `synchronous_commit = off`: for writes a crash may lose (see
    /// [`PostgresStore::connect`]).
    relaxed: Connections,
}

/// Up to `permits` open connections, the idle ones kept for the next
/// statement. A connection is opened only when none is idle and a permit is
/// held, so no more than `permits` are ever open. One idle for longer than
/// [`IDLE_LIMIT`] is closed rather than used: a firewall or a failover may
/// have cut it, and its first statement would fail.
#[derive(Debug)]
struct Connections {
    options: PgConnectOptions,
    /// Idle connections and since when, the most recently used last.
    idle: std::sync::Mutex<Vec<(PgConnection, std::time::Instant)>>,
    permits: tokio::sync::Semaphore,
}

/// How long a kept connection may sit idle (sqlx's pools allow 10 minutes;
/// connections of a busy store are reused within milliseconds).
const IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long opening a connection may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Connections {
    fn new(options: PgConnectOptions, max: usize) -> Connections {
        Connections {
            options,
            idle: std::sync::Mutex::default(),
            permits: tokio::sync::Semaphore::new(max),
        }
    }

    async fn get(&self) -> Result<Connection<'_>, StoreError> {
        let permit = self.permits.acquire().await.map_err(backend)?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // The least recently used come first: those idle too long go.
            let now = std::time::Instant::now();
            idle.retain(|(_, since)| now.duration_since(*since) < IDLE_LIMIT);
            idle.pop()
        };
        let conn = match idle {
            Some((conn, _)) => conn,
            None => tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options))
                .await
                .map_err(|_| {
                    StoreError::Backend(format!(
                        "connecting to Postgres took longer than {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(backend)?,
        };
        Ok(Connection::Kept {
            from: self,
            conn,
            _permit: permit,
        })
    }
}

/// A connection for one statement.
enum Connection<'a> {
    /// From a host's pool: returned to it when dropped.
    Pooled(PoolConnection<Postgres>),
    /// One of [`Connections`]: kept for the next statement by
    /// [`Connection::done`]. Dropped without it (the statement failed, or
    /// its future was dropped midway, leaving the protocol state unknown),
    /// it is closed.
    Kept {
        from: &'a Connections,
        conn: PgConnection,
        _permit: tokio::sync::SemaphorePermit<'a>,
    },
}

impl Connection<'_> {
    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Connection::Pooled(conn) => conn,
            Connection::Kept { conn, .. } => conn,
        }
    }

    /// The statement completed: the connection is ready for the next one.
    fn done(self) {
        if let Connection::Kept { from, conn, _permit } = self {
            from.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((conn, std::time::Instant::now()));
        }
    }
}

impl PostgresStore {
    /// Connects to the database at `url` and brings its schema up to date.
    /// Processes starting together are safe: migrations run under a
    /// database-wide advisory lock.
    ///
    /// The store holds a pool of up to 10 connections, not pinged before
    /// each use ([`PostgresStore::pool`]: the scheduler's queries, reads,
    /// migrations and the host's own queries), and for turns' statements up
    /// to 10 more connections of its own, and 10 with `synchronous_commit =
    /// off`, kept open between statements (closed after a minute unused):
    /// up to 30 per process, to count against the server's
    /// `max_connections`. The last are for the
    /// writes a database crash may lose without breaking any guarantee:
    /// taking a lease alone ([`Store::acquire`]), and a turn's saves before
    /// its last one that send nothing (after a crash the turn runs again
    /// from its last durable save, repeating at most Api calls). The last
    /// save of a turn, any save with replies, and every user message (with
    /// the lease [`Store::enqueue_and_acquire`] takes in the same commit)
    /// are committed durably, and a durable commit flushes the relaxed ones
    /// before it. This saves most of a turn's WAL flushes.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), chatflow::store::StoreError> {
    /// let store = chatflow::store::PostgresStore::connect("postgres://localhost/chatflow").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // No ping before each checkout: it is a round trip per statement, and
        // a broken connection fails the statement with a clear error anyway.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(backend)?;
        let options = (*pool.connect_options()).clone();
        let relaxed = options.clone().options([("synchronous_commit", "off")]);
        let mut store = Self::from_pool(pool).await?;
        store.turns = Some(Arc::new(TurnConnections {
            durable: Connections::new(options, TURN_CONNECTIONS),
            relaxed: Connections::new(relaxed, TURN_CONNECTIONS),
        }));
        Ok(store)
    }

    /// A store on a pool the host configured itself (connection hooks,
    /// schema, sizes: all of it is the host's); brings the schema up to
    /// date. Every write is committed durably; [`PostgresStore::connect`]
    /// relaxes the ones that may be lost.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::postgres::PgPoolOptions::new()
    ///     .max_connections(32)
    ///     .connect("postgres://localhost/chatflow")
    ///     .await?;
    /// let store = chatflow::store::PostgresStore::from_pool(pool).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(backend)?;
        Ok(PostgresStore { pool, turns: None })
    }

    /// A connection for one statement of a turn: `relaxed` when a crash may
    /// lose its commit.
    async fn connection(&self, relaxed: bool) -> Result<Connection<'_>, StoreError> {
        match &self.turns {
            Some(turns) if relaxed => turns.relaxed.get().await,
            Some(turns) => turns.durable.get().await,
            None => self.pool.acquire().await.map(Connection::Pooled).map_err(backend),
        }
    }

    /// The connection pool, e.g. for the host's own queries on the tables.
    ///
    /// ```no_run
    /// # async fn f(store: chatflow::store::PostgresStore) -> Result<(), sqlx::Error> {
    /// let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM conversations")
    ///     .fetch_one(store.pool())
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Message texts are stored as UTF-8 bytes (Postgres text cannot hold NUL).
fn text_of(id: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        message: format!("message text is not UTF-8: {e}"),
    })
}

/// An inbox read back as parallel arrays (`array_agg` of nothing is NULL).
fn inbox_of(
    id: &str,
    seqs: Option<Vec<i64>>,
    texts: Option<Vec<Vec<u8>>>,
) -> Result<Vec<InboxEntry>, StoreError> {
    let (seqs, texts) = (seqs.unwrap_or_default(), texts.unwrap_or_default());
    if seqs.len() != texts.len() {
        return Err(StoreError::Corrupt {
            id: id.to_string(),
            message: format!("inbox read back as {} seqs for {} texts", seqs.len(), texts.len()),
        });
    }
    seqs.into_iter()
        .zip(texts)
        .map(|(seq, text)| {
            Ok(InboxEntry {
                seq: to_u64(seq),
                text: text_of(id, text)?,
            })
        })
        .collect()
}

/// The writes of `save` (and of `save_and_read_replies`, which reads after
/// them in the same statement): `$1` conversation, `$2` owner, `$3` state,
/// `$4` wake-up, `$5` lease end, `$6` consumed up to, `$7` and `$8` the
/// outgoing directions and texts, `$9` their time.
///
/// One statement, hence one transaction. The lease check and the state
/// write are the UPDATE: it locks the row (as SELECT ... FOR UPDATE would)
/// and re-checks the owner on its latest version, so a takeover that
/// committed first makes it match nothing, and then the inbox and
/// transcript writes, which hang on its result, do nothing either. The
/// transcript seqs come from the row's counter (latest version, under the
/// lock), not from the statement's snapshot, which may miss an entry a
/// concurrent enqueue committed.
macro_rules! save_writes {
    () => {
        "WITH saved AS (
             UPDATE conversations SET
                 state = $3, wake_at_ms = $4, lease_until_ms = $5,
                 applied_inbox_seq = GREATEST(applied_inbox_seq, $6),
                 next_transcript_seq = CASE WHEN cardinality($7::text[]) = 0 THEN next_transcript_seq
                     ELSE GREATEST(
                         next_transcript_seq,
                         (SELECT COALESCE(MAX(seq), 0) + 1 FROM transcript WHERE conversation_id = $1)
                     ) + cardinality($7::text[])
                 END
             WHERE id = $1 AND lease_owner = $2
             RETURNING next_transcript_seq - cardinality($7::text[]) AS first_seq
         ),
         consumed AS (
             DELETE FROM inbox
             WHERE conversation_id = $1 AND seq <= $6 AND EXISTS (SELECT 1 FROM saved)
         ),
         said AS (
             INSERT INTO transcript (conversation_id, seq, direction, text, at_ms)
             SELECT $1, saved.first_seq + entry.n - 1, entry.direction, entry.text, $9
             FROM saved, unnest($7::text[], $8::bytea[]) WITH ORDINALITY AS entry (direction, text, n)
             RETURNING seq, direction, text, at_ms
         )
         "
    };
}

/// `sql` (which starts with [`save_writes!`]) with a [`Save`] bound.
fn bind_save<'q>(
    sql: &'q str,
    conversation_id: &'q str,
    owner: &'q str,
    state: &'q str,
    save: &Save<'q>,
    directions: &'q [&'q str],
    texts: &'q [&'q [u8]],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(conversation_id)
        .bind(owner)
        .bind(state)
        .bind(save.wake_at.map(ms))
        .bind(ms(save.lease_until))
        .bind(to_i64(save.consumed_up_to))
        .bind(directions)
        .bind(texts)
        // The turn's own time is not in `Save`: like the memory store, stamp
        // outgoing entries with the caller's clock.
        .bind(ms(save.now))
}

/// Whether a save may be committed without waiting for its WAL flush:
/// mid-turn and silent, so losing it costs a repeat, never a guarantee.
fn relaxed(save: &Save<'_>) -> bool {
    save.outgoing.is_empty() && save.lease_until > save.now
}

#[async_trait]
impl Store for PostgresStore {
    async fn enqueue(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        // One statement. The id is recorded first: a duplicate (or a
        // concurrent delivery of the same id, which waits for the first to
        // commit) inserts nothing, and then nothing else happens. Then the
        // conversation's row is locked and its counters advanced on its
        // latest version, so concurrent writers of the conversation queue
        // there and get consecutive seqs. (The foreign keys are checked at
        // the end of the statement, when the row exists.)
        let mut conn = self.connection(false).await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "WITH seen AS (
                 INSERT INTO seen_messages (conversation_id, message_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             ),
             conversation AS (
                 INSERT INTO conversations (id, next_inbox_seq, next_transcript_seq)
                 SELECT $1, 2, 2 FROM seen
                 ON CONFLICT (id) DO UPDATE SET
                     next_inbox_seq = conversations.next_inbox_seq + 1,
                     next_transcript_seq = GREATEST(
                         conversations.next_transcript_seq,
                         (SELECT COALESCE(MAX(seq), 0) + 1 FROM transcript WHERE conversation_id = $1)
                     ) + 1
                 RETURNING next_inbox_seq - 1 AS inbox_seq, next_transcript_seq - 1 AS seq
             ),
             inbox_entry AS (
                 INSERT INTO inbox (conversation_id, seq, text, at_ms)
                 SELECT $1, inbox_seq, $3, $4 FROM conversation
             ),
             transcript_entry AS (
                 INSERT INTO transcript (conversation_id, seq, direction, text, at_ms)
                 SELECT $1, seq, 'in', $3, $4 FROM conversation
             )
             SELECT seq FROM conversation",
        )
        .bind(conversation_id)
        .bind(message_id)
        .bind(text.as_bytes())
        .bind(ms(now))
        .fetch_optional(conn.conn())
        .await
        .map_err(backend)?;
        conn.done();
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
        // otherwise; the condition is evaluated on the row's latest version,
        // under its lock), and reads the inbox. The inbox is read with the
        // statement's snapshot, taken before the row lock was granted:
        // - it may miss a message committed meanwhile, which stays in the
        //   inbox for the next turn;
        // - it may still show messages the previous holder's last save
        //   applied and deleted meanwhile: the row's latest version says up
        //   to which seq they are applied, and those are left out.
        let mut conn = self.connection(true).await?;
        let taken: Option<(Option<String>, Option<Vec<i64>>, Option<Vec<Vec<u8>>>)> = sqlx::query_as(
            "WITH lease AS (
                 INSERT INTO conversations (id, lease_owner, lease_until_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE
                    SET lease_owner = EXCLUDED.lease_owner, lease_until_ms = EXCLUDED.lease_until_ms
                    WHERE conversations.lease_owner IS NULL
                       OR conversations.lease_owner = EXCLUDED.lease_owner
                       OR conversations.lease_until_ms <= $4
                 RETURNING state, applied_inbox_seq
             )
             SELECT lease.state, inbox.seqs, inbox.texts
             FROM lease, LATERAL (
                 SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(text ORDER BY seq) AS texts
                 FROM inbox WHERE conversation_id = $1 AND seq > lease.applied_inbox_seq
             ) AS inbox",
        )
        .bind(conversation_id)
        .bind(owner)
        .bind(ms(lease_until))
        .bind(ms(now))
        .fetch_optional(conn.conn())
        .await
        .map_err(backend)?;
        conn.done();
        let Some((state, seqs, texts)) = taken else {
            return Ok(None);
        };
        let inbox = inbox_of(conversation_id, seqs, texts)?;
        // As in the memory store, the lease stays taken even when the state
        // turns out to be unreadable.
        let conversation = state.as_deref().map(|s| decode(conversation_id, s)).transpose()?;
        Ok(Some(Claim { conversation, inbox }))
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
        // One statement, committed durably: `enqueue`'s writes, with the
        // lease taken by the same upsert of the conversation's row (one
        // statement cannot update a row twice), on the row's latest version
        // and under its lock, as `acquire` does; its SET expressions all
        // read the row as it was, so the lease is taken only when it was
        // free, expired or ours, while the counters always advance. The
        // inbox is read as `acquire` reads it, from the statement's
        // snapshot, left out what the latest version says is applied, plus
        // this message, which the snapshot cannot show.
        let mut conn = self.connection(false).await?;
        let row: Option<(
            i64,
            i64,
            bool,
            i64,
            Option<String>,
            Option<Vec<i64>>,
            Option<Vec<Vec<u8>>>,
        )> = sqlx::query_as(
            "WITH seen AS (
                     INSERT INTO seen_messages (conversation_id, message_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING
                     RETURNING 1
                 ),
                 conversation AS (
                     INSERT INTO conversations AS c
                         (id, next_inbox_seq, next_transcript_seq, lease_owner, lease_until_ms)
                     SELECT $1, 2, 2, $5, $6 FROM seen
                     ON CONFLICT (id) DO UPDATE SET
                         next_inbox_seq = c.next_inbox_seq + 1,
                         next_transcript_seq = GREATEST(
                             c.next_transcript_seq,
                             (SELECT COALESCE(MAX(seq), 0) + 1 FROM transcript WHERE conversation_id = $1)
                         ) + 1,
                         lease_owner = CASE
                             WHEN c.lease_owner IS NULL OR c.lease_owner = $5 OR c.lease_until_ms <= $7
                             THEN $5 ELSE c.lease_owner END,
                         lease_until_ms = CASE
                             WHEN c.lease_owner IS NULL OR c.lease_owner = $5 OR c.lease_until_ms <= $7
                             THEN $6 ELSE c.lease_until_ms END
                     RETURNING next_inbox_seq - 1 AS inbox_seq, next_transcript_seq - 1 AS seq,
                         lease_owner = $5 AS leased, applied_inbox_seq,
                         CASE WHEN lease_owner = $5 THEN state END AS state
                 ),
                 inbox_entry AS (
                     INSERT INTO inbox (conversation_id, seq, text, at_ms)
                     SELECT $1, inbox_seq, $3, $4 FROM conversation
                 ),
                 transcript_entry AS (
                     INSERT INTO transcript (conversation_id, seq, direction, text, at_ms)
                     SELECT $1, seq, 'in', $3, $4 FROM conversation
                 )
                 SELECT c.seq, c.inbox_seq, c.leased, c.applied_inbox_seq, c.state, inbox.seqs, inbox.texts
                 FROM conversation AS c, LATERAL (
                     SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(text ORDER BY seq) AS texts
                     FROM (
                         SELECT seq, text FROM inbox
                         WHERE c.leased AND conversation_id = $1 AND seq > c.applied_inbox_seq
                         UNION ALL
                         SELECT c.inbox_seq, $3 WHERE c.leased
                     ) AS entry
                 ) AS inbox",
        )
        .bind(conversation_id)
        .bind(message_id)
        .bind(text.as_bytes())
        .bind(ms(now))
        .bind(owner)
        .bind(ms(lease_until))
        .bind(ms(now))
        .fetch_optional(conn.conn())
        .await
        .map_err(backend)?;
        conn.done();
        let Some((seq, inbox_seq, leased, applied, state, seqs, texts)) = row else {
            return Ok(None);
        };
        let seq = to_u64(seq);
        if !leased {
            return Ok(Some(Enqueued { seq, claim: None }));
        }
        let inbox = inbox_of(conversation_id, seqs, texts)?;
        // The snapshot shows a prefix of the committed messages (seqs are
        // given under the row lock, in commit order), but it misses those a
        // concurrent enqueue committed while this statement waited for the
        // lock, and they come before this one: applying this one would
        // consume them unapplied. Every seq from the applied one to this
        // message's is then not listed; the lease is ours now, and taking
        // it again reads the inbox with a snapshot that shows them all.
        let complete = inbox
            .iter()
            .map(|e| e.seq)
            .eq(to_u64(applied) + 1..=to_u64(inbox_seq));
        if !complete {
            let claim = self.acquire(conversation_id, owner, lease_until, now).await?;
            return Ok(Some(Enqueued { seq, claim }));
        }
        // As in `acquire`, the lease stays taken even when the state turns
        // out to be unreadable.
        let conversation = state.as_deref().map(|s| decode(conversation_id, s)).transpose()?;
        Ok(Some(Enqueued {
            seq,
            claim: Some(Claim { conversation, inbox }),
        }))
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        let state = serde_json::to_string(save.conversation).map_err(backend)?;
        let directions: Vec<&str> = save.outgoing.iter().map(|(d, _)| direction_name(*d)).collect();
        let texts: Vec<&[u8]> = save.outgoing.iter().map(|(_, t)| t.as_bytes()).collect();
        let sql = concat!(save_writes!(), "SELECT EXISTS (SELECT 1 FROM saved)");
        let mut conn = self.connection(relaxed(&save)).await?;
        let row = bind_save(sql, conversation_id, owner, &state, &save, &directions, &texts)
            .fetch_one(conn.conn())
            .await
            .map_err(backend)?;
        conn.done();
        if row.try_get::<bool, _>(0).map_err(backend)? {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(conversation_id.to_string()))
        }
    }

    async fn save_and_read_replies(
        &self,
        conversation_id: &str,
        owner: &str,
        save: Save<'_>,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let state = serde_json::to_string(save.conversation).map_err(backend)?;
        let directions: Vec<&str> = save.outgoing.iter().map(|(d, _)| direction_name(*d)).collect();
        let texts: Vec<&[u8]> = save.outgoing.iter().map(|(_, t)| t.as_bytes()).collect();
        // The save's writes, then the replies: the earlier ones from the
        // statement's snapshot, this save's from its INSERT (a statement
        // cannot see its own writes). The snapshot misses only what was
        // committed while the UPDATE waited for the row lock, which a
        // runner without the lease can have written: user messages, not
        // replies (a takeover of the lease makes the save match nothing).
        let sql = concat!(
            save_writes!(),
            "SELECT EXISTS (SELECT 1 FROM saved), replies.seqs, replies.directions, replies.texts, replies.ats
             FROM (
                 SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(direction ORDER BY seq) AS directions,
                        array_agg(text ORDER BY seq) AS texts, array_agg(at_ms ORDER BY seq) AS ats
                 FROM (
                     SELECT seq, direction, text, at_ms FROM transcript
                     WHERE conversation_id = $1 AND seq > $10 AND direction <> 'in'
                       AND EXISTS (SELECT 1 FROM saved)
                     UNION ALL
                     SELECT seq, direction, text, at_ms FROM said
                 ) AS entry
             ) AS replies"
        );
        let mut conn = self.connection(relaxed(&save)).await?;
        let row = bind_save(sql, conversation_id, owner, &state, &save, &directions, &texts)
            .bind(to_i64(after_seq))
            .fetch_one(conn.conn())
            .await
            .map_err(backend)?;
        conn.done();
        if !row.try_get::<bool, _>(0).map_err(backend)? {
            return Err(StoreError::LeaseLost(conversation_id.to_string()));
        }
        let seqs: Option<Vec<i64>> = row.try_get(1).map_err(backend)?;
        let directions: Option<Vec<String>> = row.try_get(2).map_err(backend)?;
        let texts: Option<Vec<Vec<u8>>> = row.try_get(3).map_err(backend)?;
        let ats: Option<Vec<i64>> = row.try_get(4).map_err(backend)?;
        let (seqs, directions) = (seqs.unwrap_or_default(), directions.unwrap_or_default());
        let (texts, ats) = (texts.unwrap_or_default(), ats.unwrap_or_default());
        if [directions.len(), texts.len(), ats.len()] != [seqs.len(); 3] {
            return Err(StoreError::Corrupt {
                id: conversation_id.to_string(),
                message: "replies read back as arrays of different lengths".to_string(),
            });
        }
        seqs.into_iter()
            .zip(directions)
            .zip(texts.into_iter().zip(ats))
            .map(|((seq, direction), (text, at_ms))| {
                Ok(TranscriptEntry {
                    seq: to_u64(seq),
                    direction: parse_direction(conversation_id, &direction)?,
                    text: text_of(conversation_id, text)?,
                    at_ms: to_u64(at_ms),
                })
            })
            .collect()
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET lease_owner = NULL, lease_until_ms = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(conversation_id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        // SKIP LOCKED passes over conversations a writer holds right now
        // (a pollers' race is settled by the lease in `acquire`).
        // Overdue since: the wake-up time if it has come, or the arrival of
        // the oldest unapplied message, whichever is earlier. Each side
        // yields at most `limit` free conversations in its own order (the
        // wake-up side walks the (wake_at_ms, id) index and stops there),
        // which holds the first `limit` of the merged order: whatever comes
        // before one of those on its side comes before it overall too.
        sqlx::query_scalar(
            "WITH woken (id, since) AS (
                 SELECT id, wake_at_ms FROM conversations
                 WHERE wake_at_ms <= $1 AND (lease_owner IS NULL OR lease_until_ms <= $1)
                 ORDER BY wake_at_ms, id
                 LIMIT $2
             ),
             messaged (id, since) AS (
                 SELECT i.conversation_id, MIN(i.at_ms) FROM inbox i
                 JOIN conversations c ON c.id = i.conversation_id
                 WHERE c.lease_owner IS NULL OR c.lease_until_ms <= $1
                 GROUP BY i.conversation_id
                 ORDER BY MIN(i.at_ms), i.conversation_id
                 LIMIT $2
             ),
             overdue (id, since) AS (
                 SELECT id, MIN(since) FROM (
                     SELECT id, since FROM woken UNION ALL SELECT id, since FROM messaged
                 ) AS pending
                 GROUP BY id
             )
             SELECT c.id FROM overdue o JOIN conversations c ON c.id = o.id
             ORDER BY o.since, c.id
             LIMIT $2
             FOR UPDATE OF c SKIP LOCKED",
        )
        .bind(ms(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
    }

    async fn counts(&self, now: SystemTime) -> Result<super::ConversationCounts, StoreError> {
        let (sleeping, parked): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN wake_at_ms > $1 THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN wake_at_ms IS NULL THEN 1 ELSE 0 END), 0)
             FROM conversations WHERE state IS NOT NULL",
        )
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(super::ConversationCounts {
            sleeping: u64::try_from(sleeping).unwrap_or(0),
            parked: u64::try_from(parked).unwrap_or(0),
        })
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        let earliest: Option<i64> = sqlx::query_scalar("SELECT MIN(wake_at_ms) FROM conversations")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(earliest.map(time))
    }

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        // A range scan of the wake_at index: rows saved mid-turn (due at
        // once, under a lease) are passed over.
        let earliest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(wake_at_ms) FROM conversations WHERE wake_at_ms > $1")
                .bind(ms(after))
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        Ok(earliest.map(time))
    }

    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        let state: Option<Option<String>> =
            sqlx::query_scalar("SELECT state FROM conversations WHERE id = $1")
                .bind(conversation_id)
                .fetch_optional(&self.pool)
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
             WHERE conversation_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(conversation_id)
        .bind(to_i64(after_seq))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                let direction: String = row.try_get("direction").map_err(backend)?;
                Ok(TranscriptEntry {
                    seq: to_u64(row.try_get("seq").map_err(backend)?),
                    direction: parse_direction(conversation_id, &direction)?,
                    text: text_of(conversation_id, row.try_get("text").map_err(backend)?)?,
                    at_ms: to_u64(row.try_get("at_ms").map_err(backend)?),
                })
            })
            .collect()
    }
}
