//! Test component for the local runtime: each sub-route exercises one host capability and
//! reports what it saw, so the host tests can assert on plain HTTP answers.
//!
//! The sub-route is the first segment of `spin-path-info`; when that is not a known one (the
//! component is mounted under a route such as `/echo/...`), the first segment of the request
//! path is used instead.

use std::collections::BTreeMap;

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};

const ROUTES: &[&str] = &[
    "echo",
    "hello",
    "kv",
    "fetch",
    "chain",
    "var",
    "config",
    "file",
    "file-write",
    "trap",
    "body",
    "sleep",
];

#[http_component]
async fn handle(req: Request) -> Response {
    let path_info = header(&req, "spin-path-info").unwrap_or_default();
    let route = first_segment(&path_info)
        .filter(|s| ROUTES.contains(s))
        .or_else(|| first_segment(req.path()).filter(|s| ROUTES.contains(s)))
        .unwrap_or("")
        .to_string();
    let query = parse_query(req.query());
    let q = |name: &str| query.get(name).cloned().unwrap_or_default();

    match route.as_str() {
        "echo" => echo(&req),
        "hello" => text(200, format!("hello from {}", component_id())),
        "kv" => {
            // The operation is the segment after "kv", wherever "kv" sits in the path.
            let op = req
                .path()
                .split('/')
                .skip_while(|s| *s != "kv")
                .nth(1)
                .unwrap_or("")
                .to_string();
            kv(&op, &query, req.body())
        }
        "fetch" => fetch(&q("url")).await,
        "chain" => {
            let to = query.get("to").map_or("private", String::as_str);
            let path = query.get("path").map_or("/hello", String::as_str);
            fetch_raw(&format!("http://{to}.spin.internal{path}")).await
        }
        "var" => match spin_sdk::variables::get(&q("name")) {
            Ok(v) => text(200, v),
            Err(e) => text(404, format!("variable error: {e:?}")),
        },
        "config" => match spin_sdk::wit::wasi::config::store::get(&q("name")) {
            Ok(Some(v)) => text(200, v),
            Ok(None) => text(404, "config: not found".to_string()),
            Err(e) => text(500, format!("config error: {e:?}")),
        },
        "file" => match std::fs::read_to_string(q("path")) {
            Ok(s) => text(200, s),
            Err(e) => text(404, format!("read error: {e}")),
        },
        "file-write" => match std::fs::write(q("path"), b"written by probe") {
            Ok(()) => text(200, "written".to_string()),
            Err(e) => text(500, format!("write error: {e}")),
        },
        "trap" => panic!("probe: trap requested"),
        "body" => text(200, req.body().len().to_string()),
        "sleep" => {
            let ms = q("ms").parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            text(200, format!("slept {ms}"))
        }
        _ => text(404, format!("probe: no sub-route for {}", req.path())),
    }
}

fn component_id() -> String {
    std::env::var("COMPONENT_ID").unwrap_or_default()
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.header(name)
        .map(|v| v.as_str().unwrap_or_default().to_string())
}

fn first_segment(path: &str) -> Option<&str> {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
}

fn text(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body)
        .build()
}

fn echo(req: &Request) -> Response {
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let body = serde_json::json!({
        "component": component_id(),
        "method": req.method().to_string(),
        "path": req.path_and_query().unwrap_or(req.path()),
        "headers": headers,
        "body_len": req.body().len(),
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

async fn fetch(url: &str) -> Response {
    match spin_sdk::http::send::<_, Response>(Request::get(url).build()).await {
        Ok(resp) => text(
            200,
            format!(
                "{}\n{}",
                resp.status(),
                String::from_utf8_lossy(resp.body())
            ),
        ),
        Err(e) => text(502, format!("outbound error: {e:?}")),
    }
}

/// Passes the downstream answer through unchanged (used for service chaining).
async fn fetch_raw(url: &str) -> Response {
    match spin_sdk::http::send::<_, Response>(Request::get(url).build()).await {
        Ok(resp) => resp,
        Err(e) => text(502, format!("outbound error: {e:?}")),
    }
}

fn kv(op: &str, query: &BTreeMap<String, String>, body: &[u8]) -> Response {
    let label = query.get("store").map_or("default", String::as_str);
    let bucket = match store::open(label) {
        Ok(b) => b,
        Err(e) => return text(500, format!("open error: store {label:?}: {e:?}")),
    };
    let key = query.get("key").cloned().unwrap_or_default();
    let delta: i64 = query.get("delta").and_then(|d| d.parse().ok()).unwrap_or(1);
    let result: Result<Response, String> = (|| {
        Ok(match op {
            "get" => match bucket.get(&key).map_err(dbg)? {
                Some(v) => Response::new(200, v),
                None => text(404, "absent".to_string()),
            },
            "set" => {
                bucket.set(&key, body).map_err(dbg)?;
                text(200, "set".to_string())
            }
            "delete" => {
                bucket.delete(&key).map_err(dbg)?;
                text(200, "deleted".to_string())
            }
            "exists" => text(200, bucket.exists(&key).map_err(dbg)?.to_string()),
            "keys" => {
                let keys = bucket.list_keys(None).map_err(dbg)?.keys;
                json(&serde_json::json!(keys))
            }
            "incr" => text(
                200,
                atomics::increment(&bucket, &key, delta)
                    .map_err(dbg)?
                    .to_string(),
            ),
            "cas-add" => cas_add(&bucket, &key, delta)?,
            "batch-set" => {
                let map: BTreeMap<String, String> =
                    serde_json::from_slice(body).map_err(|e| e.to_string())?;
                let pairs: Vec<(String, Vec<u8>)> =
                    map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                batch::set_many(&bucket, &pairs).map_err(dbg)?;
                text(200, pairs.len().to_string())
            }
            "batch-get" => {
                let keys: Vec<String> = query
                    .get("keys")
                    .map(|k| k.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                let found = batch::get_many(&bucket, &keys).map_err(dbg)?;
                let map: BTreeMap<String, Option<String>> = found
                    .into_iter()
                    .map(|(k, v)| (k, v.map(|v| String::from_utf8_lossy(&v).into_owned())))
                    .collect();
                json(&serde_json::json!(map))
            }
            "batch-delete" => {
                let keys: Vec<String> = query
                    .get("keys")
                    .map(|k| k.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                batch::delete_many(&bucket, &keys).map_err(dbg)?;
                text(200, "deleted".to_string())
            }
            _ => text(404, format!("unknown kv op {op:?}")),
        })
    })();
    result.unwrap_or_else(|e| text(500, format!("kv error: {e}")))
}

/// Read-modify-write on a decimal value until the swap wins; answers the attempt count.
fn cas_add(bucket: &store::Bucket, key: &str, delta: i64) -> Result<Response, String> {
    for attempt in 1..=10_000u32 {
        let cas = atomics::Cas::new(bucket, key).map_err(dbg)?;
        let current = match cas.current().map_err(dbg)? {
            Some(v) => String::from_utf8_lossy(&v)
                .parse::<i64>()
                .map_err(|e| format!("value is not decimal: {e}"))?,
            None => 0,
        };
        let next = (current + delta).to_string().into_bytes();
        match atomics::swap(cas, &next) {
            Ok(()) => return Ok(text(200, attempt.to_string())),
            Err(atomics::CasError::CasFailed(_)) => continue,
            Err(atomics::CasError::StoreError(e)) => return Err(format!("swap: {e:?}")),
        }
    }
    Err("cas: gave up after 10000 attempts".to_string())
}

fn dbg(e: store::Error) -> String {
    format!("{e:?}")
}

fn json(v: &serde_json::Value) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(v.to_string())
        .build()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
