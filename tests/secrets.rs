//! No secret ever shows (issue 7): `countersign up` serves the real spin.toml with every channel
//! configured (Slack against its stand-in, Teams against Microsoft's stand-in), the test drives
//! it through its happy paths and, above all, the failure paths most likely to echo a secret
//! (wrong and garbled tokens, bad signatures, failing outbound calls, malformed bodies), then
//! searches everything that left the host for every secret of the deployment: its log, the
//! audit export, every answer (headers and body) the test got, and every request the stand-ins
//! got. The stand-ins do not record the places where a secret is sent on purpose (the
//! `Authorization` headers to Slack and the connector, the client secret of the token request).

#[path = "support/slack.rs"]
mod fake_slack;
#[path = "support/teams.rs"]
mod fake_teams;
mod support;

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use fake_slack::FakeSlack;
use fake_teams::{Endpoint, FakeTeams, Fault, TENANT};
use serde_json::{json, Value};
use shared::Timestamp;
use support::app::*;
use support::*;

const LONG: Duration = Duration::from_secs(15);
/// bob's AAD object id in [`TENANT`].
const BOB_AAD: &str = "5d1c3f0e-8a2b-4c7d-9e61-0b2f4a7c9d13";
/// Someone of the tenant who is in no directory.
const STRANGER_AAD: &str = "e3a81c6f-0d95-4b27-9f4c-7b2e6a0d1c58";
/// The shortest secret text searched for: a leak of fewer characters is not told apart from
/// chance.
const MIN_NEEDLE: usize = 13;

/// A secret and the texts that would betray it.
struct Secret {
    name: String,
    needles: Vec<(&'static str, String)>,
}

/// `value` with the first `public` characters not secret (a `xoxb-` or `admin-` prefix, a
/// JWT's header and claims): searched whole, as its shortest prefix longer than 12 characters
/// holding 8 secret ones, and as the first 13 characters of its secret part.
fn secret(name: impl Into<String>, value: &str, public: usize) -> Secret {
    let mut needles = vec![("whole", value.to_string())];
    let prefix = MIN_NEEDLE.max(public + 8);
    if value.len() > prefix {
        needles.push(("prefix", value[..prefix].to_string()));
    }
    if value.len() >= public + MIN_NEEDLE && public > 0 {
        needles.push((
            "secret part",
            value[public..public + MIN_NEEDLE].to_string(),
        ));
    }
    Secret {
        name: name.into(),
        needles,
    }
}

/// A JWT: its signature is the secret part.
fn jwt_secret(name: impl Into<String>, jwt: &str) -> Secret {
    let public = jwt.rfind('.').map_or(0, |i| i + 1);
    secret(name, jwt, public)
}

/// Everything the test got from the host (a rendering of each answer, headers and body), and
/// the Bot Framework tokens it sent.
struct Seen<'a> {
    h: &'a Host,
    answers: Mutex<Vec<(String, String)>>,
    jwts: Mutex<Vec<String>>,
}

impl<'a> Seen<'a> {
    fn new(h: &'a Host) -> Self {
        Seen {
            h,
            answers: Mutex::default(),
            jwts: Mutex::default(),
        }
    }

    fn keep(&self, what: String, r: &Resp) {
        let mut text = format!("{}\n", r.status);
        for (k, v) in &r.headers {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        text.push_str(&r.text());
        self.answers.lock().unwrap().push((what, text));
    }

    /// The answers kept and the host's log, each named after `host`.
    fn kept(&self, host: &str) -> Vec<(String, String)> {
        let answers = self.answers.lock().unwrap();
        let mut out: Vec<(String, String)> = answers
            .iter()
            .enumerate()
            .map(|(i, (what, text))| (format!("answer #{i} of the {host} to {what}"), text.clone()))
            .collect();
        out.push((format!("the log of the {host}"), self.h.log.text()));
        out
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let r = self
            .h
            .request(method.clone(), path, body.into(), headers)
            .await;
        self.keep(format!("{method} {path}"), &r);
        r
    }

    /// A signed (or, with `secret` not Slack's, badly signed) Slack click.
    async fn slack_click(&self, secret: &str, body: &str) -> Resp {
        let (ts, sig) = fake_slack::sign(secret, Timestamp::now().unix(), body);
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-slack-request-timestamp", ts.as_str()),
            ("x-slack-signature", sig.as_str()),
        ];
        self.request(
            Method::POST,
            "/v1/slack/interactions",
            body.to_string(),
            &headers,
        )
        .await
    }

    /// Keeps `token` as a secret when it is a JWT.
    fn sent(&self, token: &str) {
        if token.matches('.').count() == 2 {
            self.jwts.lock().unwrap().push(token.to_string());
        }
    }

    /// Sends `activity` to the Teams bot with `Authorization: Bearer <jwt>`.
    async fn teams_activity(&self, jwt: Option<&str>, activity: &Value) -> Resp {
        jwt.inspect(|t| self.sent(t));
        self.call(Method::POST, "/v1/teams/messages", jwt, Some(activity))
            .await
    }
}

impl Api for Seen<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let r = self.h.call(method.clone(), path, token, body).await;
        self.keep(format!("{method} {path}"), &r);
        r
    }
}

/// `token` with its last character changed.
fn garbled(token: &str) -> String {
    garbled_at(token, token.len() - 1)
}

/// `token` with its ASCII character at `at` changed.
fn garbled_at(token: &str, at: usize) -> String {
    let mut t = token.as_bytes().to_vec();
    t[at] = if t[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(t).expect("an ASCII token")
}

/// An Action.Execute click on request `id`'s card (activity `card`).
fn execute(teams: &FakeTeams, card: &str, id: &str, aad: &str, decision: &str) -> Value {
    let action = json!({"type": "Action.Execute", "verb": decision,
                        "data": {"id": id, "decision": decision}});
    let value = json!({"action": action, "trigger": "manual"});
    teams.activity("invoke", card, TENANT, aad, value)
}

/// The activity id of the Teams card posted for request `id` (waits for it, with sweeps).
async fn teams_card(f: &Fixture, s: &Seen<'_>, teams: &FakeTeams, id: &str) -> String {
    let card = f
        .sweep_until(s.h, Duration::from_secs(40), || {
            teams
                .calls_to("/activities")
                .into_iter()
                .find(|c| c.method == "POST" && c.status == 201 && c.body.to_string().contains(id))
        })
        .await
        .unwrap_or_else(|| panic!("no Teams card for {id}: {:?}", teams.calls()));
    card.activity_id.expect("the id of the posted activity")
}

/// Every secret of the deployment, and of the test's exchanges with it.
fn secrets(f: &Fixture, s: &Seen<'_>, teams: &FakeTeams) -> Vec<Secret> {
    let seed = f.signing_key.to_base64_seed();
    let raw = shared::canon::b64_std_decode(&seed).expect("a base64 seed");
    let mut out = vec![
        secret("signing key (base64 seed)", &seed, 0),
        secret("signing key (hex)", &hex::encode(&raw), 0),
        secret("signing key (base64url)", &shared::canon::b64url(&raw), 0),
        secret("webhook key", &f.webhook_key, "whk-".len()),
        secret("admin token", &f.admin_token, "admin-".len()),
        secret("Slack bot token", fake_slack::BOT_TOKEN, "xoxb-".len()),
        secret("Slack signing secret", fake_slack::SIGNING_SECRET, 0),
        secret("Teams app password", fake_teams::APP_PASSWORD, 0),
    ];
    let crowd: Vec<String> = (1..=Options::default().crowd).map(crowd_member).collect();
    let people = PEOPLE.iter().map(|p| p.to_string()).chain(crowd);
    for who in AGENTS.iter().map(|(a, _)| a.to_string()).chain(people) {
        let token = f.token(&who);
        let public = token.rfind('-').map_or(0, |i| i + 1);
        out.push(secret(format!("token of {who}"), token, public));
    }
    for id in ["etl-bot", "other-bot", "reviews"] {
        out.push(secret(
            format!("webhook secret of {id}"),
            &f.webhook_secret(id),
            0,
        ));
    }
    for (i, t) in teams.issued_tokens().iter().enumerate() {
        out.push(jwt_secret(format!("Teams access token #{i}"), t));
    }
    for (i, t) in s.jwts.lock().unwrap().iter().enumerate() {
        out.push(jwt_secret(format!("Bot Framework token #{i}"), t));
    }
    out
}

/// Where the secrets must not show: (place, text).
async fn places(
    f: &Fixture,
    s: &Seen<'_>,
    slack: &FakeSlack,
    teams: &FakeTeams,
) -> Vec<(String, String)> {
    let mut out = vec![("the audit export".to_string(), f.audit_export(s.h).await)];
    for c in slack.calls() {
        out.push((
            format!("Slack stand-in call {}", c.path),
            c.body.to_string(),
        ));
    }
    for c in teams.calls() {
        let what = format!("Teams stand-in call {} {}", c.method, c.path);
        out.push((what, format!("{}\n{}", c.path, c.body)));
    }
    for (name, stand_in) in [("callback", &f.callbacks), ("review webhook", &f.reviews)] {
        for r in stand_in.received() {
            let mut text = format!("{} {}\n", r.method, r.uri);
            for (k, v) in &r.headers {
                text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            text.push_str(&String::from_utf8_lossy(&r.body));
            out.push((format!("{name} stand-in request {}", r.uri), text));
        }
    }
    out
}

/// Waits until the audit trail holds `n` records of `type_` about `job` with a non-empty
/// `data.error`.
async fn audited_errors(f: &Fixture, h: &Host, type_: &str, job: &str, n: usize) {
    let found = eventually(LONG, || async {
        let records = f.audit_records(h).await;
        let with_error = records.iter().filter(|r| {
            r["type"] == type_
                && r["data"]["job"] == job
                && r["data"]["error"].as_str().is_some_and(|e| !e.is_empty())
        });
        (with_error.count() >= n).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "fewer than {n} {type_} of {job} with an error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_shows_in_logs_audit_data_answers_or_outbound_calls() {
    let f = Fixture::new(Options::default()).await;
    require_wasm("slack");
    require_wasm("teams");
    f.add_identities("slack", &[("bob", "\"T1/UBOB\"")]);
    f.add_identities("teams", &[("bob", format!("\"{TENANT}/{BOB_AAD}\""))]);
    let slack = FakeSlack::start().await;
    let teams = FakeTeams::start().await;
    // The first Teams card fails at the token endpoint, the next two at the connector (the
    // second as if the access token were refused); the first Slack card is rate-limited.
    teams.fail_next(Endpoint::Token, 1, Fault::Status(503));
    teams.fail_next(Endpoint::Connector, 1, Fault::Status(500));
    teams.fail_next(Endpoint::Connector, 1, Fault::Status(401));
    slack.rate_limit_next(1);
    // Every agent callback and the review webhook fail.
    f.callbacks.set_status(500);
    f.reviews.set_status(500);
    let h = teams.configure(slack.configure(f.host())).start().await;
    let s = Seen::new(&h);
    let (agent, other_agent) = (f.token("etl-bot"), f.token("other-bot"));
    let (bob, carol) = (f.token("bob"), f.token("carol"));
    let admin = f.admin_token.as_str();

    // Routine, forbidden and dry-run requests; a grant verified, then a garbled one.
    let routine = json!({"action": "db.query", "resource": {"type": "Table", "id": "t"}});
    let r = s.post_as("/v1/actions", agent, &routine).await.expect(200);
    let grant = r.json()["grant"].as_str().expect("a grant").to_string();
    let forbidden = json!({"action": "audit.delete", "resource": {"type": "AuditLog", "id": "m"}});
    s.post_as("/v1/actions", agent, &forbidden)
        .await
        .expect(403);
    s.post_as("/v1/check", agent, &export_body("dry", None))
        .await
        .expect(200);
    let mut verify = routine.clone();
    verify["grant"] = json!(grant);
    s.call(Method::POST, "/v1/grants/verify", None, Some(&verify))
        .await
        .expect(200);
    verify["grant"] = json!(garbled(&grant));
    s.call(Method::POST, "/v1/grants/verify", None, Some(&verify))
        .await;

    // Four requests for review, each with a callback (which fails); the posts of their cards
    // fail as set up above.
    let mut ids = Vec::new();
    for name in ["token-fault", "connector-fault", "api", "teams"] {
        let body = export_body(name, Some(f.callback_url("etl-bot", name)));
        let r = s.post_as("/v1/actions", agent, &body).await.expect(202);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let (first, second, by_api, by_teams) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    audited_errors(&f, &h, "review.failed", "review.teams", 2).await;
    audited_errors(&f, &h, "review.failed", "review.slack", 1).await;
    audited_errors(&f, &h, "review.failed", "review.api", 4).await;

    // Votes through the API: refused (self-approval, wrong people, garbled tokens), then
    // accepted; the callback of the decision fails.
    let path = format!("/v1/actions/{by_api}/decision");
    let approve = json!({"decision": "approve", "reason": "fine"});
    let deny = json!({"decision": "deny", "reason": "not now"});
    for token in [carol, agent, admin, &garbled(bob), &format!("{bob}x")] {
        let r = s.post_as(&path, token, &approve).await;
        assert_problem_shape(&r, "a vote with a wrong token");
    }
    let auth = format!("Bearer {bob}");
    s.request(
        Method::POST,
        &path,
        "{\"decision\": \"approve\", \"reason\": ",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
    )
    .await;
    s.post_as(&path, bob, &deny).await.expect(200);
    s.post_as(&path, bob, &approve).await;
    audited_errors(&f, &h, "callback.failed", "callback", 1).await;

    // Slack: a click with a bad signature, garbage with a good one, then a signed approval.
    let click = fake_slack::click_body("T1", "UBOB", "approve", first, &slack.response_url("a"));
    s.slack_click("not-the-signing-secret", &click)
        .await
        .expect(401);
    s.request(
        Method::POST,
        "/v1/slack/interactions",
        click.clone(),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
    .expect(401);
    s.slack_click(fake_slack::SIGNING_SECRET, "payload=%7Bnot-json")
        .await;
    let stranger = fake_slack::click_body("T1", "UNOBODY", "deny", first, &slack.response_url("b"));
    s.slack_click(fake_slack::SIGNING_SECRET, &stranger).await;
    s.slack_click(fake_slack::SIGNING_SECRET, &click)
        .await
        .expect(200);

    // Teams: bad tokens of every kind, a stranger's click, a malformed activity, then bob's
    // approval with a valid token.
    let card = teams_card(&f, &s, &teams, by_teams).await;
    let click = execute(&teams, &card, by_teams, BOB_AAD, "approve");
    let stray = teams.stray_key();
    let valid = teams.token().jwt();
    let bad_tokens = [
        None,
        Some("not-a-token".to_string()),
        Some(garbled_at(&valid, valid.rfind('.').unwrap() + 20)),
        Some(teams.token().signed_by(&stray).jwt()),
        Some(teams.token().expired().jwt()),
        Some(teams.token().claim("aud", json!("someone-else")).jwt()),
        Some(agent.to_string()),
    ];
    for jwt in bad_tokens {
        let r = s.teams_activity(jwt.as_deref(), &click).await;
        assert_problem_shape(&r, "a bad Bot Framework token");
    }
    let theirs = execute(&teams, &card, by_teams, STRANGER_AAD, "approve");
    s.teams_activity(Some(&teams.token().jwt()), &theirs).await;
    let jwt = teams.token().jwt();
    s.sent(&jwt);
    let auth = format!("Bearer {jwt}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let malformed = "{\"type\": \"invoke\", ";
    s.request(Method::POST, "/v1/teams/messages", malformed, &headers)
        .await;
    let r = s.teams_activity(Some(&valid), &click).await.expect(200);
    assert_eq!(r.json()["statusCode"], 200, "{}", r.text());

    // Wrong tokens on the admin routes, the admin token where an agent's goes, malformed bodies.
    for token in [
        garbled(admin),
        agent.to_string(),
        bob.to_string(),
        format!("{admin}x"),
    ] {
        let r = s.get_as("/v1/audit", &token).await;
        assert_problem_shape(&r, "GET /v1/audit with a wrong token");
        let r = s.call(Method::POST, "/v1/sweep", Some(&token), None).await;
        assert_problem_shape(&r, "POST /v1/sweep with a wrong token");
    }
    s.request(
        Method::GET,
        "/v1/audit/head",
        Bytes::new(),
        &[("authorization", &format!("Basic {admin}"))],
    )
    .await;
    for token in [admin, &garbled(agent), bob] {
        let r = s.post_as("/v1/actions", token, &routine).await;
        assert_problem_shape(&r, "POST /v1/actions with a wrong token");
    }
    s.get_as(&format!("/v1/actions/{first}"), other_agent).await;
    let r = s.get_as("/v1/reviews", &garbled(bob)).await;
    assert_problem_shape(&r, "GET /v1/reviews with a garbled token");
    for body in ["{\"action\": ", "[]", "\u{0}\u{1}", "{\"action\": 7}"] {
        let auth = format!("Bearer {agent}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        s.request(Method::POST, "/v1/actions", body, &headers).await;
    }

    // The right tokens: reads, a sweep (the failed callbacks are retried and fail again).
    s.get_as("/v1/reviews", bob).await.expect(200);
    s.get_as(&format!("/v1/actions/{second}"), agent)
        .await
        .expect(200);
    s.get_as("/v1/audit/head", admin).await.expect(200);
    s.request(Method::GET, "/v1/keys", Bytes::new(), &[]).await;
    s.call(Method::POST, "/v1/sweep", Some(admin), None)
        .await
        .expect(200);

    // The same deployment with its secrets slightly wrong: the errors they cause must not show
    // them either. A wrong signing key stops everything, so it goes alone.
    let base = || teams.configure(slack.configure(f.host()));
    let seed = f.signing_key.to_base64_seed();
    let wrong_key = base()
        .env("SPIN_VARIABLE_SIGNING_KEY", &garbled(&seed))
        .start()
        .await;
    let wrong_chat = base()
        .env(
            "SPIN_VARIABLE_SLACK_BOT_TOKEN",
            &garbled(fake_slack::BOT_TOKEN),
        )
        .env(
            "SPIN_VARIABLE_TEAMS_APP_PASSWORD",
            &garbled(fake_teams::APP_PASSWORD),
        )
        .start()
        .await;
    let (wrong_key, wrong_chat) = (Seen::new(&wrong_key), Seen::new(&wrong_chat));
    for (i, b) in [&wrong_key, &wrong_chat].into_iter().enumerate() {
        b.post_as("/v1/actions", agent, &routine).await;
        let name = format!("misconfigured-{i}");
        let body = export_body(&name, Some(f.callback_url("etl-bot", &name)));
        b.post_as("/v1/actions", agent, &body).await;
        b.get_as("/v1/audit", admin).await;
        b.get_as("/v1/audit/head", admin).await;
        b.request(Method::GET, "/v1/keys", Bytes::new(), &[]).await;
        b.call(Method::POST, "/v1/sweep", Some(admin), None).await;
    }
    teams
        .wait_for(LONG, |c| c.path.ends_with("/token") && c.status == 401)
        .await
        .expect("the token request with a wrong app password");
    slack
        .wait_for(LONG, |c| c.violation.as_deref() == Some("invalid_auth"))
        .await
        .expect("a Slack call with a wrong bot token");

    let secrets = secrets(&f, &s, &teams);
    assert!(
        secrets
            .iter()
            .any(|x| x.name.starts_with("Teams access token")),
        "the Teams stand-in issued no access token"
    );
    let mut places = places(&f, &s, &slack, &teams).await;
    // Last, once every line of the exchanges above is in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    places.extend(s.kept("host"));
    places.extend(wrong_key.kept("host with a wrong signing key"));
    places.extend(wrong_chat.kept("host with a wrong Slack token and Teams password"));
    let mut leaks = Vec::new();
    for secret in &secrets {
        for (kind, needle) in &secret.needles {
            for (place, text) in &places {
                if let Some(at) = text.find(needle.as_str()) {
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(80)
                        .map_or(0, |(i, _)| i);
                    let context: String = text[from..].chars().take(200).collect();
                    leaks.push(format!("{} ({kind}) in {place}: …{context}…", secret.name));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
