//! `countersign`: the local runtime for the countersign Spin app, and its operator commands.

mod app;
mod cli;
mod compact;
mod manifest;
mod outbound;
mod outbound_hooks;
mod preinit;
mod router;
mod runtime_config;
mod server;
mod state;
mod variables;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "Action-level approvals for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a Spin application (spin.toml) on this machine with wasmtime.
    Up(UpArgs),
    #[command(flatten)]
    Operator(cli::Command),
}

#[derive(Args)]
struct UpArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Where the default key-value store (SQLite) and the compile cache live.
    #[arg(long, default_value = ".spin")]
    state_dir: PathBuf,
    /// Runtime config (key-value stores, variable providers), in Spin's format.
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,
    /// How often to post to decision's /internal/sweep; 0 turns the timer off.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    sweep_interval: Duration,
    /// Compiled components are cached here (default: <state-dir>/cache).
    #[arg(long, env = "COUNTERSIGN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Client requests handled at once; more wait (in order) instead of failing.
    #[arg(long, default_value_t = 128)]
    max_concurrent: usize,
    /// Largest request body accepted (larger: 413).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Longest a handler may run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    handler_timeout: Duration,
    /// Largest linear memory of one instance.
    #[arg(long, default_value_t = 256 << 20)]
    max_memory_bytes: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COUNTERSIGN_LOG")
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up(args).map(|()| ExitCode::SUCCESS),
        Command::Operator(command) => cli::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("countersign: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(args: UpArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        std::fs::create_dir_all(&args.state_dir)
            .with_context(|| format!("cannot create state folder {}", args.state_dir.display()))?;
        let cache_dir = args
            .cache_dir
            .clone()
            .unwrap_or_else(|| args.state_dir.join("cache"));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let app = app::App::load(app::LoadOptions {
            manifest: &args.manifest,
            runtime_config: args.runtime_config_file.as_deref(),
            state_dir: &args.state_dir,
            cache_dir: &cache_dir,
            limits: app::Limits {
                max_concurrent: args.max_concurrent.max(1),
                max_body_bytes: args.max_body_bytes,
                handler_timeout: args.handler_timeout,
                max_memory_bytes: args.max_memory_bytes,
            },
            listen: listener.local_addr()?,
        })
        .await?;
        release_freed_memory();
        server::serve(app, listener, args.sweep_interval).await
    })
}

/// Hands memory that start-up freed back to the system: compiling and pre-initialising leave
/// hundreds of MB in glibc's free lists, which would otherwise stay resident while serving.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}
