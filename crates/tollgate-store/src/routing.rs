//! Providers, models and channels managed through the API (the config file declares the
//! rest). The store keeps what it is given: validation is the service's, and provider
//! credentials arrive already sealed. Every change is audited and appends a `routing`
//! entry to the change feed in the same transaction, so every instance rebuilds its
//! routes.

use sqlx::Row;
use tollgate_core::MicroUsd;
use tollgate_core::audit::AuditEntry;
use tollgate_core::money::Pricing;

use crate::changes::{self, Entity};
use crate::{Result, Store, StoreError, audit, map_unique};

/// A provider as stored. `secrets_sealed` holds its API key and header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    pub anthropic_version: Option<String>,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// The extra headers' names (their values are sealed).
    pub header_names: Vec<String>,
    pub secrets_sealed: Option<Vec<u8>>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub id: String,
    /// `chat`, `embedding` or `image`.
    pub model_type: String,
    pub pricing: Pricing,
    pub max_output_tokens: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: String,
    pub model_id: String,
    pub provider: String,
    pub upstream_model: String,
    pub priority: i32,
    pub weight: u32,
    pub groups: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const PROVIDER_COLUMNS: &str = "name, kind, base_url, api_version, anthropic_version, organization, project, \
     header_names, secrets_sealed, created_at, updated_at";
const MODEL_COLUMNS: &str = "id, model_type, input_micros_per_mtok, output_micros_per_mtok, per_image_micros, \
     max_output_tokens, created_at, updated_at";
const CHANNEL_COLUMNS: &str =
    "id, model_id, provider, upstream_model, priority, weight, groups, created_at, updated_at";

impl Store {
    pub async fn routing_providers(&self) -> Result<Vec<ProviderRecord>> {
        let rows = sqlx::query(&format!("SELECT {PROVIDER_COLUMNS} FROM routing_providers ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(provider_row).collect()
    }

    pub async fn routing_models(&self) -> Result<Vec<ModelRecord>> {
        let rows = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM routing_models ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(model_row).collect()
    }

    pub async fn routing_channels(&self) -> Result<Vec<ChannelRecord>> {
        let rows = sqlx::query(&format!("SELECT {CHANNEL_COLUMNS} FROM routing_channels ORDER BY model_id, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(channel_row).collect()
    }

    /// Inserts (`Conflict` when the name is taken) or, with `replace`, updates an existing
    /// provider (`NotFound` when there is none).
    pub async fn put_routing_provider(&self, p: &ProviderRecord, replace: bool, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        // Both statements bind the same values; the update leaves `created_at` as it was.
        let sql = if replace {
            "UPDATE routing_providers SET kind = $2, base_url = $3, api_version = $4, anthropic_version = $5, \
             organization = $6, project = $7, header_names = $8, secrets_sealed = $9, updated_at = $10 \
             WHERE name = $1"
        } else {
            "INSERT INTO routing_providers (name, kind, base_url, api_version, anthropic_version, organization, \
             project, header_names, secrets_sealed, updated_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
        };
        let done = sqlx::query(sql)
            .bind(&p.name)
            .bind(&p.kind)
            .bind(&p.base_url)
            .bind(&p.api_version)
            .bind(&p.anthropic_version)
            .bind(&p.organization)
            .bind(&p.project)
            .bind(serde_json::to_string(&p.header_names).unwrap_or_else(|_| "[]".into()))
            .bind(&p.secrets_sealed)
            .bind(p.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        changes::record(self.backend, &mut tx, Entity::Routing, &p.name).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a provider; `Conflict` while a stored channel still uses it.
    pub async fn delete_routing_provider(&self, name: &str, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM routing_channels WHERE provider = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if used > 0 {
            return Err(StoreError::Conflict);
        }
        let done = sqlx::query("DELETE FROM routing_providers WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        changes::record(self.backend, &mut tx, Entity::Routing, name).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A new model with its first channels, in one transaction (`Conflict` when the id or
    /// a channel is taken).
    pub async fn insert_routing_model(
        &self,
        m: &ModelRecord,
        channels: &[ChannelRecord],
        entry: &AuditEntry,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query(&format!("INSERT INTO routing_models ({MODEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
            .bind(&m.id)
            .bind(&m.model_type)
            .bind(m.pricing.input_per_mtok.0)
            .bind(m.pricing.output_per_mtok.0)
            .bind(m.pricing.per_image.0)
            .bind(i64::try_from(m.max_output_tokens).unwrap_or(i64::MAX))
            .bind(m.created_at)
            .bind(m.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
        for c in channels {
            insert_channel(&mut tx, c).await?;
        }
        changes::record(self.backend, &mut tx, Entity::Routing, &m.id).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a model and its channels.
    pub async fn delete_routing_model(&self, id: &str, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query("DELETE FROM routing_models WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM routing_channels WHERE model_id = $1").bind(id).execute(&mut *tx).await?;
        changes::record(self.backend, &mut tx, Entity::Routing, id).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts a channel (`Conflict` when its model already has one on that provider and
    /// upstream model) or, with `replace`, updates one by id (`NotFound` when absent).
    pub async fn put_routing_channel(&self, c: &ChannelRecord, replace: bool, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        if replace {
            let done = sqlx::query(
                "UPDATE routing_channels SET upstream_model = $2, priority = $3, weight = $4, groups = $5, \
                 updated_at = $6 WHERE id = $1",
            )
            .bind(&c.id)
            .bind(&c.upstream_model)
            .bind(i64::from(c.priority))
            .bind(i64::from(c.weight))
            .bind(serde_json::to_string(&c.groups).unwrap_or_else(|_| "[]".into()))
            .bind(c.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        } else {
            insert_channel(&mut tx, c).await?;
        }
        changes::record(self.backend, &mut tx, Entity::Routing, &c.id).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_routing_channel(&self, id: &str, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query("DELETE FROM routing_channels WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        changes::record(self.backend, &mut tx, Entity::Routing, id).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_channel(tx: &mut sqlx::AnyConnection, c: &ChannelRecord) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO routing_channels ({CHANNEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&c.id)
    .bind(&c.model_id)
    .bind(&c.provider)
    .bind(&c.upstream_model)
    .bind(i64::from(c.priority))
    .bind(i64::from(c.weight))
    .bind(serde_json::to_string(&c.groups).unwrap_or_else(|_| "[]".into()))
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(map_unique)?;
    Ok(())
}

fn names(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn provider_row(r: &sqlx::any::AnyRow) -> Result<ProviderRecord> {
    Ok(ProviderRecord {
        name: r.try_get(0)?,
        kind: r.try_get(1)?,
        base_url: r.try_get(2)?,
        api_version: r.try_get(3)?,
        anthropic_version: r.try_get(4)?,
        organization: r.try_get(5)?,
        project: r.try_get(6)?,
        header_names: names(&r.try_get::<String, _>(7)?),
        secrets_sealed: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

fn model_row(r: &sqlx::any::AnyRow) -> Result<ModelRecord> {
    Ok(ModelRecord {
        id: r.try_get(0)?,
        model_type: r.try_get(1)?,
        pricing: Pricing {
            input_per_mtok: MicroUsd(r.try_get(2)?),
            output_per_mtok: MicroUsd(r.try_get(3)?),
            per_image: MicroUsd(r.try_get(4)?),
        },
        max_output_tokens: u64::try_from(r.try_get::<i64, _>(5)?).unwrap_or(0),
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

fn channel_row(r: &sqlx::any::AnyRow) -> Result<ChannelRecord> {
    Ok(ChannelRecord {
        id: r.try_get(0)?,
        model_id: r.try_get(1)?,
        provider: r.try_get(2)?,
        upstream_model: r.try_get(3)?,
        priority: i32::try_from(r.try_get::<i64, _>(4)?).unwrap_or(0),
        weight: u32::try_from(r.try_get::<i64, _>(5)?).unwrap_or(1),
        groups: names(&r.try_get::<String, _>(6)?),
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}
