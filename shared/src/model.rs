//! The request model: the body of `POST /v1/actions` (strictly validated), the stored request
//! record and its public view (`GET /v1/actions/:id`), the policy decision passed from the policy
//! component to intake, and the request digest.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::canon;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Largest integer magnitude accepted in attributes and context: RFC 8785 renders numbers as
/// IEEE-754 doubles, so beyond 2^53 − 1 two different integers would share one digest.
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;
/// Deepest nesting of sets and records accepted in attributes and context.
pub const MAX_DEPTH: usize = 32;
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Largest accepted body of the public JSON routes (DESIGN: 64 KiB, 413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Cedar's reserved identifiers, which cannot name a type.
const CEDAR_RESERVED: &[&str] = &[
    "true", "false", "if", "then", "else", "in", "is", "like", "has", "__cedar",
];

/// `resource` of a request: a Cedar entity `<type>::"<id>"` with attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// `res` of a grant: the resource without its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
}

/// The body of `POST /v1/actions` and `POST /v1/check`, validated.
///
/// Construct it with [`ActionRequest::parse`] (raw body) or [`ActionRequest::from_value`]; its
/// `Deserialize` impl runs the same strict validation, so no unvalidated instance exists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRequest {
    pub action: String,
    pub resource: Resource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub context: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

const REQUEST_FIELDS: &[&str] = &[
    "action",
    "resource",
    "on_behalf_of",
    "context",
    "impact",
    "justification",
    "callback_url",
    "idempotency_key",
];

impl ActionRequest {
    /// Parses and validates a raw body. Bodies over [`MAX_BODY_BYTES`] should be refused (413)
    /// before this is called.
    pub fn parse(body: &[u8]) -> Result<ActionRequest> {
        let value: Value = crate::canon::parse_json(body)?;
        ActionRequest::from_value(value)
    }

    /// Validates a parsed body. Errors name the field (`resource.attributes.tags[1]`).
    pub fn from_value(value: Value) -> Result<ActionRequest> {
        let Value::Object(mut obj) = value else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
            return Err(Error::invalid(field_path("", unknown), "unknown field"));
        }
        let action = match obj.remove("action") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(Error::invalid("action", "must be a string")),
            None => return Err(Error::invalid("action", "is required")),
        };
        validate_action(&action)?;
        let resource = match obj.remove("resource") {
            Some(Value::Object(r)) => parse_resource(r)?,
            Some(_) => return Err(Error::invalid("resource", "must be an object")),
            None => return Err(Error::invalid("resource", "is required")),
        };
        let on_behalf_of = opt_string(&mut obj, "on_behalf_of", 256)?;
        let context = match obj.remove("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(c)) => c,
            Some(_) => return Err(Error::invalid("context", "must be an object")),
        };
        if context.contains_key("on_behalf_of") {
            return Err(Error::invalid(
                "context.on_behalf_of",
                "is reserved: put the requester in the top-level on_behalf_of field",
            ));
        }
        check_record("context", &context, 1)?;
        let impact = opt_string(&mut obj, "impact", 4096)?;
        let justification = opt_string(&mut obj, "justification", 4096)?;
        let callback_url = opt_string(&mut obj, "callback_url", 2048)?;
        let idempotency_key = opt_string(&mut obj, "idempotency_key", MAX_IDEMPOTENCY_KEY)?;
        if let Some(k) = &idempotency_key {
            validate_idempotency_key(k).map_err(|m| Error::invalid("idempotency_key", m))?;
        }
        Ok(ActionRequest {
            action,
            resource,
            on_behalf_of,
            context,
            impact,
            justification,
            callback_url,
            idempotency_key,
        })
    }

    /// The request digest (see [`digest`]).
    pub fn digest(&self) -> Result<String> {
        digest(
            &self.action,
            &self.resource,
            &self.context,
            self.on_behalf_of.as_deref(),
        )
    }

    /// SHA-256 (hex) of the canonical JSON of the body as sent, used to tell "the same body"
    /// for idempotency keys: formatting and member order do not matter.
    pub fn body_hash(&self) -> Result<String> {
        Ok(canon::sha256_hex(&canon::jcs(self)?))
    }
}

impl<'de> Deserialize<'de> for ActionRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        ActionRequest::from_value(v).map_err(serde::de::Error::custom)
    }
}

/// `action`: `[A-Za-z0-9_.:-]{1,128}`.
pub fn validate_action(action: &str) -> Result<()> {
    if action.is_empty() || action.len() > 128 {
        return Err(Error::invalid("action", "must be 1 to 128 characters"));
    }
    if !action
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
    {
        return Err(Error::invalid(
            "action",
            "may contain only A-Z a-z 0-9 _ . : -",
        ));
    }
    Ok(())
}

/// Idempotency keys (field or `Idempotency-Key` header): 1 to 255 visible ASCII characters.
pub fn validate_idempotency_key(key: &str) -> std::result::Result<(), &'static str> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err("must be 1 to 255 characters");
    }
    if !key.bytes().all(|c| (0x21..=0x7e).contains(&c)) {
        return Err("may contain only visible ASCII characters");
    }
    Ok(())
}

/// A Cedar entity type name: `Ident(::Ident)*`, where an identifier is
/// `[A-Za-z_][A-Za-z0-9_]*` and not a reserved word. `Agent` and `Action` are taken by the
/// principal and the action, so a resource cannot use them.
pub fn validate_type_name(t: &str) -> std::result::Result<(), String> {
    if t.is_empty() || t.len() > 256 {
        return Err("must be 1 to 256 characters".into());
    }
    for seg in t.split("::") {
        let mut chars = seg.chars();
        let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{t:?} is not a Cedar type name (Ident or Namespace::Ident)"
            ));
        }
        if CEDAR_RESERVED.contains(&seg) || seg.starts_with("__cedar") {
            return Err(format!("{seg:?} is reserved in Cedar"));
        }
    }
    let last = t.rsplit("::").next().unwrap_or(t);
    if t == "Agent" || last == "Action" {
        return Err(format!("{t:?} is reserved for the principal or the action"));
    }
    Ok(())
}

fn parse_resource(mut r: Map<String, Value>) -> Result<Resource> {
    if let Some(unknown) = r
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "id" | "attributes"))
    {
        return Err(Error::invalid(
            field_path("resource", unknown),
            "unknown field",
        ));
    }
    let type_ = match r.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(Error::invalid("resource.type", "must be a string")),
        None => return Err(Error::invalid("resource.type", "is required")),
    };
    validate_type_name(&type_).map_err(|m| Error::invalid("resource.type", m))?;
    let id = match r.remove("id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(Error::invalid("resource.id", "must not be empty")),
        Some(_) => return Err(Error::invalid("resource.id", "must be a string")),
        None => return Err(Error::invalid("resource.id", "is required")),
    };
    if id.len() > 1024 {
        return Err(Error::invalid("resource.id", "must be at most 1024 bytes"));
    }
    let attributes = match r.remove("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => return Err(Error::invalid("resource.attributes", "must be an object")),
    };
    check_record("resource.attributes", &attributes, 1)?;
    Ok(Resource {
        type_,
        id,
        attributes,
    })
}

fn opt_string(obj: &mut Map<String, Value>, name: &str, max: usize) -> Result<Option<String>> {
    match obj.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(Error::invalid(name, "must not be empty")),
        Some(Value::String(s)) if s.len() > max => {
            Err(Error::invalid(name, format!("must be at most {max} bytes")))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(name, "must be a string")),
    }
}

/// `parent.key`, or `parent["key"]` when the key is not a plain identifier.
fn field_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!(
            "{parent}[{}]",
            serde_json::to_string(key).unwrap_or_default()
        ),
    }
}

fn check_record(path: &str, map: &Map<String, Value>, depth: usize) -> Result<()> {
    for (k, v) in map {
        check_cedar_value(&field_path(path, k), v, depth)?;
    }
    Ok(())
}

/// A JSON value has a Cedar counterpart when it is a string, a boolean, an integer within
/// ±(2^53 − 1), an array of such values (a Set) or an object of them (a Record).
/// `null` and floating-point numbers have none.
fn check_cedar_value(path: &str, v: &Value, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(
            path,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match v {
        Value::Null => Err(Error::invalid(
            path,
            "null has no Cedar counterpart (omit the field instead)",
        )),
        Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(n) => match n.as_i64() {
            Some(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => Ok(()),
            Some(_) => Err(Error::invalid(
                path,
                "integer outside ±9007199254740991 cannot be digested exactly",
            )),
            None if n.is_u64() => Err(Error::invalid(
                path,
                "integer outside ±9007199254740991 cannot be digested exactly",
            )),
            None => Err(Error::invalid(
                path,
                "floating-point numbers have no Cedar counterpart (use an integer or a string)",
            )),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_cedar_value(&format!("{path}[{i}]"), item, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(m) => check_record(path, m, depth + 1),
    }
}

/// `digest` / `dig`: base64url (no padding) of SHA-256 over the RFC 8785 canonical JSON of
/// `{"action","resource","context","on_behalf_of"}` — `resource` as `{"type","id","attributes"}`
/// (attributes `{}` when absent), `context` `{}` and `on_behalf_of` `null` when absent.
pub fn digest(
    action: &str,
    resource: &Resource,
    context: &Map<String, Value>,
    on_behalf_of: Option<&str>,
) -> Result<String> {
    #[derive(Serialize)]
    struct Digested<'a> {
        action: &'a str,
        resource: &'a Resource,
        context: &'a Map<String, Value>,
        on_behalf_of: Option<&'a str>,
    }
    let bytes = canon::jcs(&Digested {
        action,
        resource,
        context,
        on_behalf_of,
    })?;
    Ok(canon::b64url(&canon::sha256(&bytes)))
}

/// The person an `on_behalf_of` value names: `user:alice` → `alice`; any other value as is
/// (the directory resolves channel aliases such as `slack:T/U`, see
/// [`crate::directory::Directory::resolve_person`]).
pub fn on_behalf_of_person(value: &str) -> &str {
    value.strip_prefix("user:").unwrap_or(value)
}

/// Lifecycle of a request. `pending` → `approved` | `denied` | `expired`; `allowed` and
/// `denied` may also be final at creation. A final status never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Allowed,
    Approved,
    Denied,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Allowed => "allowed",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
        }
    }

    pub fn is_final(self) -> bool {
        self != Status::Pending
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "`quorum` distinct approvers from `group`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub group: String,
    pub quorum: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// One accepted vote, as listed in `votes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
    /// `api`, `slack`, `teams`, ...
    pub channel: String,
    pub at: Timestamp,
}

/// The body of `POST /v1/actions/:id/decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
}

impl DecisionBody {
    pub fn parse(body: &[u8]) -> Result<DecisionBody> {
        let v: Value = crate::canon::parse_json(body)?;
        let Value::Object(o) = &v else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        match o.get("decision") {
            None => return Err(Error::invalid("decision", "is required")),
            Some(Value::String(s)) if s == "approve" || s == "deny" => {}
            Some(_) => {
                return Err(Error::invalid(
                    "decision",
                    "must be \"approve\" or \"deny\"",
                ))
            }
        }
        if let Some(k) = o.keys().find(|k| *k != "decision" && *k != "reason") {
            return Err(Error::invalid(field_path("", k), "unknown field"));
        }
        match o.get("reason") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.len() <= 4096 => {}
            Some(Value::String(_)) => {
                return Err(Error::invalid("reason", "must be at most 4096 bytes"))
            }
            Some(_) => return Err(Error::invalid("reason", "must be a string")),
        }
        serde_json::from_value(v).map_err(|e| Error::invalid("body", e.to_string()))
    }
}

/// What the policy says about a request (the answer of the policy component's
/// `POST /internal/evaluate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Routine: allowed at once.
    Allow,
    /// Forbidden, or no permit applies.
    Deny,
    /// Sensitive: humans must approve.
    Approval,
}

/// Default review window: 1 hour.
pub const DEFAULT_REVIEW_WINDOW_SECS: u64 = 3600;
/// Default grant lifetime: 5 minutes.
pub const DEFAULT_GRANT_TTL_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    pub outcome: Outcome,
    /// Empty unless `outcome` is `approval`.
    pub requirements: Vec<Requirement>,
    /// `@id`s of the policies that determined the outcome.
    pub policies: Vec<String>,
    /// Hex SHA-256 of the policy text.
    pub policy_hash: String,
    /// Why, when denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Review window in seconds (pending only; shortest `@expires`, default 1 h).
    pub review_window_secs: u64,
    /// Grant lifetime in seconds (shortest `@grant_ttl`, default 5 min).
    pub grant_ttl_secs: u64,
}

impl PolicyDecision {
    /// The answer of `POST /v1/check`:
    /// `{"outcome":"allow"|"deny"|"approval","requirements","policies","reason"}`.
    pub fn check_answer(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "outcome".into(),
            serde_json::to_value(self.outcome).unwrap_or(Value::Null),
        );
        m.insert(
            "requirements".into(),
            serde_json::to_value(&self.requirements).unwrap_or(Value::Null),
        );
        m.insert(
            "policies".into(),
            serde_json::to_value(&self.policies).unwrap_or(Value::Null),
        );
        m.insert("reason".into(), opt(&self.reason));
        Value::Object(m)
    }
}

/// A fresh request id: `req_` + 26 lowercase base32 characters (128 random bits).
pub fn new_request_id() -> Result<String> {
    canon::random_id("req_")
}

/// Whether `s` has the shape of a request id (checked before using it in a key or a path).
pub fn is_request_id(s: &str) -> bool {
    s.len() == 30
        && s.starts_with("req_")
        && s[4..].bytes().all(|c| {
            c.is_ascii_digit()
                || (c.is_ascii_lowercase() && !matches!(c, b'i' | b'l' | b'o' | b'u'))
        })
}

/// The idempotency key of a request: the `Idempotency-Key` header or the body's
/// `idempotency_key` field; both present and different is a 422.
pub fn idempotency_key(header: Option<&str>, req: &ActionRequest) -> Result<Option<String>> {
    match (
        header.map(str::trim).filter(|h| !h.is_empty()),
        req.idempotency_key.as_deref(),
    ) {
        (Some(h), Some(b)) if h != b => Err(Error::invalid(
            "idempotency_key",
            "differs from the Idempotency-Key header",
        )),
        (Some(h), _) => {
            validate_idempotency_key(h).map_err(|m| Error::invalid("Idempotency-Key", m))?;
            Ok(Some(h.to_string()))
        }
        (None, b) => Ok(b.map(str::to_string)),
    }
}

/// The body of the policy component's `POST /internal/evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    /// The agent id proven by its token.
    pub agent: String,
    pub request: ActionRequest,
}

/// A request as stored. [`ActionRecord::view`] renders the public form of
/// `GET /v1/actions/:id`; the other fields stay inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: String,
    pub status: Status,
    pub action: String,
    pub resource: Resource,
    pub agent: String,
    pub on_behalf_of: Option<String>,
    pub context: Map<String, Value>,
    pub impact: Option<String>,
    pub justification: Option<String>,
    pub digest: String,
    pub policies: Vec<String>,
    pub requirements: Vec<Requirement>,
    pub votes: Vec<Vote>,
    pub created_at: Timestamp,
    /// End of the review window (pending requests); `null` for requests final at creation.
    pub expires_at: Option<Timestamp>,
    pub decided_at: Option<Timestamp>,
    /// Why denied or expired.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    pub policy_hash: String,
    pub grant_ttl_secs: u64,
    /// The grant (JWT) issued when allowed or approved.
    #[serde(default)]
    pub grant: Option<String>,
}

impl ActionRecord {
    /// A new record for a validated request and its policy decision: `allowed` and `denied`
    /// are final at once (`decided_at` = now); `approval` makes it `pending` until
    /// `now + review window`.
    pub fn new(
        id: String,
        agent: &str,
        req: &ActionRequest,
        decision: &PolicyDecision,
        now: Timestamp,
    ) -> Result<ActionRecord> {
        let (status, expires_at, decided_at) = match decision.outcome {
            Outcome::Allow => (Status::Allowed, None, Some(now)),
            Outcome::Deny => (Status::Denied, None, Some(now)),
            Outcome::Approval => (
                Status::Pending,
                Some(now.plus(decision.review_window_secs)),
                None,
            ),
        };
        Ok(ActionRecord {
            id,
            status,
            action: req.action.clone(),
            resource: req.resource.clone(),
            agent: agent.to_string(),
            on_behalf_of: req.on_behalf_of.clone(),
            context: req.context.clone(),
            impact: req.impact.clone(),
            justification: req.justification.clone(),
            digest: req.digest()?,
            policies: decision.policies.clone(),
            requirements: if status == Status::Pending {
                decision.requirements.clone()
            } else {
                Vec::new()
            },
            votes: Vec::new(),
            created_at: now,
            expires_at,
            decided_at,
            reason: if status == Status::Denied {
                decision.reason.clone()
            } else {
                None
            },
            callback_url: req.callback_url.clone(),
            idempotency_key: req.idempotency_key.clone(),
            policy_hash: decision.policy_hash.clone(),
            grant_ttl_secs: decision.grant_ttl_secs,
            grant: None,
        })
    }

    /// The status as seen at `now`: a pending request past `expires_at` is `expired`
    /// (fail closed) whether or not the sweep has run.
    pub fn effective_status(&self, now: Timestamp) -> Status {
        match (self.status, self.expires_at) {
            (Status::Pending, Some(exp)) if now >= exp => Status::Expired,
            (s, _) => s,
        }
    }

    /// This record as seen at `now` (status and `decided_at` of an overdue pending request
    /// set to `expired` and `expires_at`).
    pub fn at(&self, now: Timestamp) -> ActionRecord {
        let mut r = self.clone();
        if r.effective_status(now) == Status::Expired && r.status == Status::Pending {
            r.status = Status::Expired;
            r.decided_at = r.expires_at;
            r.reason = Some("review window ended without a decision".into());
        }
        r
    }

    /// The public JSON of `GET /v1/actions/:id` (and `GET /v1/reviews` items) as seen at `now`:
    /// `id, status, action, resource, agent, on_behalf_of, context, impact, justification,
    /// digest, policies, requirements, votes, created_at, expires_at, decided_at`, plus `reason`
    /// when denied or expired, and `grant` when `with_grant` and the request is allowed or
    /// approved (only for the requesting agent).
    pub fn view(&self, now: Timestamp, with_grant: bool) -> Value {
        let r = self.at(now);
        let mut m = Map::new();
        m.insert("id".into(), Value::String(r.id.clone()));
        m.insert("status".into(), Value::String(r.status.as_str().into()));
        m.insert("action".into(), Value::String(r.action.clone()));
        m.insert(
            "resource".into(),
            serde_json::to_value(&r.resource).unwrap_or(Value::Null),
        );
        m.insert("agent".into(), Value::String(r.agent.clone()));
        m.insert("on_behalf_of".into(), opt(&r.on_behalf_of));
        m.insert("context".into(), Value::Object(r.context.clone()));
        m.insert("impact".into(), opt(&r.impact));
        m.insert("justification".into(), opt(&r.justification));
        m.insert("digest".into(), Value::String(r.digest.clone()));
        m.insert(
            "policies".into(),
            serde_json::to_value(&r.policies).unwrap_or(Value::Null),
        );
        m.insert(
            "requirements".into(),
            serde_json::to_value(&r.requirements).unwrap_or(Value::Null),
        );
        m.insert(
            "votes".into(),
            serde_json::to_value(&r.votes).unwrap_or(Value::Null),
        );
        m.insert(
            "created_at".into(),
            serde_json::to_value(r.created_at).unwrap_or(Value::Null),
        );
        m.insert(
            "expires_at".into(),
            serde_json::to_value(r.expires_at).unwrap_or(Value::Null),
        );
        m.insert(
            "decided_at".into(),
            serde_json::to_value(r.decided_at).unwrap_or(Value::Null),
        );
        if let Some(reason) = &r.reason {
            if matches!(r.status, Status::Denied | Status::Expired) {
                m.insert("reason".into(), Value::String(reason.clone()));
            }
        }
        if with_grant && matches!(r.status, Status::Allowed | Status::Approved) {
            if let Some(g) = &r.grant {
                m.insert("grant".into(), Value::String(g.clone()));
            }
        }
        Value::Object(m)
    }

    /// The body POSTed to `callback_url` when the request is decided:
    /// `{"type":"action.decided","id","status","grant"?,"reason"?,"votes","decided_at"}`
    /// (`grant` when approved or allowed, `reason` when denied or expired).
    pub fn callback_body(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::String("action.decided".into()));
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("status".into(), Value::String(self.status.as_str().into()));
        if matches!(self.status, Status::Approved | Status::Allowed) {
            if let Some(g) = &self.grant {
                m.insert("grant".into(), Value::String(g.clone()));
            }
        }
        if matches!(self.status, Status::Denied | Status::Expired) {
            if let Some(r) = &self.reason {
                m.insert("reason".into(), Value::String(r.clone()));
            }
        }
        m.insert(
            "votes".into(),
            serde_json::to_value(&self.votes).unwrap_or(Value::Null),
        );
        m.insert(
            "decided_at".into(),
            serde_json::to_value(self.decided_at).unwrap_or(Value::Null),
        );
        Value::Object(m)
    }

    /// `Countersign-Event-Id` of this request's decision callback: the same on every retry.
    pub fn callback_event_id(&self) -> String {
        format!("evt_{}_decided", self.id)
    }

    /// The grant's `res` claim.
    pub fn resource_ref(&self) -> ResourceRef {
        ResourceRef {
            type_: self.resource.type_.clone(),
            id: self.resource.id.clone(),
        }
    }

    /// Approver ids of the approving votes (the grant's `apr`), in vote order, deduplicated.
    pub fn approvers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in &self.votes {
            if v.decision == Decision::Approve && !out.contains(&v.approver) {
                out.push(v.approver.clone());
            }
        }
        out
    }

    /// The answer body of `POST /v1/actions` for this record: 200 `{id,status:"allowed",grant,
    /// policies}`, 403 `{id,status:"denied",reason,policies}`, 202 `{id,status:"pending",
    /// expires_at,requirements,policies}` (with `Location: /v1/actions/<id>`).
    pub fn intake_answer(&self) -> (u16, Value) {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("status".into(), Value::String(self.status.as_str().into()));
        let status = match self.status {
            Status::Allowed | Status::Approved => {
                m.insert("grant".into(), opt(&self.grant));
                200
            }
            Status::Pending => {
                m.insert(
                    "expires_at".into(),
                    serde_json::to_value(self.expires_at).unwrap_or(Value::Null),
                );
                m.insert(
                    "requirements".into(),
                    serde_json::to_value(&self.requirements).unwrap_or(Value::Null),
                );
                202
            }
            Status::Denied | Status::Expired => {
                m.insert("reason".into(), opt(&self.reason));
                403
            }
        };
        m.insert(
            "policies".into(),
            serde_json::to_value(&self.policies).unwrap_or(Value::Null),
        );
        (status, Value::Object(m))
    }
}

fn opt(s: &Option<String>) -> Value {
    s.as_ref()
        .map(|s| Value::String(s.clone()))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Value {
        json!({"action": "db.export",
            "resource": {"type": "Dataset", "id": "customers", "attributes": {"classification": "pii"}},
            "on_behalf_of": "user:alice", "context": {"env": "prod", "rows": 120000},
            "impact": "Exports 120k customer rows", "justification": "Quarterly report",
            "callback_url": "https://agent.example/hooks/countersign", "idempotency_key": "7f3c"})
    }

    fn err_field(v: Value) -> String {
        match ActionRequest::from_value(v) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn bodies_with_duplicate_keys_are_malformed() {
        let dup = [
            &br#"{"action":"db.query","action":"db.drop","resource":{"type":"T","id":"x"}}"#[..],
            br#"{"action":"a","resource":{"type":"T","id":"x","id":"y"}}"#,
            br#"{"action":"a","resource":{"type":"T","id":"x"},"context":{"env":"dev","env":"prod"}}"#,
        ];
        for body in dup {
            let e = ActionRequest::parse(body).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
        }
        let e = DecisionBody::parse(br#"{"decision":"deny","decision":"approve"}"#).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
    }

    #[test]
    fn parses_the_design_example() {
        let r = ActionRequest::parse(example().to_string().as_bytes()).unwrap();
        assert_eq!(r.action, "db.export");
        assert_eq!(r.resource.type_, "Dataset");
        assert_eq!(r.resource.attributes["classification"], "pii");
        assert_eq!(r.on_behalf_of.as_deref(), Some("user:alice"));
        assert_eq!(r.context["rows"], 120000);
        assert_eq!(r.idempotency_key.as_deref(), Some("7f3c"));
        // Deserialize goes through the same validation.
        let r2: ActionRequest = serde_json::from_value(example()).unwrap();
        assert_eq!(r, r2);
        let round: ActionRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(r, round);
    }

    #[test]
    fn minimal_request_defaults() {
        let r = ActionRequest::from_value(json!({"action":"a","resource":{"type":"T","id":"x"}}))
            .unwrap();
        assert!(r.context.is_empty() && r.resource.attributes.is_empty());
        assert_eq!(r.on_behalf_of, None);
        let r = ActionRequest::from_value(json!({"action":"a","resource":{"type":"T","id":"x","attributes":null},"context":null,"on_behalf_of":null})).unwrap();
        assert!(r.context.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = example();
        v["context"]["ratio"] = json!(0.5);
        assert_eq!(err_field(v), "context.ratio");
        let mut v = example();
        v["resource"]["attributes"]["tags"] = json!(["a", null]);
        assert_eq!(err_field(v), "resource.attributes.tags[1]");
        let mut v = example();
        v["context"]["deep"] = json!({"x": {"y z": [1, 2.5]}});
        assert_eq!(err_field(v), "context.deep.x[\"y z\"][1]");
        let mut v = example();
        v["context"]["big"] = json!(9_007_199_254_740_992u64);
        assert_eq!(err_field(v), "context.big");
        let mut v = example();
        v["context"]["huge"] = json!(u64::MAX);
        assert_eq!(err_field(v), "context.huge");
        let mut v = example();
        v["context"]["ok"] = json!(-9_007_199_254_740_991i64);
        assert!(ActionRequest::from_value(v).is_ok());
        let mut v = example();
        v["context"]["on_behalf_of"] = json!("user:bob");
        assert_eq!(err_field(v), "context.on_behalf_of");
        let mut v = example();
        v["extra"] = json!(1);
        assert_eq!(err_field(v), "extra");
        let mut v = example();
        v["resource"]["kind"] = json!(1);
        assert_eq!(err_field(v), "resource.kind");
        let mut v = example();
        v["resource"]["id"] = json!("");
        assert_eq!(err_field(v), "resource.id");
        let mut v = example();
        v["resource"]["id"] = json!(7);
        assert_eq!(err_field(v), "resource.id");
        let mut v = example();
        v.as_object_mut().unwrap().remove("resource");
        assert_eq!(err_field(v), "resource");
        let mut v = example();
        v["impact"] = json!(3);
        assert_eq!(err_field(v), "impact");
        let mut v = example();
        v["context"] = json!([1]);
        assert_eq!(err_field(v), "context");
        let mut v = example();
        v["idempotency_key"] = json!("has space");
        assert_eq!(err_field(v), "idempotency_key");
        assert_eq!(err_field(json!([1])), "body");
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        let mut v = example();
        v["context"]["deep"] = deep;
        assert!(err_field(v).starts_with("context.deep[0]"));
        assert!(matches!(
            ActionRequest::parse(b"{not json"),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn action_and_type_syntax() {
        for ok in ["db.export", "a", "x:y-z_1.2", &"a".repeat(128)] {
            assert!(validate_action(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129), "a\"b"] {
            assert!(validate_action(bad).is_err(), "{bad}");
        }
        for ok in ["Dataset", "App::Dataset", "_x", "A1::B_2::C"] {
            assert!(validate_type_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1x",
            "App::",
            "::A",
            "A:B",
            "A::B::",
            "a-b",
            "if",
            "App::true",
            "Agent",
            "Action",
            "App::Action",
            "__cedar",
            "Dä",
        ] {
            assert!(validate_type_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_is_canonical() {
        let r = ActionRequest::from_value(example()).unwrap();
        // Same content, other member order and number spelling: same digest.
        let reordered = json!({"context": {"rows": 1.2e5, "env": "prod"}, "resource": {"attributes": {"classification": "pii"}, "id": "customers", "type": "Dataset"}, "action": "db.export", "on_behalf_of": "user:alice"});
        // 1.2e5 is a float in serde_json, so compute the digest directly rather than via validation.
        let res: Resource = serde_json::from_value(reordered["resource"].clone()).unwrap();
        let ctx = reordered["context"].as_object().unwrap().clone();
        assert_eq!(
            digest("db.export", &res, &ctx, Some("user:alice")).unwrap(),
            r.digest().unwrap()
        );
        // Known answer: SHA-256 over the canonical text spelled out by hand.
        let text = r#"{"action":"db.export","context":{"env":"prod","rows":120000},"on_behalf_of":"user:alice","resource":{"attributes":{"classification":"pii"},"id":"customers","type":"Dataset"}}"#;
        assert_eq!(
            r.digest().unwrap(),
            canon::b64url(&canon::sha256(text.as_bytes()))
        );
        // Absent context/on_behalf_of = {} / null.
        let bare =
            ActionRequest::from_value(json!({"action":"a","resource":{"type":"T","id":"x"}}))
                .unwrap();
        let text = r#"{"action":"a","context":{},"on_behalf_of":null,"resource":{"attributes":{},"id":"x","type":"T"}}"#;
        assert_eq!(
            bare.digest().unwrap(),
            canon::b64url(&canon::sha256(text.as_bytes()))
        );
        assert_eq!(bare.digest().unwrap().len(), 43);
        // Any change changes it.
        let mut other = r.clone();
        other.resource.id = "customers2".into();
        assert_ne!(other.digest().unwrap(), r.digest().unwrap());
        let mut other = r.clone();
        other.on_behalf_of = None;
        assert_ne!(other.digest().unwrap(), r.digest().unwrap());
        // Fields outside the digest do not change it.
        let mut other = r.clone();
        other.impact = Some("different".into());
        assert_eq!(other.digest().unwrap(), r.digest().unwrap());
    }

    #[test]
    fn body_hash_ignores_formatting() {
        let a = ActionRequest::parse(
            br#"{"action":"a","resource":{"type":"T","id":"x"},"context":{"b":1,"a":2}}"#,
        )
        .unwrap();
        let b = ActionRequest::parse(
            br#"{ "context":{"a":2,"b":1}, "resource":{"id":"x","type":"T"}, "action":"a" }"#,
        )
        .unwrap();
        assert_eq!(a.body_hash().unwrap(), b.body_hash().unwrap());
        let c =
            ActionRequest::parse(br#"{"action":"a","resource":{"type":"T","id":"y"}}"#).unwrap();
        assert_ne!(a.body_hash().unwrap(), c.body_hash().unwrap());
    }

    fn decision(outcome: Outcome) -> PolicyDecision {
        PolicyDecision {
            outcome,
            requirements: vec![Requirement {
                group: "dba".into(),
                quorum: 1,
            }],
            policies: vec!["pii-export".into()],
            policy_hash: "00".repeat(32),
            reason: Some("forbidden by p".into()),
            review_window_secs: 900,
            grant_ttl_secs: 300,
        }
    }

    #[test]
    fn record_view_and_answers() {
        let req = ActionRequest::from_value(example()).unwrap();
        let now = Timestamp(1_777_636_800);
        let rec = ActionRecord::new(
            "req_1".into(),
            "etl-bot",
            &req,
            &decision(Outcome::Approval),
            now,
        )
        .unwrap();
        assert_eq!(rec.status, Status::Pending);
        assert_eq!(rec.expires_at, Some(Timestamp(now.0 + 900)));
        let v = rec.view(now, true);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut expected = vec![
            "id",
            "status",
            "action",
            "resource",
            "agent",
            "on_behalf_of",
            "context",
            "impact",
            "justification",
            "digest",
            "policies",
            "requirements",
            "votes",
            "created_at",
            "expires_at",
            "decided_at",
        ];
        expected.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(v["status"], "pending");
        assert_eq!(v["created_at"], "2026-05-01T12:00:00Z");
        assert_eq!(v["requirements"], json!([{"group":"dba","quorum":1}]));
        let (code, body) = rec.intake_answer();
        assert_eq!(code, 202);
        assert_eq!(body["expires_at"], "2026-05-01T12:15:00Z");
        // Overdue: expired without any sweep.
        let later = Timestamp(now.0 + 900);
        let v = rec.view(later, false);
        assert_eq!(v["status"], "expired");
        assert_eq!(v["decided_at"], "2026-05-01T12:15:00Z");
        assert_eq!(
            rec.effective_status(Timestamp(now.0 + 899)),
            Status::Pending
        );
        // Stored form round-trips.
        let stored = serde_json::to_string(&rec).unwrap();
        assert_eq!(serde_json::from_str::<ActionRecord>(&stored).unwrap(), rec);

        let mut allowed = ActionRecord::new(
            "req_2".into(),
            "etl-bot",
            &req,
            &decision(Outcome::Allow),
            now,
        )
        .unwrap();
        allowed.grant = Some("jwt".into());
        assert!(allowed.requirements.is_empty());
        let (code, body) = allowed.intake_answer();
        assert_eq!((code, body["grant"].as_str()), (200, Some("jwt")));
        assert_eq!(allowed.view(now, true)["grant"], "jwt");
        assert!(allowed.view(now, false).get("grant").is_none());
        let denied = ActionRecord::new(
            "req_3".into(),
            "etl-bot",
            &req,
            &decision(Outcome::Deny),
            now,
        )
        .unwrap();
        let (code, body) = denied.intake_answer();
        assert_eq!(
            (code, body["reason"].as_str()),
            (403, Some("forbidden by p"))
        );
        assert_eq!(body["policies"], json!(["pii-export"]));
    }

    #[test]
    fn decision_body() {
        let d = DecisionBody::parse(br#"{"decision":"approve","reason":"ok"}"#).unwrap();
        assert_eq!(d.decision, Decision::Approve);
        assert!(
            matches!(DecisionBody::parse(br#"{"decision":"maybe"}"#), Err(Error::Invalid { field, .. }) if field == "decision")
        );
        assert!(
            matches!(DecisionBody::parse(br#"{"reason":"x"}"#), Err(Error::Invalid { field, .. }) if field == "decision")
        );
        assert!(
            matches!(DecisionBody::parse(br#"{"decision":"deny","by":"x"}"#), Err(Error::Invalid { field, .. }) if field == "by")
        );
        assert!(
            matches!(DecisionBody::parse(br#"{"decision":"deny","reason":5}"#), Err(Error::Invalid { field, .. }) if field == "reason")
        );
    }

    #[test]
    fn callback_and_check_bodies() {
        let req = ActionRequest::from_value(example()).unwrap();
        let now = Timestamp(1_777_636_800);
        let mut rec = ActionRecord::new(
            "req_1".into(),
            "etl-bot",
            &req,
            &decision(Outcome::Approval),
            now,
        )
        .unwrap();
        rec.status = Status::Approved;
        rec.decided_at = Some(now);
        rec.grant = Some("jwt".into());
        rec.votes.push(Vote {
            approver: "bob".into(),
            decision: Decision::Approve,
            reason: None,
            channel: "api".into(),
            at: now,
        });
        let b = rec.callback_body();
        assert_eq!(b["type"], "action.decided");
        assert_eq!(b["status"], "approved");
        assert_eq!(b["grant"], "jwt");
        assert!(b.get("reason").is_none());
        assert_eq!(b["votes"][0]["approver"], "bob");
        assert_eq!(b["votes"][0]["at"], "2026-05-01T12:00:00Z");
        assert_eq!(b["decided_at"], "2026-05-01T12:00:00Z");
        rec.status = Status::Denied;
        rec.reason = Some("no".into());
        let b = rec.callback_body();
        assert!(b.get("grant").is_none());
        assert_eq!(b["reason"], "no");
        assert_eq!(rec.callback_event_id(), rec.callback_event_id());
        let c = decision(Outcome::Approval).check_answer();
        assert_eq!(c["outcome"], "approval");
        assert_eq!(c["requirements"][0]["group"], "dba");
        assert_eq!(decision(Outcome::Deny).check_answer()["outcome"], "deny");
    }

    #[test]
    fn ids_and_idempotency_keys() {
        let id = new_request_id().unwrap();
        assert!(is_request_id(&id), "{id}");
        assert!(!is_request_id("req_../../etc"));
        assert!(!is_request_id(&id.to_uppercase()));
        let req = ActionRequest::from_value(example()).unwrap();
        assert_eq!(
            idempotency_key(None, &req).unwrap().as_deref(),
            Some("7f3c")
        );
        assert_eq!(
            idempotency_key(Some("7f3c"), &req).unwrap().as_deref(),
            Some("7f3c")
        );
        assert!(idempotency_key(Some("other"), &req).is_err());
        let mut bare = req.clone();
        bare.idempotency_key = None;
        assert_eq!(
            idempotency_key(Some("h"), &bare).unwrap().as_deref(),
            Some("h")
        );
        assert!(idempotency_key(Some("a b"), &bare).is_err());
        assert_eq!(idempotency_key(None, &bare).unwrap(), None);
    }

    #[test]
    fn person_of_on_behalf_of() {
        assert_eq!(on_behalf_of_person("user:alice"), "alice");
        assert_eq!(on_behalf_of_person("alice"), "alice");
    }
}
