//! countersign's core library, shared by the six Spin components, the local runtime's CLI and
//! the tests. Plain Rust: no I/O besides what callers hand in (a [`store::Kv`], the directory
//! text, the signing key), no clock reads in the rules (every function takes `now`).
//!
//! Modules:
//! - [`model`]: the `POST /v1/actions` body (strict validation), the stored request record and
//!   its public view, the digest, the policy decision.
//! - [`problem`]: RFC 9457 problem details; [`error`]: the crate's error type (→ HTTP status).
//! - [`directory`]: `config/directory.toml`, bearer tokens, callback prefixes, identities.
//! - [`policy`] (feature `policy`): Cedar evaluation with approval annotations.
//! - [`rules`]: the vote judge (pure); [`vote`]: the internal vote protocol every channel uses.
//! - [`review`]: what a review card shows; [`slack`], [`teams`]: the chat platforms' rules.
//! - [`store`]: the key-value trait and the exactly-once request state machine on it.
//! - [`crypto`], [`jws`], [`grant`], [`webhook`]: keys, JWKS, JWS, grants, webhook signatures.
//! - [`audit`]: the signed, hash-chained audit trail and its verifier.
//! - [`canon`]: RFC 8785 canonical JSON, hashes, encodings; [`time`]: timestamps.

pub mod audit;
pub mod canon;
pub mod crypto;
pub mod directory;
pub mod error;
pub mod grant;
pub mod jws;
pub mod model;
#[cfg(feature = "policy")]
pub mod policy;
pub mod problem;
pub mod review;
pub mod rules;
pub mod slack;
pub mod store;
pub mod teams;
pub mod time;
pub mod vote;
pub mod webhook;

pub use error::{Error, Result};
pub use time::Timestamp;

/// Where the components find the directory (`files` in spin.toml mount `config/` at `/config`).
pub const DIRECTORY_PATH: &str = "/config/directory.toml";
/// Where the policy component finds the policy set.
pub const POLICY_PATH: &str = "/config/policy.cedar";
