//! The decision component: owns a request's life after intake — its status, the votes of every
//! channel, grants, callbacks, card updates and expiry. A thin adapter: it parses, authenticates,
//! calls `shared` (the rules and the exactly-once state machine) and `adapter` (Spin glue,
//! deliveries), and answers.
//!
//! Public routes (spin.toml `/v1/actions/...`, `/v1/reviews`, `/v1/grants/...`, `/v1/keys`,
//! `/v1/sweep`; `:id` is parsed here):
//! - `GET /v1/actions/:id[?wait=<s>]` — the requesting agent (with its grant once allowed or
//!   approved), or an approver who may see the request (`shared::rules::may_view`). Anyone else
//!   gets 404, so ids do not leak. `wait` (0–30; larger values are clamped to 30) holds the
//!   answer until the status differs from the one at the call (expiry included).
//! - `POST /v1/actions/:id/decision` — an approver's vote through the API (channel `api`).
//! - `GET /v1/reviews[?limit=<n>]` — `{"reviews":[...]}`: the pending requests this approver
//!   may still vote on, oldest first (limit 1–200, default 50; larger values clamped).
//! - `POST /v1/grants/verify` — no bearer token: the grant is the credential.
//! - `GET /v1/keys` — the JWKS.
//! - `POST /v1/sweep` — admin token.
//!
//! Internal (service chaining only): `POST /internal/vote` (every channel's votes, see
//! `shared::vote`), `POST /internal/sweep` (the host's timer).
//!
//! A vote that decides a request queues its deliveries (callback, card updates) and writes its
//! audit records before the answer; the first delivery attempts run after the answer has been
//! sent, so a slow agent endpoint never delays an approver or a chat platform. Whatever fails
//! there stays queued for the sweep.

use std::time::{Duration, Instant};

use adapter::{
    audit_event, audit_events, authenticate_admin, directory, header, is_internal, json_body,
    problem, problem_response, query_param, signing_key, SpinKv,
};
use adapter::{jobs, store};
use serde_json::{json, Value};
use shared::audit::AuditEvent;
use shared::crypto::KeySet;
use shared::directory::{bearer_token, Agent, Approver, Directory};
use shared::grant::{self, GrantClaims, GrantVerifyRequest};
use shared::model::{is_request_id, ActionRecord, DecisionBody, Status, Vote};
use shared::rules::{self, VoteOutcome};
use shared::store::{self, Job, Kv, Store, VoteReceipt};
use shared::vote::{VoteAnswer, VoteRequest};
use shared::{Error, Result, Timestamp};
use spin_sdk::http::conversions::TryFromIncomingRequest;
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// Longest `?wait=` (DESIGN: ≤ 30 s); larger values are clamped.
const MAX_WAIT_SECS: u64 = 30;
/// How often a waiting `GET /v1/actions/:id` re-reads the request.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// `GET /v1/reviews` page size: default and largest (larger values are clamped).
const DEFAULT_REVIEWS: usize = 50;
const MAX_REVIEWS: usize = 200;
/// Delivery attempts one sweep makes at most.
const SWEEP_ATTEMPTS: usize = 100;
/// The channel of votes cast through `POST /v1/actions/:id/decision`.
const API_CHANNEL: &str = "api";

/// Deliveries queued while handling a request, attempted once the answer is out.
type Followups = Vec<(i64, Job)>;

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let (response, followups) = match Request::try_from_incoming_request(incoming).await {
        Ok(req) => route(&req).await,
        Err(_) => (
            problem_response(400, "malformed", "the request could not be read"),
            Vec::new(),
        ),
    };
    adapter::respond(out, response).await;
    if !followups.is_empty() {
        match SpinKv::open() {
            Ok(kv) => jobs::run_queued(&Store::new(kv), followups, Timestamp::now()).await,
            Err(e) => eprintln!("countersign: deliveries left to the sweep: {e}"),
        }
    }
}

async fn route(req: &Request) -> (Response, Followups) {
    let path = req.path().to_string();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
    let method = req.method();
    let result = match segments.as_slice() {
        ["v1", "actions", id] => match method {
            Method::Get => get_action(req, id).await.map(none),
            _ => Ok((method_not_allowed("GET"), Vec::new())),
        },
        ["v1", "actions", id, "decision"] => match method {
            Method::Post => decide(req, id).await,
            _ => Ok((method_not_allowed("POST"), Vec::new())),
        },
        ["v1", "reviews"] => match method {
            Method::Get => reviews(req).await.map(none),
            _ => Ok((method_not_allowed("GET"), Vec::new())),
        },
        ["v1", "grants", "verify"] => match method {
            Method::Post => verify_grant(req).await.map(none),
            _ => Ok((method_not_allowed("POST"), Vec::new())),
        },
        ["v1", "keys"] => match method {
            Method::Get => keys().map(none),
            _ => Ok((method_not_allowed("GET"), Vec::new())),
        },
        ["v1", "sweep"] => match method {
            Method::Post => admin_sweep(req).await.map(none),
            _ => Ok((method_not_allowed("POST"), Vec::new())),
        },
        ["internal", "vote"] if is_internal(req) => match method {
            Method::Post => internal_vote(req).await,
            _ => Ok((method_not_allowed("POST"), Vec::new())),
        },
        ["internal", "sweep"] if is_internal(req) => match method {
            Method::Post => sweep(Timestamp::now())
                .await
                .map(|v| none(ok_json(200, &v))),
            _ => Ok((method_not_allowed("POST"), Vec::new())),
        },
        _ => Ok((adapter::not_found(), Vec::new())),
    };
    match result {
        Ok(answer) => answer,
        Err(e) => (problem(&e), Vec::new()),
    }
}

fn none(r: Response) -> (Response, Followups) {
    (r, Vec::new())
}

fn method_not_allowed(allow: &str) -> Response {
    let mut r = adapter::method_not_allowed();
    r.set_header("allow", allow);
    r
}

/// A JSON answer that no cache keeps (views may carry grants).
fn ok_json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Response {
    let mut r = adapter::json_response(status, value);
    r.set_header("cache-control", "no-store");
    r
}

/// An answer from an early exit (`json_body`'s 413/415) turned into the handler's flow.
fn early(r: Response) -> Result<(Response, Followups)> {
    Ok((r, Vec::new()))
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Who a bearer token belongs to.
enum Principal<'d> {
    Agent(&'d Agent),
    Approver(&'d Approver),
}

/// The agent or approver proven by the bearer token. A missing or unknown token is a 401,
/// audited as `auth.failed` (without the token).
async fn principal<'d>(req: &Request, dir: &'d Directory) -> Result<Principal<'d>> {
    let found = header(req, "authorization")
        .and_then(bearer_token)
        .and_then(|token| {
            dir.agent_by_token(token)
                .map(Principal::Agent)
                .or_else(|| dir.approver_by_token(token).map(Principal::Approver))
        });
    match found {
        Some(p) => Ok(p),
        None => Err(auth_failed(req, "missing or unknown bearer token").await),
    }
}

/// The approver proven by the bearer token; an agent's token is a 403 (agents never vote).
async fn approver<'d>(req: &Request, dir: &'d Directory) -> Result<&'d Approver> {
    match principal(req, dir).await? {
        Principal::Approver(a) => Ok(a),
        Principal::Agent(_) => Err(Error::Forbidden(
            "this route needs an approver's API token".into(),
        )),
    }
}

/// Audits a failed authentication and returns the 401 to answer.
async fn auth_failed(req: &Request, reason: &str) -> Error {
    let presented = header(req, "authorization").is_some();
    let data = json!({
        "route": req.path(),
        "method": method_name(req.method()),
        "reason": reason,
        "token_presented": presented,
    });
    audit_event("auth.failed", None, "anonymous", data).await;
    Error::Unauthorized(if presented {
        "unknown bearer token".into()
    } else {
        "send Authorization: Bearer <token>".into()
    })
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Patch => "PATCH".into(),
        Method::Head => "HEAD".into(),
        Method::Options => "OPTIONS".into(),
        Method::Connect => "CONNECT".into(),
        Method::Trace => "TRACE".into(),
        Method::Other(s) => s.chars().take(16).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// GET /v1/actions/:id

fn unknown_request() -> Error {
    Error::NotFound("no such request".into())
}

async fn get_action(req: &Request, id: &str) -> Result<Response> {
    let dir = directory()?;
    let who = principal(req, &dir).await?;
    let wait = wait_secs(req)?;
    if !is_request_id(id) {
        return Err(unknown_request());
    }
    let store = store()?;
    let mut record = store.load(id)?.ok_or_else(unknown_request)?;
    // Agents see only their own requests, approvers those they may review; anyone else learns
    // nothing, not even that the id exists.
    let with_grant = match who {
        Principal::Agent(a) if a.id == record.agent => true,
        Principal::Approver(p) if rules::may_view(&record, &dir, &p.id) => false,
        _ => return Err(unknown_request()),
    };
    let initial = record.effective_status(Timestamp::now());
    if wait > 0 && initial == Status::Pending {
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(WAIT_POLL));
            if let Some(r) = store.load(id)? {
                record = r;
            }
            if record.effective_status(Timestamp::now()) != initial {
                break;
            }
        }
    }
    Ok(ok_json(200, &record.view(Timestamp::now(), with_grant)))
}

/// `?wait=<seconds>`: 0 to 30, larger values clamped to 30; anything but a whole number is 422.
fn wait_secs(req: &Request) -> Result<u64> {
    match query_param(req, "wait") {
        None => Ok(0),
        Some(v) if v.is_empty() => Ok(0),
        Some(v) => parse_count(&v)
            .map(|n| n.min(MAX_WAIT_SECS))
            .ok_or_else(|| Error::invalid("wait", "must be a whole number of seconds (0 to 30)")),
    }
}

/// A non-negative decimal integer (saturating), `None` for anything else.
fn parse_count(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 32 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------------
// Votes: POST /v1/actions/:id/decision and POST /internal/vote

async fn decide(req: &Request, id: &str) -> Result<(Response, Followups)> {
    let dir = directory()?;
    let who = approver(req, &dir).await?;
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return early(r),
    };
    let body = DecisionBody::parse(body)?;
    if !is_request_id(id) {
        return Err(unknown_request());
    }
    let now = Timestamp::now();
    let vote = Vote {
        approver: who.id.clone(),
        decision: body.decision,
        reason: body.reason.filter(|r| !r.is_empty()),
        channel: API_CHANNEL.into(),
        at: now,
    };
    let store = store()?;
    let judged = judge(&store, &dir, id, &vote, now).await?;
    let response = match judged.receipt.outcome.record() {
        Some(record) => ok_json(200, &record.view(now, false)),
        None => match &judged.receipt.outcome {
            VoteOutcome::Refused(r) => refusal(r),
            _ => problem(&Error::Store("vote outcome without a record".into())),
        },
    };
    Ok((response, judged.followups))
}

fn refusal(r: &rules::Refusal) -> Response {
    let p = r.to_problem();
    problem_response(p.status, r.code.as_str(), &r.message)
}

async fn internal_vote(req: &Request) -> Result<(Response, Followups)> {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return early(r),
    };
    let request = VoteRequest::parse(body)?;
    let dir = directory()?;
    let now = Timestamp::now();
    let store = store()?;
    let judged = judge(&store, &dir, &request.id, &request.vote(now), now).await?;
    let current = match &judged.receipt.outcome {
        VoteOutcome::Refused(_) => store.load(&request.id).ok().flatten(),
        _ => None,
    };
    let answer = VoteAnswer::new(
        &judged.receipt.outcome,
        judged.receipt.decided_here,
        current.as_ref(),
        now,
    );
    Ok((ok_json(answer.status(), &answer), judged.followups))
}

struct Judged {
    receipt: VoteReceipt,
    followups: Followups,
}

/// The one judge of every channel's votes: `Store::vote` (rules + exactly-once claims), the
/// grant attached on approval (inside the claim's final record), then — only for the caller
/// whose claim made the final transition — the deliveries queued and the decision audited.
async fn judge(
    store: &Store<SpinKv>,
    dir: &Directory,
    id: &str,
    vote: &Vote,
    now: Timestamp,
) -> Result<Judged> {
    let mut issued: Option<GrantClaims> = None;
    let receipt = store.vote(id, dir, vote, |record| {
        if record.status == Status::Approved {
            let key = signing_key()?;
            let (token, claims) = grant::issue(&key, record, now)?;
            record.grant = Some(token);
            issued = Some(claims);
        }
        Ok(())
    })?;
    let outcome = &receipt.outcome;
    let mut followups = Vec::new();
    let decided = outcome.record().filter(|_| receipt.decided_here);
    // Durable before anything else: the deliveries of the decision.
    if let Some(record) = decided {
        followups = queue_decided(store, record, now);
    }
    let vote_data = |extra: Value| {
        let mut d = json!({
            "decision": vote.decision.as_str(),
            "channel": vote.channel,
            "reason": vote.reason,
        });
        if let (Some(d), Value::Object(e)) = (d.as_object_mut(), extra) {
            d.extend(e);
        }
        d
    };
    let mut events = vec![match outcome {
        VoteOutcome::Refused(r) => {
            let data = vote_data(json!({"code": r.code.as_str(), "message": r.message}));
            AuditEvent::new("vote.rejected", Some(id), &vote.approver, data)
        }
        VoteOutcome::Recorded(_) | VoteOutcome::Approved(_) | VoteOutcome::Denied(_) => {
            let result = match outcome {
                VoteOutcome::Recorded(_) => "recorded",
                VoteOutcome::Approved(_) => "approved",
                _ => "denied",
            };
            let data = vote_data(json!({"outcome": result}));
            AuditEvent::new("vote.cast", Some(id), &vote.approver, data)
        }
    }];
    if let Some(record) = decided {
        events.extend(decision_events(record, issued.as_ref(), &vote.approver));
    }
    // The vote and the decision it made: consecutive records, one append.
    audit_events(&events).await;
    Ok(Judged { receipt, followups })
}

/// Queues the deliveries of a final transition; a failure is logged (the decision stands).
fn queue_decided(store: &Store<SpinKv>, record: &ActionRecord, now: Timestamp) -> Followups {
    let mut out = Vec::new();
    for job in jobs::decided_jobs(record, now) {
        match jobs::enqueue(store, job) {
            Ok(q) => out.push(q),
            Err(e) => eprintln!(
                "countersign: could not queue a delivery of {}: {e}",
                record.id
            ),
        }
    }
    out
}

/// `action.approved` + `grant.issued`, or `action.denied`.
fn decision_events(
    record: &ActionRecord,
    claims: Option<&GrantClaims>,
    actor: &str,
) -> Vec<AuditEvent> {
    let id = Some(record.id.as_str());
    match record.status {
        Status::Approved => {
            let data = json!({
                "approvers": record.approvers(),
                "requirements": record.requirements,
                "votes": record.votes.len(),
            });
            let mut out = vec![AuditEvent::new("action.approved", id, actor, data)];
            if let Some(c) = claims {
                let data = json!({
                    "jti": c.jti, "sub": c.sub, "act": c.act, "res": c.res, "dig": c.dig,
                    "apr": c.apr, "iat": c.iat, "exp": c.exp,
                });
                out.push(AuditEvent::new("grant.issued", id, actor, data));
            }
            out
        }
        Status::Denied => {
            let data = json!({"reason": record.reason, "votes": record.votes.len()});
            vec![AuditEvent::new("action.denied", id, actor, data)]
        }
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// GET /v1/reviews

async fn reviews(req: &Request) -> Result<Response> {
    let dir = directory()?;
    let who = approver(req, &dir).await?;
    let limit = match query_param(req, "limit") {
        None => DEFAULT_REVIEWS,
        Some(v) => match parse_count(&v) {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(MAX_REVIEWS).min(MAX_REVIEWS),
            _ => {
                return Err(Error::invalid(
                    "limit",
                    "must be a whole number from 1 to 200",
                ))
            }
        },
    };
    let now = Timestamp::now();
    let found = store()?.reviews(&dir, &who.id, now, limit)?;
    let views: Vec<Value> = found.iter().map(|r| r.view(now, false)).collect();
    Ok(ok_json(200, &json!({ "reviews": views })))
}

// ---------------------------------------------------------------------------------------------
// POST /v1/grants/verify, GET /v1/keys

async fn verify_grant(req: &Request) -> Result<Response> {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    let request = GrantVerifyRequest::parse(body)?;
    let key = signing_key()?;
    let now = Timestamp::now();
    let claims = grant::verify_for(&request, &KeySet::from(&key), now)?;
    let store = store()?;
    let rid = Some(claims.rid.as_str());
    if request.consume {
        if !store.consume_grant(&claims.jti)? {
            let data = json!({"jti": claims.jti, "act": claims.act, "res": claims.res});
            audit_event("grant.replayed", rid, &claims.sub, data).await;
            return Err(already_consumed());
        }
        let data = json!({"jti": claims.jti, "act": claims.act, "res": claims.res});
        audit_event("grant.consumed", rid, &claims.sub, data).await;
    } else if store
        .kv()
        .increment(&store::keys::grant_claim(&claims.jti), 0)?
        > 0
    {
        // A look without consuming still tells a spent grant.
        return Err(already_consumed());
    }
    Ok(ok_json(200, &json!({"valid": true, "claims": claims})))
}

fn already_consumed() -> Error {
    Error::Conflict("the grant has already been used (single use)".into())
}

fn keys() -> Result<Response> {
    let jwks = signing_key()?.jwks().to_json();
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "public, max-age=300")
        .body(jwks)
        .build())
}

// ---------------------------------------------------------------------------------------------
// Sweep

async fn admin_sweep(req: &Request) -> Result<Response> {
    if let Err(e) = authenticate_admin(req) {
        let reason = match &e {
            Error::Unauthorized(m) => m.clone(),
            other => other.code().to_string(),
        };
        auth_failed(req, &reason).await;
        return Err(e);
    }
    Ok(ok_json(200, &sweep(Timestamp::now()).await?))
}

/// Expires every overdue pending request (exactly once each, with its callback and card
/// updates queued and `action.expired` audited), runs the deliveries that are due (first
/// attempts of those, retries with backoff, failed review posts), and has the audit chain
/// repaired if an appender died.
async fn sweep(now: Timestamp) -> Result<Value> {
    let store = store()?;
    let expired = store.sweep_pending(now, |_| Ok(()))?;
    for record in &expired {
        queue_decided(&store, record, now);
        let data = json!({"expires_at": record.expires_at, "votes": record.votes.len()});
        audit_event("action.expired", Some(&record.id), "countersign", data).await;
    }
    let attempts = jobs::run_due(&store, now, SWEEP_ATTEMPTS).await?;
    // The audit chain's repairs (a dead appender or sealer): the audit component's to make.
    let audit_unsealed_from =
        match adapter::call_internal("audit", "/internal/recover", &json!({})).await {
            Ok((200, body)) => serde_json::from_slice::<Value>(&body)
                .ok()
                .map(|v| v["unsealed_from"].clone())
                .unwrap_or(Value::Null),
            Ok((status, _)) => {
                eprintln!("countersign: audit recovery answered {status}");
                Value::Null
            }
            Err(e) => {
                eprintln!("countersign: audit recovery failed: {e}");
                Value::Null
            }
        };
    let ids: Vec<&str> = expired.iter().map(|r| r.id.as_str()).collect();
    Ok(json!({
        "expired": expired.len(),
        "expired_ids": ids,
        "delivery_attempts": attempts,
        "audit_unsealed_from": audit_unsealed_from,
        "at": now,
    }))
}
