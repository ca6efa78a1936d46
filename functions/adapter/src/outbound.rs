//! Outbound HTTP over `wasi:http/outgoing-handler` with request options (timeouts), which the
//! SDK's `send` does not set: every call to the outside (webhooks, Slack, Microsoft) costs at
//! most one bounded attempt, never a hung handler. Blocking: a component instance serves one
//! request at a time.

use std::time::Duration;

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

/// How long a call may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may take to start answering, and between two chunks of its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer body read (bigger answers are an error, not a truncation).
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// An answer: any HTTP status is one.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, when the answer carries one.
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request; transport failures (refused, timed out, not allowed, answer too big) are
/// errors. Messages never carry the URL's query or credentials.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "not an absolute URL".to_string())?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => return Err("not an http(s) URL".into()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') {
        return Err("the URL names no host".into());
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    // Fragments are never sent.
    let path = path.split('#').next().unwrap_or("/").to_string();
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => return Err(format!("unsupported method {other}")),
    };
    let has_body = !matches!(method, Method::Get | Method::Delete) || !body.is_empty();

    let fields = Fields::new();
    if has_body {
        // A declared length, not chunked encoding: simple receivers expect one.
        fields
            .append("content-length", body.len().to_string().as_bytes())
            .map_err(|e| format!("header content-length: {e:?}"))?;
    }
    for (name, value) in headers {
        fields
            .append(&name.to_ascii_lowercase(), value.as_bytes())
            .map_err(|e| format!("header {name}: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    let ok = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(authority)).is_ok()
        && request.set_path_with_query(Some(&path)).is_ok();
    if !ok {
        return Err("the URL cannot be sent".into());
    }
    let outgoing_body = request
        .body()
        .map_err(|_| "request body unavailable".to_string())?;
    let options = RequestOptions::new();
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    // A host may not support a timeout; it then applies its own.
    let _ = options.set_connect_timeout(Some(nanos(CONNECT_TIMEOUT)));
    let _ = options.set_first_byte_timeout(Some(nanos(RESPONSE_TIMEOUT)));
    let _ = options.set_between_bytes_timeout(Some(nanos(RESPONSE_TIMEOUT)));
    let future =
        outgoing_handler::handle(request, Some(options)).map_err(|e| failed(&method, &e))?;
    {
        let stream = outgoing_body
            .write()
            .map_err(|_| "request body unavailable".to_string())?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("sending the body failed: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None)
        .map_err(|e| format!("sending the body failed: {e:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(failed(&method, &code)),
        Some(Err(())) | None => return Err(format!("{} failed: no response", name(&method))),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    let incoming = response
        .consume()
        .map_err(|_| "answer body unavailable".to_string())?;
    let body = read_all(&incoming)?;
    drop(incoming);
    Ok(Reply {
        status,
        body,
        retry_after,
    })
}

fn read_all(incoming: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = incoming
        .stream()
        .map_err(|_| "answer body unavailable".to_string())?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if out.len() + chunk.len() > MAX_REPLY_BYTES {
                    return Err(format!("answer over {MAX_REPLY_BYTES} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(out),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!(
                    "reading the answer failed: {}",
                    e.to_debug_string()
                ))
            }
        }
    }
}

fn name(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        _ => "POST",
    }
}

fn failed(m: &Method, code: &ErrorCode) -> String {
    let what = match code {
        ErrorCode::ConnectionTimeout => "connection timed out".to_string(),
        ErrorCode::ConnectionReadTimeout | ErrorCode::ConnectionWriteTimeout => {
            "timed out".to_string()
        }
        ErrorCode::ConnectionRefused => "connection refused".to_string(),
        ErrorCode::HttpRequestDenied => "host not allowed (allowed_outbound_hosts)".to_string(),
        ErrorCode::DnsError(_) => "DNS lookup failed".to_string(),
        other => format!("{other:?}"),
    };
    format!("{} failed: {what}", name(m))
}
