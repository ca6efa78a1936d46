//! The crate's one error type. Every variant maps to an HTTP status and to RFC 9457 problem
//! details ([`Error::status`], [`Error::to_problem`]), so components turn any failure into the
//! contract's answer with one call.

use crate::problem::Problem;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body is not JSON at all (400).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// A field is missing, of the wrong type or out of range (422). `field` is a path such as
    /// `resource.attributes.tags[2]`.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No or bad credentials, bad grant signature, expired grant (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated but not allowed (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// (404)
    #[error("not found: {0}")]
    NotFound(String),
    /// Already decided, already consumed, idempotency key reused with another body (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A grant presented for another action, resource, context or requester (422).
    #[error("grant does not match the request: {0}")]
    DigestMismatch(String),
    /// Broken deployment configuration: directory, policy, keys (500).
    #[error("configuration: {0}")]
    Config(String),
    /// The key-value store failed or holds something unexpected (500).
    #[error("key-value store: {0}")]
    Store(String),
    /// Cryptographic failure on our side (500).
    #[error("crypto: {0}")]
    Crypto(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Malformed(_) => 400,
            Error::Invalid { .. } | Error::DigestMismatch(_) => 422,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::Config(_) | Error::Store(_) | Error::Crypto(_) => 500,
        }
    }

    /// A stable, machine-readable code (also the last segment of the problem `type`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::Invalid { .. } => "invalid_field",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::DigestMismatch(_) => "digest_mismatch",
            Error::Config(_) => "configuration",
            Error::Store(_) => "store",
            Error::Crypto(_) => "crypto",
        }
    }

    /// RFC 9457 problem details. Server-side failures (5xx) get a generic detail so that no
    /// internals (paths, key names, secrets) reach a client; log `self` instead.
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let detail = if status >= 500 {
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let mut p = Problem::new(status, self.code(), detail);
        if let Error::Invalid { field, .. } = self {
            p.field = Some(field.clone());
        }
        p
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Malformed(e.to_string())
    }
}
