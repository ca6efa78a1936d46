//! The operator commands, run as the built `countersign` binary.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use shared::audit::{AuditEvent, AuditLog, AuditRecord};
use shared::crypto::SigningKey;
use shared::store::MemoryKv;
use shared::Timestamp;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn countersign(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_countersign"));
    c.args(args)
        .current_dir(workspace())
        .env_remove("SPIN_VARIABLE_WEBHOOK_KEY")
        .env_remove("COUNTERSIGN_ADMIN_TOKEN");
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("countersign runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} line in {out}"))
        .trim()
}

#[test]
fn keys_generate_prints_a_loadable_key() {
    let (code, out, _) = run(&mut countersign(&["keys", "generate"]));
    assert_eq!(code, 0);
    let key = SigningKey::from_base64_seed(field(&out, "signing_key")).unwrap();
    assert_eq!(field(&out, "kid"), key.kid());
    let jwks = shared::crypto::Jwks::parse(field(&out, "jwks")).unwrap();
    assert_eq!(jwks, key.jwks());
    assert!(out.contains("export SPIN_VARIABLE_SIGNING_KEY="));
}

#[test]
fn token_new_prints_a_token_and_its_hash() {
    let (code, out, _) = run(&mut countersign(&["token", "new"]));
    assert_eq!(code, 0);
    let token = field(&out, "token");
    assert!(token.len() >= 43, "32 random bytes at least: {token}");
    assert_eq!(
        field(&out, "token_sha256"),
        shared::canon::sha256_hex(token.as_bytes())
    );
}

#[test]
fn webhook_secret_matches_shared() {
    for id in ["etl-bot", "reviews"] {
        let (code, out, _) = run(countersign(&["agent", "webhook-secret", id])
            .env("SPIN_VARIABLE_WEBHOOK_KEY", "dev-webhook-key"));
        assert_eq!(code, 0);
        assert_eq!(
            out.trim(),
            shared::webhook::webhook_secret("dev-webhook-key", id)
        );
    }
    let (code, out, err) = run(&mut countersign(&["agent", "webhook-secret", "etl-bot"]));
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("SPIN_VARIABLE_WEBHOOK_KEY"), "{err}");
}

/// A signed chain of `n` records, written to `dir`, with the JWKS and the signed head.
fn export(dir: &Path, n: usize) -> (Vec<String>, PathBuf, PathBuf, String) {
    let kv = MemoryKv::new();
    let log = AuditLog::new(&kv);
    let key = SigningKey::generate().unwrap();
    for i in 0..n {
        let ev = AuditEvent::new("vote.cast", Some("req_x"), "bob", json!({ "i": i }));
        log.append(&ev, Timestamp(1_800_000_000 + i as i64), &key)
            .unwrap();
    }
    let lines: Vec<String> = log
        .read(0, 100)
        .unwrap()
        .iter()
        .map(AuditRecord::to_line)
        .collect();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, key.jwks().to_json()).unwrap();
    let head = dir.join("head.json");
    let h = log.head(Timestamp(1_800_000_100), &key).unwrap();
    std::fs::write(&head, serde_json::to_string(&h).unwrap()).unwrap();
    (lines, jwks, head, key.jwks().to_json())
}

fn write_lines(path: &Path, lines: &[String]) -> String {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn audit_verify_names_the_first_broken_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (lines, jwks, head, _) = export(tmp.path(), 5);
    let jwks = jwks.to_str().unwrap();
    let good = write_lines(&tmp.path().join("good.ndjson"), &lines);
    let (code, out, _) = run(&mut countersign(&[
        "audit", "verify", &good, "--jwks", jwks,
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("OK: 5 records verified (seq 1 to 5)"),
        "{out}"
    );

    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"i\":2", "\"i\":20");
    let bad = write_lines(&tmp.path().join("edited.ndjson"), &edited);
    let (code, out, _) = run(&mut countersign(&["audit", "verify", &bad, "--jwks", jwks]));
    assert_eq!(code, 1);
    assert!(
        out.starts_with("BROKEN: line 3 (seq 3, vote.cast): edited"),
        "{out}"
    );

    // The last line cut off: only the signed head tells.
    let cut = write_lines(&tmp.path().join("cut.ndjson"), &lines[..4]);
    let head = head.to_str().unwrap();
    let (code, out, _) = run(&mut countersign(&[
        "audit", "verify", &cut, "--jwks", jwks, "--head", head,
    ]));
    assert_eq!(code, 1);
    assert!(
        out.starts_with("BROKEN: line 5 (seq 5): truncated"),
        "{out}"
    );

    let (code, _, err) = run(&mut countersign(&[
        "audit",
        "verify",
        &good,
        "--jwks",
        tmp.path().join("absent.json").to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("absent.json"), "{err}");
}

/// Serves `body` at every path over HTTP/1.1 and records the request heads.
fn serve(body: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            log.lock().unwrap().push(head);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn audit_verify_fetches_the_jwks_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (lines, _, _, jwks_text) = export(tmp.path(), 3);
    let file = write_lines(&tmp.path().join("a.ndjson"), &lines);
    let (url, seen) = serve(jwks_text);
    let keys_url = format!("{url}/v1/keys");
    let (code, out, err) = run(
        countersign(&["audit", "verify", &file, "--jwks", &keys_url])
            .env("COUNTERSIGN_ADMIN_TOKEN", "admin-secret"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: 3 records verified"), "{out}");
    let heads = seen.lock().unwrap().clone();
    assert!(heads[0].starts_with("GET /v1/keys HTTP/1.1"), "{heads:?}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("authorization"),
        "the admin token goes only to --head"
    );
}

fn policy_check(agent: &str, body: Value) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let req = tmp.path().join("request.json");
    std::fs::write(&req, body.to_string()).unwrap();
    let (code, out, err) = run(&mut countersign(&[
        "policy",
        "check",
        req.to_str().unwrap(),
        "--agent",
        agent,
    ]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn policy_check_on_the_example_config() {
    let v = policy_check(
        "etl-bot",
        json!({"action": "db.query", "resource": {"type": "Dataset", "id": "orders"}}),
    );
    assert_eq!(v["outcome"], "allow");
    assert_eq!(v["policy_hash"].as_str().unwrap().len(), 64);
    let v = policy_check(
        "etl-bot",
        json!({"action": "db.export", "resource": {"type": "Dataset", "id": "customers",
               "attributes": {"classification": "pii"}}, "on_behalf_of": "user:alice"}),
    );
    assert_eq!(v["outcome"], "approval");
    assert_eq!(v["requirements"], json!([{"group": "dba", "quorum": 1}]));
    let v = policy_check(
        "deploy-bot",
        json!({"action": "iam.grant_role", "resource": {"type": "Role", "id": "db-writer"},
               "context": {"grantee": "user:erin"}}),
    );
    assert_eq!(
        v["requirements"],
        json!([{"group": "security", "quorum": 2}])
    );
    let v = policy_check(
        "deploy-bot",
        json!({"action": "infra.deploy", "resource": {"type": "Service", "id": "api"},
               "context": {"env": "prod"}}),
    );
    assert_eq!(v["requirements"], json!([{"group": "sre", "quorum": 1}]));
    let v = policy_check(
        "etl-bot",
        json!({"action": "iam.grant_role", "resource": {"type": "Role", "id": "admin"},
               "on_behalf_of": "user:alice", "context": {"grantee": "user:alice"}}),
    );
    assert_eq!(
        (&v["outcome"], &v["policies"]),
        (&json!("deny"), &json!(["no-self-admin"]))
    );
    let v = policy_check(
        "etl-bot",
        json!({"action": "audit.delete", "resource": {"type": "AuditLog", "id": "main"}}),
    );
    assert_eq!(
        (&v["outcome"], &v["policies"]),
        (&json!("deny"), &json!(["no-audit-delete"]))
    );
}

#[test]
fn policy_check_refuses_broken_input() {
    let tmp = tempfile::tempdir().unwrap();
    let req = tmp.path().join("request.json");
    std::fs::write(&req, r#"{"action": "db.query"}"#).unwrap();
    let (code, out, err) = run(&mut countersign(&[
        "policy",
        "check",
        req.to_str().unwrap(),
        "--agent",
        "etl-bot",
    ]));
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("invalid request") && err.contains("resource"),
        "{err}"
    );
    let policy = tmp.path().join("policy.cedar");
    std::fs::write(&policy, "permit(principal, action, resource);").unwrap();
    let (code, _, err) = run(&mut countersign(&[
        "policy",
        "check",
        req.to_str().unwrap(),
        "--agent",
        "etl-bot",
        "--policy",
        policy.to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("@id"), "{err}");
}
