//! The operator commands: thin layers over `shared`, so what they print is exactly what the
//! components compute.

mod agent;
mod audit;
mod keys;
mod policy;
mod token;

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Signing keys (the `signing_key` variable).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Bearer tokens for agents, approvers and the admin.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Agent settings derived from the deployment's variables.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// The signed, hash-chained audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The Cedar policy set with its approval annotations.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keys(c) => keys::run(c),
        Command::Token(c) => token::run(c),
        Command::Agent(c) => agent::run(c),
        Command::Audit(c) => audit::run(c),
        Command::Policy(c) => policy::run(c),
    }
}

/// A file's text, or standard input for `-`.
fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
