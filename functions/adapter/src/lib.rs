//! The Spin side that every countersign component shares, so each component stays a thin
//! adapter (parse, authenticate, call `shared`, answer): `shared::store::Kv` over
//! `wasi:keyvalue`, application variables, the packaged config files, JSON and problem-details
//! answers, bearer authentication, and calls to sibling components through service chaining.
//!
//! Only the interfaces Spin 3.x/4.x offer everywhere are used: wasi:http, wasi:keyvalue
//! (store, atomics, batch), `fermyon:spin/variables` and wasi:filesystem.

use serde::Serialize;
use shared::audit::AuditEvent;
use shared::crypto::SigningKey;
use shared::directory::{bearer_token, token_matches_sha256, Agent, Approver, Directory};
use shared::store::Kv;
use shared::{Error, Result};
use spin_sdk::http::{Method, OutgoingResponse, Request, Response, ResponseOutparam};
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};

pub use shared;

pub mod jobs;
pub mod outbound;

/// Largest JSON body the API accepts (DESIGN.md: 413 beyond).
pub const MAX_BODY: usize = 64 * 1024;

/// Where spin.toml mounts `config/`.
pub const DIRECTORY_PATH: &str = "/config/directory.toml";
pub const POLICY_PATH: &str = "/config/policy.cedar";

// ---------------------------------------------------------------------------------------------
// Key-value

/// `shared::store::Kv` on the `default` store label.
pub struct SpinKv {
    bucket: store::Bucket,
}

fn kv_error(e: store::Error) -> Error {
    Error::Store(match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(m) => m,
    })
}

impl SpinKv {
    pub fn open() -> Result<SpinKv> {
        let bucket = store::open("default").map_err(kv_error)?;
        Ok(SpinKv { bucket })
    }
}

impl Kv for SpinKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.bucket.get(key).map_err(kv_error)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.bucket.set(key, value).map_err(kv_error)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.bucket.delete(key).map_err(kv_error)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        atomics::increment(&self.bucket, key, delta).map_err(kv_error)
    }

    // The batch calls make no host call for an empty list (a chunked delete usually has
    // nothing to delete).
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found = batch::get_many(&self.bucket, keys).map_err(kv_error)?;
        // The answer pairs values with keys. Hosts usually answer in the order asked, every
        // key once: then the values are taken as they are, else matched up by key.
        if found.len() == keys.len() && found.iter().zip(keys).all(|((k, _), asked)| k == asked) {
            return Ok(found.into_iter().map(|(_, v)| v).collect());
        }
        let mut by_key: std::collections::HashMap<String, Option<Vec<u8>>> =
            found.into_iter().collect();
        Ok(keys.iter().map(|k| by_key.remove(k).flatten()).collect())
    }

    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        batch::set_many(&self.bucket, items).map_err(kv_error)
    }

    fn delete_many(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        batch::delete_many(&self.bucket, keys).map_err(kv_error)
    }
}

// ---------------------------------------------------------------------------------------------
// Variables and configuration

/// An application variable; `None` when undefined or empty (an empty channel variable means
/// the channel is off).
pub fn var(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// A variable the component cannot work without.
pub fn required_var(name: &str) -> Result<String> {
    var(name).ok_or_else(|| Error::Config(format!("variable `{name}` is not set")))
}

pub fn signing_key() -> Result<SigningKey> {
    SigningKey::from_base64_seed(&required_var("signing_key")?)
}

/// The `signing_key` variable's seed, checked but not yet made a key (which costs a scalar
/// multiplication).
pub fn signing_seed() -> Result<[u8; 32]> {
    shared::crypto::seed_from_base64(&required_var("signing_key")?)
}

pub fn directory() -> Result<Directory> {
    Directory::load(DIRECTORY_PATH)
}

/// Reads a packaged file (`/config/...`) through wasi:filesystem itself, not through
/// wasi-libc, which remembers the folders it was handed first: a pre-initialiser that read a
/// file with `std::fs` would leave a snapshot that holds its own folders for good. Every
/// handle taken here is dropped before this returns. Errors name `what` and the path.
pub fn read_packaged(path: &str, what: &str) -> Result<Vec<u8>> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let fail = |why: String| Error::Config(format!("{what} {path}: {why}"));
    let (folder, rest) = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find_map(|(d, name)| {
            let rest = path
                .strip_prefix(name.trim_end_matches('/'))?
                .strip_prefix('/')?;
            Some((d, rest.to_string()))
        })
        .ok_or_else(|| fail("no such folder".into()))?;
    let file = folder
        .open_at(
            PathFlags::empty(),
            &rest,
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    loop {
        let (chunk, end) = file
            .read(64 << 10, bytes.len() as u64)
            .map_err(|e| fail(e.to_string()))?;
        bytes.extend_from_slice(&chunk);
        if end || chunk.is_empty() {
            return Ok(bytes);
        }
    }
}

/// The request store on the component's `default` key-value store.
pub fn store() -> Result<shared::store::Store<SpinKv>> {
    Ok(shared::store::Store::new(SpinKv::open()?))
}

/// The owner of `agent` as the directory says, for review cards ("unknown" when unreadable).
pub fn owner_of(agent: &str) -> String {
    directory()
        .ok()
        .and_then(|d| d.agent(agent).map(|a| a.owner.clone()))
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Reads an incoming request whole; one that cannot be read is answered 400.
pub async fn read_incoming(
    incoming: spin_sdk::http::IncomingRequest,
) -> std::result::Result<Request, Response> {
    use spin_sdk::http::conversions::TryFromIncomingRequest;
    Request::try_from_incoming_request(incoming)
        .await
        .map_err(|_| problem_response(400, "malformed", "the request could not be read"))
}

/// The routes every chat channel (slack, teams) serves.
pub enum ChatRoute {
    /// `POST` on the platform's public endpoint.
    Platform,
    /// `POST /internal/notify` by service chaining: post the review card.
    Notify,
    /// `POST /internal/update` by service chaining: redraw the request's cards.
    Update,
    /// Anything else, already answered (405 on the platform endpoint, else 404).
    Other(Response),
}

/// Which chat route `req` is, `public` being the platform's endpoint.
pub fn chat_route(req: &Request, public: &str) -> ChatRoute {
    let post = matches!(req.method(), Method::Post);
    match req.path() {
        p if p == public && post => ChatRoute::Platform,
        p if p == public => {
            let mut r = problem_response(405, "method_not_allowed", "use POST");
            r.set_header("allow", "POST");
            ChatRoute::Other(r)
        }
        "/internal/notify" if post && is_internal(req) => ChatRoute::Notify,
        "/internal/update" if post && is_internal(req) => ChatRoute::Update,
        _ => ChatRoute::Other(not_found()),
    }
}

/// The path without the query.
pub fn path(req: &Request) -> &str {
    req.path()
}

/// A query parameter (first occurrence), decoded as a form would be.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    form_urlencoded::parse(req.query().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.header(name).and_then(|v| v.as_str())
}

/// Whether the request came from a sibling component through service chaining. Internal
/// paths are not under any public route, and this is the second lock: Spin strips an
/// inbound `Host: *.spin.internal`, so only chained requests carry such a URL.
pub fn is_internal(req: &Request) -> bool {
    header(req, "spin-full-url")
        .and_then(|url| url.split_once("://"))
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
        .map(|authority| {
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            host.to_ascii_lowercase().ends_with(".spin.internal")
        })
        .unwrap_or(false)
}

/// The body, refused when over [`MAX_BODY`] (413) or when it is not declared as JSON (415).
pub fn json_body(req: &Request) -> std::result::Result<&[u8], Response> {
    let body = req.body();
    if body.len() > MAX_BODY {
        return Err(problem_response(
            413,
            "too_large",
            &format!("the body exceeds {MAX_BODY} bytes"),
        ));
    }
    let content_type = header(req, "content-type").unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(problem_response(
            415,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Authentication: identities are proven by tokens, never taken from a body.

fn presented_token(req: &Request) -> Result<&str> {
    header(req, "authorization")
        .and_then(bearer_token)
        .ok_or_else(|| Error::Unauthorized("send Authorization: Bearer <token>".into()))
}

pub fn authenticate_agent<'d>(req: &Request, dir: &'d Directory) -> Result<&'d Agent> {
    let token = presented_token(req)?;
    dir.agent_by_token(token)
        .ok_or_else(|| Error::Unauthorized("unknown agent token".into()))
}

pub fn authenticate_approver<'d>(req: &Request, dir: &'d Directory) -> Result<&'d Approver> {
    let token = presented_token(req)?;
    dir.approver_by_token(token)
        .ok_or_else(|| Error::Unauthorized("unknown approver token".into()))
}

/// The admin token (audit export, sweep), checked against the `admin_token_sha256` variable.
pub fn authenticate_admin(req: &Request) -> Result<()> {
    let token = presented_token(req)?;
    let expected = var("admin_token_sha256")
        .ok_or_else(|| Error::Unauthorized("no admin token is configured".into()))?;
    if token_matches_sha256(token, &expected) {
        Ok(())
    } else {
        Err(Error::Unauthorized("wrong admin token".into()))
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

pub fn json_response<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body)
            .build(),
        Err(e) => problem(&Error::Crypto(format!("cannot encode the answer: {e}"))),
    }
}

/// The problem-details answer for an error. Server-side details are logged, not sent.
pub fn problem(err: &Error) -> Response {
    if err.status() >= 500 {
        eprintln!("countersign: {err}");
    }
    let p = err.to_problem();
    Response::builder()
        .status(p.status)
        .header("content-type", shared::problem::CONTENT_TYPE)
        .body(p.to_json())
        .build()
}

pub fn problem_response(status: u16, code: &str, detail: &str) -> Response {
    let p = shared::problem::Problem::new(status, code, detail);
    Response::builder()
        .status(status)
        .header("content-type", shared::problem::CONTENT_TYPE)
        .body(p.to_json())
        .build()
}

/// Sends the answer now, so the handler can keep working afterwards (deliveries that must
/// not delay the caller, such as Slack's 3-second acknowledgement).
pub async fn respond(out: ResponseOutparam, mut response: Response) {
    let body = std::mem::take(response.body_mut());
    match OutgoingResponse::try_from(response) {
        Ok(outgoing) => {
            if let Err(e) = out.set_with_body(outgoing, body).await {
                eprintln!("countersign: could not send the answer: {e}");
            }
        }
        Err(e) => eprintln!("countersign: could not build the answer: {e}"),
    }
}

pub fn not_found() -> Response {
    problem_response(404, "not_found", "no such route")
}

pub fn method_not_allowed() -> Response {
    problem_response(
        405,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

// ---------------------------------------------------------------------------------------------
// Outbound

/// The `{"id"}` body of an internal chat call (`/internal/notify`, `/internal/update`).
pub fn request_id_in_body(req: &Request) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(req.body())?;
    v["id"]
        .as_str()
        .filter(|s| shared::model::is_request_id(s))
        .map(str::to_string)
        .ok_or_else(|| Error::invalid("id", "is not a request id"))
}

/// A POST of JSON; the answer's status and body. Transport failures are errors, any HTTP
/// status is an answer.
pub async fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>)> {
    let mut builder = Request::builder();
    builder
        .method(Method::Post)
        .uri(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder.header(*k, *v);
    }
    let request = builder.body(body).build();
    let response: Response = spin_sdk::http::send(request)
        .await
        .map_err(|e| Error::Store(format!("POST {} failed: {e}", redact(url))))?;
    Ok((*response.status(), response.into_body()))
}

/// Calls an internal path of a sibling component (service chaining).
pub async fn call_internal<T: Serialize + ?Sized>(
    component: &str,
    path: &str,
    value: &T,
) -> Result<(u16, Vec<u8>)> {
    let body = serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))?;
    post_json(
        &format!("http://{component}.spin.internal{path}"),
        &[],
        body,
    )
    .await
}

/// Appends an event to the audit trail through the audit component, its only writer.
pub async fn audit(event: &AuditEvent) -> Result<()> {
    audit_all(std::slice::from_ref(event)).await
}

/// Appends events in order, with one call (the audit component numbers them consecutively).
pub async fn audit_all(events: &[AuditEvent]) -> Result<()> {
    let (status, answer) = call_internal("audit", "/internal/append", events).await?;
    if status == 200 || status == 201 {
        Ok(())
    } else {
        Err(Error::Store(format!(
            "audit append answered {status}: {}",
            String::from_utf8_lossy(&answer)
        )))
    }
}

/// Records an event; a failure to record is logged (the caller's answer stands either way).
pub async fn audit_event(
    type_: &str,
    request_id: Option<&str>,
    actor: &str,
    data: serde_json::Value,
) {
    audit_events(&[AuditEvent::new(type_, request_id, actor, data)]).await
}

/// Records events in order with one append; a failure is logged.
pub async fn audit_events(events: &[AuditEvent]) {
    if let Err(e) = audit_all(events).await {
        let types: Vec<&str> = events.iter().map(|e| e.type_.as_str()).collect();
        eprintln!("countersign: audit of {} failed: {e}", types.join(", "));
    }
}

/// The URL without query or userinfo, for messages.
fn redact(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_string(),
    }
}
