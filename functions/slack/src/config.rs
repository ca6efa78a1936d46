//! The Slack variables (DESIGN.md): `slack_bot_token`, `slack_signing_secret`, `slack_channel`,
//! `slack_api_base`.

use adapter::{required_var, var};
use shared::Result;

pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

pub fn bot_token() -> Result<String> {
    required_var("slack_bot_token")
}

pub fn signing_secret() -> Result<String> {
    required_var("slack_signing_secret")
}

pub fn channel() -> Result<String> {
    required_var("slack_channel")
}

pub fn api_base() -> String {
    var("slack_api_base")
        .unwrap_or_else(|| DEFAULT_API_BASE.to_string())
        .trim_end_matches('/')
        .to_string()
}
