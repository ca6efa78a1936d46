//! Tests against a real SQLite file (temp dir) and a real Redis (127.0.0.1:6379, db 9).
//!
//! The Redis tests fail, not skip, when Redis is unreachable: CI starts Redis first, and a
//! silently skipped test would hide a broken backend. Set COUNTERSIGN_TEST_REDIS_URL to
//! point them elsewhere.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use tokio::sync::Barrier;

use crate::{Backend, Error, Store};

const SECRET: &str = "Sup3rS3cretPw";

/// A key no other test, run or concurrent CI job uses.
fn unique(name: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "cs-kv-test:{}:{nanos}:{}:{name}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn redis_url() -> String {
    std::env::var("COUNTERSIGN_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/9".into())
}

async fn redis_store() -> Store {
    match Store::redis(&redis_url(), "default").await {
        Ok(store) => store,
        Err(e) => panic!(
            "Redis must be running at {} for these tests (start it before running them): {e}",
            redis_url()
        ),
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("kv.db")
}

fn sqlite_store(path: &Path) -> Store {
    Store::sqlite(path, "default").expect("open sqlite store")
}

/// Two stores on one file with separate connections, as two host processes would have.
fn sqlite_two_processes(path: &Path) -> (Store, Store) {
    (
        Store::sqlite_unshared(path, "default").expect("open sqlite store A"),
        Store::sqlite_unshared(path, "default").expect("open sqlite store B"),
    )
}

/// The backend's representation of a counter value (see `Store::get`).
fn counter_repr(store: &Store, n: i64) -> Vec<u8> {
    match &*store.inner {
        Backend::Sqlite(_) => n.to_le_bytes().to_vec(),
        Backend::Redis(_) => n.to_string().into_bytes(),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios, run on both backends.

async fn basic_ops(store: &Store) {
    let k1 = unique("basic-1");
    let k2 = unique("basic-2");

    assert_eq!(store.get(&k1).await.unwrap(), None);
    assert!(!store.exists(&k1).await.unwrap());

    store.set(&k1, b"one".to_vec()).await.unwrap();
    assert_eq!(store.get(&k1).await.unwrap(), Some(b"one".to_vec()));
    assert!(store.exists(&k1).await.unwrap());

    // Overwrite, binary (non-UTF-8) and empty values round-trip unchanged.
    let binary = vec![0u8, 255, 1, 128, 0];
    store.set(&k1, binary.clone()).await.unwrap();
    assert_eq!(store.get(&k1).await.unwrap(), Some(binary));
    store.set(&k2, Vec::new()).await.unwrap();
    assert_eq!(store.get(&k2).await.unwrap(), Some(Vec::new()));
    assert!(store.exists(&k2).await.unwrap());

    let keys = store.list_keys().await.unwrap();
    assert!(keys.contains(&k1) && keys.contains(&k2), "{keys:?}");

    store.delete(&k1).await.unwrap();
    assert_eq!(store.get(&k1).await.unwrap(), None);
    assert!(!store.exists(&k1).await.unwrap());
    // Deleting an absent key is not an error.
    store.delete(&k1).await.unwrap();
    let keys = store.list_keys().await.unwrap();
    assert!(!keys.contains(&k1) && keys.contains(&k2), "{keys:?}");

    store.delete(&k2).await.unwrap();
}

async fn batch_ops(store: &Store) {
    let k: Vec<String> = (0..3).map(|i| unique(&format!("batch-{i}"))).collect();
    let missing = unique("batch-missing");

    store
        .set_many(vec![
            (k[0].clone(), b"a".to_vec()),
            (k[1].clone(), b"b".to_vec()),
            (k[2].clone(), b"c".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_many(&[k[2].clone(), missing.clone(), k[0].clone()])
            .await
            .unwrap(),
        vec![Some(b"c".to_vec()), None, Some(b"a".to_vec())]
    );

    store
        .delete_many(&[k[0].clone(), k[1].clone(), missing.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.get_many(&k).await.unwrap(),
        vec![None, None, Some(b"c".to_vec())]
    );

    // Empty batches are no-ops, not errors (MGET/MSET/DEL with no key are on Redis).
    assert_eq!(
        store.get_many(&[]).await.unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    store.set_many(Vec::new()).await.unwrap();
    store.delete_many(&[]).await.unwrap();

    store.delete_many(&k).await.unwrap();
}

async fn increment_ops(store: &Store) {
    let key = unique("incr");
    assert_eq!(
        store.increment(&key, 5).await.unwrap(),
        5,
        "absent key starts at 0"
    );
    assert_eq!(store.increment(&key, -2).await.unwrap(), 3);
    assert_eq!(store.increment(&key, 0).await.unwrap(), 3);
    assert_eq!(store.get(&key).await.unwrap(), Some(counter_repr(store, 3)));
    store.delete(&key).await.unwrap();
}

async fn increment_non_counter(store: &Store) {
    let key = unique("incr-text");
    store.set(&key, b"hello".to_vec()).await.unwrap();
    match store.increment(&key, 1).await {
        Err(Error::NotACounter { key: k }) => assert_eq!(k, key),
        other => panic!("expected NotACounter, got {other:?}"),
    }
    // The value is untouched and the store keeps working (Spin 4.0.2 panics here and breaks
    // every later call).
    assert_eq!(store.get(&key).await.unwrap(), Some(b"hello".to_vec()));
    let other = unique("incr-after");
    assert_eq!(store.increment(&other, 1).await.unwrap(), 1);

    // Overflow is an error too, and leaves the counter as it was.
    let big = unique("incr-big");
    assert_eq!(store.increment(&big, i64::MAX).await.unwrap(), i64::MAX);
    assert!(matches!(
        store.increment(&big, 1).await,
        Err(Error::Overflow { delta: 1, .. })
    ));
    assert_eq!(store.increment(&big, 0).await.unwrap(), i64::MAX);

    store.delete_many(&[key, other, big]).await.unwrap();
}

/// 100 increments spread over two stores (two "processes"), all in flight at once.
async fn concurrent_increments(a: &Store, b: &Store) {
    let key = unique("incr-race");
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tokio::spawn(async move { store.increment(&key, 1).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    // Each increment saw a distinct value: none was lost or duplicated.
    assert_eq!(seen, (1..=100).collect::<Vec<i64>>());
    assert_eq!(a.increment(&key, 0).await.unwrap(), 100);
    assert_eq!(b.get(&key).await.unwrap(), Some(counter_repr(b, 100)));
    a.delete(&key).await.unwrap();
}

/// Read-modify-write with CAS, retried on a lost race: 2 stores x 50 tasks end at exactly 100.
async fn cas_increment_loop(a: &Store, b: &Store) {
    let key = unique("cas-loop");
    let mut tasks = Vec::new();
    for store in [a, b] {
        for _ in 0..50 {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let mut attempts = 0u32;
                loop {
                    attempts += 1;
                    let current = store.get(&key).await.unwrap();
                    let n: u64 = match &current {
                        None => 0,
                        Some(v) => std::str::from_utf8(v).unwrap().parse().unwrap(),
                    };
                    let next = (n + 1).to_string().into_bytes();
                    if store
                        .compare_and_swap(&key, current.as_deref(), next)
                        .await
                        .unwrap()
                    {
                        return attempts;
                    }
                    assert!(attempts < 10_000, "CAS never succeeded");
                }
            }));
        }
    }
    let mut attempts = 0;
    for t in tasks {
        attempts += t.await.unwrap();
    }
    assert_eq!(a.get(&key).await.unwrap(), Some(b"100".to_vec()));
    assert!(attempts >= 100);
    a.delete(&key).await.unwrap();
}

/// Two racers both expecting the key absent: exactly one swap happens, and its value stays.
async fn cas_absent_race(a: &Store, b: &Store) {
    for round in 0..20 {
        let key = unique(&format!("cas-absent-{round}"));
        let barrier = Arc::new(Barrier::new(2));
        let racer = |store: &Store, value: &'static [u8]| {
            let (store, key, barrier) = (store.clone(), key.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .compare_and_swap(&key, None, value.to_vec())
                    .await
                    .unwrap()
            })
        };
        let ta = racer(a, b"from-a");
        let tb = racer(b, b"from-b");
        let (wa, wb) = (ta.await.unwrap(), tb.await.unwrap());
        assert!(
            wa ^ wb,
            "round {round}: exactly one must win (a={wa}, b={wb})"
        );
        let winner: &[u8] = if wa { b"from-a" } else { b"from-b" };
        assert_eq!(a.get(&key).await.unwrap().as_deref(), Some(winner));
        a.delete(&key).await.unwrap();
    }
}

async fn cas_stale_expected(store: &Store) {
    let key = unique("cas-stale");
    store.set(&key, b"v1".to_vec()).await.unwrap();

    assert!(!store
        .compare_and_swap(&key, Some(b"v0"), b"x".to_vec())
        .await
        .unwrap());
    assert_eq!(store.get(&key).await.unwrap(), Some(b"v1".to_vec()));
    // Expecting absence on an existing key fails too.
    assert!(!store
        .compare_and_swap(&key, None, b"x".to_vec())
        .await
        .unwrap());
    assert_eq!(store.get(&key).await.unwrap(), Some(b"v1".to_vec()));

    assert!(store
        .compare_and_swap(&key, Some(b"v1"), b"v2".to_vec())
        .await
        .unwrap());
    assert_eq!(store.get(&key).await.unwrap(), Some(b"v2".to_vec()));

    // Someone else writes between our read and our swap: the swap is refused.
    store.set(&key, b"v3".to_vec()).await.unwrap();
    assert!(!store
        .compare_and_swap(&key, Some(b"v2"), b"v4".to_vec())
        .await
        .unwrap());
    assert_eq!(store.get(&key).await.unwrap(), Some(b"v3".to_vec()));

    // Expecting a value on an absent key fails and does not create it.
    store.delete(&key).await.unwrap();
    assert!(!store
        .compare_and_swap(&key, Some(b"v3"), b"v5".to_vec())
        .await
        .unwrap());
    assert!(!store.exists(&key).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_basic_ops() {
    let dir = TempDir::new().unwrap();
    basic_ops(&sqlite_store(&db_path(&dir))).await;
}

#[tokio::test]
async fn sqlite_batch_ops() {
    let dir = TempDir::new().unwrap();
    batch_ops(&sqlite_store(&db_path(&dir))).await;
}

#[tokio::test]
async fn sqlite_increment() {
    let dir = TempDir::new().unwrap();
    increment_ops(&sqlite_store(&db_path(&dir))).await;
}

#[tokio::test]
async fn sqlite_increment_non_counter_is_err() {
    let dir = TempDir::new().unwrap();
    let store = sqlite_store(&db_path(&dir));
    increment_non_counter(&store).await;
    // A 7- or 9-byte value is not a counter either, even though it is binary.
    let key = unique("incr-9");
    store.set(&key, vec![0; 9]).await.unwrap();
    assert!(matches!(
        store.increment(&key, 1).await,
        Err(Error::NotACounter { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_increments_two_processes() {
    let dir = TempDir::new().unwrap();
    let (a, b) = sqlite_two_processes(&db_path(&dir));
    concurrent_increments(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_cas_increment_loop_two_processes() {
    let dir = TempDir::new().unwrap();
    let (a, b) = sqlite_two_processes(&db_path(&dir));
    cas_increment_loop(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_cas_absent_key_race_one_winner() {
    let dir = TempDir::new().unwrap();
    let (a, b) = sqlite_two_processes(&db_path(&dir));
    cas_absent_race(&a, &b).await;
}

#[tokio::test]
async fn sqlite_cas_stale_expected_is_refused() {
    let dir = TempDir::new().unwrap();
    cas_stale_expected(&sqlite_store(&db_path(&dir))).await;
}

#[tokio::test]
async fn sqlite_labels_share_one_file_and_connection() {
    let dir = TempDir::new().unwrap();
    // Parent directories are created.
    let path = dir.path().join("a/b/kv.db");
    let one = Store::sqlite(&path, "one").unwrap();
    // Another spelling of the same file reuses the same connection.
    let two = Store::sqlite(&dir.path().join("a/./b/../b/kv.db"), "two").unwrap();
    let (Backend::Sqlite(s1), Backend::Sqlite(s2)) = (&*one.inner, &*two.inner) else {
        panic!("sqlite stores expected");
    };
    assert!(s1.shares_connection_with(s2));
    assert!(path.is_file());

    // Labels are separate namespaces in the one table.
    one.set("k", b"1".to_vec()).await.unwrap();
    two.set("k", b"2".to_vec()).await.unwrap();
    two.set("only-two", b"x".to_vec()).await.unwrap();
    assert_eq!(one.get("k").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(two.get("k").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(one.list_keys().await.unwrap(), vec!["k".to_string()]);
    assert_eq!(
        two.list_keys().await.unwrap(),
        vec!["k".to_string(), "only-two".to_string()]
    );
    one.delete("k").await.unwrap();
    assert_eq!(two.get("k").await.unwrap(), Some(b"2".to_vec()));
}

#[tokio::test]
async fn sqlite_file_uses_spin_layout() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = sqlite_store(&path);
    store.set("greeting", b"hi".to_vec()).await.unwrap();
    store.increment("hits", 2).await.unwrap();

    // Read and write the file as Spin (or the sqlite3 CLI) would.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let value: Vec<u8> = conn
        .query_row(
            "SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'hits'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(value, 2i64.to_le_bytes());
    // A TEXT value written by another tool reads back as its bytes.
    conn.execute(
        "INSERT INTO spin_key_value (store, key, value) VALUES ('default', 'seeded', 'text')",
        [],
    )
    .unwrap();
    assert_eq!(store.get("seeded").await.unwrap(), Some(b"text".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// Redis

#[tokio::test]
async fn redis_basic_ops() {
    basic_ops(&redis_store().await).await;
}

#[tokio::test]
async fn redis_batch_ops() {
    batch_ops(&redis_store().await).await;
}

#[tokio::test]
async fn redis_increment() {
    increment_ops(&redis_store().await).await;
}

#[tokio::test]
async fn redis_increment_non_counter_is_err() {
    let store = redis_store().await;
    increment_non_counter(&store).await;
    // A key of another Redis type is not a counter either.
    let key = unique("incr-list");
    let Backend::Redis(r) = &*store.inner else {
        panic!("redis store expected");
    };
    redis::cmd("RPUSH")
        .arg(&key)
        .arg("x")
        .exec_async(&mut r.conn())
        .await
        .unwrap();
    assert!(matches!(
        store.increment(&key, 1).await,
        Err(Error::NotACounter { .. })
    ));
    store.delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_concurrent_increments_two_processes() {
    // Two `Store::redis` calls = two connection managers, i.e. two independent clients.
    let (a, b) = (redis_store().await, redis_store().await);
    concurrent_increments(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cas_increment_loop_two_processes() {
    let (a, b) = (redis_store().await, redis_store().await);
    cas_increment_loop(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cas_absent_key_race_one_winner() {
    let (a, b) = (redis_store().await, redis_store().await);
    cas_absent_race(&a, &b).await;
}

#[tokio::test]
async fn redis_cas_stale_expected_is_refused() {
    cas_stale_expected(&redis_store().await).await;
}

#[tokio::test]
async fn redis_errors_never_show_the_password() {
    let check = |e: Error| {
        let shown = format!("{e} / {e:?}");
        assert!(!shown.contains(SECRET), "password leaked: {shown}");
        shown
    };
    // Refused connection (nothing listens on port 1).
    let e = Store::redis(&format!("redis://user:{SECRET}@127.0.0.1:1/9"), "default")
        .await
        .unwrap_err();
    let shown = check(e);
    assert!(shown.contains("redis://user:***@127.0.0.1:1/9"), "{shown}");
    // Rejected credentials (the test Redis has no password, so AUTH fails).
    let e = Store::redis(&format!("redis://:{SECRET}@127.0.0.1:6379/9"), "default")
        .await
        .unwrap_err();
    check(e);
    // Unparsable URL.
    let e = Store::redis(
        &format!("redis://:{SECRET}@127.0.0.1:notaport/9"),
        "default",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::InvalidRedisUrl { .. }), "{e:?}");
    check(e);
}

#[tokio::test]
async fn redis_reconnects_after_connection_loss() {
    let store = redis_store().await;
    let Backend::Redis(r) = &*store.inner else {
        panic!("redis store expected");
    };
    let key = unique("reconnect");
    store.set(&key, b"before".to_vec()).await.unwrap();

    // Have Redis drop this store's connection, as a Redis restart would.
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut r.conn())
        .await
        .unwrap();
    let _ = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        // By default Redis spares the client that sends CLIENT KILL.
        .arg("SKIPME")
        .arg("no")
        .exec_async(&mut r.conn())
        .await;

    // The call that notices the loss may fail; the manager then reconnects by itself.
    let mut value = None;
    for _ in 0..20 {
        if let Ok(v) = store.get(&key).await {
            value = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(value, Some(b"before".to_vec()));
    let new_id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut r.conn())
        .await
        .unwrap();
    assert_ne!(id, new_id, "the store should be on a new connection");
    // CAS still works on the new connection (the script cache is per server, not per client).
    assert!(store
        .compare_and_swap(&key, Some(b"before"), b"after".to_vec())
        .await
        .unwrap());
    store.delete(&key).await.unwrap();
}

/// Commits reach the database file itself through the background checkpoints, without a
/// commit having to fill the WAL first (the file read with `immutable=1` ignores the WAL).
#[tokio::test]
async fn sqlite_wal_is_checkpointed_in_the_background() {
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    let store = sqlite_store(&path);
    store.set("checkpointed", b"yes".to_vec()).await.unwrap();
    let in_file = || {
        let uri = format!("file:{}?immutable=1", path.display());
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let conn = rusqlite::Connection::open_with_flags(&uri, flags).unwrap();
        conn.query_row(
            "SELECT value FROM spin_key_value WHERE key = 'checkpointed'",
            [],
            |row| row.get::<_, Vec<u8>>(0),
        )
        .ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_file().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(in_file().as_deref(), Some(&b"yes"[..]));
    drop(store);
}
