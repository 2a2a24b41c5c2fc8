//! What a passing conversation test reports.

use std::path::PathBuf;
use std::time::Duration;

use crate::Status;

/// A conversation test that passed: what it ran, for a summary line.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// The test file (`<yaml>` for [`super::run_yaml`]).
    pub path: PathBuf,
    /// The file's `name`, or its path.
    pub name: String,
    /// The turns run.
    pub turns: usize,
    /// The requests the flow sent, retries included.
    pub api_calls: usize,
    /// The virtual time the conversation took (Delays, retries, stub delays).
    pub elapsed: Duration,
    /// How the conversation stood at the end.
    pub status: Status,
}
