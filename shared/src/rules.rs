//! The rules of approval, as pure functions over a stored request, the directory and a vote.
//!
//! - The requesting agent, its owner and the `on_behalf_of` human never approve (identities
//!   resolve through the directory first: `user:alice`, `slack:T/U`, `teams:tenant/aad`).
//! - Only members of a required group count toward it; one human counts once per group.
//! - Every requirement must reach its quorum; one eligible deny denies at once.
//! - A decided or expired request never changes; past `expires_at` it is expired whether or
//!   not the sweep has run.
//!
//! [`judge`] applies one vote to a record in memory. The store ([`crate::store::Store::vote`])
//! runs the same checks ([`check`]) and tally ([`tally`]) around its exactly-once claims.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::directory::Directory;
use crate::model::{ActionRecord, Decision, Status, Vote};
use crate::time::Timestamp;

/// Why a vote was refused. Stable codes (`snake_case` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// Not a member of any required group, or unknown.
    NotEligible,
    /// The agent, its owner or the `on_behalf_of` human.
    SelfApproval,
    /// The request is already approved, denied or allowed.
    AlreadyDecided,
    /// The review window has ended.
    Expired,
    /// This person has already voted on this request.
    Duplicate,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::NotEligible => "not_eligible",
            RefusalCode::SelfApproval => "self_approval",
            RefusalCode::AlreadyDecided => "already_decided",
            RefusalCode::Expired => "expired",
            RefusalCode::Duplicate => "duplicate",
        }
    }

    /// The HTTP status of `POST /v1/actions/:id/decision` for this refusal: 403 when the
    /// person may not vote, 409 when the request (or their vote) is already settled.
    pub fn http_status(self) -> u16 {
        match self {
            RefusalCode::NotEligible | RefusalCode::SelfApproval => 403,
            RefusalCode::AlreadyDecided | RefusalCode::Expired | RefusalCode::Duplicate => 409,
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// Problem details for the refusal (`type` ends with the code).
    pub fn to_problem(&self) -> crate::problem::Problem {
        crate::problem::Problem::new(
            self.code.http_status(),
            self.code.as_str(),
            self.message.clone(),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The result of a vote. The record in each accepted variant is the request after the vote.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteOutcome {
    /// Counted; the request is still pending.
    Recorded(ActionRecord),
    /// This vote completed every requirement: the request is approved.
    Approved(ActionRecord),
    /// This vote denied the request.
    Denied(ActionRecord),
    /// Not counted.
    Refused(Refusal),
}

impl VoteOutcome {
    pub fn record(&self) -> Option<&ActionRecord> {
        match self {
            VoteOutcome::Recorded(r) | VoteOutcome::Approved(r) | VoteOutcome::Denied(r) => Some(r),
            VoteOutcome::Refused(_) => None,
        }
    }
}

/// Where the votes of a pending request stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    Pending,
    Approved,
    Denied,
}

/// The people who can never approve this request: the agent, its owner, the `on_behalf_of`
/// human (resolved through the directory). `None` when the agent is no longer in the
/// directory (its owner is unknown, so nobody is eligible: fail closed).
pub fn excluded_people(record: &ActionRecord, dir: &Directory) -> Option<Vec<String>> {
    let agent = dir.agent(&record.agent)?;
    let mut out = vec![record.agent.clone(), dir.resolve_person(&agent.owner)];
    if let Some(obo) = &record.on_behalf_of {
        out.push(dir.resolve_person(obo));
    }
    Some(out)
}

/// The required groups `person` counts toward (empty when none, or when excluded).
pub fn counting_groups<'a>(
    record: &'a ActionRecord,
    dir: &Directory,
    person: &str,
) -> Vec<&'a str> {
    let Some(excluded) = excluded_people(record, dir) else {
        return Vec::new();
    };
    if excluded.iter().any(|p| p == person) || dir.approver(person).is_none() {
        return Vec::new();
    }
    record
        .requirements
        .iter()
        .filter(|r| dir.is_member(person, &r.group))
        .map(|r| r.group.as_str())
        .collect()
}

/// Whether `vote` may be counted on `record` at `vote.at`. Checks, in order: already
/// decided, expired, unknown approver, self-approval, group membership, duplicate.
pub fn check(record: &ActionRecord, dir: &Directory, vote: &Vote) -> Result<(), Refusal> {
    match record.status {
        Status::Pending => {}
        Status::Expired => {
            return Err(Refusal::new(
                RefusalCode::Expired,
                "the review window has ended",
            ))
        }
        s => {
            return Err(Refusal::new(
                RefusalCode::AlreadyDecided,
                format!("the request is already {s}"),
            ))
        }
    }
    if record.effective_status(vote.at) == Status::Expired {
        return Err(Refusal::new(
            RefusalCode::Expired,
            "the review window has ended",
        ));
    }
    if dir.approver(&vote.approver).is_none() {
        return Err(Refusal::new(
            RefusalCode::NotEligible,
            format!("{} is not an approver", vote.approver),
        ));
    }
    let Some(excluded) = excluded_people(record, dir) else {
        return Err(Refusal::new(
            RefusalCode::NotEligible,
            format!("agent {} is no longer in the directory", record.agent),
        ));
    };
    if excluded.contains(&vote.approver) {
        return Err(Refusal::new(
            RefusalCode::SelfApproval,
            format!(
                "{} is the requesting agent, its owner or the person it acts for",
                vote.approver
            ),
        ));
    }
    if counting_groups(record, dir, &vote.approver).is_empty() {
        let groups: Vec<&str> = record
            .requirements
            .iter()
            .map(|r| r.group.as_str())
            .collect();
        return Err(Refusal::new(
            RefusalCode::NotEligible,
            format!(
                "{} is not a member of a required group ({})",
                vote.approver,
                groups.join(", ")
            ),
        ));
    }
    if record.votes.iter().any(|v| v.approver == vote.approver) {
        return Err(Refusal::new(
            RefusalCode::Duplicate,
            format!("{} has already voted", vote.approver),
        ));
    }
    Ok(())
}

/// Counts the votes of a pending record: any deny by a counting person denies; approved
/// when every requirement has `quorum` distinct counting approvers; else pending. Votes of
/// people who no longer count (directory changed) are ignored.
pub fn tally(record: &ActionRecord, dir: &Directory) -> Tally {
    let mut approvers: Vec<&str> = Vec::new();
    for v in &record.votes {
        if counting_groups(record, dir, &v.approver).is_empty() {
            continue;
        }
        match v.decision {
            Decision::Deny => return Tally::Denied,
            Decision::Approve => {
                if !approvers.contains(&v.approver.as_str()) {
                    approvers.push(&v.approver);
                }
            }
        }
    }
    if record.requirements.is_empty() {
        // A pending request without requirements cannot be approved (fail closed).
        return Tally::Pending;
    }
    let met = record.requirements.iter().all(|req| {
        let n = approvers
            .iter()
            .filter(|a| dir.is_member(a, &req.group))
            .count();
        n >= req.quorum as usize
    });
    if met {
        Tally::Approved
    } else {
        Tally::Pending
    }
}

/// Sets the final fields of a record decided by its votes.
pub fn finish(record: &mut ActionRecord, tally: Tally, at: Timestamp) {
    match tally {
        Tally::Pending => {}
        Tally::Approved => {
            record.status = Status::Approved;
            record.decided_at = Some(at);
            record.reason = None;
        }
        Tally::Denied => {
            record.status = Status::Denied;
            record.decided_at = Some(at);
            let deny = record.votes.iter().find(|v| v.decision == Decision::Deny);
            record.reason = Some(match deny {
                Some(Vote {
                    approver,
                    reason: Some(r),
                    ..
                }) => format!("denied by {approver}: {r}"),
                Some(v) => format!("denied by {}", v.approver),
                None => "denied".into(),
            });
        }
    }
}

/// Marks a record expired at its `expires_at` (or `at`).
pub fn expire(record: &mut ActionRecord, at: Timestamp) {
    record.status = Status::Expired;
    record.decided_at = Some(record.expires_at.unwrap_or(at).min(at));
    record.reason = Some("review window ended without a decision".into());
}

/// Applies one vote to a record, purely.
pub fn judge(record: &ActionRecord, dir: &Directory, vote: &Vote) -> VoteOutcome {
    if let Err(r) = check(record, dir, vote) {
        return VoteOutcome::Refused(r);
    }
    let mut next = record.clone();
    next.votes.push(vote.clone());
    match tally(&next, dir) {
        Tally::Pending => VoteOutcome::Recorded(next),
        Tally::Approved => {
            finish(&mut next, Tally::Approved, vote.at);
            VoteOutcome::Approved(next)
        }
        Tally::Denied => {
            finish(&mut next, Tally::Denied, vote.at);
            VoteOutcome::Denied(next)
        }
    }
}

/// Whether `approver` may still vote on `record` at `now` (for `GET /v1/reviews`).
pub fn may_vote(record: &ActionRecord, dir: &Directory, approver: &str, now: Timestamp) -> bool {
    let probe = Vote {
        approver: approver.into(),
        decision: Decision::Approve,
        reason: None,
        channel: String::new(),
        at: now,
    };
    check(record, dir, &probe).is_ok()
}

/// Whether approver `person` may read `record` through `GET /v1/actions/:id` (never with its
/// grant): a member of one of its required groups (the people its review is shown to, even
/// those excluded from voting on it), someone who voted on it, or the owner of the requesting
/// agent. Requests final at creation (allowed or denied by policy alone) have no requirements
/// and no votes, so only their agent and its owner see them.
pub fn may_view(record: &ActionRecord, dir: &Directory, person: &str) -> bool {
    if dir.approver(person).is_none() {
        return false;
    }
    let owner = dir
        .agent(&record.agent)
        .map(|a| dir.resolve_person(&a.owner));
    owner.as_deref() == Some(person)
        || record.votes.iter().any(|v| v.approver == person)
        || record
            .requirements
            .iter()
            .any(|r| dir.is_member(person, &r.group))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::directory::tests::example as directory;
    use crate::model::{ActionRequest, Outcome, PolicyDecision, Requirement};
    use serde_json::json;

    pub const T0: Timestamp = Timestamp(1_800_000_000);

    /// A pending db.export by etl-bot created at `T0` (also the store tests' fixture).
    pub fn pending_record(
        id: &str,
        requirements: Vec<(&str, u32)>,
        on_behalf_of: Option<&str>,
    ) -> ActionRecord {
        let mut body = json!({"action":"db.export","resource":{"type":"Dataset","id":"customers"}});
        if let Some(o) = on_behalf_of {
            body["on_behalf_of"] = json!(o);
        }
        let req = ActionRequest::from_value(body).unwrap();
        let d = PolicyDecision {
            outcome: Outcome::Approval,
            requirements: requirements
                .into_iter()
                .map(|(g, q)| Requirement {
                    group: g.into(),
                    quorum: q,
                })
                .collect(),
            policies: vec!["p".into()],
            policy_hash: String::new(),
            reason: None,
            review_window_secs: 900,
            grant_ttl_secs: 300,
        };
        ActionRecord::new(id.into(), "etl-bot", &req, &d, T0).unwrap()
    }

    fn pending(requirements: Vec<(&str, u32)>, on_behalf_of: Option<&str>) -> ActionRecord {
        pending_record("req_1", requirements, on_behalf_of)
    }

    fn vote(who: &str, decision: Decision, at: i64) -> Vote {
        Vote {
            approver: who.into(),
            decision,
            reason: Some("because".into()),
            channel: "api".into(),
            at: Timestamp(T0.0 + at),
        }
    }

    fn refused(o: VoteOutcome) -> RefusalCode {
        match o {
            VoteOutcome::Refused(r) => r.code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn one_eligible_approval_approves() {
        let d = directory();
        let r = pending(vec![("dba", 1)], None);
        match judge(&r, &d, &vote("bob", Decision::Approve, 10)) {
            VoteOutcome::Approved(a) => {
                assert_eq!(a.status, Status::Approved);
                assert_eq!(a.decided_at, Some(Timestamp(T0.0 + 10)));
                assert_eq!(a.approvers(), vec!["bob"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn self_approval_is_refused() {
        let d = directory();
        // alice owns etl-bot and is in dba.
        let r = pending(vec![("dba", 1)], None);
        assert_eq!(
            refused(judge(&r, &d, &vote("alice", Decision::Approve, 1))),
            RefusalCode::SelfApproval
        );
        // carol is in dba, but the request is on her behalf.
        let r = pending(vec![("dba", 1)], Some("user:carol"));
        assert_eq!(
            refused(judge(&r, &d, &vote("carol", Decision::Approve, 1))),
            RefusalCode::SelfApproval
        );
        // Also when named through a channel alias: bob's Slack identity.
        let r = pending(vec![("dba", 1)], Some("slack:T0123/U0456"));
        assert_eq!(
            refused(judge(&r, &d, &vote("bob", Decision::Approve, 1))),
            RefusalCode::SelfApproval
        );
        let r = pending(
            vec![("dba", 1)],
            Some("teams:11111111-2222-3333-4444-555555555555/aaaaaaaa-0000-0000-0000-000000000001"),
        );
        assert_eq!(
            refused(judge(&r, &d, &vote("bob", Decision::Approve, 1))),
            RefusalCode::SelfApproval
        );
        // Self-approval refuses denies too (no self-service either way).
        let r = pending(vec![("dba", 1)], None);
        assert_eq!(
            refused(judge(&r, &d, &vote("alice", Decision::Deny, 1))),
            RefusalCode::SelfApproval
        );
        // The owner of an agent that vanished from the directory: nobody is eligible.
        let mut r = pending(vec![("dba", 1)], None);
        r.agent = "ghost-bot".into();
        assert_eq!(
            refused(judge(&r, &d, &vote("bob", Decision::Approve, 1))),
            RefusalCode::NotEligible
        );
    }

    #[test]
    fn non_members_and_strangers_are_refused() {
        let d = directory();
        let r = pending(vec![("dba", 1)], None);
        assert_eq!(
            refused(judge(&r, &d, &vote("dave", Decision::Approve, 1))),
            RefusalCode::NotEligible
        );
        assert_eq!(
            refused(judge(&r, &d, &vote("dave", Decision::Deny, 1))),
            RefusalCode::NotEligible
        );
        assert_eq!(
            refused(judge(&r, &d, &vote("mallory", Decision::Approve, 1))),
            RefusalCode::NotEligible
        );
        assert_eq!(
            refused(judge(&r, &d, &vote("etl-bot", Decision::Approve, 1))),
            RefusalCode::NotEligible
        );
        assert!(!may_vote(&r, &d, "dave", T0));
        assert!(may_vote(&r, &d, "bob", T0));
        assert!(!may_vote(&r, &d, "alice", T0));
    }

    #[test]
    fn quorum_two_counts_distinct_people() {
        let d = directory();
        let r = pending(vec![("security", 2)], None);
        let r1 = match judge(&r, &d, &vote("bob", Decision::Approve, 1)) {
            VoteOutcome::Recorded(r1) => r1,
            other => panic!("{other:?}"),
        };
        assert_eq!(r1.status, Status::Pending);
        // The same person again does not count twice.
        assert_eq!(
            refused(judge(&r1, &d, &vote("bob", Decision::Approve, 2))),
            RefusalCode::Duplicate
        );
        // Even if a duplicate slipped into storage, the tally counts people, not votes.
        let mut dup = r1.clone();
        dup.votes.push(vote("bob", Decision::Approve, 2));
        assert_eq!(tally(&dup, &d), Tally::Pending);
        match judge(&r1, &d, &vote("dave", Decision::Approve, 3)) {
            VoteOutcome::Approved(a) => assert_eq!(a.approvers(), vec!["bob", "dave"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_requirements_must_be_met() {
        let d = directory();
        // dba: alice(owner), bob, carol; sre: carol, dave.
        let r = pending(vec![("dba", 1), ("sre", 1)], None);
        let VoteOutcome::Recorded(r1) = judge(&r, &d, &vote("bob", Decision::Approve, 1)) else {
            panic!()
        };
        let VoteOutcome::Approved(_) = judge(&r1, &d, &vote("dave", Decision::Approve, 2)) else {
            panic!()
        };
        // carol is in both groups: one human counts once per group, so she alone meets both.
        let VoteOutcome::Approved(_) = judge(&r, &d, &vote("carol", Decision::Approve, 1)) else {
            panic!()
        };
        // dba: 2 needs bob and carol; carol + dave still lacks a second dba.
        let r = pending(vec![("dba", 2), ("sre", 1)], None);
        let VoteOutcome::Recorded(r1) = judge(&r, &d, &vote("carol", Decision::Approve, 1)) else {
            panic!()
        };
        let VoteOutcome::Recorded(r2) = judge(&r1, &d, &vote("dave", Decision::Approve, 2)) else {
            panic!()
        };
        let VoteOutcome::Approved(_) = judge(&r2, &d, &vote("bob", Decision::Approve, 3)) else {
            panic!()
        };
    }

    #[test]
    fn one_deny_denies_at_once() {
        let d = directory();
        let r = pending(vec![("security", 2)], None);
        let VoteOutcome::Recorded(r1) = judge(&r, &d, &vote("bob", Decision::Approve, 1)) else {
            panic!()
        };
        match judge(&r1, &d, &vote("erin", Decision::Deny, 2)) {
            VoteOutcome::Denied(x) => {
                assert_eq!(x.status, Status::Denied);
                assert_eq!(x.reason.as_deref(), Some("denied by erin: because"));
                assert_eq!(x.decided_at, Some(Timestamp(T0.0 + 2)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn final_states_never_change() {
        let d = directory();
        let r = pending(vec![("dba", 1)], None);
        let VoteOutcome::Approved(a) = judge(&r, &d, &vote("bob", Decision::Approve, 1)) else {
            panic!()
        };
        assert_eq!(
            refused(judge(&a, &d, &vote("carol", Decision::Deny, 2))),
            RefusalCode::AlreadyDecided
        );
        let VoteOutcome::Denied(x) = judge(&r, &d, &vote("bob", Decision::Deny, 1)) else {
            panic!()
        };
        assert_eq!(
            refused(judge(&x, &d, &vote("carol", Decision::Approve, 2))),
            RefusalCode::AlreadyDecided
        );
        let mut e = r.clone();
        expire(&mut e, Timestamp(T0.0 + 2000));
        assert_eq!(e.decided_at, e.expires_at);
        assert_eq!(
            refused(judge(&e, &d, &vote("bob", Decision::Approve, 2001))),
            RefusalCode::Expired
        );
        let mut allowed = r.clone();
        allowed.status = Status::Allowed;
        assert_eq!(
            refused(judge(&allowed, &d, &vote("bob", Decision::Approve, 1))),
            RefusalCode::AlreadyDecided
        );
    }

    #[test]
    fn expiry_without_sweep() {
        let d = directory();
        let r = pending(vec![("dba", 1)], None);
        // Window is 900 s: at 899 the vote counts, at 900 it is too late although status is still pending.
        assert!(matches!(
            judge(&r, &d, &vote("bob", Decision::Approve, 899)),
            VoteOutcome::Approved(_)
        ));
        assert_eq!(r.status, Status::Pending);
        assert_eq!(
            refused(judge(&r, &d, &vote("bob", Decision::Approve, 900))),
            RefusalCode::Expired
        );
        assert_eq!(
            refused(judge(&r, &d, &vote("bob", Decision::Deny, 5000))),
            RefusalCode::Expired
        );
        assert!(!may_vote(&r, &d, "bob", Timestamp(T0.0 + 900)));
    }

    #[test]
    fn no_requirements_never_approves() {
        let d = directory();
        let r = pending(vec![], None);
        assert_eq!(
            refused(judge(&r, &d, &vote("bob", Decision::Approve, 1))),
            RefusalCode::NotEligible
        );
        assert_eq!(tally(&r, &d), Tally::Pending);
    }

    #[test]
    fn who_may_view_a_request() {
        let d = directory();
        // etl-bot (owner alice) asks for a dba review.
        let r = pending(vec![("dba", 1)], Some("user:carol"));
        assert!(may_view(&r, &d, "bob"), "a dba member");
        assert!(
            may_view(&r, &d, "carol"),
            "a member, though excluded from voting"
        );
        assert!(may_view(&r, &d, "alice"), "the agent's owner");
        assert!(
            !may_view(&r, &d, "dave"),
            "not in dba, no vote, not the owner"
        );
        assert!(!may_view(&r, &d, "etl-bot"), "an agent is not an approver");
        assert!(!may_view(&r, &d, "mallory"), "unknown");
        // A voter keeps seeing it (e.g. after leaving the group).
        let mut voted = pending(vec![("security", 1)], None);
        assert!(!may_view(&voted, &d, "carol"));
        voted.votes.push(vote("carol", Decision::Deny, 1));
        assert!(may_view(&voted, &d, "carol"));
        // Final at creation: no requirements, so only the owner.
        let routine = pending(vec![], None);
        assert!(may_view(&routine, &d, "alice"));
        assert!(!may_view(&routine, &d, "bob"));
    }

    #[test]
    fn refusal_codes_and_statuses() {
        assert_eq!(
            serde_json::to_string(&RefusalCode::SelfApproval).unwrap(),
            "\"self_approval\""
        );
        assert_eq!(RefusalCode::NotEligible.http_status(), 403);
        assert_eq!(RefusalCode::SelfApproval.http_status(), 403);
        assert_eq!(RefusalCode::AlreadyDecided.http_status(), 409);
        assert_eq!(RefusalCode::Expired.http_status(), 409);
        assert_eq!(RefusalCode::Duplicate.http_status(), 409);
        let p = Refusal::new(RefusalCode::Duplicate, "x").to_problem();
        assert_eq!(p.type_, "urn:countersign:problem:duplicate");
    }
}
