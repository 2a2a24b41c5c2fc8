//! A store in SQLite (through rusqlite): conversations survive a restart,
//! and the processes of one host may share the database file.
//!
//! The store has one connection. An operation that finds it free runs at
//! once on the calling thread (a statement on a local file takes
//! microseconds; handing it to another thread and back costs more), and
//! never waits there: whatever would wait (for the connection, for another
//! process's write lock, for a checkpoint's file syncs) runs on the
//! connection's own thread instead (module `connection`). Module `schema`
//! opens the database and migrates it (`migrations/`), module `queries`
//! names the statements (`queries/`), and module `operations` runs them,
//! one transaction per operation; this one is the `Store` on top.
//!
//! Every operation is one statement or one transaction, so SQLite runs it
//! atomically, and a transaction that writes takes the write lock before it
//! reads anything (`BEGIN IMMEDIATE`): writers in several processes wait
//! for each other (up to the busy timeout) instead of failing on a stale
//! snapshot. Operations that queue for the connection's thread together
//! commit as one transaction.

mod connection;
mod operations;
mod queries;
mod schema;

use std::sync::{Arc, mpsc};
use std::time::SystemTime;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tokio::sync::oneshot;

use self::connection::{Job, Shared, mark_connection_thread, serve, stopped};
use self::operations::{
    LeaseLost, MessageRow, SaveRow, atomically, claim_of, read_entries, read_transcript, record_message,
    take_lease,
};
use self::queries::*;
use self::schema::{Location, open};
use super::rows::{
    backend, decode_state, delivery_columns, ms, receipt_rank, time, to_i64, to_u64, transcript_entries,
};
use super::{
    Claim, DeliveryRecord, Enqueued, InboundMessage, PendingDeliveries, Save, Store, StoreError,
    TranscriptEntry,
};
use crate::channel::Receipt;
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
        F: FnOnce(&mut rusqlite::Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        connection::refuse_on_connection_thread()?;
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Job::Alone(Box::new(move |conn: &mut rusqlite::Connection| {
                let _ = done.send(f(conn));
            })))
            .map_err(|_| stopped())?;
        result.await.map_err(|_| connection::panicked())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue_message(
        &self,
        conversation_id: &str,
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        let message = MessageRow::new(&message)?;
        let id = conversation_id.to_string();
        let now = ms(now);
        let seq = self
            .run(move |conn| atomically(conn, |conn| record_message(conn, &id, &message, now)))
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
        let message = MessageRow::new(&InboundMessage::new(message_id, text))?;
        let id = conversation_id.to_string();
        let owner = owner.to_string();
        let (lease_until, now) = (ms(lease_until), ms(now));
        // One transaction: one commit, and the claim sees the message.
        let recorded = self
            .run(move |conn| {
                atomically(conn, |conn| {
                    let Some(seq) = record_message(conn, &id, &message, now)? else {
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
        reply_to: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        let row = SaveRow::new(conversation_id, owner, &save)?;
        let reply_to = to_i64(reply_to);
        // The read follows the save in the same transaction: no other
        // turn's replies can come in between, and an operation that fails
        // half-way (busy, say) wrote nothing and may run again.
        let rows = self
            .run(move |conn| {
                row.save_then(conn, |conn| {
                    read_entries(conn, REPLIES, params![row.id, reply_to])
                })
            })
            .await?
            .map_err(backend("SQLite save_and_read_replies"))?
            .map_err(|LeaseLost| StoreError::LeaseLost(conversation_id.to_string()))?;
        transcript_entries(conversation_id, rows)
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

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDeliveries>, StoreError> {
        let owner = owner.to_string();
        let (lease_until, now) = (ms(lease_until), ms(now));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let claimed = self
            .run(move |conn| {
                atomically(conn, |conn| {
                    operations::claim_deliveries(conn, &owner, lease_until, now, limit)
                })
            })
            .await?
            .map_err(backend("SQLite claim_deliveries"))?;
        claimed
            .into_iter()
            .map(|(id, pending, last_inbound)| {
                let entries = transcript_entries(&id, pending)?;
                let last_inbound = last_inbound.map(|row| row.into_entry(&id)).transpose()?;
                Ok(PendingDeliveries::new(id, entries, last_inbound))
            })
            .collect()
    }

    async fn record_delivery(
        &self,
        conversation_id: &str,
        owner: &str,
        seq: u64,
        record: DeliveryRecord<'_>,
        _now: SystemTime,
    ) -> Result<(), StoreError> {
        let (id, owner) = (conversation_id.to_string(), owner.to_string());
        let seq = to_i64(seq);
        let columns = delivery_columns(&record);
        let retry_at = match record {
            DeliveryRecord::Retry { at, .. } => Some(ms(at)),
            _ => None,
        };
        self.run(move |conn| {
            atomically(conn, |conn| {
                operations::record_delivery(conn, &id, &owner, seq, &columns, retry_at)
            })
        })
        .await?
        .map_err(backend("SQLite record_delivery"))?
        .map_err(|LeaseLost| StoreError::LeaseLost(conversation_id.to_string()))
    }

    async fn release_deliveries(&self, conversation_id: &str, owner: &str) -> Result<(), StoreError> {
        let (id, owner) = (conversation_id.to_string(), owner.to_string());
        self.run(move |conn| {
            conn.prepare_cached(RELEASE_DELIVERIES)?
                .execute(params![id, owner])
        })
        .await?
        .map_err(backend("SQLite release_deliveries"))?;
        Ok(())
    }

    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let after = ms(after);
        let earliest: Option<i64> = self
            .run(move |conn| {
                conn.prepare_cached(NEXT_DELIVERY_AFTER)?
                    .query_row([after], |row| row.get(0))
            })
            .await?
            .map_err(backend("SQLite next_delivery_after"))?;
        Ok(earliest.map(time))
    }

    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let message_id = channel_message_id.to_string();
        let (status, rank) = (receipt.status.as_str(), receipt_rank(receipt.status));
        let detail = receipt.detail.clone();
        let at = to_i64(receipt.at_ms);
        let entry: Option<(String, i64)> = self
            .run(move |conn| {
                atomically(conn, |conn| {
                    conn.prepare_cached(RECORD_RECEIPT)?
                        .execute(params![message_id, status, detail, at, rank])?;
                    conn.prepare_cached(RECEIPT_ENTRY)?
                        .query_row([&message_id], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                })
            })
            .await?
            .map_err(backend("SQLite record_receipt"))?;
        Ok(entry.map(|(id, seq)| (id, to_u64(seq))))
    }

    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        let before = ms(before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let pruned = self
            .run(move |conn| {
                atomically(conn, |conn| {
                    let seen = conn.prepare_cached(PRUNE_SEEN)?.execute(params![before, limit])?;
                    conn.prepare_cached(PRUNE_RECEIPTS)?
                        .execute(params![before, limit])?;
                    Ok(seen)
                })
            })
            .await?
            .map_err(backend("SQLite prune_seen"))?;
        Ok(pruned as u64)
    }
}

#[cfg(test)]
mod tests;
