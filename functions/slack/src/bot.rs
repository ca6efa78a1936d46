//! The outbound Slack Web API client: `chat.postMessage`, `chat.update`, `response_url`, each
//! one bounded call ([`adapter::outbound`] timeouts).

use adapter::outbound;
use serde_json::{json, Value};
use shared::slack::api_result;

use crate::config;

/// A failed Web API call; `retry_after` (seconds) when Slack answered 429 with `Retry-After`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    pub retry_after: Option<u64>,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            retry_after: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.retry_after {
            Some(s) => write!(f, "{} (Retry-After: {s} s)", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Calls a Web API method with the bot token; `Ok` only for HTTP 200 `ok: true`.
pub fn call(method: &str, body: &Value) -> Result<Value, Failure> {
    let token = config::bot_token().map_err(|e| e.to_string())?;
    let url = format!("{}/{method}", config::api_base());
    let auth = format!("Bearer {token}");
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let headers = [
        ("content-type", "application/json; charset=utf-8"),
        ("authorization", auth.as_str()),
    ];
    let reply = outbound::send("POST", &url, &headers, &body)
        .map_err(|e| format!("{method} failed: {e}"))?;
    api_result(reply.status, &reply.body).map_err(|e| Failure {
        message: format!("{method} {e}"),
        retry_after: if reply.status == 429 {
            reply.retry_after.or(Some(1))
        } else {
            None
        },
    })
}

/// `chat.postMessage`; the `(channel, ts)` of the message.
pub fn post_message(
    channel: &str,
    text: &str,
    blocks: &[Value],
) -> Result<(String, String), Failure> {
    let v = call(
        "chat.postMessage",
        &json!({"channel": channel, "text": text, "blocks": blocks}),
    )?;
    let ch = v["channel"].as_str().unwrap_or(channel).to_string();
    let ts = v["ts"]
        .as_str()
        .ok_or_else(|| Failure::from("chat.postMessage answered without ts".to_string()))?
        .to_string();
    Ok((ch, ts))
}

/// `chat.update` of a message.
pub fn update(channel: &str, ts: &str, text: &str, blocks: &[Value]) -> Result<(), Failure> {
    call(
        "chat.update",
        &json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks}),
    )
    .map(|_| ())
}

/// POSTs a message to an interaction's `response_url` (no token: the URL is the credential).
pub fn respond(response_url: &str, body: &Value) -> Result<(), String> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let reply = outbound::send(
        "POST",
        response_url,
        &[("content-type", "application/json")],
        &body,
    )?;
    if reply.ok() {
        Ok(())
    } else {
        Err(format!("response_url answered {}", reply.status))
    }
}
