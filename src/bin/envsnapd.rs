//! envsnapd: the envsnap daemon. Parses arguments, sets up logging, hands over to
//! `envsnap::daemon`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use envsnap::config::{Config, default_state_dir};
use envsnap::daemon;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const SYSTEM_CONFIG: &str = "/etc/envsnap/envsnap.toml";

/// Backs up environments (code, file mounts, databases) on schedule and on demand,
/// and serves envsnapctl over a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (default: /etc/envsnap/envsnap.toml; without it, a built-in demo
    /// setup under the state directory).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("envsnapd: {message}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        println!(
            "{}: valid, {} environment(s)",
            config.path.display(),
            config.environments.len()
        );
        return ExitCode::SUCCESS;
    }
    init_logging();
    envsnap::memory::tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("envsnapd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None if Path::new(SYSTEM_CONFIG).exists() => {
            Config::load(Path::new(SYSTEM_CONFIG)).map_err(|e| e.to_string())
        }
        None => {
            let config = Config::embedded_default(&default_state_dir());
            envsnap::sources::demo::prepare(&config)
                .map_err(|e| format!("preparing the demo environment: {e}"))?;
            Ok(config)
        }
    }
}

async fn run(config: Config) -> Result<(), daemon::DaemonError> {
    let (socket, group, metrics) = (
        config.daemon.socket.clone(),
        config.daemon.socket_group.clone(),
        config.daemon.metrics_listen,
    );
    if !config.path.is_file() {
        tracing::info!(state_dir = %config.daemon.state_dir.display(), "no config file: running the built-in demo setup");
    }
    let ctx = daemon::open(config).await?;
    let listener = daemon::bind_socket(&socket, group.as_deref()).await?;
    let metrics = match metrics {
        Some(address) => Some(daemon::bind_metrics(address).await?),
        None => None,
    };
    daemon::serve(ctx, listener, metrics).await;
    Ok(())
}

/// The journal when systemd runs us (structured fields kept), stderr otherwise.
fn init_logging() {
    let filter = EnvFilter::try_from_env("ENVSNAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let journald = if under_systemd {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}
