//! The internal vote protocol: `POST http://decision.spin.internal/internal/vote`, the one place
//! where the votes of every channel (API, Slack, Teams) are judged.
//!
//! A channel resolves the clicker to a directory approver from its verified platform identity,
//! then sends [`VoteRequest`] `{"id","approver","decision","reason"?,"channel"}`. The decision
//! component answers [`VoteAnswer`]:
//!
//! ```json
//! {"outcome": "recorded" | "approved" | "denied" | "refused",
//!  "code": "not_eligible" | "self_approval" | "already_decided" | "expired" | "duplicate",
//!  "message": "...", "decided_here": false, "request": { ...as GET /v1/actions/:id... }}
//! ```
//!
//! with HTTP status 200 (recorded, approved, denied), 403 (refused: not eligible, self-approval),
//! 409 (refused: already decided, expired, duplicate vote) and 404 (unknown request, as problem
//! details). `code` and `message` are present only when refused; `request` (never with the grant)
//! whenever the request exists, so a channel can redraw its card from the answer alone.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{is_request_id, ActionRecord, Decision, Vote};
use crate::rules::{RefusalCode, VoteOutcome};
use crate::time::Timestamp;

/// Longest accepted vote reason (bytes), as in `POST /v1/actions/:id/decision`.
pub const MAX_REASON: usize = 4096;

/// The body of `POST /internal/vote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The request id.
    pub id: String,
    /// The directory approver id, resolved by the channel from its verified identity.
    pub approver: String,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `api`, `slack`, `teams`, ...: `[a-z0-9_-]{1,32}`.
    pub channel: String,
}

impl VoteRequest {
    /// Parses and validates a raw body (unknown fields refused, errors name the field).
    pub fn parse(body: &[u8]) -> Result<VoteRequest> {
        let v: Value = serde_json::from_slice(body)?;
        let Value::Object(o) = &v else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        if let Some(k) = o.keys().find(|k| {
            !matches!(
                k.as_str(),
                "id" | "approver" | "decision" | "reason" | "channel"
            )
        }) {
            return Err(Error::invalid(k.as_str(), "unknown field"));
        }
        let string = |name: &str| -> Result<String> {
            match o.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::String(_)) => Err(Error::invalid(name, "must not be empty")),
                Some(_) => Err(Error::invalid(name, "must be a string")),
                None => Err(Error::invalid(name, "is required")),
            }
        };
        let id = string("id")?;
        if !is_request_id(&id) {
            return Err(Error::invalid("id", "is not a request id"));
        }
        let approver = string("approver")?;
        if approver.len() > 128 {
            return Err(Error::invalid("approver", "must be at most 128 bytes"));
        }
        let decision = match string("decision")?.as_str() {
            "approve" => Decision::Approve,
            "deny" => Decision::Deny,
            _ => {
                return Err(Error::invalid(
                    "decision",
                    "must be \"approve\" or \"deny\"",
                ))
            }
        };
        let reason = match o.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) if s.len() > MAX_REASON => {
                return Err(Error::invalid(
                    "reason",
                    format!("must be at most {MAX_REASON} bytes"),
                ))
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Error::invalid("reason", "must be a string")),
        };
        let channel = string("channel")?;
        if channel.len() > 32
            || !channel
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        {
            return Err(Error::invalid("channel", "must be 1 to 32 of a-z 0-9 _ -"));
        }
        Ok(VoteRequest {
            id,
            approver,
            decision,
            reason,
            channel,
        })
    }

    /// The vote as cast at `at`.
    pub fn vote(&self, at: Timestamp) -> Vote {
        Vote {
            approver: self.approver.clone(),
            decision: self.decision,
            reason: self.reason.clone(),
            channel: self.channel.clone(),
            at,
        }
    }
}

/// `outcome` of a [`VoteAnswer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerOutcome {
    /// Counted; the request is still pending.
    Recorded,
    /// The request is approved (by this vote, possibly together with simultaneous ones).
    Approved,
    /// The request is denied by this vote.
    Denied,
    /// Not counted (see `code`).
    Refused,
}

impl AnswerOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerOutcome::Recorded => "recorded",
            AnswerOutcome::Approved => "approved",
            AnswerOutcome::Denied => "denied",
            AnswerOutcome::Refused => "refused",
        }
    }
}

/// The answer of `POST /internal/vote`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteAnswer {
    pub outcome: AnswerOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<RefusalCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// True for exactly one voter per request: the one whose vote made the final transition.
    #[serde(default)]
    pub decided_here: bool,
    /// The request as `GET /v1/actions/:id` shows it to an approver (never with the grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
}

impl VoteAnswer {
    /// The answer for a vote's outcome. `current` is the record to show when the vote was
    /// refused (the accepted outcomes carry their own); `now` renders the view.
    pub fn new(
        outcome: &VoteOutcome,
        decided_here: bool,
        current: Option<&ActionRecord>,
        now: Timestamp,
    ) -> VoteAnswer {
        let view = |r: &ActionRecord| Some(r.view(now, false));
        match outcome {
            VoteOutcome::Recorded(r) => VoteAnswer {
                outcome: AnswerOutcome::Recorded,
                code: None,
                message: None,
                decided_here: false,
                request: view(r),
            },
            VoteOutcome::Approved(r) => VoteAnswer {
                outcome: AnswerOutcome::Approved,
                code: None,
                message: None,
                decided_here,
                request: view(r),
            },
            VoteOutcome::Denied(r) => VoteAnswer {
                outcome: AnswerOutcome::Denied,
                code: None,
                message: None,
                decided_here,
                request: view(r),
            },
            VoteOutcome::Refused(refusal) => VoteAnswer {
                outcome: AnswerOutcome::Refused,
                code: Some(refusal.code),
                message: Some(refusal.message.clone()),
                decided_here: false,
                request: current.and_then(view),
            },
        }
    }

    /// The HTTP status: 200 when the vote counted, else the refusal's (403 or 409).
    pub fn status(&self) -> u16 {
        match (self.outcome, self.code) {
            (AnswerOutcome::Refused, Some(code)) => code.http_status(),
            (AnswerOutcome::Refused, None) => 403,
            _ => 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Refusal;
    use serde_json::json;

    const ID: &str = "req_abcdefghjkmnpqrstvwxyz0123";

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn field(v: Value) -> String {
        match VoteRequest::parse(&body(v)) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_and_validates() {
        assert!(is_request_id(ID), "fixture id");
        let r = VoteRequest::parse(&body(json!({"id": ID, "approver": "bob",
            "decision": "approve", "reason": "ok", "channel": "slack"})))
        .unwrap();
        assert_eq!(r.decision, Decision::Approve);
        assert_eq!(r.reason.as_deref(), Some("ok"));
        let v = r.vote(Timestamp(7));
        assert_eq!(
            (v.approver.as_str(), v.channel.as_str(), v.at),
            ("bob", "slack", Timestamp(7))
        );
        let r = VoteRequest::parse(&body(json!({"id": ID, "approver": "bob",
            "decision": "deny", "reason": null, "channel": "teams"})))
        .unwrap();
        assert_eq!((r.decision, r.reason.as_deref()), (Decision::Deny, None));
        // Round trip: what a channel serializes, decision parses.
        let again = VoteRequest::parse(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(again, r);

        let ok = json!({"id": ID, "approver": "bob", "decision": "approve", "channel": "api"});
        for (k, bad, f) in [
            ("id", json!("req_../x"), "id"),
            ("id", json!(5), "id"),
            ("approver", json!(""), "approver"),
            ("approver", json!("x".repeat(129)), "approver"),
            ("decision", json!("yes"), "decision"),
            ("reason", json!(3), "reason"),
            ("reason", json!("r".repeat(MAX_REASON + 1)), "reason"),
            ("channel", json!("Slack"), "channel"),
            ("channel", json!("a b"), "channel"),
            ("extra", json!(1), "extra"),
        ] {
            let mut v = ok.clone();
            v[k] = bad;
            assert_eq!(field(v), f, "{k}");
        }
        for missing in ["id", "approver", "decision", "channel"] {
            let mut v = ok.clone();
            v.as_object_mut().unwrap().remove(missing);
            assert_eq!(field(v), missing);
        }
        assert_eq!(field(json!([1])), "body");
        assert!(matches!(VoteRequest::parse(b"{"), Err(Error::Malformed(_))));
    }

    #[test]
    fn answers_and_statuses() {
        use crate::model::{ActionRequest, Outcome, PolicyDecision, Requirement, Status};
        let req = ActionRequest::from_value(
            json!({"action":"db.export","resource":{"type":"Dataset","id":"c"}}),
        )
        .unwrap();
        let d = PolicyDecision {
            outcome: Outcome::Approval,
            requirements: vec![Requirement {
                group: "dba".into(),
                quorum: 1,
            }],
            policies: vec!["p".into()],
            policy_hash: String::new(),
            reason: None,
            review_window_secs: 60,
            grant_ttl_secs: 60,
        };
        let now = Timestamp(1_800_000_000);
        let mut rec = ActionRecord::new(ID.into(), "etl-bot", &req, &d, now).unwrap();
        let a = VoteAnswer::new(&VoteOutcome::Recorded(rec.clone()), true, None, now);
        assert_eq!(
            (a.outcome, a.status(), a.decided_here),
            (AnswerOutcome::Recorded, 200, false)
        );
        rec.status = Status::Approved;
        rec.grant = Some("secret-grant".into());
        let a = VoteAnswer::new(&VoteOutcome::Approved(rec.clone()), true, None, now);
        assert_eq!((a.status(), a.decided_here), (200, true));
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["outcome"], "approved");
        assert_eq!(v["request"]["status"], "approved");
        assert!(v["request"].get("grant").is_none(), "never the grant");
        assert!(v.get("code").is_none() && v.get("message").is_none());
        let back: VoteAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
        for (code, status) in [
            (RefusalCode::NotEligible, 403),
            (RefusalCode::SelfApproval, 403),
            (RefusalCode::AlreadyDecided, 409),
            (RefusalCode::Expired, 409),
            (RefusalCode::Duplicate, 409),
        ] {
            let a = VoteAnswer::new(
                &VoteOutcome::Refused(Refusal::new(code, "no")),
                true,
                Some(&rec),
                now,
            );
            assert_eq!((a.status(), a.decided_here), (status, false));
            let v = serde_json::to_value(&a).unwrap();
            assert_eq!(v["outcome"], "refused");
            assert_eq!(v["code"], code.as_str());
            assert_eq!(v["message"], "no");
            assert_eq!(v["request"]["id"], ID);
        }
        let a = VoteAnswer::new(
            &VoteOutcome::Refused(Refusal::new(RefusalCode::NotEligible, "no")),
            false,
            None,
            now,
        );
        assert!(serde_json::to_value(&a).unwrap().get("request").is_none());
    }
}
