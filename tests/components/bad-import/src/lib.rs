//! Imports `fermyon:spin/key-value@2.0.0`, which the local runtime must refuse at start-up.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: Request) -> Response {
    match spin_sdk::key_value::Store::open_default() {
        Ok(store) => {
            let hit = store.exists("x").unwrap_or(false);
            Response::new(200, format!("exists: {hit}"))
        }
        Err(e) => Response::new(500, format!("{e:?}")),
    }
}
