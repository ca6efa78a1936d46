//! The benchmark scenarios. To add one, add an entry to [`all`]: a name, the request and a mode.

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
}

/// One request shape driven in one mode. In `path` and `body`, `{seq}` is replaced by a number
/// unique within the run (for scenarios that need distinct keys or idempotency ids).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
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
            method: Method::GET,
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            mode,
            expect_status: 200,
        }
    }

    /// `GET` by default; builder helpers for entries that need more.
    #[allow(dead_code)]
    fn with_request(mut self, method: Method, headers: &[(&str, &str)], body: &str) -> Self {
        self.method = method;
        self.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.body = Bytes::from(body.to_string());
        self
    }

    #[allow(dead_code)]
    fn expecting(mut self, status: u16) -> Self {
        self.expect_status = status;
        self
    }
}

/// Every scenario, in run order. `rate` is `--rate` (open-loop scenarios).
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
    ]
}

fn fmt_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate}")
    }
}
