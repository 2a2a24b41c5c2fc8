//! What every backend reads and writes the same way: the state as JSON,
//! and, for the SQL stores, column values and rows turned into the store's
//! types.

use std::time::SystemTime;

use super::StoreError;
use crate::conversation::Conversation;

/// A stored state read back; a state that does not parse is [`StoreError::Corrupt`].
pub(super) fn decode_state(id: &str, state: &str) -> Result<Conversation, StoreError> {
    serde_json::from_str(state).map_err(|e| StoreError::corrupt(id, "its JSON does not parse", e))
}

/// Milliseconds since the Unix epoch (0 before it, `u64::MAX` far after it).
pub(super) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A time stored as Unix milliseconds, read back.
pub(super) fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(super) use self::sql::*;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql {
    use std::time::{Duration, SystemTime};

    use super::{decode_state, unix_ms};
    use crate::conversation::Conversation;
    use crate::store::{Claim, Direction, InboxEntry, StoreError, TranscriptEntry};

    /// Maps a driver's error to [`StoreError::Backend`], saying what failed.
    pub(in crate::store) fn backend<E>(context: &'static str) -> impl Fn(E) -> StoreError + Copy
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| StoreError::backend(context, e)
    }

    /// The state as stored: its JSON.
    pub(in crate::store) fn encode_state(conversation: &Conversation) -> Result<String, StoreError> {
        serde_json::to_string(conversation)
            .map_err(|e| StoreError::backend("serializing the conversation's state", e))
    }

    /// A time as stored: Unix milliseconds.
    pub(in crate::store) fn ms(time: SystemTime) -> i64 {
        to_i64(unix_ms(time))
    }

    pub(in crate::store) fn to_i64(n: u64) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    pub(in crate::store) fn to_u64(n: i64) -> u64 {
        u64::try_from(n).unwrap_or(0)
    }

    /// A stored time read back.
    pub(in crate::store) fn time(ms: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(to_u64(ms))
    }

    pub(in crate::store) fn direction_name(direction: Direction) -> &'static str {
        match direction {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Handoff => "handoff",
        }
    }

    fn parse_direction(id: &str, name: &str) -> Result<Direction, StoreError> {
        match name {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            "handoff" => Ok(Direction::Handoff),
            other => Err(StoreError::corrupt_because(
                id,
                format!("unknown transcript direction {other:?}"),
            )),
        }
    }

    /// A message text read back: Postgres keeps texts as UTF-8 bytes (its
    /// text type cannot hold NUL).
    pub(in crate::store) fn text_of(id: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        String::from_utf8(bytes).map_err(|e| StoreError::corrupt(id, "a message text is not UTF-8", e))
    }

    /// A transcript row as read: `seq, direction, text, at_ms`.
    pub(in crate::store) struct TranscriptRow {
        pub(in crate::store) seq: i64,
        pub(in crate::store) direction: String,
        pub(in crate::store) text: String,
        pub(in crate::store) at_ms: i64,
    }

    impl TranscriptRow {
        pub(in crate::store) fn into_entry(self, id: &str) -> Result<TranscriptEntry, StoreError> {
            Ok(TranscriptEntry::new(
                to_u64(self.seq),
                parse_direction(id, &self.direction)?,
                self.text,
                to_u64(self.at_ms),
            ))
        }
    }

    /// Transcript rows read back, in the order read.
    pub(in crate::store) fn transcript_entries(
        id: &str,
        rows: impl IntoIterator<Item = TranscriptRow>,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        rows.into_iter().map(|row| row.into_entry(id)).collect()
    }

    /// An inbox row as read: `seq, text`.
    pub(in crate::store) fn inbox_entry(seq: i64, text: String) -> InboxEntry {
        // TODO(outbox): the SQL stores keep the message's transcript seq.
        InboxEntry::new(to_u64(seq), text, 0)
    }

    /// What taking a lease read: the state (`None` before the first save)
    /// and the unapplied messages. The lease stays taken even when the state
    /// turns out to be unreadable, as in every store.
    pub(in crate::store) fn claim(
        id: &str,
        state: Option<&str>,
        inbox: Vec<InboxEntry>,
    ) -> Result<Claim, StoreError> {
        let conversation = state.map(|s| decode_state(id, s)).transpose()?;
        Ok(Claim { conversation, inbox })
    }
}
