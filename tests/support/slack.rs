//! A stand-in for the Slack Web API (`/api/chat.postMessage`, `/api/chat.update`) and for
//! interaction `response_url`s (`/response/...`). It checks what Slack checks — the bearer
//! token, the JSON shape, Block Kit limits — records every call, and can answer 429 with
//! `Retry-After` or be slow on `response_url`.

#![allow(dead_code)]
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

pub const BOT_TOKEN: &str = "xoxb-test-token";
pub const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";
pub const CHANNEL: &str = "C0REVIEW";

/// One call the stand-in received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: std::time::Instant,
    pub path: String,
    pub body: Value,
    /// Why the stand-in refused it (shape or limits), if it did.
    pub violation: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Call>>,
    /// How many of the next postMessage calls answer 429.
    rate_limit_next: AtomicU32,
    /// Delay of response_url answers (ms).
    response_delay_ms: AtomicU64,
    seq: AtomicU64,
    /// `Retry-After` of 429 answers (seconds; 0 = 1).
    retry_after: AtomicU64,
}

pub struct FakeSlack {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

fn check_message(body: &Value, need_ts: bool) -> Result<(), String> {
    let o = body.as_object().ok_or("body is not an object")?;
    if !o.get("channel").is_some_and(Value::is_string) {
        return Err("channel_not_found".into());
    }
    if need_ts && !o.get("ts").is_some_and(Value::is_string) {
        return Err("message_not_found".into());
    }
    check_blocks(body)
}

fn check_blocks(body: &Value) -> Result<(), String> {
    if body
        .get("text")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("no_text".into());
    }
    let blocks = body
        .get("blocks")
        .and_then(Value::as_array)
        .ok_or("invalid_blocks: blocks missing")?;
    for b in blocks {
        if !b.get("type").is_some_and(Value::is_string) {
            return Err("invalid_blocks: block without type".into());
        }
    }
    shared::slack::check_limits(blocks).map_err(|e| format!("invalid_blocks: {e}"))
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = super::serve_http(listener, move |req, raw| {
            let st = st.clone();
            async move { serve(&st, req, raw).await }
        });
        FakeSlack { port, state, task }
    }

    /// Points a host's Slack channel at this stand-in (bot token, signing secret, channel).
    pub fn configure(&self, b: super::HostBuilder) -> super::HostBuilder {
        b.env("SPIN_VARIABLE_SLACK_BOT_TOKEN", BOT_TOKEN)
            .env("SPIN_VARIABLE_SLACK_SIGNING_SECRET", SIGNING_SECRET)
            .env("SPIN_VARIABLE_SLACK_CHANNEL", CHANNEL)
            .env("SPIN_VARIABLE_SLACK_API_BASE", &self.api_base())
    }

    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    pub fn response_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/response/{name}", self.port)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn calls_to(&self, path_suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.ends_with(path_suffix))
            .collect()
    }

    pub fn rate_limit_next(&self, n: u32) {
        self.state.rate_limit_next.store(n, Ordering::SeqCst);
    }

    /// Answers the next `n` postMessage calls with 429 and `Retry-After: secs`.
    pub fn rate_limit_next_for(&self, n: u32, secs: u64) {
        self.state.retry_after.store(secs, Ordering::SeqCst);
        self.rate_limit_next(n);
    }

    pub fn set_response_delay(&self, d: Duration) {
        self.state
            .response_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Waits until some call satisfies `pred`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Call) -> bool) -> Option<Call> {
        super::poll_until(timeout, || self.calls().into_iter().find(|c| pred(c))).await
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: u16, body: Value, retry_after: Option<&str>) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(r) = retry_after {
        b = b.header("retry-after", r);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn serve(
    st: &State,
    req: hyper::http::request::Parts,
    raw: Bytes,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri.path().to_string();
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ct = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let record = |violation: Option<String>, status: u16| {
        st.calls.lock().unwrap().push(Call {
            at: std::time::Instant::now(),
            path: path.clone(),
            body: body.clone(),
            violation,
            status,
        });
    };
    if path.starts_with("/response/") {
        let delay = st.response_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let violation = if !ct.starts_with("application/json") {
            Some("content-type".to_string())
        } else if body.get("response_type") == Some(&json!("ephemeral")) {
            body.get("text")
                .and_then(Value::as_str)
                .is_none()
                .then(|| "ephemeral without text".into())
        } else {
            check_blocks(&body).err()
        };
        let status = if violation.is_some() { 400 } else { 200 };
        record(violation, status);
        return reply(status, json!({"ok": status == 200}), None);
    }
    if auth.as_deref() != Some(&format!("Bearer {BOT_TOKEN}")) {
        record(Some("invalid_auth".into()), 200);
        return reply(200, json!({"ok": false, "error": "invalid_auth"}), None);
    }
    if !ct.starts_with("application/json") {
        record(Some("content-type".into()), 200);
        return reply(
            200,
            json!({"ok": false, "error": "invalid_form_data"}),
            None,
        );
    }
    match path.as_str() {
        "/api/chat.postMessage" => {
            if st
                .rate_limit_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                record(None, 429);
                let secs = st.retry_after.load(Ordering::SeqCst).max(1).to_string();
                return reply(
                    429,
                    json!({"ok": false, "error": "ratelimited"}),
                    Some(&secs),
                );
            }
            if let Err(e) = check_message(&body, false) {
                record(Some(e.clone()), 200);
                return reply(200, json!({"ok": false, "error": e}), None);
            }
            let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
            record(None, 200);
            reply(
                200,
                json!({"ok": true, "channel": body["channel"], "ts": format!("1700000000.{n:06}")}),
                None,
            )
        }
        "/api/chat.update" => {
            if let Err(e) = check_message(&body, true) {
                record(Some(e.clone()), 200);
                return reply(200, json!({"ok": false, "error": e}), None);
            }
            record(None, 200);
            reply(
                200,
                json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}),
                None,
            )
        }
        _ => {
            record(Some("unknown_method".into()), 404);
            reply(404, json!({"ok": false, "error": "unknown_method"}), None)
        }
    }
}

/// Whether a message's blocks hold buttons.
pub fn has_buttons(body: &Value) -> bool {
    body["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|b| b["type"] == "actions")
}

/// A `block_actions` form body, as Slack sends it.
pub fn click_body(team: &str, user: &str, action: &str, id: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "token": "legacy-ignored",
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": team},
        "team": {"id": team, "domain": "test"},
        "enterprise": null,
        "api_app_id": "A1",
        "container": {"type": "message", "message_ts": "1700000000.000001",
                      "channel_id": CHANNEL, "is_ephemeral": false},
        "channel": {"id": CHANNEL, "name": "reviews"},
        "trigger_id": "1.2.3",
        "response_url": response_url,
        "actions": [{"action_id": action, "block_id": format!("review:{id}"), "value": id,
                     "type": "button", "action_ts": "1700000000.1"}],
    });
    format!("payload={}", super::enc(&payload.to_string()))
}

/// `(X-Slack-Request-Timestamp, X-Slack-Signature)` for `body` signed at `ts` with `secret`.
pub fn sign(secret: &str, ts: i64, body: &str) -> (String, String) {
    let t = ts.to_string();
    let s = shared::slack::signature(secret, &t, body.as_bytes());
    (t, s)
}
