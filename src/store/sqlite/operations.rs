//! The SQLite store's operations as statements on a connection: each runs
//! in one [`Write`] (a transaction, or a savepoint inside a batch's), so it
//! writes everything or nothing and may run again after `SQLITE_BUSY`.

use rusqlite::{Connection, params};

use super::queries::*;
use crate::store::rows::{
    InboxRow, TranscriptRow, claim, direction_name, encode_details, encode_options, encode_state,
    inbox_entry, ms, to_i64,
};
use crate::store::{Claim, Direction, InboundMessage, Save, StoreError};

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

/// An inbound message, owned, for an operation that may run twice (see
/// `SqliteStore::run`).
pub(super) struct MessageRow {
    pub(super) message_id: String,
    pub(super) text: String,
    /// JSON.
    pub(super) details: Option<String>,
    pub(super) answers: bool,
}

impl MessageRow {
    pub(super) fn new(message: &InboundMessage<'_>) -> Result<MessageRow, StoreError> {
        Ok(MessageRow {
            message_id: message.message_id.to_string(),
            text: message.text.to_string(),
            details: encode_details(message.details)?,
            answers: message.answers,
        })
    }
}

/// [`Store::enqueue_message`]: records the message id as seen, appends the
/// user entry to the transcript and, for a message that answers, to the
/// inbox (creating the conversation's row), and returns the entry's seq;
/// `None`, writing nothing, for an id already seen. Runs inside a [`Write`].
pub(super) fn record_message(
    conn: &Connection,
    id: &str,
    message: &MessageRow,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    // What the writes need, in one read (the transaction holds the write
    // lock already).
    let (seen, inbox_seq, last): (bool, i64, i64) = conn
        .prepare_cached(ENQUEUE_READ)?
        .query_row(params![id, message.message_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    if seen {
        return Ok(None);
    }
    // A message that does not answer takes no inbox seq (the row is still
    // created: the transcript's entries need it).
    let next_inbox_seq = if message.answers { inbox_seq + 1 } else { inbox_seq };
    conn.prepare_cached(ENQUEUE_CONVERSATION)?
        .execute(params![id, next_inbox_seq])?;
    let seq = last + 1;
    conn.prepare_cached(ENQUEUE_SEEN)?
        .execute(params![id, message.message_id, now])?;
    conn.prepare_cached(ENQUEUE_TRANSCRIPT)?.execute(params![
        id,
        seq,
        message.text,
        now,
        message.message_id,
        message.details
    ])?;
    if message.answers {
        conn.prepare_cached(ENQUEUE_INBOX)?.execute(params![
            id,
            inbox_seq,
            message.text,
            now,
            seq,
            message.details
        ])?;
    }
    Ok(Some(seq))
}

/// What [`take_lease`] reads: the state and the inbox, in order.
pub(super) type Taken = (Option<String>, Vec<InboxRow>);

/// A transcript row from a query of entries (see `queries::TRANSCRIPT`).
fn transcript_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TranscriptRow> {
    Ok(TranscriptRow {
        seq: row.get(0)?,
        direction: row.get(1)?,
        text: row.get(2)?,
        at_ms: row.get(3)?,
        message_id: row.get(4)?,
        options: row.get(5)?,
        details: row.get(6)?,
        reply_to: row.get(7)?,
        delivery_status: row.get(8)?,
        delivery_attempts: row.get(9)?,
        channel_message_id: row.get(10)?,
        delivery_detail: row.get(11)?,
        receipt_status: row.get(12)?,
        receipt_detail: row.get(13)?,
        receipt_at_ms: row.get(14)?,
    })
}

/// Runs `sql`, a query of entries, with `params`.
pub(super) fn read_entries(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<TranscriptRow>> {
    conn.prepare_cached(sql)?
        .query_map(params, transcript_row)?
        .collect()
}

pub(super) fn read_transcript(
    conn: &Connection,
    id: &str,
    after_seq: i64,
) -> rusqlite::Result<Vec<TranscriptRow>> {
    read_entries(conn, TRANSCRIPT, params![id, after_seq])
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
        .query_map([id], |row| {
            Ok(InboxRow {
                seq: row.get(0)?,
                text: row.get(1)?,
                transcript_seq: row.get(2)?,
                details: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some((state, inbox)))
}

/// The claim from what [`take_lease`] read.
pub(super) fn claim_of(conversation_id: &str, (state, inbox): Taken) -> Result<Claim, StoreError> {
    let inbox = inbox
        .into_iter()
        .map(|row| inbox_entry(conversation_id, row))
        .collect::<Result<_, _>>()?;
    claim(conversation_id, state.as_deref(), inbox)
}

/// What [`claim_deliveries`] read of one conversation: its id, its pending
/// entries and its latest user entry.
pub(super) type Claimed = (String, Vec<TranscriptRow>, Option<TranscriptRow>);

/// [`Store::claim_deliveries`]: takes the delivery lease of up to `limit`
/// conversations whose deliveries are due and whose delivery lease is free,
/// expired or `owner`'s, and reads their pending entries. Runs inside a
/// [`Write`], so two processes never take the same conversation.
pub(super) fn claim_deliveries(
    conn: &Connection,
    owner: &str,
    lease_until: i64,
    now: i64,
    limit: i64,
) -> rusqlite::Result<Vec<Claimed>> {
    let due: Vec<String> = conn
        .prepare_cached(DELIVERIES_DUE)?
        .query_map(params![now, owner, limit], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut claimed = Vec::with_capacity(due.len());
    for id in due {
        conn.prepare_cached(DELIVERY_LEASE)?
            .execute(params![id, owner, lease_until])?;
        let pending = read_entries(conn, PENDING_DELIVERIES, [&id])?;
        let last_inbound = read_entries(conn, LAST_INBOUND, [&id])?.pop();
        claimed.push((id, pending, last_inbound));
    }
    Ok(claimed)
}

/// [`Store::record_delivery`]; `Err(LeaseLost)`, writing nothing, when
/// `owner` does not hold the delivery lease. Runs inside a [`Write`].
pub(super) fn record_delivery(
    conn: &Connection,
    id: &str,
    owner: &str,
    seq: i64,
    (status, channel_message_id, detail): &(&'static str, Option<String>, Option<String>),
    retry_at: Option<i64>,
) -> rusqlite::Result<Result<(), LeaseLost>> {
    if !conn.prepare_cached(DELIVERY_HELD)?.exists(params![id, owner])? {
        return Ok(Err(LeaseLost));
    }
    let recorded = conn.prepare_cached(RECORD_DELIVERY)?.execute(params![
        id,
        seq,
        status,
        channel_message_id,
        detail
    ])?;
    if recorded == 0 {
        // No longer pending: left as it is.
        return Ok(Ok(()));
    }
    match retry_at {
        Some(at) => conn.prepare_cached(DELIVERY_RETRY_AT)?.execute(params![id, at])?,
        // The next pending entry, if any, stays due.
        None => conn.prepare_cached(DELIVERY_DONE)?.execute([id])?,
    };
    Ok(Ok(()))
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
    /// Direction, text, options and details (JSON).
    outgoing: Vec<(Direction, String, Option<String>, Option<String>)>,
    reply_to: Option<i64>,
    /// Whether the outgoing entries go to the outbox.
    deliver: bool,
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
                .map(|e| {
                    Ok((
                        e.direction,
                        e.text.clone(),
                        encode_options(&e.options)?,
                        encode_details(e.details.as_ref())?,
                    ))
                })
                .collect::<Result<_, StoreError>>()?,
            reply_to: save.reply_to.map(to_i64),
            deliver: save.deliver && !save.outgoing.is_empty(),
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
        // Replies to deliver make the conversation's deliveries due in the
        // same UPDATE: the outbox costs a save no statement.
        let saved = if self.deliver {
            conn.prepare_cached(SAVE_STATE_DELIVER)?.execute(params![
                self.id,
                self.owner,
                self.state,
                self.lease_until,
                self.now
            ])?
        } else {
            conn.prepare_cached(SAVE_STATE)?.execute(params![
                self.id,
                self.owner,
                self.state,
                self.lease_until
            ])?
        };
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
            // A pending entry is also a row of the outbox's partial index.
            let (status, attempts) = match self.deliver {
                true => (Some("pending"), Some(0)),
                false => (None, None),
            };
            for (direction, text, options, details) in &self.outgoing {
                seq += 1;
                insert.execute(params![
                    self.id,
                    seq,
                    direction_name(*direction),
                    text,
                    self.now,
                    self.reply_to,
                    options,
                    details,
                    status,
                    attempts
                ])?;
            }
        }
        Ok(Ok(()))
    }
}
