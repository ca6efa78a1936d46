//! SQLite backend: one connection per database file per process, used under a mutex by
//! whichever thread calls. Each statement takes microseconds (WAL, `synchronous = NORMAL`: no
//! fsync per commit), less than handing it to a worker thread and back, which measured as the
//! host's main cost under load (two context switches per key-value call; BENCHMARKS.md).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{Error, Result};

/// How long a statement waits for another connection (another process) holding the write
/// lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a connection of its own checkpoints the WAL in the background (see [`Db::open`]).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
/// WAL frames past which a committing connection checkpoints by itself: only a safety valve,
/// since the background checkpoints keep up (SQLite's default is 1000).
const CHECKPOINT_VALVE_FRAMES: i64 = 10_000;

/// Same schema as Spin's `KeyValueSqlite`, so either runtime can read the other's file.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,

    PRIMARY KEY (store, key)
)";

const SQL_GET: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const SQL_SET: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
    ON CONFLICT (store, key) DO UPDATE SET value = excluded.value";
const SQL_DELETE: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";
const SQL_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2)";
const SQL_LIST: &str = "SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key";

/// One database file's connection. It is closed when the last handle is dropped.
struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Dropping it stops the background checkpoints.
    _checkpoints: Option<mpsc::Sender<()>>,
}

/// Process-wide map so that every label opened on the same file shares one connection.
/// Weak, so that a file nobody uses any more is closed.
fn open_dbs() -> &'static Mutex<HashMap<PathBuf, Weak<Db>>> {
    static DBS: OnceLock<Mutex<HashMap<PathBuf, Weak<Db>>>> = OnceLock::new();
    DBS.get_or_init(Default::default)
}

pub(crate) struct SqliteStore {
    db: Arc<Db>,
    label: Arc<str>,
}

impl SqliteStore {
    /// Opens `path` for `label`, reusing this process's connection to that file if there is one.
    pub(crate) fn open_shared(path: &Path, label: &str) -> Result<Self> {
        let path = resolve_path(path)?;
        // A poisoned map is still a valid map: nothing in it is left half-updated.
        let mut dbs = open_dbs().lock().unwrap_or_else(|e| e.into_inner());
        let db = match dbs.get(&path).and_then(Weak::upgrade) {
            Some(db) => db,
            None => {
                // Opening under the lock so two labels racing to open the file get one connection.
                let db = Arc::new(Db::open(path.clone())?);
                dbs.retain(|_, weak| weak.strong_count() > 0);
                dbs.insert(path, Arc::downgrade(&db));
                db
            }
        };
        Ok(Self {
            db,
            label: label.into(),
        })
    }

    /// Opens a connection of its own, not shared with any other store: used by tests to
    /// simulate two processes working on one file.
    #[cfg(test)]
    pub(crate) fn open_unshared(path: &Path, label: &str) -> Result<Self> {
        Ok(Self {
            db: Arc::new(Db::open(resolve_path(path)?)?),
            label: label.into(),
        })
    }

    #[cfg(test)]
    pub(crate) fn shares_connection_with(&self, other: &SqliteStore) -> bool {
        Arc::ptr_eq(&self.db, &other.db)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.db.path
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Runs `f` on the connection. A panicking `f` must not take down the connection for
    /// every other store: it answers `WorkerStopped`, and any open transaction was rolled back
    /// by the unwinding `Transaction` guard (so the mutex is not poisoned either).
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection, &str) -> Result<T>,
    {
        let mut conn = self.db.conn.lock().unwrap_or_else(|e| e.into_inner());
        catch_unwind(AssertUnwindSafe(|| f(&mut conn, &self.label)))
            .unwrap_or(Err(Error::WorkerStopped))
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.call(move |conn, label| get_value(conn, label, &key))
            .await
    }

    pub(crate) async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let key = key.to_owned();
        self.call(move |conn, label| {
            conn.prepare_cached(SQL_SET)?
                .execute(params![label, key, value])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.call(move |conn, label| {
            conn.prepare_cached(SQL_DELETE)?
                .execute(params![label, key])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.call(move |conn, label| {
            Ok(conn
                .prepare_cached(SQL_EXISTS)?
                .query_row(params![label, key], |row| row.get(0))?)
        })
        .await
    }

    pub(crate) async fn list_keys(&self) -> Result<Vec<String>> {
        self.call(move |conn, label| {
            let mut stmt = conn.prepare_cached(SQL_LIST)?;
            let mut rows = stmt.query(params![label])?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next()? {
                // Another writer (sqlite3 CLI, Spin) may have stored a non-text key; a guest
                // could not name it, so it is skipped rather than failing the whole listing.
                let key = match row.get_ref(0)? {
                    ValueRef::Text(t) => String::from_utf8(t.to_vec()).ok(),
                    _ => None,
                };
                keys.extend(key);
            }
            Ok(keys)
        })
        .await
    }

    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let key = key.to_owned();
        self.call(move |conn, label| {
            // IMMEDIATE takes the write lock before the read, so no other connection (or
            // process) can change the counter between our read and our write.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = match get_value(&tx, label, &key)? {
                None => 0,
                Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
                    Ok(le) => i64::from_le_bytes(le),
                    Err(_) => return Err(Error::NotACounter { key }),
                },
            };
            let new = current.checked_add(delta).ok_or_else(|| Error::Overflow {
                key: key.clone(),
                delta,
            })?;
            tx.prepare_cached(SQL_SET)?.execute(params![
                label,
                key,
                new.to_le_bytes().as_slice()
            ])?;
            tx.commit()?;
            Ok(new)
        })
        .await
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool> {
        let key = key.to_owned();
        let expected = expected.map(<[u8]>::to_vec);
        self.call(move |conn, label| {
            // IMMEDIATE: read and write under one write lock, so the comparison still holds
            // when we write, including when the key was absent.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if get_value(&tx, label, &key)? != expected {
                // Dropping `tx` rolls back; nothing was written anyway.
                return Ok(false);
            }
            tx.prepare_cached(SQL_SET)?
                .execute(params![label, key, new])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.call(move |conn, label| {
            // One read transaction, so all values come from the same snapshot.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let values = keys
                .iter()
                .map(|key| get_value(&tx, label, key))
                .collect::<Result<Vec<_>>>()?;
            tx.commit()?;
            Ok(values)
        })
        .await
    }

    pub(crate) async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.call(move |conn, label| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(SQL_SET)?;
                for (key, value) in &pairs {
                    stmt.execute(params![label, key, value])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = keys.to_vec();
        self.call(move |conn, label| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(SQL_DELETE)?;
                for key in &keys {
                    stmt.execute(params![label, key])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// Reads one value. Accepts TEXT as well as BLOB values, since other writers (the sqlite3
/// CLI, scripts seeding the file) may have stored text in the untyped column.
fn get_value(conn: &Connection, label: &str, key: &str) -> Result<Option<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(SQL_GET)?;
    let value = stmt
        .query_row(params![label, key], |row| {
            Ok(match row.get_ref(0)? {
                ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
                ValueRef::Integer(i) => i.to_string().into_bytes(),
                ValueRef::Real(f) => f.to_string().into_bytes(),
                ValueRef::Null => Vec::new(),
            })
        })
        .optional()?;
    Ok(value)
}

/// Creates the parent directories and returns a canonical path, so that two spellings of the
/// same file map to one shared connection.
fn resolve_path(path: &Path) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        context: format!("{} does not name a file", path.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
        context: format!("creating directory {}", parent.display()),
        source,
    })?;
    let parent = parent.canonicalize().map_err(|source| Error::Io {
        context: format!("resolving directory {}", parent.display()),
        source,
    })?;
    Ok(parent.join(file_name))
}

impl Db {
    fn open(path: PathBuf) -> Result<Self> {
        let conn = Connection::open(&path)?;
        // Set before switching to WAL, which itself needs the lock another process may hold.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // journal_mode answers with a row; WAL lets readers proceed while a writer commits.
        // If the file system cannot do WAL, SQLite keeps the rollback journal, which is
        // slower but just as correct.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        // NORMAL in WAL mode: commits survive a process crash; only an OS crash may lose the
        // last ones. Avoids an fsync per write.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        conn.set_prepared_statement_cache_capacity(32);
        // SQLite checkpoints inside the commit that fills the WAL past 1000 frames, with an
        // fsync, while this connection's mutex holds every other call: each checkpoint
        // stalled all requests (BENCHMARKS.md, session 7). Checkpoints run on a connection of
        // their own instead; the commit's own is left as a safety valve.
        let checkpoints = if mode.eq_ignore_ascii_case("wal") {
            spawn_checkpoints(&path)
        } else {
            None
        };
        if checkpoints.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_VALVE_FRAMES)?;
        }

        Ok(Self {
            conn: Mutex::new(conn),
            path,
            _checkpoints: checkpoints,
        })
    }
}

/// Checkpoints `path`'s WAL every [`CHECKPOINT_INTERVAL`] on a thread and connection of their
/// own, until the returned sender is dropped. `None` when either cannot be had (the commits
/// then checkpoint as SQLite does by default).
fn spawn_checkpoints(path: &Path) -> Option<mpsc::Sender<()>> {
    let conn = Connection::open(path).ok()?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("kv-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                // PASSIVE never waits for readers or writers: what it cannot copy now, a
                // later pass does. A failure here only leaves the work to the next one.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        })
        .ok()?;
    Some(stop)
}
