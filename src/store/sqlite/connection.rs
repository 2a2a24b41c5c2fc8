//! The SQLite store's connection: operations run at once on the caller's
//! thread when it is free, and otherwise on the connection's own thread,
//! which may wait for other processes' locks and commits what queued
//! together as one transaction.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::SqliteStore;
use super::schema::Journal;
use crate::store::StoreError;

pub(super) struct Shared {
    conn: Mutex<Connection>,
    /// Operations since the last checkpoint was started.
    operations: AtomicU32,
    journal: Journal,
}

impl Shared {
    pub(super) fn new(conn: Connection, journal: Journal) -> Shared {
        Shared {
            conn: Mutex::new(conn),
            operations: AtomicU32::new(0),
            journal,
        }
    }
}

/// Work for the connection's thread.
pub(super) enum Job {
    /// One of the store's operations: it may share a transaction with
    /// other operations queued with it, and its answer waits for the commit.
    Operation(Operation),
    /// Runs on its own, outside any transaction: a host's closure (it may
    /// open transactions of its own), a checkpoint.
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// A store operation: runs its statements and returns how to deliver its
/// answer once the outcome of its transaction is known.
pub(super) type Operation = Box<dyn FnOnce(&mut Connection) -> Answer + Send>;

/// Delivers an operation's answer, or why its batch's transaction failed
/// (then nothing of the batch was written).
pub(super) type Answer = Box<dyn FnOnce(Option<BatchFailed>) + Send>;

/// Why an operation that succeeded in a batch's transaction was not
/// committed.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum BatchFailed {
    /// The COMMIT failed.
    #[error("committing a batch of SQLite writes failed, nothing of it was written")]
    Commit(#[source] Arc<rusqlite::Error>),
    /// Another operation's error (a full disk, an I/O error) rolled the
    /// transaction back.
    #[error("another write's error rolled back the SQLite transaction it shared")]
    RolledBack,
}

/// How long a statement on the connection's thread waits for another
/// process's write lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Operations between two checkpoints of the WAL into the database file
/// (about 50 turns; SQLite's own default is every 1,000 pages written).
pub(super) const CHECKPOINT_EVERY: u32 = 256;

impl SqliteStore {
    /// Runs one of the store's operations on the connection's thread.
    async fn queue<R, F>(&self, op: F) -> Result<rusqlite::Result<R>, StoreError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        refuse_on_connection_thread()?;
        let (done, result) = oneshot::channel();
        let operation: Operation = Box::new(move |conn: &mut Connection| {
            let outcome = op(conn);
            Box::new(move |failed: Option<BatchFailed>| {
                let _ = done.send(match failed {
                    None => Ok(outcome),
                    Some(e) => Err(StoreError::backend("SQLite write", e)),
                });
            })
        });
        self.jobs.send(Job::Operation(operation)).map_err(|_| stopped())?;
        result.await.map_err(|_| panicked())?
    }

    /// Runs one of the store's operations.
    ///
    /// When the connection is free, the operation runs at once on the
    /// calling thread: a statement on a local file takes microseconds, and
    /// handing it to another thread and back costs more than that. SQLite
    /// must then not wait: its busy timeout is zero there, and an operation
    /// that meets another process's write lock (`SQLITE_BUSY`, nothing
    /// written) runs again on the connection's thread, where it may wait.
    /// Operations that find the connection taken queue for that thread too,
    /// which runs them one after another. Checkpoints, which sync the files,
    /// also run there: the connection's automatic ones are off.
    ///
    /// `op` may run twice, so it must write nothing unless it succeeds:
    /// one statement, or one transaction (a `Write`: `BEGIN IMMEDIATE` on
    /// its own, a savepoint inside a batch's transaction).
    pub(super) async fn run<R, F>(&self, op: F) -> Result<rusqlite::Result<R>, StoreError>
    where
        F: Fn(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let inline = match self.shared.journal {
            Journal::Other => None,
            Journal::Memory | Journal::Wal => match self.shared.conn.try_lock() {
                Ok(mut conn) => Some(op(&mut conn)),
                Err(TryLockError::Poisoned(poisoned)) => Some(op(&mut poisoned.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            },
        };
        let result = match inline {
            Some(Err(e)) if is_busy(&e) => self.queue(op).await?,
            Some(result) => result,
            None => self.queue(op).await?,
        };
        self.count_operation();
        Ok(result)
    }

    /// Every [`CHECKPOINT_EVERY`] operations, has the connection's thread
    /// copy the WAL into the database file.
    fn count_operation(&self) {
        let shared = &self.shared;
        if shared.journal != Journal::Wal
            || shared.operations.fetch_add(1, Ordering::Relaxed) + 1 < CHECKPOINT_EVERY
        {
            return;
        }
        shared.operations.store(0, Ordering::Relaxed);
        let _ = self.jobs.send(Job::Alone(Box::new(|conn: &mut Connection| {
            // PASSIVE: copies what it can without waiting for readers in
            // other processes; the next checkpoint takes the rest.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
        })));
    }
}

pub(super) fn stopped() -> StoreError {
    StoreError::backend("SQLite connection", "the connection's thread has stopped")
}

thread_local! {
    /// Set on the connection's thread.
    static ON_CONNECTION_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A store call from a closure running on the connection's thread would
/// wait for that thread: it fails instead.
/// Marks the calling thread as the connection's.
pub(super) fn mark_connection_thread() {
    ON_CONNECTION_THREAD.set(true);
}

pub(super) fn refuse_on_connection_thread() -> Result<(), StoreError> {
    if ON_CONNECTION_THREAD.get() {
        return Err(StoreError::backend(
            "SQLite connection",
            "a store operation was called from a closure on the connection's thread: it would wait for itself",
        ));
    }
    Ok(())
}

pub(super) fn panicked() -> StoreError {
    StoreError::backend(
        "SQLite connection",
        "the operation panicked on the connection's thread",
    )
}

/// The connection's thread: runs queued jobs until every sender is gone.
/// There (only) SQLite may wait for other processes' locks. The store's
/// operations queued together run in one transaction: one commit, one WAL
/// flush, for the lot (they are queued because the connection was busy, so
/// under load they come in groups). A job that panics loses only its own
/// answer: its caller sees the channel closed.
pub(super) fn serve(shared: &Shared, queue: &mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| queue.recv().ok()) else {
            return;
        };
        let mut conn = shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
        match job {
            Job::Alone(f) => {
                if std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut conn))).is_err() {
                    tracing::error!("a SQLite operation panicked; the store goes on");
                }
                // The store's statements must not run inside a transaction
                // a host's closure left open.
                if !conn.is_autocommit() {
                    tracing::warn!("a `with_connection` closure left a transaction open: rolled back");
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
            Job::Operation(first) => {
                let mut batch = vec![first];
                while let Ok(job) = queue.try_recv() {
                    match job {
                        Job::Operation(operation) => batch.push(operation),
                        alone => {
                            next = Some(alone);
                            break;
                        }
                    }
                }
                run_batch(&mut conn, batch);
            }
        }
        let _ = conn.busy_timeout(Duration::ZERO);
    }
}

/// Runs operations in one transaction and answers them after its commit.
fn run_batch(conn: &mut Connection, batch: Vec<Operation>) {
    let run = |conn: &mut Connection, operation: Operation| {
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| operation(conn)));
        if answer.is_err() {
            tracing::error!("a SQLite operation panicked; the store goes on");
        }
        answer.ok()
    };
    if batch.len() == 1 {
        for operation in batch {
            if let Some(answer) = run(conn, operation) {
                answer(None);
            }
        }
        return;
    }
    // Without a transaction (BEGIN failed), each operation commits alone.
    let mut in_transaction = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    let mut answers = Vec::with_capacity(batch.len());
    for operation in batch {
        let Some(answer) = run(conn, operation) else {
            continue;
        };
        if !in_transaction {
            answer(None);
        } else if conn.is_autocommit() {
            // Some errors (a full disk, an I/O error) roll the whole
            // transaction back: the operations before this one were undone
            // with it. This one answers with its own error.
            for earlier in answers.drain(..) {
                let earlier: Answer = earlier;
                earlier(Some(BatchFailed::RolledBack));
            }
            answer(None);
            in_transaction = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        } else {
            answers.push(answer);
        }
    }
    if in_transaction {
        let failed = conn.execute_batch("COMMIT").err().map(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            BatchFailed::Commit(Arc::new(e))
        });
        for answer in answers {
            answer(failed.clone());
        }
    }
}

/// Whether SQLite refused to wait for a lock (nothing was written).
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
