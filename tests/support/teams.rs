//! A stand-in for Microsoft's side of a Teams bot, on one local port: the Entra ID token
//! endpoint (`/<tenant>/oauth2/v2.0/token`), the Bot Framework OpenID metadata and signing
//! keys (`/v1/.well-known/...`, RSA keys generated here at start-up), and the connector
//! activities API under the service URL (`/amer/v3/conversations/...`). It checks what the
//! platform checks — client credentials, the access token it issued, the activity and Adaptive
//! Card shape, the message size — records every call, keeps the latest card of every activity,
//! and can fail, rate-limit or hang on demand. It also mints the Bot Framework tokens that
//! authenticate the activities a test sends to the bot, with a knob for every way to get one
//! wrong.

#![allow(dead_code)]
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use shared::Timestamp;

/// Random-looking test identities (none of them real).
pub const TENANT: &str = "7d3e9b1a-52c4-4f0e-9a61-c2b8d05e3f47";
pub const APP_ID: &str = "b41f6c2e-9d07-4a35-8e1b-6f2a0c9d7e58";
pub const APP_PASSWORD: &str = "tst~Q8xv2Lr.Kp4mWz7_Nf3jHs6Yd0Bc5Ge9Ta1";
pub const CONVERSATION: &str = "19:4c8e1f2ab7d94e0c9a3f6b5d2e7c1a08@thread.tacv2";
/// The path of the service URL below the stand-in's base (like `https://smba.trafficmanager.net/amer/`).
pub const SERVICE_PATH: &str = "/amer/";
pub const ISSUER: &str = "https://api.botframework.com";
pub const CARD_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// The largest activity the connector takes.
pub const MAX_ACTIVITY: usize = 80 * 1024;
const TOKEN_PATH: &str = "/oauth2/v2.0/token";
const KEYS_PATH: &str = "/v1/.well-known/keys";
const OPENID_PATH: &str = "/v1/.well-known/openidconfiguration";

/// One call the stand-in received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The JSON body, or the fields of a form body (client secret removed).
    pub body: Value,
    pub status: u16,
    /// Why the stand-in refused it, if it did for a reason of shape, auth or limits.
    pub violation: Option<String>,
    /// The activity created (POST) or addressed (PUT, reply).
    pub activity_id: Option<String>,
}

/// The endpoints a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Connector,
}

/// How a call with an injected fault is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This status with an error body.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    RateLimited(u64),
    /// No answer for 10 minutes.
    Hang,
}

struct Key {
    kid: String,
    /// PKCS#1 PEM of the private key.
    pem: String,
    n: String,
    e: String,
    endorsements: Vec<String>,
    published: bool,
}

impl Key {
    fn generate(endorsements: &[&str], published: bool) -> Key {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("an RSA key");
        let pem = k
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("PKCS#1 PEM");
        Key {
            kid: shared::canon::b64url(&shared::canon::random_bytes::<12>().unwrap()),
            pem: pem.to_string(),
            n: shared::canon::b64url(&k.n().to_bytes_be()),
            e: shared::canon::b64url(&k.e().to_bytes_be()),
            endorsements: endorsements.iter().map(|s| s.to_string()).collect(),
            published,
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid, "n": self.n,
               "e": self.e, "endorsements": self.endorsements})
    }
}

#[derive(Default)]
struct State {
    base: String,
    calls: Mutex<Vec<Call>>,
    keys: Mutex<Vec<Key>>,
    /// Access tokens issued by the token endpoint.
    issued: Mutex<HashSet<String>>,
    /// Latest card (attachment content) of every activity.
    cards: Mutex<HashMap<String, Value>>,
    faults: Mutex<Vec<(Endpoint, Fault, u32)>>,
    seq: AtomicU64,
}

impl State {
    fn take_fault(&self, at: Endpoint) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let f = faults.iter_mut().find(|(e, _, n)| *e == at && *n > 0)?;
        f.2 -= 1;
        Some(f.1)
    }

    fn key_of(&self, kid: &str) -> String {
        let keys = self.keys.lock().unwrap();
        let k = keys
            .iter()
            .find(|k| k.kid == kid)
            .expect("a key of the stand-in");
        k.pem.clone()
    }
}

pub struct FakeTeams {
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeTeams {
    /// Starts the stand-in with one published signing key endorsed for `msteams`.
    pub async fn start() -> FakeTeams {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            base: format!("http://127.0.0.1:{port}"),
            ..State::default()
        });
        let st = state.clone();
        let task = super::serve_http(listener, move |req, raw| {
            let st = st.clone();
            async move { serve(&st, req, raw).await }
        });
        let fake = FakeTeams { port, state, task };
        fake.add_key(&["msteams", "skype", "webchat"]);
        fake
    }

    /// Points a host's Teams channel at this stand-in (app, tenant, conversation, URLs).
    pub fn configure(&self, b: super::HostBuilder) -> super::HostBuilder {
        b.env("SPIN_VARIABLE_TEAMS_APP_ID", APP_ID)
            .env("SPIN_VARIABLE_TEAMS_APP_PASSWORD", APP_PASSWORD)
            .env("SPIN_VARIABLE_TEAMS_TENANT_ID", TENANT)
            .env("SPIN_VARIABLE_TEAMS_SERVICE_URL", &self.service_url())
            .env("SPIN_VARIABLE_TEAMS_CONVERSATION_ID", CONVERSATION)
            .env("SPIN_VARIABLE_TEAMS_OPENID_URL", &self.openid_url())
            .env("SPIN_VARIABLE_TEAMS_TOKEN_URL", &self.base())
    }

    /// An activity of `kind` (`invoke` or `message`) from `aad` of `tenant` in the conversation,
    /// replying to activity `reply_to` and carrying `value`, as Teams sends it to the bot.
    pub fn activity(
        &self,
        kind: &str,
        reply_to: &str,
        tenant: &str,
        aad: &str,
        value: Value,
    ) -> Value {
        let mut a = json!({
            "type": kind,
            "id": format!("f:{}", hex::encode(shared::canon::random_bytes::<8>().unwrap())),
            "timestamp": Timestamp::now().to_rfc3339(),
            "channelId": "msteams",
            "serviceUrl": self.service_url(),
            "from": {"id": format!("29:1{aad}"), "name": "Someone", "aadObjectId": aad},
            "recipient": {"id": format!("28:{APP_ID}"), "name": "countersign"},
            "conversation": {"id": CONVERSATION, "conversationType": "channel", "tenantId": tenant,
                             "isGroup": true},
            "channelData": {"tenant": {"id": tenant}},
            "replyToId": reply_to,
            "locale": "en-US",
            "value": value,
        });
        if kind == "invoke" {
            a["name"] = json!("adaptiveCard/action");
        } else {
            a["text"] = json!("");
        }
        a
    }

    /// The access tokens the token endpoint issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().iter().cloned().collect()
    }

    /// Where the component gets its tokens (`teams_token_url`: it appends the tenant's path).
    pub fn base(&self) -> String {
        self.state.base.clone()
    }

    pub fn service_url(&self) -> String {
        format!("{}{SERVICE_PATH}", self.state.base)
    }

    pub fn openid_url(&self) -> String {
        format!("{}{OPENID_PATH}", self.state.base)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn calls_where(&self, pred: impl Fn(&Call) -> bool) -> Vec<Call> {
        self.calls().into_iter().filter(|c| pred(c)).collect()
    }

    pub fn calls_to(&self, path_suffix: &str) -> Vec<Call> {
        self.calls_where(|c| c.path.ends_with(path_suffix))
    }

    /// Calls of the token endpoint, whatever their answer.
    pub fn token_requests(&self) -> Vec<Call> {
        self.calls_to(TOKEN_PATH)
    }

    pub fn jwks_fetches(&self) -> Vec<Call> {
        self.calls_to(KEYS_PATH)
    }

    /// The connector calls about activity `id` (PUTs and replies).
    pub fn calls_on(&self, id: &str) -> Vec<Call> {
        self.calls_to(&format!("/activities/{id}"))
    }

    /// The latest card of activity `id`.
    pub fn card(&self, id: &str) -> Option<Value> {
        self.state.cards.lock().unwrap().get(id).cloned()
    }

    /// Calls the stand-in refused for their shape, credentials or size.
    pub fn violations(&self) -> Vec<Call> {
        self.calls_where(|c| c.violation.is_some())
    }

    /// Answers the next `n` calls of `endpoint` with `fault`.
    pub fn fail_next(&self, endpoint: Endpoint, n: u32, fault: Fault) {
        self.state.faults.lock().unwrap().push((endpoint, fault, n));
    }

    /// Publishes a new key with these endorsements; returns its kid.
    pub fn add_key(&self, endorsements: &[&str]) -> String {
        let k = Key::generate(endorsements, true);
        let kid = k.kid.clone();
        self.state.keys.lock().unwrap().push(k);
        kid
    }

    /// A key that is never published; returns its kid.
    pub fn stray_key(&self) -> String {
        let k = Key::generate(&["msteams"], false);
        let kid = k.kid.clone();
        self.state.keys.lock().unwrap().push(k);
        kid
    }

    /// The kid of the first published key endorsed for `msteams`: what valid tokens use.
    pub fn current_kid(&self) -> String {
        let keys = self.state.keys.lock().unwrap();
        keys.iter()
            .find(|k| k.published && k.endorsements.iter().any(|e| e == "msteams"))
            .expect("an endorsed published key")
            .kid
            .clone()
    }

    /// Replaces every published key by a new one; returns its kid.
    pub fn rotate(&self) -> String {
        let k = Key::generate(&["msteams", "skype"], true);
        let kid = k.kid.clone();
        let mut keys = self.state.keys.lock().unwrap();
        for old in keys.iter_mut() {
            old.published = false;
        }
        keys.push(k);
        kid
    }

    /// A valid Bot Framework token for an activity from this stand-in's service URL; change it
    /// with the [`Token`] knobs, then [`Token::jwt`].
    pub fn token(&self) -> Token {
        let now = Timestamp::now().unix();
        Token {
            state: self.state.clone(),
            signer: self.current_kid(),
            kid: None,
            claims: json!({"iss": ISSUER, "aud": APP_ID, "exp": now + 3600, "nbf": now - 10,
                           "serviceurl": self.service_url()}),
        }
    }

    /// Waits until some call satisfies `pred`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Call) -> bool) -> Option<Call> {
        super::poll_until(timeout, || self.calls().into_iter().find(|c| pred(c))).await
    }
}

impl Drop for FakeTeams {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Bot Framework token being made.
pub struct Token {
    state: Arc<State>,
    /// The kid of the key that signs.
    signer: String,
    /// The header's kid when it is not the signer's.
    kid: Option<String>,
    claims: Value,
}

impl Token {
    pub fn claim(mut self, name: &str, value: Value) -> Token {
        self.claims[name] = value;
        self
    }

    /// Expired for longer than the 5 minutes of clock skew.
    pub fn expired(self) -> Token {
        let now = Timestamp::now().unix();
        self.claim("exp", json!(now - 400))
            .claim("nbf", json!(now - 4000))
    }

    /// Valid only from more than 5 minutes from now.
    pub fn not_yet_valid(self) -> Token {
        let now = Timestamp::now().unix();
        self.claim("nbf", json!(now + 400))
            .claim("exp", json!(now + 4000))
    }

    /// Signed by the key with this kid (named in the header too).
    pub fn signed_by(mut self, kid: &str) -> Token {
        self.signer = kid.to_string();
        self
    }

    /// Names this kid in the header, whoever signs.
    pub fn kid(mut self, kid: &str) -> Token {
        self.kid = Some(kid.to_string());
        self
    }

    pub fn jwt(&self) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(self.kid.clone().unwrap_or_else(|| self.signer.clone()));
        h.typ = Some("JWT".into());
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(self.state.key_of(&self.signer).as_bytes())
                .expect("an RSA signing key");
        jsonwebtoken::encode(&h, &self.claims, &key).expect("sign a token")
    }
}

fn reply(status: u16, body: Value, headers: &[(&str, &str)]) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// The connector's error body.
fn api_error(status: u16, code: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    reply(
        status,
        json!({"error": {"code": code, "message": message}}),
        &[],
    )
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_fields(raw: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(raw)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                pct_decode(&k.replace('+', " ")),
                pct_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// An Adaptive Card as Teams renders it: schema 1.0 to 1.5, typed elements and actions.
pub fn check_card(card: &Value) -> Result<(), String> {
    if card["type"] != "AdaptiveCard" {
        return Err("attachment content is not an AdaptiveCard".into());
    }
    let version = card["version"].as_str().ok_or("card without version")?;
    let parsed = version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some(v) if ((1, 0)..=(1, 5)).contains(&v) => {}
        _ => return Err(format!("unsupported card version {version}")),
    }
    for field in ["body", "actions"] {
        let items = match &card[field] {
            Value::Null => continue,
            Value::Array(a) => a,
            _ => return Err(format!("card {field} is not an array")),
        };
        if let Some(bad) = items.iter().find(|i| !i["type"].is_string()) {
            return Err(format!("card {field} item without type: {bad}"));
        }
    }
    for a in card["actions"].as_array().into_iter().flatten() {
        let t = a["type"].as_str().unwrap_or_default();
        if !t.starts_with("Action.") {
            return Err(format!("unknown action type {t}"));
        }
    }
    Ok(())
}

/// A message activity: a card (or, in a reply, text) for the conversation.
fn check_activity(body: &Value, reply: bool) -> Result<(), String> {
    if body["type"] != "message" {
        return Err("activity type must be message".into());
    }
    let attachments = match &body["attachments"] {
        Value::Null => &Vec::new(),
        Value::Array(a) => a,
        _ => return Err("attachments is not an array".into()),
    };
    for a in attachments {
        if a["contentType"] != CARD_TYPE {
            return Err(format!("unexpected attachment {}", a["contentType"]));
        }
        check_card(&a["content"])?;
    }
    let text = body["text"].as_str().is_some_and(|t| !t.is_empty());
    match (attachments.is_empty(), reply && text) {
        (false, _) | (true, true) => Ok(()),
        (true, false) => Err("no card attachment".into()),
    }
}

async fn serve(
    st: &State,
    req: hyper::http::request::Parts,
    raw: Bytes,
) -> hyper::Response<Full<Bytes>> {
    let method = req.method.as_str().to_string();
    let raw_path = req.uri.path().to_string();
    let path = pct_decode(&raw_path);
    let header = |n: &str| {
        let v = req.headers.get(n).and_then(|v| v.to_str().ok());
        v.unwrap_or("").to_string()
    };
    let (auth, ct) = (header("authorization"), header("content-type"));
    let is_token = raw_path.ends_with(TOKEN_PATH);
    let mut body: Value = if is_token {
        let mut f = form_fields(&raw);
        f.remove("client_secret");
        json!(f)
    } else {
        serde_json::from_slice(&raw).unwrap_or(Value::Null)
    };
    if raw.len() > MAX_ACTIVITY {
        body = json!({"size": raw.len()});
    }
    let segments: Vec<String> = raw_path
        .strip_prefix(SERVICE_PATH)
        .map(|p| {
            p.split('/')
                .filter(|s| !s.is_empty())
                .map(pct_decode)
                .collect()
        })
        .unwrap_or_default();
    let activity_id = segments.get(4).cloned();
    let record = |violation: Option<String>, status: u16, activity_id: Option<String>| {
        st.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
            status,
            violation,
            activity_id,
        });
    };
    let endpoint = if is_token {
        Some(Endpoint::Token)
    } else if raw_path.starts_with(SERVICE_PATH) {
        Some(Endpoint::Connector)
    } else {
        None
    };
    if let Some(fault) = endpoint.and_then(|e| st.take_fault(e)) {
        return match fault {
            Fault::Status(s) => {
                record(None, s, activity_id);
                api_error(s, "ServiceError", "injected failure")
            }
            Fault::RateLimited(secs) => {
                record(None, 429, activity_id);
                let secs = secs.to_string();
                reply(
                    429,
                    json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
                    &[("retry-after", &secs)],
                )
            }
            Fault::Hang => {
                record(None, 0, activity_id);
                tokio::time::sleep(Duration::from_secs(600)).await;
                api_error(504, "Timeout", "hung")
            }
        };
    }
    if is_token {
        let (status, answer) = token_answer(st, &raw_path, &ct, &raw);
        let violation = (status != 200).then(|| answer.to_string());
        record(violation, status, None);
        return reply(status, answer, &[("cache-control", "no-store")]);
    }
    match (method.as_str(), raw_path.as_str()) {
        ("GET", OPENID_PATH) => {
            record(None, 200, None);
            return reply(
                200,
                json!({"issuer": ISSUER,
                       "authorization_endpoint": "https://invalid.botframework.com",
                       "jwks_uri": format!("{}{KEYS_PATH}", st.base),
                       "id_token_signing_alg_values_supported": ["RS256"],
                       "token_endpoint_auth_methods_supported": ["private_key_jwt"]}),
                &[],
            );
        }
        ("GET", KEYS_PATH) => {
            let keys: Vec<Value> = st
                .keys
                .lock()
                .unwrap()
                .iter()
                .filter(|k| k.published)
                .map(Key::jwk)
                .collect();
            record(None, 200, None);
            return reply(200, json!({"keys": keys}), &[]);
        }
        _ => {}
    }
    let (status, answer, id) = connector(st, &method, &segments, &auth, &ct, &raw, &body);
    let violation = (status >= 400).then(|| answer.to_string());
    record(violation, status, id);
    reply(status, answer, &[])
}

/// The token endpoint's answer: client credentials of this app in this tenant.
fn token_answer(st: &State, path: &str, ct: &str, raw: &[u8]) -> (u16, Value) {
    let invalid = |error: &str, d: &str| json!({"error": error, "error_description": d});
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return (
            400,
            invalid("invalid_request", "AADSTS900144: the body must be a form"),
        );
    }
    let f = form_fields(raw);
    let field = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if ["grant_type", "client_id", "client_secret", "scope"]
        .iter()
        .any(|k| field(k).is_empty())
    {
        return (
            400,
            invalid(
                "invalid_request",
                "AADSTS900144: a required field is missing",
            ),
        );
    }
    if field("grant_type") != "client_credentials" {
        return (400, invalid("unsupported_grant_type", "AADSTS70003"));
    }
    if field("scope") != "https://api.botframework.com/.default" {
        return (
            400,
            invalid("invalid_scope", "AADSTS1002012: the scope is not valid"),
        );
    }
    if path != format!("/{TENANT}{TOKEN_PATH}")
        || field("client_id") != APP_ID
        || field("client_secret") != APP_PASSWORD
    {
        return (
            401,
            invalid(
                "invalid_client",
                "AADSTS7000215: invalid client secret provided",
            ),
        );
    }
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}",
        hex::encode(shared::canon::random_bytes::<24>().unwrap())
    );
    st.issued.lock().unwrap().insert(token.clone());
    (
        200,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
               "access_token": token}),
    )
}

/// The connector's answer to a call below the service URL: `(status, body, activity id)`.
fn connector(
    st: &State,
    method: &str,
    segments: &[String],
    auth: &str,
    ct: &str,
    raw: &[u8],
    body: &Value,
) -> (u16, Value, Option<String>) {
    let err = |code: &str, message: &str| json!({"error": {"code": code, "message": message}});
    let target = segments.get(4).cloned();
    let shape = segments.len() >= 4
        && segments[0] == "v3"
        && segments[1] == "conversations"
        && segments[3] == "activities"
        && segments.len() <= 5;
    if !shape {
        return (404, err("NotFound", "no such resource"), target);
    }
    let token_ok = auth
        .strip_prefix("Bearer ")
        .is_some_and(|t| st.issued.lock().unwrap().contains(t));
    if !token_ok {
        return (
            401,
            json!({"message": "Authorization has been denied for this request."}),
            target,
        );
    }
    if !ct.starts_with("application/json") {
        return (
            415,
            err("BadArgument", "content-type must be application/json"),
            target,
        );
    }
    if raw.len() > MAX_ACTIVITY {
        return (
            413,
            err("MessageSizeTooBig", "Message size too large"),
            target,
        );
    }
    if segments[2] != CONVERSATION {
        return (
            404,
            err("ConversationNotFound", "Conversation not found."),
            target,
        );
    }
    let known = |id: &str| st.cards.lock().unwrap().contains_key(id);
    let (status, id, stores_card) = match (method, &target) {
        ("POST", None) => (201, new_activity_id(st), true),
        ("PUT", Some(id)) if known(id) => (200, id.clone(), true),
        ("POST", Some(id)) if known(id) => (201, new_activity_id(st), false),
        (_, Some(_)) if method == "PUT" || method == "POST" => {
            return (404, err("ActivityNotFound", "Activity not found."), target)
        }
        _ => return (405, err("BadArgument", "method not allowed"), target),
    };
    if let Err(e) = check_activity(body, target.is_some() && method == "POST") {
        return (400, err("BadArgument", &e), target);
    }
    if stores_card {
        let card = body["attachments"][0]["content"].clone();
        st.cards.lock().unwrap().insert(id.clone(), card);
    }
    (status, json!({"id": id}), target.or(Some(id)))
}

fn new_activity_id(st: &State) -> String {
    let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
    format!("{}", 1_732_240_000_000u64 + n)
}

/// The card of a message activity (its first attachment).
pub fn card_of(activity: &Value) -> &Value {
    &activity["attachments"][0]["content"]
}

/// Whether a card still offers actions.
pub fn has_actions(card: &Value) -> bool {
    card["actions"].as_array().is_some_and(|a| !a.is_empty())
}
