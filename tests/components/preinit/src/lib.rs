//! Pre-initialisation probe (tests/host.rs): `wizer-initialize` records whether it could reach
//! the network and what it read of a packaged file; every request answers that record, what
//! the request itself can reach, and its instance's request count. Under `countersign up`
//! each request starts from the snapshot, so the record is there and the count is always 1.
//!
//! The initialiser reads files through wasi:filesystem itself (`adapter::read_packaged`) and
//! not the environment: wasi-libc keeps what it read first, so the snapshot would hold the
//! initialiser's environment and folders for good. Requests read the same file with `std::fs`
//! to show that they still can.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

spin_sdk::wit_bindgen::generate!({
    inline: "package countersign:preinit-probe; world preinit { export wizer-initialize: func(); }",
    runtime_path: "spin_sdk::wit_bindgen::rt",
});

static RECORD: Mutex<String> = Mutex::new(String::new());
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Preinit;

impl Guest for Preinit {
    fn wizer_initialize() {
        // The manifest allows outbound requests to 127.0.0.1; the initialiser gets no network.
        let network = spin_sdk::http::run(spin_sdk::http::send::<_, Response>(
            Request::get("http://127.0.0.1:9/").build(),
        ))
        .is_ok();
        let file = adapter::read_packaged("/config/x.txt", "file")
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_else(|e| e.to_string());
        *RECORD.lock().unwrap() = format!("initialised network={network} file={file}");
    }
}

export!(Preinit);

#[http_component]
fn handle(_req: Request) -> Response {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let record = RECORD.lock().unwrap().clone();
    let env = std::env::var("COMPONENT_ID").unwrap_or_default();
    let files = std::fs::read_to_string("/config/x.txt").is_ok();
    Response::new(
        200,
        format!("{record}; request env={env} files={files} calls={calls}"),
    )
}
