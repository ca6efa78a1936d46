//! `countersign token new`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use shared::canon::{b64url, random_bytes, sha256_hex};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a new random bearer token and its SHA-256 (what config/directory.toml's
    /// `token_sha256` or the `admin_token_sha256` variable holds).
    New,
}

/// A prefix makes leaked tokens easy to recognise (secret scanners, logs).
const PREFIX: &str = "cs_";

pub fn run(command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::New => {
            let token = new_token()?;
            print!("{}", render(&token));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// 32 random bytes, base64url without padding: URL- and header-safe.
fn new_token() -> Result<String> {
    Ok(format!("{PREFIX}{}", b64url(&random_bytes::<32>()?)))
}

fn render(token: &str) -> String {
    let hash = sha256_hex(token.as_bytes());
    format!(
        "token:        {token}\n\
         token_sha256: {hash}\n\
         \n\
         # Hand the token to its holder; keep only the hash in configuration:\n\
         #   an agent or approver: token_sha256 = [\"{hash}\"] in config/directory.toml\n\
         #   the admin token:      export SPIN_VARIABLE_ADMIN_TOKEN_SHA256={hash}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::directory::{token_matches_sha256, Directory};

    #[test]
    fn token_is_random_url_safe_and_its_hash_matches() {
        let token = new_token().unwrap();
        let body = token.strip_prefix(PREFIX).unwrap();
        assert_eq!(shared::canon::b64url_decode(body).unwrap().len(), 32);
        assert!(token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(new_token().unwrap(), token);

        let out = render(&token);
        let hash = out
            .lines()
            .find_map(|l| l.strip_prefix("token_sha256:"))
            .unwrap()
            .trim();
        assert!(token_matches_sha256(&token, hash));
        // What the directory does with it.
        let dir = Directory::parse(&format!(
            "[[agent]]\nid = \"a\"\nowner = \"o\"\ntoken_sha256 = [\"{hash}\"]\n"
        ))
        .unwrap();
        assert_eq!(dir.agent_by_token(&token).unwrap().id, "a");
    }
}
