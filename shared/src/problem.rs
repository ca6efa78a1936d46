//! RFC 9457 problem details (`application/problem+json`).

use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The prefix of every problem `type` this service emits; the code follows it.
pub const TYPE_PREFIX: &str = "urn:countersign:problem:";

/// A problem details object: `type`, `title`, `status`, `detail`, plus the optional extension
/// member `field` (the offending field path on a 422) and `code` (a stable refusal code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Problem {
    /// A problem of `type` `urn:countersign:problem:<code>`, titled with the status' reason phrase.
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            type_: format!("{TYPE_PREFIX}{code}"),
            title: title_for(status).to_string(),
            status,
            detail: Some(detail.into()),
            field: None,
            code: Some(code.to_string()),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("problem serializes")
    }
}

/// The reason phrase of the statuses this service answers with.
pub fn title_for(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        s if (400..500).contains(&s) => "Client Error",
        _ => "Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn problem_json_shape() {
        let p = Problem::new(409, "already_decided", "request was approved");
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["type"], "urn:countersign:problem:already_decided");
        assert_eq!(v["title"], "Conflict");
        assert_eq!(v["status"], 409);
        assert_eq!(v["detail"], "request was approved");
        assert!(v.get("field").is_none());
        let back: Problem = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn errors_map_to_problems() {
        let e = Error::invalid(
            "context.ratio",
            "floating-point numbers have no Cedar counterpart",
        );
        let p = e.to_problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.field.as_deref(), Some("context.ratio"));
        assert!(p.detail.unwrap().contains("context.ratio"));
        let p = Error::Store("redis://secret@host failed".into()).to_problem();
        assert_eq!(p.status, 500);
        assert_eq!(p.detail.as_deref(), Some("internal error"));
        assert_eq!(Error::Unauthorized("x".into()).status(), 401);
        assert_eq!(Error::DigestMismatch("x".into()).status(), 422);
        assert_eq!(Error::Conflict("x".into()).status(), 409);
    }
}
