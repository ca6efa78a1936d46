//! The `countersign up` child process: spawn, wait until it answers, read its memory, kill it.

use std::ffi::OsString;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::load;

pub struct HostOptions<'a> {
    pub bin: &'a Path,
    pub manifest: &'a Path,
    pub state_dir: &'a Path,
    pub runtime_config_file: Option<&'a Path>,
    /// Compiled components (the host's default: `<state_dir>/cache`).
    pub cache_dir: Option<&'a Path>,
    pub env: &'a [(OsString, OsString)],
    /// The host's stdout and stderr go here (appended).
    pub log: &'a Path,
}

/// A running host. Dropping it kills the process (also on error or panic).
pub struct Host {
    child: Child,
    pub addr: SocketAddr,
    spawned_at: Instant,
    log: PathBuf,
}

/// Memory of the host process, from /proc/<pid>/status, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// VmHWM: peak resident set size (since start, or since the last [`Host::reset_peak`]).
    pub peak_kib: u64,
    /// VmRSS: current resident set size.
    pub rss_kib: u64,
}

impl Host {
    pub fn spawn(opts: &HostOptions<'_>) -> Result<Host> {
        let addr = free_port()?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(opts.log)
            .with_context(|| format!("cannot open {}", opts.log.display()))?;
        let mut cmd = Command::new(opts.bin);
        cmd.arg("up")
            .arg("-f")
            .arg(opts.manifest)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(opts.state_dir)
            .arg("--sweep-interval")
            .arg("0");
        if let Some(rc) = opts.runtime_config_file {
            cmd.arg("--runtime-config-file").arg(rc);
        }
        if let Some(cache) = opts.cache_dir {
            cmd.arg("--cache-dir").arg(cache);
        }
        // The compile cache lives in the state folder, so a fresh folder is a cold start.
        cmd.env_remove("COUNTERSIGN_CACHE_DIR")
            .env("COUNTERSIGN_LOG", "warn")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let spawned_at = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", opts.bin.display()))?;
        Ok(Host {
            child,
            addr,
            spawned_at,
            log: opts.log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET <path>` until it answers 200; returns the time from spawn to that answer.
    pub async fn wait_ready(&mut self, path: &str, timeout: Duration) -> Result<Duration> {
        let deadline = self.spawned_at + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the host exited ({status}) before answering; its log:\n{}",
                    self.log_tail(40)
                );
            }
            let last_error = match load::probe(self.addr, path).await {
                Ok(200) => return Ok(self.spawned_at.elapsed()),
                Ok(status) => format!("status {status}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the host did not answer 200 on {path} within {timeout:?} (last: {last_error}); its log:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn memory(&self) -> Memory {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Memory {
            peak_kib: field("VmHWM:"),
            rss_kib: field("VmRSS:"),
        }
    }

    /// CPU time (user + system) the host has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// Resets VmHWM to the current RSS (writes 5 to /proc/<pid>/clear_refs), so the next
    /// [`Host::memory`] reports the peak of the scenario in between. False when refused.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// Lines of the host's log that mention a warning or an error.
    pub fn log_problems(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("warn") || l.contains("error") || l.contains("panick")
            })
            .map(str::to_string)
            .collect()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the host and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time (user + system) of this process so far (the load generator's cost).
pub fn own_cpu_time() -> Duration {
    cpu_time_of("/proc/self/stat")
}

/// utime + stime from a /proc/<pid>/stat file, in USER_HZ (100/s on Linux) ticks.
fn cpu_time_of(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis
    // start at field 3, so utime (14) and stime (15) are the 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A port nobody listens on right now (bound then released; the host binds it right after).
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}
