//! `tollgate providers …`, `tollgate channels …` and `tollgate models add|remove`: routing
//! managed at runtime, as the operator (the same service calls as `/api/v1/providers`,
//! `/channels` and `/models`; a running server picks the change up from the change feed).
//! A provider's API key never goes on the command line, where `ps` would show it: it is
//! read from an environment variable (`--api-key-env`) or standard input (`--api-key-stdin`).

use std::io::Read as _;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use tollgate_core::Secret;
use tollgate_service::{Actor, ChannelInput, ChannelPatch, ModelInput, ProviderInput, ProviderPatch, Services};

#[derive(Subcommand)]
pub enum ProvidersCommand {
    /// The config file's and the managed providers, never their credentials (JSON).
    List,
    /// Add a provider (the fields of a `[[providers]]` entry).
    Add {
        #[arg(long)]
        name: String,
        /// openai, azure, anthropic or gemini.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        base_url: Option<String>,
        #[command(flatten)]
        key: KeySource,
        #[command(flatten)]
        fields: ProviderFields,
    },
    /// Change a managed provider; flags left out keep their value.
    Set {
        name: String,
        #[arg(long)]
        base_url: Option<String>,
        #[command(flatten)]
        key: KeySource,
        /// Remove the API key (a keyless local server).
        #[arg(long, conflicts_with_all = ["api_key_env", "api_key_stdin"])]
        clear_api_key: bool,
        #[command(flatten)]
        fields: ProviderFields,
    },
    /// Remove a managed provider that no channel uses.
    Remove { name: String },
}

/// Where a provider's API key comes from.
#[derive(Args)]
pub struct KeySource {
    /// Read the API key from this environment variable.
    #[arg(long, conflicts_with = "api_key_stdin")]
    api_key_env: Option<String>,
    /// Read the API key from standard input (one line).
    #[arg(long)]
    api_key_stdin: bool,
}

#[derive(Args)]
pub struct ProviderFields {
    /// `azure` and `gemini`: the API version.
    #[arg(long)]
    api_version: Option<String>,
    /// `anthropic`: the anthropic-version header.
    #[arg(long)]
    anthropic_version: Option<String>,
    /// `openai`: sent as OpenAI-Organization.
    #[arg(long)]
    organization: Option<String>,
    /// `openai`: sent as OpenAI-Project.
    #[arg(long)]
    project: Option<String>,
    /// A static header, `NAME=VALUE` (repeatable; on `set`, the given ones replace all).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
}

#[derive(Subcommand)]
pub enum ChannelsCommand {
    /// Every channel, config and managed (JSON).
    List,
    /// Route a model (config or managed) to a provider too.
    Add {
        #[arg(long)]
        model: String,
        #[arg(long)]
        provider: String,
        #[command(flatten)]
        settings: ChannelSettings,
    },
    /// Change a managed channel; flags left out keep their value.
    Set {
        id: String,
        #[command(flatten)]
        settings: ChannelSettings,
    },
    /// Remove a managed channel (a managed model keeps at least one).
    Remove { id: String },
}

#[derive(Args)]
pub struct ChannelSettings {
    /// The model's name at the provider (default: the model id).
    #[arg(long)]
    upstream_model: Option<String>,
    /// Higher first (default 0).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Shares among equal priorities (default 1).
    #[arg(long)]
    weight: Option<u32>,
    /// A group this channel serves (repeatable; default: `default`).
    #[arg(long = "group")]
    groups: Vec<String>,
}

/// `tollgate models add`: a model with its first channels.
#[derive(Args)]
pub struct NewModel {
    #[arg(long)]
    id: String,
    /// chat, embedding or image.
    #[arg(long = "type")]
    model_type: String,
    /// USD per million prompt tokens.
    #[arg(long, default_value_t = 0.0)]
    input: f64,
    /// USD per million completion tokens.
    #[arg(long, default_value_t = 0.0)]
    output: f64,
    /// USD per generated image.
    #[arg(long, default_value_t = 0.0)]
    image: f64,
    #[arg(long)]
    max_output_tokens: Option<u64>,
    /// `PROVIDER` or `PROVIDER:UPSTREAM_MODEL` (repeatable; at least one).
    #[arg(long = "channel", required = true)]
    channels: Vec<String>,
}

pub async fn providers(command: ProvidersCommand, services: &Services) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let out = match command {
        ProvidersCommand::List => serde_json::to_string_pretty(&services.list_providers(&actor).await?)?,
        ProvidersCommand::Add { name, kind, base_url, key, fields } => {
            let input = ProviderInput {
                name,
                kind,
                base_url,
                api_key: key.read()?,
                api_version: fields.api_version,
                anthropic_version: fields.anthropic_version,
                organization: fields.organization,
                project: fields.project,
                headers: headers(&fields.headers)?,
            };
            serde_json::to_string_pretty(&services.create_provider(&actor, input).await?)?
        }
        ProvidersCommand::Set { name, base_url, key, clear_api_key, fields } => {
            let api_key = if clear_api_key { Some(None) } else { key.read()?.map(Some) };
            let patch = ProviderPatch {
                base_url: base_url.map(Some),
                api_key,
                api_version: fields.api_version.map(Some),
                anthropic_version: fields.anthropic_version.map(Some),
                organization: fields.organization.map(Some),
                project: fields.project.map(Some),
                headers: (!fields.headers.is_empty()).then(|| headers(&fields.headers)).transpose()?,
            };
            serde_json::to_string_pretty(&services.update_provider(&actor, &name, patch).await?)?
        }
        ProvidersCommand::Remove { name } => {
            services.delete_provider(&actor, &name).await?;
            format!("removed provider {name}")
        }
    };
    println!("{out}");
    Ok(())
}

pub async fn channels(command: ChannelsCommand, services: &Services) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let out = match command {
        ChannelsCommand::List => serde_json::to_string_pretty(&services.list_channels(&actor).await?)?,
        ChannelsCommand::Add { model, provider, settings } => {
            let ChannelSettings { upstream_model, priority, weight, groups } = settings;
            let groups = (!groups.is_empty()).then_some(groups);
            let input = ChannelInput { model, provider, upstream_model, priority, weight, groups };
            serde_json::to_string_pretty(&services.create_channel(&actor, input).await?)?
        }
        ChannelsCommand::Set { id, settings } => {
            let ChannelSettings { upstream_model, priority, weight, groups } = settings;
            let groups = (!groups.is_empty()).then_some(groups);
            let patch = ChannelPatch { upstream_model, priority, weight, groups };
            serde_json::to_string_pretty(&services.update_channel(&actor, &id, patch).await?)?
        }
        ChannelsCommand::Remove { id } => {
            services.delete_channel(&actor, &id).await?;
            format!("removed channel {id}")
        }
    };
    println!("{out}");
    Ok(())
}

pub async fn add_model(m: NewModel, services: &Services) -> anyhow::Result<()> {
    let channels = m
        .channels
        .iter()
        .map(|c| {
            let (provider, upstream) = match c.split_once(':') {
                Some((p, u)) => (p, Some(u.to_owned())),
                None => (c.as_str(), None),
            };
            ChannelInput { provider: provider.to_owned(), upstream_model: upstream, ..ChannelInput::default() }
        })
        .collect();
    let input = ModelInput {
        id: m.id,
        model_type: m.model_type,
        input_price_per_mtok: m.input,
        output_price_per_mtok: m.output,
        price_per_image: m.image,
        max_output_tokens: m.max_output_tokens,
        channels,
    };
    println!("{}", serde_json::to_string_pretty(&services.create_model(&Actor::cli(), input).await?)?);
    Ok(())
}

pub async fn remove_model(id: &str, services: &Services) -> anyhow::Result<()> {
    services.delete_model(&Actor::cli(), id).await?;
    println!("removed model {id}");
    Ok(())
}

impl KeySource {
    fn read(&self) -> anyhow::Result<Option<Secret>> {
        if let Some(var) = &self.api_key_env {
            let key = std::env::var(var).with_context(|| format!("--api-key-env: {var} is not set"))?;
            return Ok(Some(Secret::new(key)));
        }
        if self.api_key_stdin {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key).context("reading the API key from standard input")?;
            let key = key.trim();
            if key.is_empty() {
                bail!("--api-key-stdin: standard input was empty");
            }
            return Ok(Some(Secret::new(key.to_owned())));
        }
        Ok(None)
    }
}

/// `NAME=VALUE` pairs; the values are treated as secrets.
fn headers(pairs: &[String]) -> anyhow::Result<Vec<(String, Secret)>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), Secret::new(value.to_owned()))),
            _ => bail!("--header {p:?}: expected NAME=VALUE"),
        })
        .collect()
}
