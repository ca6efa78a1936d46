//! Abuse, end to end: each test makes the app refuse something an attacker (or a careless
//! agent) would try, and checks that the refusal changed nothing: the audit trail, the pending
//! reviews, the request's status and votes, the callbacks received and grants are as before.
//!
//! What tests/api.rs, tests/slack.rs and tests/teams.rs already cover (malformed JSON, wrong
//! shapes, oversized bodies, self-approval by a plain id, forged or replayed channel calls) is
//! not repeated here: this file covers callback URL tricks and redirects, self-approval through
//! a channel alias, hostile bodies (deep nesting, duplicate keys, invalid UTF-8, content types)
//! and broken configuration files (fail closed).

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use support::app::*;
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    /// The whole audit trail, as exported.
    audit: String,
    /// What bob (dba, security) is asked to review.
    bob_reviews: Vec<String>,
    /// Requests the agent callbacks stand-in received.
    callbacks: usize,
}

async fn state(h: &Host, f: &Fixture) -> State {
    let v = h
        .get_as("/v1/reviews", f.token("bob"))
        .await
        .expect(200)
        .json();
    let bob_reviews = v["reviews"]
        .as_array()
        .unwrap_or_else(|| panic!("reviews are a list: {v}"))
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_string())
        .collect();
    State {
        audit: f.audit_export(h).await,
        bob_reviews,
        callbacks: f.callbacks.received().len(),
    }
}

/// Asserts that nothing changed since `before`.
#[track_caller]
fn assert_unchanged(before: &State, after: &State, what: &str) {
    assert_eq!(
        before.bob_reviews, after.bob_reviews,
        "{what}: reviews changed"
    );
    assert_eq!(
        before.callbacks, after.callbacks,
        "{what}: a callback was sent"
    );
    if before.audit != after.audit {
        let new: Vec<&str> = after
            .audit
            .strip_prefix(before.audit.as_str())
            .unwrap_or(&after.audit)
            .lines()
            .collect();
        panic!("{what}: the audit trail changed: {new:#?}");
    }
}

/// A request with a raw body and optional content type, bearer token.
async fn raw(
    h: &Host,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    if let Some(c) = content_type {
        headers.push(("content-type", c));
    }
    h.request(Method::POST, path, body.into(), &headers).await
}

/// The answer is a problem naming `field` (in `field` or in `detail`).
#[track_caller]
fn assert_names(p: &Value, field: &str, what: &str) {
    let named = p["field"].as_str() == Some(field)
        || p["detail"].as_str().is_some_and(|d| d.contains(field));
    assert!(named, "{what}: the problem does not name {field}: {p}");
}

/// The audit records after the first `n`.
fn records_after(export: &str, n: usize) -> Vec<Value> {
    export
        .lines()
        .skip(n)
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

/// A routine request of etl-bot is allowed (the policy and directory in force decide).
async fn assert_routine_allowed(h: &Host, f: &Fixture) {
    let v = h
        .post_as("/v1/actions", f.token("etl-bot"), &query_body())
        .await
        .expect(200)
        .json();
    assert_eq!(v["status"], "allowed", "{v}");
}

/// The request's view as its agent sees it.
async fn view(h: &Host, f: &Fixture, id: &str) -> Value {
    h.get_as(&format!("/v1/actions/{id}"), f.token("etl-bot"))
        .await
        .expect(200)
        .json()
}

/// A routine `db.query`: allowed at once, with a grant, when accepted.
fn query_body() -> Value {
    json!({"action": "db.query", "resource": {"type": "Table", "id": "orders"},
           "context": {"env": "prod"}})
}

/// Registers one more callback prefix for `agent` (before `f.start()` or while running: the
/// directory is read on every request).
fn add_callback_prefix(f: &Fixture, agent: &str, prefix: &str) {
    let path = f.dir.path().join("config/directory.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let from = format!("/hooks/{agent}/\"]");
    assert_eq!(text.matches(&from).count(), 1, "directory layout changed");
    let text = text.replace(&from, &format!("/hooks/{agent}/\", \"{prefix}\"]"));
    std::fs::write(&path, text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 1. callback_url outside the agent's prefixes

#[tokio::test]
async fn callback_url_tricks_are_refused_at_intake() {
    let f = Fixture::new(Options::default()).await;
    let port = f.callbacks.port;
    // etl-bot's prefixes: http://127.0.0.1:<port>/hooks/etl-bot/ and the same by host name.
    add_callback_prefix(
        &f,
        "etl-bot",
        &format!("http://localhost:{port}/hooks/etl-bot/"),
    );
    let h = f.start().await;
    let agent = f.token("etl-bot");
    // Something pending already, that none of the refusals may touch.
    let before_id = f.pending(&h, "etl-bot", &export_body("before", None)).await;
    let before = state(&h, &f).await;

    let p = port;
    let tricks: Vec<(&str, String)> = vec![
        // User information: the host is evil.example, or the right host with a login.
        (
            "userinfo",
            format!("http://127.0.0.1:{p}@evil.example/hooks/etl-bot/x"),
        ),
        (
            "userinfo",
            format!("http://127.0.0.1:{p}:pw@evil.example/hooks/etl-bot/x"),
        ),
        (
            "userinfo",
            format!("http://evil.example@127.0.0.1:{p}/hooks/etl-bot/x"),
        ),
        (
            "userinfo",
            format!("http://user:pw@127.0.0.1:{p}/hooks/etl-bot/x"),
        ),
        // A backslash is a slash in an http URL: the host is evil.example.
        (
            "backslash",
            format!("http://evil.example\\@127.0.0.1:{p}/hooks/etl-bot/x"),
        ),
        (
            "backslash",
            "http:\\\\evil.example\\hooks\\etl-bot\\x".to_string(),
        ),
        // Percent-encoded separators in the authority.
        (
            "encoded",
            format!("http://127.0.0.1:{p}%40evil.example/hooks/etl-bot/x"),
        ),
        (
            "encoded",
            format!("http://127.0.0.1%3A{p}%40evil.example/hooks/etl-bot/x"),
        ),
        (
            "encoded",
            format!("http://127.0.0.1%2eevil.example:{p}/hooks/etl-bot/x"),
        ),
        (
            "encoded",
            format!("http://evil.example%2F@127.0.0.1:{p}/hooks/etl-bot/x"),
        ),
        // The prefix hidden in a fragment or query: the path is /.
        (
            "fragment",
            format!("http://127.0.0.1:{p}#@evil.example/hooks/etl-bot/x"),
        ),
        ("query", format!("http://127.0.0.1:{p}?/hooks/etl-bot/x")),
        // Another port, scheme or default port on the same host.
        (
            "port",
            format!("http://127.0.0.1:{}/hooks/etl-bot/x", p.wrapping_add(1)),
        ),
        ("port", "http://127.0.0.1/hooks/etl-bot/x".to_string()),
        ("port", format!("http://127.0.0.1:0{p}0/hooks/etl-bot/x")),
        ("scheme", format!("https://127.0.0.1:{p}/hooks/etl-bot/x")),
        // Other addresses, however spelled (WHATWG parsing turns them into 127.0.0.2).
        ("address", format!("http://127.0.0.2:{p}/hooks/etl-bot/x")),
        ("address", format!("http://2130706434:{p}/hooks/etl-bot/x")),
        ("address", format!("http://0x7f000002:{p}/hooks/etl-bot/x")),
        ("address", format!("http://0177.0.0.2:{p}/hooks/etl-bot/x")),
        ("address", format!("http://127.0.0.2.:{p}/hooks/etl-bot/x")),
        (
            "address",
            format!("http://127\u{3002}0\u{3002}0\u{3002}2:{p}/hooks/etl-bot/x"),
        ),
        ("address", format!("http://[::1]:{p}/hooks/etl-bot/x")),
        (
            "address",
            format!("http://[::ffff:127.0.0.1]:{p}/hooks/etl-bot/x"),
        ),
        ("address", format!("http://0.0.0.0:{p}/hooks/etl-bot/x")),
        (
            "address",
            format!("http://169.254.169.254:{p}/hooks/etl-bot/x"),
        ),
        // Another name of the registered host: a trailing dot is another host name.
        ("name", format!("http://localhost.:{p}/hooks/etl-bot/x")),
        (
            "name",
            format!("http://localhost.evil.example:{p}/hooks/etl-bot/x"),
        ),
        // Out of the prefix by path.
        (
            "path",
            format!("http://127.0.0.1:{p}/hooks/etl-bot/../other-bot/x"),
        ),
        (
            "path",
            format!("http://127.0.0.1:{p}/hooks/etl-bot/%2e%2e/other-bot/x"),
        ),
        (
            "path",
            format!("http://127.0.0.1:{p}/hooks/etl-bot/%2E%2E/other-bot/x"),
        ),
        (
            "path",
            format!("http://127.0.0.1:{p}/hooks/etl-bot/.%2e/other-bot/x"),
        ),
        (
            "path",
            format!("http://127.0.0.1:{p}/hooks/etl-bot/..\\other-bot/x"),
        ),
        (
            "path",
            format!("http://127.0.0.1:{p}/hooks/etl-bot/./../../x"),
        ),
        ("path", format!("http://127.0.0.1:{p}/hooks/etl-bot")),
        ("path", format!("http://127.0.0.1:{p}/hooks/etl-bot-evil/x")),
        ("path", format!("http://127.0.0.1:{p}/HOOKS/etl-bot/x")),
        ("path", format!("http://127.0.0.1:{p}/hooks/other-bot/x")),
        // Not http(s), or not absolute.
        ("scheme", format!("ftp://127.0.0.1:{p}/hooks/etl-bot/x")),
        ("scheme", format!("ws://127.0.0.1:{p}/hooks/etl-bot/x")),
        ("scheme", "file:///hooks/etl-bot/x".to_string()),
        (
            "scheme",
            "javascript:alert(1)//127.0.0.1/hooks/etl-bot/".to_string(),
        ),
        ("scheme", "data:text/plain,hooks/etl-bot/".to_string()),
        ("relative", format!("//127.0.0.1:{p}/hooks/etl-bot/x")),
        ("relative", "/hooks/etl-bot/x".to_string()),
        ("empty", String::new()),
    ];
    for route in ["/v1/actions", "/v1/check"] {
        for (kind, url) in &tricks {
            let body = export_body("tricks", Some(url.clone()));
            let r = h.post_as(route, agent, &body).await;
            let what = format!("{route} with {kind} callback_url {url:?}");
            let pb = assert_problem(&r, 422, &what);
            assert_names(&pb, "callback_url", &what);
        }
    }
    assert_unchanged(&before, &state(&h, &f).await, "callback_url tricks");
    assert_eq!(view(&h, &f, &before_id).await["status"], "pending");

    // Controls: within a prefix, by either registered spelling, is admitted.
    for url in [
        f.callback_url("etl-bot", "ok"),
        format!("http://localhost:{p}/hooks/etl-bot/ok"),
    ] {
        let r = h
            .post_as("/v1/actions", agent, &export_body("ok", Some(url.clone())))
            .await;
        assert_eq!(r.status.as_u16(), 202, "{url}: {}", r.text());
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Redirects from a callback endpoint

#[tokio::test]
async fn redirected_callback_is_not_followed_and_counts_as_failed() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    // Outside every prefix: must never hear from countersign.
    let outside = StandIn::start("outside").await;
    f.callbacks
        .redirect(302, &outside.url("/hooks/etl-bot/stolen"));
    let body = export_body("redirect", Some(f.callback_url("etl-bot", "redir")));
    let id = f.pending(&h, "etl-bot", &body).await;
    // (carol is the one the request is done for.)
    let d = f
        .decide(&h, &id, "bob", &json!({"decision": "approve"}))
        .await
        .expect(200)
        .json();
    assert_eq!(d["status"], "approved", "{d}");
    let id2 = id.clone();
    let first = f
        .callbacks
        .wait_for(Duration::from_secs(15), move |r| {
            serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["id"] == id2.as_str())
        })
        .await
        .unwrap_or_else(|| panic!("no callback attempt: {:?}", f.callbacks.hits()));
    assert_eq!(first.uri, "/hooks/etl-bot/redir");

    // The retry (after the 5 s backoff) meets a 307 to the same outside place.
    f.callbacks
        .redirect(307, &outside.url("/hooks/etl-bot/stolen"));
    let retried = f
        .sweep_until(&h, Duration::from_secs(30), || {
            (f.callbacks_for(&id).len() >= 2).then_some(())
        })
        .await;
    assert!(
        retried.is_some(),
        "a redirect was taken as delivered: the sweep never retried ({:?})",
        f.callbacks.hits()
    );
    // A few more sweeps: still nothing outside.
    for _ in 0..3 {
        let r = h
            .call(Method::POST, "/v1/sweep", Some(&f.admin_token), None)
            .await;
        assert!(r.status.is_success(), "sweep: {}", r.text());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        outside.hits().is_empty(),
        "a redirect was followed: {:?}",
        outside.hits()
    );
    for r in f.callbacks_for(&id) {
        assert_eq!(r.uri, "/hooks/etl-bot/redir", "{:?}", f.callbacks.hits());
    }
    let recs = records_after(&f.audit_export(&h).await, 0);
    let of = |t: &str| {
        recs.iter()
            .filter(|r| r["type"] == t && r["request_id"] == id.as_str())
            .collect::<Vec<_>>()
    };
    assert!(of("callback.delivered").is_empty(), "{recs:#?}");
    let failed = of("callback.failed");
    assert!(failed.len() >= 2, "{recs:#?}");
    let errors: Vec<&str> = failed
        .iter()
        .map(|r| r["data"]["error"].as_str().unwrap_or(""))
        .collect();
    assert!(
        errors[0].contains("302") && errors[1].contains("307"),
        "the audit says why: {errors:?}"
    );
    // The decision stands; only the delivery is pending.
    assert_eq!(view(&h, &f, &id).await["status"], "approved");
}

// ---------------------------------------------------------------------------------------------
// 2b. A grant signed by a key countersign does not have

#[tokio::test]
async fn grant_signed_by_an_unknown_key_is_refused_and_not_spent() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let allowed = h
        .post_as("/v1/actions", f.token("etl-bot"), &query_body())
        .await
        .expect(200)
        .json();
    let grant = allowed["grant"].as_str().expect("a grant");
    // The same claims, signed by another Ed25519 key (its own kid in the header).
    let claims: Value = shared::jws::decode(grant)
        .expect("a JWS")
        .claims()
        .expect("claims");
    let other = shared::crypto::SigningKey::generate().unwrap();
    let forged = shared::jws::sign_eddsa(&other, &claims).unwrap();
    assert_ne!(forged, grant);
    let body = |g: &str| {
        json!({"grant": g, "action": "db.query", "resource": {"type": "Table", "id": "orders"},
               "context": {"env": "prod"}})
    };
    let before = state(&h, &f).await;
    let verify = |g: &str| {
        raw(
            &h,
            "/v1/grants/verify",
            None,
            Some("application/json"),
            body(g).to_string(),
        )
    };
    let r = verify(&forged).await;
    assert_problem(&r, 401, "a grant signed by an unknown key");
    assert_unchanged(&before, &state(&h, &f).await, "unknown-key grant");
    // The real grant is still unspent.
    let ok = verify(grant).await.expect(200).json();
    assert_eq!(ok["valid"], true, "{ok}");
}

// ---------------------------------------------------------------------------------------------
// 3. Self-approval through another channel's alias

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CAROL_AAD: &str = "5e0f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";

#[tokio::test]
async fn self_approval_through_a_channel_alias_is_refused() {
    let f = Fixture::new(Options::default()).await;
    f.add_identities("slack", &[("bob", "\"T0TEST/UBOB\"")]);
    f.add_identities("teams", &[("carol", format!("\"{TENANT}/{CAROL_AAD}\""))]);
    let h = f.start().await;

    // on_behalf_of names bob by his Slack identity, carol by her Teams identity (spelled in
    // upper case: Teams GUIDs compare case-insensitively).
    let cases = [
        ("bob", "slack:T0TEST/UBOB".to_string()),
        (
            "carol",
            format!(
                "teams:{}/{}",
                TENANT.to_uppercase(),
                CAROL_AAD.to_uppercase()
            ),
        ),
    ];
    for (who, alias) in cases {
        let mut body = export_body(&format!("alias-{who}"), None);
        body["on_behalf_of"] = json!(alias);
        let id = f.pending(&h, "etl-bot", &body).await;
        let audit_before = f.audit_export(&h).await;
        let n = audit_before.lines().count();
        for decision in ["approve", "deny"] {
            let r = f
                .decide(
                    &h,
                    &id,
                    who,
                    &json!({"decision": decision, "reason": "it is mine"}),
                )
                .await;
            let p = assert_problem(&r, 403, &format!("{who} ({alias}) votes {decision}"));
            assert_eq!(p["code"], "self_approval", "{p}");
        }
        let got = view(&h, &f, &id).await;
        assert_eq!(got["status"], "pending", "{got}");
        assert_eq!(got["votes"], json!([]), "{got}");
        // Only the refusals were recorded, as such.
        let new = records_after(&f.audit_export(&h).await, n);
        assert_eq!(new.len(), 2, "{new:#?}");
        for r in &new {
            assert_eq!(r["type"], "vote.rejected", "{r}");
            assert_eq!(r["actor"], who, "{r}");
            assert_eq!(r["data"]["code"], "self_approval", "{r}");
        }
        // Not offered to the person it is done for.
        let mine = h
            .get_as("/v1/reviews", f.token(who))
            .await
            .expect(200)
            .json();
        assert!(
            !mine.to_string().contains(&id),
            "{who} is offered a request done for them: {mine}"
        );
        // Another DBA still can: the request is intact.
        let other = if who == "bob" { "carol" } else { "bob" };
        let d = f
            .decide(&h, &id, other, &json!({"decision": "approve"}))
            .await
            .expect(200)
            .json();
        assert_eq!(d["status"], "approved", "{d}");
        assert_eq!(d["votes"].as_array().map(Vec::len), Some(1), "{d}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile bodies

#[tokio::test]
async fn hostile_bodies_are_refused_and_change_nothing() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let agent = f.token("etl-bot");
    let bob = f.token("bob");
    let json_ct = Some("application/json");
    // A pending request to vote on, and an unspent grant to verify.
    let id = f.pending(&h, "etl-bot", &export_body("bodies", None)).await;
    let decision = format!("/v1/actions/{id}/decision");
    let allowed = h
        .post_as("/v1/actions", agent, &query_body())
        .await
        .expect(200)
        .json();
    let grant = allowed["grant"].as_str().expect("a grant").to_string();
    let verify = json!({"grant": grant, "action": "db.query",
                        "resource": {"type": "Table", "id": "orders"},
                        "context": {"env": "prod"}, "consume": true});
    let before = state(&h, &f).await;

    // (route, token, a valid body for it)
    let routes: [(&str, Option<&str>, Value); 4] = [
        ("/v1/actions", Some(agent), query_body()),
        ("/v1/check", Some(agent), query_body()),
        (decision.as_str(), Some(bob), json!({"decision": "approve"})),
        ("/v1/grants/verify", None, verify.clone()),
    ];

    // Deep nesting: 400 (beyond the parser's depth) or 422 (beyond what a Cedar value may
    // nest), never a 5xx or a crash.
    let deep_context = |levels: usize| {
        format!(
            r#"{{"action":"db.query","resource":{{"type":"Table","id":"t"}},"context":{}1{}}}"#,
            r#"{"a":"#.repeat(levels),
            "}".repeat(levels)
        )
    };
    let deep_attributes = format!(
        r#"{{"action":"db.query","resource":{{"type":"Table","id":"t","attributes":{{"tags":{}1{}}}}}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    for (route, token, _) in &routes {
        for (name, body, status) in [
            ("60k [", "[".repeat(60_000), 400),
            ("10k {\"a\":", r#"{"a":"#.repeat(10_000), 400),
            (
                "[] nested 30k deep",
                "[".repeat(30_000) + &"]".repeat(30_000),
                400,
            ),
            // Beyond the body limit, refused before any parsing.
            ("100k [", "[".repeat(100_000), 413),
        ] {
            let r = raw(&h, route, *token, json_ct, body).await;
            assert_problem(&r, status, &format!("{route} with {name}"));
        }
    }
    for route in ["/v1/actions", "/v1/check"] {
        let r = raw(&h, route, Some(agent), json_ct, deep_context(40)).await;
        let p = assert_problem(&r, 422, &format!("{route}: context 40 deep"));
        assert_names(&p, "context.a.a", "context 40 deep");
        let r = raw(&h, route, Some(agent), json_ct, deep_context(127)).await;
        assert_problem_class(&r, 4, &format!("{route}: context 127 deep"));
        let r = raw(&h, route, Some(agent), json_ct, deep_context(2000)).await;
        assert_problem(&r, 400, &format!("{route}: context 2000 deep"));
        let r = raw(&h, route, Some(agent), json_ct, deep_attributes.clone()).await;
        let p = assert_problem(&r, 422, &format!("{route}: attributes 40 deep"));
        assert_names(&p, "resource.attributes.tags", "attributes 40 deep");
    }

    // Duplicate keys: a body that means one thing to one parser and another to the next.
    let dup_actions = [
        r#"{"action":"db.query","action":"db.drop","resource":{"type":"Table","id":"t"}}"#,
        r#"{"action":"db.drop","action":"db.query","resource":{"type":"Table","id":"t"}}"#,
        r#"{"action":"db.query","\u0061ction":"db.drop","resource":{"type":"Table","id":"t"}}"#,
        r#"{"action":"db.query","resource":{"type":"Table","id":"t","id":"secrets"}}"#,
        r#"{"action":"db.query","resource":{"type":"Table","type":"Dataset","id":"t"}}"#,
        r#"{"action":"db.query","resource":{"type":"Table","id":"t","attributes":{"c":"public","c":"pii"}}}"#,
        r#"{"action":"db.query","resource":{"type":"Table","id":"t"},"context":{"env":"dev","env":"prod"}}"#,
        r#"{"action":"db.query","resource":{"type":"Table","id":"t"},"context":{"k":{"x":1,"x":2}}}"#,
        r#"{"action":"db.query","resource":{"type":"Table","id":"t"},"context":{"l":[{"x":1,"x":2}]}}"#,
        r#"{"action":"db.query","resource":{"type":"Table","id":"t"},"resource":{"type":"Table","id":"u"}}"#,
        r#"{"action":"db.export","resource":{"type":"Dataset","id":"d"},"on_behalf_of":"user:bob","on_behalf_of":"user:carol"}"#,
    ];
    for route in ["/v1/actions", "/v1/check"] {
        for body in dup_actions {
            let r = raw(&h, route, Some(agent), json_ct, body).await;
            let p = assert_problem(&r, 400, &format!("{route} with {body}"));
            assert!(
                p["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("duplicate")),
                "{route} with {body}: {p}"
            );
        }
    }
    for body in [
        r#"{"decision":"deny","decision":"approve"}"#,
        r#"{"decision":"approve","reason":"a","reason":"b"}"#,
    ] {
        let r = raw(&h, &decision, Some(bob), json_ct, body).await;
        assert_problem(&r, 400, &format!("decision {body}"));
    }
    for dup in [
        format!(
            r#"{{"grant":"{grant}","action":"db.query","action":"db.query","resource":{{"type":"Table","id":"orders"}},"context":{{"env":"prod"}}}}"#
        ),
        format!(
            r#"{{"grant":"{grant}","action":"db.query","resource":{{"type":"Table","id":"orders"}},"context":{{"env":"prod","env":"prod"}}}}"#
        ),
        format!(
            r#"{{"grant":"{grant}","grant":"{grant}","action":"db.query","resource":{{"type":"Table","id":"orders"}},"context":{{"env":"prod"}}}}"#
        ),
        format!(
            r#"{{"grant":"{grant}","action":"db.query","resource":{{"type":"Table","id":"orders"}},"context":{{"env":"prod"}},"consume":false,"consume":true}}"#
        ),
    ] {
        let r = raw(&h, "/v1/grants/verify", None, json_ct, dup.clone()).await;
        assert_problem(&r, 400, &format!("grants/verify {dup}"));
    }

    // Invalid UTF-8 (and a lone surrogate) inside a JSON string.
    for (route, token, good) in &routes {
        let text = good.to_string();
        let at = text
            .find("\"approve\"")
            .or_else(|| text.find("\"db.query\""));
        let at = at.expect("a string to spoil") + 1;
        for spoil in [&b"\xff"[..], b"\xc0\xaf", b"\xed\xa0\x80", b"\\ud800"] {
            let mut body = text.as_bytes()[..at].to_vec();
            body.extend_from_slice(spoil);
            body.extend_from_slice(&text.as_bytes()[at..]);
            let r = raw(&h, route, *token, json_ct, body).await;
            assert_problem(&r, 400, &format!("{route} with {spoil:?} in a string"));
        }
    }

    // Not declared as JSON: 415 (openapi.yaml), whatever the body.
    for (route, token, good) in &routes {
        let body = good.to_string();
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("text/json"),
            Some("application/jsonx"),
            Some("application/merge-patch+json"),
            Some(""),
            None,
        ] {
            let r = raw(&h, route, *token, ct, body.clone()).await;
            assert_problem(&r, 415, &format!("{route} as {ct:?}"));
        }
    }

    assert_unchanged(&before, &state(&h, &f).await, "hostile bodies");
    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "pending", "{got}");
    assert_eq!(got["votes"], json!([]), "{got}");
    assert!(
        !h.log.lines().iter().any(|l| l.contains("status=5")),
        "a 5xx in the host log:\n{}",
        h.log.text()
    );
    // Still serving, and the grant is unspent: it verifies once, now.
    h.get("/v1/keys").await.expect(200);
    let r = raw(&h, "/v1/grants/verify", None, json_ct, verify.to_string()).await;
    assert_eq!(r.expect(200).json()["valid"], true);
}

// ---------------------------------------------------------------------------------------------
// 5. Broken configuration: refuse to decide (fail closed) and say why

/// Asserts a 503 problem (fail closed); returns the problem.
#[track_caller]
fn assert_unavailable(r: &Resp, what: &str) -> Value {
    assert_eq!(r.status.as_u16(), 503, "{what}: {}", r.text());
    let p = assert_problem_class(r, 5, what);
    assert_eq!(p["code"], "unavailable", "{what}: {p}");
    p
}

/// Asserts that deciding is refused with a 503 naming `file` and `why`, and that nothing was
/// stored or handed out.
async fn assert_refuses_to_decide(h: &Host, f: &Fixture, file: &str, why: &str) {
    let audit = f.audit_export(h).await;
    for (route, body) in [
        ("/v1/actions", query_body()),
        (
            "/v1/actions",
            export_body("broken", Some(f.callback_url("etl-bot", "b"))),
        ),
        ("/v1/check", query_body()),
    ] {
        let r = h.post_as(route, f.token("etl-bot"), &body).await;
        let what = format!("{route} {} with a broken {file}", body["action"]);
        let p = assert_unavailable(&r, &what);
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(file),
            "{what}: the detail does not name {file}: {p}"
        );
        assert!(
            detail.contains(why),
            "{what}: the detail does not say {why:?}: {p}"
        );
        assert!(!r.text().contains("grant\""), "{what}: {}", r.text());
    }
    assert_eq!(
        audit,
        f.audit_export(h).await,
        "a broken {file} changed the audit"
    );
}

#[tokio::test]
async fn broken_policy_refuses_to_decide() {
    let f = Fixture::new(Options::default()).await;
    // A Cedar syntax error (a missing comma) from the start.
    let broken = POLICY.replace(
        r#"action == Action::"db.query", resource"#,
        r#"action == Action::"db.query" resource"#,
    );
    assert_ne!(broken, POLICY);
    f.dir.write("config/policy.cedar", &broken);
    let h = f.start().await;
    assert_refuses_to_decide(&h, &f, "/config/policy.cedar", "policy unavailable").await;
    let p = h
        .post_as("/v1/check", f.token("etl-bot"), &query_body())
        .await
        .json();
    // The reason is Cedar's own message on the parse error.
    assert!(
        p["detail"].as_str().is_some_and(
            |d| d.to_lowercase().contains("unexpected") || d.to_lowercase().contains("parse")
        ),
        "the detail does not say why: {p}"
    );
    // Routes that do not decide keep working.
    h.get("/v1/keys").await.expect(200);
    h.get_as("/v1/audit/head", &f.admin_token).await.expect(200);
    h.get_as("/v1/reviews", f.token("bob")).await.expect(200);
    assert!(f
        .audit_records(&h)
        .await
        .iter()
        .all(|r| r["request_id"].is_null()));

    // A valid file, then a policy that needs a group the directory does not have.
    f.dir.write("config/policy.cedar", POLICY);
    let id = f.pending(&h, "etl-bot", &export_body("kept", None)).await;
    let unknown_group = POLICY.replace(r#"@approval("dba")"#, r#"@approval("no-such-group")"#);
    f.dir.write("config/policy.cedar", &unknown_group);
    let before = state(&h, &f).await;
    assert_refuses_to_decide(&h, &f, "/config/policy.cedar", "no-such-group").await;
    assert_unchanged(
        &before,
        &state(&h, &f).await,
        "policy with an unknown group",
    );
    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "pending", "{got}");

    // Fixed: deciding works again.
    f.dir.write("config/policy.cedar", POLICY);
    assert_routine_allowed(&h, &f).await;
}

#[tokio::test]
async fn policy_changed_after_start_is_the_one_applied() {
    // The policy component is pre-initialised with the files it was started with: a file
    // changed later must be read and applied, never the parsed copy of the old one.
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let agent = f.token("etl-bot");
    assert_routine_allowed(&h, &f).await;
    let forbid = format!(
        "{POLICY}\n@id(\"no-queries\")\nforbid (principal, action == Action::\"db.query\", resource);\n"
    );
    f.dir.write("config/policy.cedar", &forbid);
    let r = h.post_as("/v1/actions", agent, &query_body()).await;
    let v = r.expect(403).json();
    assert_eq!(v["status"], "denied", "{v}");
    assert!(
        v.to_string().contains("no-queries"),
        "the new policy is named: {v}"
    );
    // Back to the packaged file: allowed again.
    f.dir.write("config/policy.cedar", POLICY);
    assert_routine_allowed(&h, &f).await;
}

#[tokio::test]
async fn broken_directory_refuses_to_decide() {
    let f = Fixture::new(Options::default()).await;
    let path = f.dir.path().join("config/directory.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    // Bad TOML from the start.
    f.dir
        .write("config/directory.toml", &format!("{good}\n[groups\n"));
    let h = f.start().await;
    let file = "/config/directory.toml";
    let broken = [
        ("bad TOML", format!("{good}\n[groups\n")),
        (
            "an unknown group member",
            good.replace(r#"dba = ["olivia""#, r#"dba = ["nobody", "olivia""#),
        ),
        (
            "a malformed token hash",
            good.replacen("token_sha256 = [\"", "token_sha256 = [\"zz", 1),
        ),
        (
            "an unknown key",
            good.replacen("[[agent]]\n", "[[agent]]\nadmin = true\n", 1),
        ),
    ];
    // Refused from the first request on.
    let r = h
        .post_as("/v1/actions", f.token("etl-bot"), &query_body())
        .await;
    assert_unavailable(&r, "/v1/actions with a directory broken from the start");
    assert!(f.audit_export(&h).await.is_empty(), "something was audited");

    // A request pending under a valid directory, which the broken ones must leave alone.
    f.dir.write("config/directory.toml", &good);
    let id = f.pending(&h, "etl-bot", &export_body("kept", None)).await;
    for (name, text) in &broken {
        assert_ne!(text, &good, "{name}: the directory layout changed");
        f.dir.write("config/directory.toml", text);
        let audit = f.audit_export(&h).await;
        // The routes of the decision component, which need the directory to authenticate,
        // fail closed too: nothing counted, nothing shown (a 500 without the reason).
        for r in [
            f.decide(&h, &id, "bob", &json!({"decision": "approve"}))
                .await,
            h.get_as(&format!("/v1/actions/{id}"), f.token("etl-bot"))
                .await,
            h.get_as("/v1/reviews", f.token("bob")).await,
        ] {
            assert_eq!(r.status.as_u16(), 500, "{name}: {}", r.text());
            let p = assert_problem_class(&r, 5, name);
            assert_eq!(p["code"], "configuration", "{name}: {p}");
        }
        for route in ["/v1/actions", "/v1/check"] {
            let r = h.post_as(route, f.token("etl-bot"), &query_body()).await;
            let what = format!("{route} with {name} in the directory");
            let p = assert_unavailable(&r, &what);
            assert!(
                p["detail"].as_str().is_some_and(|d| d.contains(file)),
                "{what}: the detail does not name {file}: {p}"
            );
            // Why is in the server log, not told to an unauthenticated caller.
            assert!(!r.text().contains("token_sha256"), "{what}: {p}");
        }
        let logged = h
            .log
            .wait_for(Duration::from_secs(5), |l| {
                l.contains("countersign intake") && l.contains(file)
            })
            .await;
        assert!(
            logged.is_some(),
            "{name}: the log does not say why:\n{}",
            h.log.text()
        );
        // Routes that need no directory keep working.
        h.get("/v1/keys").await.expect(200);
        h.get_as("/v1/audit/head", &f.admin_token).await.expect(200);
        assert_eq!(audit, f.audit_export(&h).await, "{name}: the audit changed");
    }
    // Each reason is logged.
    let log = h.log.text();
    for why in [
        "is not an approver",
        "is not 64 hex characters",
        "unknown field",
    ] {
        assert!(log.contains(why), "the log does not say {why:?}:\n{log}");
    }

    // Fixed: the request is as it was, and deciding works again.
    f.dir.write("config/directory.toml", &good);
    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "pending", "{got}");
    assert_eq!(got["votes"], json!([]), "{got}");
    assert_routine_allowed(&h, &f).await;
}
