//! The benchmark scenarios. To add one, add an entry to [`all`]: a name, the app it runs on, the
//! request and a mode.

use bytes::Bytes;
use http::Method;

/// Name of the scenario every other saturation figure is compared to (`--ratio-to` default).
pub const FLOOR: &str = "trivial saturation";

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Closed loop: `--connections` keep-alive connections, each sending its next request as soon
    /// as the previous answer is read. Measures capacity.
    Saturation,
    /// Open loop: requests sent on a fixed schedule at this many per second, whatever the answers
    /// do; latency counts from the scheduled send time (no coordinated omission).
    OpenLoop { rate: f64 },
    /// Approval round trips, this many in flight: the scenario's request (a sensitive action with
    /// a `callback_url`, answered 202), then the approver's `approve` (200), then the wait for
    /// the callback at the bench's stand-in. Latency: first send → callback received.
    RoundTrip { concurrency: usize },
    /// Memory under a stored backlog: first `pending` requests that wait for approval are
    /// stored ([`pending_request`], `clients` connections), then `clients` connections send
    /// mixed traffic, one the scenario's request, one a read of a stored request
    /// ([`read_request`]), in turn. Peak RSS covers both phases.
    Mixed { pending: u64, clients: usize },
}

/// Which app a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum App {
    /// `--manifest` (default tests/apps/host/spin.toml): the trivial and probe components.
    Test,
    /// `--app-manifest` (default the top-level spin.toml), run with a bench directory and
    /// policy (see `app.rs`), set up as said. Each setup gets a host of its own.
    Real(Setup),
}

/// How the real app's host is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The bench policy; the key-value store in the state folder (or `--runtime-config-file`).
    Default,
    /// The bench policy plus this many policies that never apply to the bench's requests.
    ExtraPolicies(usize),
    /// The key-value store on Redis (`--redis-url`, emptied with `FLUSHDB` first); skipped
    /// when Redis does not answer.
    Redis,
    /// As `Default`, on a host nothing else ran on (so its memory is the scenario's own).
    OwnHost,
}

/// One request shape driven in one mode. In `path` and `body`, `{seq}` is replaced by a number
/// unique within the run (for scenarios that need distinct keys or idempotency ids). On the real
/// app, `{agent_token}` (header values) and `{callback_url}` (body) are the bench deployment's.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub app: App,
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub mode: Mode,
    /// The status that counts as success; anything else (or a transport error) is an error.
    pub expect_status: u16,
}

impl Scenario {
    fn get(name: impl Into<String>, path: &str, mode: Mode) -> Self {
        Scenario {
            name: name.into(),
            app: App::Test,
            method: Method::GET,
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            mode,
            expect_status: 200,
        }
    }

    /// A `POST` of a JSON body by the bench agent on the real app.
    fn agent_post(name: impl Into<String>, path: &str, body: &str, mode: Mode) -> Self {
        Scenario {
            app: App::Real(Setup::Default),
            ..Scenario::get(name, path, mode)
        }
        .with_request(
            Method::POST,
            &[
                ("authorization", "Bearer {agent_token}"),
                ("content-type", "application/json"),
            ],
            body,
        )
    }

    /// The same on a real-app host set up as `setup`.
    fn on(mut self, setup: Setup) -> Self {
        self.app = App::Real(setup);
        self
    }

    fn with_request(mut self, method: Method, headers: &[(&str, &str)], body: &str) -> Self {
        self.method = method;
        self.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.body = Bytes::from(body.to_string());
        self
    }

    fn expecting(mut self, status: u16) -> Self {
        self.expect_status = status;
        self
    }

    /// Replaces `{name}` placeholders in header values and the body.
    pub fn resolve(&self, vars: &[(&str, &str)]) -> Scenario {
        let fill = |s: &str| {
            vars.iter()
                .fold(s.to_string(), |s, (k, v)| s.replace(&format!("{{{k}}}"), v))
        };
        let mut out = self.clone();
        for (_, v) in &mut out.headers {
            *v = fill(v);
        }
        out.body = Bytes::from(fill(&String::from_utf8_lossy(&self.body)));
        out
    }
}

/// A routine action: the bench policy permits `db.query` with no approval.
const ROUTINE: &str = r#"{"action":"db.query","resource":{"type":"Dataset","id":"x"}}"#;
/// A sensitive action: `db.export` needs one approver of `ops`.
const SENSITIVE: &str = r#"{"action":"db.export","resource":{"type":"Dataset","id":"x"},"callback_url":"{callback_url}"}"#;

/// A request the bench policy sends to approval (`db.export`: one approver of `ops`), with no
/// callback: it stays pending (answered 202).
const PENDING: &str = r#"{"action":"db.export","resource":{"type":"Dataset","id":"x"}}"#;

/// Requests stored before a [`Mode::Mixed`] run.
pub fn pending_request() -> Scenario {
    Scenario::agent_post("store pending", "/v1/actions", PENDING, Mode::Saturation).expecting(202)
}

/// The agent reading one of its requests back; `{id}` is a stored request's id.
pub fn read_request() -> Scenario {
    let mut read = Scenario::agent_post("read", "/v1/actions/{id}", "", Mode::Saturation);
    read.method = Method::GET;
    read.headers.retain(|(k, _)| k == "authorization");
    read
}

/// Every scenario, in run order (test-app scenarios first). `rate` is `--rate` (open-loop
/// scenarios).
pub fn all(rate: f64) -> Vec<Scenario> {
    vec![
        // The floor: a component that answers "ok". Everything else is compared to it.
        Scenario::get(FLOOR, "/trivial", Mode::Saturation),
        Scenario::get(
            format!("trivial open-loop {}/s", fmt_rate(rate)),
            "/trivial",
            Mode::OpenLoop { rate },
        ),
        // One SQLite-backed atomic increment per request, all on one key.
        Scenario::get(
            "probe kv incr saturation",
            "/probe/kv/incr?key=bench&delta=1",
            Mode::Saturation,
        ),
        // The real app: a routine decision (intake → policy, stored, audited, grant signed).
        Scenario::agent_post(
            "routine decision saturation",
            "/v1/actions",
            ROUTINE,
            Mode::Saturation,
        ),
        Scenario::agent_post(
            format!("routine decision open-loop {}/s", fmt_rate(rate)),
            "/v1/actions",
            ROUTINE,
            Mode::OpenLoop { rate },
        ),
        // Request (202) → approve (200) → signed callback at the stand-in.
        Scenario::agent_post(
            "approval round trip",
            "/v1/actions",
            SENSITIVE,
            Mode::RoundTrip { concurrency: 4 },
        )
        .expecting(202),
        // The same routine decision with a large policy set (Cedar looks at every policy).
        Scenario::agent_post(
            format!("routine decision, {EXTRA_POLICIES} policies"),
            "/v1/actions",
            ROUTINE,
            Mode::Saturation,
        )
        .on(Setup::ExtraPolicies(EXTRA_POLICIES)),
        // The same with the key-value store on Redis instead of SQLite.
        Scenario::agent_post(
            "routine decision on Redis",
            "/v1/actions",
            ROUTINE,
            Mode::Saturation,
        )
        .on(Setup::Redis),
        // Memory with a stored backlog: routine decisions and reads of pending requests.
        Scenario::agent_post(
            format!(
                "memory, {}k pending + {MIXED_CLIENTS} clients",
                MIXED_PENDING / 1000
            ),
            "/v1/actions",
            ROUTINE,
            Mode::Mixed {
                pending: MIXED_PENDING,
                clients: MIXED_CLIENTS,
            },
        )
        .on(Setup::OwnHost),
    ]
}

/// Policies beyond the bench's own in `routine decision, 200 policies`.
const EXTRA_POLICIES: usize = 200;
/// Pending requests stored, and connections, of the memory scenario.
const MIXED_PENDING: u64 = 10_000;
const MIXED_CLIENTS: usize = 64;

fn fmt_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate}")
    }
}
