//! Pre-initialisation. A component that exports `wizer-initialize` (the policy component: Cedar
//! builds its parser tables and regular expressions on first use) gets it called once, when
//! the host compiles it, and is then served from a snapshot of the memory and globals it left
//! (wasmtime-wizer). Every request still gets a fresh instance, as DESIGN.md requires; the
//! instance just starts from the snapshot instead of from the bare data segments.
//!
//! The initialiser runs with WASI and wasi:http types and one capability, the component's
//! packaged files (read-only, where the manifest mounts them): no variables, key-value store,
//! environment or network (an outgoing request is refused); a component that imports anything
//! else is not pre-initialised. So a snapshot holds only what the component computes from its
//! own package — and the seed of Rust's `HashMap` keys, drawn when the host makes the snapshot
//! and kept in its cache folder, so each deployment has its own (as one long-running process
//! would). The snapshot is cached under the files' digest too ([`files_digest`]), and a
//! component must still check at request time that a file is what it parsed (files can change
//! while the host runs). An initialiser must read files through wasi:filesystem itself and
//! not read the environment: wasi-libc keeps the folders and variables it saw first, so the
//! snapshot would hold the initialiser's for good. The snapshot keeps exporting
//! `wizer-initialize` (wasmtime-wizer 48 leaves an invalid component when asked to drop it);
//! nothing calls it again.

use std::future::Future;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::outbound_hooks::SendResult;
use wasmtime::component::{Component, Instance, Lift, Linker, ResourceTable, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// The export pre-initialisation calls (wasmtime-wizer's default name).
const INIT_EXPORT: &str = "wizer-initialize";

/// Whether `component` asks for pre-initialisation.
pub fn wanted(component: &Component) -> bool {
    component.get_export_index(None, INIT_EXPORT).is_some()
}

struct InitState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoNetwork,
}

impl WasiView for InitState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InitState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Refuses every outgoing request of an initialiser.
struct NoNetwork;

impl WasiHttpHooks for NoNetwork {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The SHA-256 of every file under `mounts` (destination, relative path and contents, in
/// path order): a snapshot made from other files is another cache entry.
pub fn files_digest(mounts: &[(PathBuf, String)]) -> anyhow::Result<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    for (src, dst) in mounts {
        let mut files = Vec::new();
        walk(src, &mut files)
            .map_err(|e| anyhow::anyhow!("cannot read folder {}: {e}", src.display()))?;
        files.sort();
        for f in files {
            let contents = std::fs::read(&f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
            let name = format!("{dst}\0{}", f.strip_prefix(src).unwrap_or(&f).display());
            for part in [name.as_bytes(), &contents] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
        }
    }
    Ok(hasher.finalize().to_vec())
}

/// Runs `wasm`'s `wizer-initialize` with `mounts` (source folder, guest path) mounted
/// read-only, and returns the pre-initialised component's bytes.
pub async fn snapshot(
    engine: Engine,
    wasm: Vec<u8>,
    mounts: Vec<(PathBuf, String)>,
) -> wasmtime::Result<Vec<u8>> {
    let mut wizer = Wizer::new();
    wizer.keep_init_func(true);
    let (cx, instrumented) = wizer.instrument_component(&wasm)?;
    let component = Component::new(&engine, &instrumented)?;
    let mut linker = Linker::<InitState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    // stderr: a failing initialiser's panic message reaches the host's log.
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stderr();
    for (src, dst) in &mounts {
        wasi.preopened_dir(src, dst, FsPerms::ReadOnly)?;
    }
    let state = InitState {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        hooks: NoNetwork,
    };
    let mut store = Store::new(&engine, state);
    // The engine interrupts guests on epochs; the initialiser runs once, to completion.
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate_async(&mut store, &component).await?;
    let init = instance.get_typed_func::<(), ()>(&mut store, INIT_EXPORT)?;
    init.call_async(&mut store, ()).await?;
    wizer
        .snapshot_component(
            &cx,
            &mut Access {
                store: &mut store,
                instance,
            },
        )
        .await
}

/// Lets wasmtime-wizer read the instrumented instance's memories and globals through the
/// accessor functions its instrumentation exports.
struct Access<'a> {
    store: &'a mut Store<InitState>,
    instance: Instance,
}

impl Access<'_> {
    /// Calls `func` of the exported `instance`. wizer's own accessors: a failure here is a
    /// wizer bug, and wizer's interface leaves no way to report it but a panic, which the
    /// caller turns into "serve the component as built".
    async fn call<R: Lift + Send + Sync + 'static>(&mut self, instance: &str, func: &str) -> R {
        let (_, exported) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .expect("wizer's accessor instance");
        let (_, f) = self
            .instance
            .get_export(&mut *self.store, Some(&exported), func)
            .expect("wizer's accessor function");
        let f = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, f)
            .expect("wizer's accessor type");
        f.call_async(&mut *self.store, ())
            .await
            .expect("wizer's accessor call")
            .0
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let list: WasmList<u8> = self.call(instance, func).await;
        contents(list.as_le_slice(&*self.store));
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).await.to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).await.to_bits()
    }
}
