//! Where a request's Teams cards are kept: `teams:msg:<id>` =
//! `[{"service_url","conversation_id","activity_id"}, ...]` (what a later update needs).

use serde::{Deserialize, Serialize};
use shared::store::{self, Kv};
use shared::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub service_url: String,
    pub conversation_id: String,
    pub activity_id: String,
}

fn key(id: &str) -> String {
    format!("teams:msg:{id}")
}

pub fn load(kv: &impl Kv, id: &str) -> Result<Vec<Card>> {
    Ok(store::get_json(kv, &key(id))?.unwrap_or_default())
}

pub fn add(kv: &impl Kv, id: &str, item: Card) -> Result<()> {
    store::add_to_list(kv, &key(id), item)
}
