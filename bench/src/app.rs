//! The real app (top-level spin.toml) set up for the bench: the manifest copied into a temp
//! folder with component `source` paths made absolute and `files` pointing to a bench `config/`
//! (policy + directory written here), fresh secrets, a local stand-in for agent callbacks, and
//! the approval round-trip loop. Same approach as the e2e tests' `tests/support/app.rs`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::load::{self, Failure, Stats, Template, Until};
use crate::scenarios::Scenario;

/// The bench policy: one routine permit, one that needs an approver of `ops`.
const POLICY: &str = r#"
@id("routine")
permit (principal, action == Action::"db.query", resource);

@id("sensitive")
@approval("ops")
permit (principal, action == Action::"db.export", resource);
"#;

/// The bench policy plus `extra` policies that never apply to the bench's requests (other
/// actions), in three shapes in turn: a `forbid`, a permit that needs an approver of `ops`, and
/// a permit with a condition. Cedar still looks at every one of them for each request.
pub fn policy_set(extra: usize) -> String {
    let mut set = POLICY.to_string();
    for i in 0..extra {
        set.push_str(&match i % 3 {
            0 => format!(
                "\n@id(\"no-drop-{i}\")\nforbid (principal, action == Action::\"db.drop_{i}\", resource);\n"
            ),
            1 => format!(
                "\n@id(\"export-{i}\")\n@approval(\"ops\")\n@expires(\"30m\")\n\
                 permit (principal, action == Action::\"export_{i}\", resource);\n"
            ),
            _ => format!(
                "\n@id(\"report-{i}\")\npermit (principal, action == Action::\"report_{i}\", resource)\n\
                 when {{ resource has owner && resource.owner == \"team-{i}\" }};\n"
            ),
        });
    }
    set
}

/// The bench's agent and approver.
pub const AGENT: &str = "bench-bot";
const OWNER: &str = "olivia";
const APPROVER: &str = "alice";

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf)
}

fn random_token(prefix: &str) -> Result<String> {
    Ok(format!("{prefix}-{}", hex::encode(random_bytes::<16>()?)))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A deployment of the real app for the bench.
pub struct Deployment {
    pub manifest: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    pub agent_token: String,
    pub approver_token: String,
    pub callbacks: Arc<StandIn>,
}

impl Deployment {
    /// Writes `<dir>/spin.toml` and `<dir>/config/` (with `policy` as the policy set) from
    /// `real_manifest`, and starts the callback stand-in.
    pub async fn new(real_manifest: &Path, dir: &Path, policy: &str) -> Result<Deployment> {
        let callbacks = Arc::new(StandIn::start().await?);
        let agent_token = random_token("agent")?;
        let approver_token = random_token("alice")?;
        let owner_token = random_token("olivia")?;
        std::fs::create_dir_all(dir.join("config"))?;
        std::fs::write(dir.join("config/policy.cedar"), policy)?;
        let directory = format!(
            "[[agent]]\nid = \"{AGENT}\"\nowner = \"{OWNER}\"\n\
             token_sha256 = [\"{}\"]\ncallback_prefixes = [\"{}\"]\n\n\
             [[approver]]\nid = \"{APPROVER}\"\nname = \"Alice (bench)\"\ntoken_sha256 = [\"{}\"]\n\n\
             [[approver]]\nid = \"{OWNER}\"\nname = \"Olivia (bench)\"\ntoken_sha256 = [\"{}\"]\n\n\
             [groups]\nops = [\"{APPROVER}\"]\n",
            sha256_hex(&agent_token),
            callbacks.url("/hooks/"),
            sha256_hex(&approver_token),
            sha256_hex(&owner_token),
        );
        std::fs::write(dir.join("config/directory.toml"), directory)?;
        let manifest = dir.join("spin.toml");
        std::fs::write(&manifest, manifest_text(real_manifest)?)?;
        let signing_key = base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>()?);
        let env = [
            ("SPIN_VARIABLE_SIGNING_KEY", signing_key),
            ("SPIN_VARIABLE_WEBHOOK_KEY", random_token("whk")?),
            (
                "SPIN_VARIABLE_EXTRA_OUTBOUND_HOST",
                "http://127.0.0.1:*".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        Ok(Deployment {
            manifest,
            env,
            agent_token,
            approver_token,
            callbacks,
        })
    }

    /// The callback URL of the round trips (within the agent's registered prefix).
    pub fn callback_url(&self) -> String {
        self.callbacks.url("/hooks/bench")
    }
}

/// `real_manifest` with every component `source = "..."` (a relative path) made absolute
/// against its folder; `files` sources stay relative, so they name the bench's `config/`.
/// A component whose Wasm file is not built is left out with its triggers (noted on stdout).
fn manifest_text(real_manifest: &Path) -> Result<String> {
    let real = std::fs::read_to_string(real_manifest)
        .with_context(|| format!("cannot read {}", real_manifest.display()))?;
    let base = real_manifest
        .canonicalize()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Blocks: the lines from one `[table]` header to the next.
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in real.lines() {
        if line.trim_start().starts_with('[') {
            blocks.push(Vec::new());
        }
        blocks.last_mut().expect("one block").push(line);
    }
    let mut missing = Vec::new();
    for block in &blocks {
        let header = block.first().map_or("", |l| l.trim());
        let Some(name) = header
            .strip_prefix("[component.")
            .and_then(|r| r.strip_suffix(']'))
            .filter(|n| !n.contains('.'))
        else {
            continue;
        };
        for line in block {
            if let Some(rest) = line.trim_start().strip_prefix("source = \"") {
                if !base.join(rest.trim_end().trim_end_matches('"')).is_file() {
                    missing.push(name.to_string());
                }
            }
        }
    }
    let mut out = String::with_capacity(real.len() + 512);
    let mut rewritten = 0;
    for block in &blocks {
        let header = block.first().map_or("", |l| l.trim());
        let dropped = missing.iter().any(|m| {
            header.starts_with(&format!("[component.{m}]"))
                || header.starts_with(&format!("[component.{m}."))
                || (header == "[[trigger.http]]"
                    && block
                        .iter()
                        .any(|l| l.trim() == format!("component = \"{m}\"")))
        });
        if dropped {
            continue;
        }
        for line in block {
            match line.trim_start().strip_prefix("source = \"") {
                Some(rest) => {
                    let abs = base.join(rest.trim_end().trim_end_matches('"'));
                    out.push_str(&format!("source = {:?}\n", abs.to_string_lossy()));
                    rewritten += 1;
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    if rewritten == 0 {
        bail!(
            "{}: no built component (run `make build`)",
            real_manifest.display()
        );
    }
    if !missing.is_empty() {
        println!(
            "note: components not built, left out of the bench app with their routes: {}",
            missing.join(", ")
        );
    }
    Ok(out)
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

/// A local HTTP server standing in for the agent's callback endpoint: answers 200 and tells
/// whoever waits for that request id when its callback arrived.
pub struct StandIn {
    addr: SocketAddr,
    waiters: Waiters,
    /// Callbacks nobody waited for (late after a timeout, or unexpected).
    pub unexpected: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start() -> Result<StandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the callback stand-in")?;
        let addr = listener.local_addr()?;
        let waiters: Waiters = Arc::default();
        let unexpected = Arc::new(AtomicU64::new(0));
        let (w, u) = (waiters.clone(), unexpected.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (w, u) = (w.clone(), u.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (w, u) = (w.clone(), u.clone());
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let arrived = Instant::now();
                            let id = answer_id(&body);
                            let waiter = id.and_then(|id| w.lock().unwrap().remove(&id));
                            match waiter {
                                Some(tx) => {
                                    let _ = tx.send(arrived);
                                }
                                None => {
                                    u.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(StandIn {
            addr,
            waiters,
            unexpected,
            task,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn expect(&self, id: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(id.to_string(), tx);
        rx
    }

    fn forget(&self, id: &str) {
        self.waiters.lock().unwrap().remove(id);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the round-trip workers share.
struct RoundTrip {
    addr: SocketAddr,
    request: Arc<Template>,
    approver_auth: String,
    callbacks: Arc<StandIn>,
}

impl RoundTrip {
    /// One round trip on `sender`: request (202) → approve (200) → callback. Returns the time
    /// from the first send to the callback's arrival.
    async fn round_trip(&self, sender: &mut load::Sender, seq: u64) -> Result<Duration> {
        let t0 = Instant::now();
        let (status, body) = load::exchange_full(sender, self.request.build(seq)).await?;
        if status != self.request.expect_status {
            bail!(
                "request: status {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let id = answer_id(&body).context("request: answer without an id")?;
        let arrived = self.callbacks.expect(&id);
        let decision = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/actions/{id}/decision"))
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::AUTHORIZATION, &self.approver_auth)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(br#"{"decision":"approve"}"#)))?;
        let result = async {
            let (status, body) = load::exchange_full(sender, decision).await?;
            if status != 200 {
                bail!(
                    "decision: status {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let at = tokio::time::timeout(Duration::from_secs(10), arrived)
                .await
                .context("no callback within 10 s")?
                .context("stand-in gone")?;
            Ok(at.duration_since(t0))
        }
        .await;
        if result.is_err() {
            self.callbacks.forget(&id);
        }
        result
    }
}

impl load::Op for RoundTrip {
    async fn once(&self, sender: &mut load::Sender, seq: u64) -> Result<Duration, Failure> {
        self.round_trip(sender, seq)
            .await
            .map_err(|e| Failure::broken(&e))
    }
}

/// `concurrency` workers, each on its own keep-alive connection, doing round trips back to back.
pub async fn round_trips(
    addr: SocketAddr,
    request: Arc<Template>,
    deployment: &Deployment,
    concurrency: usize,
    until: Until,
) -> Stats {
    let shared = Arc::new(RoundTrip {
        addr,
        request,
        approver_auth: format!("Bearer {}", deployment.approver_token),
        callbacks: deployment.callbacks.clone(),
    });
    load::workers(addr, shared, concurrency, until).await
}

/// The `id` of a JSON answer.
fn answer_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
}

/// Sends `request` and keeps the id of every answer with the expected status.
struct Store {
    request: Arc<Template>,
    ids: Mutex<Vec<String>>,
}

impl load::Op for Store {
    async fn once(&self, sender: &mut load::Sender, seq: u64) -> Result<Duration, Failure> {
        let t0 = Instant::now();
        let (status, body) = load::exchange_full(sender, self.request.build(seq))
            .await
            .map_err(|e| Failure::broken(&e))?;
        if status != self.request.expect_status {
            return Err(Failure::answer(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let id = answer_id(&body).ok_or_else(|| Failure::answer("answer without an id".into()))?;
        self.ids.lock().unwrap().push(id);
        Ok(t0.elapsed())
    }
}

/// Stores `count` requests (`request`, e.g. one the policy sends to approval) with
/// `concurrency` connections. Returns what it measured and the ids of the stored requests.
pub async fn store_requests(
    addr: SocketAddr,
    request: Arc<Template>,
    count: u64,
    concurrency: usize,
) -> (Stats, Vec<String>) {
    let store = Arc::new(Store {
        request,
        ids: Mutex::default(),
    });
    let stats = load::workers(addr, store.clone(), concurrency, Until::Requests(count)).await;
    let ids = std::mem::take(&mut *store.ids.lock().unwrap());
    (stats, ids)
}

/// Mixed traffic: even operations send `routine`, odd ones read one of `ids` back
/// (`GET /v1/actions/<id>` as the agent, expect 200).
pub struct Mixed {
    routine: Arc<Template>,
    reads: Vec<Template>,
}

impl Mixed {
    pub fn new(
        routine: Arc<Template>,
        read: &Scenario,
        ids: &[String],
        addr: SocketAddr,
    ) -> Result<Mixed> {
        let reads = ids
            .iter()
            .map(|id| {
                let mut s = read.clone();
                s.path = s.path.replace("{id}", id);
                Template::new(&s, addr)
            })
            .collect::<Result<_>>()?;
        Ok(Mixed { routine, reads })
    }
}

impl load::Op for Mixed {
    async fn once(&self, sender: &mut load::Sender, seq: u64) -> Result<Duration, Failure> {
        match self.reads.len() {
            n if n > 0 && seq % 2 == 1 => {
                self.reads[(seq / 2) as usize % n].once(sender, seq).await
            }
            _ => self.routine.once(sender, seq).await,
        }
    }
}

/// Parses `redis://[:password@]host:port[/db]` into (address, password, db).
fn redis_target(url: &str) -> Result<(String, Option<String>, u32)> {
    let rest = url
        .strip_prefix("redis://")
        .with_context(|| format!("{url}: only redis:// URLs"))?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (host, db) = match rest.split_once('/') {
        Some((h, d)) if !d.is_empty() => (h, d.parse().with_context(|| format!("{url}: db"))?),
        Some((h, _)) => (h, 0),
        None => (rest, 0),
    };
    let password = auth.map(|a| a.rsplit_once(':').map_or(a, |(_, p)| p).to_string());
    Ok((host.to_string(), password, db))
}

/// Empties the Redis database of `url` (`SELECT <db>`, `FLUSHDB`), so a run starts from
/// nothing. Fails when Redis does not answer within 2 s.
pub async fn redis_flush(url: &str) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (host, password, db) = redis_target(url)?;
    let mut commands: Vec<Vec<String>> = Vec::new();
    if let Some(p) = password {
        commands.push(vec!["AUTH".into(), p]);
    }
    commands.push(vec!["SELECT".into(), db.to_string()]);
    commands.push(vec!["FLUSHDB".into()]);
    let talk = async {
        let stream = tokio::net::TcpStream::connect(&host)
            .await
            .with_context(|| format!("connect {host}"))?;
        let mut stream = BufReader::new(stream);
        for command in commands {
            let mut out = format!("*{}\r\n", command.len());
            for arg in &command {
                out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
            stream.get_mut().write_all(out.as_bytes()).await?;
            let mut reply = String::new();
            stream.read_line(&mut reply).await?;
            if !reply.starts_with('+') {
                bail!("{}: {}", command[0], reply.trim());
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), talk)
        .await
        .with_context(|| format!("Redis at {host} did not answer within 2 s"))?
}
