//! How a Postgres store uses the database.

/// How a [`PostgresStore`](super::PostgresStore) uses the database, for
/// [`PostgresStore::connect_with`](super::PostgresStore::connect_with).
///
/// ```
/// use chatflow::store::PostgresOptions;
///
/// // At most 3 × 4 connections per process; every commit waits for its WAL flush.
/// let options = PostgresOptions::new().with_max_connections(4).with_relaxed_commits(false);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    pub(super) max_connections: usize,
    pub(super) relaxed_commits: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: 10,
            relaxed_commits: true,
        }
    }
}

impl PostgresOptions {
    /// The defaults: up to 10 connections of each kind, relaxed commits on.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many connections the store opens at most of each kind: its pool
    /// (the scheduler's queries, reads), a turn's durable statements, and
    /// (with [`with_relaxed_commits`](Self::with_relaxed_commits)) its relaxed ones;
    /// at least 1. Default 10, so up to 30 per process, to count against
    /// the server's `max_connections`.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Whether the writes a crash of the database may lose without breaking
    /// any guarantee are committed without waiting for their WAL flush
    /// (`synchronous_commit = off`): taking a lease alone, and a turn's
    /// silent saves before its last one. Default on; off, every commit is
    /// durable, at the cost of more WAL flushes per turn.
    pub fn with_relaxed_commits(mut self, relaxed: bool) -> Self {
        self.relaxed_commits = relaxed;
        self
    }

    /// How many connections the store opens at most of each kind.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Whether relaxed commits are on.
    pub fn relaxed_commits(&self) -> bool {
        self.relaxed_commits
    }
}
