//! The audit trail: signed, hash-chained records, appended exactly once per sequence number,
//! and a verifier for NDJSON exports.
//!
//! A record is `{"seq","ts","type","request_id","actor","data","prev","hash","sig","kid"}`:
//! `hash` = hex SHA-256 of the RFC 8785 canonical JSON of the record without `hash` and `sig`;
//! `prev` = the previous record's `hash` (64 zeros for seq 1); `sig` = base64url Ed25519
//! signature over the 32 bytes of `hash`.
//!
//! Appending under concurrency (several component instances, several hosts) never waits for
//! another appender: a call claims a run of sequence numbers with one `increment(ctr:audit, n)`,
//! claims each number's entry slot (`claim:audit:entry:<seq>`) and writes its events as entries
//! (`audit:entry:<seq>`, one batch write). It then seals: from the first unsealed number, while
//! that number's entry is there, it wins `claim:audit:<seq>`, writes the signed record
//! `audit:<seq>` (its `prev` is the record before) and moves on. A sealer that loses a claim
//! stops: the winner carries on after writing, and sees every entry written before it looked,
//! so no entry is left behind by a race. An entry is durable once written; the record follows
//! at once in the common case. Sealed entries are deleted sixteen numbers at a time.
//!
//! Repairs ([`AuditLog::recover`], run by the sweep): when the first unsealed number stays
//! stuck past the gap timeout, either its appender died between claiming the number and
//! writing the entry (the number gets an `audit.gap` record) or its sealer died (the entry is
//! sealed again: sealing is deterministic, so a late original writes the same bytes). Readers
//! return the contiguous sealed prefix only, so an export never shows a hole.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canon::{b64url, b64url_decode, jcs, sha256};
use crate::crypto::{KeySet, SigningKey};
use crate::error::{Error, Result};
use crate::store::Kv;
use crate::time::Timestamp;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The counter allocating sequence numbers.
pub const SEQ_KEY: &str = "ctr:audit";
/// Type of the record that fills a sequence number whose appender died.
pub const GAP_TYPE: &str = "audit.gap";

pub fn record_key(seq: u64) -> String {
    format!("audit:{seq}")
}

pub fn claim_key(seq: u64) -> String {
    format!("claim:audit:{seq}")
}

/// What a component asks the audit component to append (`POST /internal/append`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub request_id: Option<String>,
    pub actor: String,
    #[serde(default)]
    pub data: Value,
}

impl AuditEvent {
    pub fn new(type_: &str, request_id: Option<&str>, actor: &str, data: Value) -> AuditEvent {
        AuditEvent {
            type_: type_.into(),
            request_id: request_id.map(str::to_string),
            actor: actor.into(),
            data,
        }
    }

    /// `type`: 1 to 64 of `a-z 0-9 . _`; `actor` 1 to 256 bytes.
    pub fn validate(&self) -> Result<()> {
        if self.type_.is_empty()
            || self.type_.len() > 64
            || !self
                .type_
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'_')
        {
            return Err(Error::invalid("type", "must be 1 to 64 of a-z 0-9 . _"));
        }
        if self.actor.is_empty() || self.actor.len() > 256 {
            return Err(Error::invalid("actor", "must be 1 to 256 bytes"));
        }
        Ok(())
    }
}

/// One record of the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub ts: Timestamp,
    #[serde(rename = "type")]
    pub type_: String,
    pub request_id: Option<String>,
    pub actor: String,
    pub data: Value,
    pub prev: String,
    pub hash: String,
    pub sig: String,
    pub kid: String,
}

#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    ts: Timestamp,
    #[serde(rename = "type")]
    type_: &'a str,
    request_id: &'a Option<String>,
    actor: &'a str,
    data: &'a Value,
    prev: &'a str,
    kid: &'a str,
}

impl AuditRecord {
    /// SHA-256 of the canonical JSON of this record without `hash` and `sig`.
    pub fn compute_hash(&self) -> Result<[u8; 32]> {
        let u = Unsealed {
            seq: self.seq,
            ts: self.ts,
            type_: &self.type_,
            request_id: &self.request_id,
            actor: &self.actor,
            data: &self.data,
            prev: &self.prev,
            kid: &self.kid,
        };
        Ok(sha256(&jcs(&u)?))
    }

    /// One NDJSON line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("audit record serializes")
    }
}

/// Seals `event` as record `seq` after `prev`, signed by `key`.
pub fn seal(
    event: &AuditEvent,
    seq: u64,
    ts: Timestamp,
    prev: &str,
    key: &SigningKey,
) -> Result<AuditRecord> {
    let mut r = AuditRecord {
        seq,
        ts,
        type_: event.type_.clone(),
        request_id: event.request_id.clone(),
        actor: event.actor.clone(),
        data: event.data.clone(),
        prev: prev.to_string(),
        hash: String::new(),
        sig: String::new(),
        kid: key.kid().to_string(),
    };
    let h = r.compute_hash()?;
    r.hash = hex::encode(h);
    r.sig = b64url(&key.sign(&h));
    Ok(r)
}

/// The signed head of `GET /v1/audit/head`: `sig` = base64url Ed25519 over the canonical JSON
/// of `{"seq","hash","ts","kid"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub ts: Timestamp,
    pub kid: String,
    pub sig: String,
}

#[derive(Serialize)]
struct HeadBody<'a> {
    seq: u64,
    hash: &'a str,
    ts: Timestamp,
    kid: &'a str,
}

impl Head {
    pub fn sign(seq: u64, hash: &str, ts: Timestamp, key: &SigningKey) -> Result<Head> {
        let body = jcs(&HeadBody {
            seq,
            hash,
            ts,
            kid: key.kid(),
        })?;
        Ok(Head {
            seq,
            hash: hash.into(),
            ts,
            kid: key.kid().into(),
            sig: b64url(&key.sign(&body)),
        })
    }

    pub fn verify(&self, keys: &KeySet) -> Result<()> {
        let key = keys
            .get(&self.kid)
            .ok_or_else(|| Error::Unauthorized("head signed by an unknown key".into()))?;
        let body = jcs(&HeadBody {
            seq: self.seq,
            hash: &self.hash,
            ts: self.ts,
            kid: &self.kid,
        })?;
        let sig = b64url_decode(&self.sig)
            .map_err(|_| Error::Unauthorized("bad head signature".into()))?;
        if key.verify(&body, &sig) {
            Ok(())
        } else {
            Err(Error::Unauthorized("bad head signature".into()))
        }
    }
}

/// An appended event waiting to be sealed: `audit:entry:<seq>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    ts: Timestamp,
    #[serde(flatten)]
    event: AuditEvent,
}

/// `audit:sealed`: a hint of the last sealed number (it may lag or even step back when two
/// sealers write it out of order; readers scan forward from it).
const SEALED_KEY: &str = "audit:sealed";

/// Sealed entries are deleted in chunks of this many numbers (see [`AuditLog::advance`]).
const ENTRY_CHUNK: u64 = 16;

/// Keys read at once when scanning for records or entries: the first read, and the most
/// (each further read doubles it). Every key read costs the store a lookup, and a scan
/// usually ends within a few.
const READ_WINDOW: u64 = 4;
const MAX_READ_WINDOW: u64 = 32;

pub fn entry_key(seq: u64) -> String {
    format!("audit:entry:{seq}")
}

fn entry_claim_key(seq: u64) -> String {
    format!("claim:audit:entry:{seq}")
}

/// The `hash` of a stored record, without reading the rest of it into memory.
fn record_hash(seq: u64, bytes: &[u8]) -> Result<String> {
    #[derive(Deserialize)]
    struct HashOnly {
        hash: String,
    }
    serde_json::from_slice::<HashOnly>(bytes)
        .map(|r| r.hash)
        .map_err(|e| Error::Store(format!("audit record {seq} unreadable: {e}")))
}

/// The trail over a [`Kv`].
pub struct AuditLog<K: Kv> {
    kv: K,
    gap_timeout: Duration,
}

impl<K: Kv> AuditLog<K> {
    pub fn new(kv: K) -> AuditLog<K> {
        AuditLog {
            kv,
            gap_timeout: Duration::from_secs(10),
        }
    }

    /// How long the first unsealed number may stay stuck (its appender or sealer died) before
    /// [`AuditLog::recover`] repairs it (default 10 s).
    pub fn with_gap_timeout(mut self, t: Duration) -> AuditLog<K> {
        self.gap_timeout = t;
        self
    }

    fn get(&self, seq: u64) -> Result<Option<AuditRecord>> {
        let key = record_key(seq);
        match self.kv.get(&key)? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Store(format!("{key} holds unreadable data: {e}"))),
            None => Ok(None),
        }
    }

    fn claim(&self, key: &str) -> Result<bool> {
        Ok(self.kv.increment(key, 1)? == 1)
    }

    /// Appends `event` at `now`; returns its sequence number.
    pub fn append(&self, event: &AuditEvent, now: Timestamp, key: &SigningKey) -> Result<u64> {
        Ok(self.append_all(std::slice::from_ref(event), now, key)?[0])
    }

    /// Appends `events` in order at `now` with one sequence-number claim, and seals what it can;
    /// returns their sequence numbers. Once this returns the events are durable and will be
    /// sealed in this order (by this call, a concurrent one, or [`AuditLog::recover`]).
    pub fn append_all(
        &self,
        events: &[AuditEvent],
        now: Timestamp,
        key: &SigningKey,
    ) -> Result<Vec<u64>> {
        let seqs = self.write_all(events, now)?;
        // Sealing is shared work: a failure here leaves it to the next appender or the sweep.
        if let Err(e) = self.advance(key) {
            eprintln!("countersign: audit sealing deferred: {e}");
        }
        Ok(seqs)
    }

    /// Writes `events` in order at `now` as entries, with one sequence-number claim, without
    /// sealing them; returns their sequence numbers. Once this returns the events are durable
    /// and will be sealed in this order by the next [`AuditLog::advance`] (an append's, a
    /// reader's) or [`AuditLog::recover`].
    pub fn write_all(&self, events: &[AuditEvent], now: Timestamp) -> Result<Vec<u64>> {
        for e in events {
            e.validate()?;
        }
        let mut seqs = Vec::with_capacity(events.len());
        let mut todo: Vec<&AuditEvent> = events.iter().collect();
        for _ in 0..8 {
            if todo.is_empty() {
                break;
            }
            let n = todo.len() as i64;
            let last = self.kv.increment(SEQ_KEY, n)?;
            let first = u64::try_from(last - n + 1)
                .map_err(|_| Error::Store("audit counter is negative".into()))?;
            let mut items = Vec::with_capacity(todo.len());
            let mut lost = Vec::new();
            for (i, e) in todo.iter().enumerate() {
                let seq = first + i as u64;
                // Lost only to a gap filler (we stalled past the gap timeout): renumber it.
                if !self.claim(&entry_claim_key(seq))? {
                    lost.push(*e);
                    continue;
                }
                let entry = Entry {
                    ts: now,
                    event: (*e).clone(),
                };
                let bytes = serde_json::to_vec(&entry).map_err(|e| Error::Store(e.to_string()))?;
                items.push((entry_key(seq), bytes));
                seqs.push(seq);
            }
            self.kv.set_many(&items)?;
            todo = lost;
        }
        if !todo.is_empty() {
            return Err(Error::Store("could not append to the audit trail".into()));
        }
        Ok(seqs)
    }

    /// The first unsealed number and the hash before it.
    fn frontier(&self) -> Result<(u64, String)> {
        let hint = self
            .kv
            .get(SEALED_KEY)?
            .and_then(|b| String::from_utf8(b).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let (mut seq, mut prev) = match hint {
            0 => (0, GENESIS.to_string()),
            h => match self.kv.get(&record_key(h))? {
                Some(b) => (h, record_hash(h, &b)?),
                // A hint without its record (damaged store): scan from the start.
                None => (0, GENESIS.to_string()),
            },
        };
        // The hint lags by about one run, so a few reads usually find the end; the window
        // grows when they do not (a long way behind, or a scan from the start).
        let mut window = READ_WINDOW;
        loop {
            let ks: Vec<String> = (seq + 1..=seq + window).map(record_key).collect();
            for v in self.kv.get_many(&ks)? {
                let Some(b) = v else {
                    return Ok((seq + 1, prev));
                };
                prev = record_hash(seq + 1, &b)?;
                seq += 1;
            }
            window = (window * 2).min(MAX_READ_WINDOW);
        }
    }

    /// Seals entries in order from the first unsealed number while they are present and
    /// unclaimed by another sealer (who then carries on); returns the first unsealed number.
    /// Records are written in one batch per run; after writing, the next entry is looked at
    /// again, so an entry written while this sealer worked is never left behind.
    pub fn advance(&self, key: &SigningKey) -> Result<u64> {
        let (mut seq, mut prev) = self.frontier()?;
        // Entries waiting are usually one or two appends' worth: read a few, more while every
        // one read was there.
        let mut window = READ_WINDOW;
        loop {
            let ks: Vec<String> = (seq..seq + window).map(entry_key).collect();
            let values = self.kv.get_many(&ks)?;
            let full = values.iter().all(Option::is_some);
            window = if full {
                (window * 2).min(MAX_READ_WINDOW)
            } else {
                READ_WINDOW
            };
            let mut records = Vec::new();
            let mut lost_claim = false;
            for v in values {
                let Some(bytes) = v else { break };
                if !self.claim(&claim_key(seq))? {
                    lost_claim = true;
                    break;
                }
                let entry: Entry = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Store(format!("audit entry {seq} unreadable: {e}")))?;
                let rec = seal(&entry.event, seq, entry.ts, &prev, key)?;
                prev = rec.hash.clone();
                records.push((record_key(seq), rec.to_line().into_bytes()));
                seq += 1;
            }
            if records.is_empty() {
                return Ok(seq);
            }
            // The hint names the record before this run, which is written already, so it
            // can go in the same batch even where a batch is not atomic.
            let first = seq - records.len() as u64;
            if first > 1 {
                records.push((SEALED_KEY.to_string(), (first - 1).to_string().into_bytes()));
            }
            self.kv.set_many(&records)?;
            // Entries below the frontier are never read again: they go a chunk at a time,
            // when this run seals a chunk's last number, to spare a write per append.
            let done: Vec<String> = (first..seq)
                .filter(|s| s % ENTRY_CHUNK == 0)
                .flat_map(|s| (s + 1 - ENTRY_CHUNK..=s).map(entry_key))
                .collect();
            self.kv.delete_many(&done)?;
            if lost_claim {
                return Ok(seq);
            }
        }
    }

    fn entry(&self, seq: u64) -> Result<Option<Entry>> {
        match self.kv.get(&entry_key(seq))? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Store(format!("audit entry {seq} unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// Writes record `seq` of `entry` after `prev` (a repair). Deterministic (Ed25519
    /// signatures are), so a late original sealer writes the same bytes.
    fn seal_entry(&self, seq: u64, entry: &Entry, prev: &str, key: &SigningKey) -> Result<()> {
        let rec = seal(&entry.event, seq, entry.ts, prev, key)?;
        self.kv.set(&record_key(seq), rec.to_line().as_bytes())?;
        self.kv.set(SEALED_KEY, seq.to_string().as_bytes())?;
        self.kv.delete(&entry_key(seq))
    }

    /// Repairs a chain stuck at its first unsealed number (the sweep calls this), when what
    /// waits behind it has waited for the gap timeout: a number claimed but never written gets
    /// an `audit.gap` record, an entry whose sealer died is sealed again. The wait is read from
    /// the entries themselves (the stuck one's, or the first later one's `ts`: that number was
    /// claimed before it), so one sweep repairs every old hole in a row. Returns the first
    /// unsealed number.
    pub fn recover(&self, now: Timestamp, key: &SigningKey) -> Result<u64> {
        for _ in 0..1000 {
            let seq = self.advance(key)?;
            let ks: Vec<String> = (seq..seq + 32).map(entry_key).collect();
            let waiting = self.kv.get_many(&ks)?;
            let oldest = waiting
                .iter()
                .flatten()
                .find_map(|b| serde_json::from_slice::<Entry>(b).ok().map(|e| e.ts));
            let Some(since) = oldest else {
                // Nothing waits behind this number: nothing to repair.
                return Ok(seq);
            };
            if now.unix() - since.unix() < self.gap_timeout.as_secs() as i64 {
                return Ok(seq);
            }
            // `prev` must be the hash before `seq`: if another sweep moved the chain on
            // meanwhile, look again rather than write `seq` after the wrong record.
            let (at, prev) = self.frontier()?;
            if at != seq {
                continue;
            }
            let entry = match self.entry(seq)? {
                Some(e) => e,
                None => {
                    // The appender claimed the number but died before writing it: one filler
                    // (the entry claim, or the refill claim when the appender won that).
                    let mine = self.claim(&entry_claim_key(seq))?
                        || self.claim(&format!("{}:refill", entry_claim_key(seq)))?;
                    if !mine {
                        return Ok(seq);
                    }
                    // A sealer holds this number only after seeing its entry: the entry was
                    // written after all and is sealed (or being sealed), so no gap goes there.
                    if !self.claim(&claim_key(seq))? {
                        continue;
                    }
                    Entry {
                        ts: now,
                        event: AuditEvent::new(
                            GAP_TYPE,
                            None,
                            "countersign",
                            serde_json::json!({"reason": "sequence number claimed but not written in time"}),
                        ),
                    }
                }
            };
            self.seal_entry(seq, &entry, &prev, key)?;
        }
        self.advance(key)
    }

    /// Records after `after`, at most `limit`, stopping at the first one not written yet.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let last = u64::try_from(self.kv.increment(SEQ_KEY, 0)?).unwrap_or(0);
        let mut out = Vec::new();
        let mut seq = after + 1;
        while seq <= last && out.len() < limit {
            let upto = (seq + 99)
                .min(last)
                .min(seq + (limit - out.len()) as u64 - 1);
            let ks: Vec<String> = (seq..=upto).map(record_key).collect();
            for (k, v) in ks.iter().zip(self.kv.get_many(&ks)?) {
                let Some(b) = v else { return Ok(out) };
                out.push(
                    serde_json::from_slice(&b)
                        .map_err(|e| Error::Store(format!("{k} holds unreadable data: {e}")))?,
                );
            }
            seq = upto + 1;
        }
        Ok(out)
    }

    /// The last sealed record.
    pub fn last(&self) -> Result<Option<AuditRecord>> {
        match self.frontier()?.0 {
            1 => Ok(None),
            next => self.get(next - 1),
        }
    }

    /// `GET /v1/audit/head`: the last record's seq and hash, signed (seq 0 and [`GENESIS`]
    /// when the trail is empty).
    pub fn head(&self, now: Timestamp, key: &SigningKey) -> Result<Head> {
        match self.last()? {
            Some(r) => Head::sign(r.seq, &r.hash, now, key),
            None => Head::sign(0, GENESIS, now, key),
        }
    }
}

/// How a record is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// Not a record (bad JSON, missing fields, cut-off line).
    Malformed,
    /// Its content does not match its `hash` (changed after sealing).
    Edited,
    /// Its signature does not verify.
    BadSignature,
    /// Signed under a `kid` not in the JWKS.
    UnknownKey,
    /// The record(s) before it are missing (deleted).
    Missing,
    /// Sequence numbers out of order (moved).
    Reordered,
    /// `prev` is not the previous record's hash.
    ChainBroken,
    /// The export ends before the expected head (cut off).
    Truncated,
}

/// The first broken record of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broken {
    /// 1-based line number in the file.
    pub line: usize,
    /// The record's `seq`, when readable.
    pub seq: Option<u64>,
    pub kind: BreakKind,
    pub detail: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(
                f,
                "line {} (seq {}): {:?}: {}",
                self.line, s, self.kind, self.detail
            ),
            None => write!(f, "line {}: {:?}: {}", self.line, self.kind, self.detail),
        }
    }
}

/// The result of [`verify_export`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Records checked and found good (before the first broken one).
    pub verified: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// False when the export starts after seq 1, so its first `prev` could not be checked.
    pub anchored: bool,
    pub broken: Option<Broken>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Options of [`verify_export`].
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// (seq, hash) of the trail's head, e.g. from a signed `GET /v1/audit/head`: an export that
    /// stops before it is reported as truncated.
    pub expected_head: Option<(u64, &'a str)>,
    /// Accept an export that starts after seq 1 (`GET /v1/audit?after=N`); its first `prev`
    /// cannot be checked (the report says `anchored: false`). Off by default: a full export
    /// must start at seq 1 from [`GENESIS`], so deleting the first records is caught.
    pub allow_partial: bool,
}

/// Verifies an NDJSON export (`GET /v1/audit`) offline against the JWKS keys and names the
/// first broken record.
pub fn verify_export(ndjson: &str, keys: &KeySet, opts: VerifyOptions<'_>) -> Report {
    let expected_head = opts.expected_head;
    let mut report = Report {
        verified: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        anchored: true,
        broken: None,
    };
    let lines: Vec<(usize, &str)> = ndjson
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    // Sequence numbers present anywhere, to tell a moved record from a deleted one.
    let all_seqs: Vec<Option<u64>> = lines
        .iter()
        .map(|(_, l)| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
        })
        .collect();
    let mut prev_hash: Option<String> = None;
    let mut expected_seq: Option<u64> = None;
    for (idx, (line, text)) in lines.iter().enumerate() {
        let fail = |kind, seq, detail: String| Broken {
            line: *line,
            seq,
            kind,
            detail,
        };
        let rec: AuditRecord = match parse_record(text) {
            Ok(r) => r,
            Err(m) => {
                report.broken = Some(fail(BreakKind::Malformed, all_seqs[idx], m));
                return report;
            }
        };
        let seq = Some(rec.seq);
        let Ok(hash_bytes) = rec.compute_hash() else {
            report.broken = Some(fail(
                BreakKind::Malformed,
                seq,
                "cannot canonicalize".into(),
            ));
            return report;
        };
        if hex::encode(hash_bytes) != rec.hash {
            report.broken = Some(fail(
                BreakKind::Edited,
                seq,
                "content does not match its hash".into(),
            ));
            return report;
        }
        let Some(key) = keys.get(&rec.kid) else {
            report.broken = Some(fail(
                BreakKind::UnknownKey,
                seq,
                format!("kid {} is not in the JWKS", rec.kid),
            ));
            return report;
        };
        let sig_ok = b64url_decode(&rec.sig)
            .map(|s| key.verify(&hash_bytes, &s))
            .unwrap_or(false);
        if !sig_ok {
            report.broken = Some(fail(
                BreakKind::BadSignature,
                seq,
                "signature does not verify".into(),
            ));
            return report;
        }
        match expected_seq {
            None => {
                if rec.seq == 1 {
                    if rec.prev != GENESIS {
                        report.broken = Some(fail(
                            BreakKind::ChainBroken,
                            seq,
                            "the first record must follow 64 zeros".into(),
                        ));
                        return report;
                    }
                } else if all_seqs[idx + 1..]
                    .iter()
                    .any(|s| s.is_some_and(|s| s < rec.seq))
                {
                    report.broken = Some(fail(
                        BreakKind::Reordered,
                        seq,
                        "an earlier record follows it".into(),
                    ));
                    return report;
                } else if opts.allow_partial {
                    report.anchored = false;
                } else {
                    let detail = if rec.seq == 2 {
                        "record 1 is missing before it".to_string()
                    } else {
                        format!("records 1 to {} are missing before it", rec.seq - 1)
                    };
                    report.broken = Some(fail(BreakKind::Missing, seq, detail));
                    return report;
                }
                report.first_seq = seq;
            }
            Some(exp) if rec.seq != exp => {
                let kind = if rec.seq < exp || all_seqs[idx + 1..].contains(&Some(exp)) {
                    BreakKind::Reordered
                } else {
                    BreakKind::Missing
                };
                let detail = match kind {
                    BreakKind::Missing if rec.seq == exp + 1 => {
                        format!("record {exp} is missing before it")
                    }
                    BreakKind::Missing => {
                        format!("records {exp} to {} are missing before it", rec.seq - 1)
                    }
                    _ => format!("expected seq {exp} here, found {}", rec.seq),
                };
                report.broken = Some(fail(kind, seq, detail));
                return report;
            }
            Some(_) => {
                if prev_hash.as_deref() != Some(rec.prev.as_str()) {
                    report.broken = Some(fail(
                        BreakKind::ChainBroken,
                        seq,
                        "prev is not the previous record's hash".into(),
                    ));
                    return report;
                }
            }
        }
        prev_hash = Some(rec.hash.clone());
        expected_seq = Some(rec.seq + 1);
        report.verified += 1;
        report.last_seq = seq;
        report.last_hash = Some(rec.hash);
    }
    if let Some((head_seq, head_hash)) = expected_head {
        let last_line = lines.last().map(|(l, _)| *l).unwrap_or(0);
        match report.last_seq {
            Some(s) if s == head_seq && report.last_hash.as_deref() == Some(head_hash) => {}
            Some(s) if s < head_seq => {
                report.broken = Some(Broken {
                    line: last_line + 1,
                    seq: Some(s + 1),
                    kind: BreakKind::Truncated,
                    detail: format!("the export ends at seq {s}, the head is {head_seq}"),
                });
            }
            None if head_seq > 0 => {
                report.broken = Some(Broken {
                    line: 1,
                    seq: Some(1),
                    kind: BreakKind::Truncated,
                    detail: format!("the export is empty, the head is {head_seq}"),
                });
            }
            None => {}
            Some(s) => {
                report.broken = Some(Broken {
                    line: last_line,
                    seq: Some(s),
                    kind: BreakKind::ChainBroken,
                    detail: "the last record does not match the signed head".into(),
                });
            }
        }
    }
    report
}

fn parse_record(text: &str) -> std::result::Result<AuditRecord, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    for f in [
        "seq",
        "ts",
        "type",
        "request_id",
        "actor",
        "data",
        "prev",
        "hash",
        "sig",
        "kid",
    ] {
        if !obj.contains_key(f) {
            return Err(format!("missing field {f}"));
        }
    }
    if let Some(extra) = obj.keys().find(|k| {
        !matches!(
            k.as_str(),
            "seq"
                | "ts"
                | "type"
                | "request_id"
                | "actor"
                | "data"
                | "prev"
                | "hash"
                | "sig"
                | "kid"
        )
    }) {
        return Err(format!("unexpected field {extra}"));
    }
    serde_json::from_value(v).map_err(|e| format!("not a record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryKv;
    use serde_json::json;
    use std::sync::Arc;

    fn key() -> SigningKey {
        SigningKey::from_seed(&[5; 32])
    }

    fn ev(i: usize) -> AuditEvent {
        AuditEvent::new(
            "action.requested",
            Some(&format!("req_{i}")),
            "etl-bot",
            json!({"i": i, "ratio": 0.5}),
        )
    }

    fn export(n: usize) -> (Vec<String>, KeySet) {
        let kv = MemoryKv::new();
        let log = AuditLog::new(&kv);
        let k = key();
        for i in 0..n {
            log.append(&ev(i), Timestamp(1_800_000_000 + i as i64), &k)
                .unwrap();
        }
        let lines = log
            .read(0, 1000)
            .unwrap()
            .iter()
            .map(AuditRecord::to_line)
            .collect();
        (lines, KeySet::from(&k))
    }

    fn check(lines: &[String], keys: &KeySet) -> Report {
        verify_export(&lines.join("\n"), keys, VerifyOptions::default())
    }

    #[test]
    fn record_format() {
        let (lines, keys) = export(2);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        let mut names: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "actor",
                "data",
                "hash",
                "kid",
                "prev",
                "request_id",
                "seq",
                "sig",
                "ts",
                "type"
            ]
        );
        assert_eq!(v["seq"], 1);
        assert_eq!(v["prev"], GENESIS);
        assert_eq!(v["ts"], "2027-01-15T08:00:00Z");
        // hash = SHA-256 over JCS of the record minus hash and sig.
        let mut m = v.as_object().unwrap().clone();
        m.remove("hash");
        m.remove("sig");
        assert_eq!(v["hash"], crate::canon::sha256_hex(&jcs(&m).unwrap()));
        // sig over the 32 raw hash bytes.
        let sig = b64url_decode(v["sig"].as_str().unwrap()).unwrap();
        let h = hex::decode(v["hash"].as_str().unwrap()).unwrap();
        assert!(keys
            .get(v["kid"].as_str().unwrap())
            .unwrap()
            .verify(&h, &sig));
        let v2: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(v2["prev"], v["hash"]);
        let r = check(&lines, &keys);
        assert!(r.ok(), "{r:?}");
        assert_eq!(
            (r.verified, r.first_seq, r.last_seq, r.anchored),
            (2, Some(1), Some(2), true)
        );
    }

    #[test]
    fn tampering_is_named_at_the_record() {
        let (lines, keys) = export(6);
        assert!(check(&lines, &keys).ok());

        // Edited data.
        let mut t = lines.clone();
        t[2] = t[2].replace("\"i\":2", "\"i\":7");
        let b = check(&t, &keys).broken.unwrap();
        assert_eq!((b.line, b.seq, b.kind), (3, Some(3), BreakKind::Edited));

        // Edited and re-hashed, but not re-signable.
        let mut rec: AuditRecord = serde_json::from_str(&lines[3]).unwrap();
        rec.actor = "mallory".into();
        rec.hash = hex::encode(rec.compute_hash().unwrap());
        let mut t = lines.clone();
        t[3] = rec.to_line();
        let b = check(&t, &keys).broken.unwrap();
        assert_eq!(
            (b.line, b.seq, b.kind),
            (4, Some(4), BreakKind::BadSignature)
        );

        // Re-sealed with another key: unknown kid.
        let other = SigningKey::from_seed(&[6; 32]);
        let prev: AuditRecord = serde_json::from_str(&lines[2]).unwrap();
        let forged = seal(&ev(99), 4, Timestamp(0), &prev.hash, &other).unwrap();
        let mut t = lines.clone();
        t[3] = forged.to_line();
        let b = check(&t, &keys).broken.unwrap();
        assert_eq!((b.line, b.seq, b.kind), (4, Some(4), BreakKind::UnknownKey));

        // Deleted.
        let mut t = lines.clone();
        t.remove(2);
        let b = check(&t, &keys).broken.unwrap();
        assert_eq!((b.line, b.seq, b.kind), (3, Some(4), BreakKind::Missing));
        assert!(b.detail.contains("record 3"));

        // Reordered.
        let mut t = lines.clone();
        t.swap(1, 2);
        let b = check(&t, &keys).broken.unwrap();
        assert_eq!((b.line, b.seq, b.kind), (2, Some(3), BreakKind::Reordered));

        // Truncated: the cut-off last line is malformed; a cleanly cut export is caught by the head.
        let mut t = lines.clone();
        let l = t[5].len();
        t[5].truncate(l / 2);
        let b = check(&t, &keys).broken.unwrap();
        assert_eq!((b.line, b.kind), (6, BreakKind::Malformed));
        let last: AuditRecord = serde_json::from_str(&lines[5]).unwrap();
        let head = VerifyOptions {
            expected_head: Some((6, &last.hash)),
            allow_partial: false,
        };
        let r = verify_export(&lines[..4].join("\n"), &keys, head);
        let b = r.broken.unwrap();
        assert_eq!((b.line, b.seq, b.kind), (5, Some(5), BreakKind::Truncated));
        assert!(verify_export(&lines.join("\n"), &keys, head).ok());

        // First record deleted: named at the new first line; a partial export is fine when
        // asked for, but unanchored.
        let b = check(&lines[1..], &keys).broken.unwrap();
        assert_eq!((b.line, b.seq, b.kind), (1, Some(2), BreakKind::Missing));
        let partial = VerifyOptions {
            expected_head: None,
            allow_partial: true,
        };
        let r = verify_export(&lines[2..].join("\n"), &keys, partial);
        assert!(r.ok() && !r.anchored && r.first_seq == Some(3));
        // First two swapped.
        let mut t = lines.clone();
        t.swap(0, 1);
        let b = check(&t, &keys).broken.unwrap();
        assert_eq!((b.line, b.seq, b.kind), (1, Some(2), BreakKind::Reordered));
        // A spliced prev (record 5 re-sealed after 3, 4 removed) is caught as missing.
        let mut t = lines.clone();
        t.remove(3);
        assert_eq!(check(&t, &keys).broken.unwrap().kind, BreakKind::Missing);

        // Unknown extra field or missing field: malformed.
        let mut t = lines.clone();
        t[0] = t[0].replacen('{', "{\"x\":1,", 1);
        assert_eq!(check(&t, &keys).broken.unwrap().kind, BreakKind::Malformed);
        // Empty JWKS.
        assert_eq!(
            check(&lines, &KeySet::default()).broken.unwrap().kind,
            BreakKind::UnknownKey
        );
    }

    #[test]
    fn head_is_signed() {
        let kv = MemoryKv::new();
        let log = AuditLog::new(&kv);
        let k = key();
        let h0 = log.head(Timestamp(1), &k).unwrap();
        assert_eq!((h0.seq, h0.hash.as_str()), (0, GENESIS));
        assert_eq!(log.append(&ev(1), Timestamp(2), &k).unwrap(), 1);
        let r = log.last().unwrap().unwrap();
        let h = log.head(Timestamp(3), &k).unwrap();
        assert_eq!((h.seq, &h.hash), (1, &r.hash));
        h.verify(&KeySet::from(&k)).unwrap();
        let mut forged = h.clone();
        forged.seq = 2;
        assert!(forged.verify(&KeySet::from(&k)).is_err());
    }

    #[test]
    fn concurrent_appends_stay_linear() {
        let kv = Arc::new(MemoryKv::new());
        let k = key();
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let (kv, k) = (kv.clone(), k.clone());
                std::thread::spawn(move || {
                    // Generous: a gap record here would mean a thread stalled for 30 s.
                    let log = AuditLog::new(kv).with_gap_timeout(Duration::from_secs(30));
                    for i in 0..25 {
                        log.append(&ev(t * 100 + i), Timestamp(1_800_000_000), &k)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let log = AuditLog::new(kv.clone());
        let recs = log.read(0, 1000).unwrap();
        assert_eq!(recs.len(), 200);
        let text: Vec<String> = recs.iter().map(AuditRecord::to_line).collect();
        let r = check(&text, &KeySet::from(&k));
        assert!(r.ok(), "{:?}", r.broken);
        assert_eq!(r.last_seq, Some(200));
        assert_eq!(log.read(150, 10).unwrap().first().unwrap().seq, 151);
        assert_eq!(log.read(195, 10).unwrap().len(), 5);
    }

    #[test]
    fn written_entries_wait_for_a_sealer_and_keep_their_order() {
        let kv = MemoryKv::new();
        let log = AuditLog::new(&kv);
        let k = key();
        // Written, not sealed: readers see nothing yet, later appends queue behind.
        assert_eq!(
            log.write_all(&[ev(0), ev(1)], Timestamp(1)).unwrap(),
            vec![1, 2]
        );
        assert!(log.read(0, 10).unwrap().is_empty());
        assert_eq!(log.write_all(&[ev(2)], Timestamp(2)).unwrap(), vec![3]);
        assert!(log.read(0, 10).unwrap().is_empty());
        // The next sealer (a reader's advance, or another append's) seals all of them in order.
        assert_eq!(log.advance(&k).unwrap(), 4);
        let recs = log.read(0, 10).unwrap();
        let ids: Vec<_> = recs.iter().map(|r| r.request_id.clone().unwrap()).collect();
        assert_eq!(ids, ["req_0", "req_1", "req_2"]);
        let text: Vec<String> = recs.iter().map(AuditRecord::to_line).collect();
        assert!(check(&text, &KeySet::from(&k)).ok());
    }

    fn types(log: &AuditLog<&MemoryKv>) -> Vec<String> {
        log.read(0, 10)
            .unwrap()
            .iter()
            .map(|r| r.type_.clone())
            .collect()
    }

    fn verifies(log: &AuditLog<&MemoryKv>, k: &SigningKey) {
        let text: Vec<String> = log
            .read(0, 100)
            .unwrap()
            .iter()
            .map(AuditRecord::to_line)
            .collect();
        let r = check(&text, &KeySet::from(k));
        assert!(r.ok(), "{:?}", r.broken);
    }

    /// Runs the sweep's repair just before the 5 s timeout (nothing changes) and at it, for
    /// entries appended at `t0`.
    fn recover_after_timeout(log: &AuditLog<&MemoryKv>, k: &SigningKey, t0: i64) -> u64 {
        let stuck = log.recover(Timestamp(t0 + 4), k).unwrap();
        assert_eq!(log.recover(Timestamp(t0 + 4), k).unwrap(), stuck);
        log.recover(Timestamp(t0 + 5), k).unwrap()
    }

    #[test]
    fn a_dead_appender_leaves_a_gap_record_not_a_stall() {
        let kv = MemoryKv::new();
        let k = key();
        let log = AuditLog::new(&kv).with_gap_timeout(Duration::from_secs(5));
        log.append(&ev(1), Timestamp(10), &k).unwrap();
        // Someone claims seq 2 and dies before writing.
        assert_eq!(kv.increment(SEQ_KEY, 1).unwrap(), 2);
        // A later append is durable but waits (unsealed) behind the hole; readers see only
        // the contiguous prefix meanwhile.
        assert_eq!(log.append(&ev(3), Timestamp(11), &k).unwrap(), 3);
        assert_eq!(types(&log).len(), 1);
        assert_eq!(log.last().unwrap().unwrap().seq, 1);
        // The sweep repairs the hole once what waits behind it (appended at 11) has waited for
        // the gap timeout.
        assert_eq!(log.recover(Timestamp(15), &k).unwrap(), 2);
        assert_eq!(log.recover(Timestamp(16), &k).unwrap(), 4);
        assert_eq!(
            types(&log),
            ["action.requested", GAP_TYPE, "action.requested"]
        );
        verifies(&log, &k);
        // The dead appender, if it wakes up, cannot claim the filled slot.
        assert!(kv.increment(&entry_claim_key(2), 1).unwrap() > 1);
    }

    #[test]
    fn a_claimed_but_never_written_slot_is_refilled() {
        let kv = MemoryKv::new();
        let k = key();
        let log = AuditLog::new(&kv).with_gap_timeout(Duration::from_secs(5));
        log.append(&ev(1), Timestamp(10), &k).unwrap();
        // seq 2 claimed and its entry slot won, but the entry never written.
        assert_eq!(kv.increment(SEQ_KEY, 1).unwrap(), 2);
        assert_eq!(kv.increment(&entry_claim_key(2), 1).unwrap(), 1);
        log.append(&ev(3), Timestamp(11), &k).unwrap();
        assert_eq!(recover_after_timeout(&log, &k, 11), 4);
        assert_eq!(types(&log).len(), 3);
        verifies(&log, &k);
    }

    #[test]
    fn a_dead_sealer_is_replaced() {
        let kv = MemoryKv::new();
        let k = key();
        let log = AuditLog::new(&kv).with_gap_timeout(Duration::from_secs(5));
        log.append(&ev(1), Timestamp(10), &k).unwrap();
        // The sealer of 2 claimed it and died; 3 is appended behind it.
        assert_eq!(kv.increment(&claim_key(2), 1).unwrap(), 1);
        log.append_all(&[ev(2), ev(3)], Timestamp(11), &k).unwrap();
        assert_eq!(types(&log).len(), 1);
        assert_eq!(recover_after_timeout(&log, &k, 11), 4);
        assert_eq!(types(&log), ["action.requested"; 3]);
        verifies(&log, &k);
        // Nothing stuck: recover changes nothing.
        assert_eq!(log.recover(Timestamp(100), &k).unwrap(), 4);
    }

    #[test]
    fn one_sweep_repairs_every_old_hole() {
        let kv = MemoryKv::new();
        let k = key();
        let log = AuditLog::new(&kv).with_gap_timeout(Duration::from_secs(5));
        for t in 0..3 {
            // A dead appender's number, then a live one's event behind it.
            kv.increment(SEQ_KEY, 1).unwrap();
            log.append(&ev(t), Timestamp(10 + t as i64), &k).unwrap();
        }
        assert!(types(&log).is_empty());
        assert_eq!(log.recover(Timestamp(20), &k).unwrap(), 7);
        assert_eq!(
            types(&log),
            [
                GAP_TYPE,
                "action.requested",
                GAP_TYPE,
                "action.requested",
                GAP_TYPE,
                "action.requested"
            ]
        );
        verifies(&log, &k);
    }

    #[test]
    fn batches_keep_their_order() {
        let kv = MemoryKv::new();
        let k = key();
        let log = AuditLog::new(&kv);
        assert_eq!(
            log.append_all(&[ev(1), ev(2), ev(3)], Timestamp(5), &k)
                .unwrap(),
            [1, 2, 3]
        );
        assert_eq!(log.append(&ev(4), Timestamp(6), &k).unwrap(), 4);
        let ids: Vec<_> = log
            .read(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(
            ids,
            ["req_1", "req_2", "req_3", "req_4"].map(|s| Some(s.to_string()))
        );
        verifies(&log, &k);
        // Sealed entries go a chunk at a time, once the chunk's last number is sealed.
        assert!(kv.get(&entry_key(2)).unwrap().is_some());
        let rest: Vec<_> = (5..=17).map(ev).collect();
        log.append_all(&rest, Timestamp(7), &k).unwrap();
        for seq in 1..=16 {
            assert!(kv.get(&entry_key(seq)).unwrap().is_none(), "entry {seq}");
        }
        assert!(kv.get(&entry_key(17)).unwrap().is_some());
        assert_eq!(log.read(0, 100).unwrap().len(), 17);
        verifies(&log, &k);
    }

    /// A store on which another sweep runs `race` just before the first read of `key`.
    struct Racing<'a> {
        kv: &'a MemoryKv,
        key: String,
        race: std::cell::RefCell<Option<Box<dyn FnOnce() + 'a>>>,
    }

    impl Kv for Racing<'_> {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            if key == self.key {
                if let Some(race) = self.race.borrow_mut().take() {
                    race();
                }
            }
            self.kv.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<()> {
            self.kv.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.kv.delete(key)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64> {
            self.kv.increment(key, delta)
        }
        fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
            self.kv.get_many(keys)
        }
        fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<()> {
            self.kv.set_many(items)
        }
    }

    #[test]
    fn a_sweep_racing_another_writes_no_gap_over_a_sealed_entry() {
        let kv = MemoryKv::new();
        let k = key();
        let log = AuditLog::new(&kv).with_gap_timeout(Duration::from_secs(5));
        log.append(&ev(1), Timestamp(10), &k).unwrap();
        // The sealer of 2 claimed it and died; 3 waits behind it.
        assert_eq!(kv.increment(&claim_key(2), 1).unwrap(), 1);
        log.append_all(&[ev(2), ev(3)], Timestamp(11), &k).unwrap();
        // Another sweep repairs 2 (and seals 3) between this sweep's look at the frontier and
        // its look at entry 2, which it then finds gone.
        let other = AuditLog::new(&kv).with_gap_timeout(Duration::from_secs(5));
        let racing = Racing {
            kv: &kv,
            key: entry_key(2),
            race: std::cell::RefCell::new(Some(Box::new(|| {
                assert_eq!(other.recover(Timestamp(20), &k).unwrap(), 4);
            }))),
        };
        let log = AuditLog::new(&racing).with_gap_timeout(Duration::from_secs(5));
        assert_eq!(log.recover(Timestamp(20), &k).unwrap(), 4);
        let types: Vec<_> = log
            .read(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.type_)
            .collect();
        assert_eq!(types, ["action.requested"; 3]);
        let text: Vec<String> = log
            .read(0, 10)
            .unwrap()
            .iter()
            .map(AuditRecord::to_line)
            .collect();
        let r = check(&text, &KeySet::from(&k));
        assert!(r.ok(), "{:?}", r.broken);
    }

    #[test]
    fn events_are_validated() {
        let kv = MemoryKv::new();
        let log = AuditLog::new(&kv);
        let bad = AuditEvent::new("Action Requested", None, "x", Value::Null);
        assert!(matches!(
            log.append(&bad, Timestamp(1), &key()),
            Err(Error::Invalid { .. })
        ));
        let bad = AuditEvent::new("a.b", None, "", Value::Null);
        assert!(bad.validate().is_err());
        let e: AuditEvent =
            serde_json::from_value(json!({"type":"vote.cast","actor":"bob"})).unwrap();
        assert_eq!((e.request_id, e.data), (None, Value::Null));
    }
}
