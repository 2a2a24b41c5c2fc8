//! The Postgres store's statements, one `.sql` file each in `queries/`.
//! Every operation is one statement, so one round trip and one transaction
//! (writes across tables are data-modifying CTEs). Times are Unix
//! milliseconds, always the caller's (`now` is a parameter: no statement
//! reads the database's clock). Message texts are bytes (`bytea`: Postgres
//! text cannot hold NUL).

/// `$1` conversation, `$2` message id, `$3` text, `$4` now, `$5` details
/// (JSON), `$6` whether it answers (joins the inbox): records the message
/// once; returns its transcript seq, or no row for a repeated id.
pub(super) const ENQUEUE: &str = include_str!("queries/enqueue.sql");
/// `$1` conversation, `$2` owner, `$3` lease end, `$4` now: takes the lease
/// when it is free, `$2`'s or expired; returns the state and the unapplied
/// inbox (parallel arrays: seqs, texts, transcript seqs, details), or no
/// row when the lease is held.
pub(super) const ACQUIRE: &str = include_str!("queries/acquire.sql");
/// `$1` conversation, `$2` message id, `$3` text, `$4` now, `$5` owner,
/// `$6` lease end: [`ENQUEUE`] and [`ACQUIRE`] in one statement.
pub(super) const ENQUEUE_AND_ACQUIRE: &str = include_str!("queries/enqueue_and_acquire.sql");
// The two saves share their writes (`save_writes.sql`); each adds its own SELECT.

/// `$1` conversation, `$2` owner, `$3` state, `$4` wake-up, `$5` lease end,
/// `$6` consumed up to, `$7` and `$8` the outgoing directions and texts,
/// `$9` their time, `$10` the message they reply to, `$11` whether they go
/// to the outbox (pending, and the conversation's deliveries due at `$9`
/// unless some wait already), `$12` and `$13` their options and details
/// (JSON, NULL for none): the save's writes when `$2` holds the lease;
/// returns whether it did.
pub(super) const SAVE: &str = concat!(
    include_str!("queries/save_writes.sql"),
    include_str!("queries/save.sql")
);
/// [`SAVE`]'s parameters and writes, then with `$14` the seq of the message
/// whose replies to list: one row per reply (whether the save was made,
/// then the columns of [`TRANSCRIPT`]), or one row of NULLs but the first
/// when there are none.
pub(super) const SAVE_AND_READ_REPLIES: &str = concat!(
    include_str!("queries/save_writes.sql"),
    include_str!("queries/save_and_read_replies.sql")
);
/// `$1` conversation, `$2` owner: frees the lease when `$2` holds it.
pub(super) const RELEASE: &str = include_str!("queries/release.sql");
/// `$1` now, `$2` limit: the conversations due, the most overdue first,
/// passing over those a writer holds locked.
pub(super) const DUE: &str = include_str!("queries/due.sql");
/// `$1` now: conversations sleeping, and those with no wake-up.
pub(super) const COUNTS: &str = include_str!("queries/counts.sql");
/// The earliest wake-up.
pub(super) const NEXT_WAKE: &str = include_str!("queries/next_wake.sql");
/// `$1`: the earliest wake-up after it, a range scan of the wake-up index.
pub(super) const NEXT_WAKE_AFTER: &str = include_str!("queries/next_wake_after.sql");
/// `$1` conversation: its state.
pub(super) const LOAD: &str = include_str!("queries/load.sql");
/// `$1` conversation, `$2` after seq: its transcript, in order: seq,
/// direction, text, time, message id, options, details, reply to, delivery
/// status, attempts, channel message id, delivery detail, and the receipt's
/// status, detail and time.
pub(super) const TRANSCRIPT: &str = include_str!("queries/transcript.sql");

/// `$1` owner, `$2` lease end, `$3` now, `$4` limit: takes the delivery
/// lease of the conversations whose deliveries are due, the most overdue
/// first, passing over those another transaction holds locked; returns
/// their ids and due times.
pub(super) const CLAIM_DELIVERIES: &str = include_str!("queries/claim_deliveries.sql");
/// `$1` conversations: their pending entries, and each one's latest user
/// entry (the conversation, then [`TRANSCRIPT`]'s columns).
pub(super) const DELIVERIES: &str = include_str!("queries/deliveries.sql");
/// `$1` conversation, `$2` owner, `$3` seq, `$4` status, `$5` channel
/// message id, `$6` detail: locks the conversation's row when `$2` holds
/// its delivery lease and records the attempt on the entry if it is
/// pending; returns whether the lease is held and whether it recorded.
pub(super) const RECORD_DELIVERY: &str = include_str!("queries/record_delivery.sql");
/// `$1` conversation, `$2` time: its deliveries are due then.
pub(super) const DELIVERY_RETRY_AT: &str = include_str!("queries/delivery_retry_at.sql");
/// `$1` conversation: no deliveries due once none is pending.
pub(super) const DELIVERY_DONE: &str = include_str!("queries/delivery_done.sql");
/// `$1` conversation, `$2` owner: frees the delivery lease when `$2` holds it.
pub(super) const RELEASE_DELIVERIES: &str = include_str!("queries/release_deliveries.sql");
/// `$1`: the earliest delivery time after it.
pub(super) const NEXT_DELIVERY_AFTER: &str = include_str!("queries/next_delivery_after.sql");
/// `$1` channel message id, `$2` status, `$3` detail, `$4` time, `$5` the
/// status's rank: keeps the receipt unless one of that rank or higher is
/// kept; returns the conversation and seq of the entry sent as `$1`.
pub(super) const RECORD_RECEIPT: &str = include_str!("queries/record_receipt.sql");
/// `$1` before, `$2` limit: forgets up to `$2` message ids seen before
/// `$1` and as many receipts as old; returns how many ids.
pub(super) const PRUNE_SEEN: &str = include_str!("queries/prune_seen.sql");

#[cfg(test)]
mod tests {
    /// The two saves are one set of writes: a change to one is a change to
    /// both.
    #[test]
    fn both_saves_make_the_same_writes() {
        let writes = |sql: &'static str| {
            let end = sql.find("\nSELECT EXISTS (SELECT 1 FROM saved)").unwrap_or(0);
            &sql[..end]
        };
        assert!(!writes(super::SAVE).is_empty());
        assert_eq!(writes(super::SAVE), writes(super::SAVE_AND_READ_REPLIES));
    }
}
