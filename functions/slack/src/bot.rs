//! The outbound Slack Web API client: `chat.postMessage`, `chat.update`, `response_url`.

use adapter::post_json;
use serde_json::{json, Value};
use shared::slack::api_result;
use spin_sdk::http::{Method, Request, Response};

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
pub async fn call(method: &str, body: &Value) -> Result<Value, Failure> {
    let token = config::bot_token().map_err(|e| e.to_string())?;
    let url = format!("{}/{method}", config::api_base());
    let request = Request::builder()
        .method(Method::Post)
        .uri(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("authorization", format!("Bearer {token}"))
        .body(serde_json::to_vec(body).map_err(|e| e.to_string())?)
        .build();
    let response: Response = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("{method} failed: {e}"))?;
    let status = *response.status();
    let retry_after = response
        .header("retry-after")
        .and_then(|v| v.as_str())
        .and_then(|s| s.trim().parse::<u64>().ok());
    api_result(status, response.body()).map_err(|e| Failure {
        message: format!("{method} {e}"),
        retry_after: if status == 429 {
            retry_after.or(Some(1))
        } else {
            None
        },
    })
}

/// `chat.postMessage`; the `(channel, ts)` of the message.
pub async fn post_message(
    channel: &str,
    text: &str,
    blocks: &[Value],
) -> Result<(String, String), Failure> {
    let v = call(
        "chat.postMessage",
        &json!({"channel": channel, "text": text, "blocks": blocks}),
    )
    .await?;
    let ch = v["channel"].as_str().unwrap_or(channel).to_string();
    let ts = v["ts"]
        .as_str()
        .ok_or_else(|| Failure::from("chat.postMessage answered without ts".to_string()))?
        .to_string();
    Ok((ch, ts))
}

/// `chat.update` of a message.
pub async fn update(channel: &str, ts: &str, text: &str, blocks: &[Value]) -> Result<(), Failure> {
    call(
        "chat.update",
        &json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks}),
    )
    .await
    .map(|_| ())
}

/// POSTs a message to an interaction's `response_url` (no token: the URL is the credential).
pub async fn respond(response_url: &str, body: &Value) -> Result<(), String> {
    let (status, _) = post_json(
        response_url,
        &[],
        serde_json::to_vec(body).map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("response_url answered {status}"))
    }
}
