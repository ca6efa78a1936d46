//! `countersign keys generate`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use shared::crypto::SigningKey;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Print a new Ed25519 signing key as the `signing_key` variable wants it, its kid and the
    /// public JWKS that GET /v1/keys will publish.
    Generate,
}

pub fn run(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Generate => print!("{}", render(&SigningKey::generate()?)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `name: value` lines first, so scripts can pick a value with `awk '/^signing_key:/ {print $2}'`.
fn render(key: &SigningKey) -> String {
    let seed = key.to_base64_seed();
    format!(
        "signing_key: {seed}\n\
         kid:         {kid}\n\
         jwks:        {jwks}\n\
         \n\
         # Keep it secret (it signs grants and the audit trail); set it where countersign runs:\n\
         export SPIN_VARIABLE_SIGNING_KEY='{seed}'\n",
        kid = key.kid(),
        jwks = key.jwks().to_json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::crypto::Jwks;

    fn field<'a>(out: &'a str, name: &str) -> &'a str {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} line in {out}"))
            .trim()
    }

    #[test]
    fn generated_key_loads_as_the_variable() {
        let key = SigningKey::generate().unwrap();
        let out = render(&key);
        let seed = field(&out, "signing_key");
        let loaded = SigningKey::from_base64_seed(seed).unwrap();
        assert_eq!(loaded.kid(), key.kid());
        assert_eq!(field(&out, "kid"), key.kid());
        let jwks = Jwks::parse(field(&out, "jwks")).unwrap();
        assert!(jwks.ed25519_keys().get(key.kid()).is_some());
        assert!(out.contains(&format!("export SPIN_VARIABLE_SIGNING_KEY='{seed}'")));
        // Standard padded base64 of 32 bytes.
        assert_eq!(seed.len(), 44);
        assert!(seed.ends_with('='));
    }

    #[test]
    fn every_key_is_new() {
        let a = render(&SigningKey::generate().unwrap());
        let b = render(&SigningKey::generate().unwrap());
        assert_ne!(field(&a, "signing_key"), field(&b, "signing_key"));
    }
}
