//! Grants: short-lived, single-use JWTs (EdDSA) bound to exactly the reviewed action.
//!
//! Claims: `iss` ("countersign"), `sub` (agent), `jti`, `iat`, `nbf`, `exp`, `rid` (request
//! id), `act`, `res` ({type,id}), `dig` (the request digest), `apr` (approver ids; empty when
//! routine), `pol` (policy ids), `phash` (SHA-256 of the policy text).
//!
//! `POST /v1/grants/verify`: [`GrantVerifyRequest::parse`] → [`verify_for`] (signature, kid,
//! issuer, time, digest) → single use through [`crate::store::Store::consume_grant`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crypto::{KeySet, SigningKey};
use crate::error::{Error, Result};
use crate::model::{self, ActionRecord, Resource, ResourceRef};
use crate::time::Timestamp;

pub const ISSUER: &str = "countersign";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub rid: String,
    pub act: String,
    pub res: ResourceRef,
    pub dig: String,
    pub apr: Vec<String>,
    pub pol: Vec<String>,
    pub phash: String,
}

/// Issues the grant of an allowed or approved request, valid from `now` for the record's
/// `grant_ttl_secs`. `jti` is fresh and random.
pub fn issue(
    key: &SigningKey,
    record: &ActionRecord,
    now: Timestamp,
) -> Result<(String, GrantClaims)> {
    let claims = GrantClaims {
        iss: ISSUER.into(),
        sub: record.agent.clone(),
        jti: crate::canon::random_id("g_")?,
        iat: now.unix(),
        nbf: now.unix(),
        exp: now.plus(record.grant_ttl_secs).unix(),
        rid: record.id.clone(),
        act: record.action.clone(),
        res: record.resource_ref(),
        dig: record.digest.clone(),
        apr: record.approvers(),
        pol: record.policies.clone(),
        phash: record.policy_hash.clone(),
    };
    let token = crate::jws::sign_eddsa(key, &claims)?;
    Ok((token, claims))
}

/// Verifies a grant's signature (EdDSA, kid in `keys`), issuer and lifetime at `now`
/// (`nbf <= now < exp`, no leeway: both sides use this service's clock).
/// Failures are `Unauthorized` (401).
pub fn verify(token: &str, keys: &KeySet, now: Timestamp) -> Result<GrantClaims> {
    let d = crate::jws::verify_eddsa(token, keys)?;
    let claims: GrantClaims = d.claims()?;
    if claims.iss != ISSUER {
        return Err(Error::Unauthorized(
            "grant issuer is not countersign".into(),
        ));
    }
    if now.unix() >= claims.exp {
        return Err(Error::Unauthorized("grant expired".into()));
    }
    if now.unix() < claims.nbf {
        return Err(Error::Unauthorized("grant not yet valid".into()));
    }
    Ok(claims)
}

/// Checks that a (verified) grant covers exactly this action: its `dig` must equal the digest
/// of `{action, resource, context, on_behalf_of}`. Mismatch is `DigestMismatch` (422).
pub fn check_binding(
    claims: &GrantClaims,
    action: &str,
    resource: &Resource,
    context: &Map<String, Value>,
    on_behalf_of: Option<&str>,
) -> Result<()> {
    let dig = model::digest(action, resource, context, on_behalf_of)?;
    if dig != claims.dig {
        return Err(Error::DigestMismatch(
            "the grant was issued for another action, resource, context or requester".into(),
        ));
    }
    Ok(())
}

/// The body of `POST /v1/grants/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantVerifyRequest {
    pub grant: String,
    pub action: String,
    pub resource: Resource,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// Mark the grant used (single use). Defaults to `true`: a verified grant is spent unless
    /// the caller says it only wants to look.
    #[serde(default = "yes")]
    pub consume: bool,
}

fn yes() -> bool {
    true
}

impl GrantVerifyRequest {
    pub fn parse(body: &[u8]) -> Result<GrantVerifyRequest> {
        let v: Value = crate::canon::parse_json(body)?;
        let Value::Object(o) = &v else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        for (name, kind) in [
            ("grant", "string"),
            ("action", "string"),
            ("resource", "object"),
        ] {
            match o.get(name) {
                None => return Err(Error::invalid(name, "is required")),
                Some(Value::String(_)) if kind == "string" => {}
                Some(Value::Object(_)) if kind == "object" => {}
                Some(_) => return Err(Error::invalid(name, format!("must be a {kind}"))),
            }
        }
        if let Some(k) = o.keys().find(|k| {
            !matches!(
                k.as_str(),
                "grant" | "action" | "resource" | "context" | "on_behalf_of" | "consume"
            )
        }) {
            return Err(Error::invalid(k.as_str(), "unknown field"));
        }
        let mut v = v;
        if let Some(obj) = v.as_object_mut() {
            // null means absent, as in POST /v1/actions.
            for k in ["context", "on_behalf_of"] {
                if obj.get(k) == Some(&Value::Null) {
                    obj.remove(k);
                }
            }
            if let Some(Value::Object(r)) = obj.get_mut("resource") {
                if r.get("attributes") == Some(&Value::Null) {
                    r.remove("attributes");
                }
            }
        }
        if let Some(obj) = v.as_object() {
            let kind_err =
                |field: &str, kind: &str| Error::invalid(field, format!("must be {kind}"));
            if obj.get("context").is_some_and(|c| !c.is_object()) {
                return Err(kind_err("context", "an object"));
            }
            if obj.get("on_behalf_of").is_some_and(|c| !c.is_string()) {
                return Err(kind_err("on_behalf_of", "a string"));
            }
            if obj.get("consume").is_some_and(|c| !c.is_boolean()) {
                return Err(kind_err("consume", "true or false"));
            }
            if let Some(Value::Object(r)) = obj.get("resource") {
                for (f, ok) in [
                    ("type", r.get("type").is_some_and(Value::is_string)),
                    ("id", r.get("id").is_some_and(Value::is_string)),
                    (
                        "attributes",
                        r.get("attributes").is_none_or(Value::is_object),
                    ),
                ] {
                    if !ok {
                        return Err(Error::invalid(
                            format!("resource.{f}"),
                            "is missing or of the wrong type",
                        ));
                    }
                }
            }
        }
        let req: GrantVerifyRequest =
            serde_json::from_value(v).map_err(|e| Error::invalid("body", e.to_string()))?;
        Ok(req)
    }
}

/// Verifies `req.grant` (signature, issuer, lifetime) and its binding to `req`'s action.
/// Single use is the caller's next step ([`crate::store::Store::consume_grant`]).
pub fn verify_for(req: &GrantVerifyRequest, keys: &KeySet, now: Timestamp) -> Result<GrantClaims> {
    let claims = verify(&req.grant, keys, now)?;
    check_binding(
        &claims,
        &req.action,
        &req.resource,
        &req.context,
        req.on_behalf_of.as_deref(),
    )?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionRequest, Outcome, PolicyDecision, Requirement, Vote};
    use serde_json::json;

    fn record(now: Timestamp) -> ActionRecord {
        let req = ActionRequest::from_value(json!({"action":"db.export",
            "resource":{"type":"Dataset","id":"customers","attributes":{"classification":"pii"}},
            "on_behalf_of":"user:alice","context":{"env":"prod"}}))
        .unwrap();
        let d = PolicyDecision {
            outcome: Outcome::Approval,
            requirements: vec![Requirement {
                group: "dba".into(),
                quorum: 1,
            }],
            policies: vec!["pii-export".into()],
            policy_hash: "ab".repeat(32),
            reason: None,
            review_window_secs: 3600,
            grant_ttl_secs: 300,
        };
        let mut r = ActionRecord::new("req_1".into(), "etl-bot", &req, &d, now).unwrap();
        r.votes.push(Vote {
            approver: "bob".into(),
            decision: model::Decision::Approve,
            reason: None,
            channel: "api".into(),
            at: now,
        });
        r.status = model::Status::Approved;
        r
    }

    fn verify_body(grant: &str, id: &str) -> GrantVerifyRequest {
        GrantVerifyRequest::parse(
            json!({"grant": grant, "action":"db.export",
                "resource":{"type":"Dataset","id":id,"attributes":{"classification":"pii"}},
                "context":{"env":"prod"},"on_behalf_of":"user:alice"})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn issue_and_verify() {
        let key = SigningKey::from_seed(&[7; 32]);
        let keys = KeySet::from(&key);
        let now = Timestamp(1_800_000_000);
        let rec = record(now);
        let (token, claims) = issue(&key, &rec, now).unwrap();
        assert_eq!(claims.iss, "countersign");
        assert_eq!(claims.sub, "etl-bot");
        assert_eq!(claims.rid, "req_1");
        assert_eq!(claims.act, "db.export");
        assert_eq!(
            claims.res,
            ResourceRef {
                type_: "Dataset".into(),
                id: "customers".into()
            }
        );
        assert_eq!(claims.dig, rec.digest);
        assert_eq!(claims.apr, vec!["bob".to_string()]);
        assert_eq!(claims.pol, vec!["pii-export".to_string()]);
        assert_eq!(claims.exp - claims.iat, 300);
        // The claim names are exactly the contract's.
        let payload: Value = crate::jws::decode(&token).unwrap().claims().unwrap();
        let mut names: Vec<&str> = payload
            .as_object()
            .unwrap()
            .keys()
            .map(|s| s.as_str())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "act", "apr", "dig", "exp", "iat", "iss", "jti", "nbf", "phash", "pol", "res",
                "rid", "sub"
            ]
        );

        let body = verify_body(&token, "customers");
        assert!(body.consume);
        assert_eq!(verify_for(&body, &keys, now).unwrap(), claims);
        assert_eq!(
            verify_for(&body, &keys, Timestamp(now.0 + 299))
                .unwrap()
                .jti,
            claims.jti
        );
        // Expired.
        assert!(
            matches!(verify_for(&body, &keys, Timestamp(now.0 + 300)), Err(Error::Unauthorized(m)) if m.contains("expired"))
        );
        // Not yet valid.
        assert!(matches!(
            verify_for(&body, &keys, Timestamp(now.0 - 1)),
            Err(Error::Unauthorized(_))
        ));
        // Another resource: digest mismatch (422).
        let other = verify_body(&token, "employees");
        assert!(matches!(
            verify_for(&other, &keys, now),
            Err(Error::DigestMismatch(_))
        ));
        // Another context.
        let mut other = verify_body(&token, "customers");
        other.context.insert("env".into(), json!("dev"));
        assert_eq!(verify_for(&other, &keys, now).unwrap_err().status(), 422);
        // Unknown key.
        let stranger = KeySet::from(&SigningKey::from_seed(&[8; 32]));
        assert_eq!(verify_for(&body, &stranger, now).unwrap_err().status(), 401);
        // Signed by another key but claiming our kid: bad signature.
        let evil = SigningKey::from_seed(&[9; 32]);
        let forged = crate::jws::sign_eddsa(&evil, &claims).unwrap();
        let parts: Vec<&str> = forged.split('.').collect();
        let ours: Vec<&str> = token.split('.').collect();
        let spliced = format!("{}.{}.{}", ours[0], parts[1], parts[2]);
        assert_eq!(verify(&spliced, &keys, now).unwrap_err().status(), 401);
        // Wrong issuer, properly signed.
        let mut c2 = claims.clone();
        c2.iss = "someone".into();
        let t2 = crate::jws::sign_eddsa(&key, &c2).unwrap();
        assert!(verify(&t2, &keys, now).is_err());
    }

    #[test]
    fn verify_request_parsing() {
        let b = GrantVerifyRequest::parse(
            br#"{"grant":"g","action":"a","resource":{"type":"T","id":"x"},"consume":false}"#,
        )
        .unwrap();
        assert!(!b.consume && b.context.is_empty() && b.on_behalf_of.is_none());
        let b = GrantVerifyRequest::parse(br#"{"grant":"g","action":"a","resource":{"type":"T","id":"x","attributes":null},"context":null,"on_behalf_of":null}"#).unwrap();
        assert!(b.consume);
        for (body, field) in [
            (
                r#"{"action":"a","resource":{"type":"T","id":"x"}}"#,
                "grant",
            ),
            (
                r#"{"grant":"g","resource":{"type":"T","id":"x"}}"#,
                "action",
            ),
            (r#"{"grant":"g","action":"a","resource":"x"}"#, "resource"),
            (
                r#"{"grant":"g","action":"a","resource":{"type":"T","id":"x"},"consume":"yes"}"#,
                "consume",
            ),
            (
                r#"{"grant":"g","action":"a","resource":{"type":"T","id":"x"},"x":1}"#,
                "x",
            ),
        ] {
            match GrantVerifyRequest::parse(body.as_bytes()) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn jsonwebtoken_verifies_grants_from_jwks() {
        let key = SigningKey::from_seed(&[7; 32]);
        let now = Timestamp::now();
        let (token, claims) = issue(&key, &record(now), now).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&key.jwks().to_json()).unwrap();
        let jwk = jwks.find(key.kid()).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_issuer(&["countersign"]);
        let data = jsonwebtoken::decode::<GrantClaims>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims, claims);
    }
}
