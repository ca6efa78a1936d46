//! The intake component: `POST /v1/actions` (admit a request) and `POST /v1/check` (dry run).
//!
//! A thin adapter: authenticate the agent by its bearer token, validate the body
//! (`shared::model::ActionRequest`), ask the policy component (service chaining), and for
//! `/v1/actions` build, audit and store the record, sign the grant of a routine request, queue
//! the review posts of a sensitive one, and answer 200 / 403 / 202 as DESIGN.md says.
//!
//! Crash safety, in order: nothing is answered 200/202 before the record is stored; the grant
//! only leaves inside the stored record's answer; the audit records of the decision are
//! written before the record is stored, so no grant is ever handed out unaudited (a failure in
//! between leaves an audit record of a request that was refused with a 5xx, never the
//! reverse). Review posts are queued after the record is stored; a failed first attempt is the
//! sweep's to retry.
//!
//! Requests decided here (allowed, denied) are answered synchronously and get no callback:
//! only requests that were pending get one, from the decision component.

use adapter::jobs;
use adapter::shared::audit::AuditEvent;
use adapter::shared::directory::{Agent, Directory};
use adapter::shared::grant;
use adapter::shared::model::{
    self, ActionRecord, ActionRequest, EvaluateRequest, Outcome, PolicyDecision, Status,
};
use adapter::shared::problem::Problem;
use adapter::shared::store::{IdemAnswer, IdemBegin, Store};
use adapter::shared::{Error, Result, Timestamp};
use adapter::SpinKv;
use serde_json::{json, Value};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

/// The system actor of audit records written by countersign itself.
const SYSTEM: &str = "countersign";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Actions,
    Check,
}

#[http_component]
async fn handle(req: Request) -> Response {
    let route = match adapter::path(&req) {
        "/v1/actions" => Route::Actions,
        "/v1/check" => Route::Check,
        _ => return adapter::not_found(),
    };
    if *req.method() != Method::Post {
        let mut r = adapter::method_not_allowed();
        r.set_header("allow", "POST");
        return r;
    }
    let answer = match route {
        Route::Actions => actions(&req).await,
        Route::Check => check(&req).await,
    };
    answer.unwrap_or_else(|e| error_response(&e))
}

// ---------------------------------------------------------------------------------------------
// What both routes share: the directory, the agent, the body.

/// An authenticated agent's validated request (callback URL checked and normalized), or the
/// answer that refuses it.
async fn admit(
    req: &Request,
    dir: &Directory,
) -> std::result::Result<(Agent, ActionRequest), Response> {
    let agent = match adapter::authenticate_agent(req, dir) {
        Ok(a) => a.clone(),
        Err(e) => {
            // Audited without the token, of course.
            let data = json!({
                "route": adapter::path(req),
                "reason": e.to_string(),
                "client": adapter::header(req, "spin-client-addr"),
            });
            if let Err(ae) =
                adapter::audit(&AuditEvent::new("auth.failed", None, "anonymous", data)).await
            {
                eprintln!("countersign intake: auth.failed not audited: {ae}");
            }
            return Err(error_response(&e));
        }
    };
    let body = adapter::json_body(req)?;
    let mut request = ActionRequest::parse(body).map_err(|e| error_response(&e))?;
    if let Some(url) = &request.callback_url {
        // The normalized URL is the one called later.
        request.callback_url = Some(
            agent
                .check_callback_url(url)
                .map_err(|e| error_response(&e))?,
        );
    }
    Ok((agent, request))
}

fn load_directory() -> Result<Directory> {
    adapter::directory().map_err(|e| {
        eprintln!("countersign intake: {e}");
        // The caller is not authenticated yet: name the file, keep its content in the log.
        Error::Unavailable(format!(
            "directory unavailable: {} cannot be loaded (the server log says why)",
            adapter::DIRECTORY_PATH
        ))
    })
}

/// Asks the policy component. A broken policy or directory (a 5xx from policy), or no answer,
/// is `Unavailable` (503): fail closed, nothing stored.
async fn evaluate(agent: &Agent, request: &ActionRequest) -> Result<PolicyDecision> {
    let body = EvaluateRequest {
        agent: agent.id.clone(),
        request: request.clone(),
    };
    let unavailable = |why: String| Error::Unavailable(format!("policy unavailable: {why}"));
    let (status, bytes) = adapter::call_internal("policy", "/internal/evaluate", &body)
        .await
        .map_err(|e| match e {
            Error::Store(m) => unavailable(m),
            other => unavailable(other.to_string()),
        })?;
    if status == 200 {
        return serde_json::from_slice(&bytes)
            .map_err(|e| unavailable(format!("unreadable decision: {e}")));
    }
    let problem: Option<Problem> = serde_json::from_slice(&bytes).ok();
    let detail = problem
        .as_ref()
        .and_then(|p| p.detail.clone())
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect());
    // A value Cedar cannot take: the client's mistake, with the field named.
    if status == 422 {
        if let Some(field) = problem.as_ref().and_then(|p| p.field.clone()) {
            let message = detail
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(&detail)
                .to_string();
            return Err(Error::Invalid { field, message });
        }
    }
    Err(unavailable(if status >= 500 {
        detail
    } else {
        format!("the policy component answered {status}: {detail}")
    }))
}

// ---------------------------------------------------------------------------------------------
// POST /v1/actions

async fn actions(req: &Request) -> Result<Response> {
    let dir = load_directory()?;
    let (agent, request) = match admit(req, &dir).await {
        Ok(x) => x,
        Err(answer) => return Ok(answer),
    };
    let key = model::idempotency_key(adapter::header(req, "idempotency-key"), &request)?;
    let now = Timestamp::now();
    let store = adapter::store()?;

    let (id, body_hash) = match &key {
        None => (model::new_request_id()?, String::new()),
        Some(k) => {
            let body_hash = request.body_hash()?;
            match store.idempotency_begin(&agent.id, k, &body_hash, now)? {
                IdemBegin::Replay(a) => return Ok(answer(a.status, &a.body)),
                IdemBegin::Conflict => {
                    return Err(Error::Conflict(
                        "this idempotency key was used with another body".into(),
                    ))
                }
                IdemBegin::InProgress => {
                    let mut r = error_response(&Error::Conflict(
                        "a request with this idempotency key is still being handled; retry shortly"
                            .into(),
                    ));
                    r.set_header("retry-after", "1");
                    return Ok(r);
                }
                IdemBegin::New { request_id } => {
                    // Taking over the reservation of a handler that died: if it stored its
                    // record, that record is the answer.
                    if let Some(rec) = store.load(&request_id)? {
                        let (status, body) = rec.intake_answer();
                        remember(&store, &agent, k, &body_hash, &rec.id, now, status, &body);
                        return Ok(answer(status, &body));
                    }
                    (request_id, body_hash)
                }
            }
        }
    };

    let record = match decide_and_store(&store, &agent, &request, id.clone(), now).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(k) = &key {
                if let Err(re) = store.idempotency_release(&agent.id, k, &id) {
                    eprintln!("countersign intake: idempotency key not released: {re}");
                }
            }
            return Err(e);
        }
    };

    // The record is durable from here on: whatever fails now is logged, and the answer given.
    let (status, body) = record.intake_answer();
    if let Some(k) = &key {
        remember(
            &store, &agent, k, &body_hash, &record.id, now, status, &body,
        );
    }
    if record.status == Status::Pending {
        // Queue every review post first (never lost), then make the first attempts.
        let mut queued = Vec::new();
        for kind in jobs::review_kinds() {
            match jobs::enqueue(&store, jobs::job(kind, &record.id, now)) {
                Ok(q) => queued.push(q),
                Err(e) => {
                    eprintln!(
                        "countersign intake: {kind} for {} not queued: {e}",
                        record.id
                    );
                    let data =
                        json!({ "job": kind, "attempt": 0, "error": format!("not queued: {e}") });
                    let event = AuditEvent::new("review.failed", Some(&record.id), SYSTEM, data);
                    audit_best_effort(event).await;
                }
            }
        }
        jobs::run_queued(&store, queued, now).await;
    }
    Ok(answer(status, &body))
}

/// Evaluates, builds the record (and the grant of a routine request), audits the decision and
/// stores the record. Any error means nothing was stored and nothing handed out.
async fn decide_and_store(
    store: &Store<SpinKv>,
    agent: &Agent,
    request: &ActionRequest,
    id: String,
    now: Timestamp,
) -> Result<ActionRecord> {
    let decision = evaluate(agent, request).await?;
    let mut record = ActionRecord::new(id, &agent.id, request, &decision, now)?;
    let grant = match record.status {
        Status::Allowed => {
            let (token, claims) = grant::issue(&adapter::signing_key()?, &record, now)?;
            record.grant = Some(token);
            Some(claims)
        }
        _ => None,
    };

    let rid = Some(record.id.as_str());
    let requested = json!({
        "action": record.action,
        "resource": record.resource_ref(),
        "on_behalf_of": record.on_behalf_of,
        "digest": record.digest,
    });
    let mut events = vec![AuditEvent::new(
        "action.requested",
        rid,
        &agent.id,
        requested,
    )];
    let mut outcome = json!({ "policies": record.policies, "policy_hash": record.policy_hash });
    let kind = match decision.outcome {
        Outcome::Allow => "action.allowed",
        Outcome::Deny => {
            outcome["reason"] = json!(record.reason);
            "action.denied"
        }
        Outcome::Approval => {
            outcome["requirements"] = json!(record.requirements);
            outcome["expires_at"] = json!(record.expires_at);
            "action.pending"
        }
    };
    events.push(AuditEvent::new(kind, rid, SYSTEM, outcome));
    if let Some(c) = &grant {
        let data = json!({ "jti": c.jti, "exp": c.exp, "apr": c.apr });
        events.push(AuditEvent::new("grant.issued", rid, SYSTEM, data));
    }
    // One append for all three: consecutive records, one call.
    audit_required(&events).await?;

    if let Err(e) = store.create(&record) {
        let data = json!({ "reason": "the request could not be stored; it was refused" });
        audit_best_effort(AuditEvent::new("action.failed", rid, SYSTEM, data)).await;
        return Err(e);
    }
    Ok(record)
}

/// Stores the first answer of an idempotency key (a failure only costs a later retry the
/// takeover path, which finds the stored record).
#[allow(clippy::too_many_arguments)]
fn remember(
    store: &Store<SpinKv>,
    agent: &Agent,
    key: &str,
    body_hash: &str,
    id: &str,
    now: Timestamp,
    status: u16,
    body: &Value,
) {
    let a = IdemAnswer {
        status,
        body: body.clone(),
    };
    if let Err(e) = store.idempotency_finish(&agent.id, key, body_hash, id, now, a) {
        eprintln!("countersign intake: idempotency answer of {id} not stored: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// POST /v1/check

async fn check(req: &Request) -> Result<Response> {
    let dir = load_directory()?;
    let (agent, request) = match admit(req, &dir).await {
        Ok(x) => x,
        Err(answer) => return Ok(answer),
    };
    // Same rules as /v1/actions, so a dry run also tells about a bad idempotency key.
    model::idempotency_key(adapter::header(req, "idempotency-key"), &request)?;
    let decision = evaluate(&agent, &request).await?;
    let data = json!({
        "action": request.action,
        "resource": {"type": request.resource.type_, "id": request.resource.id},
        "on_behalf_of": request.on_behalf_of,
        "digest": request.digest()?,
        "outcome": decision.outcome,
        "policies": decision.policies,
        "policy_hash": decision.policy_hash,
    });
    // A dry run decides nothing, so an audit failure is logged, not fatal.
    audit_best_effort(AuditEvent::new("action.checked", None, &agent.id, data)).await;
    Ok(adapter::json_response(200, &decision.check_answer()))
}

// ---------------------------------------------------------------------------------------------
// Answers and audit

/// A `POST /v1/actions` answer (first or replayed: the same bytes for the same value).
fn answer(status: u16, body: &Value) -> Response {
    let mut r = adapter::json_response(status, body);
    if status == 202 {
        if let Some(id) = body.get("id").and_then(Value::as_str) {
            r.set_header("location", format!("/v1/actions/{id}"));
        }
    }
    r
}

fn error_response(e: &Error) -> Response {
    let mut r = adapter::problem(e);
    if e.status() == 401 {
        r.set_header("www-authenticate", "Bearer");
    }
    r
}

/// Audit records the answer depends on: unavailable audit trail → 503, nothing stored.
async fn audit_required(events: &[AuditEvent]) -> Result<()> {
    adapter::audit_all(events).await.map_err(|e| {
        eprintln!(
            "countersign intake: {} events not audited: {e}",
            events.len()
        );
        Error::Unavailable(
            "audit trail unavailable: the request was not recorded; retry later".into(),
        )
    })
}

async fn audit_best_effort(event: AuditEvent) {
    if let Err(e) = adapter::audit(&event).await {
        eprintln!("countersign intake: {} not audited: {e}", event.type_);
    }
}
