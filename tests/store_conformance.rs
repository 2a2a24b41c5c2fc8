//! One conformance suite for every [`Store`]: the consistency model of
//! `chatflow::store` (exactly-once enqueue, leases, atomic saves) checked the
//! same way on memory, SQLite (in memory and in a WAL file) and Postgres.
//!
//! Each store is one line at the bottom: `conformance!(name, harness)`.
//! Postgres runs when `CHATFLOW_TEST_POSTGRES_URL` is set, each test in a
//! fresh schema; without it the Postgres tests pass with a skip message,
//! except under `CI=true`, where they fail.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chatflow::store::{InboxEntry, MemoryStore, PostgresStore, SqliteStore, Store};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// A store under test, with raw access to its database through a
/// connection of the test's own (to plant corrupt state) and what to clean
/// up afterwards.
pub struct Harness {
    store: Arc<dyn Store>,
    raw: Raw,
    cleanup: Cleanup,
}

enum Raw {
    None,
    /// The database file (WAL mode lets a second connection write beside
    /// the store's).
    Sqlite(PathBuf),
    Postgres(PgPool),
}

enum Cleanup {
    None,
    Files(PathBuf),
    Schema { admin: PgPool, schema: String },
}

impl Harness {
    fn memory() -> Option<Harness> {
        Some(Harness {
            store: Arc::new(MemoryStore::new()),
            raw: Raw::None,
            cleanup: Cleanup::None,
        })
    }

    async fn sqlite_memory() -> Option<Harness> {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        Some(Harness {
            // No other connection reaches an in-memory database.
            raw: Raw::None,
            store: Arc::new(store),
            cleanup: Cleanup::None,
        })
    }

    async fn sqlite_file() -> Option<Harness> {
        let path = std::env::temp_dir().join(format!(
            "chatflow-conformance-{}-{:016x}.db",
            std::process::id(),
            fastrand::u64(..)
        ));
        let store = SqliteStore::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        let mode: String = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        Some(Harness {
            raw: Raw::Sqlite(path.clone()),
            store: Arc::new(store),
            cleanup: Cleanup::Files(path),
        })
    }

    async fn postgres() -> Option<Harness> {
        let url = match std::env::var("CHATFLOW_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                panic!("CI=true but CHATFLOW_TEST_POSTGRES_URL is not set: the Postgres store must be tested")
            }
            _ => {
                eprintln!("skipped: set CHATFLOW_TEST_POSTGRES_URL=postgres://… to test the Postgres store");
                return None;
            }
        };
        // A fresh schema per test: tests and runs never see each other's rows.
        let schema = format!("chatflow_test_{}_{:016x}", std::process::id(), fastrand::u64(..));
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("cannot connect to CHATFLOW_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let separator = if url.contains('?') { '&' } else { '?' };
        let schema_url = format!("{url}{separator}options[search_path]={schema}");
        let store = PostgresStore::connect(&schema_url).await.unwrap();
        let raw = PgPoolOptions::new()
            .max_connections(1)
            .connect(&schema_url)
            .await
            .unwrap();
        Some(Harness {
            raw: Raw::Postgres(raw),
            store: Arc::new(store),
            cleanup: Cleanup::Schema { admin, schema },
        })
    }

    /// Overwrites a conversation's stored state with `text`; false when the
    /// store has no way to (the memory store).
    async fn plant_state(&self, id: &str, text: &str) -> bool {
        match &self.raw {
            Raw::None => false,
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute("UPDATE conversations SET state = ?1 WHERE id = ?2", [text, id])
                    .unwrap();
                true
            }
            Raw::Postgres(pool) => {
                sqlx::query("UPDATE conversations SET state = $1 WHERE id = $2")
                    .bind(text)
                    .bind(id)
                    .execute(pool)
                    .await
                    .unwrap();
                true
            }
        }
    }

    /// Runs after a test passed (a failed test leaves its database to look at).
    async fn finish(self) {
        drop(self.store);
        match self.raw {
            Raw::None => {}
            Raw::Sqlite(_) => {}
            Raw::Postgres(pool) => pool.close().await,
        }
        match self.cleanup {
            Cleanup::None => {}
            Cleanup::Files(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Schema { admin, schema } => {
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
            }
        }
    }
}

/// The suite: one async function per property, each given a fresh store.
mod suite {
    use std::collections::BTreeSet;
    use std::task::Poll;

    use chatflow::store::{Claim, Direction, Enqueued, OutgoingEntry, Save, StoreError, TranscriptEntry};
    use chatflow::{
        Clock, Conversation, Engine, EngineOptions, Flow, ReplyMode, Runtime, RuntimeOptions, Status,
        VirtualClock,
    };

    use super::*;

    /// 2026-01-01T00:00:00Z plus `ms`.
    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_000 + ms)
    }

    fn t_ms(ms: u64) -> u64 {
        1_767_225_600_000 + ms
    }

    fn engine() -> Engine {
        let flow = Flow::from_json(
            r#"{"name": "store-test", "steps": [{"type": "question", "name": "Ask", "text": "?"}]}"#,
        )
        .unwrap();
        Engine::builder(flow).build().unwrap()
    }

    /// A conversation state that differs by `marker`.
    fn state(id: &str, marker: &str) -> Conversation {
        let mut conversation = engine().start(id);
        conversation.push_reply(marker);
        conversation
    }

    fn save<'a>(
        conversation: &'a Conversation,
        consumed_up_to: u64,
        outgoing: &'a [(Direction, String)],
        wake_at: Option<SystemTime>,
        lease_until: SystemTime,
    ) -> Save<'a> {
        // Tests keep their entries as pairs; a test process may leak them.
        let outgoing: &'a [OutgoingEntry] = Box::leak(
            outgoing
                .iter()
                .map(|(direction, text)| OutgoingEntry::new(*direction, text.clone()))
                .collect(),
        );
        Save {
            conversation,
            consumed_up_to,
            outgoing,
            reply_to: None,
            deliver: false,
            wake_at,
            lease_until,
            now: lease_until,
        }
    }

    /// Inbox entries from (seq, text, transcript seq).
    fn inbox(entries: &[(u64, &str, u64)]) -> Vec<InboxEntry> {
        entries
            .iter()
            .map(|(seq, text, transcript_seq)| InboxEntry::new(*seq, *text, *transcript_seq))
            .collect()
    }

    /// A user's entry as the transcript lists it: with its message id.
    fn said(seq: u64, text: &str, at_ms: u64, message_id: &str) -> TranscriptEntry {
        let mut entry = TranscriptEntry::new(seq, Direction::In, text, at_ms);
        entry.message_id = Some(message_id.to_string());
        entry
    }

    fn texts(entries: &[TranscriptEntry]) -> Vec<(u64, Direction, &str)> {
        entries
            .iter()
            .map(|e| (e.seq, e.direction, e.text.as_str()))
            .collect()
    }

    /// Saves a state with this wake-up time under a short lease, then releases.
    async fn park(store: &dyn Store, id: &str, wake_at: Option<SystemTime>) {
        let conversation = state(id, "parked");
        store.acquire(id, "setup", t(1), t(0)).await.unwrap().unwrap();
        store
            .save(id, "setup", save(&conversation, 0, &[], wake_at, t(1)))
            .await
            .unwrap();
        store.release(id, "setup").await.unwrap();
    }

    pub async fn enqueue_records_each_message_once_per_conversation(h: &Harness) {
        let store = &*h.store;
        assert_eq!(store.enqueue("c1", "m1", "hello", t(10)).await.unwrap(), Some(1));
        // A redelivery (even with other text) changes nothing.
        assert_eq!(
            store.enqueue("c1", "m1", "hello again", t(11)).await.unwrap(),
            None
        );
        assert_eq!(store.enqueue("c1", "m2", "second", t(12)).await.unwrap(), Some(2));
        // Message ids are per conversation.
        assert_eq!(
            store.enqueue("c2", "m1", "elsewhere", t(13)).await.unwrap(),
            Some(1)
        );
        assert_eq!(store.enqueue("c1", "m2", "second", t(14)).await.unwrap(), None);

        assert_eq!(
            store.transcript("c1", 0).await.unwrap(),
            [
                said(1, "hello", t_ms(10), "m1"),
                said(2, "second", t_ms(12), "m2")
            ]
        );
        let claim = store.acquire("c1", "r", t(1000), t(20)).await.unwrap().unwrap();
        assert_eq!(claim.conversation, None);
        assert_eq!(claim.inbox, inbox(&[(1, "hello", 1), (2, "second", 2)]));
        let claim = store.acquire("c2", "r", t(1000), t(20)).await.unwrap().unwrap();
        assert_eq!(claim.inbox, inbox(&[(1, "elsewhere", 1)]));
        // Enqueueing alone stores no state.
        assert_eq!(store.load("c1").await.unwrap(), None);
    }

    pub async fn inbox_keeps_arrival_order_and_never_reuses_a_seq(h: &Harness) {
        let store = &*h.store;
        for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
            store
                .enqueue("c", &format!("m{i}"), text, t(i as u64))
                .await
                .unwrap();
        }
        let claim = store.acquire("c", "r", t(1000), t(10)).await.unwrap().unwrap();
        assert_eq!(
            claim.inbox,
            inbox(&[(1, "one", 1), (2, "two", 2), (3, "three", 3)])
        );
        let conversation = state("c", "x");
        store
            .save("c", "r", save(&conversation, 2, &[], None, t(1000)))
            .await
            .unwrap();
        let claim = store.acquire("c", "r", t(1000), t(20)).await.unwrap().unwrap();
        assert_eq!(claim.inbox, inbox(&[(3, "three", 3)]));
        // Emptied, the inbox still counts on: seq 4, not 1.
        store
            .save("c", "r", save(&conversation, 3, &[], None, t(1000)))
            .await
            .unwrap();
        store.enqueue("c", "m3", "four", t(30)).await.unwrap();
        let claim = store.acquire("c", "r", t(1000), t(40)).await.unwrap().unwrap();
        assert_eq!(claim.inbox, inbox(&[(4, "four", 4)]));
        // Consuming up to a seq leaves later messages, even ones that
        // arrived after the claim.
        store.enqueue("c", "m4", "five", t(50)).await.unwrap();
        store
            .save("c", "r", save(&conversation, 4, &[], None, t(1000)))
            .await
            .unwrap();
        let claim = store.acquire("c", "r", t(1000), t(60)).await.unwrap().unwrap();
        assert_eq!(claim.inbox, inbox(&[(5, "five", 5)]));
    }

    pub async fn a_lease_excludes_other_owners_until_it_expires(h: &Harness) {
        let store = &*h.store;
        // A conversation nobody has seen can be taken: no state, no inbox.
        let claim = store.acquire("c", "a", t(100), t(0)).await.unwrap().unwrap();
        assert_eq!((claim.conversation, claim.inbox), (None, vec![]));
        assert!(store.acquire("c", "b", t(500), t(50)).await.unwrap().is_none());
        assert!(store.acquire("c", "b", t(500), t(99)).await.unwrap().is_none());
        // Taking it again renews it.
        assert!(store.acquire("c", "a", t(200), t(60)).await.unwrap().is_some());
        assert!(store.acquire("c", "b", t(500), t(150)).await.unwrap().is_none());
        // Expired (at its end time exactly): anyone may take it over.
        assert!(store.acquire("c", "b", t(500), t(200)).await.unwrap().is_some());
        assert!(store.acquire("c", "a", t(600), t(210)).await.unwrap().is_none());
        // A refused acquire changes nothing: b still holds it until 500.
        assert!(store.acquire("c", "a", t(600), t(499)).await.unwrap().is_none());
        assert!(store.acquire("c", "a", t(600), t(500)).await.unwrap().is_some());
        // Leases are per conversation.
        assert!(
            store
                .acquire("other", "b", t(600), t(210))
                .await
                .unwrap()
                .is_some()
        );
    }

    pub async fn a_save_after_a_takeover_is_refused_and_commits_nothing(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        let before = state("c", "before");
        store.acquire("c", "a", t(100), t(0)).await.unwrap().unwrap();
        store
            .save("c", "a", save(&before, 0, &[], Some(t(5000)), t(100)))
            .await
            .unwrap();
        // a stalls past its lease; b takes over.
        let claim = store.acquire("c", "b", t(1000), t(150)).await.unwrap().unwrap();
        assert_eq!(claim.conversation.as_ref(), Some(&before));
        let after = state("c", "after");
        let outgoing = [(Direction::Out, "from a".to_string())];
        let refused = store
            .save("c", "a", save(&after, 1, &outgoing, Some(t(1)), t(10_000)))
            .await;
        assert!(
            matches!(&refused, Err(StoreError::LeaseLost(id)) if id == "c"),
            "{refused:?}"
        );
        // Nothing of a's turn: state, transcript, inbox, wake-up, lease.
        assert_eq!(store.load("c").await.unwrap(), Some(before.clone()));
        assert_eq!(
            texts(&store.transcript("c", 0).await.unwrap()),
            [(1, Direction::In, "hi")]
        );
        assert_eq!(store.next_wake().await.unwrap(), Some(t(5000)));
        assert!(store.acquire("c", "a", t(2000), t(999)).await.unwrap().is_none());
        let claim = store.acquire("c", "b", t(1000), t(200)).await.unwrap().unwrap();
        assert_eq!(claim.inbox, inbox(&[(1, "hi", 1)]));
        // b's saves go through.
        store
            .save("c", "b", save(&after, 1, &[], None, t(1000)))
            .await
            .unwrap();
        assert_eq!(store.load("c").await.unwrap(), Some(after));

        // Saving without ever holding the lease, or on an unknown
        // conversation, is refused too.
        let other = state("x", "x");
        for (id, owner) in [("c", "stranger"), ("unknown", "b")] {
            let refused = store.save(id, owner, save(&other, 0, &[], None, t(1000))).await;
            assert!(matches!(refused, Err(StoreError::LeaseLost(_))), "{refused:?}");
        }
        assert_eq!(store.load("unknown").await.unwrap(), None);
    }

    pub async fn a_save_commits_state_transcript_inbox_and_wake_up_together(h: &Harness) {
        let store = &*h.store;
        for (i, text) in ["a", "b", "c"].into_iter().enumerate() {
            store
                .enqueue("c", &format!("m{i}"), text, t(i as u64))
                .await
                .unwrap();
        }
        store.acquire("c", "r", t(100), t(10)).await.unwrap().unwrap();
        let conversation = state("c", "saved");
        let outgoing = [
            (Direction::Out, "reply".to_string()),
            (Direction::Handoff, "support".to_string()),
        ];
        store
            .save("c", "r", save(&conversation, 2, &outgoing, Some(t(500)), t(1000)))
            .await
            .unwrap();

        assert_eq!(store.load("c").await.unwrap(), Some(conversation.clone()));
        let transcript = store.transcript("c", 0).await.unwrap();
        assert_eq!(
            texts(&transcript),
            [
                (1, Direction::In, "a"),
                (2, Direction::In, "b"),
                (3, Direction::In, "c"),
                (4, Direction::Out, "reply"),
                (5, Direction::Handoff, "support"),
            ]
        );
        // Replies are stamped with the caller's clock (`Save::now`, here t(1000)).
        let ms = |time: SystemTime| time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        for entry in &transcript[3..] {
            assert_eq!(entry.at_ms, ms(t(1000)), "{entry:?}");
        }
        assert_eq!(store.next_wake().await.unwrap(), Some(t(500)));
        // The lease was extended to 1000.
        assert!(
            store
                .acquire("c", "other", t(2000), t(999))
                .await
                .unwrap()
                .is_none()
        );
        let claim = store.acquire("c", "r", t(2000), t(20)).await.unwrap().unwrap();
        assert_eq!(claim.conversation, Some(conversation.clone()));
        assert_eq!(claim.inbox, inbox(&[(3, "c", 3)]));
        // A user message after the replies takes the next transcript seq.
        assert_eq!(store.enqueue("c", "m9", "d", t(30)).await.unwrap(), Some(6));

        // Clearing the wake-up; an empty save adds no transcript entries.
        store
            .save("c", "r", save(&conversation, 2, &[], None, t(2000)))
            .await
            .unwrap();
        assert_eq!(store.next_wake().await.unwrap(), None);
        assert_eq!(store.transcript("c", 0).await.unwrap().len(), 6);
    }

    pub async fn release_frees_only_the_owners_lease(h: &Harness) {
        let store = &*h.store;
        store.acquire("c", "a", t(1000), t(0)).await.unwrap().unwrap();
        // Someone else's release is ignored; so is an unknown conversation's.
        store.release("c", "b").await.unwrap();
        store.release("unknown", "a").await.unwrap();
        assert!(store.acquire("c", "b", t(1000), t(10)).await.unwrap().is_none());
        store.release("c", "a").await.unwrap();
        assert!(store.acquire("c", "b", t(1000), t(10)).await.unwrap().is_some());
        // After release the old owner may not save.
        let conversation = state("c", "x");
        store.release("c", "b").await.unwrap();
        let refused = store
            .save("c", "b", save(&conversation, 0, &[], None, t(1000)))
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost(_))), "{refused:?}");
        // Releasing twice is fine.
        store.release("c", "b").await.unwrap();
    }

    pub async fn due_lists_what_needs_a_runner_most_overdue_first(h: &Harness) {
        let store = &*h.store;
        let now = t(1000);
        assert_eq!(store.due(now, 10).await.unwrap(), Vec::<String>::new());

        park(store, "early", Some(t(900))).await;
        park(store, "late", Some(t(990))).await;
        park(store, "future", Some(t(2000))).await;
        park(store, "ended", None).await;
        // A wake-up that has come and a message: listed once.
        park(store, "both", Some(t(960))).await;
        store.enqueue("both", "m", "hi", t(970)).await.unwrap();
        // Only messages waiting (never run), or messages before a future wake-up.
        store.enqueue("inbox", "m", "hi", t(995)).await.unwrap();
        park(store, "future-with-inbox", Some(t(2000))).await;
        store
            .enqueue("future-with-inbox", "m", "hi", t(998))
            .await
            .unwrap();
        // Messages already applied do not count.
        store.enqueue("consumed", "m", "hi", t(10)).await.unwrap();
        store
            .acquire("consumed", "r", t(20), t(10))
            .await
            .unwrap()
            .unwrap();
        let conversation = state("consumed", "x");
        store
            .save("consumed", "r", save(&conversation, 1, &[], None, t(20)))
            .await
            .unwrap();
        store.release("consumed", "r").await.unwrap();
        // Held by a live runner: not listed.
        let conversation = state("leased", "x");
        store
            .acquire("leased", "other", t(5000), t(0))
            .await
            .unwrap()
            .unwrap();
        store
            .save(
                "leased",
                "other",
                save(&conversation, 0, &[], Some(t(800)), t(5000)),
            )
            .await
            .unwrap();
        // Held by a runner whose lease ran out: listed.
        let conversation = state("expired", "x");
        store
            .acquire("expired", "dead", t(999), t(0))
            .await
            .unwrap()
            .unwrap();
        store
            .save(
                "expired",
                "dead",
                save(&conversation, 0, &[], Some(t(950)), t(1000)),
            )
            .await
            .unwrap();

        let expected = ["early", "expired", "both", "late", "inbox", "future-with-inbox"];
        assert_eq!(store.due(now, 10).await.unwrap(), expected);
        assert_eq!(store.due(now, 2).await.unwrap(), expected[..2]);
        assert_eq!(store.due(now, 0).await.unwrap(), Vec::<String>::new());
        // Taking a lease hides a conversation; releasing it shows it again.
        store.acquire("early", "r", t(2000), now).await.unwrap().unwrap();
        assert_eq!(store.due(now, 10).await.unwrap(), expected[1..]);
        store.release("early", "r").await.unwrap();
        assert_eq!(store.due(now, 10).await.unwrap(), expected);
        // Once the live lease ends, the leased one is the most overdue.
        let later = t(5000);
        assert_eq!(store.due(later, 1).await.unwrap(), ["leased"]);
        // `due` takes nothing: the list is the same when asked again.
        assert_eq!(store.due(later, 1).await.unwrap(), ["leased"]);
    }

    pub async fn next_wake_is_the_earliest_wake_up(h: &Harness) {
        let store = &*h.store;
        assert_eq!(store.next_wake().await.unwrap(), None);
        store.enqueue("waiting", "m", "hi", t(0)).await.unwrap();
        assert_eq!(store.next_wake().await.unwrap(), None);
        park(store, "a", Some(t(500))).await;
        park(store, "none", None).await;
        assert_eq!(store.next_wake().await.unwrap(), Some(t(500)));
        // Leased or not, past or future: the earliest.
        let conversation = state("b", "x");
        store.acquire("b", "r", t(10_000), t(0)).await.unwrap().unwrap();
        store
            .save("b", "r", save(&conversation, 0, &[], Some(t(300)), t(10_000)))
            .await
            .unwrap();
        assert_eq!(store.next_wake().await.unwrap(), Some(t(300)));
        store
            .save("b", "r", save(&conversation, 0, &[], Some(t(700)), t(10_000)))
            .await
            .unwrap();
        assert_eq!(store.next_wake().await.unwrap(), Some(t(500)));
        park(store, "a", None).await;
        assert_eq!(store.next_wake().await.unwrap(), Some(t(700)));
        // Counts: "b" sleeps until 700; "a" and "none" are parked; "waiting"
        // has no state yet.
        assert_eq!(
            store.counts(t(600)).await.unwrap(),
            chatflow::store::ConversationCounts {
                sleeping: 1,
                parked: 2
            }
        );
    }

    pub async fn load_and_transcript_read_without_the_lease(h: &Harness) {
        let store = &*h.store;
        assert_eq!(store.load("unknown").await.unwrap(), None);
        assert_eq!(store.transcript("unknown", 0).await.unwrap(), vec![]);
        for i in 0..5u64 {
            store
                .enqueue("c", &format!("m{i}"), &format!("text {i}"), t(i))
                .await
                .unwrap();
        }
        let conversation = state("c", "loaded");
        store.acquire("c", "r", t(1000), t(10)).await.unwrap().unwrap();
        store
            .save(
                "c",
                "r",
                save(&conversation, 5, &[(Direction::Out, "out".into())], None, t(1000)),
            )
            .await
            .unwrap();
        // Another runner holds the lease; reading still works.
        assert_eq!(store.load("c").await.unwrap(), Some(conversation));
        let seqs = |entries: Vec<TranscriptEntry>| entries.into_iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.transcript("c", 0).await.unwrap()), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(store.transcript("c", 4).await.unwrap()), [5, 6]);
        assert_eq!(seqs(store.transcript("c", 6).await.unwrap()), Vec::<u64>::new());
        assert_eq!(
            seqs(store.transcript("c", u64::MAX).await.unwrap()),
            Vec::<u64>::new()
        );
        let tail = store.transcript("c", 4).await.unwrap();
        assert_eq!(
            texts(&tail),
            [(5, Direction::In, "text 4"), (6, Direction::Out, "out")]
        );
        assert_eq!(tail[0].at_ms, t_ms(4));
    }

    pub async fn unreadable_state_is_reported_as_corrupt(h: &Harness) {
        let store = &*h.store;
        park(store, "bad", None).await;
        park(store, "good", None).await;
        if !h.plant_state("bad", "{not json").await {
            eprintln!("skipped: this store offers no way to plant a corrupt state");
            return;
        }
        // Corrupt, naming the conversation, and keeping the parser's error.
        let corrupt = |result: Result<(), StoreError>| match result {
            Err(e @ StoreError::Corrupt { .. }) => {
                let parser = std::error::Error::source(&e)
                    .is_some_and(|source| source.downcast_ref::<serde_json::Error>().is_some());
                matches!(&e, StoreError::Corrupt { id, .. } if id == "bad") && parser
            }
            _ => false,
        };
        assert!(corrupt(store.load("bad").await.map(|_| ())));
        assert!(corrupt(
            store.acquire("bad", "r", t(100), t(10)).await.map(|_| ())
        ));
        // Well-formed JSON that is not a conversation is corrupt too.
        assert!(h.plant_state("bad", r#"{"id": 5}"#).await);
        assert!(corrupt(store.load("bad").await.map(|_| ())));
        // Others are unaffected.
        assert!(store.load("good").await.unwrap().is_some());
        assert_eq!(
            store.enqueue("bad", "m", "still recorded", t(20)).await.unwrap(),
            Some(1)
        );
    }

    pub async fn texts_and_ids_round_trip_verbatim(h: &Harness) {
        let store = &*h.store;
        let long = "long ".repeat(20_000);
        let samples = [
            "",
            "plain",
            "quotes ' \" ` and ; DROP TABLE conversations; --",
            "unicode: héllo, 你好, 🙂, \u{202e}rtl",
            "nul \0 in the middle",
            "newlines\r\nand\ttabs",
            long.as_str(),
        ];
        let id = "conversation 'ü' \"🙂\" %_";
        for (i, text) in samples.iter().enumerate() {
            let message_id = format!("message '{i}' 🙂 %");
            assert!(
                store
                    .enqueue(id, &message_id, text, t(i as u64))
                    .await
                    .unwrap()
                    .is_some()
            );
            assert!(
                store
                    .enqueue(id, &message_id, text, t(i as u64))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let claim = store
            .acquire(id, "owner 'ü'", t(100), t(10))
            .await
            .unwrap()
            .unwrap();
        let got: Vec<&str> = claim.inbox.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(got, samples);
        let mut conversation = state(id, "");
        for text in samples {
            conversation.push_reply(text);
        }
        let outgoing: Vec<_> = samples.iter().map(|s| (Direction::Out, s.to_string())).collect();
        store
            .save(id, "owner 'ü'", save(&conversation, 7, &outgoing, None, t(100)))
            .await
            .unwrap();
        assert_eq!(store.load(id).await.unwrap(), Some(conversation));
        let transcript = store.transcript(id, 0).await.unwrap();
        let got: Vec<&str> = transcript.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(got, [samples, samples].concat());
    }

    pub async fn concurrent_enqueues_are_recorded_once_with_gap_free_seqs(h: &Harness) {
        const N: usize = 40;
        let mut tasks = Vec::new();
        for i in 0..N {
            // Every message is delivered twice, at once.
            for _ in 0..2 {
                let store = h.store.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .enqueue("c", &format!("m{i}"), &format!("text {i}"), t(i as u64))
                        .await
                        .unwrap()
                }));
            }
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.extend(task.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());
        let transcript = h.store.transcript("c", 0).await.unwrap();
        assert_eq!(transcript.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
        let distinct: BTreeSet<&str> = transcript.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(distinct.len(), N);
        // The inbox holds the same messages, numbered 1..=N in the same order.
        let claim = h.store.acquire("c", "r", t(1000), t(100)).await.unwrap().unwrap();
        let expected: Vec<InboxEntry> = transcript
            .iter()
            .zip(1..)
            .map(|(e, seq)| InboxEntry::new(seq, e.text.clone(), e.seq))
            .collect();
        assert_eq!(claim.inbox, expected);
    }

    pub async fn concurrent_acquires_grant_one_lease(h: &Harness) {
        h.store.enqueue("c", "m", "hi", t(0)).await.unwrap();
        for round in 0..3u64 {
            let mut tasks = Vec::new();
            for owner in 0..12 {
                let store = h.store.clone();
                tasks.push(tokio::spawn(async move {
                    let now = t(round * 1000);
                    let claim = store
                        .acquire(
                            "c",
                            &format!("owner-{round}-{owner}"),
                            now + Duration::from_millis(500),
                            now,
                        )
                        .await
                        .unwrap();
                    claim.map(|_| owner)
                }));
            }
            let mut winners = Vec::new();
            for task in tasks {
                winners.extend(task.await.unwrap());
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            // Only the winner can save.
            let conversation = state("c", "x");
            let mut saved = 0;
            for owner in 0..12 {
                let result = h
                    .store
                    .save(
                        "c",
                        &format!("owner-{round}-{owner}"),
                        save(&conversation, 0, &[], None, t(round * 1000 + 500)),
                    )
                    .await;
                match result {
                    Ok(()) => saved += 1,
                    Err(StoreError::LeaseLost(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(saved, 1);
        }
    }

    /// Polls `future` until it is ready or for a random number of times, then
    /// drops it: a cancellation at a random await point.
    async fn cut<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let mut polls = fastrand::usize(1..12);
        std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending if polls == 1 => Poll::Ready(None),
            Poll::Pending => {
                polls -= 1;
                Poll::Pending
            }
        })
        .await
    }

    /// Operations dropped half-way (a host's request future cancelled, a
    /// timeout) either happened or did not, and leave the store usable.
    pub async fn cancelled_operations_commit_all_or_nothing(h: &Harness) {
        const N: u64 = 40;
        for i in 0..N {
            let (message_id, text) = (format!("m{i}"), format!("text {i}"));
            cut(h.store.enqueue("c", &message_id, &text, t(i))).await;
        }
        // Redeliver everything: what was recorded is a duplicate now.
        for i in 0..N {
            h.store
                .enqueue("c", &format!("m{i}"), &format!("text {i}"), t(i))
                .await
                .unwrap();
        }
        let transcript = h.store.transcript("c", 0).await.unwrap();
        let mut inbound: Vec<&str> = transcript.iter().map(|e| e.text.as_str()).collect();
        inbound.sort();
        let mut expected: Vec<String> = (0..N).map(|i| format!("text {i}")).collect();
        expected.sort();
        assert_eq!(inbound, expected);
        assert_eq!(
            transcript.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=N).collect::<Vec<_>>()
        );

        // Saves of three replies each, cut at random: each lands whole or not at all.
        let conversation = state("c", "x");
        let mut landed = 0;
        for i in 0..N {
            let now = t(1000 + i);
            let acquire = h.store.acquire("c", "r", now + Duration::from_secs(60), now);
            if !matches!(cut(acquire).await, Some(Ok(Some(_)))) {
                continue;
            }
            let outgoing: Vec<_> = ["a", "b", "c"]
                .iter()
                .map(|part| (Direction::Out, format!("{i}{part}")))
                .collect();
            let save = h.store.save(
                "c",
                "r",
                save(
                    &conversation,
                    i + 1,
                    &outgoing,
                    None,
                    now + Duration::from_secs(60),
                ),
            );
            if matches!(cut(save).await, Some(Ok(()))) {
                landed += 1;
            }
        }
        let replies: Vec<String> = h
            .store
            .transcript("c", N)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(replies.len() % 3, 0, "{replies:?}");
        for triple in replies.chunks(3) {
            let i = triple[0].trim_end_matches('a');
            assert_eq!(triple, [format!("{i}a"), format!("{i}b"), format!("{i}c")]);
        }
        assert!(replies.len() / 3 >= landed);
        // Still usable: a full turn goes through.
        h.store
            .acquire("c", "r2", t(100_000), t(99_000))
            .await
            .unwrap()
            .unwrap();
        h.store
            .save("c", "r2", save(&conversation, N, &[], None, t(100_000)))
            .await
            .unwrap();
        assert!(
            h.store
                .acquire("c", "r3", t(100_000), t(99_000))
                .await
                .unwrap()
                .is_none()
        );
    }

    const SMOKE: &str = r#"{"name": "smoke", "steps": [
      {"type": "question", "name": "Ask", "text": "Say something"},
      {"type": "delay", "name": "Wait", "seconds": 30},
      {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
    ]}"#;

    pub async fn the_runtime_runs_on_the_store(h: &Harness) {
        let clock = Arc::new(VirtualClock::new());
        let engine = Engine::builder(Flow::from_json(SMOKE).unwrap())
            .shared_clock(clock.clone())
            .build()
            .unwrap();
        let runtime = Runtime::new(engine, h.store.clone());
        let replies = |turn: &chatflow::Turn| turn.replies.iter().map(|r| r.text.clone()).collect::<Vec<_>>();

        let turn = runtime.handle_message("user", Some("m1"), "hello").await.unwrap();
        assert!(!turn.duplicate);
        assert_eq!(turn.status, Status::AwaitingReply);
        assert_eq!(
            replies(&turn),
            ["Say something", "You said hello", "Say something"]
        );
        // It slept through the Delay, in virtual time.
        assert_eq!(clock.elapsed(), Duration::from_secs(30));

        let again = runtime.handle_message("user", Some("m1"), "hello").await.unwrap();
        assert!(again.duplicate && again.replies.is_empty());
        assert_eq!(again.status, Status::AwaitingReply);

        let turn = runtime.handle_message("user", Some("m2"), "again").await.unwrap();
        assert_eq!(replies(&turn), ["You said again", "Say something"]);
        assert_eq!(turn.replies[0].seq, 6);

        let store = &*h.store;
        let transcript = store.transcript("user", 0).await.unwrap();
        assert_eq!(
            texts(&transcript),
            [
                (1, Direction::In, "hello"),
                (2, Direction::Out, "Say something"),
                (3, Direction::Out, "You said hello"),
                (4, Direction::Out, "Say something"),
                (5, Direction::In, "again"),
                (6, Direction::Out, "You said again"),
                (7, Direction::Out, "Say something"),
            ]
        );
        let parked = store.load("user").await.unwrap().unwrap();
        assert_eq!(parked.status(), &Status::AwaitingReply);
        assert_eq!(parked.current_step(), Some("Ask"));
        // Waiting for the user: nothing due, no wake-up, lease released.
        assert_eq!(store.due(clock.now(), 10).await.unwrap(), Vec::<String>::new());
        assert_eq!(store.next_wake().await.unwrap(), None);
        assert!(
            store
                .acquire("user", "someone", clock.now(), clock.now())
                .await
                .unwrap()
                .is_some()
        );
    }

    const ECHO: &str = r#"{"name": "echo", "steps": [
      {"type": "question", "name": "Ask", "text": "?"},
      {"type": "message", "name": "Echo", "text": "echo <<step.Ask.response>>", "next": "Ask"}
    ]}"#;

    pub async fn two_runtimes_apply_concurrent_messages_once_in_order(h: &Harness) {
        let runtime = || echo_runtime(h, RuntimeOptions::default());
        // Two "processes" sharing the store.
        let runtimes = [runtime(), runtime()];
        let mut tasks = Vec::new();
        for i in 0..16 {
            let runtime = runtimes[i % 2].clone();
            let other = runtimes[(i + 1) % 2].clone();
            let conversation = format!("c{}", i % 2);
            tasks.push(tokio::spawn(async move {
                let id = format!("m{i}");
                runtime
                    .handle_message(&conversation, Some(&id), &format!("message {i}"))
                    .await
                    .unwrap();
                // Redelivered to the other process.
                other
                    .handle_message(&conversation, Some(&id), "redelivered")
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().duplicate);
        }
        for c in ["c0", "c1"] {
            let transcript = h.store.transcript(c, 0).await.unwrap();
            let inbound: Vec<&str> = transcript
                .iter()
                .filter(|e| e.direction == Direction::In)
                .map(|e| e.text.as_str())
                .collect();
            let echoes: Vec<&str> = transcript
                .iter()
                .filter_map(|e| e.text.strip_prefix("echo "))
                .collect();
            assert_eq!(inbound.len(), 8, "{c}: {transcript:?}");
            assert_eq!(echoes, inbound, "{c}");
            assert_eq!(
                transcript.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (1..=transcript.len() as u64).collect::<Vec<_>>()
            );
        }
    }

    /// A runtime of the echo flow on the harness's store.
    fn echo_runtime(h: &Harness, options: RuntimeOptions) -> Runtime {
        let engine = Engine::builder(Flow::from_json(ECHO).unwrap())
            .options(EngineOptions::default().with_reply_mode(ReplyMode::OnePerQuestion))
            .build()
            .unwrap();
        Runtime::with_options(engine, h.store.clone(), options)
    }

    /// A runtime of the echo flow that retries a held lease every
    /// millisecond, so two of them contend hard for one conversation.
    fn echo_runtime_retrying_fast(h: &Harness) -> Runtime {
        echo_runtime(
            h,
            RuntimeOptions::default().with_busy_retry(Duration::from_millis(1)),
        )
    }

    /// Many messages to one conversation from two runtimes retrying fast:
    /// a runner that takes the lease right as the previous holder's last
    /// save commits must not see that save's applied messages again.
    pub async fn a_lease_taken_during_a_save_sees_only_unapplied_messages(h: &Harness) {
        let runtimes = [echo_runtime_retrying_fast(h), echo_runtime_retrying_fast(h)];
        const MESSAGES: usize = 120;
        let tasks: Vec<_> = (0..MESSAGES)
            .map(|i| {
                let runtime = runtimes[i % 2].clone();
                tokio::spawn(async move {
                    runtime
                        .handle_message("c", Some(&format!("m{i}")), &format!("message {i}"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let transcript = h.store.transcript("c", 0).await.unwrap();
        let mut echoes: Vec<&str> = transcript
            .iter()
            .filter_map(|e| e.text.strip_prefix("echo "))
            .collect();
        let mut inbound: Vec<&str> = transcript
            .iter()
            .filter(|e| e.direction == Direction::In)
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(inbound.len(), MESSAGES);
        echoes.sort_unstable();
        inbound.sort_unstable();
        assert_eq!(echoes, inbound, "each message echoed exactly once");
    }

    const SLEEPY: &str = r#"{"name": "sleepy", "steps": [
      {"type": "question", "name": "Ask", "text": "?"},
      {"type": "delay", "name": "Wait", "seconds": 3600},
      {"type": "message", "name": "After", "text": "done with <<step.Ask.response>>"}
    ]}"#;

    /// A clock whose sleeps never end: a runtime on it parks conversations
    /// in their Delay and stays there, as a process that died would.
    struct StuckClock(Arc<VirtualClock>);

    #[async_trait::async_trait]
    impl chatflow::Clock for StuckClock {
        fn now(&self) -> SystemTime {
            self.0.now()
        }

        async fn sleep_until(&self, _deadline: SystemTime) {
            std::future::pending::<()>().await
        }
    }

    pub async fn each_due_conversation_is_resumed_by_exactly_one_runtime(h: &Harness) {
        let clock = Arc::new(VirtualClock::new());
        let engine = |c: Arc<dyn chatflow::Clock>| {
            Engine::builder(Flow::from_json(SLEEPY).unwrap())
                .shared_clock(c)
                .build()
                .unwrap()
        };
        let store = &*h.store;
        let dying = Runtime::new(engine(Arc::new(StuckClock(clock.clone()))), h.store.clone());
        let ids: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (dying, id) = (dying.clone(), id.clone());
                tokio::spawn(async move { dying.handle_message(&id, Some("m1"), "x").await })
            })
            .collect();
        while store.counts(clock.now()).await.unwrap().sleeping < ids.len() as u64 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for task in &tasks {
            task.abort();
        }
        // Two processes wake up at once when the Delays end.
        clock.advance(Duration::from_secs(3600));
        let a = Runtime::new(engine(clock.clone()), h.store.clone());
        let b = Runtime::new(engine(clock.clone()), h.store.clone());
        let (ra, rb) = tokio::join!(
            async {
                let mut n = 0;
                while let Ok(k) = a.wake_due().await {
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                n
            },
            async {
                let mut n = 0;
                while let Ok(k) = b.wake_due().await {
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                n
            }
        );
        assert!(ra + rb >= ids.len(), "{ra} + {rb}");
        for id in &ids {
            let transcript = store.transcript(id, 0).await.unwrap();
            let done = transcript.iter().filter(|e| e.text == "done with x").count();
            assert_eq!(done, 1, "{id}: {transcript:?}");
            assert_eq!(store.load(id).await.unwrap().unwrap().status(), &Status::Finished);
        }
    }

    pub async fn a_parked_conversation_resumes_in_another_runtime(h: &Harness) {
        let clock = Arc::new(VirtualClock::new());
        let make = || {
            let engine = Engine::builder(Flow::from_json(SLEEPY).unwrap())
                .shared_clock(clock.clone())
                .build()
                .unwrap();
            Runtime::new(engine, h.store.clone())
        };
        let store = &*h.store;
        // The first process parks the conversation in its Delay and dies
        // there (or a little later: any point after that save is fine).
        let first = make();
        let task = tokio::spawn(async move { first.handle_message("c", Some("m1"), "x").await });
        let sleeping =
            |c: Option<Conversation>| c.is_some_and(|c| matches!(c.status(), Status::Sleeping { .. }));
        while !sleeping(store.load("c").await.unwrap()) && !task.is_finished() {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
        // The second process, after the dead one's lease ran out: it runs
        // what is due, jumping the clock to each wake-up, until nothing is.
        let second = make();
        clock.advance(Duration::from_secs(3600));
        loop {
            if second.wake_due().await.unwrap() > 0 {
                continue;
            }
            let now = clock.now();
            match store.next_wake().await.unwrap() {
                Some(at) if at > now => clock.advance(at.duration_since(now).unwrap()),
                _ => break,
            }
        }
        let transcript = store.transcript("c", 0).await.unwrap();
        let done = transcript.iter().filter(|e| e.text == "done with x").count();
        let parked = store
            .load("c")
            .await
            .unwrap()
            .map(|c| serde_json::to_string(&c).unwrap());
        let wake = store.next_wake().await.unwrap();
        assert_eq!(
            done,
            1,
            "{transcript:?}, {parked:?}, next wake {wake:?}, now {:?}",
            clock.now()
        );
        assert_eq!(
            store.load("c").await.unwrap().unwrap().status(),
            &Status::Finished
        );
        assert_eq!(store.next_wake().await.unwrap(), None);
        assert_eq!(store.due(clock.now(), 10).await.unwrap(), Vec::<String>::new());
    }

    pub async fn enqueue_and_acquire_records_once_and_takes_the_lease(h: &Harness) {
        let store = &*h.store;
        let got = store
            .enqueue_and_acquire("c", "m1", "one", "a", t(1000), t(0))
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(Enqueued {
                seq: 1,
                claim: Some(Claim {
                    conversation: None,
                    inbox: inbox(&[(1, "one", 1)]),
                }),
            })
        );
        // a holds the lease now.
        assert!(store.acquire("c", "b", t(2000), t(10)).await.unwrap().is_none());
        // A repeat changes nothing.
        let repeat = store
            .enqueue_and_acquire("c", "m1", "again", "a", t(1000), t(20))
            .await;
        assert_eq!(repeat.unwrap(), None);
        // Held by a: b's message is recorded, without the lease.
        let got = store
            .enqueue_and_acquire("c", "m2", "two", "b", t(2000), t(30))
            .await
            .unwrap();
        assert_eq!(got, Some(Enqueued { seq: 2, claim: None }));
        // a's own lease is renewed, and the claim lists every unapplied message.
        let got = store
            .enqueue_and_acquire("c", "m3", "three", "a", t(1000), t(40))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, 3);
        let claim = got.claim.unwrap();
        assert_eq!(
            claim.inbox,
            inbox(&[(1, "one", 1), (2, "two", 2), (3, "three", 3)])
        );
        let conversation = state("c", "x");
        let outgoing = [(Direction::Out, "hi".to_string())];
        store
            .save("c", "a", save(&conversation, 2, &outgoing, None, t(1000)))
            .await
            .unwrap();
        // Once a's lease expires, b takes it with the state and what is unapplied.
        let got = store
            .enqueue_and_acquire("c", "m4", "four", "b", t(3000), t(1000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, 5);
        let claim = got.claim.unwrap();
        assert_eq!(claim.conversation, Some(conversation.clone()));
        assert_eq!(claim.inbox, inbox(&[(3, "three", 3), (4, "four", 5)]));
        assert!(store.acquire("c", "a", t(4000), t(1500)).await.unwrap().is_none());
        // A repeat takes no lease, even a free one.
        store
            .save("c", "b", save(&conversation, 4, &[], None, t(2000)))
            .await
            .unwrap();
        let repeat = store
            .enqueue_and_acquire("c", "m4", "four", "d", t(9000), t(2000))
            .await;
        assert_eq!(repeat.unwrap(), None);
        assert!(store.acquire("c", "e", t(9000), t(2000)).await.unwrap().is_some());
        assert_eq!(
            texts(&store.transcript("c", 0).await.unwrap()),
            [
                (1, Direction::In, "one"),
                (2, Direction::In, "two"),
                (3, Direction::In, "three"),
                (4, Direction::Out, "hi"),
                (5, Direction::In, "four"),
            ]
        );
    }

    /// Messages enqueued while `enqueue_and_acquire` runs: its claim lists
    /// every message before its own (a claim that skipped one would have it
    /// consumed unapplied).
    pub async fn enqueue_and_acquire_claims_every_message_before_its_own(h: &Harness) {
        for round in 0..30 {
            let id = format!("c{round}");
            let mut others = Vec::new();
            for i in 0..6 {
                let (store, id) = (h.store.clone(), id.clone());
                others.push(tokio::spawn(async move {
                    store
                        .enqueue(&id, &format!("m{i}"), &format!("text {i}"), t(0))
                        .await
                        .unwrap()
                }));
            }
            let got = h
                .store
                .enqueue_and_acquire(&id, "mine", "mine", "r", t(1000), t(0))
                .await
                .unwrap()
                .unwrap();
            for task in others {
                task.await.unwrap();
            }
            let claim = got.claim.unwrap();
            let seqs: Vec<u64> = claim.inbox.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "round {round}");
            // The transcript's first messages, in its order, up to this one
            // at least (later ones may be listed too).
            let transcript = h.store.transcript(&id, 0).await.unwrap();
            let first: Vec<&str> = transcript
                .iter()
                .take(claim.inbox.len())
                .map(|e| e.text.as_str())
                .collect();
            let claimed: Vec<&str> = claim.inbox.iter().map(|e| e.text.as_str()).collect();
            assert_eq!(claimed, first, "round {round}");
            assert!(claimed.contains(&"mine"), "round {round}: {claimed:?}");
        }
    }

    /// [`save`] of entries replying to the message at `reply_to`.
    fn save_replying<'a>(
        reply_to: u64,
        conversation: &'a Conversation,
        consumed_up_to: u64,
        outgoing: &'a [(Direction, String)],
        wake_at: Option<SystemTime>,
        lease_until: SystemTime,
    ) -> Save<'a> {
        Save {
            reply_to: Some(reply_to),
            ..save(conversation, consumed_up_to, outgoing, wake_at, lease_until)
        }
    }

    /// A bot entry replying to `reply_to`, as the transcript lists it.
    fn reply(seq: u64, direction: Direction, text: &str, at_ms: u64, reply_to: u64) -> TranscriptEntry {
        let mut entry = TranscriptEntry::new(seq, direction, text, at_ms);
        entry.reply_to = Some(reply_to);
        entry
    }

    pub async fn save_and_read_replies_reads_what_the_save_leaves(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        store.acquire("c", "a", t(1000), t(0)).await.unwrap().unwrap();
        let conversation = state("c", "x");
        let first = [(Direction::Out, "one".to_string())];
        store
            .save(
                "c",
                "a",
                save_replying(1, &conversation, 1, &first, Some(t(0)), t(1000)),
            )
            .await
            .unwrap();
        // A message arrives mid-turn (enqueueing needs no lease).
        store.enqueue("c", "m2", "more", t(5)).await.unwrap();
        let last = [
            (Direction::Out, "two".to_string()),
            (Direction::Handoff, "support".to_string()),
        ];
        let replies = store
            .save_and_read_replies(
                "c",
                "a",
                save_replying(1, &conversation, 1, &last, None, t(10)),
                1,
            )
            .await
            .unwrap();
        assert_eq!(
            replies,
            [
                reply(2, Direction::Out, "one", t_ms(1000), 1),
                reply(4, Direction::Out, "two", t_ms(10), 1),
                reply(5, Direction::Handoff, "support", t_ms(10), 1),
            ]
        );
        // What the transcript lists, less the user's messages.
        let mut listed = store.transcript("c", 1).await.unwrap();
        listed.retain(|e| e.direction != Direction::In);
        assert_eq!(replies, listed);
        // It saved: state, inbox, lease (given up at `now`), wake-up.
        assert_eq!(store.load("c").await.unwrap(), Some(conversation.clone()));
        assert_eq!(store.next_wake().await.unwrap(), None);
        let claim = store.acquire("c", "b", t(2000), t(10)).await.unwrap().unwrap();
        assert_eq!(claim.inbox, inbox(&[(2, "more", 3)]));
        // The next turn answers "more" (seq 3): its replies only, not those
        // to "hi", although they come later in the transcript than "more".
        let next = [(Direction::Out, "three".to_string())];
        let replies = store
            .save_and_read_replies(
                "c",
                "b",
                save_replying(3, &conversation, 2, &next, None, t(20)),
                3,
            )
            .await
            .unwrap();
        assert_eq!(replies, [reply(6, Direction::Out, "three", t_ms(20), 3)]);
        // Entries that reply to nothing (a flow's greeting before any
        // message) belong to no response; none at all is an empty list.
        store.acquire("c", "b", t(3000), t(30)).await.unwrap().unwrap();
        let greeting = [(Direction::Out, "hello".to_string())];
        let silent = store
            .save_and_read_replies("c", "b", save(&conversation, 2, &greeting, None, t(30)), 5)
            .await
            .unwrap();
        assert_eq!(silent, []);
        let earlier = store
            .save_and_read_replies("c", "b", save(&conversation, 2, &[], None, t(40)), 1)
            .await
            .unwrap();
        assert_eq!(
            texts(&earlier),
            [
                (2, Direction::Out, "one"),
                (4, Direction::Out, "two"),
                (5, Direction::Handoff, "support")
            ]
        );
        assert_eq!(store.transcript("c", 6).await.unwrap()[0].reply_to, None);
    }

    pub async fn save_and_read_replies_after_a_takeover_is_refused_and_commits_nothing(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        let before = state("c", "before");
        store.acquire("c", "a", t(100), t(0)).await.unwrap().unwrap();
        store
            .save("c", "a", save(&before, 0, &[], Some(t(5000)), t(100)))
            .await
            .unwrap();
        store.acquire("c", "b", t(1000), t(150)).await.unwrap().unwrap();
        let after = state("c", "after");
        let outgoing = [(Direction::Out, "from a".to_string())];
        let refused = store
            .save_and_read_replies("c", "a", save(&after, 1, &outgoing, None, t(200)), 0)
            .await;
        assert!(
            matches!(&refused, Err(StoreError::LeaseLost(id)) if id == "c"),
            "{refused:?}"
        );
        assert_eq!(store.load("c").await.unwrap(), Some(before));
        assert_eq!(
            texts(&store.transcript("c", 0).await.unwrap()),
            [(1, Direction::In, "hi")]
        );
        assert_eq!(store.next_wake().await.unwrap(), Some(t(5000)));
        let claim = store.acquire("c", "b", t(1000), t(200)).await.unwrap().unwrap();
        assert_eq!(claim.inbox, inbox(&[(1, "hi", 1)]));
    }

    /// Two runtimes answering messages to one conversation: every reply
    /// belongs to exactly one response — the one whose message the turn
    /// that produced it answered (the newest message it applied) — whichever
    /// runtime ran that turn, and nothing from before that message.
    pub async fn each_turn_answers_with_the_replies_to_its_message(h: &Harness) {
        let runtimes = [echo_runtime_retrying_fast(h), echo_runtime_retrying_fast(h)];
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let runtime = runtimes[i % 2].clone();
                tokio::spawn(async move {
                    let text = format!("message {i}");
                    let turn = runtime
                        .handle_message("c", Some(&format!("m{i}")), &text)
                        .await
                        .unwrap();
                    (text, turn)
                })
            })
            .collect();
        let transcript = {
            let mut turns = Vec::new();
            for task in tasks {
                turns.push(task.await.unwrap());
            }
            let transcript = h.store.transcript("c", 0).await.unwrap();
            let mut answered = BTreeSet::new();
            for (text, turn) in &turns {
                let own = transcript
                    .iter()
                    .find(|e| e.direction == Direction::In && &e.text == text)
                    .unwrap();
                assert!(turn.replies.iter().all(|r| r.direction != Direction::In));
                assert!(turn.replies.windows(2).all(|w| w[0].seq < w[1].seq));
                for reply in &turn.replies {
                    assert_eq!(reply.reply_to, Some(own.seq), "{text}: {reply:?}");
                    assert!(reply.seq > own.seq, "{text}");
                    assert!(answered.insert(reply.seq), "{reply:?} in two responses");
                }
            }
            // Every echo reached one response.
            let echoes = transcript.iter().filter(|e| e.text.starts_with("echo "));
            for echo in echoes {
                assert!(answered.contains(&echo.seq), "{echo:?} in no response");
            }
            transcript
        };
        assert_eq!(
            transcript.iter().filter(|e| e.text.starts_with("echo ")).count(),
            24
        );
    }
}

/// The channels' part of the contract: inbound details, replies' options
/// and owners, the outbox, receipts and the retention of seen ids.
mod outbox_suite {
    use chatflow::QuestionOption;
    use chatflow::channel::{DeliveryStatus, Receipt, ReceiptStatus};
    use chatflow::store::{
        DeliveryRecord, Direction, InboundMessage, OutgoingEntry, PendingDeliveries, Save, StoreError,
        TranscriptEntry,
    };
    use serde_json::json;

    use super::*;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_000 + ms)
    }

    fn t_ms(ms: u64) -> u64 {
        1_767_225_600_000 + ms
    }

    fn conversation(id: &str) -> chatflow::Conversation {
        let flow = chatflow::Flow::from_json(
            r#"{"name": "outbox-test", "steps": [{"type": "question", "name": "Ask", "text": "?"}]}"#,
        )
        .unwrap();
        chatflow::Engine::builder(flow).build().unwrap().start(id)
    }

    /// Saves `texts` as bot entries replying to `reply_to`, for the outbox
    /// when `deliver`, under `owner`'s lease (taken here) at `now`.
    async fn reply(
        store: &dyn Store,
        id: &str,
        texts: &[&str],
        reply_to: u64,
        deliver: bool,
        now: SystemTime,
    ) {
        let state = conversation(id);
        let outgoing: Vec<OutgoingEntry> = texts
            .iter()
            .map(|text| OutgoingEntry::new(Direction::Out, *text))
            .collect();
        store.acquire(id, "runner", now, now).await.unwrap().unwrap();
        let save = Save {
            conversation: &state,
            consumed_up_to: u64::MAX,
            outgoing: &outgoing,
            reply_to: Some(reply_to),
            deliver,
            wake_at: None,
            lease_until: now,
            now,
        };
        store.save(id, "runner", save).await.unwrap();
    }

    /// Seqs and attempts of the claimed entries, by conversation.
    fn pending(claimed: &[PendingDeliveries]) -> Vec<(String, Vec<(u64, u32)>)> {
        claimed
            .iter()
            .map(|p| {
                let entries = p
                    .entries
                    .iter()
                    .map(|e| (e.seq, e.delivery.as_ref().map_or(u32::MAX, |d| d.attempts)))
                    .collect();
                (p.conversation_id.clone(), entries)
            })
            .collect()
    }

    async fn entry(store: &dyn Store, id: &str, seq: u64) -> TranscriptEntry {
        store.transcript(id, seq - 1).await.unwrap().remove(0)
    }

    pub async fn inbound_messages_keep_their_ids_and_details_and_some_answer_nothing(h: &Harness) {
        let store = &*h.store;
        let image = json!({"type": "image", "image": {"id": "media-1", "caption": "a \u{0} nul"}});
        let reaction = json!({"type": "reaction", "emoji": "👍"});
        let message = InboundMessage::new("m1", "[image]").with_details(&image);
        assert_eq!(store.enqueue_message("c", message, t(0)).await.unwrap(), Some(1));
        let message = InboundMessage::new("m2", "👍")
            .with_details(&reaction)
            .with_answers(false);
        assert_eq!(store.enqueue_message("c", message, t(1)).await.unwrap(), Some(2));
        // Seen all the same: a redelivery changes nothing.
        assert_eq!(store.enqueue_message("c", message, t(2)).await.unwrap(), None);
        assert_eq!(store.enqueue("c", "m3", "text", t(3)).await.unwrap(), Some(3));

        let transcript = store.transcript("c", 0).await.unwrap();
        let ids: Vec<_> = transcript.iter().map(|e| e.message_id.as_deref()).collect();
        assert_eq!(ids, [Some("m1"), Some("m2"), Some("m3")]);
        let details: Vec<_> = transcript.iter().map(|e| e.details.clone()).collect();
        assert_eq!(details, [Some(image.clone()), Some(reaction), None]);
        assert_eq!(transcript[1].at_ms, t_ms(1));
        assert!(
            transcript
                .iter()
                .all(|e| e.delivery.is_none() && e.reply_to.is_none())
        );
        // The reaction joined no inbox and took no inbox seq.
        let claim = store.acquire("c", "r", t(100), t(10)).await.unwrap().unwrap();
        let mut first = InboxEntry::new(1, "[image]", 1);
        first.details = Some(image);
        assert_eq!(claim.inbox, [first, InboxEntry::new(2, "text", 3)]);

        // Alone in a new conversation, it leaves it with nothing to do.
        let message = InboundMessage::new("r1", "👍").with_answers(false);
        assert_eq!(store.enqueue_message("d", message, t(20)).await.unwrap(), Some(1));
        assert_eq!(store.due(t(100), 10).await.unwrap(), ["c"]);
        let claim = store.acquire("d", "r", t(100), t(30)).await.unwrap().unwrap();
        assert_eq!((claim.conversation, claim.inbox), (None, vec![]));
        assert_eq!(store.transcript("d", 0).await.unwrap()[0].text, "👍");
    }

    pub async fn replies_keep_their_options_details_and_message(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        store.acquire("c", "r", t(100), t(0)).await.unwrap().unwrap();
        let state = conversation("c");
        let options = vec![
            QuestionOption::new("track", "Track an order"),
            QuestionOption::new("human", "Talk to a person").with_description("A real one"),
        ];
        let template = json!({"whatsapp_template": {"name": "follow_up", "language": "en"}});
        let mut question = OutgoingEntry::new(Direction::Out, "What can I do?");
        question.options = options.clone();
        let mut message = OutgoingEntry::new(Direction::Out, "Still there?");
        message.details = Some(template.clone());
        let outgoing = [
            question,
            message,
            OutgoingEntry::new(Direction::Handoff, "support"),
        ];
        let save = Save {
            conversation: &state,
            consumed_up_to: 1,
            outgoing: &outgoing,
            reply_to: Some(1),
            deliver: false,
            wake_at: None,
            lease_until: t(10),
            now: t(10),
        };
        let replies = store.save_and_read_replies("c", "r", save, 1).await.unwrap();
        let transcript = store.transcript("c", 1).await.unwrap();
        assert_eq!(replies, transcript);
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0].options, options);
        assert_eq!(replies[0].details, None);
        assert_eq!(replies[1].options, []);
        assert_eq!(replies[1].details, Some(template));
        assert!(
            replies
                .iter()
                .all(|e| e.reply_to == Some(1) && e.message_id.is_none())
        );
        // Without `deliver`, nothing goes to the outbox.
        assert!(replies.iter().all(|e| e.delivery.is_none()));
        assert_eq!(
            store.claim_deliveries("w", t(1000), t(500), 10).await.unwrap(),
            []
        );
        assert_eq!(store.next_delivery_after(t(0)).await.unwrap(), None);
    }

    pub async fn delivered_replies_wait_in_the_outbox_in_order(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        reply(store, "c", &["one", "two"], 1, true, t(10)).await;
        // Pending, with no attempt yet, as the transcript shows them.
        let delivery = entry(store, "c", 2).await.delivery.unwrap();
        assert_eq!((delivery.status, delivery.attempts), (DeliveryStatus::Pending, 0));
        assert_eq!((delivery.channel_message_id, delivery.detail), (None, None));
        // Due at the save's `now`.
        assert_eq!(store.next_delivery_after(t(0)).await.unwrap(), Some(t(10)));
        assert_eq!(store.next_delivery_after(t(10)).await.unwrap(), None);
        assert_eq!(store.claim_deliveries("w", t(100), t(9), 10).await.unwrap(), []);
        // Another turn adds to them: they stay due since the first.
        store.enqueue("c", "m2", "more", t(15)).await.unwrap();
        reply(store, "c", &["three"], 4, true, t(20)).await;
        assert_eq!(store.next_delivery_after(t(0)).await.unwrap(), Some(t(10)));
        // A conversation due later comes after it.
        store.enqueue("later", "m1", "hi", t(0)).await.unwrap();
        reply(store, "later", &["hello"], 1, true, t(30)).await;

        let claimed = store.claim_deliveries("w", t(100), t(40), 10).await.unwrap();
        assert_eq!(
            pending(&claimed),
            [
                ("c".to_string(), vec![(2, 0), (3, 0), (5, 0)]),
                ("later".to_string(), vec![(2, 0)]),
            ]
        );
        let c = &claimed[0];
        assert_eq!(
            c.entries,
            store
                .transcript("c", 0)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.direction == Direction::Out)
                .collect::<Vec<_>>()
        );
        // The user's latest message, with its id.
        let last = c.last_inbound.as_ref().unwrap();
        assert_eq!(
            (last.seq, last.text.as_str(), last.message_id.as_deref()),
            (4, "more", Some("m2"))
        );
        // A limit takes the most overdue first.
        let other = store.claim_deliveries("w2", t(200), t(100), 1).await.unwrap();
        assert_eq!(pending(&other), [("c".to_string(), vec![(2, 0), (3, 0), (5, 0)])]);
    }

    pub async fn one_deliverer_at_a_time_holds_a_conversation(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        reply(store, "c", &["one", "two"], 1, true, t(10)).await;
        assert_eq!(
            store
                .claim_deliveries("a", t(100), t(10), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // Held by a: b gets nothing, and may not record.
        assert_eq!(store.claim_deliveries("b", t(200), t(50), 10).await.unwrap(), []);
        let record = DeliveryRecord::Accepted {
            channel_message_id: Some("x"),
        };
        let refused = store.record_delivery("c", "b", 2, record, t(50)).await;
        assert!(
            matches!(&refused, Err(StoreError::LeaseLost(id)) if id == "c"),
            "{refused:?}"
        );
        assert_eq!(
            entry(store, "c", 2).await.delivery.unwrap().status,
            DeliveryStatus::Pending
        );
        // The turn's lease is another: a turn runs meanwhile.
        assert!(
            store
                .acquire("c", "runner", t(60), t(50))
                .await
                .unwrap()
                .is_some()
        );
        // Someone else's release is ignored.
        store.release_deliveries("c", "b").await.unwrap();
        assert_eq!(store.claim_deliveries("b", t(200), t(60), 10).await.unwrap(), []);
        // Expired (at its end exactly): b takes it over, and a's records are refused.
        assert_eq!(
            store
                .claim_deliveries("b", t(300), t(100), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let refused = store.record_delivery("c", "a", 2, record, t(110)).await;
        assert!(matches!(refused, Err(StoreError::LeaseLost(_))), "{refused:?}");
        store.record_delivery("c", "b", 2, record, t(110)).await.unwrap();
        store.release_deliveries("c", "b").await.unwrap();
        // Released: anyone may take it at once.
        let claimed = store.claim_deliveries("a", t(400), t(120), 10).await.unwrap();
        assert_eq!(pending(&claimed), [("c".to_string(), vec![(3, 0)])]);
    }

    /// Many deliverers claiming at once: each conversation goes to one.
    pub async fn concurrent_claims_take_each_conversation_once(h: &Harness) {
        for i in 0..8 {
            let id = format!("c{i}");
            h.store.enqueue(&id, "m1", "hi", t(0)).await.unwrap();
            reply(&*h.store, &id, &["one"], 1, true, t(10)).await;
        }
        let mut tasks = Vec::new();
        for owner in 0..6 {
            let store = h.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .claim_deliveries(&format!("w{owner}"), t(1000), t(20), 3)
                    .await
                    .unwrap()
            }));
        }
        let mut taken = Vec::new();
        for task in tasks {
            taken.extend(task.await.unwrap().into_iter().map(|p| p.conversation_id));
        }
        taken.sort();
        let all: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        assert_eq!(taken, all);
    }

    pub async fn delivery_records_move_the_outbox_on(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        reply(store, "c", &["one", "two", "three"], 1, true, t(10)).await;
        store.claim_deliveries("w", t(100), t(10), 10).await.unwrap();
        let accepted = DeliveryRecord::Accepted {
            channel_message_id: Some("wamid.1"),
        };
        store.record_delivery("c", "w", 2, accepted, t(11)).await.unwrap();
        let delivery = entry(store, "c", 2).await.delivery.unwrap();
        assert_eq!(
            (delivery.status, delivery.attempts),
            (DeliveryStatus::Accepted, 1)
        );
        assert_eq!(delivery.channel_message_id.as_deref(), Some("wamid.1"));
        // A retry: the conversation waits until then, attempts count.
        let retry = DeliveryRecord::Retry {
            at: t(500),
            reason: "rate limited",
        };
        store.record_delivery("c", "w", 3, retry, t(12)).await.unwrap();
        store.release_deliveries("c", "w").await.unwrap();
        assert_eq!(store.claim_deliveries("w", t(600), t(499), 10).await.unwrap(), []);
        assert_eq!(store.next_delivery_after(t(12)).await.unwrap(), Some(t(500)));
        // Then the retried entry comes first, the next after it.
        let claimed = store.claim_deliveries("w", t(600), t(500), 10).await.unwrap();
        assert_eq!(pending(&claimed), [("c".to_string(), vec![(3, 1), (4, 0)])]);
        let retried = claimed[0].entries[0].delivery.clone().unwrap();
        assert_eq!(
            (retried.status, retried.detail.as_deref()),
            (DeliveryStatus::Pending, Some("rate limited"))
        );
        store.record_delivery("c", "w", 3, retry, t(501)).await.unwrap();
        assert_eq!(entry(store, "c", 3).await.delivery.unwrap().attempts, 2);
        // Refused for good: recorded with its reason; the next may go at once.
        let refused = DeliveryRecord::Refused {
            reason: "window closed",
        };
        store.record_delivery("c", "w", 3, refused, t(502)).await.unwrap();
        let delivery = entry(store, "c", 3).await.delivery.unwrap();
        assert_eq!((delivery.status, delivery.attempts), (DeliveryStatus::Refused, 3));
        assert_eq!(delivery.detail.as_deref(), Some("window closed"));
        // Not handed out again while its deliverer holds it, even to that deliverer.
        assert_eq!(store.claim_deliveries("w", t(600), t(502), 10).await.unwrap(), []);
        store.release_deliveries("c", "w").await.unwrap();
        let claimed = store.claim_deliveries("w", t(600), t(502), 10).await.unwrap();
        assert_eq!(pending(&claimed), [("c".to_string(), vec![(4, 0)])]);
        // An entry no longer pending is left as it is.
        store.record_delivery("c", "w", 2, refused, t(503)).await.unwrap();
        store
            .record_delivery("c", "w", 3, accepted, t(503))
            .await
            .unwrap();
        assert_eq!(
            entry(store, "c", 2).await.delivery.unwrap().status,
            DeliveryStatus::Accepted
        );
        assert_eq!(
            entry(store, "c", 3).await.delivery.unwrap().status,
            DeliveryStatus::Refused
        );
        // The last one out: nothing is due any more.
        let without_id = DeliveryRecord::Accepted {
            channel_message_id: None,
        };
        store
            .record_delivery("c", "w", 4, without_id, t(504))
            .await
            .unwrap();
        let delivery = entry(store, "c", 4).await.delivery.unwrap();
        assert_eq!(
            (delivery.status, delivery.channel_message_id),
            (DeliveryStatus::Accepted, None)
        );
        store.release_deliveries("c", "w").await.unwrap();
        assert_eq!(
            store
                .claim_deliveries("w", t(10_000), t(9_000), 10)
                .await
                .unwrap(),
            []
        );
        assert_eq!(store.next_delivery_after(t(0)).await.unwrap(), None);
        // A new reply is due at its save.
        reply(store, "c", &["four"], 1, true, t(700)).await;
        assert_eq!(store.next_delivery_after(t(0)).await.unwrap(), Some(t(700)));
    }

    pub async fn receipts_keep_the_furthest_whenever_they_come(h: &Harness) {
        let store = &*h.store;
        store.enqueue("c", "m1", "hi", t(0)).await.unwrap();
        reply(store, "c", &["one", "two"], 1, true, t(10)).await;
        // Before the send is recorded: kept, its entry not known yet.
        let delivered = Receipt::new(ReceiptStatus::Delivered, t(20));
        assert_eq!(store.record_receipt("wamid.2", &delivered).await.unwrap(), None);
        store.claim_deliveries("w", t(100), t(10), 10).await.unwrap();
        for (seq, id) in [(2, "wamid.2"), (3, "wamid.3")] {
            let record = DeliveryRecord::Accepted {
                channel_message_id: Some(id),
            };
            store.record_delivery("c", "w", seq, record, t(30)).await.unwrap();
        }
        let receipt = |e: TranscriptEntry| e.delivery.and_then(|d| d.receipt);
        assert_eq!(receipt(entry(store, "c", 2).await), Some(delivered.clone()));
        assert_eq!(receipt(entry(store, "c", 3).await), None);
        // After it: the entry is known. A lesser or equal one is ignored.
        let found = Some(("c".to_string(), 2));
        let sent = Receipt::new(ReceiptStatus::Sent, t(40));
        assert_eq!(store.record_receipt("wamid.2", &sent).await.unwrap(), found);
        let again = Receipt::new(ReceiptStatus::Delivered, t(41));
        assert_eq!(store.record_receipt("wamid.2", &again).await.unwrap(), found);
        assert_eq!(receipt(entry(store, "c", 2).await), Some(delivered));
        let read = Receipt::new(ReceiptStatus::Read, t(50));
        store.record_receipt("wamid.2", &read).await.unwrap();
        assert_eq!(receipt(entry(store, "c", 2).await), Some(read.clone()));
        // Failed goes beyond all, with its detail.
        let failed = Receipt::new(ReceiptStatus::Failed, t(60)).with_detail("131047: re-engagement");
        assert_eq!(
            store.record_receipt("wamid.3", &failed).await.unwrap(),
            Some(("c".to_string(), 3))
        );
        store.record_receipt("wamid.3", &read).await.unwrap();
        assert_eq!(receipt(entry(store, "c", 3).await), Some(failed));
        assert_eq!(store.record_receipt("unknown", &read).await.unwrap(), None);
    }

    /// Takes every entry; the second delivery of the first run asks to be
    /// retried once.
    #[derive(Default)]
    struct Pusher {
        sent: std::sync::Mutex<Vec<String>>,
        refused_once: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl chatflow::channel::Channel for Pusher {
        async fn deliver(
            &self,
            delivery: &chatflow::channel::Delivery,
        ) -> chatflow::channel::DeliveryOutcome {
            use std::sync::atomic::Ordering;
            let mut sent = self.sent.lock().unwrap();
            if sent.len() == 1 && !self.refused_once.swap(true, Ordering::SeqCst) {
                return chatflow::channel::DeliveryOutcome::retry_after(Duration::ZERO, "busy");
            }
            sent.push(delivery.entry.text.clone());
            chatflow::channel::DeliveryOutcome::accepted(format!("push-{}", sent.len()))
        }
    }

    /// The runtime's delivery worker on the store: replies go out in order,
    /// a retry holds the ones after it, and each is recorded accepted once.
    pub async fn the_runtime_delivers_replies_through_the_store(h: &Harness) {
        let flow = chatflow::Flow::from_json(
            r#"{"name": "push", "steps": [
              {"type": "question", "name": "Ask", "text": "Name?"},
              {"type": "message", "name": "Hi", "text": "Hi <<step.Ask.response>>"},
              {"type": "message", "name": "Bye", "text": "Bye"}
            ]}"#,
        )
        .unwrap();
        let clock = Arc::new(chatflow::VirtualClock::new());
        let engine = chatflow::Engine::builder(flow)
            .shared_clock(clock.clone())
            .build()
            .unwrap();
        let pusher = Arc::new(Pusher::default());
        let runtime = chatflow::Runtime::builder(engine, h.store.clone())
            .channel("push", pusher.clone())
            .build();
        runtime
            .handle_message("push:ada", Some("m1"), "Ada")
            .await
            .unwrap();
        let mut passes = 0;
        while pusher.sent.lock().unwrap().len() < 3 && passes < 20 {
            runtime.deliver_due().await.unwrap();
            // Past the retry's backoff, in virtual time.
            clock.advance(Duration::from_secs(600));
            passes += 1;
        }
        assert_eq!(*pusher.sent.lock().unwrap(), ["Name?", "Hi Ada", "Bye"]);
        let transcript = h.store.transcript("push:ada", 0).await.unwrap();
        let out: Vec<_> = transcript
            .iter()
            .filter(|e| e.direction == Direction::Out)
            .map(|e| {
                let d = e.delivery.clone().unwrap();
                (e.text.as_str(), d.status, d.channel_message_id)
            })
            .collect();
        assert_eq!(
            out,
            [
                ("Name?", DeliveryStatus::Accepted, Some("push-1".to_string())),
                ("Hi Ada", DeliveryStatus::Accepted, Some("push-2".to_string())),
                ("Bye", DeliveryStatus::Accepted, Some("push-3".to_string())),
            ]
        );
        assert_eq!(transcript[2].delivery.as_ref().unwrap().attempts, 2);
        assert_eq!(h.store.next_delivery_after(t(0)).await.unwrap(), None);
    }

    pub async fn old_seen_ids_and_receipts_are_forgotten_in_batches(h: &Harness) {
        let store = &*h.store;
        for i in 0..5u64 {
            store.enqueue("c", &format!("m{i}"), "old", t(i)).await.unwrap();
        }
        store.enqueue("d", "m0", "recent", t(1000)).await.unwrap();
        // Before t(3): m0, m1, m2 of c, two at a time.
        assert_eq!(store.prune_seen(t(3), 2).await.unwrap(), 2);
        assert_eq!(store.prune_seen(t(3), 2).await.unwrap(), 1);
        assert_eq!(store.prune_seen(t(3), 2).await.unwrap(), 0);
        // A forgotten id is taken again as new; the others are still seen.
        assert_eq!(store.enqueue("c", "m0", "again", t(2000)).await.unwrap(), Some(6));
        assert_eq!(store.enqueue("c", "m3", "again", t(2000)).await.unwrap(), None);
        assert_eq!(store.enqueue("d", "m0", "again", t(2000)).await.unwrap(), None);
        // Receipts as old go too.
        reply(store, "c", &["one", "two"], 6, true, t(2000)).await;
        store.claim_deliveries("w", t(3000), t(2000), 10).await.unwrap();
        for (seq, id) in [(7, "old"), (8, "new")] {
            let record = DeliveryRecord::Accepted {
                channel_message_id: Some(id),
            };
            store
                .record_delivery("c", "w", seq, record, t(2000))
                .await
                .unwrap();
        }
        store
            .record_receipt("old", &Receipt::new(ReceiptStatus::Read, t(100)))
            .await
            .unwrap();
        store
            .record_receipt("new", &Receipt::new(ReceiptStatus::Read, t(5000)))
            .await
            .unwrap();
        store.prune_seen(t(4000), 100).await.unwrap();
        let receipt = |e: TranscriptEntry| e.delivery.and_then(|d| d.receipt).map(|r| r.status);
        assert_eq!(receipt(entry(store, "c", 7).await), None);
        assert_eq!(receipt(entry(store, "c", 8).await), Some(ReceiptStatus::Read));
        // Everything seen before t(4000) is gone now.
        assert_eq!(store.enqueue("d", "m0", "third", t(5000)).await.unwrap(), Some(2));
    }
}

/// Runs every suite function against one store: `conformance!(name, harness)`,
/// where `harness` is an expression giving a future of `Option<Harness>`
/// (`None` skips).
macro_rules! conformance {
    ($name:ident, $harness:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            conformance!(@tests $harness;
                enqueue_records_each_message_once_per_conversation,
                inbox_keeps_arrival_order_and_never_reuses_a_seq,
                a_lease_excludes_other_owners_until_it_expires,
                a_save_after_a_takeover_is_refused_and_commits_nothing,
                a_save_commits_state_transcript_inbox_and_wake_up_together,
                release_frees_only_the_owners_lease,
                due_lists_what_needs_a_runner_most_overdue_first,
                next_wake_is_the_earliest_wake_up,
                load_and_transcript_read_without_the_lease,
                unreadable_state_is_reported_as_corrupt,
                texts_and_ids_round_trip_verbatim,
                concurrent_enqueues_are_recorded_once_with_gap_free_seqs,
                concurrent_acquires_grant_one_lease,
                cancelled_operations_commit_all_or_nothing,
                the_runtime_runs_on_the_store,
                two_runtimes_apply_concurrent_messages_once_in_order,
                a_lease_taken_during_a_save_sees_only_unapplied_messages,
                a_parked_conversation_resumes_in_another_runtime,
                each_due_conversation_is_resumed_by_exactly_one_runtime,
                enqueue_and_acquire_records_once_and_takes_the_lease,
                enqueue_and_acquire_claims_every_message_before_its_own,
                save_and_read_replies_reads_what_the_save_leaves,
                save_and_read_replies_after_a_takeover_is_refused_and_commits_nothing,
                each_turn_answers_with_the_replies_to_its_message,
            );
            conformance!(@outbox $harness;
                inbound_messages_keep_their_ids_and_details_and_some_answer_nothing,
                replies_keep_their_options_details_and_message,
                delivered_replies_wait_in_the_outbox_in_order,
                one_deliverer_at_a_time_holds_a_conversation,
                concurrent_claims_take_each_conversation_once,
                delivery_records_move_the_outbox_on,
                receipts_keep_the_furthest_whenever_they_come,
                old_seen_ids_and_receipts_are_forgotten_in_batches,
                the_runtime_delivers_replies_through_the_store,
            );
        }
    };
    (@outbox $harness:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(harness) = $harness.await {
                    super::outbox_suite::$test(&harness).await;
                    harness.finish().await;
                }
            }
        )*
    };
    (@tests $harness:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(harness) = $harness.await {
                    super::suite::$test(&harness).await;
                    harness.finish().await;
                }
            }
        )*
    };
}

conformance!(memory, async { Harness::memory() });
conformance!(sqlite_memory, Harness::sqlite_memory());
conformance!(sqlite_file, Harness::sqlite_file());
conformance!(postgres, Harness::postgres());
