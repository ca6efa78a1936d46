//! The Teams variables (DESIGN.md): `teams_app_id`, `teams_app_password`, `teams_tenant_id`,
//! `teams_service_url`, `teams_conversation_id`, `teams_openid_url`, `teams_token_url`.

use adapter::{required_var, var};
use shared::Result;

pub const DEFAULT_OPENID_URL: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";
pub const DEFAULT_TOKEN_URL: &str = "https://login.microsoftonline.com";

/// The bot's Microsoft app id: the `aud` of inbound tokens, the `client_id` outbound.
pub fn app_id() -> Option<String> {
    var("teams_app_id")
}

pub fn app_password() -> Result<String> {
    required_var("teams_app_password")
}

pub fn tenant_id() -> Result<String> {
    required_var("teams_tenant_id")
}

pub fn service_url() -> Result<String> {
    required_var("teams_service_url")
}

pub fn conversation_id() -> Result<String> {
    required_var("teams_conversation_id")
}

pub fn openid_url() -> String {
    var("teams_openid_url").unwrap_or_else(|| DEFAULT_OPENID_URL.to_string())
}

pub fn token_url() -> String {
    var("teams_token_url").unwrap_or_else(|| DEFAULT_TOKEN_URL.to_string())
}
