//! The SQLite store's statements, one `.sql` file each in `queries/`.
//! Times are Unix milliseconds, always the caller's (`now` is a parameter:
//! no statement reads the database's clock). The files hold no comments:
//! rusqlite's statement cache hashes each statement's text at every use.

/// Whether `?2` (message id) was seen in conversation `?1`, the inbox seq
/// the next message gets, and the transcript's last seq.
pub(super) const ENQUEUE_READ: &str = include_str!("queries/enqueue_read.sql");
/// Creates conversation `?1`, or sets its next inbox seq to `?2`.
pub(super) const ENQUEUE_CONVERSATION: &str = include_str!("queries/enqueue_conversation.sql");
/// Records message id `?2` as seen in conversation `?1`.
pub(super) const ENQUEUE_SEEN: &str = include_str!("queries/enqueue_seen.sql");
/// Appends the user's entry: conversation `?1`, seq `?2`, text `?3`, time
/// `?4`, message id `?5`.
pub(super) const ENQUEUE_TRANSCRIPT: &str = include_str!("queries/enqueue_transcript.sql");
/// Appends to the inbox: conversation `?1`, seq `?2`, text `?3`, time `?4`.
pub(super) const ENQUEUE_INBOX: &str = include_str!("queries/enqueue_inbox.sql");

/// Gives conversation `?1` (created if missing) to owner `?2` until `?3`,
/// when its lease is free, `?2`'s already, or expired at `?4` (now); no
/// row changes otherwise.
pub(super) const ACQUIRE_LEASE: &str = include_str!("queries/acquire_lease.sql");
/// Conversation `?1`'s unapplied messages, in order.
pub(super) const ACQUIRE_INBOX: &str = include_str!("queries/acquire_inbox.sql");

/// Conversation `?1`'s stored state.
pub(super) const LOAD: &str = include_str!("queries/load.sql");

/// Writes state `?3` and lease end `?4` of conversation `?1` when owner
/// `?2` holds its lease; changes no row otherwise.
pub(super) const SAVE_STATE: &str = include_str!("queries/save_state.sql");
/// Sets conversation `?1`'s wake-up to `?2`, only when it changes
/// (assigning the column, even its own value, rewrites a page of its index).
pub(super) const SAVE_WAKE_AT: &str = include_str!("queries/save_wake_at.sql");
/// Deletes conversation `?1`'s inbox entry `?2`.
pub(super) const SAVE_CONSUME: &str = include_str!("queries/save_consume.sql");
/// Whether conversation `?1` has inbox entries before `?2`.
pub(super) const SAVE_CONSUMED_BEFORE: &str = include_str!("queries/save_consumed_before.sql");
/// Deletes conversation `?1`'s inbox entries before `?2`.
pub(super) const SAVE_CONSUME_BEFORE: &str = include_str!("queries/save_consume_before.sql");
/// The last seq of conversation `?1`'s transcript (0 when it has none): the
/// last key of the primary key's range.
pub(super) const SAVE_LAST_SEQ: &str = include_str!("queries/save_last_seq.sql");
/// Appends a bot entry: conversation `?1`, seq `?2`, direction `?3`, text
/// `?4`, time `?5`.
pub(super) const SAVE_TRANSCRIPT: &str = include_str!("queries/save_transcript.sql");

/// Frees conversation `?1`'s lease when owner `?2` holds it.
pub(super) const RELEASE: &str = include_str!("queries/release.sql");
/// At most `?2` conversations due at `?1` (now) whose lease is free or
/// expired, the most overdue first (see `Store::due` in `SqliteStore`).
pub(super) const DUE: &str = include_str!("queries/due.sql");
/// Conversations sleeping at `?1` (now), and those with no wake-up.
pub(super) const COUNTS: &str = include_str!("queries/counts.sql");
/// The earliest wake-up.
pub(super) const NEXT_WAKE: &str = include_str!("queries/next_wake.sql");
/// The earliest wake-up after `?1`: a range scan of the wake-up index.
pub(super) const NEXT_WAKE_AFTER: &str = include_str!("queries/next_wake_after.sql");
/// Conversation `?1`'s transcript after seq `?2`, in order.
pub(super) const TRANSCRIPT: &str = include_str!("queries/transcript.sql");
