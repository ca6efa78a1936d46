//! The Microsoft Teams channel of countersign (PROTOCOLS.md "Microsoft Teams"), a thin
//! adapter: card rendering, activity parsing and the token rules live in `shared::teams`.
//!
//! - `POST /internal/notify` `{"id"}` (service chaining only): posts the review card to
//!   `teams_conversation_id` at `teams_service_url` with the bot token and keeps the service
//!   URL, conversation id and activity id (`teams:msg:<id>`). A token-endpoint or connector
//!   failure answers 503, so the jobs module audits it and the sweep retries.
//! - `POST /internal/update` `{"id"}` (service chaining only): PUTs every stored card of the
//!   request to what it shows now (the outcome, no buttons, once decided).
//! - `POST /v1/teams/messages`: the bot's messaging endpoint. The Bot Framework token is
//!   verified before the activity is read (401/403 + `auth.failed` audit otherwise), then bound
//!   to the activity (`serviceurl` claim, key endorsement for `channelId`). The clicker is
//!   resolved by tenant id + `from.aadObjectId` through the directory and the vote goes to
//!   decision's `/internal/vote` (channel `teams`). An Action.Execute invoke is answered with
//!   the refreshed card or an error that Teams shows the clicker; an Action.Submit message is
//!   answered 200, then its card is updated (or a refusal replied) through the connector.

mod bot;
mod config;
mod http;
mod review;
mod status;

use adapter::{
    audit_event, directory, json_response, problem, problem_response, store, ChatRoute, SpinKv,
};
use serde_json::json;
use shared::model::ActionRecord;
use shared::teams::{self, Activity, Click, Via};
use shared::vote::{AnswerOutcome, VoteAnswer, VoteRequest};
use shared::{Error, Result, Timestamp};
use spin_sdk::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;

/// Work left for after the answer (an Action.Submit gets its 200 first).
enum Followup {
    None,
    /// Replace the clicked card with the request as it is now.
    Replace(Activity, String),
    /// Tell the conversation why the vote did not count.
    Reply(Activity, String),
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
        Followup::Replace(activity, id) => replace_card(&activity, &id).await,
        Followup::Reply(activity, text) => reply(&activity, &text),
    }
}

async fn route(req: &Request) -> (Response, Followup) {
    let internal = |r: Result<Response>| (r.unwrap_or_else(|e| problem(&e)), Followup::None);
    match adapter::chat_route(req, "/v1/teams/messages") {
        ChatRoute::Platform => messages(req).await,
        ChatRoute::Notify => internal(notify(req)),
        ChatRoute::Update => internal(update(req)),
        ChatRoute::Other(answer) => (answer, Followup::None),
    }
}

fn load(id: &str) -> Result<(shared::store::Store<SpinKv>, ActionRecord)> {
    let store = store()?;
    let record = store
        .load(id)?
        .ok_or_else(|| Error::NotFound(format!("no request {id}")))?;
    Ok((store, record))
}

/// Posts the review card (once: a retry after a lost answer does not post twice).
fn notify(req: &Request) -> Result<Response> {
    let id = adapter::request_id_in_body(req)?;
    let (store, record) = load(&id)?;
    if let Some(c) = status::load(store.kv(), &id)?.first() {
        return Ok(json_response(
            200,
            &json!({"activity_id": c.activity_id, "already": true}),
        ));
    }
    let service_url = config::service_url()?;
    let conversation_id = config::conversation_id()?;
    let message = review::message(&record, Timestamp::now());
    let activity_id = bot::post(store.kv(), &service_url, &conversation_id, &message)?;
    status::add(
        store.kv(),
        &id,
        status::Card {
            service_url,
            conversation_id,
            activity_id: activity_id.clone(),
        },
    )?;
    Ok(json_response(200, &json!({"activity_id": activity_id})))
}

/// Updates every stored card of the request to what it shows now.
fn update(req: &Request) -> Result<Response> {
    let id = adapter::request_id_in_body(req)?;
    let (store, record) = load(&id)?;
    let message = review::message(&record, Timestamp::now());
    let cards = status::load(store.kv(), &id)?;
    for c in &cards {
        bot::update(
            store.kv(),
            &c.service_url,
            &c.conversation_id,
            &c.activity_id,
            &message,
        )?;
    }
    Ok(json_response(200, &json!({"updated": cards.len()})))
}

fn ok_empty() -> Response {
    Response::builder().status(200).body(Vec::new()).build()
}

/// A refusal: an error Teams shows the clicker (invoke), or a reply in the conversation
/// (Action.Submit, which has no other way back).
fn refuse(activity: Activity, status: u16, code: &str, message: &str) -> (Response, Followup) {
    if activity.is_invoke() {
        let answer = teams::invoke_error(status, code, message);
        (json_response(200, &answer), Followup::None)
    } else {
        (ok_empty(), Followup::Reply(activity, message.to_string()))
    }
}

/// A refused token: audited (never the token itself), answered 401 or 403.
async fn auth_failed(req: &Request, e: &Error) -> (Response, Followup) {
    let data = json!({"route": req.path(), "method": "POST", "channel": "teams",
                      "reason": e.to_string()});
    audit_event("auth.failed", None, "anonymous", data).await;
    let response = match e {
        Error::Forbidden(_) => problem_response(
            403,
            "forbidden",
            "the token's signing key is not endorsed for this channel",
        ),
        Error::Unauthorized(_) => problem_response(
            401,
            "unauthorized",
            "Bot Framework token verification failed",
        ),
        other => problem(other),
    };
    (response, Followup::None)
}

async fn messages(req: &Request) -> (Response, Followup) {
    if config::app_id().is_none() {
        return (
            problem_response(404, "not_found", "the Teams channel is not configured"),
            Followup::None,
        );
    }
    let kv = match SpinKv::open() {
        Ok(kv) => kv,
        Err(e) => return (problem(&e), Followup::None),
    };
    // The token first: nothing of the activity is read before it verifies.
    let verified = match http::verify(req, &kv) {
        Ok(v) => v,
        Err(e @ (Error::Unauthorized(_) | Error::Forbidden(_))) => {
            return auth_failed(req, &e).await
        }
        Err(e) => return (problem(&e), Followup::None),
    };
    let activity = match teams::parse_activity(req.body()) {
        Ok(a) => a,
        Err(e) => return (problem(&e), Followup::None),
    };
    if let Err(e) = teams::check_activity(
        &verified.claims,
        verified.endorsements.as_deref(),
        &activity,
    ) {
        return auth_failed(req, &e).await;
    }
    match activity.click() {
        Ok(Some(click)) => vote(activity, click).await,
        // Installs, conversation updates, typed messages: acknowledged, nothing to do.
        Ok(None) => (ok_empty(), Followup::None),
        Err(e) if activity.is_invoke() => refuse(activity, 400, "invalid_action", &e.to_string()),
        Err(e) => (problem(&e), Followup::None),
    }
}

async fn vote(activity: Activity, click: Click) -> (Response, Followup) {
    let identity = activity
        .identity()
        .map(|(t, a)| (t.to_string(), a.to_string()));
    let approver = match (&identity, directory()) {
        (_, Err(e)) => return (problem(&e), Followup::None),
        (Some((tenant, aad)), Ok(dir)) => dir.approver_by_teams(tenant, aad).map(|a| a.id.clone()),
        (None, Ok(_)) => None,
    };
    let Some(approver) = approver else {
        let (tenant, aad) = identity.unwrap_or_default();
        audit_event(
            "vote.rejected",
            Some(&click.request_id),
            &format!("teams:{tenant}/{aad}"),
            json!({"channel": "teams", "code": "unknown_approver", "tenant": tenant,
                   "aad_object_id": aad}),
        )
        .await;
        return refuse(
            activity,
            403,
            "unknown_approver",
            "You are not in countersign's directory of approvers: your vote was not counted.",
        );
    };
    let request = VoteRequest {
        id: click.request_id.clone(),
        approver,
        decision: click.decision,
        reason: None,
        channel: "teams".into(),
    };
    let answer = match adapter::call_internal("decision", "/internal/vote", &request).await {
        Ok((_, body)) => serde_json::from_slice::<VoteAnswer>(&body).ok(),
        Err(e) => {
            eprintln!("countersign: teams vote not delivered: {e}");
            None
        }
    };
    let Some(answer) = answer else {
        return refuse(
            activity,
            503,
            "unavailable",
            "countersign could not record your vote; please try again.",
        );
    };
    if answer.outcome == AnswerOutcome::Refused {
        let code = answer.code.map(|c| c.as_str()).unwrap_or("refused");
        let status = if matches!(code, "not_eligible" | "self_approval") {
            403
        } else {
            409
        };
        let message = format!(
            "Your vote was not counted: {}",
            answer.message.as_deref().unwrap_or("refused")
        );
        return refuse(activity, status, code, &message);
    }
    match click.via {
        Via::Execute => match load(&click.request_id) {
            Ok((_, record)) => {
                let card = review::card(&record, Timestamp::now());
                (
                    json_response(200, &teams::invoke_card(&card)),
                    Followup::None,
                )
            }
            Err(e) => refuse(activity, 500, "unavailable", &e.to_string()),
        },
        Via::Submit => (ok_empty(), Followup::Replace(activity, click.request_id)),
    }
}

/// After an Action.Submit vote: the clicked card (the activity's `replyToId`) shows the
/// request as it is now. The decision's card-update job covers every stored card as well.
async fn replace_card(activity: &Activity, id: &str) {
    let (Some(conversation), Some(card_id)) = (&activity.conversation_id, &activity.reply_to_id)
    else {
        return;
    };
    let result = load(id).and_then(|(store, record)| {
        let message = review::message(&record, Timestamp::now());
        bot::update(
            store.kv(),
            &activity.service_url,
            conversation,
            card_id,
            &message,
        )
    });
    let (kind, error) = match result {
        Ok(()) => ("card.updated", None),
        Err(e) => ("card.update_failed", Some(e.to_string())),
    };
    audit_event(
        kind,
        Some(id),
        "teams",
        json!({"channel": "teams", "via": "submit", "error": error}),
    )
    .await;
}

/// Replies `text` to the clicked card (Action.Submit refusals).
fn reply(activity: &Activity, text: &str) {
    let (Some(conversation), Some(card_id)) = (&activity.conversation_id, &activity.reply_to_id)
    else {
        return;
    };
    let result = SpinKv::open().and_then(|kv| {
        bot::reply(
            &kv,
            &activity.service_url,
            conversation,
            card_id,
            &teams::text_message(text),
        )
    });
    if let Err(e) = result {
        eprintln!("countersign: teams reply failed: {e}");
    }
}
