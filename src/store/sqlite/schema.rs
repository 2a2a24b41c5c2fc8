//! The SQLite store's database: where it is (the URL), how it is opened,
//! and its schema's migrations.

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::connection::BUSY_TIMEOUT;
use crate::store::StoreError;
use crate::store::rows::backend;

/// The page size of a new database file, in bytes (see [`open`]).
pub(super) const PAGE_SIZE: i64 = 2048;

/// Where the database is, from a `sqlite:` URL.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Location {
    Memory,
    File { path: PathBuf, create: bool },
}

impl Location {
    pub(super) fn parse(url: &str) -> Result<Location, StoreError> {
        // The URL is not repeated: a misplaced one may hold a password.
        let invalid = |why: &'static str| StoreError::backend("invalid SQLite URL", why);
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid("it must start with `sqlite:`"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut mode = "rwc";
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("mode", value @ ("rw" | "rwc" | "memory"))) => mode = value,
                Some(("mode", _)) => {
                    return Err(invalid("`mode` must be rw, rwc or memory (the store writes)"));
                }
                _ => {
                    return Err(invalid("only the `mode` parameter is read"));
                }
            }
        }
        if path == ":memory:" || mode == "memory" {
            return Ok(Location::Memory);
        }
        let path = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| invalid("the path is not UTF-8 once percent-decoded"))?;
        if path.is_empty() {
            return Err(invalid("no file path"));
        }
        Ok(Location::File {
            path: PathBuf::from(path.as_ref()),
            create: mode == "rwc",
        })
    }
}

/// How the database keeps its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Journal {
    /// An in-memory database.
    Memory,
    /// A file in WAL mode: commits do not sync, the store checkpoints.
    Wal,
    /// A file where WAL did not take (some network file systems): commits
    /// sync and may wait for readers, so nothing runs on the caller's
    /// thread.
    Other,
}

/// Opens the connection, sets it up and migrates the schema.
pub(super) fn open(location: &Location) -> Result<(Connection, Journal), StoreError> {
    // The connection is used by one thread only: SQLite's own mutexes are
    // not needed.
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = match location {
        Location::Memory => Connection::open_in_memory_with_flags(flags | OpenFlags::SQLITE_OPEN_READ_WRITE),
        Location::File { path, create } => {
            flags |= OpenFlags::SQLITE_OPEN_READ_WRITE;
            if *create {
                flags |= OpenFlags::SQLITE_OPEN_CREATE;
            }
            Connection::open_with_flags(path, flags)
        }
    }
    .map_err(backend("cannot open the SQLite database"))?;
    let version = rusqlite::version();
    if !supported(version) {
        return Err(StoreError::backend(
            "opening the SQLite database",
            format!(
                "SQLite {version} is too old: the store needs {}.{} or later",
                MIN_SQLITE_VERSION.0, MIN_SQLITE_VERSION.1
            ),
        ));
    }
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(backend("setting up the SQLite connection"))?;
    // Room for every statement the store runs (about 25) and a host's own:
    // rusqlite's default of 16 would prepare some anew at every turn.
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(backend("setting up the SQLite connection"))?;
    let mut journal = Journal::Memory;
    if matches!(location, Location::File { .. }) {
        // Takes effect only on a new file (an existing one keeps its size).
        // Every page a commit changes goes to the WAL whole: with 2 KiB
        // pages (a conversation's state, about 1 KB, still fits in one) a
        // turn of the guide's flow writes more frames than with SQLite's
        // default of 4 KiB (17 against 12) but about 30% fewer bytes.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(backend("setting up the SQLite connection"))?;
        // WAL lets readers in other processes go on during a write;
        // synchronous=NORMAL syncs at checkpoints rather than at each commit.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(backend("setting up the SQLite connection"))?;
        journal = if mode.eq_ignore_ascii_case("wal") {
            Journal::Wal
        } else {
            tracing::warn!(
                journal_mode = %mode,
                "the SQLite database is not in WAL mode: every operation runs on the connection's thread"
            );
            Journal::Other
        };
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend("setting up the SQLite connection"))?;
    }
    migrate(&mut conn)?;
    // From here on the store decides where to wait (see `SqliteStore::run`)
    // and when to checkpoint.
    conn.busy_timeout(Duration::ZERO)
        .map_err(backend("setting up the SQLite connection"))?;
    if journal == Journal::Wal {
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend("setting up the SQLite connection"))?;
    }
    Ok((conn, journal))
}

/// The schema's migrations, in order; `PRAGMA user_version` is the number of
/// those applied.
pub(super) const MIGRATIONS: [&str; 6] = [
    include_str!("migrations/0001_conversations.sql"),
    include_str!("migrations/0002_due_index.sql"),
    include_str!("migrations/0003_one_statement_writes.sql"),
    include_str!("migrations/0004_without_rowid.sql"),
    include_str!("migrations/0005_writes_in_rust.sql"),
    include_str!("migrations/0006_outbox.sql"),
];

/// Applies the migrations the database lacks, in one transaction under the
/// write lock, so two processes opening a new file together migrate it once.
/// (rusqlite_migration does the `user_version` part, but pins an older
/// rusqlite and knows nothing of the sqlx history below.)
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let failed = backend("migrating the SQLite schema");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let mut applied: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(failed)?;
    if applied == 0 {
        // Databases made by chatflow 0.1, whose store ran on sqlx, record
        // the migrations sqlx applied in its own table.
        let from_sqlx: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
                [],
                |row| row.get(0),
            )
            .map_err(failed)?;
        if from_sqlx {
            applied = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                    [],
                    |row| row.get(0),
                )
                .map_err(failed)?;
        }
    }
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::backend(
            "migrating the SQLite schema",
            format!(
                "the database's schema is at version {applied}, newer than this chatflow knows ({known})"
            ),
        ));
    }
    for (n, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(applied).unwrap_or(0))
    {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::backend(format!("SQLite migration {:04}", n + 1), e))?;
    }
    tx.pragma_update(None, "user_version", known).map_err(failed)?;
    tx.commit().map_err(failed)
}

/// The oldest SQLite the store's statements run on (`unhex`, 3.41).
const MIN_SQLITE_VERSION: (u32, u32) = (3, 41);

/// Whether `version` (as `sqlite_version()` gives it, "3.46.0") is at least
/// [`MIN_SQLITE_VERSION`].
pub(super) fn supported(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= MIN_SQLITE_VERSION
}
