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
use tollgate_proxy::{Channel, ModelRoute, OpenAiUpstream, Provider, ProviderKind, Snapshot};
use tollgate_store::{Entity, Store, StoreError};

use crate::config::{Config, ProviderConfigKind};

const FEED_PAGE: i64 = 1000;

/// The model routes the config declares.
pub fn model_routes(config: &Config) -> anyhow::Result<Vec<ModelRoute>> {
    let created = tollgate_core::time::now_millis() / 1000;
    let mut providers: Vec<Arc<Provider>> = Vec::new();
    for p in &config.providers {
        let kind = match &p.kind {
            ProviderConfigKind::Demo { word_delay } => ProviderKind::Demo { word_delay: *word_delay },
            ProviderConfigKind::OpenAi { base_url, api_key } => ProviderKind::OpenAi(
                OpenAiUpstream::new(base_url, api_key).map_err(|m| anyhow::anyhow!("provider {}: {m}", p.name))?,
            ),
        };
        providers.push(Arc::new(Provider { name: p.name.clone(), kind }));
    }
    Ok(config
        .models
        .iter()
        .map(|m| ModelRoute {
            id: m.id.clone(),
            model_type: m.model_type,
            pricing: m.pricing,
            channels: m
                .channels
                .iter()
                .filter_map(|(provider, upstream_model)| {
                    let provider = providers.iter().find(|p| &p.name == provider)?.clone();
                    Some(Channel { provider, upstream_model: upstream_model.clone() })
                })
                .collect(),
            created,
        })
        .collect())
}

/// Loads the first snapshot; returns it with the feed position it reflects.
pub async fn load(store: &Store, models: Vec<ModelRoute>) -> Result<(Snapshot, i64), StoreError> {
    let seq = store.latest_change_seq().await?;
    let keys = store.all_keys().await?;
    let teams = store.list_teams(None).await?;
    Ok((Snapshot::new(&keys, &teams, models), seq))
}

/// Applies new changes until cancelled.
pub async fn follow(
    store: Store,
    snapshot: Arc<ArcSwap<Snapshot>>,
    mut seq: i64,
    every: Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        match apply_once(&store, &snapshot, seq).await {
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
pub async fn apply_once(store: &Store, snapshot: &ArcSwap<Snapshot>, mut seq: i64) -> Result<i64, StoreError> {
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
        snapshot.store(Arc::new(patched));
        tracing::debug!(changes = changes.len(), seq = next, "applied changes to the snapshot");
        seq = next;
        if changes.len() < FEED_PAGE as usize {
            return Ok(seq);
        }
    }
}
