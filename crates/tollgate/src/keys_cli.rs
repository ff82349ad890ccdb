//! `tollgate keys …` and `tollgate audit`: the key lifecycle from the command line,
//! through the same service layer as the management API. Actions are audited with the
//! actor `cli`. `--json` prints the API's JSON shapes.

use clap::{Args, Subcommand};
use tollgate_service::{
    Actor, CreatedKey, EphemeralRequest, KeyPatch, KeyView, ListAudit, ListKeys, NewKey, Services, SettingsInput,
};

#[derive(Subcommand)]
pub enum KeysCommand {
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
        /// Team id (default: the organization's default team).
        #[arg(long)]
        team: Option<String>,
        /// Owner's user id (default: an owner of the organization).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        scopes: ScopeArgs,
        /// Print {"id": …, "key": …} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        search: Option<String>,
        /// Only keys of this team.
        #[arg(long)]
        team: Option<String>,
        /// all, active, inactive, expired, revoked or exhausted.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one key.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a key's name, expiry, scopes or limits (only the flags given change).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        #[arg(long)]
        expires_at: Option<String>,
        /// Move the key to this team.
        #[arg(long)]
        team: Option<String>,
        /// Give the key to this user.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        scopes: ScopeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Stop a key from authenticating until it is enabled again.
    Disable { id: String },
    /// Let a disabled key authenticate again.
    Enable { id: String },
    /// Revoke a key for good.
    Revoke { id: String },
    /// Delete a key permanently.
    Delete {
        id: String,
        /// Confirm: this action cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Issue a new secret for the same key and print it (shown this once).
    Rotate {
        id: String,
        /// Keep the old secret working this long (seconds); default: it stops at once.
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
        /// Makes a retried rotation return the same secret instead of rotating again.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Mint a short-lived token from a key (its scopes or narrower); prints it once.
    Ephemeral {
        id: String,
        /// Lifetime in seconds (default 3600).
        #[arg(long)]
        ttl_seconds: Option<u64>,
        #[arg(long = "model", value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long = "endpoint", value_delimiter = ',')]
        endpoints: Vec<String>,
        #[arg(long = "provider", value_delimiter = ',')]
        providers: Vec<String>,
        #[arg(long = "ip", value_delimiter = ',')]
        ips: Vec<String>,
    },
    /// Create a new key with the same scopes and limits; prints its secret once.
    Duplicate {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Scope and limit flags shared by create and update.
#[derive(Args, Default)]
pub struct ScopeArgs {
    /// Hard budget in USD.
    #[arg(long)]
    budget_usd: Option<f64>,
    /// Budget alert thresholds in percent, e.g. 50,80,100.
    #[arg(long, value_delimiter = ',')]
    budget_alert_thresholds: Option<Vec<i64>>,
    /// Maximum tokens (prompt + completion).
    #[arg(long)]
    token_quota: Option<i64>,
    #[arg(long)]
    rpm: Option<i64>,
    #[arg(long)]
    tpm: Option<i64>,
    /// all, chat or list.
    #[arg(long)]
    model_scope: Option<String>,
    /// Allowed model ids (repeat or comma-separate); implies --model-scope list.
    #[arg(long = "model", value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Allowed endpoints, e.g. /v1/embeddings.
    #[arg(long = "endpoint", value_delimiter = ',')]
    endpoints: Option<Vec<String>>,
    /// Allowed providers.
    #[arg(long = "provider", value_delimiter = ',')]
    providers: Option<Vec<String>>,
    /// Allowed source IPs or CIDRs.
    #[arg(long = "ip", value_delimiter = ',')]
    ips: Option<Vec<String>>,
    /// Channel group to route through.
    #[arg(long)]
    group: Option<String>,
    /// Metadata as a JSON object, echoed into usage logs.
    #[arg(long)]
    metadata: Option<String>,
}

impl ScopeArgs {
    fn into_input(self) -> anyhow::Result<SettingsInput> {
        let metadata = self
            .metadata
            .map(|m| serde_json::from_str(&m).map_err(|e| anyhow::anyhow!("--metadata: not JSON: {e}")))
            .transpose()?;
        Ok(SettingsInput {
            budget_usd: self.budget_usd.map(Some),
            budget_alert_thresholds: self.budget_alert_thresholds.map(Some),
            token_quota: self.token_quota.map(Some),
            rpm: self.rpm.map(Some),
            tpm: self.tpm.map(Some),
            model_scope: self.model_scope.map(Some),
            models: self.models.map(Some),
            allowed_endpoints: self.endpoints.map(Some),
            allowed_providers: self.providers.map(Some),
            ip_allowlist: self.ips.map(Some),
            group: self.group.map(Some),
            metadata: metadata.map(Some),
            mcp: None,
        })
    }
}

pub async fn run(command: KeysCommand, services: &Services) -> anyhow::Result<()> {
    let actor = Actor::cli();
    match command {
        KeysCommand::Create { name, expires_in, expires_at, team, owner, scopes, json } => {
            let new =
                NewKey { name, expires_in, expires_at, team_id: team, owner_id: owner, settings: scopes.into_input()? };
            print_secret(&services.create_key(&actor, new).await?, json, "Created");
        }
        KeysCommand::List { search, team, status, limit, json } => {
            let q = ListKeys { search, team_id: team, status, cursor: None, limit: Some(limit), ..Default::default() };
            let list = services.list_keys(&actor, q).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<30} {:<28} {:<16} {:<10} {:>9}  expires", "id", "name", "key", "status", "requests");
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
        KeysCommand::Get { id, json } => print_key(&services.get_key(&actor, &id).await?, json)?,
        KeysCommand::Update { id, name, expires_in, expires_at, team, owner, scopes, json } => {
            let patch = KeyPatch {
                name,
                team_id: team,
                owner_id: owner,
                expires_in,
                expires_at: expires_at.map(Some),
                settings: scopes.into_input()?,
            };
            print_key(&services.update_key(&actor, &id, patch).await?, json)?;
        }
        KeysCommand::Disable { id } => print_key(&services.disable_key(&actor, &id).await?, false)?,
        KeysCommand::Enable { id } => print_key(&services.enable_key(&actor, &id).await?, false)?,
        KeysCommand::Revoke { id } => print_key(&services.revoke_key(&actor, &id).await?, false)?,
        KeysCommand::Delete { id, yes } => {
            anyhow::ensure!(yes, "deleting a key cannot be undone: add --yes to confirm");
            services.delete_key(&actor, &id).await?;
            println!("Deleted key {id}.");
        }
        KeysCommand::Rotate { id, grace_seconds, idempotency_key, json } => {
            let rotated = services.rotate_key(&actor, &id, grace_seconds, idempotency_key.as_deref()).await?;
            print_secret(&rotated, json, "Rotated");
        }
        KeysCommand::Ephemeral { id, ttl_seconds, models, endpoints, providers, ips } => {
            let req = EphemeralRequest {
                ttl_seconds,
                models,
                allowed_endpoints: endpoints,
                allowed_providers: providers,
                ip_allowlist: ips,
            };
            println!("{}", serde_json::to_string_pretty(&services.create_ephemeral(&actor, &id, req).await?)?);
        }
        KeysCommand::Duplicate { id, name, json } => {
            print_secret(&services.duplicate_key(&actor, &id, name).await?, json, "Created");
        }
    }
    Ok(())
}

fn print_secret(created: &CreatedKey, json: bool, verb: &str) {
    if json {
        println!("{}", serde_json::json!({ "id": created.key.id, "key": created.secret }));
    } else {
        println!("{verb} key {} ({}).", created.key.id, created.key.name);
        println!();
        println!("    {}", created.secret);
        println!();
        println!("This key will not be shown again. Store it in a secret manager now.");
    }
}

fn print_key(key: &KeyView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(key)?);
    } else {
        println!("{} ({}): {} {}", key.id, key.name, key.status.as_str(), key.preview);
    }
    Ok(())
}

/// `tollgate audit`: the newest audit entries.
pub async fn audit(
    services: &Services,
    target: Option<String>,
    action: Option<String>,
    limit: i64,
) -> anyhow::Result<()> {
    let page = services
        .list_audit(&Actor::cli(), ListAudit { action, target, limit: Some(limit), ..Default::default() })
        .await?;
    println!("{}", serde_json::to_string_pretty(&page)?);
    Ok(())
}
