//! API keys: insert, read, list. Every write records a change for the data plane.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_core::MicroUsd;
use tollgate_core::key::{KeyDigest, KeyRecord, KeyStatus};

use tollgate_core::audit::AuditEntry;

use crate::audit;
use crate::changes::{self, Entity};
use crate::{Result, Store, StoreError, map_unique};

const KEY_COLUMNS: &str = "id, name, digest, preview, status, created_at, expires_at, \
     last_used_at, request_count, tokens_used, spend_micros, settings, updated_at, \
     previous_digest, previous_expires_at, rotation_key, org_id, team_id, owner_id, secret_sealed";

/// The orders a key list can take (each ties on id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySort {
    #[default]
    Name,
    Owner,
    Status,
    Requests,
    Created,
}

impl KeySort {
    fn column(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Owner => "owner_id",
            Self::Status => "status",
            Self::Requests => "request_count",
            Self::Created => "created_at",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Self::Requests | Self::Created)
    }

    /// The sort value of a key, as the cursor carries it.
    pub fn value_of(self, k: &KeyRecord) -> String {
        match self {
            Self::Name => k.name.clone(),
            Self::Owner => k.owner_id.clone(),
            Self::Status => k.status.as_str().to_owned(),
            Self::Requests => k.request_count.to_string(),
            Self::Created => k.created_at.to_string(),
        }
    }
}

/// Filters and keyset page for listing keys, in `sort` order then id.
#[derive(Debug, Clone, Default)]
pub struct KeyListQuery {
    pub sort: KeySort,
    pub descending: bool,
    /// Case-insensitive substring of the name or the preview.
    pub search: Option<String>,
    pub status: Option<KeyStatus>,
    /// Continue after this `(sort value, id)` (the previous page's last row).
    pub after: Option<(String, String)>,
    /// Only keys of this organization / team / owner.
    pub org_id: Option<String>,
    pub team_id: Option<String>,
    pub owner_id: Option<String>,
    pub limit: i64,
}

impl Store {
    /// Inserts a new key, its change-feed entry and its audit entry atomically.
    pub async fn insert_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        ))
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.digest.0.to_vec())
        .bind(&key.preview)
        .bind(key.status.as_str())
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.last_used_at)
        .bind(key.request_count)
        .bind(key.tokens_used)
        .bind(key.spend.0)
        .bind(settings_json(key)?)
        .bind(key.updated_at)
        .bind(key.previous_digest.map(|(d, _)| d.0.to_vec()))
        .bind(key.previous_digest.map(|(_, until)| until))
        .bind(&key.rotation_key)
        .bind(&key.org_id)
        .bind(&key.team_id)
        .bind(&key.owner_id)
        .bind(&key.secret_sealed)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
        changes::record(self.backend, &mut tx, Entity::Key, &key.id).await?;
        audit::record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the editable state of a key (everything but its counters, which only the
    /// usage writer moves), with its change-feed and audit entries, atomically. Fails
    /// with `NotFound` if the key is gone.
    pub async fn update_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query(
            "UPDATE api_keys SET name = $1, digest = $2, preview = $3, status = $4, expires_at = $5, \
             settings = $6, updated_at = $7, previous_digest = $8, previous_expires_at = $9, \
             rotation_key = $10, team_id = $11, owner_id = $12, secret_sealed = $13 WHERE id = $14",
        )
        .bind(&key.name)
        .bind(key.digest.0.to_vec())
        .bind(&key.preview)
        .bind(key.status.as_str())
        .bind(key.expires_at)
        .bind(settings_json(key)?)
        .bind(key.updated_at)
        .bind(key.previous_digest.map(|(d, _)| d.0.to_vec()))
        .bind(key.previous_digest.map(|(_, until)| until))
        .bind(&key.rotation_key)
        .bind(&key.team_id)
        .bind(&key.owner_id)
        .bind(&key.secret_sealed)
        .bind(&key.id)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        changes::record(self.backend, &mut tx, Entity::Key, &key.id).await?;
        audit::record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a key for good (its usage rows keep its id and name).
    pub async fn delete_key(&self, id: &str, audit: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        changes::record(self.backend, &mut tx, Entity::Key, id).await?;
        audit::record(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_key(&self, id: &str) -> Result<KeyRecord> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        key_from_row(&row)
    }

    /// Every key, for building the data plane's snapshot.
    pub async fn all_keys(&self) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys")).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn list_keys(&self, q: &KeyListQuery) -> Result<Vec<KeyRecord>> {
        let mut sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let pattern = q.search.as_ref().map(|s| format!("%{}%", escape_like(&s.to_lowercase())));
        if pattern.is_some() {
            let (a, b) = (next(), next());
            sql += &format!(" AND (LOWER(name) LIKE ${a} ESCAPE '\\' OR LOWER(preview) LIKE ${b} ESCAPE '\\')");
        }
        if q.status.is_some() {
            sql += &format!(" AND status = ${}", next());
        }
        let (col, cmp, dir) =
            (q.sort.column(), if q.descending { "<" } else { ">" }, if q.descending { "DESC" } else { "ASC" });
        if q.after.is_some() {
            let (a, b, c) = (next(), next(), next());
            sql += &format!(" AND ({col} {cmp} ${a} OR ({col} = ${b} AND id {cmp} ${c}))");
        }
        for (column, value) in [("org_id", &q.org_id), ("team_id", &q.team_id), ("owner_id", &q.owner_id)] {
            if value.is_some() {
                sql += &format!(" AND {column} = ${}", next());
            }
        }
        sql += &format!(" ORDER BY {col} {dir}, id {dir} LIMIT ${}", next());

        let mut query = sqlx::query(&sql);
        if let Some(p) = &pattern {
            query = query.bind(p.clone()).bind(p.clone());
        }
        if let Some(s) = q.status {
            query = query.bind(s.as_str());
        }
        if let Some((value, id)) = &q.after {
            if q.sort.is_numeric() {
                let n: i64 = value.parse().map_err(|_| StoreError::Corrupt("numeric cursor".into()))?;
                query = query.bind(n).bind(n);
            } else {
                query = query.bind(value.clone()).bind(value.clone());
            }
            query = query.bind(id.clone());
        }
        for value in [&q.org_id, &q.team_id, &q.owner_id].into_iter().flatten() {
            query = query.bind(value.clone());
        }
        let rows = query.bind(q.limit).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn settings_json(key: &KeyRecord) -> Result<String> {
    serde_json::to_string(&key.settings).map_err(|e| StoreError::Corrupt(format!("key settings: {e}")))
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord> {
    let digest: Vec<u8> = row.try_get("digest")?;
    let status: String = row.try_get("status")?;
    let settings: String = row.try_get("settings")?;
    let previous: Option<Vec<u8>> = row.try_get("previous_digest")?;
    let previous_until: Option<i64> = row.try_get("previous_expires_at")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        digest: KeyDigest::from_slice(&digest).ok_or_else(|| StoreError::Corrupt("key digest length".into()))?,
        preview: row.try_get("preview")?,
        status: KeyStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("key status {status}")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        request_count: row.try_get("request_count")?,
        tokens_used: row.try_get("tokens_used")?,
        spend: MicroUsd(row.try_get("spend_micros")?),
        settings: serde_json::from_str(&settings).map_err(|e| StoreError::Corrupt(format!("key settings: {e}")))?,
        updated_at: row.try_get("updated_at")?,
        previous_digest: match (previous, previous_until) {
            (Some(d), Some(until)) => Some((
                KeyDigest::from_slice(&d).ok_or_else(|| StoreError::Corrupt("previous digest length".into()))?,
                until,
            )),
            _ => None,
        },
        rotation_key: row.try_get("rotation_key")?,
        org_id: row.try_get::<Option<String>, _>("org_id")?.unwrap_or_default(),
        team_id: row.try_get::<Option<String>, _>("team_id")?.unwrap_or_default(),
        owner_id: row.try_get::<Option<String>, _>("owner_id")?.unwrap_or_default(),
        secret_sealed: row.try_get("secret_sealed")?,
    })
}
