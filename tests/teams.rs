//! The Microsoft Teams channel end to end (issue 5): `countersign up` serves the real
//! spin.toml (with the teams component) against a stand-in for Microsoft's side
//! (tests/support/teams.rs): the token endpoint, the Bot Framework OpenID metadata and keys,
//! and the connector activities API, which checks credentials, activities and Adaptive Cards
//! and records every call. The tests send the bot activities as Teams does (Action.Execute
//! invokes, Action.Submit messages), authenticated with tokens the stand-in signs.

#[path = "support/slack.rs"]
mod fake_slack;
#[path = "support/teams.rs"]
mod fake_teams;
mod support;

use std::time::Duration;

use bytes::Bytes;
use fake_teams::*;
use serde_json::{json, Value};
use shared::Timestamp;
use support::app::*;
use support::*;

/// AAD object ids of the test people in [`TENANT`]: olivia owns etl-bot (and is a DBA), carol
/// is the `on_behalf_of` of [`export_body`], dan is in no group, bob, erin and frank are the
/// security group (two of them approve a role grant).
const AAD_IDS: [(&str, &str); 6] = [
    ("olivia", "0a6f3c2e-41d8-4b9a-8e27-5c1d9f0b3a61"),
    ("bob", "5d1c3f0e-8a2b-4c7d-9e61-0b2f4a7c9d13"),
    ("carol", "c7e2a9d4-1f36-4b08-a5c9-3e8d0f6b2a74"),
    ("dan", "9b4d0e7a-6c21-4f53-b8e0-2a7f1c5d9e36"),
    ("erin", "4f7b2d90-3e1a-4c86-a9d5-8b0e6c2f1a37"),
    ("frank", "a82e5c17-9b4f-4d03-8c6a-1e9f7d3b5c20"),
];
/// Someone of the tenant who is in no directory.
const STRANGER: &str = "e3a81c6f-0d95-4b27-9f4c-7b2e6a0d1c58";
const OTHER_TENANT: &str = "2c9f4e1b-7a03-4d68-b5e2-9f0c3a7d6e14";
const LONG: Duration = Duration::from_secs(10);

fn aad(who: &str) -> &'static str {
    AAD_IDS
        .iter()
        .find(|(w, _)| *w == who)
        .unwrap_or_else(|| panic!("{who} has no Teams id"))
        .1
}

struct Env {
    f: Fixture,
    h: Host,
    teams: FakeTeams,
    slack: Option<fake_slack::FakeSlack>,
}

async fn setup(with_slack: bool) -> Env {
    let f = Fixture::new(Options::default()).await;
    require_wasm("teams");
    let ids: Vec<(&str, String)> = AAD_IDS
        .iter()
        .map(|(who, id)| (*who, format!("\"{TENANT}/{id}\"")))
        .collect();
    f.add_identities("teams", &ids);
    let teams = FakeTeams::start().await;
    let mut b = teams.configure(f.host());
    let mut slack = None;
    if with_slack {
        require_wasm("slack");
        f.add_identities("slack", &[("bob", "\"T1/UBOB\"")]);
        let s = fake_slack::FakeSlack::start().await;
        b = s.configure(b);
        slack = Some(s);
    }
    let h = b.start().await;
    Env { f, h, teams, slack }
}

async fn pending(e: &Env, dataset: &str, callback: Option<String>) -> String {
    e.f.pending(&e.h, "etl-bot", &export_body(dataset, callback))
        .await
}

/// A card the bot posted for a request.
struct Card {
    request: String,
    activity: String,
    content: Value,
}

/// The card posted for request `id` (waits for it).
async fn card_for(e: &Env, id: &str) -> Card {
    let c = e
        .teams
        .wait_for(LONG, |c| {
            c.method == "POST"
                && c.status == 201
                && c.path.ends_with("/activities")
                && c.body.to_string().contains(id)
        })
        .await
        .unwrap_or_else(|| panic!("no card for {id}: {:?}", e.teams.calls()));
    Card {
        request: id.to_string(),
        activity: c.activity_id.expect("the id of the posted activity"),
        content: card_of(&c.body).clone(),
    }
}

/// A host with the Teams channel and one request of `etl-bot` awaiting review, with its card.
async fn with_card(dataset: &str, callback: bool) -> (Env, Card) {
    let e = setup(false).await;
    let cb = callback.then(|| e.f.callback_url("etl-bot", "cb"));
    let id = pending(&e, dataset, cb).await;
    let card = card_for(&e, &id).await;
    (e, card)
}

/// An activity of `kind` from `aad` of `tenant` about `card`, carrying `value`.
fn activity(e: &Env, kind: &str, card: &Card, tenant: &str, aad: &str, value: Value) -> Value {
    e.teams.activity(kind, &card.activity, tenant, aad, value)
}

/// An Action.Execute click (an `invoke` activity).
fn execute(e: &Env, card: &Card, tenant: &str, aad: &str, decision: &str) -> Value {
    let action = json!({"type": "Action.Execute", "verb": decision,
                        "data": {"id": card.request, "decision": decision}});
    let value = json!({"action": action, "trigger": "manual"});
    activity(e, "invoke", card, tenant, aad, value)
}

/// An Action.Submit click (a `message` activity), as older clients send it.
fn submit(e: &Env, card: &Card, aad: &str, decision: &str) -> Value {
    let value = json!({"countersign": "vote", "id": card.request, "decision": decision});
    activity(e, "message", card, TENANT, aad, value)
}

/// Sends `activity` to the bot's messaging endpoint with `Authorization: Bearer <token>`.
async fn send(e: &Env, activity: &Value, token: Option<&str>) -> Resp {
    e.h.call(Method::POST, "/v1/teams/messages", token, Some(activity))
        .await
}

/// Sends `activity` with a valid token.
async fn send_valid(e: &Env, activity: &Value) -> Resp {
    send(e, activity, Some(&e.teams.token().jwt())).await
}

/// An Action.Execute click by `who` (of the tenant) with a valid token.
async fn click(e: &Env, card: &Card, who: &str, decision: &str) -> Resp {
    send_valid(e, &execute(e, card, TENANT, aad(who), decision)).await
}

/// The answer to an invoke: HTTP 200 with `{"statusCode","type","value"}`.
#[track_caller]
fn invoke_answer(r: &Resp, what: &str) -> Value {
    assert_eq!(r.status.as_u16(), 200, "{what}: {}", r.text());
    let v = r.json();
    assert!(v["statusCode"].is_u64(), "{what}: {v}");
    v
}

/// Asserts an invoke answer that refuses the vote with `status` and `code`.
#[track_caller]
fn assert_refused(r: &Resp, status: u16, code: &str, what: &str) {
    let v = invoke_answer(r, what);
    assert_eq!(v["statusCode"], status, "{what}: {v}");
    assert_eq!(v["type"], "application/vnd.microsoft.error", "{what}: {v}");
    assert_eq!(v["value"]["code"], code, "{what}: {v}");
    assert!(v["value"]["message"].is_string(), "{what}: {v}");
}

/// Asserts an invoke answer that replaces the card; returns the new card.
#[track_caller]
fn answered_card(r: &Resp, what: &str) -> Value {
    let v = invoke_answer(r, what);
    assert_eq!(v["statusCode"], 200, "{what}: {v}");
    assert_eq!(v["type"], CARD_TYPE, "{what}: {v}");
    check_card(&v["value"]).unwrap_or_else(|e| panic!("{what}: {e}: {v}"));
    v["value"].clone()
}

/// The vote buttons of a pending card: Action.Execute approve/deny, each falling back to an
/// Action.Submit with the same vote.
#[track_caller]
fn assert_vote_actions(card: &Value, id: &str) {
    let actions = card["actions"]
        .as_array()
        .expect("a pending card has actions");
    for decision in ["approve", "deny"] {
        let a = actions
            .iter()
            .find(|a| a["verb"] == decision)
            .unwrap_or_else(|| panic!("no {decision} action: {card}"));
        assert_eq!(a["type"], "Action.Execute", "{a}");
        assert_eq!(
            (&a["data"]["id"], &a["data"]["decision"]),
            (&json!(id), &json!(decision))
        );
        let fb = &a["fallback"];
        assert_eq!(fb["type"], "Action.Submit", "{a}");
        assert_eq!(fb["data"]["countersign"], "vote", "{a}");
        assert_eq!(
            (&fb["data"]["id"], &fb["data"]["decision"]),
            (&json!(id), &json!(decision))
        );
    }
}

/// A card that shows the outcome and who decided, without actions.
#[track_caller]
fn assert_decided(card: &Value, outcome: &str, who: &str) {
    check_card(card).unwrap_or_else(|e| panic!("{e}: {card}"));
    assert!(!has_actions(card), "actions left on a decided card: {card}");
    let text = card.to_string();
    assert!(text.contains(outcome), "card lacks {outcome}: {text}");
    assert!(text.contains(who), "card lacks {who}: {text}");
}

/// The update (PUT) of `card` that shows the outcome (waits for it).
async fn updated(e: &Env, card: &Card, outcome: &str, who: &str) -> Value {
    let put = e
        .teams
        .wait_for(Duration::from_secs(15), |c| {
            c.method == "PUT"
                && c.activity_id.as_deref() == Some(card.activity.as_str())
                && c.status == 200
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "card {} never updated: {:?}",
                card.activity,
                e.teams.calls()
            )
        });
    assert_decided(card_of(&put.body), outcome, who);
    let latest = e.teams.card(&card.activity).expect("the card");
    assert!(!has_actions(&latest), "{latest}");
    put.body
}

async fn view(e: &Env, id: &str) -> Value {
    let r =
        e.h.get_as(&format!("/v1/actions/{id}"), e.f.token("etl-bot"))
            .await;
    r.expect(200).json()
}

#[track_caller]
fn no_violations(e: &Env) {
    let bad = e.teams.violations();
    assert!(bad.is_empty(), "the Teams stand-in refused calls: {bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_request_posts_one_card_and_an_execute_click_approves() {
    let (e, card) = with_card("customers", true).await;
    let id = card.request.clone();
    assert_vote_actions(&card.content, &id);
    let text = card.content.to_string();
    for needle in EXPORT_SHOWN {
        assert!(text.contains(needle), "card lacks {needle}: {text}");
    }
    let r = click(&e, &card, "bob", "approve").await;
    let answer = answered_card(&r, "bob approves");
    assert_decided(&answer, "Approved", "bob");
    let v = view(&e, &id).await;
    assert_eq!(v["status"], "approved", "{v}");
    // The card says when, to the minute of decided_at (RFC 3339).
    let when = &v["decided_at"].as_str().expect("decided_at")[..16];
    assert!(answer.to_string().contains(when), "no {when}: {answer}");
    let cb =
        e.f.callbacks
            .wait_for(LONG, |r| r.json()["id"] == id.as_str())
            .await
            .expect("the agent's callback fires");
    e.f.assert_signed(&cb, "etl-bot");
    assert_eq!(cb.json()["status"], "approved");
    // Exactly one card for the request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts: Vec<Call> = e
        .teams
        .calls_to("/activities")
        .into_iter()
        .filter(|c| c.method == "POST" && c.body.to_string().contains(&id))
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_click_approves_and_the_card_is_updated() {
    let (e, card) = with_card("orders", false).await;
    let id = card.request.clone();
    let r = send_valid(&e, &submit(&e, &card, aad("bob"), "approve")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(e.f.status_of(&e.h, &id).await, "approved");
    updated(&e, &card, "Approved", "bob").await;
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_and_audited() {
    let (e, card) = with_card("payroll", false).await;
    let id = card.request.clone();
    // Published before the bot first fetches the keys (on the first activity it gets).
    let unendorsed = e.teams.add_key(&["skype", "webchat"]);
    let stray = e.teams.stray_key();
    let t = || e.teams.token();
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no authorization", None, 401),
        ("not a JWT", Some("not-a-token".into()), 401),
        (
            "bad signature",
            Some(t().signed_by(&stray).kid(&e.teams.current_kid()).jwt()),
            401,
        ),
        ("unknown kid", Some(t().signed_by(&stray).jwt()), 401),
        (
            "wrong issuer",
            Some(t().claim("iss", json!("https://sts.windows.net/x/")).jwt()),
            401,
        ),
        (
            "wrong audience",
            Some(t().claim("aud", json!(STRANGER)).jwt()),
            401,
        ),
        ("expired", Some(t().expired().jwt()), 401),
        ("not yet valid", Some(t().not_yet_valid().jwt()), 401),
        (
            "serviceurl of another region",
            Some(
                t().claim("serviceurl", json!("https://smba.trafficmanager.net/emea/"))
                    .jwt(),
            ),
            401,
        ),
        (
            "key without msteams",
            Some(t().signed_by(&unendorsed).jwt()),
            403,
        ),
    ];
    let activity = execute(&e, &card, TENANT, aad("bob"), "approve");
    for (name, token, status) in &cases {
        let r = send(&e, &activity, token.as_deref()).await;
        assert_problem(&r, *status, name);
    }
    assert_eq!(e.f.status_of(&e.h, &id).await, "pending");
    assert!(view(&e, &id).await["votes"].as_array().unwrap().is_empty());
    assert!(e.teams.calls_on(&card.activity).is_empty());
    let failed: Vec<Value> =
        e.f.audit_records(&e.h)
            .await
            .into_iter()
            .filter(|r| r["type"] == "auth.failed" && r["data"]["channel"] == "teams")
            .collect();
    assert_eq!(failed.len(), cases.len(), "{failed:?}");
    assert!(
        failed.iter().all(|r| r["data"]["reason"].is_string()),
        "{failed:?}"
    );
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_signing_key_is_picked_up_without_a_restart() {
    let (e, card) = with_card("ledger", false).await;
    let id = card.request.clone();
    // dan is not eligible: the answer shows the token was accepted, with the keys fetched once.
    assert_refused(
        &click(&e, &card, "dan", "approve").await,
        403,
        "not_eligible",
        "dan",
    );
    assert_eq!(e.teams.jwks_fetches().len(), 1);
    let old = e.teams.current_kid();
    let new = e.teams.rotate();
    let bob_approves = execute(&e, &card, TENANT, aad("bob"), "approve");
    // Within 5 s of the last fetch an unknown kid is refused without fetching again.
    let r = send(
        &e,
        &bob_approves,
        Some(&e.teams.token().signed_by(&new).jwt()),
    )
    .await;
    assert_problem(&r, 401, "new key within the refetch interval");
    assert_eq!(e.teams.jwks_fetches().len(), 1);
    assert_eq!(e.f.status_of(&e.h, &id).await, "pending");
    let last = e.teams.jwks_fetches().last().unwrap().at;
    tokio::time::sleep_until((last + Duration::from_millis(5500)).into()).await;
    let r = send(
        &e,
        &bob_approves,
        Some(&e.teams.token().signed_by(&new).jwt()),
    )
    .await;
    assert_decided(&answered_card(&r, "new key"), "Approved", "bob");
    assert_eq!(e.teams.jwks_fetches().len(), 2);
    assert_eq!(e.f.status_of(&e.h, &id).await, "approved");
    // The old key is gone.
    let dan = execute(&e, &card, TENANT, aad("dan"), "deny");
    let r = send(&e, &dan, Some(&e.teams.token().signed_by(&old).jwt())).await;
    assert_problem(&r, 401, "old key");
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_on_behalf_of_and_unknown_clickers_are_refused() {
    let (e, card) = with_card("payroll", false).await;
    let id = card.request.clone();
    for (name, who, code) in [
        ("owner", aad("olivia"), "self_approval"),
        ("on behalf of", aad("carol"), "self_approval"),
        ("unknown", STRANGER, "unknown_approver"),
        ("not eligible", aad("dan"), "not_eligible"),
    ] {
        let r = send_valid(&e, &execute(&e, &card, TENANT, who, "approve")).await;
        assert_refused(&r, 403, code, name);
        assert_eq!(e.f.status_of(&e.h, &id).await, "pending", "{name}");
    }
    // bob's object id in another tenant is not bob.
    let r = send_valid(&e, &execute(&e, &card, OTHER_TENANT, aad("bob"), "approve")).await;
    assert!(
        r.status != StatusCode::OK || r.json()["statusCode"] == 403,
        "another tenant: {} {}",
        r.status,
        r.text()
    );
    // A refused Action.Submit is answered in the conversation.
    let r = send_valid(&e, &submit(&e, &card, aad("olivia"), "approve")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let reply = e
        .teams
        .wait_for(LONG, |c| {
            c.method == "POST" && c.path.ends_with(&format!("/activities/{}", card.activity))
        })
        .await
        .expect("a reply to the refused Action.Submit");
    assert!(
        reply.body["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{:?}",
        reply.body
    );
    assert_eq!(e.f.status_of(&e.h, &id).await, "pending");
    assert!(view(&e, &id).await["votes"].as_array().unwrap().is_empty());
    assert!(has_actions(&e.teams.card(&card.activity).unwrap()));
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vote_short_of_the_quorum_keeps_the_buttons_and_late_votes_get_409() {
    let e = setup(false).await;
    let body = json!({"action": "iam.grant_role", "resource": {"type": "Role", "id": "admin"},
                      "context": {"grantee": "user:someone"}, "justification": "on call"});
    let id = e.f.pending(&e.h, "etl-bot", &body).await;
    let card = card_for(&e, &id).await;
    let first = answered_card(&click(&e, &card, "bob", "approve").await, "bob");
    assert_vote_actions(&first, &id);
    assert_eq!(e.f.status_of(&e.h, &id).await, "pending");
    let r = click(&e, &card, "bob", "approve").await;
    assert_refused(&r, 409, "duplicate", "bob again");
    let second = answered_card(&click(&e, &card, "erin", "approve").await, "erin");
    assert_decided(&second, "Approved", "erin");
    assert_eq!(e.f.status_of(&e.h, &id).await, "approved");
    let r = click(&e, &card, "frank", "deny").await;
    assert_refused(&r, 409, "already_decided", "frank after the decision");
    assert_eq!(e.f.status_of(&e.h, &id).await, "approved");
    updated(&e, &card, "Approved", "erin").await;
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_in_slack_or_through_the_api_update_the_teams_card() {
    let e = setup(true).await;
    let slack = e.slack.as_ref().unwrap();
    let (by_api, by_slack) = (
        pending(&e, "ledger", None).await,
        pending(&e, "events", None).await,
    );
    let (api_card, slack_card) = (card_for(&e, &by_api).await, card_for(&e, &by_slack).await);
    let deny = json!({"decision": "deny", "reason": "not this quarter"});
    e.f.decide(&e.h, &by_api, "bob", &deny).await.expect(200);
    slack
        .wait_for(LONG, |c| {
            c.path == "/api/chat.postMessage" && c.body.to_string().contains(&by_slack)
        })
        .await
        .expect("the Slack card");
    let body = fake_slack::click_body("T1", "UBOB", "approve", &by_slack, &slack.response_url("r"));
    let (ts, sig) = fake_slack::sign(fake_slack::SIGNING_SECRET, Timestamp::now().unix(), &body);
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", sig.as_str()),
    ];
    let r = e.h.request(
        Method::POST,
        "/v1/slack/interactions",
        Bytes::from(body),
        &headers,
    );
    assert_eq!(r.await.status.as_u16(), 200);
    assert_eq!(e.f.status_of(&e.h, &by_slack).await, "approved");
    updated(&e, &api_card, "Denied", "bob").await;
    updated(&e, &slack_card, "Approved", "bob").await;
    no_violations(&e);
}

/// A first post that fails (at the token endpoint or the connector) is audited; the request
/// stays pending and reviewable, and the sweep posts its card later. Other posts share one
/// access token.
async fn failed_post_is_retried_by_the_sweep(at: Endpoint, fault: Fault) {
    let e = setup(false).await;
    e.teams.fail_next(at, 1, fault);
    let first = pending(&e, "events", None).await;
    let failure = eventually(LONG, || async {
        let records = e.f.audit_records(&e.h).await;
        records.into_iter().find(|r| {
            r["type"] == "review.failed"
                && r["request_id"] == first.as_str()
                && r["data"]["job"] == "review.teams"
        })
    })
    .await
    .expect("the failed post is audited");
    assert!(
        failure["data"]["error"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{failure}"
    );
    for dataset in ["a", "b"] {
        let id = pending(&e, dataset, None).await;
        card_for(&e, &id).await;
    }
    assert_eq!(e.f.status_of(&e.h, &first).await, "pending");
    let reviews =
        e.h.get_as("/v1/reviews", e.f.token("bob"))
            .await
            .expect(200);
    assert!(reviews.text().contains(&first));
    let posted =
        e.f.sweep_until(&e.h, Duration::from_secs(40), || {
            e.teams.calls_to("/activities").into_iter().find(|c| {
                c.method == "POST" && c.status == 201 && c.body.to_string().contains(&first)
            })
        })
        .await;
    assert!(posted.is_some(), "never retried: {:?}", e.teams.calls());
    let card = card_for(&e, &first).await;
    assert_vote_actions(&card.content, &first);
    let issued = e
        .teams
        .token_requests()
        .iter()
        .filter(|c| c.status == 200)
        .count();
    assert_eq!(
        issued,
        1,
        "one access token for every post: {:?}",
        e.teams.token_requests()
    );
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn connector_error_on_the_first_post_is_retried_by_the_sweep() {
    failed_post_is_retried_by_the_sweep(Endpoint::Connector, Fault::Status(500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_first_post_is_retried_by_the_sweep() {
    failed_post_is_retried_by_the_sweep(Endpoint::Connector, Fault::RateLimited(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_first_post_is_retried_by_the_sweep() {
    failed_post_is_retried_by_the_sweep(Endpoint::Connector, Fault::Hang).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_error_on_the_first_post_is_retried_by_the_sweep() {
    failed_post_is_retried_by_the_sweep(Endpoint::Token, Fault::Status(503)).await;
}

/// A request straight to the stand-in (no host).
async fn to_fake(
    fake: &FakeTeams,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Resp {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", fake.base()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    support::send(
        &client,
        req.body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await
}

/// The stand-in itself refuses what Microsoft refuses, so the tests above prove something.
#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_checks_like_microsoft() {
    let fake = FakeTeams::start().await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let token_path = format!("/{TENANT}/oauth2/v2.0/token");
    let creds = |secret: &str| {
        format!(
            "grant_type=client_credentials&client_id={APP_ID}&client_secret={}&scope={}",
            enc(secret),
            enc("https://api.botframework.com/.default")
        )
    };
    let r = to_fake(&fake, Method::POST, &token_path, &form, creds("wrong")).await;
    assert_eq!(
        (r.status.as_u16(), &r.json()["error"]),
        (401, &json!("invalid_client"))
    );
    let r = to_fake(
        &fake,
        Method::POST,
        &token_path,
        &form,
        "grant_type=client_credentials".into(),
    );
    assert_eq!((r.await.status.as_u16()), 400);
    let r = to_fake(
        &fake,
        Method::POST,
        "/other/oauth2/v2.0/token",
        &form,
        creds(APP_PASSWORD),
    );
    assert_eq!(r.await.status.as_u16(), 401);
    let r = to_fake(&fake, Method::POST, &token_path, &form, creds(APP_PASSWORD)).await;
    let v = r.expect(200).json();
    assert_eq!(
        (&v["token_type"], &v["expires_in"]),
        (&json!("Bearer"), &json!(3599))
    );
    let bearer = format!("Bearer {}", v["access_token"].as_str().unwrap());
    // Connector calls.
    let conv = format!(
        "{SERVICE_PATH}v3/conversations/{}/activities",
        enc(CONVERSATION)
    );
    let card = json!({"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "x"}]});
    let msg = |card: &Value| {
        json!({"type": "message", "attachments": [{"contentType": CARD_TYPE, "content": card}]})
            .to_string()
    };
    let json_ct = ("content-type", "application/json");
    let authed = [json_ct, ("authorization", bearer.as_str())];
    let r = to_fake(&fake, Method::POST, &conv, &[json_ct], msg(&card)).await;
    assert_eq!(r.status.as_u16(), 401);
    let r = to_fake(&fake, Method::POST, &conv, &authed, msg(&card)).await;
    let id = r.expect(201).json()["id"].as_str().unwrap().to_string();
    let mut decided = card.clone();
    decided["body"][0]["text"] = json!("Approved");
    let r = to_fake(
        &fake,
        Method::PUT,
        &format!("{conv}/{id}"),
        &authed,
        msg(&decided),
    )
    .await;
    assert_eq!(r.expect(200).json()["id"], id.as_str());
    assert_eq!(fake.card(&id), Some(decided));
    let r = to_fake(
        &fake,
        Method::PUT,
        &format!("{conv}/nope"),
        &authed,
        msg(&card),
    )
    .await;
    assert_eq!(r.status.as_u16(), 404);
    let mut v16 = card.clone();
    v16["version"] = json!("1.6");
    let r = to_fake(&fake, Method::POST, &conv, &authed, msg(&v16)).await;
    assert_eq!(r.status.as_u16(), 400);
    let mut big = card.clone();
    big["body"][0]["text"] = json!("x".repeat(MAX_ACTIVITY));
    let r = to_fake(&fake, Method::POST, &conv, &authed, msg(&big)).await;
    assert_eq!(r.json()["error"]["code"], "MessageSizeTooBig");
    let other = conv.replace(&enc(CONVERSATION), "19:other@thread.tacv2");
    let r = to_fake(&fake, Method::POST, &other, &authed, msg(&card)).await;
    assert_eq!(r.status.as_u16(), 404);
    fake.fail_next(Endpoint::Connector, 1, Fault::RateLimited(7));
    let r = to_fake(&fake, Method::POST, &conv, &authed, msg(&card)).await;
    assert_eq!(r.status.as_u16(), 429);
    assert_eq!(r.headers["retry-after"], "7");
    assert_eq!(fake.violations().len(), 8, "{:?}", fake.violations());
    // Tokens verify against the published keys, the way a JWT library does it.
    let meta = to_fake(
        &fake,
        Method::GET,
        "/v1/.well-known/openidconfiguration",
        &[],
        String::new(),
    );
    let jwks_uri = meta.await.expect(200).json()["jwks_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let path = jwks_uri.strip_prefix(&fake.base()).unwrap().to_string();
    let stray = fake.stray_key();
    let verify = |jwks: &Value, token: &str| {
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let Some(jwk) = jwks.find(&kid) else {
            return false;
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[APP_ID]);
        v.set_issuer(&[ISSUER]);
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        jsonwebtoken::decode::<Value>(token, &key, &v).is_ok()
    };
    let jwks = to_fake(&fake, Method::GET, &path, &[], String::new())
        .await
        .json();
    assert_eq!(jwks["keys"][0]["endorsements"][0], "msteams");
    assert!(verify(&jwks, &fake.token().jwt()));
    let current = fake.current_kid();
    assert!(!verify(
        &jwks,
        &fake.token().signed_by(&stray).kid(&current).jwt()
    ));
    assert!(!verify(&jwks, &fake.token().expired().jwt()));
    assert!(!verify(&jwks, &fake.token().claim("aud", json!("x")).jwt()));
    let new = fake.rotate();
    let jwks = to_fake(&fake, Method::GET, &path, &[], String::new())
        .await
        .json();
    assert!(verify(&jwks, &fake.token().signed_by(&new).jwt()));
    assert!(!verify(&jwks, &fake.token().signed_by(&current).jwt()));
    assert_eq!(fake.jwks_fetches().len(), 2);
}
