//! Slack rules (PROTOCOLS.md "Slack"), platform-free so they are unit tested natively:
//! request signing, Block Kit limits, the review card and the outcome card, and the parsing of
//! `block_actions` payloads.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::{ActionRecord, Decision};
use crate::review;
use crate::time::Timestamp;
use crate::webhook::{ct_eq, hmac_sha256};

/// Largest accepted clock difference of `X-Slack-Request-Timestamp` (seconds).
pub const MAX_SKEW_SECS: i64 = 300;
/// Block Kit limits.
pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_BUTTON_VALUE: usize = 2000;
pub const MAX_ID: usize = 255;
/// Fallback `text` is kept well under Slack's 40,000.
pub const MAX_TEXT: usize = 3000;

pub const APPROVE_ACTION: &str = "approve";
pub const DENY_ACTION: &str = "deny";

/// The expected `X-Slack-Signature` for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    format!("v0={}", hex::encode(hmac_sha256(secret.as_bytes(), &base)))
}

/// Verifies Slack's signature over the raw body, before anything else is read.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<()> {
    let (Some(ts), Some(sig)) = (timestamp, signature_header) else {
        return Err(Error::Unauthorized(
            "missing Slack signature headers".into(),
        ));
    };
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| Error::Unauthorized("malformed Slack timestamp".into()))?;
    if (now.unix() - t).abs() > MAX_SKEW_SECS {
        return Err(Error::Unauthorized(
            "Slack timestamp outside the accepted window".into(),
        ));
    }
    let expected = signature(secret, ts.trim(), body);
    if ct_eq(expected.as_bytes(), sig.trim().as_bytes()) {
        Ok(())
    } else {
        Err(Error::Unauthorized("wrong Slack signature".into()))
    }
}

pub use crate::review::truncate;

/// Escapes `&`, `<`, `>` for Slack mrkdwn.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_TEXT)}})
}

fn field(label: &str, value: &str) -> String {
    format!("*{label}:* {}", escape(value))
}

/// The top of every card: what is asked, by whom, on what ([`review::fact_groups`]).
fn details(r: &ActionRecord, owner: &str) -> Vec<Value> {
    let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text",
        "text": truncate(&review::title(r), 150)}})];
    for group in review::fact_groups(r, owner) {
        let lines: Vec<String> = group.iter().map(|(l, v)| field(l, v)).collect();
        blocks.push(section(&lines.join("\n")));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": truncate(&format!("Request `{}` · digest `{}`", r.id, r.digest), 3000)}]}));
    blocks
}

/// Fallback notification text.
pub fn fallback_text(r: &ActionRecord) -> String {
    truncate(&review::summary(r), MAX_TEXT)
}

/// The review card of a pending request: details plus Approve and Deny.
pub fn review_blocks(r: &ActionRecord, owner: &str) -> Vec<Value> {
    let mut blocks = details(r, owner);
    let value = truncate(&r.id, MAX_BUTTON_VALUE);
    blocks.push(
        json!({"type": "actions", "block_id": truncate(&format!("review:{}", r.id), MAX_ID),
        "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"}, "value": value},
            {"type": "button", "action_id": DENY_ACTION, "style": "danger",
             "text": {"type": "plain_text", "text": "Deny"}, "value": value},
        ]}),
    );
    blocks
}

/// The outcome card: details, then who decided, when, and the state; no buttons.
pub fn outcome_blocks(r: &ActionRecord, owner: &str, now: Timestamp) -> Vec<Value> {
    let r = r.at(now);
    let mut blocks = details(&r, owner);
    blocks.push(section(&outcome_line(&r)));
    blocks
}

/// "*Approved* by alice (slack) at …".
pub fn outcome_line(r: &ActionRecord) -> String {
    review::outcome(r).line(|s| format!("*{s}*"), escape)
}

/// Checks a message against Block Kit limits (used by the tests' stand-in as well).
pub fn check_limits(blocks: &[Value]) -> std::result::Result<(), String> {
    if blocks.len() > MAX_BLOCKS {
        return Err(format!("{} blocks", blocks.len()));
    }
    for b in blocks {
        if let Some(id) = b.get("block_id").and_then(Value::as_str) {
            if id.chars().count() > MAX_ID {
                return Err("block_id too long".into());
            }
        }
        if b["type"] == "section" {
            let t = b["text"]["text"].as_str().unwrap_or("");
            if t.chars().count() > MAX_SECTION_TEXT {
                return Err("section text too long".into());
            }
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            if e["type"] == "button" {
                let text = e["text"]["text"].as_str().unwrap_or("");
                let value = e["value"].as_str().unwrap_or("");
                let id = e["action_id"].as_str().unwrap_or("");
                if text.chars().count() > MAX_BUTTON_TEXT
                    || value.chars().count() > MAX_BUTTON_VALUE
                    || id.chars().count() > MAX_ID
                {
                    return Err("button over limits".into());
                }
            }
        }
    }
    Ok(())
}

/// A click from a `block_actions` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub team: String,
    pub user: String,
    pub request_id: String,
    pub decision: Decision,
    pub response_url: Option<String>,
    pub channel: Option<String>,
    pub message_ts: Option<String>,
}

/// Parses the form body (`payload=<json>`) of an interaction; the signature must have been
/// verified first. The legacy `token` field is ignored.
pub fn parse_click(form_body: &[u8]) -> Result<Click> {
    let payload = form_urlencoded_payload(form_body)
        .ok_or_else(|| Error::invalid("payload", "is required"))?;
    let v: Value = serde_json::from_str(&payload)?;
    if v["type"] != "block_actions" {
        return Err(Error::invalid("type", "only block_actions is handled"));
    }
    let s = |x: &Value| x.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let team = s(&v["team"]["id"])
        .or_else(|| s(&v["user"]["team_id"]))
        .ok_or_else(|| Error::invalid("team.id", "is required"))?;
    let user = s(&v["user"]["id"]).ok_or_else(|| Error::invalid("user.id", "is required"))?;
    let action = &v["actions"][0];
    let decision = match action["action_id"].as_str() {
        Some(APPROVE_ACTION) => Decision::Approve,
        Some(DENY_ACTION) => Decision::Deny,
        _ => return Err(Error::invalid("actions", "unknown action")),
    };
    let request_id =
        s(&action["value"]).ok_or_else(|| Error::invalid("actions.value", "is required"))?;
    Ok(Click {
        team,
        user,
        request_id,
        decision,
        response_url: s(&v["response_url"]),
        channel: s(&v["container"]["channel_id"]).or_else(|| s(&v["channel"]["id"])),
        message_ts: s(&v["container"]["message_ts"]).or_else(|| s(&v["message"]["ts"])),
    })
}

fn form_urlencoded_payload(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    for pair in text.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "payload" {
            return percent_decode(v);
        }
    }
    None
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A Web API answer: `Ok(body)` when `ok: true`.
pub fn api_result(status: u16, body: &[u8]) -> std::result::Result<Value, String> {
    if status == 429 {
        return Err("rate limited (429)".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| format!("answered {status}"))?;
    if status == 200 && v["ok"] == true {
        Ok(v)
    } else {
        Err(format!(
            "answered {status}: {}",
            v["error"].as_str().unwrap_or("not ok")
        ))
    }
}

/// An ephemeral answer to the clicker.
pub fn ephemeral(text: &str) -> Value {
    json!({"response_type": "ephemeral", "replace_original": false, "text": truncate(text, MAX_TEXT)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_roundtrip_and_failures() {
        let now = Timestamp::from_unix(1_700_000_000);
        let body = b"payload=%7B%7D";
        let sig = signature("secret", "1700000000", body);
        assert!(verify("secret", Some("1700000000"), Some(&sig), body, now).is_ok());
        assert!(verify("other", Some("1700000000"), Some(&sig), body, now).is_err());
        assert!(verify("secret", Some("1700000000"), Some(&sig), b"payload=x", now).is_err());
        assert!(verify("secret", None, Some(&sig), body, now).is_err());
        assert!(verify("secret", Some("1700000000"), None, body, now).is_err());
        let stale = signature("secret", "1699999699", body);
        assert!(verify("secret", Some("1699999699"), Some(&stale), body, now).is_err());
        let future = signature("secret", "1700000301", body);
        assert!(verify("secret", Some("1700000301"), Some(&future), body, now).is_err());
        let edge = signature("secret", "1699999700", body);
        assert!(verify("secret", Some("1699999700"), Some(&edge), body, now).is_ok());
    }

    #[test]
    fn slack_documented_example() {
        // Slack's documentation example.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn truncate_keeps_characters_whole() {
        let s = "é".repeat(10);
        let t = truncate(&s, 5);
        assert_eq!(t.chars().count(), 5);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn parse_click_reads_identity_and_action() {
        let payload = json!({"type": "block_actions", "token": "ignored",
            "user": {"id": "U1", "team_id": "T1"}, "team": {"id": "T1"},
            "container": {"channel_id": "C1", "message_ts": "1.2"},
            "response_url": "http://x/y",
            "actions": [{"action_id": "approve", "value": "act_1"}]});
        let body = format!(
            "payload={}",
            serde_json::to_string(&payload)
                .unwrap()
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        );
        let c = parse_click(body.as_bytes()).unwrap();
        assert_eq!(c.team, "T1");
        assert_eq!(c.user, "U1");
        assert_eq!(c.request_id, "act_1");
        assert_eq!(c.decision, Decision::Approve);
        assert_eq!(c.message_ts.as_deref(), Some("1.2"));
        assert!(parse_click(b"payload=%7B%7D").is_err());
    }

    #[test]
    fn limits_checked() {
        let big = vec![json!({"type": "divider"}); 51];
        assert!(check_limits(&big).is_err());
        assert!(check_limits(&[section(&"x".repeat(5000))]).is_ok());
    }
}
