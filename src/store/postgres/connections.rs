//! The connections a Postgres store runs a turn's statements on, kept open
//! between statements outside any sqlx pool.
//!
//! Why not sqlx's `PgPool`: sqlx 0.8 checks every connection returned to its
//! pool with a round trip (a Sync message and its ReadyForQuery), and this
//! cannot be turned off. The store's operations are one statement each, so
//! through the pool each would cost two round trips instead of one.
//! Measured on 2026-12-08 (debug build, the test
//! `kept_connections_against_sqlx_pool` in `tests/postgres_connections.rs`,
//! kept and pooled rounds interleaved, on two cores shared with other
//! builds, load average about 10): a relaxed `acquire` took a median of
//! 0.36–0.49 ms per statement on kept connections against 1.0–1.7 ms through
//! a `PgPool` at one task (2.1–3.9×), and 0.17–0.36 ms against 0.23–0.57 ms
//! at eight (1.4–1.6×). A durable `enqueue`, whose WAL flush dominates, was
//! 1.05–1.11× slower through the pool. sqlx's pool still serves the store's
//! other queries (the scheduler's, reads, `release`) and its migrations.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::store::StoreError;
use crate::store::rows::backend;

/// How long a kept connection may sit idle (sqlx's pools allow 10 minutes;
/// connections of a busy store are reused within milliseconds).
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Up to `permits` open connections, the idle ones kept for the next
/// statement. A connection is opened only when none is idle and a permit is
/// held, so no more than `permits` are ever open. One idle for longer than
/// [`IDLE_LIMIT`] is closed rather than used: a firewall or a failover may
/// have cut it, and its first statement would fail.
pub(super) struct Connections {
    options: PgConnectOptions,
    /// Idle connections and since when, the most recently used last.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
}

impl Connections {
    pub(super) fn new(options: PgConnectOptions, max: usize) -> Connections {
        Connections {
            options,
            idle: Mutex::default(),
            permits: Semaphore::new(max),
        }
    }

    /// A connection for one statement: an idle one, or a new one.
    pub(super) async fn get(&self) -> Result<Kept<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(backend("waiting for a Postgres connection"))?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            // The least recently used come first: those idle too long go.
            let now = Instant::now();
            idle.retain(|(_, since)| now.duration_since(*since) < IDLE_LIMIT);
            idle.pop()
        };
        let conn = match idle {
            Some((conn, _)) => conn,
            None => tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options))
                .await
                .map_err(|_| {
                    StoreError::backend(
                        "connecting to Postgres",
                        format!("it took longer than {} s", CONNECT_TIMEOUT.as_secs()),
                    )
                })?
                .map_err(backend("connecting to Postgres"))?,
        };
        Ok(Kept {
            from: self,
            conn,
            _permit: permit,
        })
    }
}

/// A connection for one statement, kept for the next one by
/// [`Kept::done`]. Dropped without it (the statement failed, or its future
/// was dropped midway, leaving the protocol state unknown), it is closed.
pub(super) struct Kept<'a> {
    from: &'a Connections,
    conn: PgConnection,
    _permit: SemaphorePermit<'a>,
}

impl Kept<'_> {
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// The statement completed: the connection is ready for the next one.
    pub(super) fn done(self) {
        self.from
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.conn, Instant::now()));
    }
}
