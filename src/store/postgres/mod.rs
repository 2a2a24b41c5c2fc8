//! A store in Postgres (through sqlx): for hosts that run several processes
//! against one database.
//!
//! Every operation is one statement (module `queries`, files in
//! `queries/`), so one round trip and one transaction. Each write first
//! locks the conversation's row (the upsert in `enqueue` and `acquire`, the
//! lease-checking `UPDATE` in `save`), so writes to one conversation are
//! serialized and the lease is checked on the row's latest version. A
//! turn's statements run on connections the store keeps open (module
//! `connections`, which says why they are not sqlx's pool); the schema is
//! in `migrations/`.

mod connections;
mod options;
mod queries;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub use self::options::PostgresOptions;

use self::connections::{Connections, Kept};
use self::queries::*;
use super::rows::{
    InboxRow, TranscriptRow, backend, claim, decode_state, direction_name, encode_state, inbox_entry, ms,
    text_of, time, to_i64, to_u64, transcript_entries,
};
use super::{Claim, ConversationCounts, Enqueued, InboxEntry, Save, Store, StoreError, TranscriptEntry};
use crate::conversation::Conversation;

/// A [`Store`] in a Postgres database.
///
/// The schema is created (and later migrated) by [`PostgresStore::connect`],
/// in the first schema of the connection's `search_path` (`public` unless
/// the URL says otherwise, e.g. `?options[search_path]=chatflow`). The
/// host may query the tables from connections of its own; the schema is in
/// `src/store/postgres/migrations/`.
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
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

/// Prints nothing of the connection options: they hold the password.
impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("relaxed_commits", &self.inner.relaxed.is_some())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// sqlx's pool: the scheduler's queries, reads, `release`, migrations.
    pool: PgPool,
    /// A turn's statements that must survive a crash of the database.
    durable: Connections,
    /// `synchronous_commit = off`: a turn's statements a crash may lose
    /// (see [`PostgresStore::connect`]); `None` when every commit is durable.
    relaxed: Option<Connections>,
}

impl PostgresStore {
    /// Connects to the database at `url` and brings its schema up to date.
    /// Processes starting together are safe: migrations run under a
    /// database-wide advisory lock.
    ///
    /// The store holds a pool of up to 10 connections, not pinged before
    /// each use (the scheduler's queries, reads and migrations), and for
    /// turns' statements up to 10 more connections of its own, and 10 with
    /// `synchronous_commit = off`, kept open between statements (closed
    /// after a minute unused): up to 30 per process, to count against the
    /// server's `max_connections` ([`PostgresStore::connect_with`] sets
    /// how many).
    ///
    /// The last are for the writes a crash of the database may lose without
    /// breaking any guarantee: taking a lease alone ([`Store::acquire`]), and
    /// a turn's saves before its last one that send nothing (after a crash
    /// the turn runs again from its last durable save; the runtime's turn
    /// protocol says why that is safe). The last save of a turn, any save
    /// with replies, and every user message (with the lease
    /// [`Store::enqueue_and_acquire`] takes in the same commit) are
    /// committed durably, and a durable commit flushes the relaxed ones
    /// before it. This saves most of a turn's WAL flushes.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), chatflow::store::StoreError> {
    /// let store = chatflow::store::PostgresStore::connect("postgres://localhost/chatflow").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// [`PostgresStore::connect`] with `options`: how many connections,
    /// and whether any commit may skip its WAL flush.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), chatflow::store::StoreError> {
    /// use chatflow::store::{PostgresOptions, PostgresStore};
    ///
    /// let options = PostgresOptions::new().with_max_connections(4).with_relaxed_commits(false);
    /// let store = PostgresStore::connect_with("postgres://localhost/chatflow", options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let max = options.max_connections;
        // No ping before each checkout: it is a round trip per statement, and
        // a broken connection fails the statement with a clear error anyway.
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(max).unwrap_or(u32::MAX))
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(backend("connecting to Postgres"))?;
        sqlx::migrate!("./src/store/postgres/migrations")
            .run(&pool)
            .await
            .map_err(backend("migrating the Postgres schema"))?;
        let connect = (*pool.connect_options()).clone();
        let relaxed = options.relaxed_commits.then(|| {
            let relaxed = connect.clone().options([("synchronous_commit", "off")]);
            Connections::new(relaxed, max)
        });
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                durable: Connections::new(connect, max),
                relaxed,
            }),
        })
    }

    /// A connection for one statement of a turn: `relaxed` when a crash may
    /// lose its commit.
    async fn connection(&self, relaxed: bool) -> Result<Kept<'_>, StoreError> {
        match &self.inner.relaxed {
            Some(connections) if relaxed => connections.get().await,
            _ => self.inner.durable.get().await,
        }
    }
}

/// An inbox read back as parallel arrays (`array_agg` of nothing is NULL).
fn inbox_of(
    id: &str,
    seqs: Option<Vec<i64>>,
    texts: Option<Vec<Vec<u8>>>,
) -> Result<Vec<InboxEntry>, StoreError> {
    let (seqs, texts) = (seqs.unwrap_or_default(), texts.unwrap_or_default());
    if seqs.len() != texts.len() {
        return Err(StoreError::corrupt_because(
            id,
            format!("inbox read back as {} seqs for {} texts", seqs.len(), texts.len()),
        ));
    }
    seqs.into_iter()
        .zip(texts)
        .map(|(seq, text)| {
            let row = InboxRow {
                seq,
                text: text_of(id, text)?,
                transcript_seq: None,
                details: None,
            };
            inbox_entry(id, row)
        })
        .collect()
}

/// A [`Save`]'s parameters, owned by the caller while the statement runs.
struct SaveParams<'a> {
    state: String,
    directions: Vec<&'static str>,
    texts: Vec<&'a [u8]>,
}

impl<'a> SaveParams<'a> {
    fn new(save: &Save<'a>) -> Result<SaveParams<'a>, StoreError> {
        Ok(SaveParams {
            state: encode_state(save.conversation)?,
            directions: save
                .outgoing
                .iter()
                .map(|e| direction_name(e.direction))
                .collect(),
            texts: save.outgoing.iter().map(|e| e.text.as_bytes()).collect(),
        })
    }

    /// `sql` ([`SAVE`] or [`SAVE_AND_READ_REPLIES`]) with the save's nine
    /// parameters bound.
    fn bind<'q>(
        &'q self,
        sql: &'q str,
        conversation_id: &'q str,
        owner: &'q str,
        save: &Save<'_>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql)
            .bind(conversation_id)
            .bind(owner)
            .bind(self.state.as_str())
            .bind(save.wake_at.map(ms))
            .bind(ms(save.lease_until))
            .bind(to_i64(save.consumed_up_to))
            .bind(&self.directions)
            .bind(&self.texts)
            // The turn's own time is not in `Save`: like the memory store,
            // stamp outgoing entries with the caller's clock.
            .bind(ms(save.now))
    }
}

/// Whether a save may be committed without waiting for its WAL flush:
/// mid-turn and silent, so losing it costs a repeat, never a guarantee.
fn relaxed(save: &Save<'_>) -> bool {
    save.outgoing.is_empty() && save.lease_until > save.now
}

#[async_trait]
impl Store for PostgresStore {
    async fn enqueue_message(
        &self,
        conversation_id: &str,
        message: crate::store::InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        let (message_id, text) = (message.message_id, message.text);
        // One statement. The id is recorded first: a duplicate (or a
        // concurrent delivery of the same id, which waits for the first to
        // commit) inserts nothing, and then nothing else happens. Then the
        // conversation's row is locked and its counters advanced on its
        // latest version, so concurrent writers of the conversation queue
        // there and get consecutive seqs. (The foreign keys are checked at
        // the end of the statement, when the row exists.)
        let mut conn = self.connection(false).await?;
        let seq: Option<i64> = sqlx::query_scalar(ENQUEUE)
            .bind(conversation_id)
            .bind(message_id)
            .bind(text.as_bytes())
            .bind(ms(now))
            .fetch_optional(conn.conn())
            .await
            .map_err(backend("Postgres enqueue"))?;
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
        let taken: Option<(Option<String>, Option<Vec<i64>>, Option<Vec<Vec<u8>>>)> = sqlx::query_as(ACQUIRE)
            .bind(conversation_id)
            .bind(owner)
            .bind(ms(lease_until))
            .bind(ms(now))
            .fetch_optional(conn.conn())
            .await
            .map_err(backend("Postgres acquire"))?;
        conn.done();
        let Some((state, seqs, texts)) = taken else {
            return Ok(None);
        };
        let inbox = inbox_of(conversation_id, seqs, texts)?;
        claim(conversation_id, state.as_deref(), inbox).map(Some)
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
        type Row = (
            i64,
            i64,
            bool,
            i64,
            Option<String>,
            Option<Vec<i64>>,
            Option<Vec<Vec<u8>>>,
        );
        let row: Option<Row> = sqlx::query_as(ENQUEUE_AND_ACQUIRE)
            .bind(conversation_id)
            .bind(message_id)
            .bind(text.as_bytes())
            .bind(ms(now))
            .bind(owner)
            .bind(ms(lease_until))
            .fetch_optional(conn.conn())
            .await
            .map_err(backend("Postgres enqueue_and_acquire"))?;
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
        Ok(Some(Enqueued {
            seq,
            claim: Some(claim(conversation_id, state.as_deref(), inbox)?),
        }))
    }

    async fn save(&self, conversation_id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        // One statement, hence one transaction. The lease check and the
        // state write are its UPDATE: it locks the row (as SELECT ... FOR
        // UPDATE would) and re-checks the owner on its latest version, so a
        // takeover that committed first makes it match nothing, and then the
        // inbox and transcript writes, which hang on its result, do nothing
        // either. The transcript seqs come from the row's counter (latest
        // version, under the lock), not from the statement's snapshot, which
        // may miss an entry a concurrent enqueue committed.
        let params = SaveParams::new(&save)?;
        let mut conn = self.connection(relaxed(&save)).await?;
        let saved: bool = params
            .bind(SAVE, conversation_id, owner, &save)
            .fetch_one(conn.conn())
            .await
            .and_then(|row| row.try_get(0))
            .map_err(backend("Postgres save"))?;
        conn.done();
        if saved {
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
        // The save's writes, then the replies: the earlier ones from the
        // statement's snapshot, this save's from its INSERT (a statement
        // cannot see its own writes). The snapshot misses only what was
        // committed while the UPDATE waited for the row lock, which a
        // runner without the lease can have written: user messages, not
        // replies (a takeover of the lease makes the save match nothing).
        type Replies = (
            bool,
            Option<Vec<i64>>,
            Option<Vec<String>>,
            Option<Vec<Vec<u8>>>,
            Option<Vec<i64>>,
        );
        let params = SaveParams::new(&save)?;
        let mut conn = self.connection(relaxed(&save)).await?;
        let (saved, seqs, directions, texts, ats): Replies = params
            .bind(SAVE_AND_READ_REPLIES, conversation_id, owner, &save)
            .bind(to_i64(after_seq))
            .fetch_one(conn.conn())
            .await
            .and_then(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                ))
            })
            .map_err(backend("Postgres save_and_read_replies"))?;
        conn.done();
        if !saved {
            return Err(StoreError::LeaseLost(conversation_id.to_string()));
        }
        let (seqs, directions) = (seqs.unwrap_or_default(), directions.unwrap_or_default());
        let (texts, ats) = (texts.unwrap_or_default(), ats.unwrap_or_default());
        if [directions.len(), texts.len(), ats.len()] != [seqs.len(); 3] {
            return Err(StoreError::corrupt_because(
                conversation_id,
                "replies read back as arrays of different lengths".to_string(),
            ));
        }
        let rows = seqs
            .into_iter()
            .zip(directions)
            .zip(texts.into_iter().zip(ats))
            .map(|((seq, direction), (text, at_ms))| {
                Ok(TranscriptRow {
                    seq,
                    direction,
                    text: text_of(conversation_id, text)?,
                    at_ms,
                    ..TranscriptRow::default()
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        transcript_entries(conversation_id, rows)
    }

    async fn release(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE)
            .bind(conversation_id)
            .bind(owner)
            .execute(&self.inner.pool)
            .await
            .map_err(backend("Postgres release"))?;
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
        sqlx::query_scalar(DUE)
            .bind(ms(now))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend("Postgres due"))
    }

    async fn counts(&self, now: SystemTime) -> Result<ConversationCounts, StoreError> {
        let (sleeping, parked): (i64, i64) = sqlx::query_as(COUNTS)
            .bind(ms(now))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend("Postgres counts"))?;
        Ok(ConversationCounts {
            sleeping: to_u64(sleeping),
            parked: to_u64(parked),
        })
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        let earliest: Option<i64> = sqlx::query_scalar(NEXT_WAKE)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend("Postgres next_wake"))?;
        Ok(earliest.map(time))
    }

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        // Rows saved mid-turn (due at once, under a lease) are passed over.
        let earliest: Option<i64> = sqlx::query_scalar(NEXT_WAKE_AFTER)
            .bind(ms(after))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend("Postgres next_wake_after"))?;
        Ok(earliest.map(time))
    }

    async fn load(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        let state: Option<Option<String>> = sqlx::query_scalar(LOAD)
            .bind(conversation_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend("Postgres load"))?;
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
        let rows: Vec<(i64, String, Vec<u8>, i64)> = sqlx::query_as(TRANSCRIPT)
            .bind(conversation_id)
            .bind(to_i64(after_seq))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend("Postgres transcript"))?;
        let rows = rows
            .into_iter()
            .map(|(seq, direction, text, at_ms)| {
                Ok(TranscriptRow {
                    seq,
                    direction,
                    text: text_of(conversation_id, text)?,
                    at_ms,
                    ..TranscriptRow::default()
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        transcript_entries(conversation_id, rows)
    }

    async fn claim_deliveries(
        &self,
        _owner: &str,
        _lease_until: SystemTime,
        _now: SystemTime,
        _limit: usize,
    ) -> Result<Vec<crate::store::PendingDeliveries>, StoreError> {
        Err(StoreError::backend("claim_deliveries", "not implemented yet"))
    }

    async fn record_delivery(
        &self,
        _conversation_id: &str,
        _owner: &str,
        _seq: u64,
        _record: crate::store::DeliveryRecord<'_>,
        _now: SystemTime,
    ) -> Result<(), StoreError> {
        Err(StoreError::backend("record_delivery", "not implemented yet"))
    }

    async fn release_deliveries(&self, _conversation_id: &str, _owner: &str) -> Result<(), StoreError> {
        Err(StoreError::backend("release_deliveries", "not implemented yet"))
    }

    async fn next_delivery_after(&self, _after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        Err(StoreError::backend("next_delivery_after", "not implemented yet"))
    }

    async fn record_receipt(
        &self,
        _channel_message_id: &str,
        _receipt: &crate::channel::Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        Err(StoreError::backend("record_receipt", "not implemented yet"))
    }

    async fn prune_seen(&self, _before: SystemTime, _limit: usize) -> Result<u64, StoreError> {
        Err(StoreError::backend("prune_seen", "not implemented yet"))
    }
}
