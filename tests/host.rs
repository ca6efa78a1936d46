//! End-to-end tests of `countersign up`: the binary runs as a separate process serving
//! tests/apps/host/spin.toml, and every assertion is made over real HTTP or on its output.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use support::*;

fn host() -> HostBuilder {
    HostBuilder::new(app("host"))
}

// ---------------------------------------------------------------------------------------------
// Routing and the Spin request headers

#[tokio::test]
async fn trivial_answers_ok() {
    let h = host().start().await;
    let r = h.get("/trivial").await.expect(200);
    assert_eq!(r.text(), "ok");
}

#[tokio::test]
async fn component_exporting_wizer_initialize_starts_from_its_snapshot() {
    let h = host().start().await;
    for _ in 0..3 {
        let r = h.get("/preinit").await.expect(200);
        // The initialiser ran once, without network but with the packaged files; every
        // request still gets a fresh instance (calls=1) that starts from its snapshot and has
        // the environment and files the manifest gives it.
        assert_eq!(
            r.text(),
            "initialised network=false file=hello from x; request env=preinit files=true calls=1"
        );
    }
}

#[tokio::test]
async fn exact_route_beats_wildcard() {
    let h = host().start().await;
    let r = h.get("/echo/exact").await.expect(200).json();
    assert_eq!(r["component"], "echo-exact");
    // An exact route does not cover the paths below it.
    let r = h.get("/echo/exact/more").await.expect(200).json();
    assert_eq!(r["component"], "echo-wild");
}

#[tokio::test]
async fn longest_wildcard_prefix_wins() {
    let h = host().start().await;
    for (path, expected) in [
        ("/echo/deeper/x", "echo-deeper"),
        ("/echo/deeper", "echo-deeper"),
        ("/echo/deep", "echo-wild"),
        ("/echo/other/path", "echo-wild"),
        ("/echo", "echo-wild"),
        ("/probe/echo", "probe"),
    ] {
        let r = h.get(path).await.expect(200).json();
        assert_eq!(r["component"], expected, "route for {path}");
    }
}

#[tokio::test]
async fn unrouted_path_is_404() {
    let h = host().start().await;
    h.get("/nothing-here").await.expect(404);
    h.get("/").await.expect(404);
    // A prefix of a route that is not on a segment boundary does not match it.
    h.get("/echoes").await.expect(404);
    h.get("/trivial/sub").await.expect(404);
}

#[tokio::test]
async fn spin_headers_on_wildcard_route() {
    let h = host().start().await;
    let r = h.get("/echo/foo/bar?x=1&y=two").await.expect(200).json();
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], "/echo/foo/bar?x=1&y=two");
    let hd = &r["headers"];
    assert_eq!(
        hd["spin-full-url"],
        format!("http://127.0.0.1:{}/echo/foo/bar?x=1&y=two", h.port)
    );
    assert_eq!(hd["spin-path-info"], "/foo/bar");
    assert_eq!(hd["spin-matched-route"], "/echo/...");
    assert_eq!(hd["spin-raw-component-route"], "/echo/...");
    assert_eq!(hd["spin-component-route"], "/echo");
    assert_eq!(hd["spin-base-path"], "/");
    let client = hd["spin-client-addr"].as_str().unwrap_or_default();
    assert!(
        client.starts_with("127.0.0.1:"),
        "spin-client-addr = {client:?}"
    );
}

#[tokio::test]
async fn spin_headers_on_exact_route() {
    let h = host().start().await;
    let r = h.get("/echo/exact").await.expect(200).json();
    let hd = &r["headers"];
    // Spin sends an empty path-info for an exact match.
    assert_eq!(hd["spin-path-info"], "");
    assert_eq!(hd["spin-matched-route"], "/echo/exact");
    assert_eq!(hd["spin-raw-component-route"], "/echo/exact");
    assert_eq!(hd["spin-component-route"], "/echo/exact");
    assert_eq!(hd["spin-base-path"], "/");
}

#[tokio::test]
async fn request_method_headers_and_body_reach_component() {
    let h = host().start().await;
    let r = h
        .request(
            Method::PUT,
            "/probe/echo",
            Bytes::from_static(b"twelve bytes"),
            &[("x-test-header", "abc")],
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["method"], "PUT");
    assert_eq!(r["body_len"], 12);
    assert_eq!(r["headers"]["x-test-header"], "abc");
}

#[tokio::test]
async fn request_log_line() {
    let h = host().start().await;
    h.get("/echo/exact?q=1").await.expect(200);
    h.get("/nothing-here").await.expect(404);
    let line = h
        .log
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("GET") && l.contains("/echo/exact") && l.contains("echo-exact")
        })
        .await
        .unwrap_or_else(|| panic!("no request log line:\n{}", h.log.text()));
    assert!(line.contains("200"), "status missing in {line:?}");
    assert!(line.contains("ms"), "duration missing in {line:?}");
}

// ---------------------------------------------------------------------------------------------
// Service chaining and private components

#[tokio::test]
async fn chaining_reaches_private_component() {
    let h = host().start().await;
    let r = h.get("/probe/chain").await.expect(200);
    assert_eq!(r.text(), "hello from private");
}

#[tokio::test]
async fn chained_request_carries_spin_headers() {
    let h = host().start().await;
    let r = h
        .get(&format!(
            "/probe/chain?to=private&path={}",
            enc("/echo/x?k=v")
        ))
        .await
        .expect(200)
        .json();
    assert_eq!(r["component"], "private");
    assert_eq!(r["path"], "/echo/x?k=v");
    assert_eq!(r["headers"]["spin-client-addr"], "0.0.0.0:0");
}

#[tokio::test]
async fn chaining_reaches_public_component_by_id() {
    let h = host().start().await;
    let r = h
        .get(&format!(
            "/probe/chain?to=echo-deeper&path={}",
            enc("/echo")
        ))
        .await
        .expect(200)
        .json();
    assert_eq!(r["component"], "echo-deeper");
}

#[tokio::test]
async fn private_component_unreachable_from_outside() {
    let h = host().start().await;
    h.get("/hello").await.expect(404);
    // An inbound Host naming the private component must not route to it.
    h.request(
        Method::GET,
        "/hello",
        Bytes::new(),
        &[("host", "private.spin.internal")],
    )
    .await
    .expect(404);
}

#[tokio::test]
async fn chaining_needs_allowed_outbound_host() {
    let h = host().start().await;
    let r = h.get("/narrow/chain").await.expect(502);
    assert!(r.text().contains("outbound error"), "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// Outbound HTTP

#[tokio::test]
async fn outbound_to_allowed_host() {
    let stand_in = StandIn::start("stand-in says hi").await;
    let h = host().start().await;
    let url = format!("http://127.0.0.1:{}/target?a=b", stand_in.port);
    let r = h
        .get(&format!("/probe/fetch?url={}", enc(&url)))
        .await
        .expect(200);
    assert_eq!(r.text(), "200\nstand-in says hi");
    assert_eq!(stand_in.hits(), vec!["GET /target?a=b".to_string()]);
}

#[tokio::test]
async fn outbound_to_refused_host() {
    let stand_in = StandIn::start("must not be reached").await;
    let h = host().start().await;
    let url = format!("http://127.0.0.1:{}/secret", stand_in.port);
    let r = h
        .get(&format!("/narrow/fetch?url={}", enc(&url)))
        .await
        .expect(502);
    let body = r.text().to_lowercase();
    assert!(
        body.contains("denied") || body.contains("not allowed"),
        "guest error should say the host is not allowed: {body}"
    );
    assert!(stand_in.hits().is_empty(), "refused request went out");
    let authority = format!("127.0.0.1:{}", stand_in.port);
    h.log
        .wait_for(Duration::from_secs(5), |l| l.contains(&authority))
        .await
        .unwrap_or_else(|| panic!("no log line names {authority}:\n{}", h.log.text()));
}

// ---------------------------------------------------------------------------------------------
// Variables

#[tokio::test]
async fn variables_defaults_and_templates() {
    let h = host().start().await;
    assert_eq!(
        h.get("/probe/var?name=greeting").await.expect(200).text(),
        "hello"
    );
    assert_eq!(
        h.get("/probe/var?name=message").await.expect(200).text(),
        "hello, test-region!"
    );
    assert_eq!(
        h.get("/probe/var?name=literal").await.expect(200).text(),
        "plain"
    );
    assert_eq!(
        h.get("/probe/var?name=token").await.expect(200).text(),
        "default-token"
    );
}

#[tokio::test]
async fn variables_env_overrides_default() {
    let h = host().env("SPIN_VARIABLE_GREETING", "env-hi").start().await;
    assert_eq!(
        h.get("/probe/var?name=greeting").await.expect(200).text(),
        "env-hi"
    );
    assert_eq!(
        h.get("/probe/var?name=message").await.expect(200).text(),
        "env-hi, test-region!"
    );
}

#[tokio::test]
async fn variables_static_provider_wins_over_env() {
    let dir = TempDir::new("rc");
    let rc = dir.write(
        "runtime-config.toml",
        "[[variable_provider]]\ntype = \"static\"\n\n[variable_provider.values]\ngreeting = \"static-hi\"\nregion = \"static-region\"\n",
    );
    // The required variable comes only from the static provider here.
    let h = host()
        .without_env("SPIN_VARIABLE_REGION")
        .env("SPIN_VARIABLE_GREETING", "env-hi")
        .runtime_config(rc)
        .start()
        .await;
    assert_eq!(
        h.get("/probe/var?name=greeting").await.expect(200).text(),
        "static-hi"
    );
    assert_eq!(
        h.get("/probe/var?name=message").await.expect(200).text(),
        "static-hi, static-region!"
    );
}

#[tokio::test]
async fn component_sees_only_mapped_variables() {
    let h = host().start().await;
    // `region` is an app variable but probe maps it only inside `message`.
    h.get("/probe/var?name=region").await.expect(404);
    h.get("/probe/var?name=nope").await.expect(404);
    // `narrow` maps no variables at all.
    h.get("/narrow/var?name=greeting").await.expect(404);
}

#[tokio::test]
async fn secret_variable_is_served_but_not_logged() {
    let secret = unique("s3cret");
    let h = host().env("SPIN_VARIABLE_API_TOKEN", &secret).start().await;
    assert_eq!(
        h.get("/probe/var?name=token").await.expect(200).text(),
        secret
    );
    h.get("/trivial").await.expect(200);
    h.log
        .wait_for(Duration::from_secs(5), |l| l.contains("/trivial"))
        .await
        .unwrap_or_else(|| panic!("no request log line:\n{}", h.log.text()));
    assert!(
        !h.log.text().contains(&secret),
        "secret value in the host log"
    );
}

#[tokio::test]
async fn wasi_config_reads_component_variables() {
    let h = host().start().await;
    assert_eq!(
        h.get("/probe/config?name=message").await.expect(200).text(),
        "hello, test-region!"
    );
    h.get("/probe/config?name=region").await.expect(404);
}

// ---------------------------------------------------------------------------------------------
// Files

#[tokio::test]
async fn files_are_mounted() {
    let h = host().start().await;
    let r = h.get("/probe/file?path=/config/x.txt").await.expect(200);
    assert_eq!(r.text(), "hello from x\n");
    h.get("/probe/file?path=/config/absent.txt")
        .await
        .expect(404);
    // Nothing of the host file system beyond the mount.
    h.get("/probe/file?path=/etc/hostname").await.expect(404);
    h.get(&format!(
        "/probe/file?path={}",
        enc("/config/../../../Cargo.toml")
    ))
    .await
    .expect(404);
    // A component without `files` sees no /config.
    h.get("/narrow/file?path=/config/x.txt").await.expect(404);
}

#[tokio::test]
async fn files_are_read_only() {
    let h = host().start().await;
    let r = h
        .get("/probe/file-write?path=/config/x.txt")
        .await
        .expect(500);
    assert!(r.text().contains("write error"), "{}", r.text());
    h.get("/probe/file-write?path=/config/new.txt")
        .await
        .expect(500);
    let r = h.get("/probe/file?path=/config/x.txt").await.expect(200);
    assert_eq!(r.text(), "hello from x\n");
    h.get("/probe/file?path=/config/new.txt").await.expect(404);
    let source = workspace_root().join("tests/apps/host/files");
    assert!(
        !source.join("new.txt").exists(),
        "write reached the source dir"
    );
}

// ---------------------------------------------------------------------------------------------
// Key-value

async fn kv_crud(h: &Host, prefix: &str) {
    let key = unique(prefix);
    h.get(&format!("/probe/kv/get?key={key}")).await.expect(404);
    assert_eq!(
        h.get(&format!("/probe/kv/exists?key={key}"))
            .await
            .expect(200)
            .text(),
        "false"
    );
    h.post(&format!("/probe/kv/set?key={key}"), "value one")
        .await
        .expect(200);
    assert_eq!(
        h.get(&format!("/probe/kv/get?key={key}"))
            .await
            .expect(200)
            .text(),
        "value one"
    );
    assert_eq!(
        h.get(&format!("/probe/kv/exists?key={key}"))
            .await
            .expect(200)
            .text(),
        "true"
    );
    let keys = h.get("/probe/kv/keys").await.expect(200).json();
    assert!(
        keys.as_array().unwrap().iter().any(|k| k == key.as_str()),
        "{key} not in {keys}"
    );
    // Binary values round-trip unchanged.
    let binary: Vec<u8> = (0..=255u8).collect();
    h.post(&format!("/probe/kv/set?key={key}"), binary.clone())
        .await
        .expect(200);
    assert_eq!(
        h.get(&format!("/probe/kv/get?key={key}"))
            .await
            .expect(200)
            .body,
        binary
    );
    h.get(&format!("/probe/kv/delete?key={key}"))
        .await
        .expect(200);
    h.get(&format!("/probe/kv/get?key={key}")).await.expect(404);
    assert_eq!(
        h.get(&format!("/probe/kv/exists?key={key}"))
            .await
            .expect(200)
            .text(),
        "false"
    );
    // Deleting an absent key is not an error.
    h.get(&format!("/probe/kv/delete?key={key}"))
        .await
        .expect(200);
}

async fn kv_batch(h: &Host, prefix: &str) {
    let (a, b, c) = (unique(prefix), unique(prefix), unique(prefix));
    let body = serde_json::json!({ &a: "A", &b: "B" }).to_string();
    h.post("/probe/kv/batch-set", body).await.expect(200);
    let got = h
        .get(&format!("/probe/kv/batch-get?keys={a},{b},{c}"))
        .await
        .expect(200)
        .json();
    assert_eq!(got[&a], "A");
    assert_eq!(got[&b], "B");
    // An absent key is either reported as null or left out.
    assert!(got.get(&c).is_none_or(|v| v.is_null()), "{got}");
    h.get(&format!("/probe/kv/batch-delete?keys={a},{b}"))
        .await
        .expect(200);
    h.get(&format!("/probe/kv/get?key={a}")).await.expect(404);
}

#[tokio::test]
async fn kv_sqlite_crud() {
    let h = host().start().await;
    kv_crud(&h, "crud").await;
}

#[tokio::test]
async fn kv_sqlite_batch() {
    let h = host().start().await;
    kv_batch(&h, "batch").await;
}

#[tokio::test]
async fn kv_sqlite_increment() {
    let h = host().start().await;
    let key = unique("counter");
    assert_eq!(
        h.get(&format!("/probe/kv/incr?key={key}&delta=1"))
            .await
            .expect(200)
            .text(),
        "1"
    );
    assert_eq!(
        h.get(&format!("/probe/kv/incr?key={key}&delta=5"))
            .await
            .expect(200)
            .text(),
        "6"
    );
    assert_eq!(
        h.get(&format!("/probe/kv/incr?key={key}&delta=-2"))
            .await
            .expect(200)
            .text(),
        "4"
    );
    assert_eq!(
        h.get(&format!("/probe/kv/incr?key={key}&delta=0"))
            .await
            .expect(200)
            .text(),
        "4"
    );
}

#[tokio::test]
async fn kv_store_label_not_granted() {
    let h = host().start().await;
    let r = h.get("/probe/kv/get?key=x&store=other").await.expect(500);
    assert!(r.text().starts_with("open error"), "{}", r.text());
    // `narrow` lists no stores, so even `default` is refused.
    let r = h.get("/narrow/kv/get?key=x").await.expect(500);
    assert!(r.text().starts_with("open error"), "{}", r.text());
}

#[tokio::test]
async fn kv_increment_on_plain_value_keeps_host_healthy() {
    // Spin 4.0.2 panics here and breaks all later key-value calls; the local runtime must not.
    let h = host().start().await;
    let key = unique("plain");
    h.post(&format!("/probe/kv/set?key={key}"), "not a counter")
        .await
        .expect(200);
    let r = h.get(&format!("/probe/kv/incr?key={key}")).await;
    assert!(
        matches!(r.status.as_u16(), 200 | 500),
        "incr on a plain value: {} {}",
        r.status,
        r.text()
    );
    let other = unique("after");
    h.post(&format!("/probe/kv/set?key={other}"), "fine")
        .await
        .expect(200);
    assert_eq!(
        h.get(&format!("/probe/kv/get?key={other}"))
            .await
            .expect(200)
            .text(),
        "fine"
    );
    let counter = unique("counter");
    assert_eq!(
        h.get(&format!("/probe/kv/incr?key={counter}"))
            .await
            .expect(200)
            .text(),
        "1"
    );
}

#[tokio::test]
async fn kv_sqlite_persists_across_restart() {
    let state = TempDir::new("persist");
    let key = unique("persist");
    {
        let mut h = host().state_dir(state.path()).start().await;
        h.post(&format!("/probe/kv/set?key={key}"), "kept")
            .await
            .expect(200);
        h.terminate();
        assert!(h.wait_exit(Duration::from_secs(10)).await.success());
    }
    let h = host().state_dir(state.path()).start().await;
    assert_eq!(
        h.get(&format!("/probe/kv/get?key={key}"))
            .await
            .expect(200)
            .text(),
        "kept"
    );
}

/// Fires `n` concurrent requests at `path` and returns their bodies.
async fn concurrent(h: &Host, path: &str, n: usize) -> Vec<String> {
    let reqs = (0..n).map(|_| h.get(path));
    join_all(reqs)
        .await
        .into_iter()
        .map(|r| r.expect(200).text())
        .collect()
}

fn assert_increments_unique(results: Vec<String>, n: i64) {
    let got: BTreeSet<i64> = results
        .iter()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("not a number: {s}")))
        .collect();
    let want: BTreeSet<i64> = (1..=n).collect();
    assert_eq!(
        got, want,
        "each increment must see a distinct value 1..={n}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_sqlite_concurrent_increment_exact() {
    let h = host().start().await;
    let key = unique("incr");
    let results = concurrent(&h, &format!("/probe/kv/incr?key={key}&delta=1"), 100).await;
    assert_increments_unique(results, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_sqlite_concurrent_cas_exact() {
    let h = host().start().await;
    let key = unique("cas");
    let attempts = concurrent(&h, &format!("/probe/kv/cas-add?key={key}&delta=1"), 100).await;
    assert!(attempts
        .iter()
        .all(|a| a.parse::<u32>().is_ok_and(|n| n >= 1)));
    assert_eq!(
        h.get(&format!("/probe/kv/get?key={key}"))
            .await
            .expect(200)
            .text(),
        "100"
    );
}

#[tokio::test]
async fn kv_redis_crud_and_batch() {
    let dir = TempDir::new("redis");
    let h = host()
        .runtime_config(redis_runtime_config(&dir))
        .start()
        .await;
    kv_crud(&h, "redis-crud").await;
    kv_batch(&h, "redis-batch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_redis_two_hosts_increment_exact() {
    let dir = TempDir::new("redis");
    let rc = redis_runtime_config(&dir);
    let a = host().runtime_config(rc.clone()).start().await;
    let b = host().runtime_config(rc).start().await;
    let key = unique("redis-incr");
    let path = format!("/probe/kv/incr?key={key}&delta=1");
    let (ra, rb) = tokio::join!(concurrent(&a, &path, 50), concurrent(&b, &path, 50));
    assert_increments_unique(ra.into_iter().chain(rb).collect(), 100);
    a.get(&format!("/probe/kv/delete?key={key}"))
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_redis_two_hosts_cas_exact() {
    let dir = TempDir::new("redis");
    let rc = redis_runtime_config(&dir);
    let a = host().runtime_config(rc.clone()).start().await;
    let b = host().runtime_config(rc).start().await;
    let key = unique("redis-cas");
    let path = format!("/probe/kv/cas-add?key={key}&delta=1");
    let (ra, rb) = tokio::join!(concurrent(&a, &path, 50), concurrent(&b, &path, 50));
    assert_eq!(ra.len() + rb.len(), 100);
    assert_eq!(
        a.get(&format!("/probe/kv/get?key={key}"))
            .await
            .expect(200)
            .text(),
        "100"
    );
    assert_eq!(
        b.get(&format!("/probe/kv/get?key={key}"))
            .await
            .expect(200)
            .text(),
        "100"
    );
    a.get(&format!("/probe/kv/delete?key={key}"))
        .await
        .expect(200);
}

// ---------------------------------------------------------------------------------------------
// Limits, failures, concurrency

#[tokio::test]
async fn body_under_limit_is_delivered() {
    let h = host().start().await;
    let r = h
        .post("/probe/body", vec![b'a'; 512 * 1024])
        .await
        .expect(200);
    assert_eq!(r.text(), (512 * 1024).to_string());
}

#[tokio::test]
async fn body_over_limit_is_413() {
    let h = host().start().await;
    let r = h
        .post("/probe/body", vec![b'a'; 2 * 1024 * 1024])
        .await
        .expect(413);
    // The host drains a moderately oversized body, so the connection stays usable...
    assert_ne!(
        r.headers
            .get("connection")
            .map(|v| v.to_str().unwrap_or("")),
        Some("close"),
        "a drained body needs no connection close: {:?}",
        r.headers
    );
    h.get("/trivial").await.expect(200);
    // ...and keeps serving new connections.
    h.get_on_new_connection("/trivial").await.expect(200);
}

#[tokio::test]
async fn chunked_body_over_limit_is_413() {
    let h = host().start().await;
    let r = raw_chunked_post(h.port, "/probe/body", 2 * 1024 * 1024).await;
    assert!(r.starts_with("HTTP/1.1 413"), "expected 413, got: {r}");
}

/// POSTs `len` bytes with chunked encoding (no Content-Length) over a plain socket; returns
/// the status line. Writing stops early if the host answers and closes first.
async fn raw_chunked_post(port: u16, path: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'b'; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if s.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "no answer within 30 s");
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn trap_is_500_and_host_survives() {
    let h = host().start().await;
    h.get("/probe/trap").await.expect(500);
    h.log
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("/probe/trap") && l.contains("500")
        })
        .await
        .unwrap_or_else(|| panic!("no log line for the trapped request:\n{}", h.log.text()));
    let r = h.get("/probe/echo").await.expect(200).json();
    assert_eq!(r["component"], "probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_all_succeed() {
    let h = host().start().await;
    let bodies = concurrent(&h, "/trivial", 200).await;
    assert!(bodies.iter().all(|b| b == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request() {
    let mut h = host().start().await;
    // Warm up so the slow request is surely in the component when the signal arrives.
    h.get("/probe/echo").await.expect(200);
    let url = h.url("/probe/sleep?ms=1500");
    let slow = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<Bytes>>();
        let req = hyper::Request::get(url)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        send(&client, req).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.terminate();
    let r = slow.await.expect("slow request task").expect(200);
    assert_eq!(r.text(), "slept 1500");
    let status = h.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}:\n{}", h.log.text());
}

// ---------------------------------------------------------------------------------------------
// Start-up failures

#[tokio::test]
async fn unsupported_manifest_field_fails_start() {
    let (status, out) = HostBuilder::new(app("unsupported-field"))
        .start_expecting_failure()
        .await;
    assert!(!status.success());
    assert!(out.contains("sqlite_databases"), "field not named:\n{out}");
}

#[tokio::test]
async fn unknown_manifest_field_fails_start() {
    let (status, out) = HostBuilder::new(app("unknown-field"))
        .start_expecting_failure()
        .await;
    assert!(!status.success());
    assert!(out.contains("frobnicate"), "field not named:\n{out}");
}

#[tokio::test]
async fn missing_required_variable_fails_start() {
    let (status, out) = HostBuilder::new(app("missing-variable"))
        .start_expecting_failure()
        .await;
    assert!(!status.success());
    assert!(out.contains("must_have"), "variable not named:\n{out}");
}

#[tokio::test]
async fn missing_required_variable_of_main_app_fails_start() {
    let (status, out) = host()
        .without_env("SPIN_VARIABLE_REGION")
        .start_expecting_failure()
        .await;
    assert!(!status.success());
    assert!(out.contains("region"), "variable not named:\n{out}");
}

#[tokio::test]
async fn bad_import_fails_start() {
    let (status, out) = HostBuilder::new(app("bad-import"))
        .start_expecting_failure()
        .await;
    assert!(!status.success());
    assert!(
        out.contains("fermyon:spin/key-value"),
        "import not named:\n{out}"
    );
}
