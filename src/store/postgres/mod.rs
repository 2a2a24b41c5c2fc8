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
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

pub use self::options::PostgresOptions;

use self::connections::{Connections, Kept};
use self::queries::*;
use super::rows::{
    InboxRow, TranscriptRow, backend, claim, decode_state, delivery_columns, direction_name, encode_details,
    encode_options, encode_state, inbox_entry, ms, receipt_rank, text_of, time, to_i64, to_u64,
    transcript_entries,
};
use super::{
    Claim, ConversationCounts, DeliveryRecord, Direction, Enqueued, InboundMessage, InboxEntry,
    PendingDeliveries, Save, Store, StoreError, TranscriptEntry,
};
use crate::channel::Receipt;
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
struct InboxArrays {
    seqs: Option<Vec<i64>>,
    texts: Option<Vec<Vec<u8>>>,
    transcript_seqs: Option<Vec<Option<i64>>>,
    details: Option<Vec<Option<String>>>,
}

impl InboxArrays {
    fn from_row(row: &PgRow, at: usize) -> Result<InboxArrays, sqlx::Error> {
        Ok(InboxArrays {
            seqs: row.try_get(at)?,
            texts: row.try_get(at + 1)?,
            transcript_seqs: row.try_get(at + 2)?,
            details: row.try_get(at + 3)?,
        })
    }

    fn into_entries(self, id: &str) -> Result<Vec<InboxEntry>, StoreError> {
        let seqs = self.seqs.unwrap_or_default();
        let texts = self.texts.unwrap_or_default();
        let transcript_seqs = self.transcript_seqs.unwrap_or_default();
        let details = self.details.unwrap_or_default();
        if [texts.len(), transcript_seqs.len(), details.len()] != [seqs.len(); 3] {
            return Err(StoreError::corrupt_because(
                id,
                format!("inbox read back as {} seqs for {} texts", seqs.len(), texts.len()),
            ));
        }
        seqs.into_iter()
            .zip(texts)
            .zip(transcript_seqs.into_iter().zip(details))
            .map(|((seq, text), (transcript_seq, details))| {
                let row = InboxRow {
                    seq,
                    text: text_of(id, text)?,
                    transcript_seq,
                    details,
                };
                inbox_entry(id, row)
            })
            .collect()
    }
}

/// The transcript row in `row`'s columns from `at` on, in [`TRANSCRIPT`]'s
/// order; `None` when its seq is NULL (a reply list's empty row).
fn transcript_row(id: &str, row: &PgRow, at: usize) -> Result<Option<TranscriptRow>, StoreError> {
    let read = |e| StoreError::backend("reading a Postgres transcript row", e);
    let Some(seq) = row.try_get::<Option<i64>, _>(at).map_err(read)? else {
        return Ok(None);
    };
    let text: Vec<u8> = row.try_get(at + 2).map_err(read)?;
    Ok(Some(TranscriptRow {
        seq,
        direction: row.try_get(at + 1).map_err(read)?,
        text: text_of(id, text)?,
        at_ms: row.try_get(at + 3).map_err(read)?,
        message_id: row.try_get(at + 4).map_err(read)?,
        options: row.try_get(at + 5).map_err(read)?,
        details: row.try_get(at + 6).map_err(read)?,
        reply_to: row.try_get(at + 7).map_err(read)?,
        delivery_status: row.try_get(at + 8).map_err(read)?,
        delivery_attempts: row
            .try_get::<Option<i32>, _>(at + 9)
            .map_err(read)?
            .map(i64::from),
        channel_message_id: row.try_get(at + 10).map_err(read)?,
        delivery_detail: row.try_get(at + 11).map_err(read)?,
        receipt_status: row.try_get(at + 12).map_err(read)?,
        receipt_detail: row.try_get(at + 13).map_err(read)?,
        receipt_at_ms: row.try_get(at + 14).map_err(read)?,
    }))
}

/// A [`Save`]'s parameters, owned by the caller while the statement runs.
struct SaveParams<'a> {
    state: String,
    directions: Vec<&'static str>,
    texts: Vec<&'a [u8]>,
    options: Vec<Option<String>>,
    details: Vec<Option<String>>,
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
            options: save
                .outgoing
                .iter()
                .map(|e| encode_options(&e.options))
                .collect::<Result<_, _>>()?,
            details: save
                .outgoing
                .iter()
                .map(|e| encode_details(e.details.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// `sql` ([`SAVE`] or [`SAVE_AND_READ_REPLIES`]) with the save's
    /// thirteen parameters bound.
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
            .bind(save.reply_to.map(to_i64))
            .bind(save.deliver)
            .bind(&self.options)
            .bind(&self.details)
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
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        let details = encode_details(message.details)?;
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
            .bind(message.message_id)
            .bind(message.text.as_bytes())
            .bind(ms(now))
            .bind(details)
            .bind(message.answers)
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
        let taken: Option<(Option<String>, InboxArrays)> = sqlx::query(ACQUIRE)
            .bind(conversation_id)
            .bind(owner)
            .bind(ms(lease_until))
            .bind(ms(now))
            .try_map(|row: PgRow| Ok((row.try_get(0)?, InboxArrays::from_row(&row, 1)?)))
            .fetch_optional(conn.conn())
            .await
            .map_err(backend("Postgres acquire"))?;
        conn.done();
        let Some((state, inbox)) = taken else {
            return Ok(None);
        };
        let inbox = inbox.into_entries(conversation_id)?;
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
        type Row = (i64, i64, bool, i64, Option<String>, InboxArrays);
        let row: Option<Row> = sqlx::query(ENQUEUE_AND_ACQUIRE)
            .bind(conversation_id)
            .bind(message_id)
            .bind(text.as_bytes())
            .bind(ms(now))
            .bind(owner)
            .bind(ms(lease_until))
            .try_map(|row: PgRow| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                    InboxArrays::from_row(&row, 5)?,
                ))
            })
            .fetch_optional(conn.conn())
            .await
            .map_err(backend("Postgres enqueue_and_acquire"))?;
        conn.done();
        let Some((seq, inbox_seq, leased, applied, state, inbox)) = row else {
            return Ok(None);
        };
        let seq = to_u64(seq);
        if !leased {
            return Ok(Some(Enqueued { seq, claim: None }));
        }
        let inbox = inbox.into_entries(conversation_id)?;
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
        reply_to: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        // The save's writes, then the replies: the earlier ones from the
        // statement's snapshot, this save's from its INSERT (a statement
        // cannot see its own writes). The snapshot misses only what was
        // committed while the UPDATE waited for the row lock, which a
        // runner without the lease can have written: user messages, not
        // replies (a takeover of the lease makes the save match nothing).
        let params = SaveParams::new(&save)?;
        let mut conn = self.connection(relaxed(&save)).await?;
        let rows = params
            .bind(SAVE_AND_READ_REPLIES, conversation_id, owner, &save)
            .bind(to_i64(reply_to))
            .fetch_all(conn.conn())
            .await
            .map_err(backend("Postgres save_and_read_replies"))?;
        conn.done();
        let saved = match rows.first() {
            Some(row) => row
                .try_get::<bool, _>(0)
                .map_err(backend("Postgres save_and_read_replies"))?,
            None => false,
        };
        if !saved {
            return Err(StoreError::LeaseLost(conversation_id.to_string()));
        }
        let rows = rows
            .iter()
            .filter_map(|row| transcript_row(conversation_id, row, 1).transpose())
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
        let rows = sqlx::query(TRANSCRIPT)
            .bind(conversation_id)
            .bind(to_i64(after_seq))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend("Postgres transcript"))?;
        let rows = rows
            .iter()
            .filter_map(|row| transcript_row(conversation_id, row, 0).transpose())
            .collect::<Result<Vec<_>, StoreError>>()?;
        transcript_entries(conversation_id, rows)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDeliveries>, StoreError> {
        // SKIP LOCKED: two deliverers never wait for, nor take, the same
        // conversation; the lease then keeps it for the one that took it.
        let mut claimed: Vec<(String, i64)> = sqlx::query_as(CLAIM_DELIVERIES)
            .bind(owner)
            .bind(ms(lease_until))
            .bind(ms(now))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend("Postgres claim_deliveries"))?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        claimed.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let ids: Vec<String> = claimed.into_iter().map(|(id, _)| id).collect();
        // Read under the delivery lease: no other deliverer changes them.
        let rows = sqlx::query(DELIVERIES)
            .bind(&ids)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend("Postgres claim_deliveries"))?;
        let mut pending: Vec<PendingDeliveries> = ids
            .iter()
            .map(|id| PendingDeliveries::new(id.clone(), Vec::new(), None))
            .collect();
        for row in &rows {
            let id: String = row.try_get(0).map_err(backend("Postgres claim_deliveries"))?;
            let Some(entry) = transcript_row(&id, row, 1)? else {
                continue;
            };
            let entry = entry.into_entry(&id)?;
            let Some(slot) = pending.iter_mut().find(|p| p.conversation_id == id) else {
                continue;
            };
            if entry.direction == Direction::In {
                slot.last_inbound = Some(entry);
            } else {
                slot.entries.push(entry);
            }
        }
        for slot in &mut pending {
            slot.entries.sort_by_key(|e| e.seq);
        }
        Ok(pending)
    }

    async fn record_delivery(
        &self,
        conversation_id: &str,
        owner: &str,
        seq: u64,
        record: DeliveryRecord<'_>,
        _now: SystemTime,
    ) -> Result<(), StoreError> {
        // One transaction: the first statement locks the conversation's row
        // (under the delivery lease) and records the attempt; the second,
        // with a snapshot taken under that lock, sees every pending entry a
        // save committed, so the conversation never stops being due while
        // one waits.
        let failed = backend("Postgres record_delivery");
        let (status, channel_message_id, detail) = delivery_columns(&record);
        let mut tx = self.inner.pool.begin().await.map_err(failed)?;
        let (held, recorded): (bool, bool) = sqlx::query_as(RECORD_DELIVERY)
            .bind(conversation_id)
            .bind(owner)
            .bind(to_i64(seq))
            .bind(status)
            .bind(channel_message_id)
            .bind(detail)
            .fetch_one(&mut *tx)
            .await
            .map_err(failed)?;
        if !held {
            return Err(StoreError::LeaseLost(conversation_id.to_string()));
        }
        if recorded {
            match record {
                DeliveryRecord::Retry { at, .. } => {
                    sqlx::query(DELIVERY_RETRY_AT).bind(conversation_id).bind(ms(at))
                }
                // The next pending entry, if any, stays due.
                _ => sqlx::query(DELIVERY_DONE).bind(conversation_id),
            }
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    async fn release_deliveries(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE_DELIVERIES)
            .bind(conversation_id)
            .bind(owner)
            .execute(&self.inner.pool)
            .await
            .map_err(backend("Postgres release_deliveries"))?;
        Ok(())
    }

    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let earliest: Option<i64> = sqlx::query_scalar(NEXT_DELIVERY_AFTER)
            .bind(ms(after))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend("Postgres next_delivery_after"))?;
        Ok(earliest.map(time))
    }

    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let entry: Option<(String, i64)> = sqlx::query_as(RECORD_RECEIPT)
            .bind(channel_message_id)
            .bind(receipt.status.as_str())
            .bind(receipt.detail.as_deref())
            .bind(to_i64(receipt.at_ms))
            .bind(receipt_rank(receipt.status))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend("Postgres record_receipt"))?;
        Ok(entry.map(|(id, seq)| (id, to_u64(seq))))
    }

    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        let pruned: i64 = sqlx::query_scalar(PRUNE_SEEN)
            .bind(ms(before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend("Postgres prune_seen"))?;
        Ok(to_u64(pruned))
    }
}
