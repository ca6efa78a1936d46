//! `countersign-bench`: starts `countersign up` as a child process, drives it with the scenarios
//! of `scenarios.rs` and prints throughput, latency percentiles and the host's memory. It prints
//! figures only; nothing in it passes or fails on timing.

mod app;
mod host;
mod load;
mod report;
mod scenarios;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use host::{Host, HostOptions};
use load::Until;
use report::Row;
use scenarios::{App, Mode, Scenario, Setup};

#[derive(Parser, Debug)]
#[command(
    name = "countersign-bench",
    about = "Benchmark `countersign up`: throughput, latency percentiles and memory per scenario"
)]
struct Cli {
    /// The host binary.
    #[arg(long, default_value = "target/release/countersign")]
    bin: PathBuf,
    /// The application manifest the host serves.
    #[arg(short = 'f', long, default_value = "tests/apps/host/spin.toml")]
    manifest: PathBuf,
    /// The real app's manifest (served with a bench directory, policy and secrets; see
    /// BENCHMARKS.md). Its component `source` paths are relative to its folder.
    #[arg(long, default_value = "spin.toml")]
    app_manifest: PathBuf,
    /// Runtime config passed to the host (e.g. to put the key-value store on Redis).
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,
    /// How long each scenario runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent keep-alive connections of a saturation scenario.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests per second of an open-loop scenario.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Most connections an open-loop scenario may have in flight.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Run only the scenarios whose name contains this text (repeatable; case-insensitive).
    #[arg(long)]
    scenario: Vec<String>,
    /// The throughput each saturation row is divided by: a scenario name (run even when
    /// --scenario leaves it out) or a figure in requests/s (e.g. from BENCHMARKS.md).
    #[arg(long, default_value = scenarios::FLOOR)]
    ratio_to: String,
    /// Requests sent to the readiness path after start, before any scenario.
    #[arg(long, default_value_t = 3000)]
    warmup: u64,
    /// Requests sent with each scenario's own request before it is measured.
    #[arg(long, default_value_t = 500)]
    scenario_warmup: u64,
    /// The host is ready when `GET` on this path answers 200 (test app).
    #[arg(long, default_value = "/trivial")]
    ready_path: String,
    /// Longest wait for the host to answer after it is started.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
    /// Extra environment for the host, NAME=VALUE (repeatable; e.g. SPIN_VARIABLE_X=y).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(OsString, OsString)>,
    /// Worker threads of the load generator (the host gets the rest of the machine).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The Redis database of `routine decision on Redis` (emptied with FLUSHDB before the run).
    #[arg(long, default_value = "redis://127.0.0.1:6379/11")]
    redis_url: String,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn parse_env(s: &str) -> Result<(OsString, OsString), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    Ok((k.into(), v.into()))
}

/// What `--ratio-to` names.
enum Baseline {
    Scenario(String),
    Figure(f64),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("countersign-bench: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The host is owned inside `run`, so it is killed when `run` ends, fails, panics or is
    // dropped on SIGINT/SIGTERM.
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli) => result,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let all = scenarios::all(cli.rate);
    if cli.list {
        for s in &all {
            println!(
                "{:<32} {:?} app: {} {} ({:?})",
                s.name, s.app, s.method, s.path, s.mode
            );
        }
        return Ok(());
    }
    let baseline = match cli.ratio_to.trim().parse::<f64>() {
        Ok(v) if v > 0.0 => Baseline::Figure(v),
        _ => Baseline::Scenario(cli.ratio_to.clone()),
    };
    let selected = select(&all, &cli.scenario, &baseline)?;
    if !cli.bin.exists() {
        bail!(
            "{} not found: build it first (`make build`)",
            cli.bin.display()
        );
    }

    report::print_header(&cli.bin, &cli.manifest, cli.runtime_config_file.as_deref());
    if selected.iter().any(|s| matches!(s.app, App::Real(_))) {
        println!(
            "app:     {} (real app, bench directory and policy)",
            cli.app_manifest.display()
        );
    }
    println!(
        "settings: duration {:?}, {} connections (saturation), {} req/s (open loop), {} client thread(s)",
        cli.duration, cli.connections, cli.rate, cli.client_threads
    );

    let work = tempfile::Builder::new()
        .prefix("countersign-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;

    let mut rows: Vec<Row> = Vec::new();
    let mut floor = match &baseline {
        Baseline::Figure(v) => Some(*v),
        Baseline::Scenario(_) => None,
    };
    let mut problems = Vec::new();

    // One host per app (and real-app setup), in list order: the test app first (the floor).
    let mut apps: Vec<App> = Vec::new();
    for s in &selected {
        if !apps.contains(&s.app) {
            apps.push(s.app);
        }
    }
    let mut skipped = Vec::new();
    for app in apps {
        let scenarios: Vec<Scenario> = selected.iter().filter(|s| s.app == app).cloned().collect();
        // Redis is the machine's, not the bench's: without it, its scenarios are skipped.
        if app == App::Real(Setup::Redis) {
            if let Err(e) = app::redis_flush(&cli.redis_url).await {
                let why = format!("Redis {}: {e:#}", cli.redis_url);
                println!();
                for s in &scenarios {
                    println!("note: {} skipped: {why}", s.name);
                    skipped.push(format!("{} ({why})", s.name));
                    rows.push(Row::skipped(s));
                }
                continue;
            }
        }
        let target = target(&cli, app, work.path()).await?;
        problems
            .extend(run_app(&cli, &target, &scenarios, &baseline, &mut floor, &mut rows).await?);
    }

    println!("load average at the end: {}", report::load_average());
    println!();
    report::print_markdown(&rows, floor, &cli.ratio_to);
    for s in &skipped {
        println!("skipped: {s}");
    }
    if !problems.is_empty() {
        println!();
        println!("host log: {} warning/error line(s), e.g.:", problems.len());
        for line in problems.iter().take(5) {
            println!("    {line}");
        }
    }
    Ok(())
}

/// One app under test: what its host is started with.
struct Target {
    label: String,
    manifest: PathBuf,
    env: Vec<(OsString, OsString)>,
    runtime_config_file: Option<PathBuf>,
    /// Compiled components; shared by the real-app hosts, so only the first one starts cold.
    cache_dir: PathBuf,
    ready_path: String,
    /// Holds its state folder and log.
    dir: PathBuf,
    /// The real app's secrets, tokens and callback stand-in.
    deployment: Option<app::Deployment>,
}

/// What the host of `app` is started with; its files go to a folder of `work`.
async fn target(cli: &Cli, app: App, work: &Path) -> Result<Target> {
    let setup = match app {
        App::Test => {
            let dir = work.join("test");
            let mut env = vec![("SPIN_VARIABLE_REGION".into(), "bench".into())];
            env.extend(cli.env.iter().cloned());
            return Ok(Target {
                label: "test app".into(),
                manifest: cli.manifest.clone(),
                env,
                runtime_config_file: cli.runtime_config_file.clone(),
                cache_dir: dir.join("cache"),
                ready_path: cli.ready_path.clone(),
                dir,
                deployment: None,
            });
        }
        App::Real(setup) => setup,
    };
    let (label, folder, extra_policies) = match setup {
        Setup::Default => ("real app".to_string(), "app".to_string(), 0),
        Setup::ExtraPolicies(n) => (
            format!("real app, {n} extra policies"),
            format!("app-{n}-policies"),
            n,
        ),
        Setup::Redis => (
            format!("real app, key-value on {}", cli.redis_url),
            "app-redis".into(),
            0,
        ),
        Setup::OwnHost => ("real app, own host".into(), "app-own".into(), 0),
    };
    let dir = work.join(folder);
    std::fs::create_dir_all(&dir)?;
    // Redis: emptied by the caller.
    let runtime_config_file = if setup == Setup::Redis {
        let file = dir.join("runtime-config.toml");
        std::fs::write(
            &file,
            format!(
                "[key_value_store.default]\ntype = \"redis\"\nurl = {:?}\n",
                cli.redis_url
            ),
        )?;
        Some(file)
    } else {
        cli.runtime_config_file.clone()
    };
    let deployment =
        app::Deployment::new(&cli.app_manifest, &dir, &app::policy_set(extra_policies)).await?;
    let mut env = deployment.env.clone();
    env.extend(cli.env.iter().cloned());
    Ok(Target {
        label,
        manifest: deployment.manifest.clone(),
        env,
        runtime_config_file,
        cache_dir: work.join("app-cache"),
        ready_path: "/v1/keys".into(),
        dir,
        deployment: Some(deployment),
    })
}

/// Starts a host on `target` (cold, unless an earlier host filled its compile cache, then warm;
/// the warm one is measured), warms it up and runs `scenarios` on it, printing a row each. Returns the host
/// log's warning/error lines.
async fn run_app(
    cli: &Cli,
    target: &Target,
    scenarios: &[Scenario],
    baseline: &Baseline,
    floor: &mut Option<f64>,
    rows: &mut Vec<Row>,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(&target.dir)?;
    let state_dir = target.dir.join("state");
    let log = target.dir.join("host.log");
    let opts = HostOptions {
        bin: &cli.bin,
        manifest: &target.manifest,
        state_dir: &state_dir,
        runtime_config_file: target.runtime_config_file.as_deref(),
        cache_dir: Some(&target.cache_dir),
        env: &target.env,
        log: &log,
    };

    // First start: cold (components are compiled) on an empty compile cache; on one an earlier
    // host filled, only the snapshot of a pre-initialised component is made, since it depends
    // on this target's own files. Then a warm start (everything from the cache); that host is
    // the one measured.
    let first = {
        let kind = if target.cache_dir.exists() {
            "first start (snapshot of these files)"
        } else {
            "cold"
        };
        let mut first = Host::spawn(&opts)?;
        let start = first
            .wait_ready(&target.ready_path, cli.ready_timeout)
            .await?;
        let memory = first.memory();
        first.stop();
        format!(
            "{kind} {:.0} ms (peak RSS {:.1} MB), ",
            start.as_secs_f64() * 1e3,
            report::mb(memory.peak_kib)
        )
    };
    let mut host = Host::spawn(&opts)?;
    let warm_start = host
        .wait_ready(&target.ready_path, cli.ready_timeout)
        .await?;
    let warm_mem = host.memory();
    println!();
    println!(
        "{}: start (spawn to first 200 on {}): {}warm {:.0} ms (RSS {:.1} MB)",
        target.label,
        target.ready_path,
        first,
        warm_start.as_secs_f64() * 1e3,
        report::mb(warm_mem.rss_kib),
    );

    let ready = Scenario {
        name: "warm-up".into(),
        app: App::Test,
        method: http::Method::GET,
        path: target.ready_path.clone(),
        headers: Vec::new(),
        body: bytes::Bytes::new(),
        mode: Mode::Saturation,
        expect_status: 200,
    };
    let warm = load::closed_loop(
        host.addr,
        Arc::new(load::Template::new(&ready, host.addr)?),
        cli.connections,
        Until::Requests(cli.warmup),
    )
    .await;
    println!(
        "warm-up: {} requests on {} ({} errors), RSS after {:.1} MB",
        warm.ok,
        target.ready_path,
        warm.errors,
        report::mb(host.memory().rss_kib)
    );
    let peak_resets = host.reset_peak();
    if !peak_resets {
        println!("note: cannot reset VmHWM, so peak RSS is since the host started");
    }
    println!();

    report::print_row_header();
    for scenario in scenarios {
        let scenario = resolved(scenario, target.deployment.as_ref());
        let template = Arc::new(load::Template::new(&scenario, host.addr)?);
        if cli.scenario_warmup > 0 {
            match (scenario.mode, &target.deployment) {
                (Mode::RoundTrip { concurrency }, Some(d)) => {
                    let n = (cli.scenario_warmup / 10).max(1);
                    app::round_trips(
                        host.addr,
                        template.clone(),
                        d,
                        concurrency,
                        Until::Requests(n),
                    )
                    .await;
                }
                _ => {
                    load::closed_loop(
                        host.addr,
                        template.clone(),
                        cli.connections.min(8),
                        Until::Requests(cli.scenario_warmup),
                    )
                    .await;
                }
            }
        }
        host.reset_peak();
        // A mixed run's backlog: stored before the measured phase, within its peak RSS.
        let stored = match scenario.mode {
            Mode::Mixed { pending, clients } => {
                store_pending(&host, target.deployment.as_ref(), pending, clients).await?
            }
            _ => Vec::new(),
        };
        let (host_cpu0, own_cpu0, t0) = (host.cpu_time(), host::own_cpu_time(), Instant::now());
        let stats = match scenario.mode {
            Mode::Saturation => {
                load::closed_loop(
                    host.addr,
                    template,
                    cli.connections,
                    Until::Elapsed(cli.duration),
                )
                .await
            }
            Mode::OpenLoop { rate } => {
                load::open_loop(host.addr, template, rate, cli.duration, cli.max_connections).await
            }
            Mode::RoundTrip { concurrency } => {
                let Some(d) = &target.deployment else {
                    bail!("{}: a round trip needs the real app", scenario.name);
                };
                app::round_trips(
                    host.addr,
                    template,
                    d,
                    concurrency,
                    Until::Elapsed(cli.duration),
                )
                .await
            }
            Mode::Mixed { clients, .. } => {
                let read = resolved(&scenarios::read_request(), target.deployment.as_ref());
                let mixed = app::Mixed::new(template, &read, &stored, host.addr)?;
                load::workers(
                    host.addr,
                    Arc::new(mixed),
                    clients,
                    Until::Elapsed(cli.duration),
                )
                .await
            }
        };
        let wall = t0.elapsed().as_secs_f64().max(1e-9);
        let host_cpu = (host.cpu_time() - host_cpu0).as_secs_f64() / wall;
        let own_cpu = (host::own_cpu_time() - own_cpu0).as_secs_f64() / wall;
        let memory = host.memory();
        let row = Row::new(&scenario, &stats, memory, host_cpu);
        if floor.is_none() && matches!(baseline, Baseline::Scenario(b) if *b == row.name) {
            *floor = Some(row.throughput);
        }
        report::print_row(&row, *floor);
        if let Some(e) = &stats.first_error {
            println!("    first error: {e}");
        }
        println!(
            "    {} connection(s) opened; load generator used {own_cpu:.2} CPUs",
            stats.connections
        );
        if let Some(lag) = &stats.send_lag_us {
            println!(
                "    send lag after due time (load generator's share of the latency): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                lag.value_at_quantile(0.5) as f64 / 1e3,
                lag.value_at_quantile(0.99) as f64 / 1e3,
                lag.max() as f64 / 1e3
            );
        }
        if let (Mode::RoundTrip { .. }, Some(d)) = (scenario.mode, &target.deployment) {
            let late = d
                .callbacks
                .unexpected
                .load(std::sync::atomic::Ordering::Relaxed);
            if late > 0 {
                println!("    {late} callback(s) arrived that nobody waited for");
            }
        }
        rows.push(row);
    }

    let problems = host.log_problems();
    host.stop();
    Ok(problems)
}

/// `scenario` with the real app's placeholders filled in from `deployment`.
fn resolved(scenario: &Scenario, deployment: Option<&app::Deployment>) -> Scenario {
    match deployment {
        Some(d) => scenario.resolve(&[
            ("agent_token", &d.agent_token),
            ("callback_url", &d.callback_url()),
        ]),
        None => scenario.clone(),
    }
}

/// Stores `count` requests that wait for approval with `clients` connections; prints how it
/// went and returns their ids.
async fn store_pending(
    host: &Host,
    deployment: Option<&app::Deployment>,
    count: u64,
    clients: usize,
) -> Result<Vec<String>> {
    if deployment.is_none() {
        bail!("pending requests need the real app");
    }
    let request = resolved(&scenarios::pending_request(), deployment);
    let template = Arc::new(load::Template::new(&request, host.addr)?);
    let (stats, ids) = app::store_requests(host.addr, template, count, clients).await;
    let memory = host.memory();
    println!(
        "    stored {} pending request(s) in {:.1} s ({:.0}/s, p99 {:.2} ms, {} error(s){}), RSS {:.1} MB, peak {:.1} MB",
        ids.len(),
        stats.elapsed.as_secs_f64(),
        stats.throughput(),
        stats.ms(0.99),
        stats.errors,
        stats
            .first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        report::mb(memory.rss_kib),
        report::mb(memory.peak_kib),
    );
    Ok(ids)
}

/// The scenarios to run, in list order: those matching a filter (all when none), plus the
/// baseline scenario when one is named.
fn select(all: &[Scenario], filters: &[String], baseline: &Baseline) -> Result<Vec<Scenario>> {
    let filters: Vec<String> = filters.iter().map(|f| f.to_lowercase()).collect();
    let picked: Vec<Scenario> = all
        .iter()
        .filter(|s| {
            let name = s.name.to_lowercase();
            filters.is_empty()
                || filters.iter().any(|f| name.contains(f.as_str()))
                || matches!(baseline, Baseline::Scenario(b) if *b == s.name)
        })
        .cloned()
        .collect();
    if let Baseline::Scenario(b) = baseline {
        if !all.iter().any(|s| s.name == *b) {
            bail!("--ratio-to {b:?}: no such scenario (see --list), and not a number");
        }
    }
    let matched = |s: &Scenario| {
        let name = s.name.to_lowercase();
        filters.iter().any(|f| name.contains(f.as_str()))
    };
    if !filters.is_empty() && !all.iter().any(matched) {
        bail!("no scenario matches {filters:?} (see --list)");
    }
    Ok(picked)
}
