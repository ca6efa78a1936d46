//! Helpers for driving the `countersign` binary as a separate process over real HTTP.

#![allow(dead_code)]

pub mod app;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub use hyper::{Method, StatusCode};

/// How long a host may take from spawn to its first HTTP answer. A cold compile cache costs
/// ~16 s with the debug binary on 2 cores, twice that when two tests compile at once.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for one request, so a hung host fails the test instead of stalling CI.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn host_binary() -> PathBuf {
    let path = std::env::var_os("COUNTERSIGN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/countersign"));
    assert!(
        path.is_file(),
        "host binary not found at {}: run `make build` first (or set COUNTERSIGN_BIN)",
        path.display()
    );
    path
}

/// A manifest under tests/apps/, checking that the components it needs were built.
pub fn app(name: &str) -> PathBuf {
    let probe = workspace_root().join("target/wasm32-wasip2/release/probe.wasm");
    assert!(
        probe.is_file(),
        "{} missing: run `make build` (cargo build --release --target wasm32-wasip2 -p probe -p trivial -p bad-import -p preinit)",
        probe.display()
    );
    workspace_root()
        .join("tests/apps")
        .join(name)
        .join("spin.toml")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A unique name, so tests sharing one Redis database never touch each other's keys.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn cache_dir() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("countersign-cache")
        .to_string_lossy()
        .into_owned()
}

/// A directory removed on drop, under cargo's scratch dir for integration tests.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runtime config selecting Redis (db 10, shared by every test) for the `default` store.
pub fn redis_runtime_config(dir: &TempDir) -> PathBuf {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:6379").is_ok(),
        "Redis is not reachable at 127.0.0.1:6379: start redis-server for the Redis tests"
    );
    dir.write(
        "runtime-config.toml",
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/10\"\n",
    )
}

/// Log lines of a host process (stderr and stdout), shared with the reader threads.
#[derive(Clone, Default)]
pub struct Log(
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
);

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    fn capture(&self, stream: impl Read + Send + 'static, tag: &'static str) {
        let log = self.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                // Echoed so a failing test shows the host's side of the story.
                eprintln!("[host {tag}] {line}");
                log.0.lock().unwrap().push(line);
            }
        });
        self.1.lock().unwrap().push(reader);
    }

    /// After the process exited: waits until its last lines are read (the pipes hit EOF).
    fn drain(&self) {
        for reader in self.1.lock().unwrap().drain(..) {
            let _ = reader.join();
        }
    }

    /// Waits up to `timeout` for a line matching `pred` (log lines may trail the response).
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        poll_until(timeout, || self.lines().into_iter().find(|l| pred(l))).await
    }
}

/// How to start a host.
pub struct HostBuilder {
    manifest: PathBuf,
    env: Vec<(String, String)>,
    runtime_config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    extra_args: Vec<String>,
}

impl HostBuilder {
    pub fn new(manifest: PathBuf) -> Self {
        HostBuilder {
            manifest,
            env: vec![
                // The test app has one required variable; most tests just need it satisfied.
                ("SPIN_VARIABLE_REGION".into(), "test-region".into()),
                // One compile cache for all tests, so only the first start pays for cranelift.
                ("COUNTERSIGN_CACHE_DIR".into(), cache_dir()),
            ],
            runtime_config: None,
            state_dir: None,
            extra_args: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn without_env(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn runtime_config(mut self, path: PathBuf) -> Self {
        self.runtime_config = Some(path);
        self
    }

    /// Uses a caller-owned state dir (to restart on the same state); else a fresh one.
    pub fn state_dir(mut self, path: &Path) -> Self {
        self.state_dir = Some(path.to_path_buf());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    fn command(&self, port: u16, state_dir: &Path) -> Command {
        let mut cmd = Command::new(host_binary());
        cmd.current_dir(workspace_root())
            .arg("up")
            .arg("-f")
            .arg(&self.manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--sweep-interval")
            .arg("0");
        if let Some(rc) = &self.runtime_config {
            cmd.arg("--runtime-config-file").arg(rc);
        }
        cmd.args(&self.extra_args);
        // Only the variables a test sets may reach the host.
        for (k, _) in std::env::vars() {
            if k.starts_with("SPIN_VARIABLE_") {
                cmd.env_remove(k);
            }
        }
        // The request log lines the tests read come with the default log filter.
        cmd.env_remove("RUST_LOG").env_remove("COUNTERSIGN_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Spawns the host and waits until its port accepts connections.
    pub async fn start(self) -> Host {
        let port = free_port();
        let owned_state = match &self.state_dir {
            Some(_) => None,
            None => Some(TempDir::new("state")),
        };
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| owned_state.as_ref().unwrap().path().to_path_buf());
        let mut child = self
            .command(port, &state_dir)
            .spawn()
            .expect("spawn countersign");
        let log = Log::default();
        log.capture(child.stderr.take().unwrap(), "stderr");
        log.capture(child.stdout.take().unwrap(), "stdout");
        let mut host = Host {
            child,
            port,
            log,
            client: client(),
            _state: owned_state,
        };
        // The host may bind its port before the app is loaded (compiled), so ready means an
        // HTTP answer; the reserved Spin path never reaches a component.
        let deadline = Instant::now() + START_TIMEOUT;
        let ready_url = host.url("/.well-known/spin/health");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let req = hyper::Request::get(ready_url.as_str())
                .body(Full::new(Bytes::new()))
                .expect("build request");
            let answered = tokio::select! {
                r = tokio::time::timeout(remaining, try_send(&host.client, req)) => match r {
                    Ok(r) => r.is_ok(),
                    Err(_) => panic!(
                        "countersign did not answer on port {port} within {START_TIMEOUT:?}:\n{}",
                        host.log.text()
                    ),
                },
                status = wait_for_exit(&mut host.child) => {
                    host.log.drain();
                    panic!(
                        "countersign exited during start-up ({status}):\n{}",
                        host.log.text()
                    );
                }
            };
            if answered {
                return host;
            }
            assert!(
                Instant::now() < deadline,
                "countersign did not answer on port {port} within {START_TIMEOUT:?}:\n{}",
                host.log.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a host that is expected to refuse to start; returns its exit status and output.
    pub async fn start_expecting_failure(self) -> (ExitStatus, String) {
        let state = TempDir::new("state");
        let port = free_port();
        let mut child = self
            .command(port, state.path())
            .spawn()
            .expect("spawn countersign");
        let log = Log::default();
        log.capture(child.stderr.take().unwrap(), "stderr");
        log.capture(child.stdout.take().unwrap(), "stdout");
        match tokio::time::timeout(START_TIMEOUT, wait_for_exit(&mut child)).await {
            Ok(status) => {
                log.drain();
                (status, log.text())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "countersign kept running for {START_TIMEOUT:?}, expected a start failure:\n{}",
                    log.text()
                );
            }
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A running host, killed on drop.
pub struct Host {
    child: Child,
    pub port: u16,
    pub log: Log,
    client: HttpClient,
    _state: Option<TempDir>,
}

/// A buffered response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }
}

impl Host {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, Bytes::new(), &[]).await
    }

    /// A GET that cannot reuse a pooled connection.
    pub async fn get_on_new_connection(&self, path: &str) -> Resp {
        let req = hyper::Request::get(self.url(path))
            .body(Full::new(Bytes::new()))
            .expect("build request");
        send(&client(), req).await
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Resp {
        self.request(Method::POST, path, body.into(), &[]).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = hyper::Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).expect("build request");
        send(&self.client, req).await
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL: the process dies wherever it is, as in a crash.
    pub fn kill(&self) {
        self.signal("-KILL");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .arg(which)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} failed");
    }

    /// A POST of JSON with a bearer token that may fail: `None` when no answer came (the host
    /// is gone), for load that outlives a crash.
    pub async fn try_post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Option<Resp> {
        let req = hyper::Request::post(self.url(path))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .expect("build request");
        match tokio::time::timeout(REQUEST_TIMEOUT, try_send(&self.client, req)).await {
            Ok(Ok(resp)) => Some(resp),
            _ => None,
        }
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, wait_for_exit(&mut self.child)).await {
            Ok(status) => {
                self.log.drain();
                status
            }
            Err(_) => panic!(
                "countersign did not exit within {timeout:?}:\n{}",
                self.log.text()
            ),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn try_send(
    client: &HttpClient,
    req: hyper::Request<Full<Bytes>>,
) -> Result<Resp, Box<dyn std::error::Error + Send + Sync>> {
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn send(client: &HttpClient, req: hyper::Request<Full<Bytes>>) -> Resp {
    let what = format!("{} {}", req.method(), req.uri());
    match tokio::time::timeout(REQUEST_TIMEOUT, try_send(client, req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => panic!("{what} failed: {e:?}"),
        Err(_) => panic!("{what} timed out after {REQUEST_TIMEOUT:?}"),
    }
}

async fn wait_for_exit(child: &mut Child) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request a [`StandIn`] received, in full.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "stand-in received a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A local HTTP server standing in for an outbound destination (an agent's callback URL, a
/// review webhook, a chat API); records what it receives and answers with a settable status.
pub struct StandIn {
    pub port: u16,
    pub hits: Arc<Mutex<Vec<String>>>,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    /// A `Location` sent with every answer (see [`StandIn::redirect`]).
    location: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Answers 200 with `reply`.
    pub async fn start(reply: &'static str) -> Self {
        Self::start_with_status(200, reply).await
    }

    pub async fn start_with_status(status: u16, reply: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let location: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let (seen, got, answer, to) = (
            hits.clone(),
            received.clone(),
            status.clone(),
            location.clone(),
        );
        let task = serve_http(listener, move |parts, body| {
            let (seen, got, answer, to) = (seen.clone(), got.clone(), answer.clone(), to.clone());
            async move {
                let line = format!("{} {}", parts.method, parts.uri);
                got.lock().unwrap().push(Received {
                    method: parts.method,
                    uri: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body,
                });
                seen.lock().unwrap().push(line);
                let mut resp =
                    hyper::Response::new(Full::new(Bytes::from_static(reply.as_bytes())));
                *resp.status_mut() =
                    StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
                if let Some(l) = to.lock().unwrap().as_deref() {
                    resp.headers_mut()
                        .insert("location", l.parse().expect("a header value"));
                }
                resp
            }
        });
        StandIn {
            port,
            hits,
            received,
            status,
            location,
            task,
        }
    }

    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The status of the answers from now on.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Answers from now on with a redirect: `status` (3xx) and `Location: location`.
    pub fn redirect(&self, status: u16, location: &str) {
        *self.location.lock().unwrap() = Some(location.to_string());
        self.set_status(status);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits up to `timeout` until `pred` holds for some received request; returns it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        poll_until(timeout, || self.received().into_iter().find(|r| pred(r))).await
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Drives all futures concurrently in the current task (avoids a futures-crate dependency).
pub async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Checks `probe` every 25 ms until it finds something or `timeout` has passed.
pub async fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Serves HTTP/1.1 on `listener` (a task per connection) until the returned task is aborted;
/// `handle` gets the head and the whole body of each request. For stand-ins of outside APIs.
pub fn serve_http<F, Fut>(
    listener: tokio::net::TcpListener,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(hyper::http::request::Parts, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(handle(parts, body).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
