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
    /// A dependency the answer needs is down or broken (the policy set, the directory, the
    /// audit trail), so the request is refused without any effect: fail closed (503). Unlike
    /// the other 5xx errors its detail is sent to the client (it names what is unavailable and
    /// why, never a secret); the caller may retry once the deployment is fixed.
    #[error("{0}")]
    Unavailable(String),
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
            Error::Unavailable(_) => 503,
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
            Error::Unavailable(_) => "unavailable",
        }
    }

    /// RFC 9457 problem details. Server-side failures (5xx) get a generic detail so that no
    /// internals (paths, key names, secrets) reach a client; log `self` instead.
    /// [`Error::Unavailable`] is the exception: its detail is written for the client.
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let detail = if status >= 500 && !matches!(self, Error::Unavailable(_)) {
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

/// Prefixes the message of a configuration error with the file it comes from: a
/// `"<what>: ..."` message becomes `"<what> <path>: ..."`, so that an operator reading the
/// error knows which file to fix.
/// A config file's bytes as text: UTF-8, or a `Config` error naming the file.
pub(crate) fn file_text<'a>(
    bytes: &'a [u8],
    what: &str,
    path: &std::path::Path,
) -> Result<&'a str> {
    std::str::from_utf8(bytes)
        .map_err(|e| Error::Config(format!("{what} {}: not UTF-8 text: {e}", path.display())))
}

pub(crate) fn in_file(err: Error, what: &str, path: &std::path::Path) -> Error {
    match err {
        Error::Config(m) => {
            let rest = m
                .strip_prefix(what)
                .and_then(|r| r.strip_prefix(": "))
                .unwrap_or(&m);
            Error::Config(format!("{what} {}: {rest}", path.display()))
        }
        other => other,
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Malformed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_a_503_with_its_detail() {
        let e = Error::Unavailable("policy unavailable: policy /config/policy.cedar: bad".into());
        assert_eq!(e.status(), 503);
        assert_eq!(e.code(), "unavailable");
        let p = e.to_problem();
        assert_eq!(p.status, 503);
        assert_eq!(p.title, "Service Unavailable");
        assert_eq!(
            p.detail.as_deref(),
            Some("policy unavailable: policy /config/policy.cedar: bad")
        );
        // Other server-side errors keep their details inside.
        assert_eq!(
            Error::Config("secret path".into())
                .to_problem()
                .detail
                .as_deref(),
            Some("internal error")
        );
    }

    #[test]
    fn config_errors_name_their_file() {
        let path = std::path::Path::new("/config/policy.cedar");
        assert_eq!(
            in_file(Error::Config("policy: line 3: oops".into()), "policy", path),
            Error::Config("policy /config/policy.cedar: line 3: oops".into())
        );
        assert_eq!(
            in_file(Error::Config("other".into()), "policy", path),
            Error::Config("policy /config/policy.cedar: other".into())
        );
        assert_eq!(
            in_file(Error::invalid("f", "m"), "policy", path),
            Error::invalid("f", "m")
        );
    }
}
