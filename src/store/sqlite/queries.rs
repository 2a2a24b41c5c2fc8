//! The SQLite store's statements, one `.sql` file each in `queries/`.
//! Times are Unix milliseconds, always the caller's (`now` is a parameter:
//! no statement reads the database's clock). The files hold no comments:
//! rusqlite's statement cache hashes each statement's text at every use.

/// Whether `?2` (message id) was seen in conversation `?1`, the inbox seq
/// the next message gets, and the transcript's last seq.
pub(super) const ENQUEUE_READ: &str = include_str!("queries/enqueue_read.sql");
/// Creates conversation `?1`, or sets its next inbox seq to `?2`.
pub(super) const ENQUEUE_CONVERSATION: &str = include_str!("queries/enqueue_conversation.sql");
/// Records message id `?2` as seen in conversation `?1` at `?3`.
pub(super) const ENQUEUE_SEEN: &str = include_str!("queries/enqueue_seen.sql");
/// Appends the user's entry: conversation `?1`, seq `?2`, text `?3`, time
/// `?4`, message id `?5`, details `?6` (JSON).
pub(super) const ENQUEUE_TRANSCRIPT: &str = include_str!("queries/enqueue_transcript.sql");
/// Appends to the inbox: conversation `?1`, seq `?2`, text `?3`, time `?4`,
/// transcript seq `?5`, details `?6` (JSON).
pub(super) const ENQUEUE_INBOX: &str = include_str!("queries/enqueue_inbox.sql");

/// Gives conversation `?1` (created if missing) to owner `?2` until `?3`,
/// when its lease is free, `?2`'s already, or expired at `?4` (now); no
/// row changes otherwise.
pub(super) const ACQUIRE_LEASE: &str = include_str!("queries/acquire_lease.sql");
/// Conversation `?1`'s unapplied messages, in order (seq, text,
/// transcript seq, details).
pub(super) const ACQUIRE_INBOX: &str = include_str!("queries/acquire_inbox.sql");

/// Conversation `?1`'s stored state.
pub(super) const LOAD: &str = include_str!("queries/load.sql");

/// Writes state `?3` and lease end `?4` of conversation `?1` when owner
/// `?2` holds its lease; changes no row otherwise.
pub(super) const SAVE_STATE: &str = include_str!("queries/save_state.sql");
/// [`SAVE_STATE`] for a save whose replies go to the outbox: also makes the
/// conversation's deliveries due at `?5` (now) unless some already wait.
pub(super) const SAVE_STATE_DELIVER: &str = include_str!("queries/save_state_deliver.sql");
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
/// `?4`, time `?5`, reply to `?6`, options `?7` and details `?8` (JSON),
/// delivery status `?9` (`pending`, or NULL) and attempts `?10`.
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
/// Conversation `?1`'s transcript after seq `?2`, in order, with receipts
/// (the columns of `TranscriptRow`, as every query of entries below).
pub(super) const TRANSCRIPT: &str = include_str!("queries/transcript.sql");
/// Conversation `?1`'s entries replying to the message at seq `?2`.
pub(super) const REPLIES: &str = include_str!("queries/replies.sql");

/// At most `?3` conversations whose deliveries are due at `?1` (now) and
/// whose delivery lease is free, expired or owner `?2`'s, the most overdue
/// first (a range of the partial index of due deliveries).
pub(super) const DELIVERIES_DUE: &str = include_str!("queries/deliveries_due.sql");
/// Gives conversation `?1`'s delivery lease to `?2` until `?3`.
pub(super) const DELIVERY_LEASE: &str = include_str!("queries/delivery_lease.sql");
/// Conversation `?1`'s pending entries, in order.
pub(super) const PENDING_DELIVERIES: &str = include_str!("queries/pending_deliveries.sql");
/// Conversation `?1`'s latest user entry.
pub(super) const LAST_INBOUND: &str = include_str!("queries/last_inbound.sql");
/// Whether owner `?2` holds conversation `?1`'s delivery lease.
pub(super) const DELIVERY_HELD: &str = include_str!("queries/delivery_held.sql");
/// Records an attempt on conversation `?1`'s entry `?2` if it is pending:
/// status `?3`, channel message id `?4`, detail `?5`, one more attempt.
pub(super) const RECORD_DELIVERY: &str = include_str!("queries/record_delivery.sql");
/// Makes conversation `?1`'s deliveries due at `?2`.
pub(super) const DELIVERY_RETRY_AT: &str = include_str!("queries/delivery_retry_at.sql");
/// Conversation `?1` has no deliveries due once none is pending.
pub(super) const DELIVERY_DONE: &str = include_str!("queries/delivery_done.sql");
/// Frees conversation `?1`'s delivery lease when owner `?2` holds it.
pub(super) const RELEASE_DELIVERIES: &str = include_str!("queries/release_deliveries.sql");
/// The earliest delivery time after `?1`.
pub(super) const NEXT_DELIVERY_AFTER: &str = include_str!("queries/next_delivery_after.sql");
/// Keeps receipt `?2` (status), `?3` (detail), `?4` (time) for channel
/// message id `?1` unless the one kept ranks `?5` or higher.
pub(super) const RECORD_RECEIPT: &str = include_str!("queries/record_receipt.sql");
/// The conversation and seq of the entry sent as channel message id `?1`.
pub(super) const RECEIPT_ENTRY: &str = include_str!("queries/receipt_entry.sql");
/// Forgets up to `?2` message ids seen before `?1`, the oldest first.
pub(super) const PRUNE_SEEN: &str = include_str!("queries/prune_seen.sql");
/// Forgets up to `?2` receipts older than `?1`.
pub(super) const PRUNE_RECEIPTS: &str = include_str!("queries/prune_receipts.sql");
