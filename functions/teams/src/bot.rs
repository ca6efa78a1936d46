//! The outbound Bot Framework client: the bot token (client credentials, cached in the
//! key-value store until shortly before it expires) and the connector's activities API (post,
//! update, reply). Every call is one bounded attempt ([`adapter::outbound`] timeouts); any
//! failure is `Unavailable`, which the jobs module audits and the sweep retries.

use adapter::outbound;
use serde_json::Value;
use shared::store::{self, Kv};
use shared::teams::{self, BotToken};
use shared::{Error, Result, Timestamp};

use crate::config;

/// `teams:token`: the cached bot token (JSON [`BotToken`]; a bearer credential for about an
/// hour, kept where the app's state is).
const TOKEN_KEY: &str = "teams:token";

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

/// A usable bot token: the cached one, or a new one from the token endpoint.
fn token(kv: &impl Kv) -> Result<String> {
    let now = Timestamp::now();
    if let Some(t) = store::get_json::<BotToken>(kv, TOKEN_KEY)? {
        if t.usable(now) {
            return Ok(t.access_token);
        }
    }
    let app_id = config::app_id().ok_or_else(|| Error::Config("teams_app_id is not set".into()))?;
    let form = teams::token_form(&app_id, &config::app_password()?);
    let url = teams::token_url(&config::token_url(), &config::tenant_id()?);
    let reply = outbound::send(
        "POST",
        &url,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .map_err(|e| unavailable("token endpoint", e))?;
    let token = teams::parse_token_answer(reply.status, &reply.body, Timestamp::now())
        .map_err(|e| unavailable("bot token", e))?;
    if let Err(e) = store::set_json(kv, TOKEN_KEY, &token) {
        eprintln!("countersign: could not cache the Teams bot token: {e}");
    }
    Ok(token.access_token)
}

/// One connector call with the bot token; the answer's JSON (`Null` when empty).
fn call(kv: &impl Kv, method: &str, url: &str, body: &Value) -> Result<Value> {
    let auth = format!("Bearer {}", token(kv)?);
    let body = serde_json::to_vec(body).map_err(|e| Error::Store(e.to_string()))?;
    let headers = [
        ("content-type", "application/json; charset=utf-8"),
        ("authorization", auth.as_str()),
    ];
    let reply = outbound::send(method, url, &headers, &body)
        .map_err(|e| unavailable("Teams connector", e))?;
    if reply.status == 401 || reply.status == 403 {
        // A revoked or rotated credential: fetch a new token on the next attempt.
        let _ = kv.delete(TOKEN_KEY);
    }
    if !reply.ok() {
        let code = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        let retry = reply
            .retry_after
            .map(|s| format!(", Retry-After {s} s"))
            .unwrap_or_default();
        return Err(Error::Unavailable(format!(
            "Teams connector answered {} {}{retry}",
            reply.status,
            code.unwrap_or_default()
        )));
    }
    Ok(serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
}

fn url(service_url: &str, conversation: &str, activity: Option<&str>) -> Result<String> {
    teams::activities_url(service_url, conversation, activity)
        .map_err(|e| Error::Config(format!("teams_service_url: {e}")))
}

/// Posts a new message; its activity id.
pub fn post(
    kv: &impl Kv,
    service_url: &str,
    conversation: &str,
    message: &Value,
) -> Result<String> {
    let answer = call(kv, "POST", &url(service_url, conversation, None)?, message)?;
    answer["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::Unavailable("Teams connector answered without an activity id".into()))
}

/// Replaces an activity (PUT) with `message`.
pub fn update(
    kv: &impl Kv,
    service_url: &str,
    conversation: &str,
    activity_id: &str,
    message: &Value,
) -> Result<()> {
    let mut message = message.clone();
    message["id"] = Value::String(activity_id.to_string());
    at_activity(kv, "PUT", service_url, conversation, activity_id, &message)
}

/// Replies to an activity in its conversation.
pub fn reply(
    kv: &impl Kv,
    service_url: &str,
    conversation: &str,
    activity_id: &str,
    message: &Value,
) -> Result<()> {
    at_activity(kv, "POST", service_url, conversation, activity_id, message)
}

/// `method` on one activity's URL.
fn at_activity(
    kv: &impl Kv,
    method: &str,
    service_url: &str,
    conversation: &str,
    activity_id: &str,
    message: &Value,
) -> Result<()> {
    let url = url(service_url, conversation, Some(activity_id))?;
    call(kv, method, &url, message).map(|_| ())
}
