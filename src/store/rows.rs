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
    use crate::channel::{DeliveryState, DeliveryStatus, Receipt, ReceiptStatus};
    use crate::conversation::Conversation;
    use crate::store::{Claim, DeliveryRecord, Direction, InboxEntry, StoreError, TranscriptEntry};

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

    /// A transcript row as read: the entry's columns, its delivery state
    /// and the receipt recorded for its channel message id (the columns of
    /// the stores' transcript queries, in this order).
    #[derive(Default)]
    pub(in crate::store) struct TranscriptRow {
        pub(in crate::store) seq: i64,
        pub(in crate::store) direction: String,
        pub(in crate::store) text: String,
        pub(in crate::store) at_ms: i64,
        pub(in crate::store) message_id: Option<String>,
        /// A question's options, as JSON.
        pub(in crate::store) options: Option<String>,
        /// The details, as JSON.
        pub(in crate::store) details: Option<String>,
        pub(in crate::store) reply_to: Option<i64>,
        /// `pending`, `accepted` or `refused`; `None` for an entry not for
        /// a channel (then the other delivery columns are `None` too).
        pub(in crate::store) delivery_status: Option<String>,
        pub(in crate::store) delivery_attempts: Option<i64>,
        pub(in crate::store) channel_message_id: Option<String>,
        pub(in crate::store) delivery_detail: Option<String>,
        /// The receipt's status name (`sent`, …), detail and time.
        pub(in crate::store) receipt_status: Option<String>,
        pub(in crate::store) receipt_detail: Option<String>,
        pub(in crate::store) receipt_at_ms: Option<i64>,
    }

    impl TranscriptRow {
        pub(in crate::store) fn into_entry(self, id: &str) -> Result<TranscriptEntry, StoreError> {
            let mut entry = TranscriptEntry::new(
                to_u64(self.seq),
                parse_direction(id, &self.direction)?,
                self.text,
                to_u64(self.at_ms),
            );
            entry.message_id = self.message_id;
            if let Some(options) = &self.options {
                entry.options = serde_json::from_str(options)
                    .map_err(|e| StoreError::corrupt(id, "a question's options do not parse", e))?;
            }
            entry.details = decode_details(id, self.details.as_deref())?;
            entry.reply_to = self.reply_to.map(to_u64);
            if let Some(status) = &self.delivery_status {
                let receipt = match &self.receipt_status {
                    Some(name) => Some(Receipt {
                        status: ReceiptStatus::from_name(name).ok_or_else(|| {
                            StoreError::corrupt_because(id, format!("unknown receipt status {name:?}"))
                        })?,
                        detail: self.receipt_detail,
                        at_ms: self.receipt_at_ms.map_or(0, to_u64),
                    }),
                    None => None,
                };
                let mut state = DeliveryState::pending();
                state.status = parse_delivery_status(id, status)?;
                state.attempts = u32::try_from(self.delivery_attempts.unwrap_or(0)).unwrap_or(u32::MAX);
                state.channel_message_id = self.channel_message_id;
                state.detail = self.delivery_detail;
                state.receipt = receipt;
                entry.delivery = Some(state);
            }
            Ok(entry)
        }
    }

    /// Transcript rows read back, in the order read.
    pub(in crate::store) fn transcript_entries(
        id: &str,
        rows: impl IntoIterator<Item = TranscriptRow>,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        rows.into_iter().map(|row| row.into_entry(id)).collect()
    }

    /// The name a delivery status is stored as.
    pub(in crate::store) fn delivery_status_name(status: DeliveryStatus) -> &'static str {
        match status {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Accepted => "accepted",
            DeliveryStatus::Refused => "refused",
        }
    }

    fn parse_delivery_status(id: &str, name: &str) -> Result<DeliveryStatus, StoreError> {
        match name {
            "pending" => Ok(DeliveryStatus::Pending),
            "accepted" => Ok(DeliveryStatus::Accepted),
            "refused" => Ok(DeliveryStatus::Refused),
            other => Err(StoreError::corrupt_because(
                id,
                format!("unknown delivery status {other:?}"),
            )),
        }
    }

    /// A receipt status's rank: a receipt replaces a kept one of lower rank.
    pub(in crate::store) fn receipt_rank(status: ReceiptStatus) -> i64 {
        match status {
            ReceiptStatus::Sent => 0,
            ReceiptStatus::Delivered => 1,
            ReceiptStatus::Read => 2,
            ReceiptStatus::Failed => 3,
        }
    }

    /// What a delivery record writes on the entry: its status, channel
    /// message id and detail.
    pub(in crate::store) fn delivery_columns(
        record: &DeliveryRecord<'_>,
    ) -> (&'static str, Option<String>, Option<String>) {
        match record {
            DeliveryRecord::Accepted { channel_message_id } => (
                delivery_status_name(DeliveryStatus::Accepted),
                channel_message_id.map(str::to_string),
                None,
            ),
            DeliveryRecord::Retry { reason, .. } => (
                delivery_status_name(DeliveryStatus::Pending),
                None,
                Some(reason.to_string()),
            ),
            DeliveryRecord::Refused { reason } => (
                delivery_status_name(DeliveryStatus::Refused),
                None,
                Some(reason.to_string()),
            ),
        }
    }

    /// Details as stored: JSON text.
    pub(in crate::store) fn encode_details(
        details: Option<&serde_json::Value>,
    ) -> Result<Option<String>, StoreError> {
        details
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::backend("serializing a message's details", e))
    }

    /// A question's options as stored: JSON text, `None` for none.
    pub(in crate::store) fn encode_options(
        options: &[crate::flow::QuestionOption],
    ) -> Result<Option<String>, StoreError> {
        if options.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(options)
            .map(Some)
            .map_err(|e| StoreError::backend("serializing a question's options", e))
    }

    fn decode_details(id: &str, details: Option<&str>) -> Result<Option<serde_json::Value>, StoreError> {
        details
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::corrupt(id, "a message's details do not parse", e))
    }

    /// An inbox row as read: `seq, text, transcript_seq, details`.
    pub(in crate::store) struct InboxRow {
        pub(in crate::store) seq: i64,
        pub(in crate::store) text: String,
        /// `None` only for a row no migration could match to its entry.
        pub(in crate::store) transcript_seq: Option<i64>,
        pub(in crate::store) details: Option<String>,
    }

    /// An inbox row read back.
    pub(in crate::store) fn inbox_entry(id: &str, row: InboxRow) -> Result<InboxEntry, StoreError> {
        let mut entry = InboxEntry::new(to_u64(row.seq), row.text, row.transcript_seq.map_or(0, to_u64));
        entry.details = decode_details(id, row.details.as_deref())?;
        Ok(entry)
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
