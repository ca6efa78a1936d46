//! Microsoft Teams rules (PROTOCOLS.md "Microsoft Teams"), platform-free so they are unit
//! tested natively: the Adaptive Card (review and outcome), the activities a Bot Framework bot
//! receives (`invoke` `adaptiveCard/action` from Action.Execute, `message` with `value` from the
//! Action.Submit fallback), the invoke answers, the checks of a Bot Framework token's claims and
//! signing key against the activity, and the caches of the bot token and the JWKS.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::crypto::Jwks;
use crate::error::{Error, Result};
use crate::model::{ActionRecord, Decision, Status};
use crate::review::{self, truncate};
use crate::time::Timestamp;

/// The only accepted `iss` of a token sent by the Bot Framework to a bot.
pub const ISSUER: &str = "https://api.botframework.com";
/// The channel this bot serves; the signing key must be endorsed for it.
pub const CHANNEL_ID: &str = "msteams";
/// Clock skew allowed on `exp` and `nbf` (seconds).
pub const MAX_SKEW_SECS: i64 = 300;
/// OAuth scope of the bot's client-credentials token.
pub const TOKEN_SCOPE: &str = "https://api.botframework.com/.default";
/// A cached bot token is renewed this long (seconds) before it expires.
pub const TOKEN_RENEW_BEFORE_SECS: i64 = 300;
/// Bot Framework signing keys are kept at most this long (seconds).
pub const JWKS_MAX_AGE_SECS: i64 = 24 * 3600;
/// A token naming an unknown `kid` makes the key set be fetched again, but not more often than
/// this (seconds): otherwise anyone could make every request of ours fetch from Microsoft.
pub const JWKS_REFETCH_MIN_SECS: i64 = 5;
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
pub const ERROR_CONTENT_TYPE: &str = "application/vnd.microsoft.error";
/// Teams refuses messages over about 80 KB (`MessageSizeTooBig`); cards stay well under.
pub const MAX_CARD_BYTES: usize = 40_000;
/// The longest fact value shown before the size budget shortens them further.
const MAX_FACT_CHARS: usize = 3000;
/// `data.countersign` of the Action.Submit fallback: marks a vote of ours in a `message`.
pub const SUBMIT_MARKER: &str = "vote";

/// Neutralises the Adaptive Card markdown that could mislead a reviewer (links, bold, code,
/// headings, HTML-ish brackets) in text an agent wrote: a request cannot add a link that looks
/// like ours or dress up its card. `_` and parentheses stay readable (ids, names).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '*' | '[' | ']' | '`' | '<' | '>' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn text_block(text: &str, extra: Value) -> Value {
    let mut b = json!({"type": "TextBlock", "text": text, "wrap": true});
    if let (Value::Object(b), Value::Object(extra)) = (&mut b, extra) {
        b.extend(extra);
    }
    b
}

/// The card's body: title, the facts ([`review::fact_groups`]) as fact sets, request id and
/// digest. Fact values are cut at `max_chars`.
fn details(r: &ActionRecord, owner: &str, max_chars: usize) -> Vec<Value> {
    let mut body = vec![text_block(
        &escape(&truncate(&review::title(r), 200)),
        json!({"size": "Medium", "weight": "Bolder"}),
    )];
    for group in review::fact_groups(r, owner) {
        let facts: Vec<Value> = group
            .iter()
            .map(|(title, value)| json!({"title": title, "value": escape(&truncate(value, max_chars))}))
            .collect();
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    body.push(text_block(
        &format!("Request {} · digest {}", escape(&r.id), escape(&r.digest)),
        json!({"size": "Small", "isSubtle": true}),
    ));
    body
}

fn adaptive_card(body: Vec<Value>, actions: Option<Vec<Value>>) -> Value {
    let mut card = json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
    });
    if let Some(actions) = actions {
        card["actions"] = Value::Array(actions);
    }
    card
}

/// Approve or Deny: Action.Execute (Universal Actions, answered in place), falling back to
/// Action.Submit on clients older than card schema 1.4.
fn vote_action(r: &ActionRecord, decision: Decision) -> Value {
    let (title, style) = match decision {
        Decision::Approve => ("Approve", "positive"),
        Decision::Deny => ("Deny", "destructive"),
    };
    json!({
        "type": "Action.Execute",
        "title": title,
        "verb": decision.as_str(),
        "style": style,
        "data": {"id": r.id, "decision": decision.as_str()},
        "fallback": {
            "type": "Action.Submit",
            "title": title,
            "style": style,
            "data": {"countersign": SUBMIT_MARKER, "id": r.id, "decision": decision.as_str()},
        },
    })
}

/// Renders with fact values cut shorter and shorter until the card fits [`MAX_CARD_BYTES`].
fn within_budget(render: impl Fn(usize) -> Value) -> Value {
    let mut max_chars = MAX_FACT_CHARS;
    loop {
        let card = render(max_chars);
        let size = serde_json::to_vec(&card).map(|v| v.len()).unwrap_or(0);
        if size <= MAX_CARD_BYTES || max_chars <= 100 {
            return card;
        }
        max_chars /= 2;
    }
}

/// The card that shows `r` at `now`: Approve and Deny while pending, else the outcome (state,
/// who, when; no buttons).
pub fn card(r: &ActionRecord, owner: &str, now: Timestamp) -> Value {
    let r = r.at(now);
    if r.status == Status::Pending {
        within_budget(|max| {
            adaptive_card(
                details(&r, owner, max),
                Some(vec![
                    vote_action(&r, Decision::Approve),
                    vote_action(&r, Decision::Deny),
                ]),
            )
        })
    } else {
        let outcome = review::outcome(&r);
        let color = match r.status {
            Status::Approved => "Good",
            Status::Denied => "Attention",
            _ => "Warning",
        };
        let line = outcome.line(|s| format!("**{s}**"), escape);
        within_budget(|max| {
            let mut body = details(&r, owner, max);
            body.push(text_block(
                &truncate(&line, MAX_FACT_CHARS),
                json!({"color": color, "separator": true}),
            ));
            adaptive_card(body, None)
        })
    }
}

/// The activity that posts or replaces a card (`POST`/`PUT` of the connector's activities).
pub fn message(card: &Value, summary: &str) -> Value {
    json!({
        "type": "message",
        "summary": truncate(summary, 200),
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "content": card}],
    })
}

/// A plain text reply (the Action.Submit path has no other way to tell the clicker).
pub fn text_message(text: &str) -> Value {
    json!({"type": "message", "text": escape(&truncate(text, MAX_FACT_CHARS))})
}

/// The answer to an `adaptiveCard/action` invoke that replaces the card.
pub fn invoke_card(card: &Value) -> Value {
    json!({"statusCode": 200, "type": CARD_CONTENT_TYPE, "value": card})
}

/// The answer to an `adaptiveCard/action` invoke that refuses: Teams shows `message` to the
/// clicker alone, and the card stays as it was.
pub fn invoke_error(status: u16, code: &str, message: &str) -> Value {
    json!({"statusCode": status, "type": ERROR_CONTENT_TYPE,
           "value": {"code": code, "message": truncate(message, 1000)}})
}

/// The parts of an activity countersign reads. Everything here is only as trustworthy as the
/// token that came with it: use it after [`check_activity`].
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub type_: String,
    pub name: Option<String>,
    pub channel_id: String,
    pub service_url: String,
    pub conversation_id: Option<String>,
    /// For a click: the id of the activity (card) clicked.
    pub reply_to_id: Option<String>,
    /// `channelData.tenant.id` and `from.aadObjectId`: the clicker (never the display name).
    pub tenant: Option<String>,
    pub aad_object_id: Option<String>,
    pub value: Value,
}

/// How a vote arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `invoke` `adaptiveCard/action`: answered with a card in the HTTP response.
    Execute,
    /// `message` with `value`: answered 200, the card is then updated through the connector.
    Submit,
}

/// A vote click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub request_id: String,
    pub decision: Decision,
    pub via: Via,
}

/// Parses an activity (after the token's signature and claims were checked).
pub fn parse_activity(body: &[u8]) -> Result<Activity> {
    let v: Value = serde_json::from_slice(body)?;
    if !v.is_object() {
        return Err(Error::invalid("activity", "must be a JSON object"));
    }
    let s = |x: &Value| x.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    Ok(Activity {
        type_: s(&v["type"]).ok_or_else(|| Error::invalid("type", "is required"))?,
        name: s(&v["name"]),
        channel_id: s(&v["channelId"]).ok_or_else(|| Error::invalid("channelId", "is required"))?,
        service_url: s(&v["serviceUrl"])
            .ok_or_else(|| Error::invalid("serviceUrl", "is required"))?,
        conversation_id: s(&v["conversation"]["id"]),
        reply_to_id: s(&v["replyToId"]),
        tenant: s(&v["channelData"]["tenant"]["id"]).or_else(|| s(&v["conversation"]["tenantId"])),
        aad_object_id: s(&v["from"]["aadObjectId"]),
        value: v.get("value").cloned().unwrap_or(Value::Null),
    })
}

fn decision_of(v: &Value, field: &str) -> Result<Decision> {
    match v.as_str() {
        Some("approve") => Ok(Decision::Approve),
        Some("deny") => Ok(Decision::Deny),
        _ => Err(Error::invalid(field, "must be \"approve\" or \"deny\"")),
    }
}

fn request_id_of(v: &Value, field: &str) -> Result<String> {
    v.as_str()
        .filter(|s| crate::model::is_request_id(s))
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(field, "is not a request id"))
}

impl Activity {
    pub fn is_invoke(&self) -> bool {
        self.type_ == "invoke"
    }

    /// The vote this activity carries; `None` for anything else a bot receives (installs,
    /// conversation updates, typed messages), which is acknowledged and ignored.
    pub fn click(&self) -> Result<Option<Click>> {
        match self.type_.as_str() {
            "invoke" if self.name.as_deref() == Some("adaptiveCard/action") => {
                let action = &self.value["action"];
                let decision = decision_of(&action["verb"], "value.action.verb")?;
                let data = &action["data"];
                if !data["decision"].is_null()
                    && decision_of(&data["decision"], "value.action.data.decision")? != decision
                {
                    return Err(Error::invalid(
                        "value.action.data.decision",
                        "does not match the verb",
                    ));
                }
                Ok(Some(Click {
                    request_id: request_id_of(&data["id"], "value.action.data.id")?,
                    decision,
                    via: Via::Execute,
                }))
            }
            "message" if self.value["countersign"] == SUBMIT_MARKER => Ok(Some(Click {
                request_id: request_id_of(&self.value["id"], "value.id")?,
                decision: decision_of(&self.value["decision"], "value.decision")?,
                via: Via::Submit,
            })),
            _ => Ok(None),
        }
    }

    /// `(tenant id, AAD object id)` of the sender.
    pub fn identity(&self) -> Option<(&str, &str)> {
        Some((self.tenant.as_deref()?, self.aad_object_id.as_deref()?))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(header: Option<&str>) -> Result<&str> {
    let h = header.ok_or_else(|| Error::Unauthorized("no Authorization header".into()))?;
    match h.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Error::Unauthorized(
            "Authorization is not a bearer token".into(),
        )),
    }
}

/// Checks a verified token's claims: `iss`, `aud` (the bot's app id), `exp` (required) and
/// `nbf` with [`MAX_SKEW_SECS`] of skew.
pub fn check_claims(claims: &Value, app_id: &str, now: Timestamp) -> Result<()> {
    let unauthorized = |m: &str| Err(Error::Unauthorized(m.to_string()));
    if claims["iss"] != ISSUER {
        return unauthorized("token issuer is not the Bot Framework");
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == app_id,
        Value::Array(list) => list.iter().any(|a| a == app_id),
        _ => false,
    };
    if app_id.is_empty() || !aud_ok {
        return unauthorized("token audience is not this bot");
    }
    let Some(exp) = claims["exp"].as_i64() else {
        return unauthorized("token has no exp");
    };
    if now.unix() > exp + MAX_SKEW_SECS {
        return unauthorized("token expired");
    }
    match &claims["nbf"] {
        Value::Null => {}
        v => match v.as_i64() {
            Some(nbf) if now.unix() + MAX_SKEW_SECS >= nbf => {}
            Some(_) => return unauthorized("token not valid yet"),
            None => return unauthorized("token nbf is not a number"),
        },
    }
    Ok(())
}

/// Checks what binds a token to the activity it came with: its service URL claim (named
/// `serviceurl` in Bot Framework tokens) equals the activity's `serviceUrl` (401 otherwise),
/// the activity comes from Teams, and the signing key is endorsed for the activity's channel
/// (403 otherwise).
pub fn check_activity(claims: &Value, endorsements: Option<&[String]>, a: &Activity) -> Result<()> {
    let claimed = claims["serviceurl"]
        .as_str()
        .or(claims["serviceUrl"].as_str());
    if claimed != Some(a.service_url.as_str()) {
        return Err(Error::Unauthorized(
            "token serviceurl does not match the activity".into(),
        ));
    }
    if a.channel_id != CHANNEL_ID {
        return Err(Error::Forbidden(format!(
            "channel {:?} is not served",
            a.channel_id
        )));
    }
    if !endorsements
        .unwrap_or_default()
        .iter()
        .any(|e| e == &a.channel_id)
    {
        return Err(Error::Forbidden(
            "signing key is not endorsed for the activity's channel".into(),
        ));
    }
    Ok(())
}

/// Verifies a Bot Framework token: RS256 by a key of `jwks`, then [`check_claims`]. Returns
/// the claims and the signing key's endorsements for [`check_activity`].
#[cfg(feature = "rs256")]
pub fn verify_token(
    token: &str,
    jwks: &Jwks,
    app_id: &str,
    now: Timestamp,
) -> Result<(Value, Option<Vec<String>>)> {
    let (decoded, key) = crate::jws::verify_rs256(token, jwks)?;
    let claims: Value = decoded.claims()?;
    check_claims(&claims, app_id, now)?;
    Ok((claims, key.endorsements.clone()))
}

/// The `kid` a token names (read before verification, to decide whether to refetch keys).
pub fn token_kid(token: &str) -> Result<Option<String>> {
    Ok(crate::jws::decode(token)?.header.kid)
}

/// The Bot Framework's signing keys as fetched at `fetched_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedJwks {
    pub fetched_at: i64,
    pub jwks: Jwks,
}

impl CachedJwks {
    /// Young enough to use ([`JWKS_MAX_AGE_SECS`]; a fetch time in the future is not trusted).
    pub fn fresh(&self, now: Timestamp) -> bool {
        let age = now.unix() - self.fetched_at;
        (0..JWKS_MAX_AGE_SECS).contains(&age)
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.jwks.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Whether an unknown `kid` may trigger a fetch now ([`JWKS_REFETCH_MIN_SECS`]).
    pub fn may_refetch(&self, now: Timestamp) -> bool {
        let age = now.unix() - self.fetched_at;
        !(0..JWKS_REFETCH_MIN_SECS).contains(&age)
    }
}

/// The `jwks_uri` of OpenID metadata.
pub fn jwks_uri(metadata: &[u8]) -> std::result::Result<String, String> {
    let v: Value =
        serde_json::from_slice(metadata).map_err(|_| "OpenID metadata is not JSON".to_string())?;
    let uri = v["jwks_uri"]
        .as_str()
        .ok_or("OpenID metadata has no jwks_uri")?;
    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
        return Err("jwks_uri is not an http(s) URL".into());
    }
    Ok(uri.to_string())
}

/// A bot token from the client-credentials grant, usable until `expires_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotToken {
    pub access_token: String,
    pub expires_at: i64,
}

impl BotToken {
    /// Still usable for a call starting now (renewed [`TOKEN_RENEW_BEFORE_SECS`] early).
    pub fn usable(&self, now: Timestamp) -> bool {
        now.unix() < self.expires_at - TOKEN_RENEW_BEFORE_SECS
    }
}

/// The token endpoint's URL: `teams_token_url` as is when it names the endpoint, else the
/// Microsoft identity platform layout `<base>/<tenant>/oauth2/v2.0/token`.
pub fn token_url(base: &str, tenant: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/token") {
        base.to_string()
    } else {
        format!("{base}/{tenant}/oauth2/v2.0/token")
    }
}

/// The form of the client-credentials request.
pub fn token_form(app_id: &str, password: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", app_id)
        .append_pair("client_secret", password)
        .append_pair("scope", TOKEN_SCOPE)
        .finish()
}

/// Reads the token endpoint's answer. Errors name the OAuth `error` code only (never echo
/// the body: it may repeat what was sent).
pub fn parse_token_answer(
    status: u16,
    body: &[u8],
    now: Timestamp,
) -> std::result::Result<BotToken, String> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status != 200 {
        let code = v["error"].as_str().unwrap_or("no OAuth error code");
        return Err(format!(
            "token endpoint answered {status} ({})",
            truncate(code, 64)
        ));
    }
    let token = v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or("token endpoint answered without access_token")?;
    let expires_in = v["expires_in"]
        .as_i64()
        .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
        .ok_or("token endpoint answered without expires_in")?;
    Ok(BotToken {
        access_token: token.to_string(),
        expires_at: now.unix() + expires_in.clamp(0, 24 * 3600),
    })
}

/// `{serviceUrl}/v3/conversations/{conversation}/activities[/{activity}]`, ids percent-encoded
/// (conversation ids hold `:`, `@`, `;`).
pub fn activities_url(
    service_url: &str,
    conversation: &str,
    activity: Option<&str>,
) -> std::result::Result<String, String> {
    let url = url::Url::parse(service_url).map_err(|_| "service URL is not a URL".to_string())?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
        return Err("service URL is not an http(s) URL".into());
    }
    let mut out = format!(
        "{}/v3/conversations/{}/activities",
        service_url.trim_end_matches('/'),
        utf8_percent_encode(conversation, COMPONENT)
    );
    if let Some(a) = activity {
        out.push('/');
        out.extend(utf8_percent_encode(a, COMPONENT));
    }
    Ok(out)
}

/// What JavaScript's `encodeURIComponent` leaves as is (the Bot Framework SDKs encode ids so).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Vote;
    use crate::rules::tests::{pending_record, T0};

    fn record() -> ActionRecord {
        let mut r = pending_record(
            "req_teams000000000000000000001",
            vec![("dba", 1)],
            Some("user:carol"),
        );
        r.justification = Some("see [here](https://evil.example) **now**".into());
        r
    }

    fn all_text(card: &Value) -> String {
        serde_json::to_string(card).unwrap()
    }

    #[test]
    fn pending_card_has_execute_actions_with_submit_fallback() {
        let r = record();
        let c = card(&r, "olivia", T0);
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], "1.5");
        let actions = c["actions"].as_array().unwrap();
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0]["type"], "Action.Execute");
        assert_eq!(actions[0]["verb"], "approve");
        assert_eq!(actions[0]["data"]["id"], r.id);
        assert_eq!(actions[1]["verb"], "deny");
        assert_eq!(actions[1]["fallback"]["type"], "Action.Submit");
        assert_eq!(actions[1]["fallback"]["data"]["countersign"], SUBMIT_MARKER);
        assert_eq!(actions[1]["fallback"]["data"]["decision"], "deny");
        let text = all_text(&c);
        for want in [
            "db.export",
            "Dataset customers",
            "etl-bot",
            "owner olivia",
            "user:carol",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        // The agent's markdown is shown, not rendered.
        assert!(text.contains(r"see \\[here\\](https://evil.example) \\*\\*now\\*\\*"));
    }

    #[test]
    fn outcome_card_names_who_and_when_without_actions() {
        let mut r = record();
        r.status = Status::Approved;
        r.decided_at = Some(T0.plus(30));
        r.votes.push(Vote {
            approver: "bob".into(),
            decision: Decision::Approve,
            reason: None,
            channel: "teams".into(),
            at: T0.plus(30),
        });
        let c = card(&r, "olivia", T0.plus(31));
        assert!(c.get("actions").is_none());
        let text = all_text(&c);
        assert!(
            text.contains(&format!(
                "**Approved** by bob (teams) at {}",
                T0.plus(30).to_rfc3339()
            )),
            "{text}"
        );
        // An overdue pending request shows as expired, without buttons.
        let c = card(&record(), "olivia", T0.plus(100_000));
        assert!(c.get("actions").is_none());
        assert!(all_text(&c).contains("**Expired**"));
    }

    #[test]
    fn huge_requests_still_fit() {
        let mut r = record();
        r.justification = Some("ü".repeat(50_000));
        r.impact = Some("[".repeat(50_000));
        r.context.insert("blob".into(), json!("x".repeat(100_000)));
        let c = card(&r, "olivia", T0);
        let size = serde_json::to_vec(&message(&c, "s")).unwrap().len();
        assert!(size < MAX_CARD_BYTES + 1024, "{size}");
        assert_eq!(c["actions"].as_array().unwrap().len(), 2);
    }

    fn activity(v: Value) -> Activity {
        parse_activity(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn invoke(verb: &str, data: Value) -> Value {
        json!({"type": "invoke", "name": "adaptiveCard/action", "channelId": "msteams",
            "serviceUrl": "https://smba.example/amer/", "replyToId": "1:card",
            "from": {"id": "29:x", "name": "Bob", "aadObjectId": "aad-bob"},
            "conversation": {"id": "19:c@thread.tacv2"},
            "channelData": {"tenant": {"id": "tenant-1"}},
            "value": {"action": {"type": "Action.Execute", "verb": verb, "data": data}}})
    }

    #[test]
    fn execute_and_submit_clicks_parse() {
        let a = activity(invoke(
            "approve",
            json!({"id": "req_teams000000000000000000001", "decision": "approve"}),
        ));
        assert!(a.is_invoke());
        assert_eq!(a.identity(), Some(("tenant-1", "aad-bob")));
        assert_eq!(a.reply_to_id.as_deref(), Some("1:card"));
        assert_eq!(
            a.click().unwrap(),
            Some(Click {
                request_id: "req_teams000000000000000000001".into(),
                decision: Decision::Approve,
                via: Via::Execute
            })
        );
        // Verb and data disagree; unknown verb; bad id.
        let mismatch = activity(invoke(
            "approve",
            json!({"id": "req_teams000000000000000000001", "decision": "deny"}),
        ));
        assert!(mismatch.click().is_err());
        assert!(activity(invoke(
            "delete",
            json!({"id": "req_teams000000000000000000001"})
        ))
        .click()
        .is_err());
        assert!(activity(invoke("deny", json!({"id": "../x"})))
            .click()
            .is_err());

        let mut submit = invoke("x", json!({}));
        submit["type"] = json!("message");
        submit["value"] = json!({"countersign": "vote", "id": "req_teams000000000000000000001", "decision": "deny"});
        let c = activity(submit.clone()).click().unwrap().unwrap();
        assert_eq!((c.decision, c.via), (Decision::Deny, Via::Submit));
        // Other activities are not votes.
        submit["value"] = json!(null);
        submit["text"] = json!("hello bot");
        assert_eq!(activity(submit).click().unwrap(), None);
        let update = json!({"type": "conversationUpdate", "channelId": "msteams",
            "serviceUrl": "https://smba.example/amer/"});
        assert_eq!(activity(update).click().unwrap(), None);
        // Not an activity.
        assert!(parse_activity(b"[1]").is_err());
        assert!(parse_activity(b"{\"type\":\"message\"}").is_err());
    }

    fn claims(now: Timestamp) -> Value {
        json!({"iss": ISSUER, "aud": "app-1", "exp": now.unix() + 3600, "nbf": now.unix() - 10,
               "serviceurl": "https://smba.example/amer/"})
    }

    #[test]
    fn claims_checked_with_five_minutes_of_skew() {
        let now = T0;
        assert!(check_claims(&claims(now), "app-1", now).is_ok());
        let with = |k: &str, v: Value| {
            let mut c = claims(now);
            c[k] = v;
            check_claims(&c, "app-1", now)
        };
        assert!(with("iss", json!("https://evil.example")).is_err());
        assert!(with("aud", json!("app-2")).is_err());
        assert!(with("aud", json!(["app-2", "app-1"])).is_ok());
        assert!(with("exp", json!(now.unix() - 299)).is_ok());
        assert!(with("exp", json!(now.unix() - 301)).is_err());
        assert!(with("exp", Value::Null).is_err());
        assert!(with("nbf", json!(now.unix() + 299)).is_ok());
        assert!(with("nbf", json!(now.unix() + 301)).is_err());
        assert!(with("nbf", json!("soon")).is_err());
        assert!(check_claims(&claims(now), "", now).is_err());
    }

    #[test]
    fn activity_bound_to_token_and_key() {
        let a = activity(invoke(
            "approve",
            json!({"id": "req_teams000000000000000000001"}),
        ));
        let teams = ["msteams".to_string(), "webchat".to_string()];
        let c = claims(T0);
        assert!(check_activity(&c, Some(&teams), &a).is_ok());
        let mut other = c.clone();
        other["serviceurl"] = json!("https://smba.example/emea/");
        assert!(matches!(
            check_activity(&other, Some(&teams), &a),
            Err(Error::Unauthorized(_))
        ));
        other.as_object_mut().unwrap().remove("serviceurl");
        assert!(matches!(
            check_activity(&other, Some(&teams), &a),
            Err(Error::Unauthorized(_))
        ));
        let webchat = ["webchat".to_string()];
        assert!(matches!(
            check_activity(&c, Some(&webchat), &a),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            check_activity(&c, None, &a),
            Err(Error::Forbidden(_))
        ));
        let mut emulator = a.clone();
        emulator.channel_id = "emulator".into();
        assert!(matches!(
            check_activity(&c, Some(&["emulator".to_string()]), &emulator),
            Err(Error::Forbidden(_))
        ));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        for bad in [
            None,
            Some(""),
            Some("Basic abc"),
            Some("Bearer "),
            Some("abc"),
        ] {
            assert!(
                matches!(bearer(bad), Err(Error::Unauthorized(_))),
                "{bad:?}"
            );
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix(T0.unix() + secs)
    }

    #[test]
    fn caches_expire() {
        let c = CachedJwks {
            fetched_at: T0.unix(),
            jwks: Jwks::default(),
        };
        assert!(c.fresh(at(JWKS_MAX_AGE_SECS - 1)));
        assert!(!c.fresh(at(JWKS_MAX_AGE_SECS)));
        assert!(!c.fresh(at(-10)));
        assert!(!c.may_refetch(at(JWKS_REFETCH_MIN_SECS - 1)));
        assert!(c.may_refetch(at(JWKS_REFETCH_MIN_SECS)));
        assert!(!c.knows("k"));

        let t =
            parse_token_answer(200, br#"{"access_token":"tok","expires_in":3599}"#, T0).unwrap();
        assert!(t.usable(at(3599 - TOKEN_RENEW_BEFORE_SECS - 1)));
        assert!(!t.usable(at(3599 - TOKEN_RENEW_BEFORE_SECS)));
        let e = parse_token_answer(
            401,
            br#"{"error":"invalid_client","error_description":"secret s3cr3t"}"#,
            T0,
        )
        .unwrap_err();
        assert!(e.contains("invalid_client") && !e.contains("s3cr3t"), "{e}");
        assert!(parse_token_answer(200, b"{}", T0).is_err());
        assert!(parse_token_answer(503, b"<html>", T0).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            token_url("https://login.microsoftonline.com/", "t-1"),
            "https://login.microsoftonline.com/t-1/oauth2/v2.0/token"
        );
        assert_eq!(
            token_url("http://127.0.0.1:9/x/token", "t"),
            "http://127.0.0.1:9/x/token"
        );
        assert_eq!(
            activities_url("https://smba.example/amer/", "19:a@thread.tacv2;messageid=1", Some("1:b"))
                .unwrap(),
            "https://smba.example/amer/v3/conversations/19%3Aa%40thread.tacv2%3Bmessageid%3D1/activities/1%3Ab"
        );
        assert_eq!(
            activities_url("http://127.0.0.1:5/svc", "a/b", None).unwrap(),
            "http://127.0.0.1:5/svc/v3/conversations/a%2Fb/activities"
        );
        assert!(activities_url("mailto:x", "c", None).is_err());
        let form = token_form("app id", "p&ss=word");
        assert!(form.contains("client_secret=p%26ss%3Dword"), "{form}");
        assert!(form.contains("scope=https%3A%2F%2Fapi.botframework.com%2F.default"));
        assert_eq!(
            jwks_uri(br#"{"jwks_uri":"https://login.botframework.com/v1/.well-known/keys"}"#)
                .unwrap(),
            "https://login.botframework.com/v1/.well-known/keys"
        );
        assert!(jwks_uri(br#"{"jwks_uri":"file:///etc/passwd"}"#).is_err());
        assert!(jwks_uri(b"nope").is_err());
    }
}
