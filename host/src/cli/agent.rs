//! `countersign agent webhook-secret <id>`.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use shared::webhook::{webhook_secret, REVIEWS_ID};

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Print the secret that signs an agent's callbacks (Countersign-Signature), derived from
    /// the `webhook_key` variable read from SPIN_VARIABLE_WEBHOOK_KEY.
    WebhookSecret {
        /// The agent id, or `reviews` for the review webhook's secret.
        #[arg(value_name = "AGENT_ID")]
        id: String,
    },
}

/// Read from the environment only: a secret on the command line would land in shell history
/// and `ps`.
const WEBHOOK_KEY_ENV: &str = "SPIN_VARIABLE_WEBHOOK_KEY";

pub fn run(command: AgentCommand) -> Result<ExitCode> {
    match command {
        AgentCommand::WebhookSecret { id } => {
            let key =
                std::env::var_os(WEBHOOK_KEY_ENV).map(|v| v.into_string().unwrap_or_default());
            println!("{}", secret(key.as_deref(), &id)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn secret(webhook_key: Option<&str>, id: &str) -> Result<String> {
    let key = match webhook_key {
        None => bail!(
            "{WEBHOOK_KEY_ENV} is not set: export the deployment's webhook_key variable first"
        ),
        Some("") => bail!("{WEBHOOK_KEY_ENV} is empty or not UTF-8"),
        Some(k) => k,
    };
    if id.trim().is_empty() {
        bail!("name an agent id (or `{REVIEWS_ID}` for the review webhook)");
    }
    Ok(webhook_secret(key, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_shared_derivation() {
        let s = secret(Some("k3y"), "etl-bot").unwrap();
        assert_eq!(s, webhook_secret("k3y", "etl-bot"));
        assert_eq!(s.len(), 64);
        assert_eq!(
            secret(Some("k3y"), "reviews").unwrap(),
            webhook_secret("k3y", REVIEWS_ID)
        );
        assert_ne!(secret(Some("k3y"), "deploy-bot").unwrap(), s);
        // A callback signed by the components verifies with the printed secret.
        let now = shared::Timestamp(1_800_000_000);
        let header = shared::webhook::sign(&webhook_secret("k3y", "etl-bot"), now, b"{}");
        shared::webhook::verify(&s, &header, b"{}", now, 300).unwrap();
    }

    #[test]
    fn missing_key_is_named() {
        let e = secret(None, "etl-bot").unwrap_err().to_string();
        assert!(e.contains("SPIN_VARIABLE_WEBHOOK_KEY"), "{e}");
        let e = secret(Some(""), "etl-bot").unwrap_err().to_string();
        assert!(e.contains("SPIN_VARIABLE_WEBHOOK_KEY"), "{e}");
        assert!(secret(Some("k"), " ").is_err());
    }
}
