//! What the SQL stores share: conversions between the store's types and
//! column values.

use std::time::{Duration, SystemTime};

use super::{Direction, StoreError, unix_ms};

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn ms(time: SystemTime) -> i64 {
    to_i64(unix_ms(time))
}

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(to_u64(ms))
}

pub(super) fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::In => "in",
        Direction::Out => "out",
        Direction::Handoff => "handoff",
    }
}

pub(super) fn parse_direction(id: &str, name: &str) -> Result<Direction, StoreError> {
    match name {
        "in" => Ok(Direction::In),
        "out" => Ok(Direction::Out),
        "handoff" => Ok(Direction::Handoff),
        other => Err(StoreError::Corrupt {
            id: id.to_string(),
            message: format!("unknown transcript direction {other:?}"),
        }),
    }
}
