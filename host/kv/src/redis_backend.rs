//! Redis backend: one multiplexed `ConnectionManager` per store, keys unprefixed as in Spin.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

use crate::{Error, Result};

/// Compare-and-swap in one script, which Redis runs atomically (no other command interleaves).
/// ARGV[1] = "1" if a current value is expected (ARGV[2]), "0" if the key must be absent;
/// ARGV[3] = the new value. Returns 1 if it wrote, 0 if the current value did not match.
static CAS_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
",
    )
});

/// Keys asked for per SCAN round trip.
const SCAN_COUNT: usize = 1000;

pub(crate) struct RedisStore {
    conn: ConnectionManager,
    /// Shown in errors and Debug output: the URL with its password replaced by `***`.
    redacted_url: Arc<str>,
    /// The password as written in the URL and as the client uses it (decoded), scrubbed from
    /// every error message in case a library error ever echoes it.
    secrets: Arc<[String]>,
    label: Arc<str>,
}

impl RedisStore {
    pub(crate) async fn connect(url: &str, label: &str) -> Result<Self> {
        let redacted_url: Arc<str> = redact_url(url).into();
        let mut secrets: Vec<String> = url_password(url).into_iter().collect();
        let client = Client::open(url).map_err(|e| Error::InvalidRedisUrl {
            url: redacted_url.to_string(),
            reason: scrub(&e.to_string(), &secrets),
        })?;
        secrets.extend(
            client
                .get_connection_info()
                .redis
                .password
                .clone()
                .filter(|p| !p.is_empty()),
        );
        let secrets: Arc<[String]> = secrets.into();
        let config = ConnectionManagerConfig::new()
            // Bounded so a dead Redis turns into an error instead of a hung request.
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            // Connection attempts (at startup and on each reconnect) are retried twice, about
            // 0.5-1 s apart, so an unreachable Redis fails a request within a few seconds
            // rather than after the library's default of several retries of up to a minute.
            // The manager tries again on the next command, so an outage heals by itself.
            .set_number_of_retries(2)
            .set_max_delay(500);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| redis_error_with(&redacted_url, &secrets, &e))?;
        let store = Self {
            conn,
            redacted_url,
            secrets,
            label: label.into(),
        };
        // Loads the CAS script now so the first CAS does not pay for EVALSHA + SCRIPT LOAD;
        // `invoke_async` reloads it by itself if Redis restarts and forgets it.
        CAS_SCRIPT
            .prepare_invoke()
            .load_async(&mut store.conn())
            .await
            .map_err(|e| store.err(e))?;
        Ok(store)
    }

    pub(crate) fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn err(&self, e: RedisError) -> Error {
        redis_error_with(&self.redacted_url, &self.secrets, &e)
    }

    /// A handle for one operation: the manager is an `Arc` inside, and its methods need `&mut`.
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .exec_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        redis::cmd("DEL")
            .arg(key)
            .exec_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn list_keys(&self) -> Result<Vec<String>> {
        let mut conn = self.conn();
        // SCAN instead of KEYS: it does not block Redis on a large database. SCAN may return
        // a key more than once, hence the set.
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(e))?;
            keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(keys.into_iter().collect())
    }

    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        redis::cmd("INCRBY")
            .arg(key)
            .arg(delta)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("overflow") {
                    Error::Overflow {
                        key: key.to_owned(),
                        delta,
                    }
                } else if text.contains("not an integer") || e.code() == Some("WRONGTYPE") {
                    Error::NotACounter {
                        key: key.to_owned(),
                    }
                } else {
                    self.err(e)
                }
            })
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool> {
        let (has_expected, expected) = match expected {
            Some(v) => ("1", v),
            None => ("0", &[][..]),
        };
        let wrote: i64 = CAS_SCRIPT
            .key(key)
            .arg(has_expected)
            .arg(expected)
            .arg(new)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(wrote == 1)
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        // MGET with no key is a Redis syntax error.
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in &pairs {
            cmd.arg(key).arg(value);
        }
        cmd.exec_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        redis::cmd("DEL")
            .arg(keys)
            .exec_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }
}

fn redis_error_with(redacted_url: &str, secrets: &[String], e: &RedisError) -> Error {
    Error::Redis {
        url: redacted_url.to_owned(),
        message: scrub(&e.to_string(), secrets),
    }
}

/// Replaces every occurrence of a secret by `***`.
fn scrub(message: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(message.to_owned(), |m, s| m.replace(s.as_str(), "***"))
}

/// The userinfo part of `url` (between `://` and the last `@` of the authority), if any.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((start, start + at))
}

/// The password written in `url` (`redis://user:password@host` or `redis://:password@host`),
/// exactly as written.
fn url_password(url: &str) -> Option<String> {
    let (start, end) = userinfo(url)?;
    let info = &url[start..end];
    let colon = info.find(':')?;
    let password = &info[colon + 1..];
    (!password.is_empty()).then(|| password.to_owned())
}

/// `url` with its password replaced by `***`; user name, host, port and db kept, since they
/// tell an operator which server failed.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((start, end)) = userinfo(url) else {
        return url.to_owned();
    };
    let info = &url[start..end];
    // Without a colon the userinfo is a user name alone; hide it all in case it is a
    // password written in the wrong place.
    let user = info.find(':').map_or("", |colon| &info[..=colon]);
    format!("{}{user}***{}", &url[..start], &url[end..])
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn redacts_password_in_url() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/2"),
            "redis://user:***@host:6379/2"
        );
        assert_eq!(redact_url("redis://:p%40ss@host/0"), "redis://:***@host/0");
        assert_eq!(redact_url("redis://host:6379/9"), "redis://host:6379/9");
        assert_eq!(redact_url("redis://s3cret@host"), "redis://***@host");
        assert_eq!(
            url_password("redis://user:s3cret@host:6379"),
            Some("s3cret".into())
        );
        assert_eq!(url_password("redis://host:6379"), None);
        assert_eq!(scrub("bad s3cret here", &["s3cret".into()]), "bad *** here");
    }
}
