//! The key-value store and the request state machine on it, exactly-once on every backend
//! Spin offers.
//!
//! # Why claims
//!
//! Spin's compare-and-swap is weak (SQLite: CAS on an absent key upserts; Redis: a swap that
//! wrote is reported as failed), but `increment` is atomic everywhere: the caller that gets 1
//! from `increment(claim-key, 1)` owns the transition, and only then writes the record with
//! `set`. `increment` on a key that was written with `set` makes Spin panic, so counter keys
//! (`ctr:` and `claim:` prefixes) are never written with `set`, never read with `get`
//! (`increment(key, 0)` reads a counter), and `set` keys never share those prefixes.
//! `list-keys` is not used (no cursor support on Spin): everything is found by known keys.
//!
//! # Key layout
//!
//! | key | kind | holds |
//! |---|---|---|
//! | `req:<id>` | set | the [`ActionRecord`] (JSON). While pending its `votes` live in vote slots; the final record carries them. |
//! | `ctr:votes:<id>` | counter | vote slot allocator of request `<id>` |
//! | `vote:<id>:<n>` | set | the [`Vote`] in slot `n` (1-based) |
//! | `claim:vote:<id>:<approver>` | counter | 1 = this person's one vote on `<id>` |
//! | `claim:decide:<id>` | counter | 1 = owner of the final transition (approved, denied or expired) |
//! | `claim:grant:<jti>` | counter | 1 = the first (only valid) consumption of a grant |
//! | `idem:<agent>:<sha256(key)>` | set | [`IdemEntry`]: body hash, reserved request id, the first answer |
//! | `claim:idem:<agent>:<sha256(key)>:<generation>` | counter | 1 = who answers that key (generation 0, the stale entry's start time on takeover, or the negated release number after a release) |
//! | `ctr:idem:<agent>:<sha256(key)>` | counter | releases of that key (each one opens a fresh generation) |
//! | `ctr:q:<queue>` | counter | slot allocator of a queue (`pending`, `callbacks`, `reviews`, ...) |
//! | `q:<queue>:<n>` | set | queue item `n` (pending index: the request id; job queues: a [`Job`]); empty = removed |
//! | `q:<queue>:low` | set | lowest slot that may still hold an item (advisory, only moves the scan start) |
//! | `q:<queue>:hole` | set | `<slot>@<unix>`: a slot seen claimed but unwritten, and since when |
//! | `claim:q:<queue>:<n>:<attempt>` | counter | 1 = who runs delivery attempt `<attempt>` of job `n` |
//! | `claim:q:<queue>:<n>:move` | counter | 1 = who moves long-lived item `n` to the tail of its queue |
//! | `ctr:audit` | counter | audit sequence allocator (see [`crate::audit`]) |
//! | `audit:<seq>` | set | audit record `seq` |
//! | `claim:audit:<seq>` | counter | 1 = the one writer of `audit:<seq>` |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canon::sha256_hex;
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::model::{ActionRecord, Status, Vote};
use crate::rules::{self, Refusal, RefusalCode, Tally, VoteOutcome};
use crate::time::Timestamp;

/// The operations countersign needs from a key-value store, as `wasi:keyvalue`
/// (store, atomics, batch) offers them. Components implement it over the Spin bindings; the
/// local runtime's backends and [`MemoryKv`] behave the same.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    fn set(&self, key: &str, value: &[u8]) -> Result<()>;
    fn delete(&self, key: &str) -> Result<()>;
    /// Atomically adds `delta` to the counter at `key` (absent = 0) and returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64>;
    /// Values of `keys`, in order (`None` for absent keys).
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>>;
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<()>;
    /// Deletes `keys` (one batch where the store has one).
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().try_for_each(|k| self.delete(k))
    }
}

impl<T: Kv + ?Sized> Kv for &T {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        (**self).increment(key, delta)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get_many(keys)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<()> {
        (**self).set_many(items)
    }
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        (**self).delete_many(keys)
    }
}

impl<T: Kv + ?Sized> Kv for std::sync::Arc<T> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        (**self).increment(key, delta)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get_many(keys)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<()> {
        (**self).set_many(items)
    }
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        (**self).delete_many(keys)
    }
}

/// The JSON value at `key`; `None` when absent or unreadable (for caches and card lists, which
/// are rebuilt rather than trusted when damaged).
pub fn get_json<T: serde::de::DeserializeOwned>(kv: &impl Kv, key: &str) -> Result<Option<T>> {
    Ok(kv.get(key)?.and_then(|b| serde_json::from_slice(&b).ok()))
}

pub fn set_json<T: Serialize + ?Sized>(kv: &impl Kv, key: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))?;
    kv.set(key, &bytes)
}

/// Adds `item` (once) to the JSON list at `key`. Read-modify-write: for lists with one writer
/// at a time, such as the cards a claimed review job posted.
pub fn add_to_list<T>(kv: &impl Kv, key: &str, item: T) -> Result<()>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let mut all: Vec<T> = get_json(kv, key)?.unwrap_or_default();
    if !all.contains(&item) {
        all.push(item);
    }
    set_json(kv, key, &all)
}

#[derive(Debug, Clone)]
enum Slot {
    Value(Vec<u8>),
    Counter(i64),
}

/// An in-memory [`Kv`] for tests. Stricter than Spin where Spin misbehaves: `increment` on a
/// `set` key, `set` on a counter and `get` of a counter are errors (on Spin the first one
/// panics the process), so a key-layout mistake fails a test instead of production.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<String, Slot>>,
}

impl MemoryKv {
    pub fn new() -> MemoryKv {
        MemoryKv::default()
    }

    /// All keys, sorted (tests only: the app never lists keys).
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.lock().keys().cloned().collect();
        k.sort();
        k
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.lock().get(key) {
            None => Ok(None),
            Some(Slot::Value(v)) => Ok(Some(v.clone())),
            Some(Slot::Counter(_)) => Err(Error::Store(format!("get of counter key {key}"))),
        }
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut m = self.lock();
        if let Some(Slot::Counter(_)) = m.get(key) {
            return Err(Error::Store(format!("set of counter key {key}")));
        }
        m.insert(key.to_string(), Slot::Value(value.to_vec()));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.lock().remove(key);
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let mut m = self.lock();
        match m.entry(key.to_string()).or_insert(Slot::Counter(0)) {
            Slot::Counter(n) => {
                *n += delta;
                Ok(*n)
            }
            Slot::Value(_) => Err(Error::Store(format!(
                "increment of non-counter key {key} (Spin would panic)"
            ))),
        }
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<()> {
        for (k, v) in items {
            self.set(k, v)?;
        }
        Ok(())
    }
}

/// Key builders (see the module docs for the layout).
pub mod keys {
    pub fn request(id: &str) -> String {
        format!("req:{id}")
    }
    pub fn vote_counter(id: &str) -> String {
        format!("ctr:votes:{id}")
    }
    pub fn vote_slot(id: &str, n: i64) -> String {
        format!("vote:{id}:{n}")
    }
    pub fn vote_claim(id: &str, approver: &str) -> String {
        format!("claim:vote:{id}:{approver}")
    }
    pub fn decide_claim(id: &str) -> String {
        format!("claim:decide:{id}")
    }
    pub fn grant_claim(jti: &str) -> String {
        format!("claim:grant:{jti}")
    }
    pub fn idem(agent: &str, key_hash: &str) -> String {
        format!("idem:{agent}:{key_hash}")
    }
    pub fn idem_claim(agent: &str, key_hash: &str, generation: i64) -> String {
        format!("claim:idem:{agent}:{key_hash}:{generation}")
    }
    pub fn idem_releases(agent: &str, key_hash: &str) -> String {
        format!("ctr:idem:{agent}:{key_hash}")
    }
    pub fn queue_counter(queue: &str) -> String {
        format!("ctr:q:{queue}")
    }
    pub fn queue_slot(queue: &str, n: i64) -> String {
        format!("q:{queue}:{n}")
    }
    pub fn queue_low(queue: &str) -> String {
        format!("q:{queue}:low")
    }
    pub fn attempt_claim(queue: &str, n: i64, attempt: u32) -> String {
        format!("claim:q:{queue}:{n}:{attempt}")
    }
}

/// The queue that indexes pending requests (for `GET /v1/reviews` and the sweep).
pub const PENDING_QUEUE: &str = "pending";
/// How many slots one scan of a queue reads at most.
pub const MAX_SCAN: i64 = 10_000;
/// Slots read per `get_many`.
const BATCH: i64 = 100;
/// A queue slot claimed but not written for this long (seconds) is given up.
pub const HOLE_SECS: i64 = 60;
/// An idempotency reservation older than this (seconds) without an answer may be taken over.
pub const IDEM_STALE_SECS: i64 = 60;

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Store(format!("encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Store(format!("{key} holds unreadable data: {e}")))
}

/// Re-reads up to `tries` times, `delay` apart, until `f` yields something.
fn poll<T>(
    tries: u32,
    delay: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    for i in 0..tries {
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        if i + 1 < tries {
            std::thread::sleep(delay);
        }
    }
    Ok(None)
}

/// The result of an attempted final transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// This caller won the claim and wrote the final record: it alone sends the callback,
    /// updates the cards and writes the audit record.
    Won(ActionRecord),
    /// Someone else owns the transition (record as last seen).
    Lost(ActionRecord),
    /// Already final before this call.
    AlreadyFinal(ActionRecord),
    /// Pending and not yet due.
    NotDue(ActionRecord),
}

/// The result of [`Store::vote`].
#[derive(Debug, Clone, PartialEq)]
pub struct VoteReceipt {
    pub outcome: VoteOutcome,
    /// True for exactly one caller per request: the one whose claim made the final
    /// transition. Only it issues the side effects of the decision: the callback, the card updates,
    /// the `action.approved` / `action.denied` audit records. (Other voters whose vote is part
    /// of the final record also see `Approved` / `Denied`, with `decided_here` false.)
    pub decided_here: bool,
}

impl VoteReceipt {
    fn refused(r: Refusal) -> VoteReceipt {
        VoteReceipt {
            outcome: VoteOutcome::Refused(r),
            decided_here: false,
        }
    }

    fn seen(outcome: VoteOutcome) -> VoteReceipt {
        VoteReceipt {
            outcome,
            decided_here: false,
        }
    }
}

/// What [`Store::idempotency_begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum IdemBegin {
    /// First use of the key: handle the request with this request id, then call
    /// [`Store::idempotency_finish`].
    New { request_id: String },
    /// Same key, same body: answer this again.
    Replay(IdemAnswer),
    /// Same key, another body (409).
    Conflict,
    /// Same key and body, the first request is still being handled (409, retry later).
    InProgress,
}

/// A stored answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdemAnswer {
    pub status: u16,
    pub body: Value,
}

/// The value of `idem:<agent>:<hash>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdemEntry {
    pub body_hash: String,
    pub request_id: String,
    pub started_at: Timestamp,
    #[serde(default)]
    pub answer: Option<IdemAnswer>,
    /// Set by [`Store::idempotency_release`]: the holder gave the key up without answering
    /// (nothing was stored), and the next request with this key takes it over at once by
    /// claiming this generation (negative, unique per release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<i64>,
}

/// A delivery job (agent callback, review post, card update) in a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// e.g. `callback`, `review.slack`, `update.teams`.
    pub kind: String,
    pub request_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_at: Timestamp,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Whatever the sender needs (URL, event id, body...).
    #[serde(default)]
    pub payload: Value,
}

/// Most delivery attempts of a job (DESIGN: callbacks at most 10).
pub const MAX_ATTEMPTS: u32 = 10;

/// Seconds to wait after failed attempt number `attempts` (1-based): 5 s, 10 s, 20 s, ...
/// capped at 1 hour.
pub fn backoff_secs(attempts: u32) -> u64 {
    let exp = attempts.saturating_sub(1).min(20);
    (5u64 << exp).min(3600)
}

/// The request state machine over a [`Kv`].
pub struct Store<K: Kv> {
    kv: K,
    /// How long a loser of a claim waits for the winner's write (tries × delay).
    wait_tries: u32,
    wait_delay: Duration,
}

impl<K: Kv> Store<K> {
    pub fn new(kv: K) -> Store<K> {
        Store {
            kv,
            wait_tries: 20,
            wait_delay: Duration::from_millis(5),
        }
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// True for exactly one caller per `key` (a counter key, `claim:` prefix).
    pub fn claim(&self, key: &str) -> Result<bool> {
        debug_assert!(key.starts_with("claim:"));
        Ok(self.kv.increment(key, 1)? == 1)
    }

    // ---- requests -------------------------------------------------------------------------

    /// Stores a new record (fresh id). A pending one is added to the pending index.
    pub fn create(&self, record: &ActionRecord) -> Result<()> {
        self.kv.set(&keys::request(&record.id), &to_json(record)?)?;
        if record.status == Status::Pending {
            self.queue_push(PENDING_QUEUE, record.id.as_bytes())?;
        }
        Ok(())
    }

    /// The record as stored, with the votes of a pending request gathered from its slots
    /// (status as stored; use [`ActionRecord::at`] / [`ActionRecord::view`] for the status at
    /// a given time).
    pub fn load(&self, id: &str) -> Result<Option<ActionRecord>> {
        let key = keys::request(id);
        let Some(bytes) = self.kv.get(&key)? else {
            return Ok(None);
        };
        let mut rec: ActionRecord = from_json(&key, &bytes)?;
        if rec.status == Status::Pending {
            rec.votes = self.load_votes(id)?;
        }
        Ok(Some(rec))
    }

    fn load_votes(&self, id: &str) -> Result<Vec<Vote>> {
        let n = self.kv.increment(&keys::vote_counter(id), 0)?;
        let mut votes = Vec::new();
        let mut start = 1;
        while start <= n {
            let end = (start + BATCH - 1).min(n);
            let ks: Vec<String> = (start..=end).map(|i| keys::vote_slot(id, i)).collect();
            for (k, v) in ks.iter().zip(self.kv.get_many(&ks)?) {
                // A claimed slot not written yet is skipped: its voter reads again after writing.
                if let Some(bytes) = v {
                    votes.push(from_json::<Vote>(k, &bytes)?);
                }
            }
            start = end + 1;
        }
        Ok(votes)
    }

    /// Casts a vote, exactly once per person, and makes the final transition exactly once.
    ///
    /// Protocol: check the rules on the current record → claim this person's vote
    /// (`claim:vote:<id>:<approver>`) → write it into a fresh slot → re-read all votes → if the
    /// tally is final, build the final record (`on_decide` may add e.g. the grant; it runs
    /// before the claim, in every decisive voter, so it must be free of side effects, and a
    /// failure leaves the request pending and untouched), claim `claim:decide:<id>`, and only
    /// the winner writes it and gets `decided_here`. A voter whose decisive vote lost the race
    /// gets the winner's outcome when the final record includes its vote, else
    /// `already_decided`. Unknown request: `NotFound`.
    pub fn vote(
        &self,
        id: &str,
        dir: &Directory,
        vote: &Vote,
        on_decide: impl FnOnce(&mut ActionRecord) -> Result<()>,
    ) -> Result<VoteReceipt> {
        let rec = self
            .load(id)?
            .ok_or_else(|| Error::NotFound(format!("request {id}")))?;
        if let Err(r) = rules::check(&rec, dir, vote) {
            return Ok(VoteReceipt::refused(r));
        }
        if !self.claim(&keys::vote_claim(id, &vote.approver))? {
            return Ok(VoteReceipt::refused(Refusal::new(
                RefusalCode::Duplicate,
                format!("{} has already voted", vote.approver),
            )));
        }
        let n = self.kv.increment(&keys::vote_counter(id), 1)?;
        self.kv.set(&keys::vote_slot(id, n), &to_json(vote)?)?;

        let mut now_rec = self
            .load(id)?
            .ok_or_else(|| Error::NotFound(format!("request {id}")))?;
        if now_rec.status.is_final() {
            return Ok(VoteReceipt::seen(self.outcome_after_loss(now_rec, vote)));
        }
        let tally = rules::tally(&now_rec, dir);
        if tally == Tally::Pending {
            return Ok(VoteReceipt::seen(VoteOutcome::Recorded(now_rec)));
        }
        let seen = now_rec.clone();
        rules::finish(&mut now_rec, tally, vote.at);
        on_decide(&mut now_rec)?;
        if self.claim(&keys::decide_claim(id))? {
            self.write_final(&now_rec)?;
            let outcome = match tally {
                Tally::Approved => VoteOutcome::Approved(now_rec),
                _ => VoteOutcome::Denied(now_rec),
            };
            return Ok(VoteReceipt {
                outcome,
                decided_here: true,
            });
        }
        // Lost the race: report the winner's outcome (never our own unwritten one).
        let last = self.wait_final(id)?.unwrap_or(seen);
        Ok(VoteReceipt::seen(self.outcome_after_loss(last, vote)))
    }

    fn outcome_after_loss(&self, rec: ActionRecord, vote: &Vote) -> VoteOutcome {
        let mine = rec
            .votes
            .iter()
            .any(|v| v.approver == vote.approver && v.at == vote.at);
        match rec.status {
            Status::Approved if mine => VoteOutcome::Approved(rec),
            Status::Denied if mine => VoteOutcome::Denied(rec),
            Status::Pending => VoteOutcome::Refused(Refusal::new(
                RefusalCode::AlreadyDecided,
                "the request was decided at the same moment",
            )),
            Status::Expired => VoteOutcome::Refused(Refusal::new(
                RefusalCode::Expired,
                "the review window has ended",
            )),
            s => VoteOutcome::Refused(Refusal::new(
                RefusalCode::AlreadyDecided,
                format!("the request is already {s}"),
            )),
        }
    }

    /// Waits briefly for the winner of a decide claim to write the final record.
    fn wait_final(&self, id: &str) -> Result<Option<ActionRecord>> {
        poll(self.wait_tries, self.wait_delay, || {
            Ok(self.load(id)?.filter(|r| r.status.is_final()))
        })
    }

    fn write_final(&self, rec: &ActionRecord) -> Result<()> {
        let bytes = to_json(rec)?;
        let key = keys::request(&rec.id);
        // The claim is won: the write must land. Retry a transient store failure.
        let mut last = None;
        for _ in 0..3 {
            match self.kv.set(&key, &bytes) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Store("write failed".into())))
    }

    /// Expires a pending request whose window has ended (the sweep, or a reader that finds it
    /// overdue). Exactly one caller gets `Won`.
    pub fn expire(
        &self,
        id: &str,
        now: Timestamp,
        on_decide: impl FnOnce(&mut ActionRecord) -> Result<()>,
    ) -> Result<Transition> {
        let mut rec = self
            .load(id)?
            .ok_or_else(|| Error::NotFound(format!("request {id}")))?;
        if rec.status.is_final() {
            return Ok(Transition::AlreadyFinal(rec));
        }
        if rec.effective_status(now) != Status::Expired {
            return Ok(Transition::NotDue(rec));
        }
        let seen = rec.clone();
        rules::expire(&mut rec, now);
        on_decide(&mut rec)?;
        if self.claim(&keys::decide_claim(id))? {
            self.write_final(&rec)?;
            Ok(Transition::Won(rec))
        } else {
            Ok(Transition::Lost(self.wait_final(id)?.unwrap_or(seen)))
        }
    }

    /// Marks a grant used. True for the first consumption only (409 after).
    pub fn consume_grant(&self, jti: &str) -> Result<bool> {
        self.claim(&keys::grant_claim(jti))
    }

    /// Pending requests, oldest first, as seen at `now` (overdue ones are left out), at most
    /// `limit`.
    pub fn pending(&self, now: Timestamp, limit: usize) -> Result<Vec<ActionRecord>> {
        self.pending_where(limit, |r| r.effective_status(now) == Status::Pending)
    }

    /// `GET /v1/reviews`: the pending requests `approver` may still vote on, oldest first.
    pub fn reviews(
        &self,
        dir: &Directory,
        approver: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ActionRecord>> {
        self.pending_where(limit, |r| rules::may_vote(r, dir, approver, now))
    }

    fn pending_where(
        &self,
        limit: usize,
        keep: impl Fn(&ActionRecord) -> bool,
    ) -> Result<Vec<ActionRecord>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (_, id) in self.queue_scan(PENDING_QUEUE)? {
            let id = String::from_utf8_lossy(&id).to_string();
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(r) = self.load(&id)? {
                if keep(&r) {
                    out.push(r);
                }
            }
        }
        // Slot order is creation order except for items the sweep moved to the tail.
        out.sort_by_key(|r| r.created_at);
        out.truncate(limit);
        Ok(out)
    }

    /// The sweep over pending requests: expires every overdue one (returning those this caller
    /// won, for callbacks, card updates and audit) and drops decided ones from the index.
    pub fn sweep_pending(
        &self,
        now: Timestamp,
        mut on_decide: impl FnMut(&mut ActionRecord) -> Result<()>,
    ) -> Result<Vec<ActionRecord>> {
        let mut won = Vec::new();
        for (slot, id) in self.queue_scan(PENDING_QUEUE)? {
            let id = String::from_utf8_lossy(&id).to_string();
            match self.expire(&id, now, &mut on_decide) {
                Ok(Transition::Won(r)) => {
                    self.queue_remove(PENDING_QUEUE, slot)?;
                    won.push(r);
                }
                Ok(Transition::AlreadyFinal(_)) | Ok(Transition::Lost(_)) => {
                    self.queue_remove(PENDING_QUEUE, slot)?
                }
                Ok(Transition::NotDue(_)) => {}
                Err(Error::NotFound(_)) => self.queue_remove(PENDING_QUEUE, slot)?,
                Err(e) => return Err(e),
            }
        }
        self.queue_maintain(PENDING_QUEUE, now)?;
        Ok(won)
    }

    // ---- idempotency ------------------------------------------------------------------------

    /// Looks up or reserves idempotency key `key` of `agent` for a body with hash `body_hash`
    /// (see [`crate::model::ActionRequest::body_hash`]). `New` reserves the key and a request
    /// id; a reservation left unanswered for [`IDEM_STALE_SECS`] (its handler died) is taken
    /// over by exactly one later request, which reuses the reserved id.
    pub fn idempotency_begin(
        &self,
        agent: &str,
        key: &str,
        body_hash: &str,
        now: Timestamp,
    ) -> Result<IdemBegin> {
        let kh = sha256_hex(key.as_bytes());
        let entry_key = keys::idem(agent, &kh);
        let existing: Option<IdemEntry> = match self.kv.get(&entry_key)? {
            Some(b) => Some(from_json(&entry_key, &b)?),
            None => None,
        };
        let (generation, request_id) = match &existing {
            // Given up without effect: anyone takes it over, with a fresh request id.
            Some(IdemEntry {
                released: Some(g), ..
            }) => (*g, crate::canon::random_id("req_")?),
            Some(e) if e.body_hash != body_hash => return Ok(IdemBegin::Conflict),
            Some(IdemEntry {
                answer: Some(a), ..
            }) => return Ok(IdemBegin::Replay(a.clone())),
            Some(e) if now.unix() - e.started_at.unix() < IDEM_STALE_SECS => {
                return Ok(IdemBegin::InProgress)
            }
            Some(e) => (e.started_at.unix().max(1), e.request_id.clone()),
            None => (0, crate::canon::random_id("req_")?),
        };
        if !self.claim(&keys::idem_claim(agent, &kh, generation))? {
            // Someone reserved it a moment ago: tell apart a different body from the same.
            return Ok(match self.kv.get(&entry_key)? {
                Some(b) => {
                    let e: IdemEntry = from_json(&entry_key, &b)?;
                    match e.answer {
                        // Still released: the winner has not written its reservation yet.
                        _ if e.released.is_some() => IdemBegin::InProgress,
                        _ if e.body_hash != body_hash => IdemBegin::Conflict,
                        Some(a) => IdemBegin::Replay(a),
                        None => IdemBegin::InProgress,
                    }
                }
                None => IdemBegin::InProgress,
            });
        }
        let entry = IdemEntry {
            body_hash: body_hash.into(),
            request_id: request_id.clone(),
            started_at: now,
            answer: None,
            released: None,
        };
        self.kv.set(&entry_key, &to_json(&entry)?)?;
        Ok(IdemBegin::New { request_id })
    }

    /// Stores the first answer for an idempotency key reserved by [`Store::idempotency_begin`].
    pub fn idempotency_finish(
        &self,
        agent: &str,
        key: &str,
        body_hash: &str,
        request_id: &str,
        now: Timestamp,
        answer: IdemAnswer,
    ) -> Result<()> {
        let kh = sha256_hex(key.as_bytes());
        let entry = IdemEntry {
            body_hash: body_hash.into(),
            request_id: request_id.into(),
            started_at: now,
            answer: Some(answer),
            released: None,
        };
        self.kv.set(&keys::idem(agent, &kh), &to_json(&entry)?)
    }

    /// Gives up a reservation made by [`Store::idempotency_begin`] when the request failed
    /// before anything was stored (policy or audit unavailable, store failure): a retry with
    /// the same key is then handled afresh at once, instead of meeting `InProgress` until the
    /// reservation turns stale. Does nothing when the entry is no longer this holder's
    /// reservation (answered, or taken over after going stale).
    pub fn idempotency_release(&self, agent: &str, key: &str, request_id: &str) -> Result<()> {
        let kh = sha256_hex(key.as_bytes());
        let entry_key = keys::idem(agent, &kh);
        let Some(bytes) = self.kv.get(&entry_key)? else {
            return Ok(());
        };
        let mut entry: IdemEntry = from_json(&entry_key, &bytes)?;
        if entry.request_id != request_id || entry.answer.is_some() || entry.released.is_some() {
            return Ok(());
        }
        // A fresh generation per release, never used before: negative, so it cannot meet the
        // generations of first use (0) and of stale takeovers (start times).
        let n = self.kv.increment(&keys::idem_releases(agent, &kh), 1)?;
        entry.released = Some(-n);
        self.kv.set(&entry_key, &to_json(&entry)?)
    }

    // ---- queues -----------------------------------------------------------------------------

    /// Appends an item (non-empty) to `queue` and returns its slot.
    pub fn queue_push(&self, queue: &str, item: &[u8]) -> Result<i64> {
        if item.is_empty() {
            return Err(Error::Store(
                "empty queue items are reserved for tombstones".into(),
            ));
        }
        let n = self.kv.increment(&keys::queue_counter(queue), 1)?;
        self.kv.set(&keys::queue_slot(queue, n), item)?;
        Ok(n)
    }

    /// The items of `queue` in slot order (at most [`MAX_SCAN`] slots from the low mark).
    /// Removed slots and claimed-but-unwritten ones are skipped.
    pub fn queue_scan(&self, queue: &str) -> Result<Vec<(i64, Vec<u8>)>> {
        Ok(self
            .queue_window(queue)?
            .into_iter()
            .filter_map(|(i, v)| v.filter(|b| !b.is_empty()).map(|b| (i, b)))
            .collect())
    }

    /// Every slot of the scan window with its raw content: `None` = absent (claimed but not
    /// written yet, or cleaned up), `Some(empty)` = removed (tombstone), else the item.
    fn queue_window(&self, queue: &str) -> Result<Vec<(i64, Option<Vec<u8>>)>> {
        let head = self.kv.increment(&keys::queue_counter(queue), 0)?;
        let low = self.queue_low(queue)?;
        let end = head.min(low + MAX_SCAN - 1);
        let mut out = Vec::new();
        let mut start = low;
        while start <= end {
            let stop = (start + BATCH - 1).min(end);
            let ks: Vec<String> = (start..=stop).map(|i| keys::queue_slot(queue, i)).collect();
            out.extend((start..=stop).zip(self.kv.get_many(&ks)?));
            start = stop + 1;
        }
        Ok(out)
    }

    /// Removes an item: its slot becomes a tombstone (empty value), which tells a removed
    /// slot from one whose writer has claimed it but not written yet.
    pub fn queue_remove(&self, queue: &str, slot: i64) -> Result<()> {
        self.kv.set(&keys::queue_slot(queue, slot), b"")
    }

    fn queue_low(&self, queue: &str) -> Result<i64> {
        let key = keys::queue_low(queue);
        Ok(match self.kv.get(&key)? {
            Some(b) => String::from_utf8_lossy(&b)
                .trim()
                .parse::<i64>()
                .unwrap_or(1)
                .max(1),
            None => 1,
        })
    }

    /// Housekeeping for the sweep: moves the low mark past the tombstones at the front of
    /// `queue` (deleting them), and
    /// - a slot claimed but still unwritten after [`HOLE_SECS`] (its writer died) becomes a
    ///   tombstone, so one crash cannot pin the window;
    /// - when the window is more than half full, items still live in its first quarter are
    ///   moved to the tail (re-pushed, old slot tombstoned; one mover per slot), so a
    ///   long-lived item cannot hide newer ones beyond [`MAX_SCAN`].
    ///
    /// Concurrent sweeps may write an older mark; that only rescans.
    pub fn queue_maintain(&self, queue: &str, now: Timestamp) -> Result<()> {
        let window = self.queue_window(queue)?;
        let low = self.queue_low(queue)?;
        let mut new_low = low;
        let mut dead = Vec::new();
        for (slot, v) in &window {
            match v {
                Some(b) if b.is_empty() => {
                    dead.push(*slot);
                    new_low = slot + 1;
                }
                Some(_) => break,
                None => {
                    if self.hole_expired(queue, *slot, now)? {
                        self.queue_remove(queue, *slot)?;
                        dead.push(*slot);
                        new_low = slot + 1;
                    } else {
                        break;
                    }
                }
            }
        }
        if new_low != low {
            self.kv
                .set(&keys::queue_low(queue), new_low.to_string().as_bytes())?;
            for slot in dead {
                self.kv.delete(&keys::queue_slot(queue, slot))?;
            }
        }
        let live: Vec<&(i64, Option<Vec<u8>>)> =
            window.iter().filter(|(s, _)| *s >= new_low).collect();
        if live.len() as i64 > MAX_SCAN / 2 {
            for (slot, v) in live.iter().take((MAX_SCAN / 4) as usize) {
                let Some(item) = v.as_ref().filter(|b| !b.is_empty()) else {
                    continue;
                };
                if self.claim(&format!("claim:q:{queue}:{slot}:move"))? {
                    self.queue_push(queue, item)?;
                    self.queue_remove(queue, *slot)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the absent `slot` has been absent for [`HOLE_SECS`] (tracked in `q:<queue>:hole`).
    fn hole_expired(&self, queue: &str, slot: i64, now: Timestamp) -> Result<bool> {
        let key = format!("q:{queue}:hole");
        let seen = self.kv.get(&key)?.and_then(|b| {
            let t = String::from_utf8_lossy(&b).to_string();
            let (s, at) = t.split_once('@')?;
            Some((s.parse::<i64>().ok()?, at.parse::<i64>().ok()?))
        });
        match seen {
            Some((s, at)) if s == slot => Ok(now.unix() - at >= HOLE_SECS),
            _ => {
                self.kv
                    .set(&key, format!("{slot}@{}", now.unix()).as_bytes())?;
                Ok(false)
            }
        }
    }

    /// Adds a delivery job.
    pub fn job_push(&self, queue: &str, job: &Job) -> Result<i64> {
        self.queue_push(queue, &to_json(job)?)
    }

    /// Jobs of `queue` due at `now`, oldest first.
    pub fn jobs_due(&self, queue: &str, now: Timestamp, limit: usize) -> Result<Vec<(i64, Job)>> {
        let mut out = Vec::new();
        for (slot, bytes) in self.queue_scan(queue)? {
            if out.len() >= limit {
                break;
            }
            let job: Job = from_json(&keys::queue_slot(queue, slot), &bytes)?;
            if job.next_at <= now {
                out.push((slot, job));
            }
        }
        Ok(out)
    }

    /// Claims the next attempt of a job: true for exactly one caller per attempt number.
    pub fn job_claim_attempt(&self, queue: &str, slot: i64, job: &Job) -> Result<bool> {
        self.claim(&keys::attempt_claim(queue, slot, job.attempts + 1))
    }

    /// Records the result of an attempt the caller claimed: success removes the job; failure
    /// counts it and schedules the next attempt with [`backoff_secs`], or removes it after
    /// [`MAX_ATTEMPTS`]. Returns the job as updated, or `None` when removed.
    pub fn job_finish(
        &self,
        queue: &str,
        slot: i64,
        mut job: Job,
        result: std::result::Result<(), String>,
        now: Timestamp,
    ) -> Result<Option<Job>> {
        job.attempts += 1;
        match result {
            Ok(()) => {
                self.queue_remove(queue, slot)?;
                Ok(None)
            }
            Err(e) if job.attempts >= MAX_ATTEMPTS => {
                job.last_error = Some(e);
                self.queue_remove(queue, slot)?;
                Ok(None)
            }
            Err(e) => {
                job.last_error = Some(e);
                job.next_at = now.plus(backoff_secs(job.attempts));
                self.kv
                    .set(&keys::queue_slot(queue, slot), &to_json(&job)?)?;
                Ok(Some(job))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::example as directory;
    use crate::model::Decision;
    use serde_json::json;
    use std::sync::Arc;

    use crate::rules::tests::T0;

    fn new_pending(store: &Store<impl Kv>, id: &str, reqs: Vec<(&str, u32)>) -> ActionRecord {
        let r = crate::rules::tests::pending_record(id, reqs, None);
        store.create(&r).unwrap();
        r
    }

    fn vote(who: &str, decision: Decision, at: i64) -> Vote {
        Vote {
            approver: who.into(),
            decision,
            reason: None,
            channel: "api".into(),
            at: Timestamp(T0.0 + at),
        }
    }

    fn none(_: &mut ActionRecord) -> Result<()> {
        Ok(())
    }

    #[test]
    fn memory_kv_guards_counter_keys() {
        let kv = MemoryKv::new();
        kv.set("a", b"x").unwrap();
        assert!(kv.increment("a", 1).is_err());
        assert_eq!(kv.increment("ctr:x", 1).unwrap(), 1);
        assert_eq!(kv.increment("ctr:x", 0).unwrap(), 1);
        assert!(kv.set("ctr:x", b"y").is_err());
        assert!(kv.get("ctr:x").is_err());
        assert_eq!(
            kv.get_many(&["a".into(), "b".into()]).unwrap(),
            vec![Some(b"x".to_vec()), None]
        );
        kv.set_many(&[("b".into(), b"1".to_vec())]).unwrap();
        kv.delete("a").unwrap();
        assert_eq!(kv.get("a").unwrap(), None);
    }

    #[test]
    fn claims_are_exactly_once_across_threads() {
        let kv = Arc::new(MemoryKv::new());
        let winners: usize = (0..16)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    let s = Store::new(kv);
                    s.claim("claim:decide:x").unwrap() as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(winners, 1);
    }

    #[test]
    fn vote_flow_and_key_layout() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        let d = directory();
        new_pending(&s, "r1", vec![("security", 2)]);
        assert!(matches!(
            s.vote("r1", &d, &vote("bob", Decision::Approve, 1), none)
                .unwrap()
                .outcome,
            VoteOutcome::Recorded(_)
        ));
        assert!(matches!(
            s.vote("r1", &d, &vote("bob", Decision::Approve, 2), none)
                .unwrap()
                .outcome,
            VoteOutcome::Refused(Refusal {
                code: RefusalCode::Duplicate,
                ..
            })
        ));
        let loaded = s.load("r1").unwrap().unwrap();
        assert_eq!(loaded.votes.len(), 1);
        let out = s
            .vote("r1", &d, &vote("dave", Decision::Approve, 3), |r| {
                r.grant = Some("the-grant".into());
                Ok(())
            })
            .unwrap()
            .outcome;
        let VoteOutcome::Approved(r) = out else {
            panic!("{out:?}")
        };
        assert_eq!(r.approvers(), vec!["bob", "dave"]);
        let stored = s.load("r1").unwrap().unwrap();
        assert_eq!(stored.status, Status::Approved);
        assert_eq!(stored.grant.as_deref(), Some("the-grant"));
        assert_eq!(stored.votes.len(), 2);
        assert!(matches!(
            s.vote("r1", &d, &vote("erin", Decision::Deny, 4), none)
                .unwrap()
                .outcome,
            VoteOutcome::Refused(Refusal {
                code: RefusalCode::AlreadyDecided,
                ..
            })
        ));
        assert!(matches!(
            s.vote("nope", &d, &vote("bob", Decision::Approve, 1), none),
            Err(Error::NotFound(_))
        ));
        // Counter keys and set keys never mix (MemoryKv would have failed otherwise); check the names.
        for k in kv.keys() {
            assert!(
                k.starts_with("req:")
                    || k.starts_with("vote:")
                    || k.starts_with("ctr:")
                    || k.starts_with("claim:")
                    || k.starts_with("q:"),
                "{k}"
            );
        }
    }

    #[test]
    fn on_decide_failure_leaves_the_request_pending() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        let d = directory();
        new_pending(&s, "r1", vec![("dba", 1)]);
        let err = s.vote("r1", &d, &vote("bob", Decision::Approve, 1), |_| {
            Err(Error::Crypto("no key".into()))
        });
        assert!(err.is_err());
        assert_eq!(s.load("r1").unwrap().unwrap().status, Status::Pending);
        // The decision claim was not taken: another eligible vote can still decide.
        assert!(matches!(
            s.vote("r1", &d, &vote("carol", Decision::Approve, 2), none)
                .unwrap()
                .outcome,
            VoteOutcome::Approved(_)
        ));
    }

    #[test]
    fn concurrent_votes_yield_one_decision() {
        for quorum in [1, 2] {
            let kv = Arc::new(MemoryKv::new());
            let d = Arc::new(directory());
            let s = Store::new(kv.clone());
            new_pending(&s, "r1", vec![("security", quorum)]);
            let decisions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let handles: Vec<_> = (0..100)
                .map(|i| {
                    let (kv, d, decisions) = (kv.clone(), d.clone(), decisions.clone());
                    std::thread::spawn(move || {
                        let s = Store::new(kv);
                        let who = ["bob", "dave", "erin"][i % 3];
                        let v = vote(who, Decision::Approve, 1 + (i as i64 % 7));
                        let receipt = s
                            .vote("r1", &d, &v, |r| {
                                decisions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                r.grant = Some(format!("grant-{i}"));
                                Ok(())
                            })
                            .unwrap();
                        let approved = matches!(receipt.outcome, VoteOutcome::Approved(_));
                        assert!(!receipt.decided_here || approved);
                        receipt.decided_here.then(|| format!("grant-{i}"))
                    })
                })
                .collect();
            let winners: Vec<String> = handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect();
            let final_rec = s.load("r1").unwrap().unwrap();
            assert_eq!(final_rec.status, Status::Approved, "quorum {quorum}");
            // Exactly one caller made the transition, and the stored grant is its grant: one
            // decision, one grant, one callback.
            assert_eq!(winners.len(), 1, "quorum {quorum}");
            let grant = final_rec.grant.clone().unwrap();
            assert_eq!(grant, winners[0]);
            assert!(decisions.load(std::sync::atomic::Ordering::SeqCst) >= 1);
            // Each person counted once, however many times they clicked.
            let mut people: Vec<&str> = final_rec
                .votes
                .iter()
                .map(|v| v.approver.as_str())
                .collect();
            let n = people.len();
            people.dedup();
            assert_eq!(people.len(), n);
            assert!(final_rec.votes.len() >= quorum as usize);
            // The final record never changes afterwards.
            let again = s
                .vote("r1", &d, &vote("bob", Decision::Deny, 9), none)
                .unwrap()
                .outcome;
            assert!(matches!(again, VoteOutcome::Refused(_)));
            assert_eq!(s.load("r1").unwrap().unwrap().grant.unwrap(), grant);
        }
    }

    #[test]
    fn deny_and_approve_race_has_one_winner() {
        for round in 0..20 {
            let kv = Arc::new(MemoryKv::new());
            let d = Arc::new(directory());
            let s = Store::new(kv.clone());
            new_pending(&s, "r", vec![("security", 1)]);
            let hs: Vec<_> = [
                ("bob", Decision::Approve),
                ("dave", Decision::Deny),
                ("erin", Decision::Approve),
            ]
            .into_iter()
            .map(|(who, dec)| {
                let (kv, d) = (kv.clone(), d.clone());
                std::thread::spawn(move || {
                    Store::new(kv)
                        .vote("r", &d, &vote(who, dec, 1), none)
                        .unwrap()
                })
            })
            .collect();
            let receipts: Vec<VoteReceipt> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(
                receipts.iter().filter(|r| r.decided_here).count(),
                1,
                "round {round}"
            );
            let outs: Vec<VoteOutcome> = receipts.into_iter().map(|r| r.outcome).collect();
            let fin = s.load("r").unwrap().unwrap();
            assert!(
                fin.status == Status::Approved || fin.status == Status::Denied,
                "round {round}"
            );
            for o in outs {
                match (&o, fin.status) {
                    (VoteOutcome::Approved(_), Status::Approved)
                    | (VoteOutcome::Denied(_), Status::Denied) => {}
                    (VoteOutcome::Refused(_), _) | (VoteOutcome::Recorded(_), _) => {}
                    _ => panic!("outcome {o:?} contradicts final status {}", fin.status),
                }
            }
        }
    }

    #[test]
    fn expiry_is_claimed_once_and_reads_fail_closed() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        let d = directory();
        new_pending(&s, "r1", vec![("dba", 1)]);
        new_pending(&s, "r2", vec![("dba", 1)]);
        assert!(matches!(
            s.expire("r1", Timestamp(T0.0 + 10), none).unwrap(),
            Transition::NotDue(_)
        ));
        // Past expires_at, before any sweep: the view says expired and votes are refused.
        let late = Timestamp(T0.0 + 901);
        let rec = s.load("r1").unwrap().unwrap();
        assert_eq!(rec.view(late, false)["status"], "expired");
        assert!(matches!(
            s.vote("r1", &d, &vote("bob", Decision::Approve, 901), none)
                .unwrap()
                .outcome,
            VoteOutcome::Refused(Refusal {
                code: RefusalCode::Expired,
                ..
            })
        ));
        assert_eq!(s.pending(late, 10).unwrap().len(), 0);
        assert_eq!(s.pending(T0, 10).unwrap().len(), 2);
        // Sweep: each overdue request is won exactly once.
        let won = s.sweep_pending(late, none).unwrap();
        assert_eq!(
            won.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["r1", "r2"]
        );
        assert!(won
            .iter()
            .all(|r| r.status == Status::Expired && r.decided_at == r.expires_at));
        assert!(s.sweep_pending(late, none).unwrap().is_empty());
        assert!(matches!(
            s.expire("r1", late, none).unwrap(),
            Transition::AlreadyFinal(_)
        ));
        assert_eq!(
            s.load("r1").unwrap().unwrap().view(late, false)["status"],
            "expired"
        );
        // The index is emptied and its low mark moved past both slots.
        assert!(s.queue_scan(PENDING_QUEUE).unwrap().is_empty());
        assert_eq!(kv.get("q:pending:low").unwrap().as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn concurrent_sweeps_expire_once() {
        let kv = Arc::new(MemoryKv::new());
        let s = Store::new(kv.clone());
        for i in 0..10 {
            new_pending(&s, &format!("r{i}"), vec![("dba", 1)]);
        }
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    Store::new(kv)
                        .sweep_pending(Timestamp(T0.0 + 1000), none)
                        .unwrap()
                        .len()
                })
            })
            .collect();
        let total: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn reviews_list_what_an_approver_may_vote_on() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        let d = directory();
        new_pending(&s, "a", vec![("dba", 1)]);
        new_pending(&s, "b", vec![("security", 2)]);
        new_pending(&s, "c", vec![("sre", 1)]);
        let ids = |who: &str| {
            s.reviews(&d, who, T0, 50)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("bob"), vec!["a", "b"]);
        assert_eq!(ids("carol"), vec!["a", "c"]);
        assert_eq!(
            ids("alice"),
            Vec::<String>::new(),
            "the owner of etl-bot reviews none of its requests"
        );
        s.vote("b", &d, &vote("bob", Decision::Approve, 1), none)
            .unwrap();
        assert_eq!(ids("bob"), vec!["a"], "already voted on b");
        assert_eq!(ids("dave"), vec!["b", "c"]);
        assert_eq!(s.reviews(&d, "dave", T0, 1).unwrap().len(), 1);
        s.vote("a", &d, &vote("bob", Decision::Approve, 2), none)
            .unwrap();
        assert_eq!(ids("carol"), vec!["c"]);
        // A decided request leaves the index at the next sweep.
        s.sweep_pending(Timestamp(T0.0 + 10), none).unwrap();
        assert_eq!(s.queue_scan(PENDING_QUEUE).unwrap().len(), 2);
    }

    #[test]
    fn idempotency() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        let IdemBegin::New { request_id } = s.idempotency_begin("etl-bot", "k1", "h1", T0).unwrap()
        else {
            panic!()
        };
        assert!(request_id.starts_with("req_"));
        // Same key while the first is still running.
        assert_eq!(
            s.idempotency_begin("etl-bot", "k1", "h1", T0).unwrap(),
            IdemBegin::InProgress
        );
        assert_eq!(
            s.idempotency_begin("etl-bot", "k1", "h2", T0).unwrap(),
            IdemBegin::Conflict
        );
        let answer = IdemAnswer {
            status: 202,
            body: json!({"id": request_id, "status": "pending"}),
        };
        s.idempotency_finish("etl-bot", "k1", "h1", &request_id, T0, answer.clone())
            .unwrap();
        assert_eq!(
            s.idempotency_begin("etl-bot", "k1", "h1", T0).unwrap(),
            IdemBegin::Replay(answer)
        );
        assert_eq!(
            s.idempotency_begin("etl-bot", "k1", "h2", T0).unwrap(),
            IdemBegin::Conflict
        );
        // Keys are per agent.
        assert!(matches!(
            s.idempotency_begin("ops-bot", "k1", "h2", T0).unwrap(),
            IdemBegin::New { .. }
        ));
        // A reservation whose handler died is taken over once, with the same request id.
        let IdemBegin::New { request_id: r2 } =
            s.idempotency_begin("etl-bot", "k2", "h", T0).unwrap()
        else {
            panic!()
        };
        let later = Timestamp(T0.0 + IDEM_STALE_SECS + 1);
        assert_eq!(
            s.idempotency_begin("etl-bot", "k2", "h", later).unwrap(),
            IdemBegin::New {
                request_id: r2.clone()
            }
        );
        assert_eq!(
            s.idempotency_begin("etl-bot", "k2", "h", later).unwrap(),
            IdemBegin::InProgress
        );
    }

    #[test]
    fn released_keys_are_handled_afresh() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        let new_id = |b: IdemBegin| match b {
            IdemBegin::New { request_id } => request_id,
            other => panic!("expected New, got {other:?}"),
        };
        let r1 = new_id(s.idempotency_begin("a", "k", "h1", T0).unwrap());
        // Someone else's release (not the holder's id) changes nothing.
        s.idempotency_release("a", "k", "req_other").unwrap();
        assert_eq!(
            s.idempotency_begin("a", "k", "h1", T0).unwrap(),
            IdemBegin::InProgress
        );
        // The holder gives up: the next request takes over at once, with a fresh id.
        s.idempotency_release("a", "k", &r1).unwrap();
        let r2 = new_id(s.idempotency_begin("a", "k", "h1", T0).unwrap());
        assert_ne!(r1, r2);
        assert_eq!(
            s.idempotency_begin("a", "k", "h1", T0).unwrap(),
            IdemBegin::InProgress
        );
        assert_eq!(
            s.idempotency_begin("a", "k", "h2", T0).unwrap(),
            IdemBegin::Conflict
        );
        // Released twice in the same second: each release opens its own generation.
        s.idempotency_release("a", "k", &r2).unwrap();
        // Nothing was stored for the first body, so another body may use the key now.
        let r3 = new_id(s.idempotency_begin("a", "k", "h2", T0).unwrap());
        s.idempotency_release("a", "k", &r3).unwrap();
        let r4 = new_id(s.idempotency_begin("a", "k", "h1", T0).unwrap());
        let answer = IdemAnswer {
            status: 200,
            body: json!({"id": r4}),
        };
        s.idempotency_finish("a", "k", "h1", &r4, T0, answer.clone())
            .unwrap();
        // An answered key is never released.
        s.idempotency_release("a", "k", &r4).unwrap();
        assert_eq!(
            s.idempotency_begin("a", "k", "h1", T0).unwrap(),
            IdemBegin::Replay(answer)
        );
        assert_eq!(
            s.idempotency_begin("a", "k", "h2", T0).unwrap(),
            IdemBegin::Conflict
        );
        // Concurrent takers of a released key: exactly one owner.
        let kv = Arc::new(MemoryKv::new());
        let r = new_id(
            Store::new(kv.clone())
                .idempotency_begin("a", "k", "h", T0)
                .unwrap(),
        );
        Store::new(kv.clone())
            .idempotency_release("a", "k", &r)
            .unwrap();
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    Store::new(kv).idempotency_begin("a", "k", "h", T0).unwrap()
                })
            })
            .collect();
        let news = hs
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|b| matches!(b, IdemBegin::New { .. }))
            .count();
        assert_eq!(news, 1);
    }

    #[test]
    fn concurrent_idempotent_requests_have_one_owner() {
        let kv = Arc::new(MemoryKv::new());
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    Store::new(kv).idempotency_begin("a", "k", "h", T0).unwrap()
                })
            })
            .collect();
        let news = hs
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|b| matches!(b, IdemBegin::New { .. }))
            .count();
        assert_eq!(news, 1);
    }

    #[test]
    fn grants_are_consumed_once() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        assert!(s.consume_grant("g_1").unwrap());
        assert!(!s.consume_grant("g_1").unwrap());
        assert!(s.consume_grant("g_2").unwrap());
    }

    #[test]
    fn job_queue_with_backoff() {
        let kv = MemoryKv::new();
        let s = Store::new(&kv);
        let job = Job {
            kind: "callback".into(),
            request_id: "r1".into(),
            attempts: 0,
            next_at: T0,
            last_error: None,
            payload: json!({"url":"https://a/"}),
        };
        let slot = s.job_push("callbacks", &job).unwrap();
        let due = s.jobs_due("callbacks", T0, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert!(s.job_claim_attempt("callbacks", slot, &due[0].1).unwrap());
        assert!(
            !s.job_claim_attempt("callbacks", slot, &due[0].1).unwrap(),
            "attempt 1 runs once"
        );
        let j = s
            .job_finish("callbacks", slot, due[0].1.clone(), Err("503".into()), T0)
            .unwrap()
            .unwrap();
        assert_eq!((j.attempts, j.next_at), (1, Timestamp(T0.0 + 5)));
        assert!(s.jobs_due("callbacks", T0, 10).unwrap().is_empty());
        let (slot, j) = s
            .jobs_due("callbacks", Timestamp(T0.0 + 5), 10)
            .unwrap()
            .remove(0);
        assert!(s.job_claim_attempt("callbacks", slot, &j).unwrap());
        assert!(s
            .job_finish("callbacks", slot, j, Ok(()), T0)
            .unwrap()
            .is_none());
        assert!(s
            .jobs_due("callbacks", Timestamp(T0.0 + 99_999), 10)
            .unwrap()
            .is_empty());
        // Gives up after MAX_ATTEMPTS.
        let mut j = job.clone();
        j.attempts = MAX_ATTEMPTS - 1;
        let slot = s.job_push("callbacks", &j).unwrap();
        assert!(s
            .job_finish("callbacks", slot, j, Err("x".into()), T0)
            .unwrap()
            .is_none());
        assert_eq!(
            (
                backoff_secs(1),
                backoff_secs(2),
                backoff_secs(3),
                backoff_secs(30)
            ),
            (5, 10, 20, 3600)
        );
    }
}
