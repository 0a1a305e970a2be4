//! The `ferryman` binary: CLI, start-up wiring, signals and graceful shutdown.
//!
//! `main` binds every listener itself (servers take bound sockets), starts each subsystem under a
//! child of one `CancellationToken`, and on SIGINT/SIGTERM cancels the root and joins every task
//! within a deadline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use ferryman::config::{Config, L4Mode};
use ferryman::fastpath::{self, Path as FastPath};
use ferryman::health::{HealthPolicy, Registry};
use ferryman::model::Publisher;
use ferryman::{admin, discovery, dns, l4, l7};

/// How long running tasks get to finish after a shutdown signal.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "ferryman",
    version,
    about = "L4/L7 load balancer and Mesos-DNS for Mesos/Marathon"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short, default_value = "config/ferryman.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print the effective config (exit 1 naming the key on error).
    CheckConfig { file: PathBuf },
    /// Remove what Ferryman may have left on the host (VIP link, BPF programs and pins).
    Cleanup {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The eBPF fast path's self-test client (started by ferryman itself inside a test cgroup).
    #[command(name = "__fastpath-selftest", hide = true)]
    FastpathSelftest { vip: std::net::SocketAddr },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::FastpathSelftest { vip }) = cli.command {
        // No logging set up: stdout and stderr are the parent's to read.
        return match fastpath::selftest::child_main(vip) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        };
    }
    init_tracing();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Cleanup { config }) => cleanup(config.as_deref().unwrap_or(&cli.config)),
        Some(Command::FastpathSelftest { .. }) => ExitCode::SUCCESS, // handled above
        None => run(&cli.config),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("ferryman: {e}");
        ExitCode::from(1)
    })
}

fn check_config(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn cleanup(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferryman: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The fast path: link pins first (the programs detach), then maps, then the pin dir.
    match fastpath::loader::cleanup(&config.l4) {
        Ok(removed) if removed.is_empty() => tracing::info!(
            pin_dir = %config.l4.bpf_pin_dir.display(),
            "no fast path pins to remove"
        ),
        Ok(removed) => tracing::info!(
            pin_dir = %config.l4.bpf_pin_dir.display(),
            removed = removed.join(","),
            "removed the fast path's programs and pinned maps"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cleanup of the fast path pins failed");
            return ExitCode::from(1);
        }
    }
    // The VIP link (with every VIP address on it).
    let link = config.l4.link.as_deref().unwrap_or("");
    match runtime.block_on(l4::cleanup(&config.l4)) {
        Ok(true) => tracing::info!(link, "removed the VIP link"),
        Ok(false) => tracing::info!(link, "no VIP link to remove"),
        Err(e) => {
            tracing::error!(error = %e, "cleanup failed");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferryman: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ferryman stopped");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), source = ?config.discovery.source, "ferryman starting");
    // Caught from here on: a signal that comes while the subsystems start (the first snapshot
    // may be out before the main loop below waits) still shuts down gracefully.
    let signals = install_signals();
    let shutdown = CancellationToken::new();
    let (publisher, snapshots) = Publisher::new(config.clone());

    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot bind {}", config.admin.listen))?;
    let admin_addr = admin_listener
        .local_addr()
        .context("admin.listen: no local address")?;
    tracing::info!("admin listening on {admin_addr}");
    let dns_sockets = dns::server::Sockets::bind(&config.dns)
        .with_context(|| format!("dns.listen: cannot bind {}", config.dns.listen))?;
    let dns_addr = dns_sockets
        .local_addr()
        .context("dns.listen: no local address")?;
    tracing::info!("dns listening on {dns_addr}");
    let records = dns::RecordsHandle::default();

    let mut tasks = JoinSet::new();
    {
        let (config, token) = (config.clone(), shutdown.child_token());
        tasks.spawn(async move {
            discovery::run(config, publisher, token)
                .await
                .context("discovery stopped")
        });
    }
    {
        let (config, token, snapshots, records) = (
            config.clone(),
            shutdown.child_token(),
            snapshots.clone(),
            records.clone(),
        );
        tasks.spawn(async move {
            dns::server::run(dns_sockets, config, snapshots, records, token)
                .await
                .context("dns server stopped")
        });
    }
    let l7 = l7::Shared::new(config.clone()).context("l7 (TLS certificates)")?;
    {
        let (l7, token, snapshots) = (l7.clone(), shutdown.child_token(), snapshots.clone());
        tasks.spawn(async move {
            l7::server::run(l7, snapshots, token)
                .await
                .context("l7 stopped")
        });
    }
    let registry = Registry::new(HealthPolicy::from_config(&config.l4));
    fastpath::stats::register();
    match config.l4.mode {
        L4Mode::Off => {
            let l4 = config.l4.clone();
            tokio::task::spawn_blocking(move || fastpath::run::remove(&l4))
                .await
                .context("fast path cleanup panicked")?;
            fastpath::run::set_not_serving(FastPath::Off, "l4.mode = off");
            tracing::info!("l4.mode = off: no L4 balancing; no fast path programs or pins left");
        }
        L4Mode::Userspace => {
            // Programs a previous eBPF run left would go on rewriting VIPs from maps nobody
            // syncs any more.
            let l4 = config.l4.clone();
            tokio::task::spawn_blocking(move || fastpath::run::remove(&l4))
                .await
                .context("fast path cleanup panicked")?;
            fastpath::run::set_not_serving(FastPath::Userspace, "l4.mode = userspace");
            tracing::info!(
                "VIPs are served by the user-space path (l4.mode = userspace); the eBPF fast path is not loaded"
            );
        }
        L4Mode::Auto | L4Mode::Ebpf => {
            let (config, token, snapshots, registry) = (
                config.clone(),
                shutdown.child_token(),
                snapshots.clone(),
                registry.clone(),
            );
            tasks.spawn(fast_path(config, snapshots, registry, token));
        }
    }
    if config.l4.mode != L4Mode::Off {
        // Service ports, and VIP listeners for clients outside the fast path's cgroup (and
        // VIPs the fast path refused).
        let (config, token, snapshots, registry) = (
            config.clone(),
            shutdown.child_token(),
            snapshots.clone(),
            registry.clone(),
        );
        tasks.spawn(async move {
            l4::run(config, snapshots, registry, token)
                .await
                .context("l4 stopped")
        });
    }
    {
        let (config, token, snapshots) =
            (config.clone(), shutdown.child_token(), snapshots.clone());
        tasks.spawn(async move {
            admin::serve(
                admin_listener,
                snapshots,
                config,
                records,
                registry,
                l7,
                token,
            )
            .await
            .context("admin server stopped")
        });
    }

    // Run until a signal or until a subsystem fails.
    let mut failure = None;
    tokio::select! {
        signal = shutdown_signal(signals) => {
            tracing::info!(signal, "shutting down");
        }
        Some(done) = tasks.join_next() => {
            failure = Some(match done {
                Ok(Ok(())) => anyhow::anyhow!("a subsystem ended unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a subsystem panicked: {e}"),
            });
        }
    }
    shutdown.cancel();
    let joined = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = format!("{e:#}"), "subsystem error during shutdown")
                }
                Err(e) => tracing::warn!(error = %e, "subsystem panicked during shutdown"),
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "subsystems did not stop in time; aborting them");
        tasks.shutdown().await;
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// `l4.mode = "auto"` or `"ebpf"`: loads, attaches and self-tests the fast path, then keeps its
/// maps in sync until `shutdown` (leaving it attached). When it cannot start, whatever it
/// attached is removed; `auto` goes on with the user-space path (and says why), `ebpf` fails.
async fn fast_path(
    config: Arc<Config>,
    snapshots: ferryman::model::Snapshots,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    const STARTING: &str = "the eBPF fast path is starting (load, attach, self-test)";
    fastpath::run::set_not_serving(FastPath::Userspace, STARTING);
    tracing::info!(
        reason = STARTING,
        "VIPs are served by the user-space path until the fast path is up"
    );
    let l4 = config.l4.clone();
    let started = tokio::task::spawn_blocking(move || fastpath::run::start(&l4))
        .await
        .unwrap_or_else(|e| Err(format!("the fast path start panicked: {e}")));
    let reason = match started {
        Ok(started) => {
            return fastpath::run::run(started, config, snapshots, registry, shutdown).await;
        }
        Err(reason) => reason,
    };
    let l4 = config.l4.clone();
    let _ = tokio::task::spawn_blocking(move || fastpath::run::remove(&l4)).await;
    if config.l4.mode == L4Mode::Ebpf {
        fastpath::run::set_not_serving(FastPath::Userspace, reason.clone());
        anyhow::bail!("l4.mode = \"ebpf\" and the eBPF fast path cannot start: {reason}");
    }
    // Logged before it is published, so that whoever sees the reason finds it in the log.
    tracing::warn!(
        reason = %reason,
        "the eBPF fast path is unavailable (l4.mode = auto): VIPs are served by the user-space path"
    );
    fastpath::run::set_not_serving(FastPath::Userspace, reason);
    shutdown.cancelled().await;
    Ok(())
}

/// Handlers for SIGTERM and SIGINT (`None` when they cannot be installed).
fn install_signals() -> Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => Some((t, i)),
        _ => None,
    }
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn shutdown_signal(
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
) -> &'static str {
    let Some((mut term, mut int)) = signals else {
        tracing::warn!("cannot install signal handlers; falling back to ctrl-c only");
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
