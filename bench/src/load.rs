//! The load generator: HTTP/1.1 keep-alive connections (hyper 1, one handshake per connection),
//! closed-loop saturation and open-loop fixed-rate runs, latencies in an HDR histogram.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::scenarios::Scenario;

pub type Sender = SendRequest<Full<Bytes>>;

/// Latencies are recorded in microseconds, up to one minute, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What one run measured. Only successful answers count towards throughput and latency.
pub struct Stats {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Connections opened during the run (open loop: the pool's size at the end).
    pub connections: usize,
    /// Closed loop: requests in flight at a time.
    pub concurrency: usize,
    /// Open loop: how late each request was handed to its connection, after its due time
    /// (the load generator's own delay, included in `latency_us`).
    pub send_lag_us: Option<Histogram<u64>>,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            latency_us: histogram(),
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            connections: 0,
            concurrency: 0,
            send_lag_us: None,
        }
    }

    pub fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    pub fn merge(&mut self, other: Stats) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.connections += other.connections;
    }

    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A quantile (0..=1) in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }
}

/// The request of a scenario, ready to be stamped out many times.
pub struct Template {
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    host: HeaderValue,
    pub expect_status: u16,
    numbered: bool,
}

impl Template {
    pub fn new(scenario: &Scenario, addr: SocketAddr) -> Result<Self> {
        let mut headers = Vec::new();
        for (k, v) in &scenario.headers {
            headers.push((
                HeaderName::try_from(k.as_str()).with_context(|| format!("header name {k:?}"))?,
                HeaderValue::try_from(v.as_str()).with_context(|| format!("header value {v:?}"))?,
            ));
        }
        let numbered = scenario.path.contains("{seq}")
            || std::str::from_utf8(&scenario.body).is_ok_and(|b| b.contains("{seq}"));
        Ok(Template {
            method: scenario.method.clone(),
            path: scenario.path.clone(),
            headers,
            body: scenario.body.clone(),
            host: HeaderValue::try_from(addr.to_string())?,
            expect_status: scenario.expect_status,
            numbered,
        })
    }

    pub fn build(&self, seq: u64) -> Request<Full<Bytes>> {
        let (path, body) = if self.numbered {
            let n = seq.to_string();
            let body = String::from_utf8_lossy(&self.body).replace("{seq}", &n);
            (self.path.replace("{seq}", &n), Bytes::from(body))
        } else {
            (self.path.clone(), self.body.clone())
        };
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(path)
            .header(http::header::HOST, self.host.clone());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req.body(Full::new(body)).expect("valid request")
    }
}

pub async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer; returns its status.
async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<u16> {
    sender.ready().await.context("connection not ready")?;
    let resp = sender.send_request(req).await.context("request")?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.context("reading body")?;
    Ok(status)
}

/// Sends one request and reads the whole answer; returns its status and body.
pub async fn exchange_full(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
    sender.ready().await.context("connection not ready")?;
    let resp = sender.send_request(req).await.context("request")?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.context("reading body")?;
    Ok((status, body.to_bytes()))
}

/// One `GET` on a fresh connection (readiness probe); returns the status.
pub async fn probe(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut sender = connect(addr).await?;
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    tokio::time::timeout(Duration::from_secs(10), exchange(&mut sender, req))
        .await
        .context("probe timed out")?
}

/// When a closed-loop run stops.
#[derive(Clone, Copy)]
pub enum Until {
    Elapsed(Duration),
    Requests(u64),
}

/// Why one operation of a worker failed.
pub struct Failure {
    pub message: String,
    /// The connection is unusable (transport error): the worker opens a new one.
    pub reconnect: bool,
}

impl Failure {
    /// A transport (or protocol) failure: the next operation gets a new connection.
    pub fn broken(e: &anyhow::Error) -> Self {
        Failure {
            message: format!("{e:#}"),
            reconnect: true,
        }
    }

    /// An unexpected answer on a connection that stays usable.
    pub fn answer(message: String) -> Self {
        Failure {
            message,
            reconnect: false,
        }
    }
}

/// One operation of a closed-loop worker (a request, or a sequence of them): `seq` is unique
/// within the run. Returns the latency to record.
pub trait Op: Send + Sync + 'static {
    fn once(
        &self,
        sender: &mut Sender,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<Duration, Failure>> + Send;
}

/// Sends the template's request and checks the status.
impl Op for Template {
    async fn once(&self, sender: &mut Sender, seq: u64) -> Result<Duration, Failure> {
        let t0 = Instant::now();
        match exchange(sender, self.build(seq)).await {
            Ok(status) if status == self.expect_status => Ok(t0.elapsed()),
            Ok(status) => Err(Failure::answer(format!("status {status}"))),
            Err(e) => Err(Failure::broken(&e)),
        }
    }
}

/// Closed loop: `connections` keep-alive connections, each sending as soon as it has its answer.
pub async fn closed_loop(
    addr: SocketAddr,
    template: Arc<Template>,
    connections: usize,
    until: Until,
) -> Stats {
    workers(addr, template, connections, until).await
}

/// `concurrency` workers, each on its own keep-alive connection, running `op` back to back.
pub async fn workers<O: Op>(
    addr: SocketAddr,
    op: Arc<O>,
    concurrency: usize,
    until: Until,
) -> Stats {
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (op, seq) = (op.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            let mut sender: Option<Sender> = None;
            loop {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                match until {
                    Until::Elapsed(d) if start.elapsed() >= d => break,
                    Until::Requests(total) if n >= total => break,
                    _ => {}
                }
                let conn = match sender.as_mut() {
                    Some(s) => s,
                    None => match connect(addr).await {
                        Ok(s) => {
                            stats.connections += 1;
                            sender.insert(s)
                        }
                        Err(e) => {
                            stats.error(|| format!("{e:#}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                match op.once(conn, n).await {
                    Ok(latency) => {
                        stats.ok += 1;
                        stats.latency_us.saturating_record(micros(latency));
                    }
                    Err(failure) => {
                        stats.error(|| failure.message);
                        if failure.reconnect {
                            sender = None;
                        }
                    }
                }
            }
            stats
        }));
    }
    let mut total = Stats::new();
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(e) => total.error(|| format!("load task failed: {e}")),
        }
    }
    total.elapsed = start.elapsed();
    total.concurrency = concurrency.max(1);
    total
}

/// Open loop: request `i` is due at `start + i / rate`, sent then whatever earlier answers do,
/// on an idle pooled connection or a new one (up to `max_connections` in flight); its latency
/// counts from when it was due, so a slow answer that delays later sends is charged to them too
/// (no coordinated omission). Sends are timed by a dedicated OS thread (tokio's timer has a 1 ms
/// granularity, too coarse for sub-millisecond answers).
pub async fn open_loop(
    addr: SocketAddr,
    template: Arc<Template>,
    rate: f64,
    duration: Duration,
    max_connections: usize,
) -> Stats {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let pool: Arc<Mutex<Vec<Sender>>> = Arc::new(Mutex::new(Vec::new()));
    let opened = Arc::new(AtomicUsize::new(0));
    // Open a few connections up front so the first requests don't pay for the handshake.
    for _ in 0..(rate / 100.0).ceil().clamp(4.0, 64.0) as usize {
        if let Ok(s) = connect(addr).await {
            opened.fetch_add(1, Ordering::Relaxed);
            pool.lock().unwrap().push(s);
        }
    }
    let stats = Arc::new(Mutex::new(Stats {
        send_lag_us: Some(histogram()),
        ..Stats::new()
    }));
    let in_flight = Arc::new(Semaphore::new(max_connections.max(1)));

    let start = Instant::now() + Duration::from_millis(20);
    let interval = 1.0 / rate;
    let finished = Arc::new(AtomicU64::new(0));
    // The ticker hands each request straight to the runtime's workers: one thread hop between
    // the due time and the send.
    let ticker = {
        let handle = tokio::runtime::Handle::current();
        let shared = OpenLoop {
            addr,
            pool,
            opened: opened.clone(),
            stats: stats.clone(),
            template,
        };
        let (finished, in_flight) = (finished.clone(), in_flight.clone());
        std::thread::spawn(move || {
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 * interval);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let (shared, finished, in_flight) =
                    (shared.clone(), finished.clone(), in_flight.clone());
                handle.spawn(async move {
                    if let Ok(_permit) = in_flight.acquire_owned().await {
                        shared.request(i, due).await;
                    }
                    finished.fetch_add(1, Ordering::Release);
                });
            }
        })
    };
    let _ = tokio::task::spawn_blocking(move || ticker.join()).await;
    // Answers still outstanding after a grace period count as errors.
    let grace = Instant::now() + Duration::from_secs(30);
    while finished.load(Ordering::Acquire) < total && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pending = total - finished.load(Ordering::Acquire);
    let mut stats = std::mem::replace(&mut *stats.lock().unwrap(), Stats::new());
    if pending > 0 {
        stats.errors += pending;
        stats
            .first_error
            .get_or_insert_with(|| format!("{pending} requests unanswered after 30 s"));
    }
    stats.elapsed = start.elapsed();
    stats.connections = opened.load(Ordering::Relaxed);
    stats
}

/// What the requests of an open-loop run share.
#[derive(Clone)]
struct OpenLoop {
    addr: SocketAddr,
    pool: Arc<Mutex<Vec<Sender>>>,
    opened: Arc<AtomicUsize>,
    stats: Arc<Mutex<Stats>>,
    template: Arc<Template>,
}

impl OpenLoop {
    /// Request `i`, due at `due`: on an idle pooled connection or a new one.
    async fn request(&self, i: u64, due: Instant) {
        let idle = self.pool.lock().unwrap().pop();
        let mut sender = match idle {
            Some(s) => s,
            None => match connect(self.addr).await {
                Ok(s) => {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    s
                }
                Err(e) => {
                    self.stats.lock().unwrap().error(|| format!("{e:#}"));
                    return;
                }
            },
        };
        let req = self.template.build(i);
        let lag = due.elapsed();
        let result = exchange(&mut sender, req).await;
        let latency = due.elapsed();
        let mut stats = self.stats.lock().unwrap();
        if let Some(h) = stats.send_lag_us.as_mut() {
            h.saturating_record(micros(lag));
        }
        match result {
            Ok(status) if status == self.template.expect_status => {
                stats.ok += 1;
                stats.latency_us.saturating_record(micros(latency));
            }
            Ok(status) => stats.error(|| format!("status {status}")),
            Err(e) => {
                stats.error(|| format!("{e:#}"));
                return;
            }
        }
        drop(stats);
        self.pool.lock().unwrap().push(sender);
    }
}
