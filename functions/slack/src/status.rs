//! Where a request's Slack messages are kept: `slack:msg:<id>` = `[{"channel","ts"}, ...]`.

use serde::{Deserialize, Serialize};
use shared::store::Kv;
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
    match kv.get(&key(id))? {
        Some(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
        None => Ok(Vec::new()),
    }
}

pub fn add(kv: &impl Kv, id: &str, m: Message) -> Result<()> {
    let mut all = load(kv, id)?;
    if !all.contains(&m) {
        all.push(m);
    }
    let bytes = serde_json::to_vec(&all).map_err(|e| shared::Error::Store(e.to_string()))?;
    kv.set(&key(id), &bytes)
}
