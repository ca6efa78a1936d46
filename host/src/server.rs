//! The HTTP listener: accepts connections and hands them to one serving thread per CPU, routes
//! each request to its component, enforces the body limit, runs the sweep timer, and shuts
//! down gracefully on SIGINT/SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use wasmtime_wasi_http::WasiBody;

use crate::app::{plain, problem, App, Caller};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(app: Arc<App>, listener: TcpListener, sweep_interval: Duration) -> Result<()> {
    let addr = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let sweeper = spawn_sweeper(app.clone(), sweep_interval);
    let slots = Arc::new(tokio::sync::Semaphore::new(app.limits.max_concurrent));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (0..cores)
        .map(|i| Worker::spawn(i, app.clone(), slots.clone(), stopped.clone()))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "countersign: serving {} component(s) on {cores} thread(s); listening on http://{addr}",
        app.components.len()
    );

    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut next = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually running out of file descriptors: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Connections go round-robin to the serving threads.
                match stream.into_std() {
                    Ok(stream) => {
                        let accepted = (stream, peer, graceful.watcher());
                        if workers[next].connections.send(accepted).is_err() {
                            tracing::warn!("serving thread {next} has stopped; connection from {peer} dropped");
                        }
                        next = (next + 1) % workers.len();
                    }
                    Err(e) => tracing::warn!("connection from {peer} dropped: {e}"),
                }
            }
            _ = &mut shutdown => break,
        }
    }
    if let Some(s) = sweeper {
        s.abort();
    }
    drop(listener);
    eprintln!("countersign: shutting down, finishing in-flight requests");
    // Closing the queues ends each worker's accept loop; its runtime keeps running the
    // connections it has until `stop`.
    let threads: Vec<_> = workers.into_iter().map(|w| w.thread).collect();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("countersign: some requests did not finish within {DRAIN_TIMEOUT:?}");
    }
    let _ = stop.send(true);
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    Ok(())
}

/// An accepted connection, its peer, and what lets a shutdown drain it.
type Accepted = (std::net::TcpStream, SocketAddr, Watcher);

/// A serving thread: a single-threaded runtime of its own that serves the connections handed
/// to it, and runs their requests' instances, chained calls and key-value calls on the same
/// thread. One such thread per CPU did ~10 % more work per CPU than one runtime whose worker
/// threads hand tasks to each other (wake-ups, cross-core cache traffic; BENCHMARKS.md,
/// session 8).
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<Accepted>,
    thread: std::thread::JoinHandle<()>,
}

impl Worker {
    fn spawn(
        index: usize,
        app: Arc<App>,
        slots: Arc<tokio::sync::Semaphore>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (connections, mut queue) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let thread = std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    while let Some((stream, peer, watcher)) = queue.recv().await {
                        let stream = match tokio::net::TcpStream::from_std(stream) {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!("connection from {peer} dropped: {e}");
                                continue;
                            }
                        };
                        let (app, slots) = (app.clone(), slots.clone());
                        let service = hyper::service::service_fn(move |req| {
                            let (app, slots) = (app.clone(), slots.clone());
                            async move {
                                // Fair (FIFO) wait for a slot; the semaphore is never closed.
                                let _slot = slots.acquire_owned().await;
                                serve_one(app, req, peer).await
                            }
                        });
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        let conn = watcher.watch(conn);
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!("connection from {peer} ended: {e}");
                            }
                        });
                    }
                    // Keep serving what is in flight until the drain is over.
                    let _ = stopped.wait_for(|s| *s).await;
                });
            })
            .context("cannot start a serving thread")?;
        Ok(Worker {
            connections,
            thread,
        })
    }
}

async fn serve_one(
    app: Arc<App>,
    req: http::Request<Incoming>,
    peer: SocketAddr,
) -> Result<http::Response<WasiBody>, Infallible> {
    let path = req.uri().path().to_string();
    // Reserved by Spin for the runtime itself; never routed to components.
    if let Some(what) = path.strip_prefix("/.well-known/spin/") {
        return Ok(match what {
            "health" => plain(200, "OK"),
            _ => problem(404, "Not Found", "unknown runtime endpoint"),
        });
    }
    let Some(matched) = app.router.route(&path) else {
        tracing::info!("{} {path} component=- status=404", req.method());
        return Ok(problem(404, "Not Found", "no route matches this path"));
    };
    let max = app.limits.max_body_bytes;
    let (parts, body) = req.into_parts();
    let body = match read_body(body, max).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { drained }) => {
            tracing::info!("{} {path} component=- status=413", parts.method);
            let mut response = problem(
                413,
                "Content Too Large",
                &format!("the request body exceeds {max} bytes"),
            );
            if !drained {
                // The unread rest makes the connection unusable: tell the client not to reuse it.
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            return Ok(response);
        }
        Err(BodyError::Broken(e)) => {
            tracing::info!("{} {path} component=- status=400 (body: {e})", parts.method);
            return Ok(problem(
                400,
                "Bad Request",
                "the request body could not be read",
            ));
        }
    };
    Ok(app
        .handle(matched.component, parts, body, Caller::Client(peer))
        .await)
}

/// How much of an oversized body is read and dropped so that the client, still sending,
/// receives the 413 instead of a reset connection.
const DRAIN_CAP: usize = 16 << 20;
const DRAIN_WINDOW: Duration = Duration::from_secs(5);

enum BodyError {
    TooLarge { drained: bool },
    Broken(hyper::Error),
}

/// Reads the whole body up to `max` bytes; beyond that, drains (bounded) and reports 413.
async fn read_body(mut body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    let declared = hyper::body::Body::size_hint(&body).exact();
    let mut too_large = declared.is_some_and(|n| n > max as u64);
    let mut buf = bytes::BytesMut::new();
    let mut received: usize = 0;
    let deadline = tokio::time::Instant::now() + DRAIN_WINDOW;
    loop {
        let next = if too_large {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(f) => f,
                Err(_) => return Err(BodyError::TooLarge { drained: false }),
            }
        } else {
            body.frame().await
        };
        match next {
            None if too_large => return Err(BodyError::TooLarge { drained: true }),
            None => return Ok(buf.freeze()),
            Some(Err(e)) if too_large => {
                tracing::debug!("oversized body ended early: {e}");
                return Err(BodyError::TooLarge { drained: false });
            }
            Some(Err(e)) => return Err(BodyError::Broken(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received = received.saturating_add(data.len());
                if received > DRAIN_CAP {
                    return Err(BodyError::TooLarge { drained: false });
                }
                too_large |= received > max;
                if !too_large {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Spin has no timer trigger here; locally the host plays the scheduler that, on Spin, calls
/// `POST /v1/sweep`.
fn spawn_sweeper(app: Arc<App>, interval: Duration) -> Option<tokio::task::JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    let Some(decision) = app.component_index("decision") else {
        tracing::info!("no `decision` component: the sweep timer is off");
        return None;
    };
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let (parts, ()) = http::Request::post("http://decision.spin.internal/internal/sweep")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(())
                .expect("static request parts are valid")
                .into_parts();
            let response = app
                .handle(decision, parts, Bytes::new(), Caller::Chained)
                .await;
            // Drain the body so the instance finishes.
            let _ = response.into_body().collect().await;
        }
    }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).context("SIGTERM handler");
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
