//! `tollgate usage …`: the usage log from the command line, through the same service layer
//! as `GET /api/v1/usage…`, as the operator (every organization's rows). `export` writes
//! the same CSV as `GET /api/v1/usage.csv`, streamed: memory does not grow with the rows.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio::io::AsyncWriteExt;
use tollgate_service::{Actor, ListUsage, Services, UsageFilters};

#[derive(Subcommand)]
pub enum UsageCommand {
    /// List usage rows, newest first.
    List {
        #[command(flatten)]
        filters: FilterArgs,
        /// The `next_cursor` of the previous page (shown with --json).
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print the API's JSON page instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one request's row (JSON).
    Get { request_id: String },
    /// Write every filtered row as CSV (with a header row), to stdout or a file.
    Export {
        #[command(flatten)]
        filters: FilterArgs,
        /// Write here instead of stdout; the file appears only once the export is complete.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// The usage log's filters, as `GET /api/v1/usage` takes them.
#[derive(Args)]
pub struct FilterArgs {
    #[arg(long)]
    request_id: Option<String>,
    /// A public model id.
    #[arg(long)]
    model: Option<String>,
    /// Only this key's rows (its id).
    #[arg(long = "key")]
    key_id: Option<String>,
    /// Only this team's rows (its id).
    #[arg(long = "team")]
    team_id: Option<String>,
    /// Only the rows of keys this user owned (their id).
    #[arg(long = "user")]
    user_id: Option<String>,
    /// all, success (HTTP status below 400) or error.
    #[arg(long)]
    status: Option<String>,
    /// From this time, inclusive: RFC 3339, YYYY-MM-DD or Unix milliseconds.
    #[arg(long)]
    from: Option<String>,
    /// Until this time, exclusive: RFC 3339, YYYY-MM-DD or Unix milliseconds.
    #[arg(long)]
    to: Option<String>,
}

impl From<FilterArgs> for UsageFilters {
    fn from(a: FilterArgs) -> Self {
        Self {
            request_id: a.request_id,
            model: a.model,
            key_id: a.key_id,
            team_id: a.team_id,
            user_id: a.user_id,
            status: a.status,
            from: a.from,
            to: a.to,
        }
    }
}

pub async fn run(command: UsageCommand, services: &Services) -> anyhow::Result<()> {
    let actor = Actor::cli();
    match command {
        UsageCommand::List { filters, cursor, limit, json } => {
            let q = ListUsage { filters: filters.into(), cursor, limit: Some(limit) };
            let page = services.list_usage(&actor, q).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<28} {:<20} {:<20} {:>6} {:>8} {:>12} {:>8}",
                "time", "request_id", "key", "model", "status", "tokens", "cost_usd", "ms"
            );
            for r in &page.data {
                println!(
                    "{:<24} {:<28} {:<20} {:<20} {:>6} {:>8} {:>12} {:>8}",
                    r.created_at,
                    r.request_id,
                    r.key_name.as_deref().unwrap_or("-"),
                    r.model.as_deref().unwrap_or("-"),
                    r.status,
                    r.total_tokens,
                    r.cost_usd.to_string().trim_start_matches('$'),
                    r.latency_ms
                );
            }
            if let Some(next) = &page.next_cursor {
                eprintln!("more rows: --cursor {next}");
            }
        }
        UsageCommand::Get { request_id } => {
            println!("{}", serde_json::to_string_pretty(&services.get_usage(&actor, &request_id).await?)?);
        }
        UsageCommand::Export { filters, output } => {
            let mut csv = services.usage_csv(&actor, filters.into()).await?;
            match output {
                None => {
                    // A blocking write (a pipe's reader sets the pace), off the async workers.
                    let write = |bytes: &[u8]| {
                        tokio::task::block_in_place(|| {
                            let mut out = std::io::stdout().lock();
                            out.write_all(bytes).and_then(|()| out.flush())
                        })
                        .context("writing to stdout")
                    };
                    while let Some(chunk) = csv.next_chunk().await {
                        write(chunk?.as_bytes())?;
                    }
                }
                Some(path) => {
                    // Written beside the target and renamed at the end: an export that fails
                    // half-way leaves no file that looks complete.
                    let mut partial = path.clone().into_os_string();
                    partial.push(".partial");
                    let partial = PathBuf::from(partial);
                    let written = write_file(&mut csv, &partial).await;
                    if written.is_err() {
                        let _ = tokio::fs::remove_file(&partial).await;
                    }
                    written?;
                    tokio::fs::rename(&partial, &path)
                        .await
                        .with_context(|| format!("renaming to {}", path.display()))?;
                }
            }
        }
    }
    Ok(())
}

async fn write_file(csv: &mut tollgate_service::UsageCsv, path: &std::path::Path) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?;
    while let Some(chunk) = csv.next_chunk().await {
        file.write_all(chunk?.as_bytes()).await.with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_all().await.with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
