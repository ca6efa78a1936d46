//! Faults (issue 7):
//! - `kill -9` of the host under a steady load of new requests and votes, ten times, restarting
//!   it on the same state each time (SQLite), or killing one of two hosts on one Redis.
//!   Afterwards every request that was answered 200/202 is still there with its audit records,
//!   no request was decided twice, and the audit chain verifies end to end (after the sweep has
//!   repaired what the killed appenders left).
//! - Redis killed and restarted while a host serves (a redis-server of the test's own): answers
//!   are 5xx problem details meanwhile, serving resumes by itself, nothing is half-written.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use shared::audit::{verify_export, VerifyOptions};
use shared::crypto::Jwks;
use support::app::*;
use support::*;

/// What the load saw answered: request ids by their first answer's status.
#[derive(Default)]
struct Accepted {
    routine: BTreeSet<String>,
    pending: Vec<String>,
    /// `(request, voter)` of votes answered 200.
    votes: BTreeSet<(String, String)>,
}

const CROWD: usize = 6;

fn release_body(f: &Fixture, n: u64) -> Value {
    json!({"action": "deploy.release", "resource": {"type": "Service", "id": format!("svc-{n}")},
           "callback_url": f.callback_url("etl-bot", &format!("r{n}"))})
}

fn routine_body(n: u64) -> Value {
    json!({"action": "db.query", "resource": {"type": "Table", "id": format!("t-{n}")}})
}

fn random_below(n: u64) -> u64 {
    u64::from_le_bytes(shared::canon::random_bytes::<8>().unwrap()) % n.max(1)
}

/// One load worker: new routine and pending requests and votes on pending ones, back to back,
/// until `stop` (or until the host is gone: a failed call ends the worker).
async fn worker(
    f: Arc<Fixture>,
    h: Arc<Host>,
    accepted: Arc<Mutex<Accepted>>,
    stop: Arc<AtomicBool>,
    w: u64,
) {
    let mut n = w * 1_000_000 + random_below(1_000_000);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let pick = random_below(3);
        let answer = match pick {
            0 => {
                h.try_post_json("/v1/actions", f.token("etl-bot"), &routine_body(n))
                    .await
            }
            1 => {
                h.try_post_json("/v1/actions", f.token("etl-bot"), &release_body(&f, n))
                    .await
            }
            _ => {
                let target = {
                    let a = accepted.lock().unwrap();
                    (!a.pending.is_empty())
                        .then(|| a.pending[random_below(a.pending.len() as u64) as usize].clone())
                };
                let Some(id) = target else { continue };
                let voter = crowd_member(1 + random_below(CROWD as u64) as usize);
                let path = format!("/v1/actions/{id}/decision");
                let r = h
                    .try_post_json(&path, f.token(&voter), &json!({"decision": "approve"}))
                    .await;
                if let Some(r) = &r {
                    if r.status.as_u16() == 200 {
                        accepted.lock().unwrap().votes.insert((id, voter));
                    }
                }
                match r {
                    Some(_) => continue,
                    None => return,
                }
            }
        };
        let Some(r) = answer else { return };
        let id = r.json()["id"].as_str().map(str::to_string);
        let mut a = accepted.lock().unwrap();
        match (r.status.as_u16(), id) {
            (200, Some(id)) if pick == 0 => {
                a.routine.insert(id);
            }
            (202, Some(id)) if pick == 1 => a.pending.push(id),
            (status, _) if status >= 500 => {} // refused while dying: nothing promised
            (status, _) => panic!("unexpected answer {status}: {}", r.text()),
        }
    }
}

/// Ten rounds: start a host on `state`, load it (and `survivor`, when there is one) with four
/// workers, and kill it with SIGKILL after a random 0.3–1.5 s. Returns what was answered.
async fn crash_rounds(f: &Arc<Fixture>, state: &Path, survivor: Option<Arc<Host>>) -> Accepted {
    let accepted = Arc::new(Mutex::new(Accepted::default()));
    for _ in 0..10 {
        let victim = Arc::new(f.host().state_dir(state).start().await);
        let hosts: Vec<Arc<Host>> = std::iter::once(victim.clone())
            .chain(survivor.clone())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4u64)
            .map(|w| {
                let h = hosts[w as usize % hosts.len()].clone();
                tokio::spawn(worker(f.clone(), h, accepted.clone(), stop.clone(), w))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + random_below(1200))).await;
        victim.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.expect("a load worker panicked");
        }
    }
    let a = std::mem::take(&mut *accepted.lock().unwrap());
    assert!(
        a.routine.len() >= 10 && a.pending.len() >= 10,
        "too little load to mean anything: {} routine, {} pending",
        a.routine.len(),
        a.pending.len()
    );
    a
}

/// What must hold after the crashes, checked through `h`.
async fn nothing_lost_nothing_twice(f: &Fixture, h: &Host, a: &Accepted) {
    // Every accepted request is there, as answered or further along.
    for id in &a.routine {
        assert_eq!(f.status_of(h, id).await, "allowed", "{id}");
    }
    for id in &a.pending {
        let status = f.status_of(h, id).await;
        assert!(
            status == "pending" || status == "approved",
            "{id}: {status}"
        );
    }
    // The sweep repairs the audit chain behind appenders that were killed (it fills a number
    // stuck for 10 s); then every accepted request has its records.
    f.sweep_until(h, Duration::from_secs(14), || None::<()>)
        .await;
    let export = f.audit_export(h).await;
    let records: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_request: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &records {
        if let Some(id) = r["request_id"].as_str() {
            by_request
                .entry(id)
                .or_default()
                .push(r["type"].as_str().unwrap());
        }
    }
    for id in a.routine.iter().chain(&a.pending) {
        let types = by_request.get(id.as_str()).cloned().unwrap_or_default();
        let requested = types.iter().filter(|t| **t == "action.requested").count();
        assert_eq!(requested, 1, "{id}: {types:?}");
    }
    // Nothing decided twice: at most one decision and one grant per request.
    for (id, types) in &by_request {
        let count = |t: &str| types.iter().filter(|x| **x == t).count();
        let decisions = count("action.approved") + count("action.denied") + count("action.expired");
        assert!(decisions <= 1, "{id} decided twice: {types:?}");
        assert!(count("grant.issued") <= 1, "{id}: {types:?}");
    }
    // Every vote answered 200 is in the trail.
    for (id, voter) in &a.votes {
        let found = records.iter().any(|r| {
            r["type"] == "vote.cast"
                && r["request_id"] == id.as_str()
                && r["actor"] == voter.as_str()
        });
        assert!(found, "vote of {voter} on {id} missing from the trail");
    }
    // The chain verifies end to end against the published keys.
    let jwks = Jwks::parse(&h.get("/v1/keys").await.expect(200).text()).unwrap();
    let report = verify_export(&export, &jwks.ed25519_keys(), VerifyOptions::default());
    assert!(report.ok(), "{:?}", report.broken);
    // Callbacks (at least once): all of a request's carry one status and one event id.
    let mut seen: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for r in f.callbacks.received() {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let event = r.header("countersign-event-id").unwrap_or("").to_string();
        let status = v["status"].as_str().unwrap().to_string();
        seen.entry(v["id"].as_str().unwrap().to_string())
            .or_default()
            .insert((status, event));
    }
    for (id, variants) in seen {
        assert_eq!(variants.len(), 1, "{id}: callbacks disagree: {variants:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_host_loses_nothing_and_decides_nothing_twice() {
    let f = Arc::new(
        Fixture::new(Options {
            crowd: CROWD,
            redis_db: None,
        })
        .await,
    );
    let state = f.dir.path().join("state");
    let accepted = crash_rounds(&f, &state, None).await;
    let h = f.host().state_dir(&state).start().await;
    nothing_lost_nothing_twice(&f, &h, &accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_host_of_two_on_redis_loses_nothing() {
    let f = Arc::new(
        Fixture::new(Options {
            crowd: CROWD,
            redis_db: Some(13),
        })
        .await,
    );
    let survivor = Arc::new(f.start().await);
    let state = f.dir.path().join("victim");
    let accepted = crash_rounds(&f, &state, Some(survivor.clone())).await;
    nothing_lost_nothing_twice(&f, &survivor, &accepted).await;
}

/// A redis-server of the test's own (not the shared one), persisting every write (AOF, fsync
/// always), so that it can be killed and restarted on the same port and data.
struct PrivateRedis {
    port: u16,
    dir: TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            dir: TempDir::new("redis"),
            child: None,
        };
        r.restart().await;
        r
    }

    async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) runs");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let up = eventually(Duration::from_secs(10), || async {
            std::net::TcpStream::connect(&addr).ok().map(|_| ())
        })
        .await;
        assert!(up.is_some(), "redis-server did not start on {addr}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn runtime_config(&self, f: &Fixture) -> std::path::PathBuf {
        f.dir.write(
            "runtime-config-private-redis.toml",
            &format!(
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
                self.port
            ),
        )
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_fails_cleanly_and_serving_resumes() {
    let mut redis = PrivateRedis::start().await;
    let f = Fixture::new(Options::default()).await;
    let h = f
        .host()
        .runtime_config(redis.runtime_config(&f))
        .start()
        .await;
    let agent = f.token("etl-bot").to_string();
    let before_routine = h
        .post_as("/v1/actions", &agent, &routine_body(1))
        .await
        .expect(200)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before_pending = f
        .pending(&h, "etl-bot", &export_body("restart", None))
        .await;

    // Redis goes away: every answer is a problem (5xx), promptly; nothing is accepted.
    redis.kill();
    for n in 3..6 {
        let body = if n % 2 == 0 {
            routine_body(n)
        } else {
            release_body(&f, n)
        };
        let r = h
            .try_post_json("/v1/actions", &agent, &body)
            .await
            .expect("an answer, not a hang, while Redis is down");
        assert_problem_class(&r, 5, "request while Redis is down");
        let path = format!("/v1/actions/{before_pending}");
        assert_problem_class(
            &h.get_as(&path, &agent).await,
            5,
            "read while Redis is down",
        );
    }

    // Redis is back: serving resumes by itself, and what was accepted before is there.
    redis.restart().await;
    let resumed = eventually(Duration::from_secs(15), || async {
        let r = h
            .try_post_json("/v1/actions", &agent, &routine_body(99))
            .await?;
        (r.status.as_u16() == 200).then_some(())
    })
    .await;
    assert!(
        resumed.is_some(),
        "no routine decision within 15 s of Redis coming back"
    );
    assert_eq!(f.status_of(&h, &before_routine).await, "allowed");
    assert_eq!(f.status_of(&h, &before_pending).await, "pending");
    f.decide(&h, &before_pending, "bob", &json!({"decision": "approve"}))
        .await
        .expect(200);
    // Nothing half-written: the trail verifies end to end (after the sweep's repairs).
    f.sweep_until(&h, Duration::from_secs(12), || None::<()>)
        .await;
    let export = f.audit_export(&h).await;
    let jwks = Jwks::parse(&h.get("/v1/keys").await.expect(200).text()).unwrap();
    let report = verify_export(&export, &jwks.ed25519_keys(), VerifyOptions::default());
    assert!(report.ok(), "{:?}", report.broken);
    for id in [&before_routine, &before_pending] {
        assert!(export.contains(id.as_str()), "{id} lost from the trail");
    }
}
