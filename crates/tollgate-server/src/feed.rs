//! Building the data plane's snapshot and keeping it current from the change feed.
//!
//! Start: read the feed position first, then every key, so that a change made while
//! loading is applied again rather than missed. Then poll `changes_since` every interval
//! and swap in a patched snapshot. A failed read leaves the position where it was, so the
//! same changes are retried on the next tick.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tollgate_proxy::routing::Health;
use tollgate_proxy::{
    Accounts, Channel, ExtraHeaders, ModelRoute, OpenAiUpstream, OrgBalance, Provider, ProviderKind, Snapshot,
};
use tollgate_service::RoutingSetup;
use tollgate_store::{Entity, Store, StoreError};

use crate::config::{Config, ModelConfig, ProviderConfig, ProviderConfigKind};

const FEED_PAGE: i64 = 1000;

/// Where the data plane's routes come from: the config file, plus the providers, models
/// and channels managed through the API (re-read whole on every routing change: a few
/// rows). Circuit health lives in `health`, so it survives rebuilds.
pub struct RouteSource {
    pub config: Config,
    pub setup: Arc<RoutingSetup>,
    pub health: Health,
    /// Told of every model the routes serve, so that one added at runtime is counted by
    /// its own id rather than as `other`.
    pub metrics: Arc<tollgate_proxy::metrics::Metrics>,
}

impl RouteSource {
    pub async fn routes(&self, store: &Store) -> Result<Vec<ModelRoute>, StoreError> {
        let mut providers = Vec::new();
        for p in store.routing_providers().await? {
            match self.setup.open(&p) {
                Ok(p) => providers.push(p),
                Err(e) => tracing::warn!(provider = %p.name, error = %e, "skipping a stored provider"),
            }
        }
        let (models, channels) = (store.routing_models().await?, store.routing_channels().await?);
        let (mut providers, models) = crate::config::with_managed(&self.config, &providers, &models, &channels);
        providers.retain(|p| match build_provider(p) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(provider = %p.name, error = %e, "skipping a provider that cannot be built");
                false
            }
        });
        let routes = model_routes(&providers, &models, &self.health);
        self.metrics.know_models(routes.iter().map(|r| r.id.as_str()));
        Ok(routes)
    }
}

fn build_provider(p: &ProviderConfig) -> anyhow::Result<Provider> {
    let kind = match &p.kind {
        ProviderConfigKind::Demo { word_delay } => ProviderKind::Demo { word_delay: *word_delay },
        ProviderConfigKind::OpenAi { base_url, api_key, headers } => ProviderKind::OpenAi(
            OpenAiUpstream::new(base_url, api_key, extra_headers(headers, &p.name)?)
                .map_err(|m| anyhow::anyhow!("provider {}: {m}", p.name))?,
        ),
        ProviderConfigKind::Azure { base_url, api_version, api_key, headers } => ProviderKind::Azure(
            tollgate_proxy::AzureUpstream::new(base_url, api_version, api_key, extra_headers(headers, &p.name)?)
                .map_err(|m| anyhow::anyhow!("provider {}: {m}", p.name))?,
        ),
        ProviderConfigKind::Anthropic { base_url, api_key, version } => ProviderKind::Anthropic(
            tollgate_proxy::AnthropicUpstream::new(base_url, api_key, version)
                .map_err(|m| anyhow::anyhow!("provider {}: {m}", p.name))?,
        ),
        ProviderConfigKind::Gemini { base_url, api_version, api_key } => ProviderKind::Gemini(
            tollgate_proxy::GeminiUpstream::new(base_url, api_version, api_key)
                .map_err(|m| anyhow::anyhow!("provider {}: {m}", p.name))?,
        ),
    };
    Ok(Provider { name: p.name.clone(), kind })
}

/// The routes of these providers and models (providers that cannot be built are left out
/// by the caller; a channel naming an absent provider is dropped); each channel's health
/// comes from `health`.
fn model_routes(providers: &[ProviderConfig], models: &[ModelConfig], health: &Health) -> Vec<ModelRoute> {
    let created = tollgate_core::time::now_millis() / 1000;
    let providers: Vec<Arc<Provider>> = providers.iter().filter_map(|p| build_provider(p).ok()).map(Arc::new).collect();
    models
        .iter()
        .map(|m| ModelRoute {
            id: m.id.clone(),
            model_type: m.model_type,
            pricing: m.pricing,
            config_pricing: m.pricing,
            max_output_tokens: m.max_output_tokens,
            channels: m
                .channels
                .iter()
                .filter_map(|c| {
                    let provider = providers.iter().find(|p| p.name == c.provider)?.clone();
                    Some(Channel {
                        health: health.of(&m.id, &provider.name, &c.model),
                        provider,
                        upstream_model: c.model.clone(),
                        priority: c.priority,
                        weight: c.weight,
                        groups: c.groups.clone(),
                    })
                })
                .collect(),
            created,
        })
        .filter(|m| !m.channels.is_empty())
        .collect()
}

fn extra_headers(headers: &[(String, tollgate_core::Secret)], provider: &str) -> anyhow::Result<ExtraHeaders> {
    ExtraHeaders::new(headers.iter().map(|(n, v)| (n.as_str(), v.expose())))
        .map_err(|m| anyhow::anyhow!("provider {provider}: {m}"))
}

/// Loads the first snapshot; returns it with the feed position it reflects.
pub async fn load(store: &Store, source: &RouteSource) -> Result<(Snapshot, i64), StoreError> {
    let seq = store.latest_change_seq().await?;
    let models = source.routes(store).await?;
    let keys = store.all_keys().await?;
    let teams = store.list_teams(None).await?;
    let orgs = org_balances(store).await?;
    let accounts = Arc::new(Accounts::default());
    merge_team_counters(store, &accounts).await?;
    let prices = store.model_prices().await?;
    Ok((Snapshot::new(accounts, &keys, &teams, &orgs, models).with_prices(&prices), seq))
}

async fn org_balances(store: &Store) -> Result<Vec<OrgBalance>, StoreError> {
    Ok(store
        .all_org_money()
        .await?
        .into_iter()
        .map(|(id, m)| OrgBalance { id, credit: m.credit.0, spend: m.spend.0 })
        .collect())
}

async fn merge_team_counters(store: &Store, accounts: &Accounts) -> Result<(), StoreError> {
    for c in store.team_counters().await? {
        accounts.team(&c.id).merge_stored(c.spend.0, c.tokens);
    }
    Ok(())
}

/// Raises this instance's counters to what the store holds — how spend settled by other
/// instances on the same database reaches this one when there is no Redis. Keys: those
/// used in the last `window` (a key's `last_used_at` is its latest request's start).
pub async fn refresh_counters(store: &Store, accounts: &Accounts, window: Duration) -> Result<(), StoreError> {
    let since = tollgate_core::time::now_millis() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    for c in store.key_counters_used_since(since).await? {
        if let Some(a) = accounts.existing_key(&c.id) {
            a.merge_stored(c.spend.0, c.tokens);
        }
    }
    for c in store.team_counters().await? {
        if let Some(a) = accounts.existing_team(&c.id) {
            a.merge_stored(c.spend.0, c.tokens);
        }
    }
    for (id, m) in store.all_org_money().await? {
        if let Some(a) = accounts.existing_org(&id) {
            a.merge_stored(m.spend.0, 0);
        }
    }
    Ok(())
}

/// How far back `refresh_counters` looks for keys in use.
const COUNTER_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Applies new changes until cancelled; with `counter_refresh`, also raises the spend
/// counters to what other instances wrote (several instances on one database).
pub async fn follow(
    store: Store,
    snapshot: Arc<ArcSwap<Snapshot>>,
    source: Arc<RouteSource>,
    mut seq: i64,
    every: Duration,
    counter_refresh: Option<Duration>,
    stop: CancellationToken,
) {
    let mut failing = false;
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        if let Some(interval) = counter_refresh
            && last_refresh.elapsed() >= interval
        {
            last_refresh = tokio::time::Instant::now();
            let accounts = snapshot.load().accounts.clone();
            if let Err(e) = refresh_counters(&store, &accounts, COUNTER_WINDOW).await {
                tracing::debug!(error = %e, "refreshing spend counters failed; retrying next interval");
            }
        }
        match apply_once(&store, &snapshot, &source, seq).await {
            Ok(next) => {
                if failing {
                    tracing::info!("change feed reachable again");
                    failing = false;
                }
                seq = next;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "change feed poll failed; serving the last snapshot and retrying");
                    failing = true;
                }
            }
        }
    }
}

/// One poll: reads pending changes, re-reads the changed keys, swaps the snapshot.
/// Returns the new feed position.
pub async fn apply_once(
    store: &Store,
    snapshot: &ArcSwap<Snapshot>,
    source: &RouteSource,
    mut seq: i64,
) -> Result<i64, StoreError> {
    loop {
        let changes = store.changes_since(seq, FEED_PAGE).await?;
        let Some(last) = changes.last() else {
            return Ok(seq);
        };
        let next = last.seq;
        let key_ids: BTreeSet<&str> =
            changes.iter().filter(|c| c.entity == Entity::Key).map(|c| c.entity_id.as_str()).collect();
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        for id in key_ids {
            match store.get_key(id).await {
                Ok(k) => upserts.push(k),
                Err(StoreError::NotFound) => removed.push(id.to_owned()),
                Err(e) => return Err(e),
            }
        }
        let mut team_upserts = Vec::new();
        let mut teams_removed = Vec::new();
        let team_ids: BTreeSet<&str> =
            changes.iter().filter(|c| c.entity == Entity::Team).map(|c| c.entity_id.as_str()).collect();
        for id in team_ids {
            match store.get_team(id).await {
                Ok(t) => team_upserts.push(t),
                Err(StoreError::NotFound) => teams_removed.push(id.to_owned()),
                Err(e) => return Err(e),
            }
        }
        let mut patched = snapshot.load().with_key_changes(&upserts, &removed);
        if !team_upserts.is_empty() || !teams_removed.is_empty() {
            patched = patched.with_team_changes(&team_upserts, &teams_removed);
        }
        if changes.iter().any(|c| c.entity == Entity::Org) {
            // Credits changed: a handful of rows, re-read whole.
            patched = patched.with_org_changes(&org_balances(store).await?);
        }
        if changes.iter().any(|c| c.entity == Entity::Routing) {
            // Providers, models or channels changed: the routes are rebuilt whole.
            patched = patched.with_models(source.routes(store).await?, &store.model_prices().await?);
        } else if changes.iter().any(|c| c.entity == Entity::Model) {
            patched = patched.with_prices(&store.model_prices().await?);
        }
        snapshot.store(Arc::new(patched));
        tracing::debug!(changes = changes.len(), seq = next, "applied changes to the snapshot");
        seq = next;
        if changes.len() < FEED_PAGE as usize {
            return Ok(seq);
        }
    }
}
