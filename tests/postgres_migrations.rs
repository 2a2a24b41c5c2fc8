//! A Postgres database made by an earlier chatflow keeps working: its rows
//! survive the migrations it lacks, and the store goes on from them. Runs
//! when `CHATFLOW_TEST_POSTGRES_URL` is set.

use std::time::SystemTime;

use chatflow::store::{PostgresStore, Store};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A schema of its own in the test database, migrated up to and including
/// `migrations` (file names of `src/store/postgres/migrations`) with `rows`
/// inserted: a database as an earlier chatflow left it. `None` (the test
/// skips) without `CHATFLOW_TEST_POSTGRES_URL`.
struct Earlier {
    /// The test database's pool, to drop the schema with.
    admin: PgPool,
    tag: String,
    /// A URL whose connections use the schema.
    schema_url: String,
}

impl Earlier {
    async fn at(prefix: &str, migrations: &[&str], rows: &[&str]) -> Option<Earlier> {
        let Some(url) = std::env::var("CHATFLOW_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!("skipped: set CHATFLOW_TEST_POSTGRES_URL=postgres://… to test the Postgres store");
            return None;
        };
        let tag = format!("{prefix}_{}_{:016x}", std::process::id(), fastrand::u64(..));
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {tag}"))
            .execute(&admin)
            .await
            .unwrap();
        let separator = if url.contains('?') { '&' } else { '?' };
        let schema_url = format!("{url}{separator}options[search_path]={tag}");

        let earlier = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&earlier).unwrap();
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/postgres/migrations");
        for file in migrations {
            std::fs::copy(folder.join(file), earlier.join(file)).unwrap();
        }
        let old = PgPoolOptions::new()
            .max_connections(1)
            .connect(&schema_url)
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(earlier.as_path())
            .await
            .unwrap()
            .run(&old)
            .await
            .unwrap();
        std::fs::remove_dir_all(&earlier).unwrap();
        for statement in rows {
            sqlx::query(statement).execute(&old).await.unwrap();
        }
        old.close().await;
        Some(Earlier {
            admin,
            tag,
            schema_url,
        })
    }

    async fn drop_schema(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.tag))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_database_at_an_earlier_migration_is_migrated_with_its_rows() {
    let Some(earlier) = Earlier::at(
        "chatflow_mig",
        &["0001_conversations.sql", "0002_due_index.sql", "0003_transcript_counter.sql"],
        &[
            "INSERT INTO conversations (id, next_inbox_seq, next_transcript_seq) VALUES ('old', 2, 2)",
            "INSERT INTO seen_messages (conversation_id, message_id) VALUES ('old', 'm1')",
            "INSERT INTO inbox (conversation_id, seq, text, at_ms) VALUES ('old', 1, 'kept', 0)",
            "INSERT INTO transcript (conversation_id, seq, direction, text, at_ms) VALUES ('old', 1, 'in', 'kept', 0)",
        ],
    )
    .await
    else {
        return;
    };
    let store = PostgresStore::connect(&earlier.schema_url).await.unwrap();
    let now = SystemTime::now();
    // The message id is still seen, the message still waits in the inbox.
    assert_eq!(store.enqueue("old", "m1", "kept", now).await.unwrap(), None);
    let claim = store.acquire("old", "me", now, now).await.unwrap().unwrap();
    let inbox: Vec<(u64, &str)> = claim.inbox.iter().map(|e| (e.seq, e.text.as_str())).collect();
    assert_eq!(inbox, [(1, "kept")]);
    // And the counters go on from the old rows.
    assert_eq!(store.enqueue("old", "m2", "new", now).await.unwrap(), Some(2));
    let texts: Vec<String> = store
        .transcript("old", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(texts, ["kept", "new"]);

    drop(store);
    earlier.drop_schema().await;
}

/// A database at migration 0004 with rows: migration 0005 gives its seen ids
/// a time no earlier than they were seen (a redelivered webhook right after
/// the upgrade is still a repeat; pruning forgets them only once their
/// conversation's latest entry is older than the cut) and its unapplied
/// messages their transcript seq.
#[tokio::test]
async fn migration_0005_keeps_seen_ids_and_finds_the_inbox_entries() {
    let Some(earlier) = Earlier::at(
        "chatflow_mig5",
        &["0001_conversations.sql", "0002_due_index.sql", "0003_transcript_counter.sql", "0004_applied_inbox_seq.sql"],
        &[
            "INSERT INTO conversations (id, next_inbox_seq, next_transcript_seq) VALUES ('old', 3, 4)",
            "INSERT INTO seen_messages (conversation_id, message_id) VALUES ('old', 'm1'), ('old', 'm2')",
            "INSERT INTO transcript (conversation_id, seq, direction, text, at_ms) VALUES
                 ('old', 1, 'in', 'first', 1000), ('old', 2, 'out', 'reply', 1500), ('old', 3, 'in', 'second', 2000)",
            "INSERT INTO inbox (conversation_id, seq, text, at_ms) VALUES ('old', 2, 'second', 2000)",
        ],
    )
    .await
    else {
        return;
    };
    let store = PostgresStore::connect(&earlier.schema_url).await.unwrap();
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
    // Old entries read back with no delivery state nor message id.
    let transcript = store.transcript("old", 0).await.unwrap();
    assert_eq!(transcript.len(), 3);
    assert!(
        transcript
            .iter()
            .all(|e| e.delivery.is_none() && e.reply_to.is_none())
    );
    assert_eq!(store.prune_seen(at(2001), 10).await.unwrap(), 2);
    assert_eq!(
        store.enqueue("old", "m1", "first", at(3000)).await.unwrap(),
        Some(4)
    );

    drop(store);
    earlier.drop_schema().await;
}
