//! Inbound: Slack's request signature, checked over the raw body before any parsing.

use adapter::header;
use shared::{Result, Timestamp};
use spin_sdk::http::Request;

use crate::config;

pub fn verify(req: &Request) -> Result<()> {
    let secret = config::signing_secret()?;
    shared::slack::verify(
        &secret,
        header(req, "x-slack-request-timestamp"),
        header(req, "x-slack-signature"),
        req.body(),
        Timestamp::now(),
    )
}
