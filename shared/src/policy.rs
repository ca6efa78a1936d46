//! Cedar policy evaluation with approval annotations (feature `policy`; the only part of the
//! crate that links `cedar-policy`).
//!
//! Request → Cedar: principal `Agent::"<id>"` (attributes `owner`: String, `groups`:
//! Set<String>, from the directory), action `Action::"<action>"`, resource
//! `<type>::"<id>"` with the request's `attributes`, context = the request's `context` plus
//! `on_behalf_of` (when given). Schema-less.
//!
//! Outcome:
//! 1. a `forbid` applies → **deny** (reason lists the policy ids); a `forbid` that fails to
//!    evaluate (e.g. reads a missing attribute) also denies: fail closed;
//! 2. no `permit` applies → **deny**;
//! 3. the determining permits carry no `@approval` → **allow**;
//! 4. otherwise **approval**: each determining permit with `@approval("group")` requires
//!    `@quorum("N")` (default 1) distinct approvers from that group (one group named by several
//!    permits takes the largest quorum); review window = shortest `@expires` (default 1 h);
//!    grant lifetime = shortest `@grant_ttl` (default 5 min). Durations: `30s`, `15m`, `1h`, `2d`.
//!
//! Every policy needs a unique `@id("...")`. Annotations are checked when the set is loaded
//! and any mistake is an error (fail closed): an unknown annotation (a typo such as
//! `@aproval` would otherwise make a sensitive permit routine), `@approval`/`@quorum`/
//! `@expires`/`@grant_ttl` on a `forbid`, `@quorum` without `@approval`, a malformed number or
//! duration, templates. Allowed annotations: `id`, `approval`, `quorum`, `expires`,
//! `grant_ttl`, `description`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression,
};
use serde_json::{Map, Value};

use crate::canon::sha256_hex;
use crate::directory::{Agent, Directory};
use crate::error::{Error, Result};
use crate::model::{
    ActionRequest, Outcome, PolicyDecision, Requirement, DEFAULT_GRANT_TTL_SECS,
    DEFAULT_REVIEW_WINDOW_SECS,
};
use crate::time::parse_duration;

const KNOWN_ANNOTATIONS: &[&str] = &[
    "id",
    "approval",
    "quorum",
    "expires",
    "grant_ttl",
    "description",
];
/// Largest accepted `@quorum`.
pub const MAX_QUORUM: u32 = 100;

#[derive(Debug, Clone)]
struct PolicyMeta {
    effect: Effect,
    approval: Option<Requirement>,
    expires: Option<u64>,
    grant_ttl: Option<u64>,
}

/// A parsed, checked policy set: build once, evaluate many times.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    set: PolicySet,
    /// `@id`s in file order.
    ids: Vec<String>,
    meta: HashMap<String, PolicyMeta>,
    hash: String,
}

impl PolicyEngine {
    /// Reads and parses a policy file (`/config/policy.cedar` in the policy component).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<PolicyEngine> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Config(format!("policy {}: {e}", path.display())))?;
        PolicyEngine::from_file(path, &bytes)
    }

    /// Parses the bytes of the policy file at `path` (errors name the file).
    pub fn from_file(path: &std::path::Path, bytes: &[u8]) -> Result<PolicyEngine> {
        let text = crate::error::file_text(bytes, "policy", path)?;
        PolicyEngine::new(text).map_err(|e| crate::error::in_file(e, "policy", path))
    }

    /// Parses a policy set and checks its annotations.
    pub fn new(text: &str) -> Result<PolicyEngine> {
        let bad = |m: String| Error::Config(format!("policy: {m}"));
        let parsed = PolicySet::from_str(text).map_err(|e| bad(render_cedar_error(&e)))?;
        if parsed.templates().next().is_some() {
            return Err(bad(
                "templates are not supported; write static policies".into()
            ));
        }
        // Cedar numbers policies policy0, policy1, ... in file order.
        let mut policies: Vec<_> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        });
        let mut set = PolicySet::new();
        let mut ids = Vec::new();
        let mut meta = HashMap::new();
        for (n, p) in policies.into_iter().enumerate() {
            // Printing a policy costs as much as parsing it: only for an error.
            let unnamed = || format!("policy #{} ({})", n + 1, first_line(&p.to_string()));
            for (k, _) in p.annotations() {
                if !KNOWN_ANNOTATIONS.contains(&k) {
                    return Err(bad(format!(
                        "{}: unknown annotation @{k} (allowed: @{})",
                        unnamed(),
                        KNOWN_ANNOTATIONS.join(", @")
                    )));
                }
            }
            let id = match p.annotation("id") {
                Some(id) if !id.trim().is_empty() && id.len() <= 128 => id.to_string(),
                Some(_) => {
                    return Err(bad(format!(
                        "{}: @id must be 1 to 128 characters",
                        unnamed()
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "{}: every policy needs an @id(\"...\")",
                        unnamed()
                    )))
                }
            };
            let which = format!("policy {id:?}");
            if meta.contains_key(&id) {
                return Err(bad(format!("{which}: @id is used twice")));
            }
            let effect = p.effect();
            let forbid = effect == Effect::Forbid;
            let duration = |name: &str| -> Result<Option<u64>> {
                match p.annotation(name) {
                    None => Ok(None),
                    Some(_) if forbid => Err(bad(format!("{which}: @{name} has no meaning on a forbid"))),
                    Some(v) => parse_duration(v).map(Some).ok_or_else(|| {
                        bad(format!("{which}: @{name}({v:?}) is not a duration such as \"30s\", \"15m\", \"1h\", \"2d\""))
                    }),
                }
            };
            let expires = duration("expires")?;
            let grant_ttl = duration("grant_ttl")?;
            let quorum = match p.annotation("quorum") {
                None => None,
                Some(q) => match q.trim().parse::<u32>() {
                    Ok(n) if (1..=MAX_QUORUM).contains(&n) => Some(n),
                    _ => {
                        return Err(bad(format!(
                            "{which}: @quorum({q:?}) must be a whole number from 1 to {MAX_QUORUM}"
                        )))
                    }
                },
            };
            let approval = match (p.annotation("approval"), quorum) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(bad(format!(
                        "{which}: @quorum needs an @approval(\"group\")"
                    )))
                }
                (Some(_), _) if forbid => {
                    return Err(bad(format!(
                        "{which}: @approval has no meaning on a forbid"
                    )))
                }
                (Some(g), q) => {
                    let g = g.trim();
                    if g.is_empty()
                        || !g.bytes().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'@')
                        })
                    {
                        return Err(bad(format!("{which}: @approval({g:?}) must name a group")));
                    }
                    Some(Requirement {
                        group: g.to_string(),
                        quorum: q.unwrap_or(1),
                    })
                }
            };
            let pid = PolicyId::new(&id);
            set.add(p.new_id(pid))
                .map_err(|e| bad(format!("{which}: {e}")))?;
            ids.push(id.clone());
            meta.insert(
                id,
                PolicyMeta {
                    effect,
                    approval,
                    expires,
                    grant_ttl,
                },
            );
        }
        Ok(PolicyEngine {
            set,
            ids,
            meta,
            hash: sha256_hex(text.as_bytes()),
        })
    }

    /// Hex SHA-256 of the policy text.
    pub fn policy_hash(&self) -> &str {
        &self.hash
    }

    /// The `@id`s, in file order.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// Checks that every `@approval` group exists in the directory and has at least `@quorum`
    /// members (else such requests could never be approved). Call at load, next to
    /// [`PolicyEngine::new`].
    pub fn check_groups(&self, dir: &Directory) -> Result<()> {
        for id in &self.ids {
            if let Some(req) = &self.meta[id].approval {
                if !dir.group_exists(&req.group) {
                    return Err(Error::Config(format!(
                        "policy {id:?}: @approval({:?}) names a group the directory does not define",
                        req.group
                    )));
                }
                let n = dir.group_members(&req.group).len();
                if n < req.quorum as usize {
                    return Err(Error::Config(format!(
                        "policy {id:?}: @quorum({}) but group {:?} has {n} member(s)",
                        req.quorum, req.group
                    )));
                }
            }
        }
        Ok(())
    }

    /// Evaluates a validated request of `agent` (the agent proven by its token).
    pub fn evaluate(&self, agent: &Agent, req: &ActionRequest) -> Result<PolicyDecision> {
        let principal = uid("Agent", &agent.id, "agent")?;
        let action = uid("Action", &req.action, "action")?;
        let resource = uid(&req.resource.type_, &req.resource.id, "resource.type")?;

        let agent_attrs = HashMap::from([
            (
                "owner".to_string(),
                RestrictedExpression::new_string(agent.owner.clone()),
            ),
            (
                "groups".to_string(),
                RestrictedExpression::new_set(
                    agent
                        .groups
                        .iter()
                        .cloned()
                        .map(RestrictedExpression::new_string),
                ),
            ),
        ]);
        let principal_entity = Entity::new(principal.clone(), agent_attrs, HashSet::new())
            .map_err(|e| Error::Config(format!("agent entity: {e}")))?;
        let resource_entity = Entity::new(
            resource.clone(),
            record_attrs("resource.attributes", &req.resource.attributes)?,
            HashSet::new(),
        )
        .map_err(|e| Error::invalid("resource.attributes", e.to_string()))?;
        let action_entity = Entity::new_no_attrs(action.clone(), HashSet::new());
        let entities =
            Entities::from_entities([principal_entity, resource_entity, action_entity], None)
                .map_err(|e| Error::invalid("resource", e.to_string()))?;

        let mut ctx = record_attrs("context", &req.context)?;
        if let Some(obo) = &req.on_behalf_of {
            ctx.insert(
                "on_behalf_of".into(),
                RestrictedExpression::new_string(obo.clone()),
            );
        }
        let context =
            Context::from_pairs(ctx).map_err(|e| Error::invalid("context", e.to_string()))?;
        let request = Request::new(principal, action, resource, context, None)
            .map_err(|e| Error::invalid("body", e.to_string()))?;

        let response = Authorizer::new().is_authorized(&request, &self.set, &entities);
        let decision = |outcome, policies: Vec<String>, reason: Option<String>| PolicyDecision {
            outcome,
            requirements: Vec::new(),
            policies,
            policy_hash: self.hash.clone(),
            reason,
            review_window_secs: DEFAULT_REVIEW_WINDOW_SECS,
            grant_ttl_secs: DEFAULT_GRANT_TTL_SECS,
        };

        // Fail closed on a forbid that could not be evaluated.
        let broken_forbids: Vec<String> = self.in_file_order(
            response
                .diagnostics()
                .errors()
                .map(|e| {
                    let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                    pe.policy_id().to_string()
                })
                .filter(|id| {
                    self.meta
                        .get(id)
                        .is_some_and(|m| m.effect == Effect::Forbid)
                }),
        );
        let determining =
            self.in_file_order(response.diagnostics().reason().map(|id| id.to_string()));

        if response.decision() == CedarDecision::Deny {
            if !determining.is_empty() {
                let reason = format!("forbidden by policy {}", determining.join(", "));
                return Ok(decision(Outcome::Deny, determining, Some(reason)));
            }
            if !broken_forbids.is_empty() {
                let reason = format!(
                    "forbid policy {} could not be evaluated (fail closed)",
                    broken_forbids.join(", ")
                );
                return Ok(decision(Outcome::Deny, broken_forbids, Some(reason)));
            }
            return Ok(decision(
                Outcome::Deny,
                Vec::new(),
                Some("no policy permits this action".into()),
            ));
        }
        if !broken_forbids.is_empty() {
            let reason = format!(
                "forbid policy {} could not be evaluated (fail closed)",
                broken_forbids.join(", ")
            );
            return Ok(decision(Outcome::Deny, broken_forbids, Some(reason)));
        }

        let mut requirements: Vec<Requirement> = Vec::new();
        let mut window: Option<u64> = None;
        let mut ttl: Option<u64> = None;
        for id in &determining {
            let m = &self.meta[id];
            if let Some(r) = &m.approval {
                match requirements.iter_mut().find(|x| x.group == r.group) {
                    Some(x) => x.quorum = x.quorum.max(r.quorum),
                    None => requirements.push(r.clone()),
                }
            }
            window = min_opt(window, m.expires);
            ttl = min_opt(ttl, m.grant_ttl);
        }
        let mut d = decision(
            if requirements.is_empty() {
                Outcome::Allow
            } else {
                Outcome::Approval
            },
            determining,
            None,
        );
        d.grant_ttl_secs = ttl.unwrap_or(DEFAULT_GRANT_TTL_SECS);
        if !requirements.is_empty() {
            d.review_window_secs = window.unwrap_or(DEFAULT_REVIEW_WINDOW_SECS);
            d.requirements = requirements;
        }
        Ok(d)
    }

    fn in_file_order(&self, ids: impl Iterator<Item = String>) -> Vec<String> {
        let set: HashSet<String> = ids.collect();
        self.ids
            .iter()
            .filter(|id| set.contains(*id))
            .cloned()
            .collect()
    }
}

/// A policy set that reaches every part of Cedar a real set does: the policy, name and
/// expression parsers, annotations, `has`/`like`/`in`/`is`, sets and records, and the ip,
/// decimal and datetime extensions.
const WARM_UP_POLICY: &str = r#"
@id("warm-up-permit")
@approval("warm-up")
@quorum("2")
@expires("1h")
@grant_ttl("5m")
@description("warm-up")
permit (principal is Agent, action in [Action::"warm.up", Action::"warm.down"], resource)
when {
  resource has tags && resource.tags.containsAll(["a"]) && resource.tags.containsAny(["a", "b"]) &&
  principal.groups.contains("ops") && principal.owner like "own*" &&
  context has n && (if context.n > 1 then context.n * 2 - 1 >= 3 else false) &&
  ip(context.addr).isInRange(ip("10.0.0.0/8")) &&
  decimal(context.ratio).lessThan(decimal("0.75")) &&
  datetime(context.at) < datetime("2030-01-01") &&
  duration("1h") > duration("30m") &&
  context.meta.kind == "x"
};
@id("warm-up-forbid")
forbid (principal, action, resource == Table::"never")
unless { context has on_behalf_of && context.on_behalf_of != "" };
"#;

/// Does Cedar's one-time start-up work — parser tables, the lexer's regular expressions, the
/// extension functions — on [`WARM_UP_POLICY`]. A fresh instance repeats that work on every
/// request; the policy component runs this at build time (`wizer-initialize`) so that its
/// instances start with it done. It must not read files or the environment: wasi-libc keeps
/// what it read first, and the snapshot would hold no folders and no variables for good.
pub fn warm_up() -> Result<PolicyDecision> {
    let engine = PolicyEngine::new(WARM_UP_POLICY)?;
    let agent = Agent {
        id: "warm-up".into(),
        owner: "owner".into(),
        groups: vec!["ops".into()],
        token_sha256: Vec::new(),
        callback_prefixes: Vec::new(),
    };
    let request = ActionRequest::parse(
        br#"{"action": "warm.up", "resource": {"type": "Table", "id": "t", "attributes": {"tags": ["a"]}},
            "on_behalf_of": "user:someone",
            "context": {"n": 2, "addr": "10.1.2.3", "ratio": "0.5", "at": "2029-12-31",
                        "meta": {"kind": "x"}}}"#,
    )?;
    engine.evaluate(&agent, &request)
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().find(|l| {
        let t = l.trim_start();
        t.starts_with("permit") || t.starts_with("forbid")
    });
    let line = line
        .unwrap_or_else(|| s.lines().next().unwrap_or(""))
        .trim();
    if line.len() > 60 {
        format!(
            "{}…",
            &line[..line
                .char_indices()
                .nth(57)
                .map(|(i, _)| i)
                .unwrap_or(line.len())]
        )
    } else {
        line.to_string()
    }
}

fn render_cedar_error(e: &cedar_policy::ParseErrors) -> String {
    use std::fmt::Write as _;
    let mut out = e.to_string();
    // ParseErrors' Display shows the first error; list every one.
    for (i, err) in e.iter().enumerate().skip(1) {
        let _ = write!(out, "; error {}: {err}", i + 1);
    }
    out
}

fn uid(type_name: &str, id: &str, field: &str) -> Result<EntityUid> {
    let t =
        EntityTypeName::from_str(type_name).map_err(|e| Error::invalid(field, e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn record_attrs(
    path: &str,
    map: &Map<String, Value>,
) -> Result<HashMap<String, RestrictedExpression>> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), to_cedar(&format!("{path}.{k}"), v)?)))
        .collect()
}

/// JSON → Cedar value, built directly (no `__entity` / `__extn` escapes are interpreted, so a
/// request cannot smuggle entity references into attributes).
fn to_cedar(path: &str, v: &Value) -> Result<RestrictedExpression> {
    Ok(match v {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => {
                return Err(Error::invalid(
                    path,
                    "has no Cedar counterpart (not an integer)",
                ))
            }
        },
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| to_cedar(&format!("{path}[{i}]"), x))
                .collect::<Result<Vec<_>>>()?,
        ),
        Value::Object(m) => RestrictedExpression::new_record(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), to_cedar(&format!("{path}.{k}"), x)?)))
                .collect::<Result<Vec<_>>>()?,
        )
        .map_err(|e| Error::invalid(path, e.to_string()))?,
        Value::Null => return Err(Error::invalid(path, "null has no Cedar counterpart")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::example as directory;
    use serde_json::json;

    #[test]
    fn warm_up_policy_parses_and_asks_for_approval() {
        // If the warm-up set stops parsing or matching, pre-initialisation would warm less.
        let d = warm_up().unwrap();
        assert_eq!(d.outcome, Outcome::Approval, "{d:?}");
        assert_eq!(d.policies, vec!["warm-up-permit".to_string()]);
        assert_eq!(d.requirements[0].quorum, 2);
    }

    const POLICY: &str = r#"
@id("read-only")
@description("Reads pass")
permit(principal, action in [Action::"db.query", Action::"db.read"], resource);

@id("pii-export")
@approval("dba")
@expires("15m")
@grant_ttl("2m")
permit(principal, action == Action::"db.export", resource)
when { resource has classification && resource.classification == "pii" };

@id("export-nonpii")
permit(principal, action == Action::"db.export", resource)
unless { resource has classification && resource.classification == "pii" };

@id("escalation")
@approval("security")
@quorum("2")
permit(principal, action == Action::"iam.grant_role", resource);

@id("prod-change")
@approval("sre")
@expires("30m")
permit(principal, action == Action::"infra.apply", resource)
when { context has env && context.env == "prod" };

@id("prod-change-large")
@approval("security")
@expires("10m")
permit(principal, action == Action::"infra.apply", resource)
when { context has env && context.env == "prod" && context has hosts && context.hosts > 100 };

@id("no-self-admin")
forbid(principal, action == Action::"iam.grant_role", resource)
when { resource has role && resource.role == "admin" && context has on_behalf_of && context.on_behalf_of == "user:x" };

@id("no-audit-delete")
forbid(principal, action == Action::"audit.delete", resource);

@id("pipelines-only-etl")
permit(principal, action == Action::"etl.run", resource)
when { principal.groups.contains("pipelines") && principal.owner == "alice" };

@id("broken-forbid")
forbid(principal, action == Action::"db.drop", resource)
when { resource.missing_attribute == 1 };

@id("drop-permit")
permit(principal, action == Action::"db.drop", resource);
"#;

    fn engine() -> PolicyEngine {
        PolicyEngine::new(POLICY).unwrap()
    }

    fn eval(body: Value) -> PolicyDecision {
        let dir = directory();
        let req = ActionRequest::from_value(body).unwrap();
        engine()
            .evaluate(dir.agent("etl-bot").unwrap(), &req)
            .unwrap()
    }

    fn body(action: &str, attrs: Value, ctx: Value) -> Value {
        json!({"action": action, "resource": {"type": "Dataset", "id": "customers", "attributes": attrs}, "context": ctx})
    }

    #[test]
    fn routine_is_allowed() {
        let d = eval(body("db.query", json!({}), json!({})));
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(d.policies, vec!["read-only"]);
        assert!(d.requirements.is_empty());
        assert_eq!(d.grant_ttl_secs, DEFAULT_GRANT_TTL_SECS);
        assert_eq!(d.policy_hash, sha256_hex(POLICY.as_bytes()));
        let d = eval(body(
            "db.export",
            json!({"classification": "public"}),
            json!({}),
        ));
        assert_eq!(
            (d.outcome, d.policies.clone()),
            (Outcome::Allow, vec!["export-nonpii".to_string()])
        );
        let d = eval(body("etl.run", json!({}), json!({})));
        assert_eq!(
            d.outcome,
            Outcome::Allow,
            "principal attributes owner/groups are visible"
        );
    }

    #[test]
    fn sensitive_needs_approval() {
        let d = eval(body(
            "db.export",
            json!({"classification": "pii"}),
            json!({"rows": 120000}),
        ));
        assert_eq!(d.outcome, Outcome::Approval);
        assert_eq!(
            d.requirements,
            vec![Requirement {
                group: "dba".into(),
                quorum: 1
            }]
        );
        assert_eq!(d.policies, vec!["pii-export"]);
        assert_eq!((d.review_window_secs, d.grant_ttl_secs), (900, 120));
        let d = eval(body("iam.grant_role", json!({"role": "reader"}), json!({})));
        assert_eq!(
            d.requirements,
            vec![Requirement {
                group: "security".into(),
                quorum: 2
            }]
        );
        assert_eq!(d.review_window_secs, DEFAULT_REVIEW_WINDOW_SECS);
        // Two determining permits: both requirements, shortest window.
        let d = eval(body(
            "infra.apply",
            json!({}),
            json!({"env": "prod", "hosts": 500}),
        ));
        assert_eq!(d.outcome, Outcome::Approval);
        assert_eq!(d.requirements.len(), 2);
        assert_eq!(d.policies, vec!["prod-change", "prod-change-large"]);
        assert_eq!(d.review_window_secs, 600);
        let d = eval(body(
            "infra.apply",
            json!({}),
            json!({"env": "prod", "hosts": 5}),
        ));
        assert_eq!(
            d.requirements,
            vec![Requirement {
                group: "sre".into(),
                quorum: 1
            }]
        );
        assert_eq!(d.review_window_secs, 1800);
    }

    #[test]
    fn forbidden_and_unmatched_are_denied() {
        let d = eval(body("audit.delete", json!({}), json!({})));
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.policies, vec!["no-audit-delete"]);
        assert!(d.reason.unwrap().contains("no-audit-delete"));
        let d = eval(body("db.truncate", json!({}), json!({})));
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.policies.is_empty());
        assert_eq!(d.reason.as_deref(), Some("no policy permits this action"));
        // on_behalf_of is in the context.
        let mut b = body("iam.grant_role", json!({"role": "admin"}), json!({}));
        b["on_behalf_of"] = json!("user:x");
        let d = eval(b);
        assert_eq!(
            (d.outcome, d.policies.clone()),
            (Outcome::Deny, vec!["no-self-admin".to_string()])
        );
        // A forbid that errors denies (fail closed) although a permit applies.
        let d = eval(body("db.drop", json!({}), json!({})));
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.policies, vec!["broken-forbid"]);
        assert!(d.reason.unwrap().contains("fail closed"));
    }

    #[test]
    fn values_map_to_cedar() {
        let p = r#"
@id("p") permit(principal, action, resource)
when { resource.n == 3 && resource.s == "x" && resource.b && resource.set.contains(2)
       && resource.rec.inner == "y" && context.nested.list.containsAll([1, 2]) };
"#;
        let e = PolicyEngine::new(p).unwrap();
        let dir = directory();
        let req = ActionRequest::from_value(
            json!({"action":"a","resource":{"type":"App::Thing","id":"t",
            "attributes":{"n":3,"s":"x","b":true,"set":[1,2],"rec":{"inner":"y"}}},
            "context":{"nested":{"list":[1,2,3]}}}),
        )
        .unwrap();
        assert_eq!(
            e.evaluate(dir.agent("etl-bot").unwrap(), &req)
                .unwrap()
                .outcome,
            Outcome::Allow
        );
        // Entity escapes are plain records, not references.
        let req = ActionRequest::from_value(json!({"action":"a","resource":{"type":"T","id":"t",
            "attributes":{"n":3,"s":"x","b":true,"set":[2],"rec":{"inner":"y","__entity":{"type":"Agent","id":"x"}}}},
            "context":{"nested":{"list":[1,2]}}}))
        .unwrap();
        assert_eq!(
            e.evaluate(dir.agent("etl-bot").unwrap(), &req)
                .unwrap()
                .outcome,
            Outcome::Allow
        );
    }

    fn load_err(text: &str) -> String {
        match PolicyEngine::new(text) {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_annotations_fail_at_load() {
        assert!(load_err("permit(principal, action, resource);").contains("@id"));
        assert!(
            load_err(r#"@id("a") @aproval("dba") permit(principal, action, resource);"#)
                .contains("unknown annotation @aproval")
        );
        assert!(load_err(
            r#"@id("a") @approval("dba") @quorum("0") permit(principal, action, resource);"#
        )
        .contains("@quorum"));
        assert!(load_err(
            r#"@id("a") @approval("dba") @quorum("two") permit(principal, action, resource);"#
        )
        .contains("@quorum"));
        assert!(
            load_err(r#"@id("a") @quorum("2") permit(principal, action, resource);"#)
                .contains("needs an @approval")
        );
        assert!(
            load_err(r#"@id("a") @approval("") permit(principal, action, resource);"#)
                .contains("must name a group")
        );
        assert!(
            load_err(r#"@id("a") @approval permit(principal, action, resource);"#)
                .contains("must name a group")
        );
        assert!(
            load_err(r#"@id("a") @approval("dba") forbid(principal, action, resource);"#)
                .contains("forbid")
        );
        assert!(load_err(r#"@id("a") @expires("15 minutes") @approval("dba") permit(principal, action, resource);"#).contains("duration"));
        assert!(
            load_err(r#"@id("a") @grant_ttl("0s") permit(principal, action, resource);"#)
                .contains("duration")
        );
        assert!(load_err(r#"@id("a") permit(principal, action, resource); @id("a") permit(principal, action, resource);"#).contains("twice"));
        assert!(
            load_err(r#"@id("a") permit(principal, action, resource) when { "#).contains("policy")
        );
        assert!(
            load_err(r#"@id("t") permit(principal == ?principal, action, resource);"#)
                .contains("template")
        );
        assert!(matches!(
            PolicyEngine::load("/nonexistent.cedar"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn load_errors_name_the_file() {
        let path = std::env::temp_dir().join(format!(
            "countersign-policy-{}-{:?}.cedar",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(
            &path,
            "@id(\"x\")\n@aproval(\"dba\")\npermit(principal, action, resource);",
        )
        .unwrap();
        let err = PolicyEngine::load(&path).unwrap_err();
        std::fs::remove_file(&path).ok();
        let Error::Config(m) = err else {
            panic!("expected a config error")
        };
        assert!(
            m.starts_with(&format!("policy {}: ", path.display())),
            "{m}"
        );
        assert!(m.contains("unknown annotation @aproval"), "{m}");
    }

    #[test]
    fn groups_are_checked_against_the_directory() {
        let dir = directory();
        engine().check_groups(&dir).unwrap();
        let e = PolicyEngine::new(
            r#"@id("a") @approval("nobody") permit(principal, action, resource);"#,
        )
        .unwrap();
        assert!(e
            .check_groups(&dir)
            .unwrap_err()
            .to_string()
            .contains("nobody"));
        let e = PolicyEngine::new(
            r#"@id("a") @approval("sre") @quorum("3") permit(principal, action, resource);"#,
        )
        .unwrap();
        assert!(e
            .check_groups(&dir)
            .unwrap_err()
            .to_string()
            .contains("@quorum(3)"));
    }

    #[test]
    fn ids_and_hash() {
        let e = engine();
        assert_eq!(e.policy_ids()[0], "read-only");
        assert_eq!(e.policy_ids().len(), 11);
        assert_eq!(e.policy_hash().len(), 64);
    }
}
