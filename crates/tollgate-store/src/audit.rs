//! The audit log: appended in the same transaction as the change it describes, read back
//! newest first with filters and keyset pages.

use sqlx::Row;
use tollgate_core::audit::AuditEntry;

use crate::{Result, Store};

/// A stored audit entry with its row id (the keyset cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: i64,
    pub entry: AuditEntry,
}

/// Filters for reading the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub org_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub(crate) async fn record(tx: &mut sqlx::AnyConnection, e: &AuditEntry) -> Result<()> {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(serde_json::Value::to_string);
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target_type, target_id, before, after, source_ip, org_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.at)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target_type)
    .bind(&e.target_id)
    .bind(json(&e.before))
    .bind(json(&e.after))
    .bind(&e.source_ip)
    .bind(&e.org_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Store {
    /// An audit entry for an action that changes nothing else in the store (e.g. minting
    /// a stateless ephemeral token).
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        record(&mut conn, e).await
    }

    pub async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        let mut sql = String::from(
            "SELECT id, at, actor, action, target_type, target_id, before, after, source_ip, org_id FROM audit_log WHERE 1 = 1",
        );
        let mut texts: Vec<String> = Vec::new();
        for (column, value) in
            [("actor", &q.actor), ("action", &q.action), ("target_id", &q.target_id), ("org_id", &q.org_id)]
        {
            if let Some(v) = value {
                texts.push(v.clone());
                sql += &format!(" AND {column} = ${}", texts.len());
            }
        }
        let mut ints: Vec<i64> = Vec::new();
        for (cond, value) in [("at >=", q.from), ("at <", q.to), ("id <", q.before_id)] {
            if let Some(v) = value {
                ints.push(v);
                sql += &format!(" AND {cond} ${}", texts.len() + ints.len());
            }
        }
        sql += &format!(" ORDER BY id DESC LIMIT ${}", texts.len() + ints.len() + 1);
        let mut query = sqlx::query(&sql);
        for t in texts {
            query = query.bind(t);
        }
        for i in ints {
            query = query.bind(i);
        }
        let rows = query.bind(q.limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let json = |c: &str| -> Result<Option<serde_json::Value>> {
                    let text: Option<String> = r.try_get(c)?;
                    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
                };
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    entry: AuditEntry {
                        at: r.try_get("at")?,
                        actor: r.try_get("actor")?,
                        action: r.try_get("action")?,
                        target_type: r.try_get("target_type")?,
                        target_id: r.try_get("target_id")?,
                        before: json("before")?,
                        after: json("after")?,
                        source_ip: r.try_get("source_ip")?,
                        org_id: r.try_get("org_id")?,
                    },
                })
            })
            .collect()
    }
}
