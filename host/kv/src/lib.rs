//! Key-value stores for the host's `wasi:keyvalue@0.2.0-draft2` implementation (store, atomics,
//! batch), one [`Store`] per store label.
//!
//! Two backends, both laid out as Spin lays them out so that data written by `spin up` and by
//! this runtime can be read by the other:
//! - SQLite: table `spin_key_value (store, key, value)` keyed by (store label, key).
//! - Redis: keys stored unprefixed (the label only selects which URL to use).
//!
//! Unlike Spin 4.0.2 (see PROTOCOLS.md "Spin" -> "Key-value"), compare-and-swap is atomic on
//! both backends, including on an absent key, and `increment` on a non-counter value is an
//! error rather than a panic.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

mod redis_backend;
mod sqlite;

#[cfg(test)]
mod tests;

pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in a key-value operation.
///
/// The `Display` text is meant to be shown to operators (and may be handed to guests as
/// `error::other`); it never contains a Redis password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem step of opening an SQLite store failed (creating directories, resolving the path).
    #[error("key-value store: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// SQLite reported an error (open, schema, query, busy past the timeout, ...).
    #[error("key-value store (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A SQLite call panicked; its transaction was rolled back, the connection stays usable.
    #[error("key-value store (SQLite): the operation failed unexpectedly and was rolled back")]
    WorkerStopped,
    /// The Redis URL could not be parsed. `url` has its password replaced by `***`.
    #[error("key-value store: invalid Redis URL {url}: {reason}")]
    InvalidRedisUrl { url: String, reason: String },
    /// Redis (or the connection to it) reported an error. `url` has its password replaced by
    /// `***` and `message` has any occurrence of the password scrubbed.
    #[error("key-value store (Redis at {url}): {message}")]
    Redis { url: String, message: String },
    /// `increment` was called on a key whose value is not a counter written by `increment`.
    #[error("key-value store: key {key:?} does not hold a counter written by increment")]
    NotACounter { key: String },
    /// `increment` would take the counter outside the i64 range.
    #[error(
        "key-value store: incrementing key {key:?} by {delta} would overflow a 64-bit counter"
    )]
    Overflow { key: String, delta: i64 },
}

/// One key-value store, bound to one store label. Cheap to clone.
///
/// All methods are cancellation-safe in the sense that an operation is either applied as a
/// whole or not at all; a future dropped mid-way may still complete its operation.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Backend>,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Redis(redis_backend::RedisStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Backend::Sqlite(s) => f
                .debug_struct("Store")
                .field("backend", &"sqlite")
                .field("path", &s.path())
                .field("label", &s.label())
                .finish(),
            Backend::Redis(r) => f
                .debug_struct("Store")
                .field("backend", &"redis")
                .field("url", &r.redacted_url())
                .field("label", &r.label())
                .finish(),
        }
    }
}

impl Store {
    /// Embedded SQLite file (created if absent, parent dirs created), WAL, synchronous=NORMAL,
    /// busy_timeout; table keyed by (store label, key), like Spin's `spin_key_value` table.
    ///
    /// Every store opened on the same file in this process shares one connection, owned by one
    /// worker thread, so that labels do not compete for SQLite's write lock among themselves.
    /// Opening does blocking file I/O: call it at startup or from `spawn_blocking`.
    pub fn sqlite(path: &Path, label: &str) -> Result<Store> {
        Ok(Store {
            inner: Arc::new(Backend::Sqlite(sqlite::SqliteStore::open_shared(
                path, label,
            )?)),
        })
    }

    /// A store with a connection of its own, as another process would have: lets tests race
    /// two connections on one file.
    #[cfg(test)]
    pub(crate) fn sqlite_unshared(path: &Path, label: &str) -> Result<Store> {
        Ok(Store {
            inner: Arc::new(Backend::Sqlite(sqlite::SqliteStore::open_unshared(
                path, label,
            )?)),
        })
    }

    /// Redis (redis://host:port/db). Uses a ConnectionManager (multiplexed, reconnects by
    /// itself after Redis restarts). Keys stored unprefixed, as Spin does.
    ///
    /// Fails if Redis cannot be reached now (after a few quick retries). Each call makes its own
    /// connection: open one `Store` per label and clone it.
    pub async fn redis(url: &str, label: &str) -> Result<Store> {
        Ok(Store {
            inner: Arc::new(Backend::Redis(
                redis_backend::RedisStore::connect(url, label).await?,
            )),
        })
    }

    /// The value of `key`, or `None` if absent.
    ///
    /// On a counter key (one written by [`Store::increment`]) this returns the backend's
    /// representation: 8 bytes of little-endian i64 on SQLite (as Spin stores it), the decimal
    /// ASCII string on Redis (as INCRBY stores it).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match &*self.inner {
            Backend::Sqlite(s) => s.get(key).await,
            Backend::Redis(r) => r.get(key).await,
        }
    }

    /// Writes `value` at `key`, replacing any previous value.
    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        match &*self.inner {
            Backend::Sqlite(s) => s.set(key, value).await,
            Backend::Redis(r) => r.set(key, value).await,
        }
    }

    /// Removes `key`; removing an absent key is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match &*self.inner {
            Backend::Sqlite(s) => s.delete(key).await,
            Backend::Redis(r) => r.delete(key).await,
        }
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match &*self.inner {
            Backend::Sqlite(s) => s.exists(key).await,
            Backend::Redis(r) => r.exists(key).await,
        }
    }

    /// All keys of this label. On Redis that is every key of the database (keys are
    /// unprefixed, as in Spin), gathered with SCAN so Redis is not blocked; keys that are not
    /// UTF-8 are left out since a guest could not name them.
    pub async fn list_keys(&self) -> Result<Vec<String>> {
        match &*self.inner {
            Backend::Sqlite(s) => s.list_keys().await,
            Backend::Redis(r) => r.list_keys().await,
        }
    }

    /// Atomic add; absent key starts at 0; returns the new value. A key holding anything but
    /// a counter written by increment -> Err (never panic).
    ///
    /// Counter representation: 8-byte little-endian i64 on SQLite, INCRBY's decimal string on
    /// Redis (see [`Store::get`]). Overflowing i64 is an [`Error::Overflow`].
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        match &*self.inner {
            Backend::Sqlite(s) => s.increment(key, delta).await,
            Backend::Redis(r) => r.increment(key, delta).await,
        }
    }

    /// Atomic compare-and-swap: writes `new` only if the key's current value equals `expected`
    /// (`None` = key absent). Returns `Ok(true)` if it wrote, `Ok(false)` if the value had
    /// changed (lost race) and then nothing was written.
    ///
    /// Values are compared byte for byte, so A -> B -> A between the read and the swap is not
    /// noticed (the wasi `cas` resource has the same semantics).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool> {
        match &*self.inner {
            Backend::Sqlite(s) => s.compare_and_swap(key, expected, new).await,
            Backend::Redis(r) => r.compare_and_swap(key, expected, new).await,
        }
    }

    /// Values of `keys`, in the same order (`None` for absent keys), read as one snapshot.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        match &*self.inner {
            Backend::Sqlite(s) => s.get_many(keys).await,
            Backend::Redis(r) => r.get_many(keys).await,
        }
    }

    /// Writes all pairs atomically (one SQLite transaction / one Redis MSET). If a key
    /// appears twice, the last pair wins.
    pub async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<()> {
        match &*self.inner {
            Backend::Sqlite(s) => s.set_many(pairs).await,
            Backend::Redis(r) => r.set_many(pairs).await,
        }
    }

    /// Removes all `keys` atomically (one SQLite transaction / one Redis DEL).
    pub async fn delete_many(&self, keys: &[String]) -> Result<()> {
        match &*self.inner {
            Backend::Sqlite(s) => s.delete_many(keys).await,
            Backend::Redis(r) => r.delete_many(keys).await,
        }
    }
}
