//! The `tollgate` command line: `serve` runs the gateway; the other commands reach the
//! same service layer directly (so they work while a server runs: the server sees their
//! changes through the change feed within a second).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_server::config::Credentials;
use tollgate_server::{Config, Server};
use tollgate_service::Services;

mod billing_cli;
mod keys_cli;
mod routing_cli;
mod tenancy_cli;
mod usage_cli;
use keys_cli::KeysCommand;

/// mimalloc: the gateway allocates many small, short-lived buffers per request, where
/// glibc's allocator cost ~8% of CPU under load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "An OpenAI-compatible LLM API gateway")]
struct Cli {
    /// TOML config file. Without one, defaults and TOLLGATE_* variables apply.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway, management API and health endpoints.
    Serve {
        /// Once accepting connections, write the base URL (http://IP:PORT) to this file.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: Box<KeysCommand>,
    },
    /// Manage the organization's members.
    Users {
        #[command(subcommand)]
        command: tenancy_cli::UsersCommand,
    },
    /// Manage teams.
    Teams {
        #[command(subcommand)]
        command: tenancy_cli::TeamsCommand,
    },
    /// Read the usage log: list, show one request, export CSV.
    Usage {
        #[command(subcommand)]
        command: usage_cli::UsageCommand,
    },
    /// The organization's balance and ledger; admin credits.
    Billing {
        #[command(subcommand)]
        command: billing_cli::BillingCommand,
    },
    /// The public models and their prices; models added at runtime.
    Models {
        #[command(subcommand)]
        command: billing_cli::ModelsCommand,
    },
    /// Providers managed at runtime (beside the config file's).
    Providers {
        #[command(subcommand)]
        command: routing_cli::ProvidersCommand,
    },
    /// Channels managed at runtime: more routes for config or managed models.
    Channels {
        #[command(subcommand)]
        command: routing_cli::ChannelsCommand,
    },
    /// Show the newest audit log entries (JSON).
    Audit {
        /// Only entries about this object id.
        #[arg(long)]
        target: Option<String>,
        /// Only this action, e.g. key.rotate.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Work with the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (the same checks `serve` runs) and exit.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let credentials = match cli.command {
        Command::Serve { .. } | Command::Config { .. } => Credentials::Required,
        Command::Migrate
        | Command::Keys { .. }
        | Command::Users { .. }
        | Command::Teams { .. }
        | Command::Usage { .. }
        | Command::Billing { .. }
        | Command::Models { .. }
        | Command::Providers { .. }
        | Command::Channels { .. }
        | Command::Audit { .. } => Credentials::Optional,
    };
    let config = match tollgate_server::config::load(cli.config.as_deref(), std::env::vars(), credentials) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config, matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that stdout stays clean for `--json` output. `TOLLGATE_LOG`
/// takes `tracing` filter directives (default `info` for serve, `warn` for commands).
/// The per-request line (target `tollgate::request`) is off by default: every request is
/// already a durable usage row, and a synchronous stderr write per request costs the hot
/// path a system call. `TOLLGATE_LOG=info,tollgate::request=info` turns it on.
fn init_logging(config: &Config, serving: bool) {
    let default = if serving { "info,tollgate::request=off" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log_json {
        // One object per line with the fields at the top level: every finished `/v1`
        // request logs `request_id`, `key_id`, `model`, `status`, `latency_ms`
        // (target `tollgate::request`).
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { ready_file } => serve(config, ready_file).await,
        Command::Migrate => {
            tollgate_server::open_services(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check } => {
            println!(
                "configuration is valid: listen {}, {} provider(s), {} model(s), database {}",
                config.listen,
                config.providers.len(),
                config.models.len(),
                if config.database_url.starts_with("sqlite:") { "sqlite" } else { "postgres" }
            );
            Ok(())
        }
        Command::Keys { command } => with_services(&config, |s| async move { keys_cli::run(*command, &s).await }).await,
        Command::Users { command } => {
            with_services(&config, |s| async move { tenancy_cli::users(command, &s).await }).await
        }
        Command::Teams { command } => {
            with_services(&config, |s| async move { tenancy_cli::teams(command, &s).await }).await
        }
        Command::Usage { command } => {
            with_services(&config, |s| async move { usage_cli::run(command, &s).await }).await
        }
        Command::Billing { command } => {
            let enforced = config.enforce_balance;
            with_services(&config, |s| async move { billing_cli::run(command, &s, enforced).await }).await
        }
        Command::Models { command } => {
            with_services(&config, |s| async move { billing_cli::models(command, &s).await }).await
        }
        Command::Providers { command } => {
            with_services(&config, |s| async move { routing_cli::providers(command, &s).await }).await
        }
        Command::Channels { command } => {
            with_services(&config, |s| async move { routing_cli::channels(command, &s).await }).await
        }
        Command::Audit { target, action, limit } => {
            with_services(&config, |s| async move { keys_cli::audit(&s, target, action, limit).await }).await
        }
    }
}

async fn serve(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let server = Server::start(config, listener).await?;
    if let Some(path) = ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("http://{}", server.addr()))?;
        std::fs::rename(&tmp, &path)?;
    }
    shutdown_signal().await;
    tracing::info!("shutdown requested; draining");
    server.stop();
    server.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn with_services<F, Fut>(config: &Config, f: F) -> anyhow::Result<()>
where
    F: FnOnce(Services) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let services = tollgate_server::open_services(config).await?;
    let store = services.store.clone();
    let result = f(services).await;
    store.close().await;
    result
}
