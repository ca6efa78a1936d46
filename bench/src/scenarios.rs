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
}

/// Which app a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum App {
    /// `--manifest` (default tests/apps/host/spin.toml): the trivial and probe components.
    Test,
    /// `--app-manifest` (default the top-level spin.toml), run with a bench directory and
    /// policy (see `app.rs`).
    Real,
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
            app: App::Real,
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
    ]
}

fn fmt_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate}")
    }
}
