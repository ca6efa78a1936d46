//! The audit component: the only writer of the signed, hash-chained trail.
//!
//! - `POST /internal/append` (service chaining only): body = one `shared::audit::AuditEvent`
//!   or an array of up to [`MAX_BATCH`] (appended in order, with consecutive numbers); answers
//!   201 `{"seqs": [...]}` once they are durable, then seals them into signed records (the
//!   appender does not wait for the signatures). The chain stays linear under concurrent
//!   appends (several instances, several hosts) without appenders waiting for each other:
//!   `shared::audit::AuditLog` claims numbers with `atomics::increment` and seals in order.
//! - `POST /internal/recover` (service chaining only, the sweep): repairs a chain stuck behind
//!   a dead appender or sealer (`AuditLog::recover`); answers 200 `{"unsealed_from": n}`.
//! - `GET /v1/audit?after=<seq>&limit=<n>` (admin token): `application/x-ndjson`, one record a
//!   line, in sequence order, the contiguous prefix after `after` (default 0); `limit` 1 to
//!   [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]. Page on with `after` = the last line's `seq`
//!   until an empty answer.
//! - `GET /v1/audit/head` (admin token): the last `seq` and `hash`, signed
//!   (`shared::audit::Head`).
//!
//! A failed admin authentication is itself recorded (`auth.failed`), then answered 401.

use adapter::shared::audit::{AuditEvent, AuditLog};
use adapter::shared::{Error, Result, Timestamp};
use adapter::SpinKv;
use serde_json::json;
use spin_sdk::http::conversions::TryFromIncomingRequest;
use spin_sdk::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// Records per `GET /v1/audit` page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u64 = 1000;
/// The largest `limit` accepted (larger is a 422).
pub const MAX_LIMIT: u64 = 10_000;

/// The most events one append carries.
pub const MAX_BATCH: usize = 32;

const NDJSON: &str = "application/x-ndjson";

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let (response, seal) = match Request::try_from_incoming_request(incoming).await {
        Ok(req) => route(&req),
        Err(_) => (
            adapter::problem_response(400, "malformed", "the request could not be read"),
            false,
        ),
    };
    adapter::respond(out, response).await;
    if seal {
        // An appender waits only until its events are durable; sealing them into signed
        // records follows the answer. It is shared work: a failure here, or a host that
        // stops the instance once it has answered, leaves it to the next append, a reader or
        // the sweep.
        if let Err(e) = adapter::signing_key().and_then(|key| log()?.advance(&key)) {
            eprintln!("countersign: audit sealing deferred: {e}");
        }
    }
}

/// The answer, and whether appended events wait to be sealed once it is out.
fn route(req: &Request) -> (Response, bool) {
    let path = adapter::path(req).trim_end_matches('/').to_string();
    let path = if path.is_empty() { "/" } else { &path };
    let method = req.method().clone();
    let response = match path {
        "/internal/append" | "/internal/recover" => {
            if !adapter::is_internal(req) {
                return (adapter::not_found(), false);
            }
            match method {
                Method::Post if path == "/internal/append" => {
                    return match append(req) {
                        Ok(r) => (r, true),
                        Err(e) => (adapter::problem(&e), false),
                    };
                }
                Method::Post => answer(recover()),
                _ => with_allow(adapter::method_not_allowed(), "POST"),
            }
        }
        "/v1/audit" => match method {
            Method::Get => answer(export(req)),
            _ => with_allow(adapter::method_not_allowed(), "GET"),
        },
        "/v1/audit/head" => match method {
            Method::Get => answer(head(req)),
            _ => with_allow(adapter::method_not_allowed(), "GET"),
        },
        _ => adapter::not_found(),
    };
    (response, false)
}

fn answer(r: Result<Response>) -> Response {
    r.unwrap_or_else(|e| adapter::problem(&e))
}

fn with_allow(mut resp: Response, allow: &str) -> Response {
    resp.set_header("allow", allow);
    resp
}

fn log() -> Result<AuditLog<SpinKv>> {
    Ok(AuditLog::new(SpinKv::open()?))
}

/// The trail with whatever is appended but not yet sealed sealed first (best effort: readers
/// see the sealed prefix either way).
fn sealed_log() -> Result<AuditLog<SpinKv>> {
    let log = log()?;
    if let Err(e) = adapter::signing_key().and_then(|key| log.advance(&key)) {
        eprintln!("countersign: audit sealing deferred: {e}");
    }
    Ok(log)
}

/// `POST /internal/append`.
fn append(req: &Request) -> Result<Response> {
    let body = req.body();
    if body.len() > adapter::MAX_BODY {
        return Ok(adapter::problem_response(
            413,
            "too_large",
            &format!("the body exceeds {} bytes", adapter::MAX_BODY),
        ));
    }
    let events = match serde_json::from_slice(body)? {
        serde_json::Value::Array(items) if (1..=MAX_BATCH).contains(&items.len()) => items
            .into_iter()
            .map(parse_event)
            .collect::<Result<Vec<_>>>()?,
        serde_json::Value::Array(_) => {
            return Err(Error::invalid(
                "body",
                format!("must hold 1 to {MAX_BATCH} events"),
            ))
        }
        value => vec![parse_event(value)?],
    };
    // Fail closed on an unusable signing key before anything is written: what is appended
    // must be sealable.
    adapter::signing_seed()?;
    let seqs = log()?.write_all(&events, Timestamp::now())?;
    Ok(adapter::json_response(201, &json!({ "seqs": seqs })))
}

/// `POST /internal/recover`.
fn recover() -> Result<Response> {
    let key = adapter::signing_key()?;
    let next = log()?.recover(Timestamp::now(), &key)?;
    Ok(adapter::json_response(
        200,
        &json!({ "unsealed_from": next }),
    ))
}

fn parse_event(value: serde_json::Value) -> Result<AuditEvent> {
    if !value.is_object() {
        return Err(Error::invalid("body", "must be a JSON object"));
    }
    let event: AuditEvent = serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let field = ["type", "actor", "request_id", "data"]
            .into_iter()
            .find(|f| msg.contains(&format!("`{f}`")))
            .unwrap_or("body");
        Error::invalid(field, msg)
    })?;
    event.validate()?;
    Ok(event)
}

/// The admin token; a failure is recorded in the trail before the 401.
fn admin(req: &Request) -> Result<()> {
    if let Err(e) = adapter::authenticate_admin(req) {
        let event = AuditEvent::new(
            "auth.failed",
            None,
            "anonymous",
            json!({
                "route": adapter::path(req),
                "method": req.method().to_string(),
                "reason": e.to_string(),
            }),
        );
        let recorded = adapter::signing_key()
            .and_then(|key| log()?.append(&event, Timestamp::now(), &key).map(|_| ()));
        if let Err(store) = recorded {
            eprintln!("countersign: could not record auth.failed: {store}");
        }
        return Err(e);
    }
    Ok(())
}

/// A non-negative integer query parameter; `None` when absent.
fn uint_param(req: &Request, name: &str) -> Result<Option<u64>> {
    match adapter::query_param(req, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Error::invalid(name, "must be a non-negative integer")),
    }
}

/// `GET /v1/audit`.
fn export(req: &Request) -> Result<Response> {
    admin(req)?;
    let after = uint_param(req, "after")?.unwrap_or(0);
    let limit = uint_param(req, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let records = sealed_log()?.read(after, limit as usize)?;
    let mut body = String::new();
    for r in &records {
        body.push_str(&r.to_line());
        body.push('\n');
    }
    let mut builder = Response::builder();
    builder
        .status(200)
        .header("content-type", NDJSON)
        .header("cache-control", "no-store");
    if let Some(last) = records.last() {
        // Where the next page starts (`?after=`), so clients need not parse the last line.
        builder.header("countersign-audit-last-seq", last.seq.to_string());
    }
    Ok(builder.body(body.into_bytes()).build())
}

/// `GET /v1/audit/head`.
fn head(req: &Request) -> Result<Response> {
    admin(req)?;
    let key = adapter::signing_key()?;
    let head = sealed_log()?.head(Timestamp::now(), &key)?;
    let mut resp = adapter::json_response(200, &head);
    resp.set_header("cache-control", "no-store");
    Ok(resp)
}
