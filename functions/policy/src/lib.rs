//! The policy component: private `POST /internal/evaluate` (reached only by service chaining
//! from intake). Loads `/config/policy.cedar` and `/config/directory.toml`, evaluates the
//! request of the agent intake authenticated, and answers the [`PolicyDecision`] as JSON.
//!
//! Answers: 200 the decision; 400/422 problem details for a body Cedar cannot take (named
//! field); 500 problem details whose `detail` names the broken file and the error (this
//! answer reaches only intake, which refuses the request with a 503 and stores nothing: fail
//! closed). Anything not chained: 404.
//!
//! Also exports `wizer-initialize`, which does Cedar's one-time start-up work (see
//! [`warm_up`]) and parses the packaged policy and directory. `countersign up` calls it once
//! when it compiles the component and keeps a snapshot of the result (pre-initialisation), so
//! that every request's fresh instance starts with that work done. A request still reads both
//! files and uses what was parsed only while their bytes are the same; otherwise it parses
//! them itself. Other hosts never call it; the handler works the same either way.
//!
//! [`PolicyDecision`]: adapter::shared::model::PolicyDecision
//! [`warm_up`]: adapter::shared::policy::warm_up

use std::path::Path;
use std::sync::OnceLock;

use adapter::shared::directory::Directory;
use adapter::shared::model::EvaluateRequest;
use adapter::shared::policy::PolicyEngine;
use adapter::shared::problem::{Problem, CONTENT_TYPE};
use adapter::shared::{Error, Result};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

spin_sdk::wit_bindgen::generate!({
    inline: "package countersign:policy; world preinit { export wizer-initialize: func(); }",
    runtime_path: "spin_sdk::wit_bindgen::rt",
});

struct Preinit;

impl Guest for Preinit {
    fn wizer_initialize() {
        // A trap here makes the host log why and serve the component as built.
        if let Err(e) = adapter::shared::policy::warm_up() {
            panic!("policy warm-up failed: {e}");
        }
        // Files that do not parse are left for requests to report.
        if let (Ok(directory), Ok(policy)) = (DIRECTORY.read(), POLICY.read()) {
            let _ = PACKAGED.set(Packaged { directory, policy });
        }
    }
}

/// A config file's bytes and what they parse to.
struct Parsed<T> {
    bytes: Vec<u8>,
    value: T,
}

/// The policy and directory as parsed by `wizer-initialize`.
struct Packaged {
    directory: Parsed<Directory>,
    policy: Parsed<PolicyEngine>,
}

static PACKAGED: OnceLock<Packaged> = OnceLock::new();

/// A packaged config file: where it is, what it is called in errors, how it parses.
struct ConfigFile<T> {
    path: &'static str,
    what: &'static str,
    parse: fn(&Path, &[u8]) -> Result<T>,
}

const DIRECTORY: ConfigFile<Directory> = ConfigFile {
    path: adapter::DIRECTORY_PATH,
    what: "directory",
    parse: Directory::from_file,
};

const POLICY: ConfigFile<PolicyEngine> = ConfigFile {
    path: adapter::POLICY_PATH,
    what: "policy",
    parse: PolicyEngine::from_file,
};

impl<T> ConfigFile<T> {
    fn read(&self) -> Result<Parsed<T>> {
        let bytes = adapter::read_packaged(self.path, self.what)?;
        let value = (self.parse)(Path::new(self.path), &bytes)?;
        Ok(Parsed { bytes, value })
    }

    /// The file as it is now: the packaged value while its bytes are unchanged, else parsed
    /// into `fresh`.
    fn current<'a>(
        &self,
        packaged: Option<&'a Parsed<T>>,
        fresh: &'a mut Option<T>,
    ) -> Result<&'a T> {
        let bytes = adapter::read_packaged(self.path, self.what)?;
        match packaged {
            Some(p) if p.bytes == bytes => Ok(&p.value),
            _ => Ok(fresh.insert((self.parse)(Path::new(self.path), &bytes)?)),
        }
    }
}

export!(Preinit);

#[http_component]
async fn handle(req: Request) -> Response {
    if !adapter::is_internal(&req) || adapter::path(&req) != "/internal/evaluate" {
        return adapter::not_found();
    }
    if *req.method() != Method::Post {
        let mut r = adapter::method_not_allowed();
        r.set_header("allow", "POST");
        return r;
    }
    match evaluate(req.body()) {
        Ok(decision) => adapter::json_response(200, &decision),
        Err(e) => internal_problem(&e),
    }
}

fn evaluate(body: &[u8]) -> Result<adapter::shared::model::PolicyDecision> {
    // The request was validated by intake; `ActionRequest`'s Deserialize checks it again.
    let EvaluateRequest { agent, request } = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            Error::invalid("body", e.to_string())
        } else {
            Error::Malformed(e.to_string())
        }
    })?;
    // Both files are read on every request (every request gets a fresh instance), and parsed
    // unless they are what pre-initialisation parsed.
    let packaged = PACKAGED.get();
    let (mut fresh_dir, mut fresh_engine) = (None, None);
    let dir = DIRECTORY.current(packaged.map(|p| &p.directory), &mut fresh_dir)?;
    let engine = POLICY.current(packaged.map(|p| &p.policy), &mut fresh_engine)?;
    engine.check_groups(dir).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!(
            "{} against {}: {m}",
            adapter::POLICY_PATH,
            adapter::DIRECTORY_PATH
        )),
        other => other,
    })?;
    let agent = dir.agent(&agent).ok_or_else(|| {
        Error::Config(format!(
            "directory {}: agent {agent:?} is not defined",
            adapter::DIRECTORY_PATH
        ))
    })?;
    engine.evaluate(agent, &request)
}

/// Problem details for intake, with the full detail even for server-side errors: this answer
/// never leaves the app (the route is private), and intake needs the reason to say why the
/// policy is unavailable.
fn internal_problem(err: &Error) -> Response {
    let status = err.status();
    if status >= 500 {
        eprintln!("countersign policy: {err}");
    }
    let mut p = err.to_problem();
    p.detail = Some(match err {
        Error::Config(m) => m.clone(),
        other => other.to_string(),
    });
    Response::builder()
        .status(status)
        .header("content-type", CONTENT_TYPE)
        .body(Problem::to_json(&p))
        .build()
}
