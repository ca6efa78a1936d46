//! The Slack channel end to end (issue 4, "Must show"): `countersign up` serves the real
//! spin.toml (with the slack component) against a stand-in for the Slack Web API and for
//! interaction `response_url`s (tests/support/slack.rs), which checks the bearer token, the
//! JSON shape and Block Kit limits, and records every call.

#[path = "support/slack.rs"]
mod fake_slack;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_slack::*;
use serde_json::{json, Value};
use shared::Timestamp;
use support::app::*;
use support::*;

/// Slack identities of the test people: olivia (owner of etl-bot, a DBA) has a second id in
/// another workspace; dan is in no group.
const SLACK_IDS: [(&str, &str); 4] = [
    ("olivia", "\"T1/UOLIVIA\", \"T2/UOLIVIA2\""),
    ("bob", "\"T1/UBOB\""),
    ("carol", "\"T1/UCAROL\""),
    ("dan", "\"T1/UDAN\""),
];

struct Env {
    f: Fixture,
    h: Host,
    slack: FakeSlack,
}

async fn setup() -> Env {
    let f = Fixture::new(Options::default()).await;
    require_wasm("slack");
    f.add_identities("slack", &SLACK_IDS);
    let slack = FakeSlack::start().await;
    let h = slack.configure(f.host()).start().await;
    Env { f, h, slack }
}

async fn pending(e: &Env, body: &Value) -> String {
    e.f.pending(&e.h, "etl-bot", body).await
}

async fn status_of(e: &Env, id: &str) -> String {
    e.f.status_of(&e.h, id).await
}

/// The card posted for `id` (waits for it).
async fn card_for(e: &Env, id: &str) -> Call {
    e.slack
        .wait_for(Duration::from_secs(10), |c| {
            c.path == "/api/chat.postMessage" && c.status == 200 && c.body.to_string().contains(id)
        })
        .await
        .unwrap_or_else(|| panic!("no card for {id}: {:?}", e.slack.calls()))
}

async fn click(e: &Env, body: &str, headers: &[(&str, &str)]) -> Resp {
    e.h.request(
        Method::POST,
        "/v1/slack/interactions",
        Bytes::from(body.to_string()),
        headers,
    )
    .await
}

async fn signed_click(e: &Env, team: &str, user: &str, action: &str, id: &str, name: &str) -> Resp {
    let body = click_body(team, user, action, id, &e.slack.response_url(name));
    let (ts, sig) = sign(SIGNING_SECRET, Timestamp::now().unix(), &body);
    click(
        e,
        &body,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
        ],
    )
    .await
}

async fn audit_types(e: &Env) -> Vec<Value> {
    e.f.audit_records(&e.h).await
}

fn no_violations(e: &Env) {
    let bad: Vec<Call> = e
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.violation.is_some())
        .collect();
    assert!(bad.is_empty(), "the Slack stand-in refused calls: {bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_request_posts_one_card_and_a_signed_click_approves() {
    let e = setup().await;
    let id = pending(
        &e,
        &export_body("customers", Some(e.f.callback_url("etl-bot", "cb"))),
    )
    .await;
    let card = card_for(&e, &id).await;
    assert!(has_buttons(&card.body), "{}", card.body);
    let text = card.body.to_string();
    for needle in EXPORT_SHOWN {
        assert!(text.contains(needle), "card lacks {needle}: {text}");
    }
    assert_eq!(card.body["channel"], CHANNEL);
    let started = Instant::now();
    let r = signed_click(&e, "T1", "UBOB", "approve", &id, "approve").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(status_of(&e, &id).await, "approved");
    let replaced = e
        .slack
        .wait_for(Duration::from_secs(10), |c| c.path == "/response/approve")
        .await
        .expect("card replaced through response_url");
    assert_eq!(replaced.body["replace_original"], true);
    assert!(!has_buttons(&replaced.body));
    assert!(replaced.body.to_string().contains("bob"));
    e.f.callbacks
        .wait_for(Duration::from_secs(10), |r| r.json()["id"] == id.as_str())
        .await
        .expect("the agent's callback fires");
    // Exactly one card for the request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = e
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.body.to_string().contains(&id))
        .count();
    assert_eq!(posts, 1);
    no_violations(&e);
}

/// A bad-signature case: name, headers, body.
type Case = (&'static str, Vec<(String, String)>, String);

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_are_refused_and_audited() {
    let e = setup().await;
    let id = pending(&e, &export_body("orders", None)).await;
    card_for(&e, &id).await;
    let body = click_body("T1", "UBOB", "approve", &id, &e.slack.response_url("x"));
    let now = Timestamp::now().unix();
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let cases: Vec<Case> = {
        let good = sign(SIGNING_SECRET, now, &body);
        let wrong = sign("another-secret", now, &body);
        let stale = sign(SIGNING_SECRET, now - 301, &body);
        let future = sign(SIGNING_SECRET, now + 301, &body);
        let forged = (now.to_string(), format!("v0={}", "ab".repeat(32)));
        let h = |p: &(String, String)| {
            vec![
                ("x-slack-request-timestamp".to_string(), p.0.clone()),
                ("x-slack-signature".to_string(), p.1.clone()),
            ]
        };
        vec![
            ("forged", h(&forged), body.clone()),
            ("wrong secret", h(&wrong), body.clone()),
            ("stale", h(&stale), body.clone()),
            ("future", h(&future), body.clone()),
            ("altered", h(&good), body.replace("approve", "deny")),
            (
                "missing signature",
                vec![("x-slack-request-timestamp".to_string(), good.0.clone())],
                body.clone(),
            ),
            (
                "missing timestamp",
                vec![("x-slack-signature".to_string(), good.1.clone())],
                body.clone(),
            ),
        ]
    };
    for (name, headers, b) in &cases {
        let mut hs: Vec<(&str, &str)> = vec![ct];
        hs.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let r = click(&e, b, &hs).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
    }
    assert_eq!(status_of(&e, &id).await, "pending");
    let failed = audit_types(&e)
        .await
        .into_iter()
        .filter(|r| r["type"] == "auth.failed" && r["data"]["channel"] == "slack")
        .count();
    assert_eq!(failed, cases.len());
    assert!(e.slack.calls_to("/response/x").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_on_behalf_of_and_unknown_clickers_are_refused() {
    let e = setup().await;
    let id = pending(&e, &export_body("payroll", None)).await;
    card_for(&e, &id).await;
    for (team, user, name) in [
        ("T1", "UOLIVIA", "owner"),
        ("T2", "UOLIVIA2", "owner-other-workspace"),
        ("T1", "UCAROL", "on-behalf-of"),
        ("T1", "UNOBODY", "unknown"),
        ("T9", "UBOB", "unknown-workspace"),
        ("T1", "UDAN", "not-eligible"),
    ] {
        let r = signed_click(&e, team, user, "approve", &id, name).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let msg = e
            .slack
            .wait_for(Duration::from_secs(10), |c| {
                c.path == format!("/response/{name}")
            })
            .await
            .unwrap_or_else(|| panic!("{name}: no ephemeral answer"));
        assert_eq!(msg.body["response_type"], "ephemeral", "{name}");
        assert_eq!(msg.body["replace_original"], false, "{name}");
        assert_eq!(status_of(&e, &id).await, "pending", "{name}");
    }
    let v =
        e.h.get_as(&format!("/v1/actions/{id}"), e.f.token("etl-bot"))
            .await
            .json();
    assert_eq!(v["votes"].as_array().unwrap().len(), 0, "{v}");
    let unknown = audit_types(&e)
        .await
        .into_iter()
        .filter(|r| {
            r["type"] == "vote.rejected"
                && r["request_id"] == id.as_str()
                && r["data"]["code"] == "unknown_clicker"
        })
        .count();
    assert_eq!(unknown, 2, "both unknown clickers are audited");
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn decided_through_the_api_updates_the_card_without_buttons() {
    let e = setup().await;
    let id = pending(&e, &export_body("ledger", None)).await;
    let card = card_for(&e, &id).await;
    let deny = json!({"decision": "deny", "reason": "not this quarter"});
    e.f.decide(&e.h, &id, "bob", &deny).await.expect(200);
    let ts = card_ts(&e, &id);
    let upd = e
        .slack
        .wait_for(Duration::from_secs(15), |c| {
            c.path == "/api/chat.update" && c.body["ts"] == ts.as_str() && c.status == 200
        })
        .await
        .expect("chat.update of the card");
    assert!(!has_buttons(&upd.body), "{}", upd.body);
    assert!(upd.body.to_string().contains("Denied"), "{}", upd.body);
    assert_eq!(upd.body["channel"], card.body["channel"]);
    no_violations(&e);
}

fn card_ts(e: &Env, id: &str) -> String {
    // The stand-in numbers its answers in call order; find this card's answer index.
    let posts: Vec<Call> = e
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.status == 200 && c.violation.is_none())
        .collect();
    let n = posts
        .iter()
        .position(|c| c.body.to_string().contains(id))
        .expect("posted")
        + 1;
    format!("1700000000.{n:06}")
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_post_is_retried_by_the_sweep() {
    let e = setup().await;
    // Retry-After (8 s) is longer than the first backoff (5 s): the attempt in between must
    // not reach Slack.
    e.slack.rate_limit_next_for(1, 8);
    let id = pending(&e, &export_body("events", None)).await;
    let limited = e
        .slack
        .wait_for(Duration::from_secs(10), |c| c.status == 429)
        .await
        .expect("a 429");
    assert_eq!(status_of(&e, &id).await, "pending");
    let posted =
        e.f.sweep_until(&e.h, Duration::from_secs(40), || {
            e.slack
                .calls_to("chat.postMessage")
                .into_iter()
                .find(|c| c.status == 200 && c.body.to_string().contains(&id))
        })
        .await;
    assert!(posted.is_some(), "never retried: {:?}", e.slack.calls());
    let posts = e.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 2, "one 429, then one post: {posts:?}");
    assert!(
        posts[1].at.duration_since(limited.at) >= Duration::from_secs(8),
        "posted again before Retry-After"
    );
    assert_eq!(status_of(&e, &id).await, "pending");
    let failed = audit_types(&e)
        .await
        .into_iter()
        .filter(|r| r["type"] == "review.failed" && r["request_id"] == id.as_str())
        .count();
    assert!(failed >= 1, "the failed post is audited");
    let reviews =
        e.h.get_as("/v1/reviews", e.f.token("bob"))
            .await
            .expect(200)
            .json();
    assert!(reviews.to_string().contains(&id));
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn click_is_acknowledged_fast_when_response_url_is_slow() {
    let e = setup().await;
    e.slack.set_response_delay(Duration::from_secs(5));
    let id = pending(&e, &export_body("slow", None)).await;
    card_for(&e, &id).await;
    let started = Instant::now();
    let r = signed_click(&e, "T1", "UCAROL", "deny", &id, "slow").await;
    // carol is on_behalf_of: refused; the ephemeral answer goes to the slow response_url.
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let r = signed_click(&e, "T1", "UBOB", "approve", &id, "slow2").await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status_of(&e, &id).await, "approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_simultaneous_clicks_make_one_decision() {
    let e = setup().await;
    // No on_behalf_of: bob and carol are both eligible DBAs; quorum 1.
    let mut body = export_body("twice", None);
    body.as_object_mut().unwrap().remove("on_behalf_of");
    let id = pending(&e, &body).await;
    card_for(&e, &id).await;
    let (a, b) = tokio::join!(
        signed_click(&e, "T1", "UBOB", "approve", &id, "race-bob"),
        signed_click(&e, "T1", "UCAROL", "approve", &id, "race-carol"),
    );
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let (a, b) = tokio::join!(
        signed_click(&e, "T1", "UBOB", "deny", &id, "race-bob-again"),
        signed_click(&e, "T1", "UBOB", "approve", &id, "race-bob-twice"),
    );
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let v =
        e.h.get_as(&format!("/v1/actions/{id}"), e.f.token("etl-bot"))
            .await
            .json();
    assert_eq!(v["status"], "approved", "{v}");
    let approved = audit_types(&e)
        .await
        .into_iter()
        .filter(|r| r["type"] == "action.approved" && r["request_id"] == id.as_str())
        .count();
    assert_eq!(approved, 1, "one decision");
    // Every answer shown to a clicker agrees with the one outcome: the winner's card is
    // replaced without buttons, the others are told (ephemerally) that nothing changed.
    for name in ["race-bob", "race-carol", "race-bob-again", "race-bob-twice"] {
        let m = e
            .slack
            .wait_for(Duration::from_secs(10), |c| {
                c.path == format!("/response/{name}")
            })
            .await
            .unwrap_or_else(|| panic!("{name}: no answer"));
        if m.body["response_type"] == "ephemeral" {
            assert_eq!(m.body["replace_original"], false);
        } else {
            assert!(!has_buttons(&m.body), "{name}: {}", m.body);
            assert!(m.body.to_string().contains("Approved"), "{name}");
        }
    }
    let ts = card_ts(&e, &id);
    let upd = e
        .slack
        .wait_for(Duration::from_secs(15), |c| {
            c.path == "/api/chat.update" && c.body["ts"] == ts.as_str()
        })
        .await
        .expect("chat.update of the card");
    assert!(!has_buttons(&upd.body));
    no_violations(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_request_card_loses_its_buttons() {
    let e = setup().await;
    let body = json!({"action": "db.drop", "resource": {"type": "Table", "id": "tmp"},
                      "context": {"env": "dev"}});
    let id = pending(&e, &body).await;
    card_for(&e, &id).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ts = card_ts(&e, &id);
    let upd =
        e.f.sweep_until(&e.h, Duration::from_secs(30), || {
            e.slack
                .calls_to("chat.update")
                .into_iter()
                .find(|c| c.body["ts"] == ts.as_str() && c.status == 200)
        })
        .await
        .unwrap_or_else(|| panic!("card never updated: {:?}", e.slack.calls()));
    assert!(!has_buttons(&upd.body), "{}", upd.body);
    assert!(upd.body.to_string().contains("Expired"), "{}", upd.body);
    assert_eq!(status_of(&e, &id).await, "expired");
    no_violations(&e);
}
