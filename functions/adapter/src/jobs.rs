//! Deliveries that must eventually happen — agent callbacks, review posts to each channel, card
//! updates — as jobs in one queue. The component that causes one queues it and makes the first
//! attempt at once; the sweep retries what failed, with backoff, at most
//! [`shared::store::MAX_ATTEMPTS`] times. Every attempt is claimed with `increment`, so two
//! sweeps never deliver the same attempt twice.
//!
//! A component that answers its caller before delivering (the decision component answers the
//! vote first) uses [`enqueue`] before answering and [`run_queued`] after: the job is durable
//! before anyone learns of the decision, and a slow agent endpoint never delays the answer.
//!
//! Webhooks to the outside (agent callbacks, the review webhook) are sent through
//! [`crate::outbound`] with explicit timeouts, so a silent endpoint costs one bounded attempt,
//! not a hung sweep.

use serde_json::json;
use shared::audit::AuditEvent;
use shared::model::{ActionRecord, Status};
use shared::store::{Job, Kv, Store};
use shared::webhook::{self, EVENT_ID_HEADER, REVIEWS_ID, SIGNATURE_HEADER};
use shared::{Result, Timestamp};

use crate::{audit, call_internal, outbound, var, SpinKv};

/// The one delivery queue.
pub const QUEUE: &str = "jobs";

pub const CALLBACK: &str = "callback";
pub const REVIEW_API: &str = "review.api";
pub const REVIEW_SLACK: &str = "review.slack";
pub const REVIEW_TEAMS: &str = "review.teams";
pub const UPDATE_SLACK: &str = "update.slack";
pub const UPDATE_TEAMS: &str = "update.teams";

/// The chat channels whose variables are set (a channel with empty variables is off).
pub fn chat_channels() -> Vec<&'static str> {
    let mut out = Vec::new();
    if var("slack_bot_token").is_some() && var("slack_channel").is_some() {
        out.push("slack");
    }
    if var("teams_app_id").is_some() && var("teams_conversation_id").is_some() {
        out.push("teams");
    }
    out
}

/// The review-post jobs for a new pending request: the API channel (review webhook) and each
/// enabled chat channel.
pub fn review_kinds() -> Vec<&'static str> {
    let mut out = Vec::new();
    if var("review_webhook_url").is_some() {
        out.push(REVIEW_API);
    }
    for channel in chat_channels() {
        out.push(if channel == "slack" {
            REVIEW_SLACK
        } else {
            REVIEW_TEAMS
        });
    }
    out
}

/// The card-update jobs for a decided request: one per enabled chat channel.
pub fn update_kinds() -> Vec<&'static str> {
    chat_channels()
        .into_iter()
        .map(|c| {
            if c == "slack" {
                UPDATE_SLACK
            } else {
                UPDATE_TEAMS
            }
        })
        .collect()
}

/// Every delivery a final transition (approved, denied, expired) causes: the agent callback
/// when the request has a `callback_url`, and a card update per enabled chat channel.
pub fn decided_jobs(record: &ActionRecord, now: Timestamp) -> Vec<Job> {
    let mut out = Vec::new();
    if record.callback_url.is_some() {
        out.push(job(CALLBACK, &record.id, now));
    }
    for kind in update_kinds() {
        out.push(job(kind, &record.id, now));
    }
    out
}

pub fn job(kind: &str, request_id: &str, now: Timestamp) -> Job {
    Job {
        kind: kind.to_string(),
        request_id: request_id.to_string(),
        attempts: 0,
        next_at: now,
        last_error: None,
        payload: serde_json::Value::Null,
    }
}

/// Queues `job` so that it is never lost; returns it with its slot for [`run_queued`].
pub fn enqueue(store: &Store<SpinKv>, job: Job) -> Result<(i64, Job)> {
    let slot = store.job_push(QUEUE, &job)?;
    Ok((slot, job))
}

/// Makes the first attempt of jobs queued by [`enqueue`]. Failures are the sweep's to retry:
/// they are logged, never returned.
pub async fn run_queued(store: &Store<SpinKv>, queued: Vec<(i64, Job)>, now: Timestamp) {
    for (slot, job) in queued {
        if let Err(e) = attempt(store, slot, job, now).await {
            eprintln!("countersign: first delivery attempt not recorded: {e}");
        }
    }
}

/// Queues `job` (so it is never lost) and makes its first attempt now. Only a failure to queue
/// is an error: a failed attempt is the sweep's to retry.
pub async fn enqueue_and_run(store: &Store<SpinKv>, job: Job, now: Timestamp) -> Result<()> {
    let queued = enqueue(store, job)?;
    run_queued(store, vec![queued], now).await;
    Ok(())
}

/// Runs the jobs that are due (the sweep). Returns how many attempts this caller made. One
/// job's failure does not stop the others.
pub async fn run_due(store: &Store<SpinKv>, now: Timestamp, limit: usize) -> Result<usize> {
    if let Err(e) = store.queue_maintain(QUEUE, now) {
        eprintln!("countersign: job queue maintenance failed: {e}");
    }
    let mut made = 0;
    for (slot, job) in store.jobs_due(QUEUE, now, limit)? {
        match attempt(store, slot, job, now).await {
            Ok(ran) => made += usize::from(ran),
            Err(e) => eprintln!("countersign: delivery attempt not recorded: {e}"),
        }
    }
    Ok(made)
}

/// What a delivery did.
enum Delivered {
    Sent,
    /// Nothing to send any more (a review post for a request decided meanwhile).
    Skipped,
}

/// One claimed attempt: deliver, record the outcome, audit it. `false` when another caller
/// holds this attempt (then [`recover_lost`] checks whether that caller died). An audit
/// failure is logged: the attempt happened either way.
async fn attempt(store: &Store<SpinKv>, slot: i64, job: Job, now: Timestamp) -> Result<bool> {
    if !store.job_claim_attempt(QUEUE, slot, &job)? {
        return recover_lost(store, slot, job, now).await;
    }
    let attempt_no = job.attempts + 1;
    let started = format!("{attempt_no}@{}", Timestamp::now().unix());
    if let Err(e) = store.kv().set(&started_key(slot), started.as_bytes()) {
        eprintln!("countersign: could not mark the start of a delivery attempt: {e}");
    }
    let delivered = deliver(store, &job).await;
    let result = delivered.as_ref().map(|_| ()).map_err(Clone::clone);
    let (kind, request_id) = (job.kind.clone(), job.request_id.clone());
    // Backoff counts from the end of this attempt, however long it took.
    let left = store.job_finish(QUEUE, slot, job, result, Timestamp::now())?;
    let _ = store.kv().delete(&started_key(slot));
    let event = match (&delivered, kind.as_str()) {
        (Ok(Delivered::Skipped), _) => "review.skipped",
        (Ok(_), CALLBACK) => "callback.delivered",
        (Err(_), CALLBACK) => "callback.failed",
        (Ok(_), k) if k.starts_with("review.") => "review.posted",
        (Err(_), k) if k.starts_with("review.") => "review.failed",
        (Ok(_), _) => "card.updated",
        (Err(_), _) => "card.update_failed",
    };
    let error = delivered.err();
    audit_attempt(event, &kind, &request_id, attempt_no, error, left.as_ref()).await;
    Ok(true)
}

/// An attempt whose result is still unrecorded this long (seconds) after it started is taken
/// as lost (its instance died between claiming and recording): the job then counts it as a
/// failed attempt and goes on. Far above the longest attempt (webhook timeouts, handler limits).
pub const LOST_ATTEMPT_SECS: i64 = 300;

/// `q:jobs:<slot>:started` = `<attempt>@<unix>`: when the current attempt of a job started
/// (or, when its holder died before writing it, when a sweep first saw it claimed).
fn started_key(slot: i64) -> String {
    format!("q:{QUEUE}:{slot}:started")
}

/// Someone else holds the current attempt of this job. If it has been running for
/// [`LOST_ATTEMPT_SECS`], its holder is gone: one caller (claimed) records the attempt as
/// failed, so the job is retried with backoff instead of staying stuck forever.
async fn recover_lost(store: &Store<SpinKv>, slot: i64, job: Job, now: Timestamp) -> Result<bool> {
    let attempt_no = job.attempts + 1;
    let key = started_key(slot);
    let started = store.kv().get(&key)?.and_then(|b| {
        let text = String::from_utf8(b).ok()?;
        let (n, at) = text.split_once('@')?;
        Some((n.parse::<u32>().ok()?, at.parse::<i64>().ok()?))
    });
    match started {
        Some((n, at)) if n == attempt_no => {
            if now.unix() - at < LOST_ATTEMPT_SECS {
                return Ok(false);
            }
        }
        _ => {
            // First sighting of this claimed attempt without a start mark: start the clock.
            store
                .kv()
                .set(&key, format!("{attempt_no}@{}", now.unix()).as_bytes())?;
            return Ok(false);
        }
    }
    if !store.claim(&format!("claim:q:{QUEUE}:{slot}:{attempt_no}:lost"))? {
        return Ok(false);
    }
    // Re-read: the holder may have recorded its result after all.
    let slot_key = shared::store::keys::queue_slot(QUEUE, slot);
    let current: Option<Job> = store
        .kv()
        .get(&slot_key)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    if current.as_ref().map(|j| j.attempts) != Some(job.attempts) {
        return Ok(false);
    }
    let error = format!("attempt {attempt_no} lost: no result was recorded");
    let (kind, request_id) = (job.kind.clone(), job.request_id.clone());
    let left = store.job_finish(QUEUE, slot, job, Err(error.clone()), now)?;
    let _ = store.kv().delete(&key);
    let event = if kind == CALLBACK {
        "callback.failed"
    } else if kind.starts_with("review.") {
        "review.failed"
    } else {
        "card.update_failed"
    };
    audit_attempt(
        event,
        &kind,
        &request_id,
        attempt_no,
        Some(error),
        left.as_ref(),
    )
    .await;
    Ok(true)
}

async fn audit_attempt(
    event: &str,
    kind: &str,
    request_id: &str,
    attempt_no: u32,
    error: Option<String>,
    left: Option<&Job>,
) {
    let mut data = json!({ "job": kind, "attempt": attempt_no });
    if let Some(e) = error {
        data["error"] = json!(e);
        // null = given up (that was the last attempt).
        data["retry"] = json!(left.map(|j| j.next_at.to_rfc3339()));
    }
    let event = AuditEvent::new(event, Some(request_id), "countersign", data);
    if let Err(e) = audit(&event).await {
        eprintln!("countersign: audit of {} failed: {e}", event.type_);
    }
}

async fn deliver(store: &Store<SpinKv>, job: &Job) -> std::result::Result<Delivered, String> {
    // Signatures carry the time of sending (receivers check it against their clock).
    let now = Timestamp::now();
    let record = store
        .load(&job.request_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("request {} not found", job.request_id))?;
    // A review post for a request that is no longer pending would show live buttons (or ask
    // for a review) that can no longer count: drop it.
    let stale_review = job.kind.starts_with("review.")
        && (record.status != Status::Pending || record.effective_status(now) != Status::Pending);
    if stale_review {
        return Ok(Delivered::Skipped);
    }
    match job.kind.as_str() {
        CALLBACK => {
            let url = record.callback_url.clone().ok_or("no callback_url")?;
            let body = record.callback_body();
            signed_post(&url, &record.agent, &record.callback_event_id(), &body, now)?;
        }
        REVIEW_API => {
            let url = var("review_webhook_url").ok_or("review_webhook_url is not set")?;
            let body = record.view(now, false);
            let event_id = format!("evt_{}_review", record.id);
            signed_post(&url, REVIEWS_ID, &event_id, &body, now)?;
        }
        REVIEW_SLACK => chat("slack", "/internal/notify", &record).await?,
        REVIEW_TEAMS => chat("teams", "/internal/notify", &record).await?,
        UPDATE_SLACK => chat("slack", "/internal/update", &record).await?,
        UPDATE_TEAMS => chat("teams", "/internal/update", &record).await?,
        other => return Err(format!("unknown job kind {other:?}")),
    }
    Ok(Delivered::Sent)
}

/// POSTs a webhook signed as DESIGN.md says, with the secret derived for `secret_id`.
fn signed_post(
    url: &str,
    secret_id: &str,
    event_id: &str,
    body: &serde_json::Value,
    now: Timestamp,
) -> std::result::Result<(), String> {
    let key = var("webhook_key").ok_or("webhook_key is not set")?;
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let signature = webhook::sign(&webhook::webhook_secret(&key, secret_id), now, &body);
    let headers = [
        ("content-type", "application/json"),
        (EVENT_ID_HEADER, event_id),
        (SIGNATURE_HEADER, signature.as_str()),
    ];
    let reply = outbound::send("POST", url, &headers, &body)?;
    if reply.ok() {
        Ok(())
    } else {
        Err(format!("answered {}", reply.status))
    }
}

/// Asks a chat component to post or update the request's card.
async fn chat(
    component: &str,
    path: &str,
    record: &ActionRecord,
) -> std::result::Result<(), String> {
    let (status, body) = call_internal(component, path, &json!({ "id": record.id }))
        .await
        .map_err(|e| e.to_string())?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "{component}{path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ))
    }
}
