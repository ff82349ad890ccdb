//! The change feed: every mutation that the data plane must see appends a row to
//! `changes` in the same transaction. Servers poll `seq > last_seen` and patch their
//! snapshot, which serves the CLI writing beside a running server, several servers on one
//! database, and instant revocation with one mechanism.
//!
//! Invariant: rows become visible in `seq` order. SQLite has one writer at a time; on
//! PostgreSQL writers take a transaction-scoped advisory lock before appending, so a
//! transaction holding a lower `seq` can never commit after a poller has seen a higher one.

use sqlx::Row;

use crate::{Backend, Result, Store};

/// Kinds of object that travel through the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Key,
    Team,
    /// An organization's credit changed (a ledger entry other than usage).
    Org,
    /// A model's price was set or reset through the API.
    Model,
    /// A provider, model or channel managed through the API changed: routes are rebuilt.
    Routing,
}

impl Entity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Team => "team",
            Self::Org => "org",
            Self::Model => "model",
            Self::Routing => "routing",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::Key),
            "team" => Some(Self::Team),
            "org" => Some(Self::Org),
            "model" => Some(Self::Model),
            "routing" => Some(Self::Routing),
            _ => None,
        }
    }
}

/// One entry of the feed: "object `entity_id` of kind `entity` changed; re-read it".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub entity: Entity,
    pub entity_id: String,
}

const FEED_LOCK: i64 = 0x0063_6861_6e67_6573;

/// Appends a change inside the caller's transaction.
pub(crate) async fn record(
    backend: Backend,
    tx: &mut sqlx::AnyConnection,
    entity: Entity,
    entity_id: &str,
) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FEED_LOCK).execute(&mut *tx).await?;
    }
    sqlx::query("INSERT INTO changes (entity, entity_id, at) VALUES ($1, $2, $3)")
        .bind(entity.as_str())
        .bind(entity_id)
        .bind(tollgate_core::time::now_millis())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

impl Store {
    /// Changes after `seq`, oldest first, at most `limit`. Unknown entity kinds (written
    /// by a newer version) are skipped.
    pub async fn changes_since(&self, seq: i64, limit: i64) -> Result<Vec<Change>> {
        let rows = sqlx::query("SELECT seq, entity, entity_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let entity: String = row.try_get("entity")?;
            if let Some(entity) = Entity::parse(&entity) {
                out.push(Change { seq: row.try_get("seq")?, entity, entity_id: row.try_get("entity_id")? });
            }
        }
        Ok(out)
    }

    /// The newest `seq`, or 0 for an empty feed: where a freshly loaded snapshot starts.
    pub async fn latest_change_seq(&self) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes").fetch_one(&self.pool).await?;
        Ok(seq.unwrap_or(0))
    }
}
