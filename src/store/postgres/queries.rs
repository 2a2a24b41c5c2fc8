//! The Postgres store's statements, one `.sql` file each in `queries/`.
//! Every operation is one statement, so one round trip and one transaction
//! (writes across tables are data-modifying CTEs). Times are Unix
//! milliseconds, always the caller's (`now` is a parameter: no statement
//! reads the database's clock). Message texts are bytes (`bytea`: Postgres
//! text cannot hold NUL).

/// `$1` conversation, `$2` message id, `$3` text, `$4` now: records the
/// message once; returns its transcript seq, or no row for a repeated id.
pub(super) const ENQUEUE: &str = include_str!("queries/enqueue.sql");
/// `$1` conversation, `$2` owner, `$3` lease end, `$4` now: takes the lease
/// when it is free, `$2`'s or expired; returns the state and the unapplied
/// inbox (parallel arrays), or no row when the lease is held.
pub(super) const ACQUIRE: &str = include_str!("queries/acquire.sql");
/// `$1` conversation, `$2` message id, `$3` text, `$4` now, `$5` owner,
/// `$6` lease end: [`ENQUEUE`] and [`ACQUIRE`] in one statement.
pub(super) const ENQUEUE_AND_ACQUIRE: &str = include_str!("queries/enqueue_and_acquire.sql");
// The two saves share their writes (`save_writes.sql`); each adds its own SELECT.

/// `$1` conversation, `$2` owner, `$3` state, `$4` wake-up, `$5` lease end,
/// `$6` consumed up to, `$7` and `$8` the outgoing directions and texts,
/// `$9` their time: the save's writes when `$2` holds the lease; returns
/// whether it did.
pub(super) const SAVE: &str = concat!(
    include_str!("queries/save_writes.sql"),
    include_str!("queries/save.sql")
);
/// [`SAVE`]'s parameters and writes, then with `$10` the seq after which
/// to list replies: returns whether the save was made and the replies
/// (parallel arrays).
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
/// `$1` conversation, `$2` after seq: its transcript, in order.
pub(super) const TRANSCRIPT: &str = include_str!("queries/transcript.sql");

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
