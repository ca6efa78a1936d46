//! Where a request's Slack messages are kept: `slack:msg:<id>` = `[{"channel","ts"}, ...]`.

use serde::{Deserialize, Serialize};
use shared::store::{self, Kv};
use shared::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub channel: String,
    pub ts: String,
}

fn key(id: &str) -> String {
    format!("slack:msg:{id}")
}

pub fn load(kv: &impl Kv, id: &str) -> Result<Vec<Message>> {
    Ok(store::get_json(kv, &key(id))?.unwrap_or_default())
}

pub fn add(kv: &impl Kv, id: &str, item: Message) -> Result<()> {
    store::add_to_list(kv, &key(id), item)
}
