//! Block Kit cards (rules and limits in `shared::slack`).

use adapter::owner_of;
use serde_json::Value;
use shared::model::{ActionRecord, Status};
use shared::slack;
use shared::Timestamp;

/// `(text, blocks)` of the card that shows `r` now: buttons while pending, else the outcome.
pub fn card(r: &ActionRecord, now: Timestamp) -> (String, Vec<Value>) {
    let owner = owner_of(&r.agent);
    if r.effective_status(now) == Status::Pending {
        (slack::fallback_text(r), slack::review_blocks(r, &owner))
    } else {
        let at = r.at(now);
        (
            slack::truncate(
                &format!("{} — {}", slack::fallback_text(&at), at.status.as_str()),
                slack::MAX_TEXT,
            ),
            slack::outcome_blocks(r, &owner, now),
        )
    }
}
