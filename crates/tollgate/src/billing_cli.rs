//! `tollgate billing …` (the organization's balance, its ledger, admin credits) and
//! `tollgate models …` (the public models and their prices), as the operator through the
//! service layer (audited with the actor `cli`).

use clap::Subcommand;
use tollgate_service::{Actor, Credit, PriceInput, Services};

#[derive(Subcommand)]
pub enum BillingCommand {
    /// Balance, total credit and spend (JSON).
    Balance {
        /// Organization id; default: the first organization.
        #[arg(long)]
        org: Option<String>,
    },
    /// Add money to the balance (or take it away with a negative adjustment).
    Credit {
        /// USD, e.g. 20 or 12.5; negative only with --kind adjustment.
        #[arg(long, allow_hyphen_values = true)]
        amount: f64,
        /// topup, adjustment or refund.
        #[arg(long, default_value = "topup")]
        kind: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// The newest ledger entries (JSON).
    Ledger {
        #[arg(long)]
        org: Option<String>,
        /// Only this kind: topup, usage, adjustment, refund.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

pub async fn run(command: BillingCommand, services: &Services, balance_enforced: bool) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let out = match command {
        BillingCommand::Balance { org } => {
            serde_json::to_string_pretty(&services.billing_summary(&actor, org, balance_enforced).await?)?
        }
        BillingCommand::Credit { amount, kind, note, org } => {
            let credit = Credit { org_id: org, amount_usd: amount, kind: Some(kind), note };
            serde_json::to_string_pretty(&services.add_credit(&actor, credit).await?)?
        }
        BillingCommand::Ledger { org, kind, limit } => {
            serde_json::to_string_pretty(&services.list_ledger(&actor, org, kind.as_deref(), None, Some(limit)).await?)?
        }
    };
    println!("{out}");
    Ok(())
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// The public models with their current prices (JSON).
    List,
    /// Override a model's prices (USD per million tokens, per image); unset flags keep
    /// their value. Applies to every organization.
    SetPrice {
        model: String,
        #[arg(long)]
        input: Option<f64>,
        #[arg(long)]
        output: Option<f64>,
        #[arg(long)]
        image: Option<f64>,
    },
    /// Go back to the config file's prices.
    ResetPrice { model: String },
    /// Add a model with its channels (applies to every organization; see `providers`).
    Add(crate::routing_cli::NewModel),
    /// Remove a model added with `add`, and its channels.
    Remove { id: String },
}

pub async fn models(command: ModelsCommand, services: &Services) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let out = match command {
        ModelsCommand::List => serde_json::to_string_pretty(&services.list_models(&actor).await?)?,
        ModelsCommand::SetPrice { model, input, output, image } => {
            let prices =
                PriceInput { input_price_per_mtok: input, output_price_per_mtok: output, price_per_image: image };
            serde_json::to_string_pretty(&services.set_model_price(&actor, &model, prices).await?)?
        }
        ModelsCommand::ResetPrice { model } => {
            serde_json::to_string_pretty(&services.reset_model_price(&actor, &model).await?)?
        }
        ModelsCommand::Add(model) => return crate::routing_cli::add_model(model, services).await,
        ModelsCommand::Remove { id } => return crate::routing_cli::remove_model(&id, services).await,
    };
    println!("{out}");
    Ok(())
}
