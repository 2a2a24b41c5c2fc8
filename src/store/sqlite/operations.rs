//! The SQLite store's operations as statements on a connection: each runs
//! in one [`Write`] (a transaction, or a savepoint inside a batch's), so it
//! writes everything or nothing and may run again after `SQLITE_BUSY`.

use rusqlite::{Connection, params};

use super::queries::*;
use crate::store::rows::{TranscriptRow, claim, direction_name, encode_state, inbox_entry, ms, to_i64};
use crate::store::{Claim, Direction, InboxEntry, Save, StoreError};

/// One operation's transaction, rolled back unless committed (also when the
/// operation fails or panics half-way). On its own it is `BEGIN IMMEDIATE`:
/// it takes the write lock before reading anything, so a write in another
/// process cannot make what it read stale; inside a batch's transaction it
/// is a savepoint. The statements are cached: `execute_batch` would parse
/// them anew at every operation.
pub(super) struct Write<'c> {
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
pub(super) fn atomically<R>(
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
pub(super) fn record_message(
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
pub(super) type Taken = (Option<String>, Vec<InboxEntry>);

pub(super) fn read_transcript(
    conn: &Connection,
    id: &str,
    after_seq: i64,
) -> rusqlite::Result<Vec<TranscriptRow>> {
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
pub(super) fn take_lease(
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
pub(super) fn claim_of(conversation_id: &str, (state, inbox): Taken) -> Result<Claim, StoreError> {
    claim(conversation_id, state.as_deref(), inbox)
}

/// A save, owned, for an operation that may run twice (see
/// `SqliteStore::run`).
pub(super) struct SaveRow {
    pub(super) id: String,
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
pub(super) struct LeaseLost;

impl SaveRow {
    pub(super) fn new(conversation_id: &str, owner: &str, save: &Save<'_>) -> Result<SaveRow, StoreError> {
        Ok(SaveRow {
            id: conversation_id.to_string(),
            owner: owner.to_string(),
            state: encode_state(save.conversation)?,
            wake_at: save.wake_at.map(ms),
            lease_until: ms(save.lease_until),
            consumed_up_to: to_i64(save.consumed_up_to),
            outgoing: save
                .outgoing
                .iter()
                .map(|e| (e.direction, e.text.clone()))
                .collect(),
            // The turn's own time is not in `Save`: like the memory store,
            // stamp outgoing entries with the caller's clock.
            now: ms(save.now),
        })
    }

    /// Saves, then runs `then`, [`atomically`]. A [`LeaseLost`] has
    /// written nothing, and `then` does not run.
    pub(super) fn save_then<R>(
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
