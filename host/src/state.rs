//! Per-request store data: WASI, wasi:http with our outbound hooks, and the Spin interfaces
//! (wasi:keyvalue, fermyon:spin/variables, wasi:config/store).

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::types::HostResponseOutparam;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::app::App;
use crate::outbound_hooks::OutboundHooks;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "countersign:host/host",
        imports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

use bindings::fermyon::spin::variables;
use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, batch, store};

/// An opened store label.
pub struct Bucket {
    store: countersign_kv::Store,
}

/// A compare-and-swap handle: the key and the value it was read with.
pub struct Cas {
    store: countersign_kv::Store,
    key: String,
    current: Option<Vec<u8>>,
}

pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub hooks: OutboundHooks,
    pub limits: StoreLimits,
    pub app: Arc<App>,
    pub component: usize,
    /// The response outparam (its table index) while the guest has not answered yet.
    pub answer: Option<u32>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    bindings::Host_::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

fn kv_error(e: countersign_kv::Error) -> store::Error {
    store::Error::Other(e.to_string())
}

impl HostState {
    async fn bucket(
        &mut self,
        r: &Resource<Bucket>,
    ) -> Result<countersign_kv::Store, store::Error> {
        self.after_answer().await;
        self.table
            .get(r)
            .map(|b| b.store.clone())
            .map_err(|e| store::Error::Other(e.to_string()))
    }

    /// A component that goes on working after it has answered (audit seals, decision runs
    /// its follow-ups) lets the thread's other ready tasks run once, at its first key-value
    /// call after answering: on a serving thread (server.rs) the caller waiting for that
    /// answer runs on the same thread, and would otherwise wait for the follow-up work too.
    async fn after_answer(&mut self) {
        let Some(rep) = self.answer else { return };
        // `set` takes the outparam out of the table; so does dropping it unanswered.
        if self
            .table
            .get(&Resource::<HostResponseOutparam>::new_borrow(rep))
            .is_err()
        {
            self.answer = None;
            tokio::task::yield_now().await;
        }
    }

    fn variable(&self, name: &str) -> Option<String> {
        self.app.components[self.component]
            .variables
            .get(name)
            .cloned()
    }
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        let component = &self.app.components[self.component];
        let Some(kv) = component.stores.get(&identifier) else {
            // Spin answers access-denied for a label the component does not list.
            return Err(store::Error::AccessDenied);
        };
        let bucket = Bucket { store: kv.clone() };
        self.table
            .push(bucket)
            .map_err(|e| store::Error::Other(e.to_string()))
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        self.bucket(&b).await?.get(&key).await.map_err(kv_error)
    }

    async fn set(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        self.bucket(&b)
            .await?
            .set(&key, value)
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        self.bucket(&b).await?.delete(&key).await.map_err(kv_error)
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        self.bucket(&b).await?.exists(&key).await.map_err(kv_error)
    }

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        if cursor.is_some() {
            // Spin does not support cursors either; one page holds every key.
            return Err(store::Error::Other(
                "list-keys cursors are not supported".into(),
            ));
        }
        let keys = self.bucket(&b).await?.list_keys().await.map_err(kv_error)?;
        Ok(store::KeyResponse { keys, cursor: None })
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        self.bucket(&b)
            .await?
            .increment(&key, delta)
            .await
            .map_err(kv_error)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let cas = self
            .table
            .delete(cas)
            .map_err(|e| atomics::CasError::StoreError(store::Error::Other(e.to_string())))?;
        let swapped = cas
            .store
            .compare_and_swap(&cas.key, cas.current.as_deref(), value)
            .await
            .map_err(|e| atomics::CasError::StoreError(kv_error(e)))?;
        if swapped {
            return Ok(());
        }
        // Lost the race: hand back a fresh handle holding the value that won, so the guest's
        // retry loop starts from it.
        let current = cas
            .store
            .get(&cas.key)
            .await
            .map_err(|e| atomics::CasError::StoreError(kv_error(e)))?;
        let fresh = Cas {
            store: cas.store,
            key: cas.key,
            current,
        };
        let handle = self
            .table
            .push(fresh)
            .map_err(|e| atomics::CasError::StoreError(store::Error::Other(e.to_string())))?;
        Err(atomics::CasError::CasFailed(handle))
    }
}

impl atomics::HostCas for HostState {
    async fn new(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> Result<Resource<Cas>, store::Error> {
        let store = self.bucket(&b).await?;
        let current = store.get(&key).await.map_err(kv_error)?;
        self.table
            .push(Cas {
                store,
                key,
                current,
            })
            .map_err(|e| store::Error::Other(e.to_string()))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, store::Error> {
        self.table
            .get(&cas)
            .map(|c| c.current.clone())
            .map_err(|e| store::Error::Other(e.to_string()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, store::Error> {
        let values = self
            .bucket(&b)
            .await?
            .get_many(&keys)
            .await
            .map_err(kv_error)?;
        Ok(keys.into_iter().zip(values).collect())
    }

    async fn set_many(
        &mut self,
        b: Resource<Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        self.bucket(&b)
            .await?
            .set_many(pairs)
            .await
            .map_err(kv_error)
    }

    async fn delete_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        self.bucket(&b)
            .await?
            .delete_many(&keys)
            .await
            .map_err(kv_error)
    }
}

impl variables::Host for HostState {
    async fn get(&mut self, name: String) -> Result<String, variables::Error> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(variables::Error::InvalidName(format!(
                "invalid variable name {name:?}: use lower_snake_case"
            )));
        }
        self.variable(&name).ok_or_else(|| {
            variables::Error::Undefined(format!("no variable named {name:?} for this component"))
        })
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self.variable(&key))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self.app.components[self.component]
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
