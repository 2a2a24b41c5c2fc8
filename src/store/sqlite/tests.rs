//! The SQLite store's own behaviour beyond the conformance suite: files,
//! migrations, other processes, checkpoints, batches.

use std::time::SystemTime;

use super::SqliteStore;
use super::schema::{Location, MIGRATIONS, supported};
use crate::store::{Store, StoreError};

/// A file path in the temp directory, removed (with its WAL files) on drop.
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        TempDb(std::env::temp_dir().join(format!(
            "chatflow-sqlite-{name}-{}-{:016x}.db",
            std::process::id(),
            fastrand::u64(..)
        )))
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.0.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

#[tokio::test]
async fn a_database_migrated_by_sqlx_is_taken_over_without_rerunning_migrations() {
    let db = TempDb::new("sqlx");
    {
        let conn = rusqlite::Connection::open(&db.0).unwrap();
        // What the sqlx-based store applied; 0004 came after it.
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                 installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                 checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (1, 'conversations', 1, x'00', 0), (2, 'due index', 1, x'00', 0),
                    (3, 'one statement writes', 1, x'00', 0);
             INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id)
             VALUES ('old', 1, 'in', 'kept', 0, 'm1');",
        )
        .unwrap();
    }
    // Rerunning migration 0001 would fail: its tables exist.
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    let kept = store.transcript("old", 0).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].text, "kept");
    // Migration 0004 rebuilt the tables with their rows: the message id
    // is still seen, and the message still waits in the inbox.
    assert_eq!(
        store
            .enqueue("old", "m1", "kept", SystemTime::now())
            .await
            .unwrap(),
        None
    );
    let claim = store
        .acquire("old", "me", SystemTime::now(), SystemTime::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.inbox.len(), 1);
    assert_eq!(claim.inbox[0].text, "kept");
    // Migration 0005 kept the entry's message id, under its new name.
    let source: Option<String> = store
        .with_connection(|conn| {
            conn.query_row(
                "SELECT source_message_id FROM transcript WHERE conversation_id = 'old'",
                [],
                |row| row.get(0),
            )
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source.as_deref(), Some("m1"));
    let version: i64 = store
        .with_connection(|conn| conn.query_row("PRAGMA user_version", [], |row| row.get(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
}

/// A database at migration 0005 with rows: migration 0006 gives its seen
/// ids a time no earlier than they were seen (a redelivery right after the
/// upgrade is still a repeat, and pruning forgets them only once their
/// conversation's latest entry is older than the cut), and its unapplied
/// messages their transcript seq.
#[tokio::test]
async fn migration_0006_keeps_seen_ids_and_finds_the_inbox_entries() {
    let db = TempDb::new("0005");
    {
        let conn = rusqlite::Connection::open(&db.0).unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 5;
             INSERT INTO conversations (id, next_inbox_seq) VALUES ('old', 3);
             INSERT INTO seen_messages (conversation_id, message_id) VALUES ('old', 'm1'), ('old', 'm2');
             INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, source_message_id)
             VALUES ('old', 1, 'in', 'first', 1000, 'm1'), ('old', 2, 'out', 'reply', 1500, NULL),
                    ('old', 3, 'in', 'second', 2000, 'm2');
             INSERT INTO inbox (conversation_id, seq, text, at_ms) VALUES ('old', 2, 'second', 2000);",
        )
        .unwrap();
    }
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    let at = |ms: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    // Both ids carry the conversation's latest time: not older than 2000.
    assert_eq!(store.prune_seen(at(2000), 10).await.unwrap(), 0);
    assert_eq!(store.enqueue("old", "m1", "first", at(3000)).await.unwrap(), None);
    let claim = store
        .acquire("old", "me", at(3000), at(3000))
        .await
        .unwrap()
        .unwrap();
    let inbox: Vec<_> = claim
        .inbox
        .iter()
        .map(|e| (e.seq, e.text.as_str(), e.transcript_seq))
        .collect();
    assert_eq!(inbox, [(2, "second", 3)]);
    // Old entries read back with no delivery state.
    let transcript = store.transcript("old", 0).await.unwrap();
    assert!(
        transcript
            .iter()
            .all(|e| e.delivery.is_none() && e.reply_to.is_none())
    );
    assert_eq!(transcript[0].message_id.as_deref(), Some("m1"));
    assert_eq!(store.prune_seen(at(2001), 10).await.unwrap(), 2);
    assert_eq!(
        store.enqueue("old", "m1", "first", at(3000)).await.unwrap(),
        Some(4)
    );
}

/// An older process still running beside a database migrated to 0005:
/// its enqueue (which left the inbox to a trigger 0005 dropped) fails,
/// rather than recording a message that would never be answered.
#[tokio::test]
async fn an_older_process_enqueue_fails_on_a_migrated_database() {
    const ENQUEUE_BEFORE_0005: &str =
        "INSERT INTO transcript (conversation_id, seq, direction, text, at_ms, message_id)
         SELECT ?1, last + 1, 'in', ?3, ?4, ?2
         FROM (SELECT COALESCE(MAX(seq), 0) AS last FROM transcript WHERE conversation_id = ?1)
         WHERE NOT EXISTS (SELECT 1 FROM seen_messages WHERE conversation_id = ?1 AND message_id = ?2)
         RETURNING seq";
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let old: rusqlite::Result<i64> = store
        .with_connection(|conn| {
            conn.query_row(
                ENQUEUE_BEFORE_0005,
                rusqlite::params!["c", "m1", "hi", 0],
                |row| row.get(0),
            )
        })
        .await
        .unwrap();
    let error = old.unwrap_err().to_string();
    assert!(error.contains("message_id"), "{error}");
    assert!(store.transcript("c", 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn reopening_a_file_keeps_its_conversations_and_a_newer_schema_is_refused() {
    let db = TempDb::new("reopen");
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    assert_eq!(
        store.enqueue("c", "m1", "hi", SystemTime::now()).await.unwrap(),
        Some(1)
    );
    store
        .with_connection(|conn| conn.pragma_update(None, "user_version", 99))
        .await
        .unwrap()
        .unwrap();
    drop(store);
    let error = SqliteStore::connect(&db.url()).await.unwrap_err().to_string();
    assert!(error.contains("version 99"), "{error}");

    let db = TempDb::new("reopen2");
    drop(SqliteStore::connect(&db.url()).await.unwrap());
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    assert_eq!(
        store.enqueue("c", "m1", "hi", SystemTime::now()).await.unwrap(),
        Some(1)
    );
}

/// Another process holding the write lock makes an operation wait on
/// the connection's thread, not on the runtime's: on this one-thread
/// runtime, a wait in SQLite's busy handler would stop the test itself.
#[tokio::test(flavor = "current_thread")]
async fn an_operation_waits_for_another_writer_without_blocking_the_runtime() {
    let db = TempDb::new("busy");
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let path = db.0.clone();
    let other = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(path).unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        tx.commit().unwrap();
    });
    locked_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let enqueue = tokio::spawn({
        let store = store.clone();
        async move { store.enqueue("c", "m1", "hi", SystemTime::now()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!enqueue.is_finished(), "the write lock is held elsewhere");
    // Had the runtime waited in SQLite's busy handler (10 s), the sleep
    // would have ended that much later.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    release_tx.send(()).unwrap();
    assert_eq!(enqueue.await.unwrap().unwrap(), Some(1));
    other.join().unwrap();
}

/// The WAL is copied into the database file as operations go, so it
/// does not grow without end.
#[tokio::test]
async fn checkpoints_copy_the_wal_into_the_database_file() {
    let db = TempDb::new("checkpoint");
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    let file_size = || std::fs::metadata(&db.0).map(|m| m.len()).unwrap_or(0);
    let before = file_size();
    let text = "x".repeat(4096);
    for i in 0..super::connection::CHECKPOINT_EVERY {
        store
            .enqueue("c", &format!("m{i}"), &text, SystemTime::now())
            .await
            .unwrap();
    }
    // The checkpoint runs on the connection's thread: wait for it, briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while file_size() < before + 256 * 4096 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: {} bytes",
            file_size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(store.transcript("c", 0).await.unwrap().len(), 256);
}

/// A checkpoint that copies the whole WAL lets the next write start it
/// over from the beginning, so the file stays the size of what is
/// written between two checkpoints. That is why checkpoints run on the
/// store's connection, between its writes: run from a second connection
/// beside the writes, under load they never copied the whole WAL, and it
/// grew by every page written (900 MB in 15,000 turns).
#[tokio::test]
async fn the_wal_starts_over_after_checkpoints_under_steady_writes() {
    let db = TempDb::new("wal-size");
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    let mut wal = db.0.clone().into_os_string();
    wal.push("-wal");
    let every = super::connection::CHECKPOINT_EVERY;
    for round in 0..8 {
        for i in round * every..(round + 1) * every {
            store
                .enqueue(
                    &format!("c{}", i % 16),
                    &format!("m{i}"),
                    "hello",
                    SystemTime::now(),
                )
                .await
                .unwrap();
        }
        // The connection's thread runs its jobs in order: once this
        // one has run, so has the round's checkpoint.
        store.with_connection(|_| ()).await.unwrap();
    }
    let wal_size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    // Each enqueue writes 4 pages (plus a frame header each) to the
    // WAL: never starting over would leave 8 rounds of them.
    let page = u64::try_from(super::schema::PAGE_SIZE).unwrap();
    let one_round = u64::from(every) * 4 * page;
    assert!(wal_size < 2 * one_round, "WAL of {wal_size} bytes");
}

/// A new file gets the store's page size; a file made before keeps its
/// own (SQLite changes it only by rebuilding the file).
#[tokio::test]
async fn a_new_file_gets_small_pages_and_an_existing_one_keeps_its_own() {
    let page_size = |store: SqliteStore| async move {
        store
            .with_connection(|conn| conn.query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0)))
            .await
            .unwrap()
            .unwrap()
    };
    let new = TempDb::new("page-new");
    let store = SqliteStore::connect(&new.url()).await.unwrap();
    assert_eq!(page_size(store).await, super::schema::PAGE_SIZE);

    let existing = TempDb::new("page-existing");
    rusqlite::Connection::open(&existing.0)
        .unwrap()
        .execute_batch("PRAGMA page_size = 4096; CREATE TABLE host_table (x INTEGER);")
        .unwrap();
    let store = SqliteStore::connect(&existing.url()).await.unwrap();
    store
        .enqueue("c", "m1", "hello", SystemTime::now())
        .await
        .unwrap();
    assert_eq!(page_size(store).await, 4096);
}

/// Operations queued while the connection is busy run in one
/// transaction: a refused save among them fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_queued_together_commit_together_and_fail_alone() {
    let db = TempDb::new("batch");
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    let now = SystemTime::now();
    store
        .acquire("held", "owner", now + std::time::Duration::from_secs(60), now)
        .await
        .unwrap();
    // The connection's thread runs this while the operations below
    // queue behind it.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let blocker = tokio::spawn({
        let store = store.clone();
        async move { store.with_connection(move |_| released.recv()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut enqueues = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        enqueues.push(tokio::spawn(async move {
            store
                .enqueue(&format!("c{i}"), "m1", "hi", SystemTime::now())
                .await
        }));
    }
    let refused = tokio::spawn({
        let store = store.clone();
        async move {
            let engine = crate::Engine::builder(
                crate::Flow::from_json(
                    r#"{"name": "f", "steps": [{"type": "question", "name": "Ask", "text": "?"}]}"#,
                )
                .unwrap(),
            )
            .build()
            .unwrap();
            let conversation = engine.start("held");
            let save = crate::store::Save {
                conversation: &conversation,
                consumed_up_to: 0,
                outgoing: &[],
                reply_to: None,
                deliver: false,
                wake_at: None,
                lease_until: now,
                now,
            };
            store.save("held", "intruder", save).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap().unwrap();
    for enqueue in enqueues {
        assert_eq!(enqueue.await.unwrap().unwrap(), Some(1));
    }
    assert!(matches!(refused.await.unwrap(), Err(StoreError::LeaseLost(_))));
    for i in 0..20 {
        assert_eq!(store.transcript(&format!("c{i}"), 0).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_host_closure_calling_the_store_fails_instead_of_waiting_for_itself() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let handle = tokio::runtime::Handle::current();
    let inner = store.clone();
    let nested = store
        .with_connection(move |_| handle.block_on(inner.load("c")))
        .await
        .unwrap();
    let error = nested.unwrap_err().to_string();
    assert!(error.contains("would wait for itself"), "{error}");
}

#[tokio::test]
async fn a_transaction_a_host_closure_left_open_is_rolled_back() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store
        .with_connection(|conn| {
            conn.execute_batch("BEGIN; INSERT INTO conversations (id) VALUES ('half-done');")
        })
        .await
        .unwrap()
        .unwrap();
    // The store's own writes, including one in a transaction, go on.
    let now = SystemTime::now();
    let recorded = store
        .enqueue_and_acquire("c", "m1", "hi", "me", now, now)
        .await
        .unwrap();
    assert_eq!(recorded.map(|r| r.seq), Some(1));
    assert_eq!(store.load("half-done").await.unwrap(), None);
    let rows: i64 = store
        .with_connection(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM conversations WHERE id = 'half-done'",
                [],
                |row| row.get(0),
            )
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_panicking_host_closure_fails_alone_and_the_store_goes_on() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let result = store.with_connection(|_| -> () { panic!("host bug") }).await;
    assert!(matches!(result, Err(StoreError::Backend { .. })), "{result:?}");
    assert_eq!(
        store.enqueue("c", "m1", "hi", SystemTime::now()).await.unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn a_missing_file_is_created_unless_the_url_says_rw() {
    let db = TempDb::new("missing");
    let error = SqliteStore::connect(&format!("{}?mode=rw", db.url()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot open"), "{error}");
    // SQLite's own error is kept as the source.
    let source = std::error::Error::source(&error);
    assert!(
        source.is_some_and(|s| s.downcast_ref::<rusqlite::Error>().is_some()),
        "{error:?}"
    );
    SqliteStore::connect(&db.url()).await.unwrap();
    assert!(db.0.exists());
}

#[test]
fn sqlite_versions_are_compared_as_numbers() {
    assert!(supported("3.46.0"));
    assert!(supported("3.41.0"));
    assert!(supported("4.0.0"));
    assert!(!supported("3.40.1"));
    assert!(!supported("3.9.2"));
    assert!(!supported("garbage"));
}

#[test]
fn urls_name_a_file_or_memory() {
    let file = |path: &str, create| Location::File {
        path: path.into(),
        create,
    };
    assert_eq!(Location::parse("sqlite::memory:").ok(), Some(Location::Memory));
    assert_eq!(
        Location::parse("sqlite://x.db?mode=memory").ok(),
        Some(Location::Memory)
    );
    assert_eq!(
        Location::parse("sqlite://chatflow.db").ok(),
        Some(file("chatflow.db", true))
    );
    assert_eq!(
        Location::parse("sqlite:///var/lib/a%20b.db").ok(),
        Some(file("/var/lib/a b.db", true))
    );
    assert_eq!(
        Location::parse("sqlite:x.db?mode=rw").ok(),
        Some(file("x.db", false))
    );
    for bad in [
        "postgres://app:s3cret@db/chat",
        "sqlite://",
        "sqlite://x.db?mode=ro",
        "sqlite://x.db?cache=shared&password=s3cret",
    ] {
        let error = Location::parse(bad).expect_err(bad).to_string();
        assert!(error.starts_with("store error: invalid SQLite URL: "), "{error}");
        assert!(!error.contains("s3cret"), "the URL is not repeated: {error}");
    }
}
