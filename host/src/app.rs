//! The loaded application: one compiled component and `InstancePre` per manifest component,
//! and the per-request path that instantiates a fresh instance and runs its handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpView};

use crate::compact;
use crate::manifest::{Manifest, RouteSpec};
use crate::outbound::OutboundPolicy;
use crate::outbound_hooks::OutboundHooks;
use crate::preinit;
use crate::router::{self, Matched, Router};
use crate::runtime_config::{KeyValueStore, RuntimeConfig};
use crate::state::{self, HostState};
use crate::variables::Resolved;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Client requests handled at once; more wait for a slot.
    pub max_concurrent: usize,
    pub max_body_bytes: usize,
    pub handler_timeout: Duration,
    pub max_memory_bytes: usize,
}

pub struct ComponentRt {
    pub id: String,
    pre: ProxyPre<HostState>,
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, String)>,
    pub variables: HashMap<String, String>,
    pub outbound: OutboundPolicy,
    pub stores: HashMap<String, countersign_kv::Store>,
}

pub struct App {
    pub components: Vec<ComponentRt>,
    pub router: Router,
    pub limits: Limits,
    pub listen: SocketAddr,
}

/// Who sent a request: a client over the network, or a component through service chaining.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    Client(SocketAddr),
    Chained,
}

pub struct LoadOptions<'a> {
    pub manifest: &'a Path,
    pub runtime_config: Option<&'a Path>,
    pub state_dir: &'a Path,
    pub cache_dir: &'a Path,
    pub limits: Limits,
    pub listen: SocketAddr,
}

/// Interfaces a spin-sdk 5.2 component built for wasm32-wasip2 may import, by name without
/// version, and the versions this host serves them at.
fn import_supported(name: &str) -> bool {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    let wasi_02 = version.starts_with("0.2.") && !version.contains('-') || version == "0.2.0";
    match iface {
        "wasi:cli/environment"
        | "wasi:cli/exit"
        | "wasi:cli/stdin"
        | "wasi:cli/stdout"
        | "wasi:cli/stderr"
        | "wasi:cli/terminal-input"
        | "wasi:cli/terminal-output"
        | "wasi:cli/terminal-stdin"
        | "wasi:cli/terminal-stdout"
        | "wasi:cli/terminal-stderr"
        | "wasi:clocks/wall-clock"
        | "wasi:clocks/monotonic-clock"
        | "wasi:filesystem/types"
        | "wasi:filesystem/preopens"
        | "wasi:io/error"
        | "wasi:io/poll"
        | "wasi:io/streams"
        | "wasi:random/random"
        | "wasi:random/insecure"
        | "wasi:random/insecure-seed"
        | "wasi:http/types"
        | "wasi:http/outgoing-handler" => wasi_02,
        "wasi:keyvalue/store" | "wasi:keyvalue/atomics" | "wasi:keyvalue/batch" => {
            version == "0.2.0-draft2"
        }
        "fermyon:spin/variables" => version == "2.0.0",
        "wasi:config/store" => version == "0.2.0-draft-2024-09-27",
        _ => false,
    }
}

/// Bytes of each linear memory kept mapped between instances (see [`engine`]): enough for the
/// whole memory of each of the app's components (the policy snapshot's is 1.4 MiB), so a
/// request's instance finds its pages mapped instead of faulting them in (2 MiB: +20 % routine
/// decisions/s against 512 KiB; BENCHMARKS.md, session 5).
const KEEP_RESIDENT: usize = 2 << 20;

fn engine(limits: &Limits, cache_dir: &Path) -> Result<Engine> {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    // Sized for `max_concurrent` requests each holding a few chained instances at once; the
    // request limit in the server keeps the pool from running dry under overload.
    let slots = (limits.max_concurrent as u32).saturating_mul(8).max(64);
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(16))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .max_memory_size(limits.max_memory_bytes)
        .max_memories_per_component(16)
        .max_tables_per_component(32)
        .max_core_instances_per_component(64)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        // Reset by memset instead of madvise for the first pages of each memory and stack:
        // a fresh instance per request otherwise page-faults its heap back in and makes the
        // kernel shoot down TLBs on every core (the host's main kernel cost; BENCHMARKS.md).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10)
        // Slots left idle after a burst give their resident pages back beyond the first 16
        // (wasmtime keeps 100): peak RSS with 64 clients 171 -> 160 MB, throughput unchanged.
        .max_unused_warm_slots(16);
    let mut config = wasmtime::Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    // Initial memory is copied in, not mapped copy-on-write: every write to a mapped image
    // page faults and flushes the TLB of every core running the host, which costs more than
    // the copy (BENCHMARKS.md, "copy-on-write").
    config.memory_init_cow(false);
    // Compiled functions are cached one by one too, so a snapshot (the same code with other
    // data) or a rebuilt component compiles only what changed.
    wt(config.enable_incremental_compilation(Arc::new(FunctionCache(cache_dir.join("functions")))))?;
    // `COUNTERSIGN_PROFILE=perfmap`: name the guests' machine code for `perf` (BENCHMARKS.md).
    if std::env::var("COUNTERSIGN_PROFILE").as_deref() == Ok("perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wt(Engine::new(&config))
}

/// Cranelift's per-function cache: one file per entry, named by the SHA-256 of its key.
/// Written to a temporary name and renamed, so a reader never sees half an entry.
#[derive(Debug)]
struct FunctionCache(PathBuf);

impl FunctionCache {
    fn path(&self, key: &[u8]) -> PathBuf {
        self.0.join(hex::encode(Sha256::digest(key)))
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        std::fs::read(self.path(key)).ok().map(Into::into)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        write_whole(&self.path(key), &value).is_ok()
    }
}

/// Writes `path` through a temporary file of its own and a rename, so a reader (another
/// thread or host sharing the cache) never sees half of it.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// wasmtime has its own error type; this lifts it into anyhow's to add context.
fn wt<T>(r: wasmtime::Result<T>) -> Result<T> {
    r.map_err(anyhow::Error::from)
}

/// Part of a snapshot's cache key: changes whenever the host makes snapshots differently, so
/// an older host's snapshot is made again.
const SNAPSHOT_FORMAT: &[u8] = b"wizer 48, data segments joined within 4096 bytes";

/// Loads a compiled component from the cache, or compiles and caches it; a component that
/// asks for pre-initialisation is served from its snapshot (see [`preinit`]), cached apart:
/// its key also covers the packaged files (`mounts`) the initialiser may read.
fn compile(
    engine: &Engine,
    wasm_path: &Path,
    cache_dir: &Path,
    mounts: &[(PathBuf, String)],
) -> Result<Component> {
    let bytes = std::fs::read(wasm_path)
        .with_context(|| format!("cannot read component source {}", wasm_path.display()))?;
    let component = cached(engine, cache_dir, &[&bytes], || {
        wt(Component::new(engine, &bytes))
            .with_context(|| format!("cannot compile {}", wasm_path.display()))
    })?;
    if !preinit::wanted(&component) {
        return Ok(component);
    }
    let files = preinit::files_digest(mounts)?;
    match cached(
        engine,
        cache_dir,
        &[&bytes, &files, SNAPSHOT_FORMAT],
        || pre_initialise(engine, bytes.clone(), mounts),
    ) {
        Ok(snapshot) => Ok(snapshot),
        Err(e) => {
            tracing::warn!(
                "{}: pre-initialisation failed, serving the component as built: {e:#}",
                wasm_path.display()
            );
            Ok(component)
        }
    }
}

/// The component cached under the SHA-256 of `inputs` and the engine's compatibility hash
/// (wasmtime version and settings), or `build`'s, then cached.
fn cached(
    engine: &Engine,
    cache_dir: &Path,
    inputs: &[&[u8]],
    build: impl FnOnce() -> Result<Component>,
) -> Result<Component> {
    let mut hasher = Sha256::new();
    for input in inputs {
        hasher.update((input.len() as u64).to_le_bytes());
        hasher.update(input);
    }
    let mut engine_hash = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut engine_hash);
    let key = format!(
        "{}-{:016x}.cwasm",
        &hex::encode(hasher.finalize())[..32],
        std::hash::Hasher::finish(&engine_hash)
    );
    let cached = cache_dir.join(key);
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of this same engine
        // configuration (the key includes its compatibility hash) into our own cache folder.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!("ignoring unusable cache entry {}: {e:#}", cached.display()),
        }
    }
    let component = build()?;
    write_whole(&cached, &wt(component.serialize())?)
        .with_context(|| format!("cannot write cache entry {}", cached.display()))?;
    Ok(component)
}

/// Snapshots a component after its `wizer-initialize` (see [`preinit`]) and compiles that.
/// Runs on the caller's runtime from inside `block_in_place`; a panic in wizer's accessors
/// ends the task and becomes an error here.
fn pre_initialise(
    engine: &Engine,
    wasm: Vec<u8>,
    mounts: &[(PathBuf, String)],
) -> Result<Component> {
    let task = tokio::spawn(preinit::snapshot(engine.clone(), wasm, mounts.to_vec()));
    let snapshot = tokio::runtime::Handle::current()
        .block_on(task)
        .context("the initialiser task failed")?;
    // Fewer, larger data segments: each request's instance copies them in (see [`compact`]).
    let snapshot = compact::component(&wt(snapshot)?).context("cannot compact the snapshot")?;
    wt(Component::new(engine, &snapshot)).context("cannot compile the snapshot")
}

impl App {
    pub async fn load(opts: LoadOptions<'_>) -> Result<Arc<App>> {
        let manifest = Manifest::load(opts.manifest)?;
        let base = opts.manifest.parent().unwrap_or(Path::new("."));
        let runtime_config = match opts.runtime_config {
            Some(p) => RuntimeConfig::load(p)?,
            None => RuntimeConfig::default(),
        };
        let app_vars =
            Resolved::resolve(&manifest.variables, &runtime_config.static_values(), |n| {
                std::env::var(n).ok()
            })?;

        let mut stores: HashMap<String, countersign_kv::Store> = HashMap::new();
        let engine = engine(&opts.limits, opts.cache_dir)?;
        let mut linker = Linker::<HostState>::new(&engine);
        state::add_to_linker(&mut linker)?;

        let ids: Vec<&String> = manifest.component.keys().collect();
        let mut components = Vec::with_capacity(ids.len());
        for (id, c) in &manifest.component {
            let mut mounts = Vec::new();
            for m in &c.files {
                let src = Manifest::resolve(base, &m.source);
                if !src.is_dir() {
                    bail!(
                        "component `{id}`: files source {} must be a folder",
                        src.display()
                    );
                }
                mounts.push((src, m.destination.clone()));
            }
            let source = Manifest::resolve(base, &c.source);
            let component =
                tokio::task::block_in_place(|| compile(&engine, &source, opts.cache_dir, &mounts))
                    .with_context(|| format!("component `{id}`"))?;
            for (name, _) in component.component_type().imports(&engine) {
                if !import_supported(name) {
                    bail!("component `{id}` imports `{name}`, which countersign up does not provide (it provides WASI 0.2 cli/clocks/filesystem/io/random, wasi:http, wasi:keyvalue@0.2.0-draft2, fermyon:spin/variables@2.0.0 and wasi:config/store)");
                }
            }
            let pre = wt(ProxyPre::new(
                wt(linker.instantiate_pre(&component))
                    .with_context(|| format!("component `{id}` cannot be linked"))?,
            ))
            .with_context(|| {
                format!("component `{id}` does not export wasi:http/incoming-handler@0.2")
            })?;

            let mut variables = HashMap::new();
            for (name, template) in &c.variables {
                let value = app_vars
                    .expand(template)
                    .with_context(|| format!("component `{id}` variable `{name}`"))?;
                variables.insert(name.clone(), value);
            }
            let hosts = c
                .allowed_outbound_hosts
                .iter()
                .map(|h| app_vars.expand(h))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("component `{id}` allowed_outbound_hosts"))?;
            let outbound = OutboundPolicy::parse(hosts.iter().map(String::as_str))
                .with_context(|| format!("component `{id}`"))?;
            let mut component_stores = HashMap::new();
            for label in &c.key_value_stores {
                let store = match stores.get(label) {
                    Some(s) => s.clone(),
                    None => {
                        let s = open_store(label, &runtime_config, opts.state_dir)
                            .await
                            .with_context(|| {
                                format!("component `{id}` key-value store `{label}`")
                            })?;
                        stores.insert(label.clone(), s.clone());
                        s
                    }
                };
                component_stores.insert(label.clone(), store);
            }
            components.push(ComponentRt {
                id: id.clone(),
                pre,
                env: c
                    .environment
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                mounts,
                variables,
                outbound,
                stores: component_stores,
            });
        }

        let index = |name: &str| ids.iter().position(|id| id.as_str() == name);
        let mut routes = Vec::new();
        for t in &manifest.trigger.http {
            let component = index(&t.component).context("trigger names an undefined component")?;
            if let RouteSpec::Path(route) = &t.route {
                routes.push(router::parse(route, component));
            }
        }
        let router = Router::new(routes)?;

        spawn_epoch_ticker(engine.clone());
        Ok(Arc::new(App {
            components,
            router,
            limits: opts.limits,
            listen: opts.listen,
        }))
    }

    pub fn component_index(&self, id: &str) -> Option<usize> {
        self.components.iter().position(|c| c.id == id)
    }

    /// Runs one request through a fresh instance of `component`. Never fails: host-side
    /// problems become problem-details answers, and every request is logged once.
    pub async fn handle(
        self: &Arc<Self>,
        component: usize,
        parts: http::request::Parts,
        body: Bytes,
        caller: Caller,
    ) -> http::Response<WasiBody> {
        let started = Instant::now();
        let path = parts.uri.path().to_string();
        let method = parts.method.clone();
        let id = &self.components[component].id;
        let matched = match caller {
            Caller::Client(_) => self
                .router
                .route(&path)
                .filter(|m| m.component == component),
            Caller::Chained => None,
        }
        .or_else(|| self.chained_match(component, &path));
        let response = match self.run(component, parts, body, caller, matched).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{method} {path} component={id}: handler failed: {e:#}");
                problem(
                    500,
                    "Internal Server Error",
                    "the component failed while handling the request",
                )
            }
        };
        let via = if matches!(caller, Caller::Chained) {
            " (chained)"
        } else {
            ""
        };
        tracing::info!(
            "{method} {path} component={id} status={} ms={:.2}{via}",
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        response
    }

    /// Spin's headers for a chained request: the component's own public route when the path
    /// falls under it, else the whole path as path-info.
    fn chained_match(&self, component: usize, path: &str) -> Option<Matched> {
        if let Some(m) = self.router.route(path).filter(|m| m.component == component) {
            return Some(m);
        }
        Some(Matched {
            component,
            raw: String::new(),
            component_route: String::new(),
            path_info: path.to_string(),
        })
    }

    async fn run(
        self: &Arc<Self>,
        component: usize,
        mut parts: http::request::Parts,
        body: Bytes,
        caller: Caller,
        matched: Option<Matched>,
    ) -> Result<http::Response<WasiBody>> {
        let rt = &self.components[component];
        let host = match caller {
            Caller::Chained => format!("{}.spin.internal", rt.id),
            Caller::Client(_) => parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.to_ascii_lowercase().ends_with(".spin.internal"))
                .map(str::to_string)
                .unwrap_or_else(|| self.listen.to_string()),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let full_url = format!("http://{host}{path_and_query}");
        parts.uri = full_url.parse().context("request URI")?;
        set_spin_headers(
            &mut parts.headers,
            &full_url,
            &host,
            caller,
            matched.as_ref(),
        )?;

        let mut wasi = WasiCtxBuilder::new();
        // Files are read on the calling thread: the mounts are small read-only files in the
        // page cache, and handing each file call to tokio's blocking pool and back cost more
        // than the read (the pool's wake-ups were the top kernel symbols; BENCHMARKS.md).
        wasi.inherit_stdout()
            .inherit_stderr()
            .envs(&rt.env)
            .allow_blocking_current_thread(true);
        for (src, dst) in &rt.mounts {
            wasi.preopened_dir(src, dst, FsPerms::ReadOnly)?;
        }
        let state = HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: Default::default(),
            hooks: OutboundHooks {
                app: self.clone(),
                component,
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.max_memory_bytes)
                .build(),
            app: self.clone(),
            component,
            answer: None,
        };
        let mut store = Store::new(rt.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        // Yield to tokio every epoch tick, so the handler timeout can stop a busy guest.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = http::Request::from_parts(parts, full(body));
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        store.data_mut().answer = Some(out.rep());
        let pre = rt.pre.clone();
        let timeout = self.limits.handler_timeout;
        let task = tokio::spawn(async move {
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            let run = async { wt(run.await) };
            match tokio::time::timeout(timeout, run).await {
                Ok(r) => r,
                Err(_) => bail!("handler timed out after {timeout:?}"),
            }
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => bail!("component answered with error {code:?}"),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => anyhow::anyhow!("component returned without setting a response"),
                    Ok(Err(e)) => e,
                    Err(e) => e.into(),
                };
                Err(why)
            }
        }
    }
}

fn set_spin_headers(
    headers: &mut http::HeaderMap,
    full_url: &str,
    host: &str,
    caller: Caller,
    matched: Option<&Matched>,
) -> Result<()> {
    // Clients must not be able to forge what Spin tells the component.
    let forged: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for k in forged {
        headers.remove(k);
    }
    headers.insert(http::header::HOST, host.parse()?);
    let client = match caller {
        Caller::Client(addr) => addr.to_string(),
        Caller::Chained => "0.0.0.0:0".to_string(),
    };
    let (raw, component_route, path_info) = matched
        .map(|m| {
            (
                m.raw.as_str(),
                m.component_route.as_str(),
                m.path_info.as_str(),
            )
        })
        .unwrap_or(("", "", ""));
    for (name, value) in [
        ("spin-full-url", full_url),
        ("spin-path-info", path_info),
        ("spin-matched-route", raw),
        ("spin-raw-component-route", raw),
        ("spin-component-route", component_route),
        ("spin-base-path", "/"),
        ("spin-client-addr", client.as_str()),
    ] {
        headers.insert(name, value.parse()?);
    }
    Ok(())
}

async fn open_store(
    label: &str,
    config: &RuntimeConfig,
    state_dir: &Path,
) -> Result<countersign_kv::Store> {
    let default_path = || state_dir.join("sqlite_key_value.db");
    let store = match config.key_value_store.get(label) {
        Some(KeyValueStore::Redis { url }) => countersign_kv::Store::redis(url, label).await?,
        Some(KeyValueStore::Spin { path }) => {
            countersign_kv::Store::sqlite(&path.clone().unwrap_or_else(default_path), label)?
        }
        None if label == "default" => countersign_kv::Store::sqlite(&default_path(), label)?,
        None => bail!("no [key_value_store.{label}] in the runtime config (only `default` exists without one)"),
    };
    Ok(store)
}

/// Advances the engine's epoch so that running guests yield (see `epoch_deadline_async_yield_and_update`).
fn spawn_epoch_ticker(engine: Engine) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(10));
        engine.increment_epoch();
    });
}

fn full(bytes: Bytes) -> WasiBody {
    Full::new(bytes)
        .map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} })
        .boxed_unsync()
}

pub fn plain(status: u16, text: &'static str) -> http::Response<WasiBody> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(full(Bytes::from_static(text.as_bytes())))
        .expect("static response parts are valid")
}

/// An RFC 9457 problem-details answer from the host itself.
pub fn problem(status: u16, title: &str, detail: &str) -> http::Response<WasiBody> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    })
    .to_string();
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/problem+json")
        .body(full(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::import_supported;

    #[test]
    fn allowlist_accepts_spin_sdk_imports_and_refuses_others() {
        for ok in [
            "wasi:http/types@0.2.6",
            "wasi:io/streams@0.2.0",
            "wasi:keyvalue/atomics@0.2.0-draft2",
            "fermyon:spin/variables@2.0.0",
            "wasi:config/store@0.2.0-draft-2024-09-27",
        ] {
            assert!(import_supported(ok), "{ok}");
        }
        for bad in [
            "fermyon:spin/key-value@2.0.0",
            "spin:sqlite/sqlite@3.0.0",
            "wasi:sockets/tcp@0.2.6",
            "wasi:http/types@0.3.0-rc-2026-01-06",
            "wasi:keyvalue/store@0.2.0-draft",
        ] {
            assert!(!import_supported(bad), "{bad}");
        }
    }
}
