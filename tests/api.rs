//! The approval core end to end (issue 3, "Must show"): `countersign up` runs as a separate
//! process serving the real spin.toml (intake, policy, decision, audit) with a test directory
//! and policy; agents and approvers talk to it over real HTTP, and local stand-ins receive the
//! agent callbacks and the review webhook. Every test has its own host, state and secrets.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use shared::audit::{verify_export, Head, VerifyOptions};
use shared::crypto::Jwks;
use shared::grant::GrantClaims;
use shared::model::Resource;
use shared::Timestamp;
use support::app::*;
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn export_body(dataset: &str) -> Value {
    json!({
        "action": "db.export",
        "resource": {"type": "Dataset", "id": dataset, "attributes": {"classification": "pii"}},
        "context": {"env": "prod", "rows": 120000},
        "impact": "Exports 120k customer rows",
        "justification": "Quarterly report"
    })
}

/// The items of a `GET /v1/reviews` answer (`{"reviews": [...]}`).
fn review_items(v: &Value) -> Vec<Value> {
    v.get("reviews")
        .unwrap_or(v)
        .as_array()
        .unwrap_or_else(|| panic!("reviews are a list: {v}"))
        .clone()
}

async fn reviews_of(h: &Host, f: &Fixture, who: &str, query: &str) -> Vec<Value> {
    let v = h
        .get_as(&format!("/v1/reviews{query}"), f.token(who))
        .await
        .expect(200)
        .json();
    review_items(&v)
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_string())
        .collect()
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn query_body() -> Value {
    json!({"action": "db.query", "resource": {"type": "Table", "id": "orders"},
           "context": {"env": "prod"}})
}

fn escalation_body(role: &str) -> Value {
    json!({"action": "iam.grant_role",
           "resource": {"type": "Role", "id": role},
           "on_behalf_of": "user:olivia",
           "context": {"grantee": "user:someone"},
           "justification": "needs write access"})
}

async fn submit(h: &Host, f: &Fixture, agent: &str, body: &Value) -> Resp {
    h.post_as("/v1/actions", f.token(agent), body).await
}

/// Submits a request that must be pending; returns its id.
async fn pending(h: &Host, f: &Fixture, body: &Value) -> String {
    let r = submit(h, f, "etl-bot", body).await.expect(202);
    let v = r.json();
    assert_eq!(v["status"], "pending", "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    assert_eq!(
        r.headers.get("location").and_then(|l| l.to_str().ok()),
        Some(format!("/v1/actions/{id}").as_str()),
        "Location of a pending request"
    );
    id
}

async fn decide(h: &Host, f: &Fixture, id: &str, who: &str, decision: &str) -> Resp {
    h.post_as(
        &format!("/v1/actions/{id}/decision"),
        f.token(who),
        &json!({"decision": decision, "reason": format!("{who} says {decision}")}),
    )
    .await
}

async fn view(h: &Host, f: &Fixture, id: &str) -> Value {
    h.get_as(&format!("/v1/actions/{id}"), f.token("etl-bot"))
        .await
        .expect(200)
        .json()
}

async fn jwks(h: &Host) -> String {
    let r = h.get("/v1/keys").await.expect(200);
    r.text()
}

/// Verifies a grant with jsonwebtoken (an independent JWT library) against `GET /v1/keys`.
async fn verify_grant_offline(h: &Host, f: &Fixture, grant: &str) -> GrantClaims {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks(h).await).expect("JWKS");
    let header = jsonwebtoken::decode_header(grant).expect("a JWS header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.expect("a kid");
    // kid = first 16 hex chars of SHA-256 of the public key (DESIGN.md).
    let expected_kid = &shared::canon::sha256_hex(&f.signing_key.public_key_bytes())[..16];
    assert_eq!(kid, expected_kid);
    let jwk = set.find(&kid).expect("the grant's kid is in /v1/keys");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_issuer(&["countersign"]);
    v.validate_nbf = true;
    v.leeway = 0;
    jsonwebtoken::decode::<GrantClaims>(
        grant,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("an Ed25519 JWK"),
        &v,
    )
    .expect("the grant verifies against /v1/keys")
    .claims
}

fn digest_of(body: &Value) -> String {
    let resource: Resource = serde_json::from_value(body["resource"].clone()).unwrap();
    let context = body["context"].as_object().cloned().unwrap_or_default();
    shared::model::digest(
        body["action"].as_str().unwrap(),
        &resource,
        &context,
        body["on_behalf_of"].as_str(),
    )
    .unwrap()
}

fn verify_body(grant: &str, body: &Value) -> Value {
    let mut v = json!({"grant": grant, "action": body["action"], "resource": body["resource"],
                       "consume": true});
    if let Some(c) = body.get("context") {
        v["context"] = c.clone();
    }
    if let Some(o) = body.get("on_behalf_of") {
        v["on_behalf_of"] = o.clone();
    }
    v
}

async fn verify_grant(h: &Host, body: &Value) -> Resp {
    h.call(Method::POST, "/v1/grants/verify", None, Some(body))
        .await
}

async fn sweep(h: &Host, f: &Fixture) {
    let r = h
        .call(Method::POST, "/v1/sweep", Some(&f.admin_token), None)
        .await;
    assert!(
        r.status.is_success(),
        "POST /v1/sweep: {} {}",
        r.status,
        r.text()
    );
}

fn records(export: &str) -> Vec<Value> {
    export
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

fn count(records: &[Value], type_: &str, request_id: &str) -> usize {
    records
        .iter()
        .filter(|r| r["type"] == type_ && r["request_id"] == request_id)
        .count()
}

/// The export verifies with the shared verifier against `/v1/keys`.
async fn assert_trail_intact(h: &Host, export: &str) {
    let keys = Jwks::parse(&jwks(h).await).unwrap().ed25519_keys();
    let report = verify_export(export, &keys, VerifyOptions::default());
    assert!(report.ok(), "audit trail broken: {:?}", report.broken);
}

/// Waits until the callback of `id` arrives; checks its signature.
async fn callback_of(f: &Fixture, id: &str) -> Value {
    let id2 = id.to_string();
    let r = f
        .callbacks
        .wait_for(Duration::from_secs(15), move |r| {
            serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["id"] == id2.as_str())
        })
        .await
        .unwrap_or_else(|| panic!("no callback for {id}: got {:?}", f.callbacks.hits()));
    assert_eq!(r.method, Method::POST);
    assert!(
        r.uri.starts_with("/hooks/etl-bot/"),
        "callback went to {}",
        r.uri
    );
    f.assert_signed(&r, "etl-bot");
    let v = r.json();
    assert_eq!(v["type"], "action.decided", "{v}");
    v
}

async fn sleep_until_past(ts: &str) {
    let t = Timestamp::parse_rfc3339(ts).expect("an RFC 3339 timestamp");
    loop {
        let now = Timestamp::now();
        if now.unix() > t.unix() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POSTs `len` bytes of JSON whitespace with a Content-Length over a raw socket; the answer's
/// head and body as text.
async fn raw_post_len(port: u16, path: &str, token: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        if s.write_all(&chunk[..chunk.len().min(len - sent)])
            .await
            .is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "no answer within 30 s");
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Outcomes

#[tokio::test]
async fn routine_action_gets_a_grant_that_verifies_against_the_jwks() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let body = query_body();
    let v = submit(&h, &f, "etl-bot", &body).await.expect(200).json();
    assert_eq!(v["status"], "allowed", "{v}");
    assert_eq!(v["policies"], json!(["routine"]));
    let id = v["id"].as_str().unwrap();
    let grant = v["grant"].as_str().expect("a grant");

    // JWKS: OKP / Ed25519.
    let set: Value = serde_json::from_str(&jwks(&h).await).unwrap();
    let key = &set["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );

    let c = verify_grant_offline(&h, &f, grant).await;
    assert_eq!(c.iss, "countersign");
    assert_eq!(c.sub, "etl-bot");
    assert_eq!(c.rid, id);
    assert_eq!(c.act, "db.query");
    assert_eq!(
        (c.res.type_.as_str(), c.res.id.as_str()),
        ("Table", "orders")
    );
    assert_eq!(c.dig, digest_of(&body));
    assert!(c.apr.is_empty(), "routine: no approvers");
    assert_eq!(c.pol, vec!["routine".to_string()]);
    assert_eq!(c.phash.len(), 64);
    assert_eq!(c.exp - c.iat, 300, "default grant lifetime");

    let got = view(&h, &f, id).await;
    assert_eq!(got["status"], "allowed");
    assert_eq!(got["digest"], c.dig);
    assert_eq!(got["grant"], grant);

    let r = verify_grant(&h, &verify_body(grant, &body))
        .await
        .expect(200)
        .json();
    assert_eq!(r["valid"], true);
    assert_eq!(r["claims"]["jti"], c.jti);
}

#[tokio::test]
async fn forbidden_action_is_denied() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let body = json!({"action": "audit.delete", "resource": {"type": "AuditLog", "id": "main"}});
    let r = submit(&h, &f, "etl-bot", &body).await.expect(403);
    let v = r.json();
    assert_eq!(v["status"], "denied", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no-audit-delete")),
        "{v}"
    );
    assert!(
        v["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("no-audit-delete")),
        "{v}"
    );
    assert!(v.get("grant").is_none_or(Value::is_null));
    let id = v["id"].as_str().unwrap();
    assert_eq!(view(&h, &f, id).await["status"], "denied");

    // No permit at all: denied too (fail closed).
    let body = json!({"action": "db.truncate", "resource": {"type": "Table", "id": "orders"}});
    let v = submit(&h, &f, "etl-bot", &body).await.expect(403).json();
    assert_eq!(v["status"], "denied", "{v}");
}

#[tokio::test]
async fn check_is_a_dry_run() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let t = f.token("etl-bot");
    let v = h
        .post_as("/v1/check", t, &query_body())
        .await
        .expect(200)
        .json();
    assert_eq!(v["outcome"], "allow", "{v}");
    let forbidden = json!({"action": "audit.delete", "resource": {"type": "AuditLog", "id": "x"}});
    let v = h
        .post_as("/v1/check", t, &forbidden)
        .await
        .expect(200)
        .json();
    assert_eq!(v["outcome"], "deny", "{v}");
    let v = h
        .post_as("/v1/check", t, &export_body("c"))
        .await
        .expect(200)
        .json();
    assert_eq!(v["outcome"], "approval", "{v}");
    assert_eq!(v["requirements"], json!([{"group": "dba", "quorum": 1}]));
    assert_eq!(v["policies"], json!(["pii-export"]));
    // Nothing was stored: nobody has anything to review.
    let reviews = reviews_of(&h, &f, "bob", "").await;
    assert!(reviews.is_empty(), "a check created a request: {reviews:?}");
    assert!(f.reviews.received().is_empty());
}

#[tokio::test]
async fn sensitive_action_approved_through_the_api() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let body = with(
        export_body("customers"),
        "callback_url",
        json!(f.callback_url("etl-bot", "export")),
    );
    let r = submit(&h, &f, "etl-bot", &body).await.expect(202);
    let v = r.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["requirements"], json!([{"group": "dba", "quorum": 1}]));
    assert_eq!(v["policies"], json!(["pii-export"]));
    assert!(Timestamp::parse_rfc3339(v["expires_at"].as_str().unwrap()).is_ok());

    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "pending");
    assert!(got.get("grant").is_none_or(Value::is_null));
    assert_eq!(got["digest"], digest_of(&body));
    for field in [
        "action",
        "resource",
        "agent",
        "context",
        "impact",
        "justification",
        "requirements",
        "votes",
        "created_at",
        "expires_at",
    ] {
        assert!(got.get(field).is_some(), "view lacks {field}: {got}");
    }

    let d = decide(&h, &f, &id, "bob", "approve")
        .await
        .expect(200)
        .json();
    assert_eq!(d["status"], "approved", "{d}");

    let cb = callback_of(&f, &id).await;
    assert_eq!(cb["status"], "approved");
    assert!(cb["decided_at"].is_string(), "{cb}");
    assert_eq!(cb["votes"][0]["approver"], "bob", "{cb}");
    assert_eq!(cb["votes"][0]["decision"], "approve", "{cb}");
    let grant = cb["grant"]
        .as_str()
        .expect("the callback carries the grant")
        .to_string();

    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["grant"], grant.as_str());
    assert_eq!(got["votes"][0]["channel"], "api", "{got}");

    let c = verify_grant_offline(&h, &f, &grant).await;
    assert_eq!(c.apr, vec!["bob".to_string()]);
    assert_eq!(c.pol, vec!["pii-export".to_string()]);
    assert_eq!(c.rid, id);
    assert_eq!(c.exp - c.iat, 300, "@grant_ttl(\"5m\")");

    // Another action, resource or context: 422, and the grant is not spent by it.
    let other = with(body.clone(), "action", json!("db.query"));
    let r = verify_grant(&h, &verify_body(&grant, &other)).await;
    assert_problem(&r, 422, "grant for another action");
    let other = with(
        body.clone(),
        "resource",
        json!({"type": "Dataset", "id": "others",
        "attributes": {"classification": "pii"}}),
    );
    assert_problem(
        &verify_grant(&h, &verify_body(&grant, &other)).await,
        422,
        "other resource",
    );
    let other = with(
        body.clone(),
        "context",
        json!({"env": "prod", "rows": 999999}),
    );
    assert_problem(
        &verify_grant(&h, &verify_body(&grant, &other)).await,
        422,
        "other context",
    );

    // Once: valid. Twice: 409.
    let ok = verify_grant(&h, &verify_body(&grant, &body))
        .await
        .expect(200)
        .json();
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["claims"]["rid"], id.as_str());
    let again = verify_grant(&h, &verify_body(&grant, &body)).await;
    assert_problem(&again, 409, "a grant used twice");

    // A decided request never changes.
    assert_problem(
        &decide(&h, &f, &id, "carol", "deny").await,
        409,
        "vote after approval",
    );
    assert_eq!(view(&h, &f, &id).await["status"], "approved");

    // A forged grant: 401.
    let mut forged = grant.clone();
    forged.pop();
    forged.push(if grant.ends_with('A') { 'B' } else { 'A' });
    assert_problem(
        &verify_grant(&h, &verify_body(&forged, &body)).await,
        401,
        "forged grant",
    );
}

#[tokio::test]
async fn grant_is_refused_after_it_expires() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let body = json!({"action": "db.restore", "resource": {"type": "Database", "id": "main"}});
    let id = pending(&h, &f, &body).await;
    decide(&h, &f, &id, "carol", "approve").await.expect(200);
    let got = view(&h, &f, &id).await;
    let grant = got["grant"]
        .as_str()
        .expect("grant for the agent")
        .to_string();
    let claims: GrantClaims = shared::jws::decode(&grant).unwrap().claims().unwrap();
    assert_eq!(claims.exp - claims.iat, 3);
    loop {
        if Timestamp::now().unix() > claims.exp {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = verify_grant(&h, &verify_body(&grant, &body)).await;
    assert_problem(&r, 401, "expired grant");
}

// ---------------------------------------------------------------------------------------------
// Rules of approval

#[tokio::test]
async fn self_approval_is_refused_for_the_owner_and_on_behalf_of() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    // olivia owns etl-bot (and is a DBA).
    let id = pending(&h, &f, &export_body("a")).await;
    assert_problem(
        &decide(&h, &f, &id, "olivia", "approve").await,
        403,
        "owner approves",
    );
    // The owner cannot deny either: she is not an eligible reviewer of it.
    assert_problem(
        &decide(&h, &f, &id, "olivia", "deny").await,
        403,
        "owner denies",
    );
    assert_eq!(view(&h, &f, &id).await["status"], "pending");
    let olivia = ids(&reviews_of(&h, &f, "olivia", "").await);
    assert!(
        !olivia.contains(&id),
        "owner sees her agent's request: {olivia:?}"
    );

    // bob is the human the agent acts for.
    let body = with(export_body("b"), "on_behalf_of", json!("user:bob"));
    let id2 = pending(&h, &f, &body).await;
    assert_problem(
        &decide(&h, &f, &id2, "bob", "approve").await,
        403,
        "on_behalf_of approves",
    );
    let bob = ids(&reviews_of(&h, &f, "bob", "").await);
    assert!(
        !bob.contains(&id2),
        "on_behalf_of sees the request: {bob:?}"
    );
    assert!(bob.contains(&id), "bob may review the other one: {bob:?}");
    let d = decide(&h, &f, &id2, "carol", "approve")
        .await
        .expect(200)
        .json();
    assert_eq!(d["status"], "approved");
    let votes = view(&h, &f, &id2).await["votes"].clone();
    assert_eq!(
        votes.as_array().unwrap().len(),
        1,
        "refused votes are not counted: {votes}"
    );

    // The agent's own token is no approver token (401 or 403, never counted).
    let r = h
        .post_as(
            &format!("/v1/actions/{id}/decision"),
            f.token("etl-bot"),
            &json!({"decision": "approve"}),
        )
        .await;
    let p = assert_problem_shape(&r, "agent approves its own request");
    assert!(matches!(p["status"].as_u64(), Some(401 | 403)), "{p}");
    assert_eq!(view(&h, &f, &id).await["votes"], json!([]));
}

#[tokio::test]
async fn non_member_is_refused() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let id = pending(&h, &f, &export_body("c")).await;
    assert_problem(
        &decide(&h, &f, &id, "dan", "approve").await,
        403,
        "dan is in no group",
    );
    assert_problem(
        &decide(&h, &f, &id, "erin", "approve").await,
        403,
        "erin is not a DBA",
    );
    assert_problem(
        &decide(&h, &f, &id, "dan", "deny").await,
        403,
        "dan cannot deny",
    );
    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(got["votes"], json!([]));
    assert!(reviews_of(&h, &f, "dan", "").await.is_empty());
}

#[tokio::test]
async fn quorum_of_two_counts_distinct_people() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let id = pending(&h, &f, &escalation_body("db-writer")).await;
    let d = decide(&h, &f, &id, "erin", "approve")
        .await
        .expect(200)
        .json();
    assert_eq!(d["status"], "pending", "one of two: {d}");
    // The same person again does not count twice.
    let again = decide(&h, &f, &id, "erin", "approve").await;
    assert_problem(&again, 409, "second vote of one person");
    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(got["votes"].as_array().unwrap().len(), 1, "{got}");
    let d = decide(&h, &f, &id, "frank", "approve")
        .await
        .expect(200)
        .json();
    assert_eq!(d["status"], "approved", "{d}");
    let grant = view(&h, &f, &id).await["grant"]
        .as_str()
        .unwrap()
        .to_string();
    let c = verify_grant_offline(&h, &f, &grant).await;
    let apr: BTreeSet<String> = c.apr.into_iter().collect();
    assert_eq!(
        apr,
        BTreeSet::from(["erin".to_string(), "frank".to_string()])
    );
}

#[tokio::test]
async fn one_deny_denies() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let body = with(
        escalation_body("db-admin"),
        "callback_url",
        json!(f.callback_url("etl-bot", "iam")),
    );
    let id = pending(&h, &f, &body).await;
    decide(&h, &f, &id, "frank", "approve").await.expect(200);
    let d = decide(&h, &f, &id, "erin", "deny").await.expect(200).json();
    assert_eq!(d["status"], "denied", "{d}");
    assert_problem(
        &decide(&h, &f, &id, "bob", "approve").await,
        409,
        "vote after a deny",
    );
    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "denied");
    assert!(got.get("grant").is_none_or(Value::is_null), "{got}");
    let cb = callback_of(&f, &id).await;
    assert_eq!(cb["status"], "denied");
    assert!(cb.get("grant").is_none_or(Value::is_null), "{cb}");
    assert!(cb["reason"].is_string(), "{cb}");
}

#[tokio::test]
async fn overdue_request_is_expired_before_and_after_the_sweep() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let body = json!({"action": "db.drop", "resource": {"type": "Table", "id": "tmp"},
                      "callback_url": f.callback_url("etl-bot", "drop")});
    let r = submit(&h, &f, "etl-bot", &body).await.expect(202).json();
    let id = r["id"].as_str().unwrap().to_string();
    sleep_until_past(r["expires_at"].as_str().unwrap()).await;

    // Before any sweep: expired, and no vote changes that.
    assert_eq!(view(&h, &f, &id).await["status"], "expired");
    assert_problem(
        &decide(&h, &f, &id, "bob", "approve").await,
        409,
        "vote after expiry",
    );
    let bob = ids(&reviews_of(&h, &f, "bob", "").await);
    assert!(!bob.contains(&id), "an expired request is offered: {bob:?}");
    assert_eq!(view(&h, &f, &id).await["status"], "expired");

    // The sweep needs the admin token.
    let r = h.call(Method::POST, "/v1/sweep", None, None).await;
    assert_problem(&r, 401, "sweep without a token");
    let r = h
        .call(Method::POST, "/v1/sweep", Some(f.token("bob")), None)
        .await;
    assert_problem(&r, 401, "sweep with an approver token");
    sweep(&h, &f).await;
    let got = view(&h, &f, &id).await;
    assert_eq!(got["status"], "expired");
    assert!(got["decided_at"].is_string(), "{got}");

    let cb = callback_of(&f, &id).await;
    assert_eq!(cb["status"], "expired");
    assert!(cb.get("grant").is_none_or(Value::is_null));
    // Exactly one callback, however many sweeps run.
    sweep(&h, &f).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.callbacks_for(&id).len(), 1, "{:?}", f.callbacks.hits());
}

#[tokio::test]
async fn failed_callback_is_retried_by_the_sweep_with_the_same_event() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    f.callbacks.set_status(503);
    let body = with(
        export_body("retry"),
        "callback_url",
        json!(f.callback_url("etl-bot", "retry")),
    );
    let id = pending(&h, &f, &body).await;
    decide(&h, &f, &id, "carol", "approve").await.expect(200);
    let first = callback_of(&f, &id).await;
    assert_eq!(first["status"], "approved");
    // Within the backoff a sweep does not retry.
    sweep(&h, &f).await;
    assert_eq!(f.callbacks_for(&id).len(), 1);
    f.callbacks.set_status(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while f.callbacks_for(&id).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not retry the callback: {:?}",
            f.callbacks.hits()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        sweep(&h, &f).await;
    }
    let got = f.callbacks_for(&id);
    assert_eq!(got.len(), 2);
    f.assert_signed(&got[1], "etl-bot");
    assert_eq!(
        got[0].header("countersign-event-id"),
        got[1].header("countersign-event-id"),
        "a retry carries the same event id"
    );
    assert_eq!(
        got[0].json(),
        got[1].json(),
        "a retry carries the same body"
    );
    // Delivered: no more attempts.
    sweep(&h, &f).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.callbacks_for(&id).len(), 2);
    let recs = records(&f.audit_export(&h).await);
    assert!(count(&recs, "callback.failed", &id) >= 1);
    assert_eq!(count(&recs, "callback.delivered", &id), 1);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_answer() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let t = f.token("etl-bot");
    let post = |body: Value, key: &'static str| {
        let h = &h;
        async move {
            let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
            let auth = format!("Bearer {t}");
            h.request(
                Method::POST,
                "/v1/actions",
                bytes,
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
            )
            .await
        }
    };
    let first = post(export_body("idem"), "key-1").await.expect(202);
    let second = post(export_body("idem"), "key-1").await.expect(202);
    assert_eq!(
        first.json(),
        second.json(),
        "same key, same body: same answer"
    );
    assert_eq!(
        first.headers.get("location"),
        second.headers.get("location")
    );
    let id = first.json()["id"].as_str().unwrap().to_string();

    let other = post(export_body("something else"), "key-1").await;
    assert_problem(&other, 409, "same key, another body");

    // The key in the body works the same way.
    let body = with(query_body(), "idempotency_key", json!("key-2"));
    let a = submit(&h, &f, "etl-bot", &body).await.expect(200).json();
    let b = submit(&h, &f, "etl-bot", &body).await.expect(200).json();
    assert_eq!(a, b, "a routine answer (and its grant) is replayed");
    let changed = with(body.clone(), "context", json!({"env": "dev"}));
    assert_problem(
        &submit(&h, &f, "etl-bot", &changed).await,
        409,
        "body key, other body",
    );

    // Keys are per agent.
    let mine = post(export_body("idem"), "key-1").await.expect(202).json();
    assert_eq!(mine["id"], id.as_str());
    let other_auth = format!("Bearer {}", f.token("other-bot"));
    let r = h
        .request(
            Method::POST,
            "/v1/actions",
            Bytes::from(serde_json::to_vec(&export_body("idem")).unwrap()),
            &[
                ("authorization", other_auth.as_str()),
                ("content-type", "application/json"),
                ("idempotency-key", "key-1"),
            ],
        )
        .await
        .expect(202)
        .json();
    assert_ne!(r["id"], id.as_str(), "another agent's key is its own");
    // Only one request was made for the repeated key.
    let bob = reviews_of(&h, &f, "bob", "").await;
    let mine = bob.iter().filter(|v| v["agent"] == "etl-bot").count();
    assert_eq!(mine, 1, "{bob:?}");
}

// ---------------------------------------------------------------------------------------------
// Reviews and the review webhook (the API channel)

#[tokio::test]
async fn approver_lists_reviews_and_the_review_webhook_gets_each_signed() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let export = pending(&h, &f, &export_body("reviews")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct created_at
    let escalation = pending(&h, &f, &escalation_body("auditor")).await;
    submit(&h, &f, "etl-bot", &query_body()).await.expect(200);

    // bob is in dba and security: both, oldest first, each as GET /v1/actions/:id shows it.
    let bob = reviews_of(&h, &f, "bob", "").await;
    assert_eq!(ids(&bob), [export.as_str(), escalation.as_str()]);
    let first = &bob[0];
    assert_eq!(first["status"], "pending");
    assert_eq!(first["action"], "db.export");
    assert_eq!(first["agent"], "etl-bot");
    assert_eq!(first["digest"], digest_of(&export_body("reviews")));
    assert!(first.get("grant").is_none_or(Value::is_null));
    assert_eq!(
        ids(&reviews_of(&h, &f, "bob", "?limit=1").await),
        [export.as_str()]
    );
    assert_eq!(
        ids(&reviews_of(&h, &f, "carol", "").await),
        [export.as_str()]
    );
    assert_eq!(
        ids(&reviews_of(&h, &f, "erin", "").await),
        [escalation.as_str()]
    );

    // The review webhook received each new pending request once, signed with the "reviews"
    // secret; the routine one is not there.
    for id in [&export, &escalation] {
        let id2 = id.clone();
        let r = f
            .reviews
            .wait_for(Duration::from_secs(10), move |r| {
                serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["id"] == id2.as_str())
            })
            .await
            .unwrap_or_else(|| panic!("review webhook did not get {id}: {:?}", f.reviews.hits()));
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.uri, "/reviews");
        f.assert_signed(&r, shared::webhook::REVIEWS_ID);
        let body = r.json();
        assert_eq!(body["status"], "pending");
        assert_eq!(body["agent"], "etl-bot");
        // Not the agent's secret.
        let sig = r.header(shared::webhook::SIGNATURE_HEADER).unwrap();
        assert!(shared::webhook::verify(
            &f.webhook_secret("etl-bot"),
            sig,
            &r.body,
            Timestamp::now(),
            300
        )
        .is_err());
    }
    assert_eq!(f.reviews.received().len(), 2, "{:?}", f.reviews.hits());

    // After bob's vote the export is no longer his (nor carol's) to review.
    decide(&h, &f, &export, "bob", "approve").await.expect(200);
    assert_eq!(
        ids(&reviews_of(&h, &f, "bob", "").await),
        [escalation.as_str()]
    );
    assert!(reviews_of(&h, &f, "carol", "").await.is_empty());
    // A vote cast on a quorum-2 request: that person no longer sees it, the others do.
    decide(&h, &f, &escalation, "bob", "approve")
        .await
        .expect(200);
    assert!(reviews_of(&h, &f, "bob", "").await.is_empty());
    assert_eq!(
        ids(&reviews_of(&h, &f, "erin", "").await),
        [escalation.as_str()]
    );
}

// ---------------------------------------------------------------------------------------------
// Exactly once under concurrency

/// 1,000 votes at once on 100 quorum-2 requests (10 distinct people each), spread over
/// `hosts`: per request one decision, one grant, one callback.
async fn thousand_concurrent_votes(f: &Fixture, hosts: &[Arc<Host>]) {
    const REQUESTS: usize = 100;
    const VOTERS: usize = 10;
    let h0 = &hosts[0];
    let bodies: Vec<Value> = (0..REQUESTS)
        .map(|r| {
            json!({"action": "deploy.release", "resource": {"type": "Service", "id": format!("api-{r}")},
                   "callback_url": f.callback_url("etl-bot", &format!("release-{r}"))})
        })
        .collect();
    let ids = join_all(bodies.iter().map(|b| pending(h0, f, b))).await;
    let votes = ids.iter().enumerate().flat_map(|(r, id)| {
        (0..VOTERS).map(move |j| {
            let h = hosts[(r + j) % hosts.len()].clone();
            let token = f
                .token(&crowd_member(1 + (r * VOTERS + j) % 100))
                .to_string();
            let path = format!("/v1/actions/{id}/decision");
            async move {
                let r = h
                    .post_as(&path, &token, &json!({"decision": "approve"}))
                    .await;
                (r.status.as_u16(), r.text())
            }
        })
    });
    let answers = join_all(votes).await;
    assert_eq!(answers.len(), REQUESTS * VOTERS);
    for (status, text) in &answers {
        assert!(
            *status == 200 || *status == 409,
            "a concurrent vote answered {status}: {text}"
        );
    }

    let mut grants = Vec::new();
    for id in &ids {
        let got = view(h0, f, id).await;
        assert_eq!(got["status"], "approved", "{got}");
        let voters: BTreeSet<&str> = got["votes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["approver"].as_str().unwrap())
            .collect();
        assert!(voters.len() >= 2, "{got}");
        let grant = got["grant"].as_str().unwrap().to_string();
        for h in &hosts[1..] {
            assert_eq!(view(h, f, id).await["grant"], grant.as_str(), "one grant");
        }
        let cb = callback_of(f, id).await;
        assert_eq!(
            (&cb["status"], &cb["grant"]),
            (&json!("approved"), &json!(grant))
        );
        grants.push(grant);
    }
    // Let the sweeps of every host run: still one callback each.
    for h in hosts {
        sweep(h, f).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for h in hosts {
        sweep(h, f).await;
    }
    let export = f.audit_export(h0).await;
    let recs = records(&export);
    for id in &ids {
        assert_eq!(f.callbacks_for(id).len(), 1, "callbacks of {id}");
        assert_eq!(
            count(&recs, "action.approved", id),
            1,
            "one decision of {id}"
        );
        assert_eq!(count(&recs, "grant.issued", id), 1, "one grant of {id}");
        assert_eq!(
            count(&recs, "callback.delivered", id),
            1,
            "one callback of {id}"
        );
        assert!(count(&recs, "vote.cast", id) >= 2);
    }
    assert_trail_intact(h0, &export).await;

    // A grant is good once.
    let ok = verify_grant(h0, &verify_body(&grants[0], &bodies[0]))
        .await
        .expect(200)
        .json();
    assert_eq!(ok["valid"], true);
    let last = hosts.last().unwrap();
    assert_problem(
        &verify_grant(last, &verify_body(&grants[0], &bodies[0])).await,
        409,
        "second use",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_votes_on_a_hundred_requests_on_sqlite() {
    let f = Fixture::new(Options {
        crowd: 100,
        redis_db: None,
    })
    .await;
    let h = Arc::new(f.start().await);
    thousand_concurrent_votes(&f, &[h]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_votes_on_a_hundred_requests_on_redis_with_two_hosts() {
    let f = Fixture::new(Options {
        crowd: 100,
        redis_db: Some(11),
    })
    .await;
    let a = Arc::new(f.start().await);
    let b = Arc::new(f.start().await);
    thousand_concurrent_votes(&f, &[a, b]).await;
}

// ---------------------------------------------------------------------------------------------
// Audit trail

#[tokio::test]
async fn audit_export_verifies_and_tampering_is_located() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    // A little of everything.
    submit(&h, &f, "etl-bot", &query_body()).await.expect(200);
    let forbidden = json!({"action": "audit.delete", "resource": {"type": "AuditLog", "id": "m"}});
    submit(&h, &f, "etl-bot", &forbidden).await.expect(403);
    let body = with(
        export_body("audit"),
        "callback_url",
        json!(f.callback_url("etl-bot", "a")),
    );
    let id = pending(&h, &f, &body).await;
    assert_problem(
        &decide(&h, &f, &id, "dan", "approve").await,
        403,
        "non-member",
    );
    decide(&h, &f, &id, "bob", "approve").await.expect(200);
    callback_of(&f, &id).await;
    let grant = view(&h, &f, &id).await["grant"]
        .as_str()
        .unwrap()
        .to_string();
    verify_grant(&h, &verify_body(&grant, &body))
        .await
        .expect(200);

    let export = f.audit_export(&h).await;
    let recs = records(&export);
    assert!(recs.len() >= 8, "a short trail: {export}");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], (i + 1) as u64, "records in sequence");
    }
    let types: BTreeSet<&str> = recs.iter().filter_map(|r| r["type"].as_str()).collect();
    for t in [
        "action.allowed",
        "action.denied",
        "action.pending",
        "action.approved",
        "grant.issued",
        "grant.consumed",
        "vote.cast",
    ] {
        assert!(types.contains(t), "no {t} record in {types:?}");
    }
    assert_eq!(count(&recs, "action.approved", &id), 1);

    // The signed head matches the export's end.
    let head: Head = serde_json::from_slice(
        &h.get_as("/v1/audit/head", &f.admin_token)
            .await
            .expect(200)
            .body,
    )
    .unwrap();
    let keys = Jwks::parse(&jwks(&h).await).unwrap().ed25519_keys();
    head.verify(&keys).expect("the head is signed");
    // The trail may have grown since the export (callback records): the export is a prefix.
    assert!(head.seq >= recs.len() as u64);
    let export = f.audit_export(&h).await;
    let recs = records(&export);
    let last = recs.last().unwrap();
    if last["seq"] == head.seq {
        assert_eq!(last["hash"], head.hash.as_str());
    }

    // Paging.
    let page = h
        .get_as("/v1/audit?after=2&limit=2", &f.admin_token)
        .await
        .expect(200)
        .text();
    let seqs: Vec<u64> = page
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [3, 4]);

    // `countersign audit verify` against the JWKS, offline.
    let dir = TempDir::new("audit");
    let jwks_file = dir.write("jwks.json", &jwks(&h).await);
    let jwks_arg = jwks_file.to_string_lossy().into_owned();
    let verify = |name: &str, text: &str| {
        let file = dir.write(name, text);
        run_cli(
            &[
                "audit",
                "verify",
                &file.to_string_lossy(),
                "--jwks",
                &jwks_arg,
            ],
            dir.path(),
        )
    };
    let (ok, out) = verify("export.ndjson", &export);
    assert!(ok, "an intact export must verify:\n{out}");

    let lines: Vec<&str> = export.lines().collect();
    let join = |ls: &[String]| ls.join("\n") + "\n";
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();

    // Changed: record 3's actor.
    let mut changed = owned.clone();
    let mut r3: Value = serde_json::from_str(&changed[2]).unwrap();
    r3["actor"] = json!("mallory");
    changed[2] = serde_json::to_string(&r3).unwrap();
    let (ok, out) = verify("changed.ndjson", &join(&changed));
    assert!(!ok, "a changed record must fail:\n{out}");
    assert!(
        out.contains("line 3") && out.contains("seq 3"),
        "not located at record 3:\n{out}"
    );

    // Deleted: record 3 (record 4 now follows record 2).
    let mut deleted = owned.clone();
    deleted.remove(2);
    let (ok, out) = verify("deleted.ndjson", &join(&deleted));
    assert!(!ok, "a deleted record must fail:\n{out}");
    assert!(
        out.contains("line 3") && out.contains("seq 4"),
        "not located at the gap:\n{out}"
    );

    // Reordered: records 3 and 4 swapped.
    let mut reordered = owned.clone();
    reordered.swap(2, 3);
    let (ok, out) = verify("reordered.ndjson", &join(&reordered));
    assert!(!ok, "reordered records must fail:\n{out}");
    assert!(out.contains("line 3"), "not located at line 3:\n{out}");

    // A prefix of the trail (an export taken earlier) is consistent on its own.
    let (ok, out) = verify("head-cut.ndjson", &join(&owned[..owned.len() - 1]));
    assert!(ok, "a shorter prefix is still a consistent export:\n{out}");
}

#[tokio::test]
async fn audit_routes_need_the_admin_token_and_good_parameters() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    for path in ["/v1/audit", "/v1/audit/head"] {
        assert_problem(&h.get(path).await, 401, path);
        assert_problem(&h.get_as(path, f.token("etl-bot")).await, 401, path);
        assert_problem(&h.get_as(path, f.token("bob")).await, 401, path);
        assert_problem(&h.get_as(path, "not-the-admin-token").await, 401, path);
    }
    for q in [
        "after=-1",
        "after=x",
        "limit=0",
        "limit=abc",
        "limit=100001",
        "after=1.5",
    ] {
        let r = h.get_as(&format!("/v1/audit?{q}"), &f.admin_token).await;
        assert_problem(&r, 422, q);
    }
    let r = h.get_as("/v1/audit/nothing", &f.admin_token).await;
    assert_problem(&r, 404, "unknown audit path");
    let r = h
        .call(
            Method::POST,
            "/v1/audit",
            Some(&f.admin_token),
            Some(&json!({})),
        )
        .await;
    assert_problem(&r, 405, "POST /v1/audit");
    // The internal writer is unreachable from outside, whatever the path.
    for path in [
        "/internal/append",
        "/v1/audit/internal/append",
        "/v1/audit/../internal/append",
    ] {
        let r = h
            .call(
                Method::POST,
                path,
                Some(&f.admin_token),
                Some(&json!({"type": "action.forged", "actor": "mallory"})),
            )
            .await;
        assert_problem_shape(&r, path);
    }
    let export = f.audit_export(&h).await;
    assert!(
        !export.contains("action.forged"),
        "a forged record got in:\n{export}"
    );
    // Failed admin logins are on the trail.
    assert!(
        export.contains("auth.failed"),
        "no auth.failed record:\n{export}"
    );
    assert_trail_intact(&h, &export).await;
}

// ---------------------------------------------------------------------------------------------
// Problem details: every malformed, oversized, unauthenticated or unauthorized request

#[tokio::test]
async fn bad_requests_get_problem_details() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let agent = f.token("etl-bot");
    let id = pending(&h, &f, &export_body("problems")).await;
    let other = submit(&h, &f, "other-bot", &export_body("theirs"))
        .await
        .expect(202)
        .json();
    let other_id = other["id"].as_str().unwrap().to_string();

    let raw = |method: Method, path: &str, token: Option<&str>, ct: Option<&str>, body: Vec<u8>| {
        let h = &h;
        let path = path.to_string();
        let token = token.map(|t| format!("Bearer {t}"));
        let ct = ct.map(str::to_string);
        async move {
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if let Some(t) = &token {
                headers.push(("authorization", t.as_str()));
            }
            if let Some(c) = &ct {
                headers.push(("content-type", c.as_str()));
            }
            h.request(method, &path, Bytes::from(body), &headers).await
        }
    };
    let json_ct = Some("application/json");
    let decision_path = format!("/v1/actions/{id}/decision");
    let view_path = format!("/v1/actions/{id}");

    // Unauthenticated: 401 on every route that needs a token.
    for (m, p) in [
        (Method::POST, "/v1/actions"),
        (Method::POST, "/v1/check"),
        (Method::GET, "/v1/reviews"),
        (Method::POST, "/v1/sweep"),
        (Method::GET, "/v1/audit"),
        (Method::GET, "/v1/audit/head"),
        (Method::GET, view_path.as_str()),
        (Method::POST, decision_path.as_str()),
    ] {
        let body = serde_json::to_vec(&export_body("x")).unwrap();
        let what = format!("{m} {p} without a token");
        assert_problem(
            &raw(m.clone(), p, None, json_ct, body.clone()).await,
            401,
            &what,
        );
        let what = format!("{m} {p} with an unknown token");
        assert_problem(
            &raw(m.clone(), p, Some("nope"), json_ct, body.clone()).await,
            401,
            &what,
        );
        let what = format!("{m} {p} with a malformed Authorization");
        let r = h
            .request(
                m.clone(),
                p,
                Bytes::from(body),
                &[
                    ("authorization", "Basic Zm9vOmJhcg=="),
                    ("content-type", "application/json"),
                ],
            )
            .await;
        assert_problem(&r, 401, &what);
    }
    // The wrong kind of token: 401 (no token of that kind) or 403 (a known principal that
    // may not use this route); both are within the contract.
    let wrong_kind = |r: &Resp, what: &str| {
        let p = assert_problem_shape(r, what);
        assert!(
            matches!(p["status"].as_u64(), Some(401 | 403)),
            "{what}: {p}"
        );
    };
    let body = serde_json::to_vec(&export_body("x")).unwrap();
    wrong_kind(
        &raw(
            Method::POST,
            "/v1/actions",
            Some(f.token("bob")),
            json_ct,
            body.clone(),
        )
        .await,
        "approver token on /v1/actions",
    );
    wrong_kind(
        &raw(Method::GET, "/v1/reviews", Some(agent), None, vec![]).await,
        "agent token on /v1/reviews",
    );
    let vote = serde_json::to_vec(&json!({"decision": "approve"})).unwrap();
    wrong_kind(
        &raw(
            Method::POST,
            &decision_path,
            Some(&f.admin_token),
            json_ct,
            vote.clone(),
        )
        .await,
        "admin token on a decision",
    );
    wrong_kind(
        &raw(
            Method::POST,
            &decision_path,
            Some(agent),
            json_ct,
            vote.clone(),
        )
        .await,
        "agent token on a decision",
    );

    // Unauthorized: 403 (not eligible) or hidden (another agent's request).
    assert_problem(
        &raw(
            Method::POST,
            &decision_path,
            Some(f.token("dan")),
            json_ct,
            vote.clone(),
        )
        .await,
        403,
        "non-member votes",
    );
    let r = h.get_as(&format!("/v1/actions/{other_id}"), agent).await;
    let p = assert_problem_shape(&r, "another agent's request");
    assert!(matches!(p["status"].as_u64(), Some(403 | 404)), "{p}");

    // Malformed JSON: 400; a JSON value of the wrong shape: 422 naming the field.
    for p in ["/v1/actions", "/v1/check"] {
        for bad in [
            &b"{"[..],
            b"not json",
            b"{\"action\": \"db.query\",}",
            b"\xff\xfe",
        ] {
            let r = raw(Method::POST, p, Some(agent), json_ct, bad.to_vec()).await;
            assert_problem(
                &r,
                400,
                &format!("{p} with {:?}", String::from_utf8_lossy(bad)),
            );
        }
        for (body, field) in [
            (json!([]), None),
            (json!("db.query"), None),
            (
                json!({"resource": {"type": "Table", "id": "t"}}),
                Some("action"),
            ),
            (json!({"action": "db.query"}), Some("resource")),
            (
                json!({"action": "db query!", "resource": {"type": "Table", "id": "t"}}),
                Some("action"),
            ),
            (
                json!({"action": "x".repeat(129), "resource": {"type": "Table", "id": "t"}}),
                Some("action"),
            ),
            (
                json!({"action": 7, "resource": {"type": "Table", "id": "t"}}),
                Some("action"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "no such type", "id": "t"}}),
                Some("resource.type"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "Table", "id": ""}}),
                Some("resource.id"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "Table", "id": "t"}, "context": {"ratio": 0.5}}),
                Some("context.ratio"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "Table", "id": "t"}, "context": []}),
                Some("context"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "Table", "id": "t", "attributes": {"n": null}}}),
                Some("resource.attributes.n"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "Table", "id": "t"}, "on_behalf_of": 5}),
                Some("on_behalf_of"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "Table", "id": "t"},
                    "callback_url": "https://evil.example/hooks/etl-bot/x"}),
                Some("callback_url"),
            ),
            (
                json!({"action": "db.query", "resource": {"type": "Table", "id": "t"},
                    "callback_url": f.callback_url("other-bot", "x")}),
                Some("callback_url"),
            ),
        ] {
            let r = raw(
                Method::POST,
                p,
                Some(agent),
                json_ct,
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
            let pb = assert_problem(&r, 422, &format!("{p} with {body}"));
            if let Some(field) = field {
                let named = pb["field"].as_str() == Some(field)
                    || pb["detail"].as_str().is_some_and(|d| d.contains(field));
                assert!(
                    named,
                    "{p} with {body}: the problem does not name {field}: {pb}"
                );
            }
        }
        // Not declared as JSON.
        let r = raw(
            Method::POST,
            p,
            Some(agent),
            Some("text/plain"),
            serde_json::to_vec(&query_body()).unwrap(),
        )
        .await;
        assert_problem_shape(&r, &format!("{p} as text/plain"));
    }

    // Oversized (> 64 KiB), on every route with a body, and far beyond the host's limit too.
    let mut big = export_body("big");
    big["justification"] = json!("x".repeat(65 * 1024));
    let big = serde_json::to_vec(&big).unwrap();
    for (p, token) in [
        ("/v1/actions", agent),
        ("/v1/check", agent),
        (decision_path.as_str(), f.token("bob")),
        ("/v1/grants/verify", agent),
    ] {
        let r = raw(Method::POST, p, Some(token), json_ct, big.clone()).await;
        assert_problem(&r, 413, &format!("{p} with 65 KiB"));
    }
    // 2 MiB: refused by the host before the body is read (over a raw socket: the host closes
    // the connection while a client may still be writing).
    let answer = raw_post_len(h.port, "/v1/actions", agent, 2 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "2 MiB: {answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );

    // Decisions.
    for (body, status) in [
        (json!({"decision": "maybe"}), 422),
        (json!({"decision": 1}), 422),
        (json!({}), 422),
        (json!({"decision": "approve", "reason": 5}), 422),
        (
            json!({"decision": "approve", "reason": "r".repeat(70_000)}),
            413,
        ),
    ] {
        let r = raw(
            Method::POST,
            &decision_path,
            Some(f.token("bob")),
            json_ct,
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_problem(
            &r,
            status,
            &format!(
                "decision {}",
                &body.to_string()[..40.min(body.to_string().len())]
            ),
        );
    }
    let r = raw(
        Method::POST,
        &decision_path,
        Some(f.token("bob")),
        json_ct,
        b"{".to_vec(),
    )
    .await;
    assert_problem(&r, 400, "decision with malformed JSON");
    for missing in [
        "/v1/actions/req_doesnotexist",
        "/v1/actions/nope",
        "/v1/actions/%00",
    ] {
        assert_problem(&h.get_as(missing, agent).await, 404, missing);
        let r = raw(
            Method::POST,
            &format!("{missing}/decision"),
            Some(f.token("bob")),
            json_ct,
            vote.clone(),
        )
        .await;
        assert_problem(&r, 404, &format!("vote on {missing}"));
    }
    for q in ["wait=x", "wait=-1"] {
        let r = h.get_as(&format!("/v1/actions/{id}?{q}"), agent).await;
        assert_problem(&r, 422, q);
    }
    for q in ["limit=x", "limit=-1"] {
        let r = h.get_as(&format!("/v1/reviews?{q}"), f.token("bob")).await;
        assert_problem(&r, 422, q);
    }

    // Grants.
    for (body, status) in [
        (json!({}), 422),
        (
            json!({"grant": "abc", "action": "db.query", "resource": {"type": "Table", "id": "t"}}),
            401,
        ),
        (
            json!({"grant": "a.b.c", "action": "db.query", "resource": {"type": "Table", "id": "t"}}),
            401,
        ),
        (
            json!({"grant": 5, "action": "db.query", "resource": {"type": "Table", "id": "t"}}),
            422,
        ),
        (json!({"grant": "a.b.c", "action": "db.query"}), 422),
    ] {
        let r = raw(
            Method::POST,
            "/v1/grants/verify",
            None,
            json_ct,
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_problem(&r, status, &format!("grants/verify {body}"));
    }
    let r = raw(
        Method::POST,
        "/v1/grants/verify",
        None,
        json_ct,
        b"[1,".to_vec(),
    )
    .await;
    assert_problem(&r, 400, "grants/verify malformed");

    // Unknown paths and methods.
    for (m, p, status) in [
        (Method::GET, "/v1/nothing", 404),
        (Method::GET, "/v1/grants/nothing", 404),
        (Method::GET, "/v1/actions/a/b/c", 404),
        (Method::DELETE, "/v1/actions", 405),
        (Method::GET, "/v1/actions", 405),
        (Method::GET, "/v1/check", 405),
        (Method::PUT, "/v1/keys", 405),
        (Method::GET, "/v1/sweep", 405),
        (Method::GET, "/v1/grants/verify", 405),
        (Method::POST, "/v1/reviews", 405),
        (Method::DELETE, view_path.as_str(), 405),
        (Method::GET, decision_path.as_str(), 405),
    ] {
        let r = raw(m.clone(), p, Some(agent), None, vec![]).await;
        assert_problem(&r, status, &format!("{m} {p}"));
    }

    // None of the above changed the pending request.
    assert_eq!(view(&h, &f, &id).await["status"], "pending");
}

/// A spray of odd requests at every public route: all answered, none with a 5xx, every 4xx
/// as problem details.
#[tokio::test]
async fn no_request_gets_a_5xx() {
    let f = Fixture::new(Options::default()).await;
    let h = f.start().await;
    let id = pending(&h, &f, &export_body("spray")).await;
    let paths = [
        "/v1/actions".to_string(),
        "/v1/check".to_string(),
        format!("/v1/actions/{id}"),
        format!("/v1/actions/{id}/decision"),
        format!("/v1/actions/{id}?wait=0"),
        "/v1/reviews".to_string(),
        "/v1/grants/verify".to_string(),
        "/v1/keys".to_string(),
        "/v1/sweep".to_string(),
        "/v1/audit".to_string(),
        "/v1/audit/head".to_string(),
        "/v1/actions/".to_string(),
        "/v1/actions//decision".to_string(),
        "/v1/actions/%2e%2e/decision".to_string(),
        "/v1/audit?after=99999999999999999999999".to_string(),
        "/v1/reviews?limit=99999999999999999999".to_string(),
    ];
    let bodies: Vec<(Option<&str>, Vec<u8>)> = vec![
        (None, vec![]),
        (Some("application/json"), vec![]),
        (Some("application/json"), b"null".to_vec()),
        (Some("application/json"), b"{}".to_vec()),
        (Some("application/json"), b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
        (Some("application/json"), "[".repeat(10_000).into_bytes()),
        (Some("application/json"), format!("{{\"action\":\"db.query\",\"resource\":{{\"type\":\"Table\",\"id\":\"t\"}},\"context\":{}}}",
            "{\"a\":".repeat(200) + "1" + &"}".repeat(200)).into_bytes()),
        (Some("application/json"), br#"{"action":"db.query","resource":{"type":"Table","id":"t"},"context":{"n":1e400}}"#.to_vec()),
        (Some("application/json"), br#"{"action":"db.query","resource":{"type":"Table","id":"t"},"context":{"n":18446744073709551616}}"#.to_vec()),
        (Some("application/json"), br#"{"action":"db.query","action":"db.export","resource":{"type":"Table","id":"t"}}"#.to_vec()),
        (Some("application/json"), br#"{"decision":"approve","grant":"x","action":"db.query","resource":{"type":"Table","id":"t"}}"#.to_vec()),
        (Some("application/json"), "\u{feff}{}".as_bytes().to_vec()),
        (Some("application/json; charset=latin1"), b"{\"a\":\"\xe9\"}".to_vec()),
        (Some("application/x-www-form-urlencoded"), b"decision=approve".to_vec()),
    ];
    let tokens = [
        None,
        Some(f.token("etl-bot").to_string()),
        Some(f.token("bob").to_string()),
        Some(f.admin_token.clone()),
        Some("x".repeat(5000)),
    ];
    let mut n = 0;
    for p in &paths {
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            for (ct, body) in &bodies {
                for t in &tokens {
                    // Bodies only matter for POST; the other methods get one of each token.
                    if m != Method::POST && !body.is_empty() {
                        continue;
                    }
                    let auth = t.as_ref().map(|t| format!("Bearer {t}"));
                    let mut headers: Vec<(&str, &str)> = Vec::new();
                    if let Some(a) = &auth {
                        headers.push(("authorization", a.as_str()));
                    }
                    if let Some(c) = ct {
                        headers.push(("content-type", c));
                    }
                    let r = h
                        .request(m.clone(), p, Bytes::from(body.clone()), &headers)
                        .await;
                    n += 1;
                    let what = format!("{m} {p} ({} bytes, token {})", body.len(), t.is_some());
                    let s = r.status.as_u16();
                    assert!(s < 500, "{what}: {s} {}", r.text());
                    if s >= 400 {
                        assert_problem_shape(&r, &what);
                    }
                }
            }
        }
    }
    assert!(n > 500, "{n} requests");
    // The host logged no 5xx either.
    assert!(
        !h.log.lines().iter().any(|l| l.contains("status=5")),
        "a 5xx in the host log:\n{}",
        h.log.text()
    );
}
