//! The `tollgate` command line: `serve` runs the gateway; the other commands reach the
//! same service layer directly (so they work while a server runs: the server sees their
//! changes through the change feed within a second).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_server::config::Credentials;
use tollgate_server::{Config, Server};
use tollgate_service::{ListKeys, NewKey};

/// mimalloc: the gateway allocates many small, short-lived buffers per request, where
/// glibc's allocator cost ~8% of CPU under load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An OpenAI-compatible LLM API gateway"
)]
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
        command: KeysCommand,
    },
    /// Work with the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret (shown this once).
    Create {
        #[arg(long)]
        name: String,
        /// never, 30d, 60d, 90d, 180d or 365d.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// An RFC 3339 datetime in the future.
        #[arg(long)]
        expires_at: Option<String>,
        /// Print {"id": …, "key": …} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        search: Option<String>,
        /// all, active, inactive, expired, revoked or exhausted.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
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
        Command::Migrate | Command::Keys { .. } => Credentials::Optional,
    };
    let config =
        match tollgate_server::config::load(cli.config.as_deref(), std::env::vars(), credentials) {
            Ok(c) => c,
            Err(e) => {
                eprint!("{e}");
                return ExitCode::from(2);
            }
        };
    init_logging(&config, matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
fn init_logging(config: &Config, serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
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
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!(
                "configuration is valid: listen {}, {} provider(s), {} model(s), database {}",
                config.listen,
                config.providers.len(),
                config.models.len(),
                if config.database_url.starts_with("sqlite:") {
                    "sqlite"
                } else {
                    "postgres"
                }
            );
            Ok(())
        }
        Command::Keys { command } => keys(command, &config).await,
    }
}

async fn serve(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
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
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
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

async fn keys(command: KeysCommand, config: &Config) -> anyhow::Result<()> {
    let services = tollgate_server::open_services(config).await?;
    match command {
        KeysCommand::Create {
            name,
            expires_in,
            expires_at,
            json,
        } => {
            let created = services
                .create_key(NewKey {
                    name,
                    expires_in,
                    expires_at,
                })
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "id": created.key.id, "key": created.secret })
                );
            } else {
                println!("Created key {} ({}).", created.key.id, created.key.name);
                println!();
                println!("    {}", created.secret);
                println!();
                println!("This key will not be shown again. Store it in a secret manager now.");
            }
        }
        KeysCommand::List {
            search,
            status,
            limit,
            json,
        } => {
            let list = services
                .list_keys(ListKeys {
                    search,
                    status,
                    cursor: None,
                    limit: Some(limit),
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<30} {:<28} {:<16} {:<10} {:>9}  expires",
                    "id", "name", "key", "status", "requests"
                );
                for k in &list.data {
                    println!(
                        "{:<30} {:<28} {:<16} {:<10} {:>9}  {}",
                        k.id,
                        k.name,
                        k.preview,
                        k.status.as_str(),
                        k.request_count,
                        k.expires_at.as_deref().unwrap_or("never")
                    );
                }
            }
        }
    }
    services.store.close().await;
    Ok(())
}
