//! Adaptive Cards (rules and limits in `shared::teams`).

use adapter::owner_of;
use serde_json::Value;
use shared::model::ActionRecord;
use shared::{review, teams, Timestamp};

/// The activity that shows `r` now: buttons while pending, else the outcome.
pub fn message(r: &ActionRecord, now: Timestamp) -> Value {
    teams::message(&card(r, now), &review::summary(r))
}

pub fn card(r: &ActionRecord, now: Timestamp) -> Value {
    teams::card(r, &owner_of(&r.agent), now)
}
