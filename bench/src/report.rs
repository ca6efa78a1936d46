//! What the benchmark prints: the machine, one row per scenario, and a markdown table.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use crate::host::Memory;
use crate::load::Stats;
use crate::scenarios::{Mode, Scenario};

pub fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One scenario's figures.
pub struct Row {
    pub name: String,
    pub saturation: bool,
    pub mode: String,
    pub requests: u64,
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub errors: u64,
    pub peak_mb: f64,
    pub rss_mb: f64,
    /// CPUs the host kept busy on average (user + system time / wall time).
    pub host_cpu: f64,
    /// Not run (e.g. its setup could not be had): no figures.
    pub skipped: bool,
}

impl Row {
    pub fn new(scenario: &Scenario, stats: &Stats, memory: Memory, host_cpu: f64) -> Self {
        let (saturation, mode) = match scenario.mode {
            Mode::Saturation => (true, format!("closed, {} conns", stats.concurrency)),
            Mode::OpenLoop { rate } => (false, format!("open, {rate} req/s")),
            // Round trips/s over the floor's requests/s (one round trip is two requests and a
            // callback).
            Mode::RoundTrip { concurrency } => {
                (true, format!("round trip, {concurrency} in flight"))
            }
            Mode::Mixed { clients, .. } => (true, format!("mixed, {clients} clients")),
        };
        Row {
            name: scenario.name.clone(),
            saturation,
            mode,
            requests: stats.ok,
            throughput: stats.throughput(),
            p50: stats.ms(0.50),
            p99: stats.ms(0.99),
            max: stats.max_ms(),
            errors: stats.errors,
            peak_mb: mb(memory.peak_kib),
            rss_mb: mb(memory.rss_kib),
            host_cpu,
            skipped: false,
        }
    }

    /// A scenario that was not run: its row says so, with no figures.
    pub fn skipped(scenario: &Scenario) -> Self {
        Row {
            mode: "skipped".into(),
            skipped: true,
            ..Row::new(scenario, &Stats::new(), Memory::default(), 0.0)
        }
    }

    /// Saturation throughput over the floor's; open-loop rows offer a fixed rate, so none.
    fn ratio(&self, floor: Option<f64>) -> String {
        match floor {
            Some(f) if self.saturation && f > 0.0 => {
                let r = self.throughput / f;
                if r >= 0.1 {
                    format!("{r:.2}")
                } else {
                    format!("{r:.4}")
                }
            }
            _ => "-".into(),
        }
    }
}

fn first_line_of(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn command_output(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The machine's 1, 5 and 15 minute load averages, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The machine, the date and what is being measured.
pub fn print_header(bin: &Path, manifest: &Path, runtime_config: Option<&Path>) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line_of("/proc/cpuinfo", "model name")
        .or_else(|| first_line_of("/proc/cpuinfo", "Model"))
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = first_line_of("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let date = humantime::format_rfc3339_seconds(SystemTime::now());
    let version = command_output(bin, &["--version"]).unwrap_or_else(|| "?".into());
    let commit = command_output(Path::new("git"), &["rev-parse", "--short", "HEAD"]);

    println!("# countersign-bench");
    println!("date:    {date}");
    println!("machine: {nproc} CPUs, {cpu}, {mem} RAM, Linux {kernel}");
    println!(
        "load:    {} (1/5/15 min; other work competes with the figures)",
        load_average()
    );
    println!(
        "host:    {} ({version}{})",
        bin.display(),
        commit.map(|c| format!(", commit {c}")).unwrap_or_default()
    );
    println!(
        "app:     {}{}",
        manifest.display(),
        runtime_config
            .map(|r| format!(", runtime config {}", r.display()))
            .unwrap_or_default()
    );
}

const WIDTHS: [usize; 12] = [32, 17, 9, 9, 7, 8, 8, 8, 6, 9, 8, 8];
const TITLES: [&str; 12] = [
    "scenario", "mode", "requests", "req/s", "x floor", "p50 ms", "p99 ms", "max ms", "errors",
    "peak MB", "RSS MB", "host CPU",
];

fn cells(row: &Row, floor: Option<f64>) -> [String; 12] {
    if row.skipped {
        return std::array::from_fn(|i| match i {
            0 => row.name.clone(),
            1 => row.mode.clone(),
            _ => "-".into(),
        });
    }
    [
        row.name.clone(),
        row.mode.clone(),
        row.requests.to_string(),
        format!("{:.0}", row.throughput),
        row.ratio(floor),
        format!("{:.2}", row.p50),
        format!("{:.2}", row.p99),
        format!("{:.2}", row.max),
        row.errors.to_string(),
        format!("{:.1}", row.peak_mb),
        format!("{:.1}", row.rss_mb),
        format!("{:.2}", row.host_cpu),
    ]
}

fn aligned(cells: &[String]) -> String {
    cells
        .iter()
        .zip(WIDTHS)
        .enumerate()
        .map(|(i, (c, w))| {
            if i < 2 {
                format!("{c:<w$}")
            } else {
                format!("{c:>w$}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn print_row_header() {
    let titles: Vec<String> = TITLES.iter().map(|t| t.to_string()).collect();
    println!("{}", aligned(&titles));
}

pub fn print_row(row: &Row, floor: Option<f64>) {
    println!("{}", aligned(&cells(row, floor)));
}

/// The table for BENCHMARKS.md.
pub fn print_markdown(rows: &[Row], floor: Option<f64>, floor_name: &str) {
    let titles = TITLES.map(|t| {
        if t == "x floor" {
            "× floor".to_string()
        } else {
            t.to_string()
        }
    });
    println!("| {} |", titles.join(" | "));
    let rule: Vec<&str> = (0..titles.len())
        .map(|i| if i < 2 { "---" } else { "---:" })
        .collect();
    println!("|{}|", rule.join("|"));
    for row in rows {
        println!("| {} |", cells(row, floor).join(" | "));
    }
    match floor {
        Some(f) => println!(
            "\n× floor: saturation throughput / {f:.0} req/s ({floor_name}); \
             latencies of successful answers only; peak MB = VmHWM during the scenario, \
             RSS MB = VmRSS at its end; host CPU = CPUs the host kept busy on average."
        ),
        None => println!("\n× floor: no baseline measured ({floor_name})."),
    }
}
