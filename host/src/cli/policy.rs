//! `countersign policy check <request.json>`: the policy component's evaluation, run locally.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use shared::directory::Directory;
use shared::model::{ActionRequest, Outcome, MAX_BODY_BYTES};
use shared::policy::PolicyEngine;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Evaluate a request body (as POST /v1/actions and /v1/check take it) against the policy
    /// and directory, and print what /v1/check would answer plus the policy hash. Exits 0
    /// whatever the outcome; 1 when the policy, directory or request is broken.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The request body (JSON); `-` reads standard input.
    request: PathBuf,
    /// The requesting agent's id (the one its token proves); may be left out when the
    /// directory has a single agent.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    #[arg(long, default_value = "config/policy.cedar")]
    policy: PathBuf,
    #[arg(long, default_value = "config/directory.toml")]
    directory: PathBuf,
}

pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    let PolicyCommand::Check(args) = command;
    let body = super::read_input(&args.request)?;
    let label = match args.request.to_str() {
        Some("-") => "on standard input".to_string(),
        _ => args.request.display().to_string(),
    };
    let answer = check(
        &body,
        &label,
        args.agent.as_deref(),
        &args.policy,
        &args.directory,
    )?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(ExitCode::SUCCESS)
}

/// Loads and checks what the policy component and intake load (so a broken deployment fails
/// here first), then evaluates `body` (named `label` in errors) for `agent`.
fn check(
    body: &str,
    label: &str,
    agent: Option<&str>,
    policy: &Path,
    directory: &Path,
) -> Result<Value> {
    let dir = Directory::load(directory)?;
    dir.validate_callback_prefixes()?;
    let engine = PolicyEngine::load(policy)?;
    engine.check_groups(&dir)?;
    let agent = match agent {
        Some(id) => dir.agent(id).ok_or_else(|| {
            anyhow!(
                "agent {id:?} is not in {} (agents: {})",
                directory.display(),
                agent_ids(&dir)
            )
        })?,
        None => match dir.agents() {
            [only] => only,
            _ => bail!(
                "name the requesting agent with --agent (agents: {})",
                agent_ids(&dir)
            ),
        },
    };
    if body.len() > MAX_BODY_BYTES {
        bail!("request {label} is larger than {MAX_BODY_BYTES} bytes (the API answers 413)");
    }
    let invalid = || format!("invalid request {label}");
    let req = ActionRequest::parse(body.as_bytes()).with_context(invalid)?;
    if let Some(url) = &req.callback_url {
        agent.check_callback_url(url).with_context(invalid)?;
    }
    let decision = engine.evaluate(agent, &req).with_context(invalid)?;
    let mut answer = decision.check_answer();
    let m = answer.as_object_mut().expect("check_answer is an object");
    m.insert("policy_hash".into(), decision.policy_hash.clone().into());
    if decision.outcome == Outcome::Approval {
        m.insert(
            "review_window_secs".into(),
            decision.review_window_secs.into(),
        );
    }
    if decision.outcome != Outcome::Deny {
        m.insert("grant_ttl_secs".into(), decision.grant_ttl_secs.into());
    }
    Ok(answer)
}

fn agent_ids(dir: &Directory) -> String {
    let ids: Vec<&str> = dir.agents().iter().map(|a| a.id.as_str()).collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(file)
    }

    /// Evaluates `body` as `agent` against the example deployment in config/.
    fn example(agent: &str, body: Value) -> Value {
        check(
            &body.to_string(),
            "test",
            Some(agent),
            &config("policy.cedar"),
            &config("directory.toml"),
        )
        .unwrap()
    }

    fn outcome(v: &Value) -> (&str, Vec<(String, u64)>) {
        let reqs = v["requirements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["group"].as_str().unwrap().to_string(),
                    r["quorum"].as_u64().unwrap(),
                )
            })
            .collect();
        (v["outcome"].as_str().unwrap(), reqs)
    }

    #[test]
    fn read_only_query_is_routine() {
        let v = example(
            "etl-bot",
            json!({"action": "db.query", "resource": {"type": "Dataset", "id": "customers",
                   "attributes": {"classification": "pii"}}}),
        );
        assert_eq!(outcome(&v), ("allow", vec![]));
        assert_eq!(v["policies"], json!(["read-only"]));
        assert_eq!(v["reason"], Value::Null);
        let hash = shared::canon::sha256_hex(
            std::fs::read_to_string(config("policy.cedar"))
                .unwrap()
                .as_bytes(),
        );
        assert_eq!(v["policy_hash"], hash);
    }

    #[test]
    fn pii_export_needs_one_dba() {
        let v = example(
            "etl-bot",
            json!({"action": "db.export", "resource": {"type": "Dataset", "id": "customers",
                   "attributes": {"classification": "pii"}}, "on_behalf_of": "user:alice",
                   "context": {"env": "prod", "rows": 120000},
                   "callback_url": "https://etl-bot.example/hooks/countersign"}),
        );
        assert_eq!(outcome(&v), ("approval", vec![("dba".into(), 1)]));
        assert_eq!(v["policies"], json!(["pii-export"]));
        // Unlabelled data counts as PII; public data is routine.
        let v = example(
            "etl-bot",
            json!({"action": "db.export", "resource": {"type": "Dataset", "id": "x"}}),
        );
        assert_eq!(outcome(&v), ("approval", vec![("dba".into(), 1)]));
        let v = example(
            "etl-bot",
            json!({"action": "db.export", "resource": {"type": "Dataset", "id": "prices",
                   "attributes": {"classification": "public"}}}),
        );
        assert_eq!(outcome(&v), ("allow", vec![]));
    }

    #[test]
    fn role_grant_needs_two_of_security() {
        let v = example(
            "deploy-bot",
            json!({"action": "iam.grant_role", "resource": {"type": "Role", "id": "db-writer"},
                   "on_behalf_of": "user:dave", "context": {"grantee": "user:erin"}}),
        );
        assert_eq!(outcome(&v), ("approval", vec![("security".into(), 2)]));
        assert_eq!(v["policies"], json!(["privilege-escalation"]));
    }

    #[test]
    fn prod_infra_change_needs_sre() {
        let v = example(
            "deploy-bot",
            json!({"action": "infra.apply", "resource": {"type": "Service", "id": "checkout"},
                   "context": {"env": "prod", "change": "scale 3 -> 6"}}),
        );
        assert_eq!(outcome(&v), ("approval", vec![("sre".into(), 1)]));
        assert_eq!(v["policies"], json!(["prod-infra-change"]));
        assert_eq!(v["review_window_secs"], 1800);
        // Staging is routine; an unnamed environment counts as production.
        let v = example(
            "deploy-bot",
            json!({"action": "infra.apply", "resource": {"type": "Service", "id": "checkout"},
                   "context": {"env": "staging"}}),
        );
        assert_eq!(outcome(&v), ("allow", vec![]));
        let v = example(
            "deploy-bot",
            json!({"action": "infra.apply", "resource": {"type": "Service", "id": "checkout"}}),
        );
        assert_eq!(outcome(&v), ("approval", vec![("sre".into(), 1)]));
    }

    #[test]
    fn self_admin_and_audit_deletion_are_forbidden() {
        let v = example(
            "deploy-bot",
            json!({"action": "iam.grant_role", "resource": {"type": "Role", "id": "admin"},
                   "on_behalf_of": "user:dave", "context": {"grantee": "user:dave"}}),
        );
        assert_eq!(outcome(&v), ("deny", vec![]));
        assert_eq!(v["policies"], json!(["no-self-admin"]));
        assert!(v["reason"].as_str().unwrap().contains("no-self-admin"));
        // Admin for someone else is escalation, not forbidden.
        let v = example(
            "deploy-bot",
            json!({"action": "iam.grant_role", "resource": {"type": "Role", "id": "admin"},
                   "on_behalf_of": "user:dave", "context": {"grantee": "user:erin"}}),
        );
        assert_eq!(outcome(&v), ("approval", vec![("security".into(), 2)]));
        for body in [
            json!({"action": "audit.delete", "resource": {"type": "AuditLog", "id": "countersign"}}),
            json!({"action": "storage.delete", "resource": {"type": "AuditLog", "id": "s3-archive"}}),
        ] {
            let v = example("etl-bot", body);
            assert_eq!(outcome(&v), ("deny", vec![]));
            assert_eq!(v["policies"], json!(["no-audit-delete"]));
        }
        // Nothing permits it: denied, fail closed.
        let v = example(
            "etl-bot",
            json!({"action": "db.drop", "resource": {"type": "Dataset", "id": "orders"}}),
        );
        assert_eq!(outcome(&v), ("deny", vec![]));
        assert_eq!(v["policies"], json!([]));
    }

    #[test]
    fn broken_inputs_are_errors() {
        let (p, d) = (config("policy.cedar"), config("directory.toml"));
        let ok = r#"{"action":"db.query","resource":{"type":"Dataset","id":"x"}}"#;
        let err = |body: &str, agent: Option<&str>, p: &Path, d: &Path| {
            format!("{:#}", check(body, "test", agent, p, d).unwrap_err())
        };
        assert!(err(ok, None, &p, &d).contains("--agent"));
        assert!(err(ok, Some("nobody"), &p, &d).contains("etl-bot"));
        assert!(err("{", Some("etl-bot"), &p, &d).contains("invalid request"));
        assert!(err(r#"{"action":"db.query"}"#, Some("etl-bot"), &p, &d).contains("resource"));
        let e = err(
            r#"{"action":"db.query","resource":{"type":"Dataset","id":"x"},"callback_url":"https://evil.example/"}"#,
            Some("etl-bot"),
            &p,
            &d,
        );
        assert!(e.contains("callback_url"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let bad_policy = tmp.path().join("p.cedar");
        std::fs::write(
            &bad_policy,
            "@id(\"a\") @aproval(\"dba\") permit(principal, action, resource);",
        )
        .unwrap();
        assert!(err(ok, Some("etl-bot"), &bad_policy, &d).contains("@aproval"));
        let bad_dir = tmp.path().join("d.toml");
        std::fs::write(&bad_dir, "[[agent]]\nid = \"a\"\n").unwrap();
        assert!(err(ok, Some("a"), &p, &bad_dir).contains("directory"));
        assert!(err(ok, Some("a"), &p, &tmp.path().join("absent.toml")).contains("absent.toml"));
    }
}
