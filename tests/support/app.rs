//! The countersign app under test: the real top-level spin.toml, made to run from a temp dir
//! with a test directory and policy, per-test secrets, and local stand-ins for every outside
//! URL (agent callbacks, the review webhook).
//!
//! The test manifest is generated from the real one by text substitution (each component's
//! `source` made absolute), so routes, variables and outbound rules stay the real ones; only
//! `config/` (mounted at `/config` by `files`, relative to the manifest) is the test's.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use shared::canon::sha256_hex;
use shared::crypto::SigningKey;
use shared::Timestamp;

use super::{workspace_root, Host, HostBuilder, Method, Resp, StandIn, TempDir};

/// The components of the app, built for wasm32-wasip2.
pub const COMPONENTS: [&str; 4] = ["intake", "policy", "decision", "audit"];

/// The test policy. Short windows where a test waits for them.
pub const POLICY: &str = r#"
// Routine: read-only queries.
@id("routine")
permit (principal, action == Action::"db.query", resource);

// Forbidden, although a permit also applies.
@id("no-audit-delete")
forbid (principal, action == Action::"audit.delete", resource);
@id("audit-any")
permit (principal, action == Action::"audit.delete", resource);

// Sensitive: one DBA.
@id("pii-export")
@approval("dba")
@expires("1h")
@grant_ttl("5m")
permit (principal, action == Action::"db.export", resource);

// Sensitive, with a grant that lives 3 s.
@id("short-grant")
@approval("dba")
@grant_ttl("3s")
permit (principal, action == Action::"db.restore", resource);

// Sensitive, with a review window of 2 s.
@id("quick-review")
@approval("dba")
@expires("2s")
permit (principal, action == Action::"db.drop", resource);

// Two distinct people of security.
@id("escalation")
@approval("security")
@quorum("2")
permit (principal, action == Action::"iam.grant_role", resource);

// Two of a large group (the concurrency tests).
@id("release")
@approval("crowd")
@quorum("2")
permit (principal, action == Action::"deploy.release", resource);
"#;

/// The people of the test directory besides the crowd: `olivia` owns `etl-bot` (and is a
/// DBA), `oscar` owns `other-bot`, `dan` is in no group.
pub const PEOPLE: [&str; 7] = ["olivia", "oscar", "bob", "carol", "dan", "erin", "frank"];
pub const AGENTS: [(&str, &str); 2] = [("etl-bot", "olivia"), ("other-bot", "oscar")];

/// What a test needs of the app.
#[derive(Clone, Debug)]
pub struct Options {
    /// Members of group `crowd` (`crowd-001`, ...); at least 2.
    pub crowd: usize,
    /// Use Redis database `n` (flushed when the fixture is made) instead of SQLite.
    pub redis_db: Option<u8>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            crowd: 2,
            redis_db: None,
        }
    }
}

pub fn crowd_member(i: usize) -> String {
    format!("crowd-{i:03}")
}

/// A deployment's files, secrets and stand-ins; start one or more hosts on it.
pub struct Fixture {
    pub dir: TempDir,
    pub manifest: PathBuf,
    pub signing_key: SigningKey,
    pub webhook_key: String,
    pub admin_token: String,
    tokens: BTreeMap<String, String>,
    /// Agent callbacks land here (`/hooks/<agent>/...`).
    pub callbacks: StandIn,
    /// The review webhook (`review_webhook_url`).
    pub reviews: StandIn,
    runtime_config: Option<PathBuf>,
}

fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        hex::encode(shared::canon::random_bytes::<16>().expect("random bytes"))
    )
}

/// Checks that the app's components were built.
pub fn require_components() {
    for c in COMPONENTS {
        require_wasm(c);
    }
}

pub fn wasm_path(component: &str) -> PathBuf {
    workspace_root().join(format!("target/wasm32-wasip2/release/{component}.wasm"))
}

/// Checks that an optional component (a channel) was built.
pub fn require_wasm(component: &str) {
    let p = wasm_path(component);
    assert!(
        p.is_file(),
        "{} missing: run `make build` (cargo build --release --target wasm32-wasip2 -p {component})",
        p.display()
    );
}

/// The real spin.toml with every component `source` made absolute, so the manifest can live
/// anywhere (next to a test `config/`).
pub fn test_manifest_text() -> String {
    let real = std::fs::read_to_string(workspace_root().join("spin.toml")).expect("read spin.toml");
    let mut out = String::with_capacity(real.len() + 512);
    let mut rewritten = 0;
    for line in real.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("source = \"target/") {
            let rel = format!("target/{}", rest.trim_end().trim_end_matches('"'));
            let abs = workspace_root().join(rel);
            out.push_str(&format!("source = {:?}\n", abs.to_string_lossy()));
            rewritten += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let components = real
        .lines()
        .filter(|l| {
            let l = l.trim();
            l.starts_with("[component.") && l.matches('.').count() == 1
        })
        .count();
    assert_eq!(
        rewritten, components,
        "spin.toml: expected one `source = \"target/...\"` per component"
    );
    out
}

/// The directory of a fixture (tokens are the SHA-256 of per-test random tokens).
fn directory_toml(tokens: &BTreeMap<String, String>, callback_port: u16, crowd: usize) -> String {
    let hash = |id: &str| sha256_hex(tokens[id].as_bytes());
    let mut s = String::new();
    for (agent, owner) in AGENTS {
        s.push_str(&format!(
            "[[agent]]\nid = \"{agent}\"\nowner = \"{owner}\"\ngroups = [\"pipelines\"]\n\
             token_sha256 = [\"{}\"]\ncallback_prefixes = [\"http://127.0.0.1:{callback_port}/hooks/{agent}/\"]\n\n",
            hash(agent)
        ));
    }
    let mut people: Vec<String> = PEOPLE.iter().map(|p| p.to_string()).collect();
    people.extend((1..=crowd).map(crowd_member));
    for p in &people {
        s.push_str(&format!(
            "[[approver]]\nid = \"{p}\"\nname = \"{p} (test)\"\ntoken_sha256 = [\"{}\"]\n\n",
            hash(p)
        ));
    }
    let crowd_list: Vec<String> = (1..=crowd)
        .map(|i| format!("\"{}\"", crowd_member(i)))
        .collect();
    s.push_str(&format!(
        "[groups]\ndba = [\"olivia\", \"bob\", \"carol\"]\nsecurity = [\"bob\", \"erin\", \"frank\"]\ncrowd = [{}]\n",
        crowd_list.join(", ")
    ));
    s
}

/// What a review card of [`export_body`] (dataset `customers`) shows: agent, owner, action,
/// resource and its attributes, justification, on whose behalf, policy, group.
pub const EXPORT_SHOWN: [&str; 9] = [
    "etl-bot",
    "olivia",
    "db.export",
    "customers",
    "classification",
    "Quarterly report",
    "user:carol",
    "pii-export",
    "dba",
];

/// A `db.export` of `dataset` for review by a DBA, on behalf of carol, with a large context
/// (cards must stay within the chat platforms' limits).
pub fn export_body(dataset: &str, callback: Option<String>) -> Value {
    let mut v = serde_json::json!({
        "action": "db.export",
        "resource": {"type": "Dataset", "id": dataset, "attributes": {"classification": "pii"}},
        "context": {"env": "prod", "rows": 120000, "note": "é".repeat(4000)},
        "on_behalf_of": "user:carol",
        "impact": "Exports 120k customer rows",
        "justification": "Quarterly report"
    });
    if let Some(c) = callback {
        v["callback_url"] = serde_json::json!(c);
    }
    v
}

/// Empties Redis database `db` (RESP over a plain socket: no client library needed).
pub fn flush_redis_db(db: u8) {
    let mut s = std::net::TcpStream::connect("127.0.0.1:6379").unwrap_or_else(|e| {
        panic!("Redis is not reachable at 127.0.0.1:6379 ({e}): start redis-server for the Redis tests")
    });
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let db = db.to_string();
    let cmd = format!(
        "*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n",
        db.len()
    );
    s.write_all(cmd.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.windows(2).filter(|w| w == b"\r\n").count() < 2 {
        let n = s.read(&mut buf).expect("read from Redis");
        assert!(n > 0, "Redis closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+OK\r\n",
        "SELECT/FLUSHDB"
    );
}

impl Fixture {
    pub async fn new(opts: Options) -> Fixture {
        require_components();
        assert!(opts.crowd >= 2, "group crowd needs at least 2 members");
        let dir = TempDir::new("app");
        let callbacks = StandIn::start("ok").await;
        let reviews = StandIn::start("ok").await;
        let mut tokens = BTreeMap::new();
        for (agent, _) in AGENTS {
            tokens.insert(agent.to_string(), random_token(agent));
        }
        for p in PEOPLE {
            tokens.insert(p.to_string(), random_token(p));
        }
        for i in 1..=opts.crowd {
            tokens.insert(crowd_member(i), random_token("crowd"));
        }
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        dir.write("config/policy.cedar", POLICY);
        dir.write(
            "config/directory.toml",
            &directory_toml(&tokens, callbacks.port, opts.crowd),
        );
        let manifest = dir.write("spin.toml", &test_manifest_text());
        let runtime_config = opts.redis_db.map(|db| {
            flush_redis_db(db);
            dir.write(
                "runtime-config.toml",
                &format!(
                    "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/{db}\"\n"
                ),
            )
        });
        Fixture {
            signing_key: SigningKey::generate().expect("generate a signing key"),
            webhook_key: random_token("whk"),
            admin_token: random_token("admin"),
            dir,
            manifest,
            tokens,
            callbacks,
            reviews,
            runtime_config,
        }
    }

    /// The bearer token of an agent or approver.
    pub fn token(&self, id: &str) -> &str {
        self.tokens
            .get(id)
            .unwrap_or_else(|| panic!("no token for {id}"))
    }

    /// A callback URL within `agent`'s registered prefix.
    pub fn callback_url(&self, agent: &str, name: &str) -> String {
        self.callbacks.url(&format!("/hooks/{agent}/{name}"))
    }

    /// The webhook secret of an agent (or of `reviews`), as `countersign agent webhook-secret`
    /// prints it.
    pub fn webhook_secret(&self, id: &str) -> String {
        shared::webhook::webhook_secret(&self.webhook_key, id)
    }

    /// Gives approvers identities in a channel (`slack`, `teams`): `ids` pairs an approver id
    /// with the items of its TOML array, e.g. `("bob", "\"T1/UBOB\"")`.
    pub fn add_identities<S: AsRef<str>>(&self, channel: &str, ids: &[(&str, S)]) {
        let path = self.dir.path().join("config/directory.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (who, items) in ids {
            let from = format!("[[approver]]\nid = \"{who}\"\n");
            assert!(text.contains(&from), "directory layout changed");
            text = text.replace(&from, &format!("{from}{channel} = [{}]\n", items.as_ref()));
        }
        std::fs::write(&path, text).unwrap();
    }

    /// Submits `body` as `agent`, expecting it to wait for review; returns its id.
    pub async fn pending(&self, h: &Host, agent: &str, body: &Value) -> String {
        let r = h
            .post_as("/v1/actions", self.token(agent), body)
            .await
            .expect(202);
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// The status of request `id` of `etl-bot`.
    pub async fn status_of(&self, h: &Host, id: &str) -> String {
        let r = h
            .get_as(&format!("/v1/actions/{id}"), self.token("etl-bot"))
            .await;
        r.expect(200).json()["status"].as_str().unwrap().to_string()
    }

    /// `who` votes on request `id` through the API (`body`: decision and reason).
    pub async fn decide(&self, h: &Host, id: &str, who: &str, body: &Value) -> Resp {
        h.post_as(&format!("/v1/actions/{id}/decision"), self.token(who), body)
            .await
    }

    /// Runs the sweep (as a scheduler would) every 500 ms until `probe` finds something, for at
    /// most `timeout`.
    pub async fn sweep_until<T>(
        &self,
        h: &Host,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = h
                .call(Method::POST, "/v1/sweep", Some(&self.admin_token), None)
                .await;
            assert!(r.status.is_success(), "sweep: {}", r.text());
            if let Some(v) = probe() {
                return Some(v);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The whole audit trail (paged), as exported: NDJSON, one record a line.
    pub async fn audit_export(&self, h: &Host) -> String {
        let mut out = String::new();
        let mut after = 0u64;
        loop {
            let r = h
                .get_as(
                    &format!("/v1/audit?after={after}&limit=500"),
                    &self.admin_token,
                )
                .await
                .expect(200);
            let ct = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(ct.starts_with("application/x-ndjson"), "content-type {ct}");
            let text = r.text();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                return out;
            }
            for l in &lines {
                out.push_str(l);
                out.push('\n');
            }
            let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
            after = last["seq"].as_u64().unwrap();
        }
    }

    /// The audit trail's records, parsed.
    pub async fn audit_records(&self, h: &Host) -> Vec<Value> {
        let export = self.audit_export(h).await;
        export
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A host builder for this deployment (variables set, stand-ins allowed).
    pub fn host(&self) -> HostBuilder {
        let mut b = HostBuilder::new(self.manifest.clone())
            .without_env("SPIN_VARIABLE_REGION")
            .env(
                "SPIN_VARIABLE_SIGNING_KEY",
                &self.signing_key.to_base64_seed(),
            )
            .env("SPIN_VARIABLE_WEBHOOK_KEY", &self.webhook_key)
            .env(
                "SPIN_VARIABLE_ADMIN_TOKEN_SHA256",
                &sha256_hex(self.admin_token.as_bytes()),
            )
            .env(
                "SPIN_VARIABLE_REVIEW_WEBHOOK_URL",
                &self.reviews.url("/reviews"),
            )
            .env("SPIN_VARIABLE_EXTRA_OUTBOUND_HOST", "http://127.0.0.1:*");
        if let Some(rc) = &self.runtime_config {
            b = b.runtime_config(rc.clone());
        }
        b
    }

    pub async fn start(&self) -> Host {
        self.host().start().await
    }

    /// Callbacks received for request `id`.
    pub fn callbacks_for(&self, id: &str) -> Vec<super::Received> {
        self.callbacks
            .received()
            .into_iter()
            .filter(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["id"] == id))
            .collect()
    }

    /// Checks a stand-in request's `Countersign-Signature` with `id`'s secret.
    #[track_caller]
    pub fn assert_signed(&self, r: &super::Received, id: &str) {
        let sig = r
            .header(shared::webhook::SIGNATURE_HEADER)
            .unwrap_or_else(|| panic!("no Countersign-Signature on {} {}", r.method, r.uri));
        shared::webhook::verify(
            &self.webhook_secret(id),
            sig,
            &r.body,
            Timestamp::now(),
            shared::webhook::DEFAULT_TOLERANCE_SECS,
        )
        .unwrap_or_else(|e| panic!("bad signature {sig:?} on {}: {e}", r.uri));
        assert!(
            r.header(shared::webhook::EVENT_ID_HEADER)
                .is_some_and(|v| !v.is_empty()),
            "no Countersign-Event-Id on {}",
            r.uri
        );
    }
}

/// JSON API calls on a host.
#[allow(async_fn_in_trait)]
pub trait Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp;

    async fn get_as(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post_as(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }
}

impl Api for Host {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let bytes = match body {
            Some(b) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(serde_json::to_vec(b).unwrap())
            }
            None => Bytes::new(),
        };
        self.request(method, path, bytes, &headers).await
    }
}

/// Asserts an RFC 9457 problem answer with `status`; returns the problem.
#[track_caller]
pub fn assert_problem(r: &Resp, status: u16, what: &str) -> Value {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{what}: unexpected status; body: {}",
        r.text()
    );
    assert_problem_shape(r, what)
}

/// Asserts the answer is problem details for a 4xx (whichever).
#[track_caller]
pub fn assert_problem_shape(r: &Resp, what: &str) -> Value {
    assert_problem_class(r, 4, what)
}

/// Asserts the answer is problem details with a status of `class`xx (4 or 5).
#[track_caller]
pub fn assert_problem_class(r: &Resp, class: u16, what: &str) -> Value {
    let s = r.status.as_u16();
    assert!(
        s / 100 == class,
        "{what}: expected a {class}xx, got {s}: {}",
        r.text()
    );
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "{what}: content-type {ct:?}, body {}",
        r.text()
    );
    let p: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: problem is not JSON ({e}): {}", r.text()));
    for f in ["type", "title", "detail"] {
        assert!(
            p[f].as_str().is_some_and(|v| !v.is_empty()),
            "{what}: problem without `{f}`: {p}"
        );
    }
    assert_eq!(p["status"], s, "{what}: problem status differs: {p}");
    p
}

/// Polls until `f` returns `Some`, up to `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `countersign <args>`; returns (success, stdout + stderr).
pub fn run_cli(args: &[&str], dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(super::host_binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run countersign");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
