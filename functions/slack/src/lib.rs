//! The Slack channel of countersign (PROTOCOLS.md "Slack"), a thin adapter: the signing rules,
//! card rendering and limits live in `shared::slack`.
//!
//! - `POST /internal/notify` `{"id"}` (service chaining only): posts the review card to
//!   `slack_channel` and keeps its `channel` + `ts` (`slack:msg:<id>`). A Web API failure
//!   (`ok:false`, 429, transport) answers 502 so the jobs module retries it in the sweep.
//! - `POST /internal/update` `{"id"}` (service chaining only): `chat.update`s every stored card
//!   of the request to what it shows now (the outcome, no buttons, once decided).
//! - `POST /v1/slack/interactions`: Slack's button clicks. The signature over the raw body is
//!   verified first (401 + `auth.failed` audit otherwise); the clicker is resolved by
//!   `team.id` + `user.id` through the directory and the vote goes to decision's
//!   `/internal/vote` (channel `slack`). The answer (200) is sent at once; the card is then
//!   replaced through `response_url` (falling back to `chat.update`), or the clicker gets an
//!   ephemeral explanation when the vote is refused.
//!
//! Not built yet: the optional deny-reason modal (`views.open`).
//! Every Web API call is bounded by [`adapter::outbound`]'s timeouts.

mod bot;
mod config;
mod http;
mod review;
mod status;

use adapter::{audit_event, directory, json_response, problem, problem_response, store, ChatRoute};
use serde_json::json;
use shared::model::Decision;
use shared::slack::{self, Click};
use shared::store::Kv;
use shared::vote::{AnswerOutcome, VoteAnswer, VoteRequest};
use shared::{Error, Result, Timestamp};
use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// Work left for after the answer (Slack wants its 200 within 3 seconds).
enum Followup {
    None,
    /// Replace the clicked card with the request as it is now.
    Replace(Click),
    /// Tell the clicker (only) why nothing happened.
    Ephemeral(Click, String),
}

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let (response, followup) = match adapter::read_incoming(incoming).await {
        Ok(req) => route(&req).await,
        Err(answer) => (answer, Followup::None),
    };
    adapter::respond(out, response).await;
    match followup {
        Followup::None => {}
        Followup::Replace(click) => replace_card(&click).await,
        Followup::Ephemeral(click, text) => {
            if let Some(url) = &click.response_url {
                if let Err(e) = bot::respond(url, &slack::ephemeral(&text)) {
                    eprintln!("countersign: slack ephemeral answer failed: {e}");
                }
            }
        }
    }
}

async fn route(req: &Request) -> (Response, Followup) {
    let internal = |r: Result<Response>| (r.unwrap_or_else(|e| problem(&e)), Followup::None);
    match adapter::chat_route(req, "/v1/slack/interactions") {
        ChatRoute::Platform => interaction(req).await,
        ChatRoute::Notify => internal(notify(req).await),
        ChatRoute::Update => internal(update(req).await),
        ChatRoute::Other(answer) => (answer, Followup::None),
    }
}

fn upstream(e: bot::Failure) -> Error {
    Error::Unavailable(e.to_string())
}

/// `slack:retry_after` = the Unix time before which Slack asked not to post again (429).
const RETRY_AFTER_KEY: &str = "slack:retry_after";

fn rate_limited_until(kv: &impl Kv) -> Option<i64> {
    let v = kv.get(RETRY_AFTER_KEY).ok()??;
    std::str::from_utf8(&v).ok()?.parse().ok()
}

fn remember_retry_after(kv: &impl Kv, e: &bot::Failure) {
    if let Some(secs) = e.retry_after {
        let until = Timestamp::now().unix() + secs.min(3600) as i64;
        if let Err(err) = kv.set(RETRY_AFTER_KEY, until.to_string().as_bytes()) {
            eprintln!("countersign: could not keep Slack's Retry-After: {err}");
        }
    }
}

/// Posts the review card (once: a retry after a lost answer does not post twice).
async fn notify(req: &Request) -> Result<Response> {
    let id = adapter::request_id_in_body(req)?;
    let store = store()?;
    let record = store
        .load(&id)?
        .ok_or_else(|| Error::NotFound(format!("no request {id}")))?;
    let posted = status::load(store.kv(), &id)?;
    if let Some(m) = posted.first() {
        return Ok(json_response(
            200,
            &json!({"channel": m.channel, "ts": m.ts, "already": true}),
        ));
    }
    // Honour Slack's Retry-After: no post before then (the sweep retries this job later).
    if let Some(until) = rate_limited_until(store.kv()) {
        if Timestamp::now().unix() < until {
            return Err(Error::Unavailable(format!(
                "Slack rate limit: not posting before {}",
                Timestamp::from_unix(until)
            )));
        }
    }
    let (text, blocks) = review::card(&record, Timestamp::now());
    let channel = config::channel()?;
    let (channel, ts) = match bot::post_message(&channel, &text, &blocks) {
        Ok(posted) => posted,
        Err(e) => {
            remember_retry_after(store.kv(), &e);
            return Err(upstream(e));
        }
    };
    status::add(
        store.kv(),
        &id,
        status::Message {
            channel: channel.clone(),
            ts: ts.clone(),
        },
    )?;
    Ok(json_response(200, &json!({"channel": channel, "ts": ts})))
}

/// Updates every stored card of the request to what it shows now.
async fn update(req: &Request) -> Result<Response> {
    let id = adapter::request_id_in_body(req)?;
    let store = store()?;
    let record = store
        .load(&id)?
        .ok_or_else(|| Error::NotFound(format!("no request {id}")))?;
    let (text, blocks) = review::card(&record, Timestamp::now());
    let messages = status::load(store.kv(), &id)?;
    for m in &messages {
        bot::update(&m.channel, &m.ts, &text, &blocks).map_err(upstream)?;
    }
    Ok(json_response(200, &json!({"updated": messages.len()})))
}

fn ok_empty() -> Response {
    Response::builder().status(200).body(Vec::new()).build()
}

fn ephemeral(click: Click, text: String) -> (Response, Followup) {
    (
        json_response(200, &slack::ephemeral(&text)),
        Followup::Ephemeral(click, text),
    )
}

async fn interaction(req: &Request) -> (Response, Followup) {
    if let Err(e) = http::verify(req) {
        let reason = e.to_string();
        audit_event(
            "auth.failed",
            None,
            "anonymous",
            json!({"route": req.path(), "method": "POST", "channel": "slack", "reason": reason}),
        )
        .await;
        return (
            problem_response(401, "unauthorized", "Slack signature verification failed"),
            Followup::None,
        );
    }
    let click = match slack::parse_click(req.body()) {
        Ok(c) => c,
        Err(e) => return (problem(&e), Followup::None),
    };
    let approver = match directory() {
        Ok(dir) => dir
            .approver_by_slack(&click.team, &click.user)
            .map(|a| a.id.clone()),
        Err(e) => return (problem(&e), Followup::None),
    };
    let Some(approver) = approver else {
        audit_event(
            "vote.rejected",
            Some(&click.request_id),
            &format!("slack:{}/{}", click.team, click.user),
            json!({"channel": "slack", "code": "unknown_clicker",
                   "team": click.team, "user": click.user}),
        )
        .await;
        return ephemeral(
            click,
            "You are not in countersign's directory of approvers: your click was not counted."
                .into(),
        );
    };
    let vote = VoteRequest {
        id: click.request_id.clone(),
        approver,
        decision: click.decision,
        reason: None,
        channel: "slack".into(),
    };
    let answer = match adapter::call_internal("decision", "/internal/vote", &vote).await {
        Ok((_, body)) => serde_json::from_slice::<VoteAnswer>(&body).ok(),
        Err(e) => {
            eprintln!("countersign: slack vote not delivered: {e}");
            None
        }
    };
    match answer {
        None => ephemeral(
            click,
            "countersign could not record your vote; please try again.".into(),
        ),
        Some(a) if a.outcome == AnswerOutcome::Refused => {
            let text = format!(
                "Your vote was not counted: {}",
                a.message.unwrap_or_else(|| "refused".into())
            );
            ephemeral(click, text)
        }
        Some(a) if a.outcome == AnswerOutcome::Recorded => {
            let what = match click.decision {
                Decision::Approve => "approval",
                Decision::Deny => "denial",
            };
            let text = format!("Your {what} was recorded; more approvals are needed.");
            ephemeral(click, text)
        }
        Some(_) => (ok_empty(), Followup::Replace(click)),
    }
}

/// Replaces the clicked card with the request's outcome: `response_url` first, `chat.update`
/// of the clicked message as the fallback. The decision's card-update job covers every other
/// stored card (and this one again, with the same content).
async fn replace_card(click: &Click) {
    let Ok(store) = store() else { return };
    let Ok(Some(record)) = store.load(&click.request_id) else {
        return;
    };
    let (text, blocks) = review::card(&record, Timestamp::now());
    let mut result = Err("no response_url".to_string());
    if let Some(url) = &click.response_url {
        let body = json!({"replace_original": true, "text": text, "blocks": blocks});
        result = bot::respond(url, &body);
    }
    if let Err(e) = &result {
        eprintln!("countersign: slack response_url failed ({e}); using chat.update");
        if let (Some(ch), Some(ts)) = (&click.channel, &click.message_ts) {
            result = bot::update(ch, ts, &text, &blocks).map_err(|e| e.to_string());
        }
    }
    let (kind, error) = match result {
        Ok(()) => ("card.updated", None),
        Err(e) => ("card.update_failed", Some(e)),
    };
    audit_event(
        kind,
        Some(&click.request_id),
        "slack",
        json!({"channel": "slack", "via": "interaction", "error": error}),
    )
    .await;
}
