//! What a review card shows, whatever the chat platform: the facts a reviewer needs to judge a
//! request, and the outcome once decided. `slack` and `teams` only render these (escaping and
//! limits are theirs), so both channels always show the same context.

use serde_json::{Map, Value};

use crate::model::{ActionRecord, Decision, Status};

/// Longest context text shown (characters); the full request is one API call away.
pub const MAX_CONTEXT_TEXT: usize = 2800;

/// The card title.
pub fn title(r: &ActionRecord) -> String {
    format!("Approval requested: {}", r.action)
}

/// One-line summary (notification and fallback text).
pub fn summary(r: &ActionRecord) -> String {
    format!(
        "Approval requested: {} on {} {} by agent {} ({})",
        r.action, r.resource.type_, r.resource.id, r.agent, r.id
    )
}

/// The facts, in groups shown together: who asks what on which resource; the resource's
/// attributes; impact and justification; the context; what the policy requires. Values are
/// raw (the channel escapes them); optional groups are left out when empty.
pub fn fact_groups(r: &ActionRecord, owner: &str) -> Vec<Vec<(&'static str, String)>> {
    let mut groups = vec![vec![
        ("Agent", format!("{} (owner {owner})", r.agent)),
        (
            "On behalf of",
            r.on_behalf_of.clone().unwrap_or_else(|| "—".into()),
        ),
        ("Action", r.action.clone()),
        (
            "Resource",
            format!("{} {}", r.resource.type_, r.resource.id),
        ),
    ]];
    if !r.resource.attributes.is_empty() {
        groups.push(vec![("Attributes", compact(&r.resource.attributes))]);
    }
    groups.push(vec![
        ("Impact", r.impact.clone().unwrap_or_else(|| "—".into())),
        (
            "Justification",
            r.justification.clone().unwrap_or_else(|| "—".into()),
        ),
    ]);
    if !r.context.is_empty() {
        groups.push(vec![(
            "Context",
            truncate(&compact(&r.context), MAX_CONTEXT_TEXT),
        )]);
    }
    let reqs: Vec<String> = r
        .requirements
        .iter()
        .map(|q| format!("{} of {}", q.quorum, q.group))
        .collect();
    groups.push(vec![
        ("Policies", r.policies.join(", ")),
        ("Requires", reqs.join("; ")),
        (
            "Expires",
            r.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ),
    ]);
    groups
}

fn compact(m: &Map<String, Value>) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

/// The outcome of a decided request: the state, who made it, when, and a denial's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// `approver (channel)` of the votes that made the decision.
    pub by: Vec<String>,
    pub at: String,
    pub reason: Option<String>,
}

/// The outcome of `r` as it is (callers pass `r.at(now)` so expiry shows).
pub fn outcome(r: &ActionRecord) -> Outcome {
    let by = r
        .votes
        .iter()
        .filter(|v| match r.status {
            Status::Approved => v.decision == Decision::Approve,
            Status::Denied => v.decision == Decision::Deny,
            _ => false,
        })
        .map(|v| format!("{} ({})", v.approver, v.channel))
        .collect();
    Outcome {
        status: r.status,
        by,
        at: r.decided_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        reason: match r.status {
            Status::Denied => r.reason.clone(),
            _ => None,
        },
    }
}

impl Outcome {
    /// "Approved by alice (slack) at …", with the state through `bold` and names through
    /// `escape` (each channel's markup); a denial's reason on a second line.
    pub fn line(&self, bold: impl Fn(&str) -> String, escape: impl Fn(&str) -> String) -> String {
        let state = capitalize(self.status.as_str());
        let mut line = match self.status {
            Status::Pending => format!("{}: waiting for more approvals", bold("Pending")),
            Status::Expired => format!("{} at {}: no decision in time", bold(&state), self.at),
            _ if self.by.is_empty() => format!("{} at {}", bold(&state), self.at),
            _ => format!(
                "{} by {} at {}",
                bold(&state),
                escape(&self.by.join(", ")),
                self.at
            ),
        };
        if let Some(reason) = &self.reason {
            line.push_str(&format!("\n{} {}", bold("Reason:"), escape(reason)));
        }
        line
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// At most `max` characters of `s` (never cut inside a character), with `…` when shortened.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
