//! The organization's money: the ledger (top-ups, usage debits, adjustments, refunds) and
//! the spend counters of organizations and teams. Invariant: an organization's
//! `credit_micros - spend_micros` equals the sum of its ledger entries — every entry is
//! written in the same transaction as the counter it moves, and the counter update takes
//! the row lock that orders concurrent entries, so `balance_after` is exact.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_core::MicroUsd;
use tollgate_core::audit::AuditEntry;
use tollgate_core::time::UnixMillis;

use crate::changes::{self, Entity};
use crate::{Result, Store, StoreError, audit};

/// Kinds of ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// Money added (payment, redemption code, admin credit).
    Topup,
    /// What requests cost (one entry per organization per usage batch).
    Usage,
    /// An admin's correction, either sign.
    Adjustment,
    /// Money returned to the organization.
    Refund,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topup => "topup",
            Self::Usage => "usage",
            Self::Adjustment => "adjustment",
            Self::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "topup" => Self::Topup,
            "usage" => Self::Usage,
            "adjustment" => Self::Adjustment,
            "refund" => Self::Refund,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub id: String,
    pub org_id: String,
    pub kind: LedgerKind,
    /// Signed: credits positive, debits negative.
    pub amount: MicroUsd,
    pub balance_after: MicroUsd,
    pub note: Option<String>,
    /// Who made it (a user id, `operator`, or none for usage).
    pub actor: Option<String>,
    pub created_at: UnixMillis,
}

/// An organization's money at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgMoney {
    /// Sum of the non-usage ledger entries.
    pub credit: MicroUsd,
    /// Sum of the usage debits (positive).
    pub spend: MicroUsd,
}

impl OrgMoney {
    pub fn balance(&self) -> MicroUsd {
        MicroUsd(self.credit.0 - self.spend.0)
    }
}

/// Spend and token counters of an account, for the data plane's baselines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub id: String,
    pub spend: MicroUsd,
    pub tokens: i64,
}

const LEDGER_COLUMNS: &str = "id, org_id, kind, amount_micros, balance_after_micros, note, actor, created_at";

/// The usage debit of one batch, inside the usage writer's transaction.
pub(crate) async fn debit_usage(
    tx: &mut sqlx::AnyConnection,
    org_id: &str,
    amount: i64,
    requests: i64,
    now: UnixMillis,
) -> Result<()> {
    let balance: Option<i64> = sqlx::query_scalar(
        "UPDATE organizations SET spend_micros = spend_micros + $1 WHERE id = $2 \
         RETURNING credit_micros - spend_micros",
    )
    .bind(amount)
    .bind(org_id)
    .fetch_optional(&mut *tx)
    .await?;
    // A row of a deleted organization still counts in usage_log; there is no ledger left.
    let Some(balance) = balance else {
        return Ok(());
    };
    let note = if requests == 1 { "1 request".to_owned() } else { format!("{requests} requests") };
    insert_entry(tx, org_id, LedgerKind::Usage, -amount, balance, Some(&note), None, now).await?;
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one column each")]
async fn insert_entry(
    tx: &mut sqlx::AnyConnection,
    org_id: &str,
    kind: LedgerKind,
    amount: i64,
    balance_after: i64,
    note: Option<&str>,
    actor: Option<&str>,
    now: UnixMillis,
) -> Result<LedgerEntry> {
    let id = tollgate_core::ids::new_id("led");
    sqlx::query(&format!("INSERT INTO ledger_entries ({LEDGER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(id.clone())
        .bind(org_id.to_owned())
        .bind(kind.as_str())
        .bind(amount)
        .bind(balance_after)
        .bind(note.map(str::to_owned))
        .bind(actor.map(str::to_owned))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(LedgerEntry {
        id,
        org_id: org_id.to_owned(),
        kind,
        amount: MicroUsd(amount),
        balance_after: MicroUsd(balance_after),
        note: note.map(str::to_owned),
        actor: actor.map(str::to_owned),
        created_at: now,
    })
}

/// Filters and keyset page for reading a ledger, newest first.
#[derive(Debug, Clone, Default)]
pub struct LedgerQuery {
    pub org_id: String,
    pub kind: Option<LedgerKind>,
    /// Entries with an id below this (the previous page's last id).
    pub before_id: Option<String>,
    pub limit: i64,
}

impl Store {
    /// Adds a non-usage entry (credit, adjustment, refund) and moves the organization's
    /// credit by `amount`, with its audit entry and a change-feed row (the data planes
    /// re-read the credit), in one transaction.
    pub async fn add_ledger_entry(
        &self,
        org_id: &str,
        kind: LedgerKind,
        amount: MicroUsd,
        note: Option<&str>,
        actor: Option<&str>,
        audit_entry: &AuditEntry,
    ) -> Result<LedgerEntry> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let balance: Option<i64> = sqlx::query_scalar(
            "UPDATE organizations SET credit_micros = credit_micros + $1 WHERE id = $2 \
             RETURNING credit_micros - spend_micros",
        )
        .bind(amount.0)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
        let balance = balance.ok_or(StoreError::NotFound)?;
        let now = tollgate_core::time::now_millis();
        let entry = insert_entry(&mut tx, org_id, kind, amount.0, balance, note, actor, now).await?;
        changes::record(self.backend, &mut tx, Entity::Org, org_id).await?;
        audit::record(&mut tx, &audit_entry.clone().with_after(Some(entry_json(&entry)))).await?;
        tx.commit().await?;
        Ok(entry)
    }

    pub async fn org_money(&self, org_id: &str) -> Result<OrgMoney> {
        let row = sqlx::query("SELECT credit_micros, spend_micros FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(OrgMoney { credit: MicroUsd(row.try_get(0)?), spend: MicroUsd(row.try_get(1)?) })
    }

    /// Every organization's money (the data plane's org balances).
    pub async fn all_org_money(&self) -> Result<Vec<(String, OrgMoney)>> {
        let rows =
            sqlx::query("SELECT id, credit_micros, spend_micros FROM organizations").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, OrgMoney { credit: MicroUsd(r.try_get(1)?), spend: MicroUsd(r.try_get(2)?) })))
            .collect()
    }

    /// Sum of the ledger, recomputed from the entries (reconciliation).
    pub async fn ledger_sum(&self, org_id: &str) -> Result<MicroUsd> {
        let sum: Option<i64> =
            sqlx::query_scalar("SELECT CAST(SUM(amount_micros) AS BIGINT) FROM ledger_entries WHERE org_id = $1")
                .bind(org_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(MicroUsd(sum.unwrap_or(0)))
    }

    pub async fn list_ledger(&self, q: &LedgerQuery) -> Result<Vec<LedgerEntry>> {
        let mut sql = format!("SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE org_id = $1");
        let mut n = 1;
        if q.kind.is_some() {
            n += 1;
            sql += &format!(" AND kind = ${n}");
        }
        if q.before_id.is_some() {
            n += 1;
            sql += &format!(" AND id < ${n}");
        }
        sql += &format!(" ORDER BY id DESC LIMIT ${}", n + 1);
        let mut query = sqlx::query(&sql).bind(q.org_id.clone());
        if let Some(k) = q.kind {
            query = query.bind(k.as_str());
        }
        if let Some(b) = &q.before_id {
            query = query.bind(b.clone());
        }
        let rows = query.bind(q.limit).fetch_all(&self.pool).await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Spend of the organization's usage rows since `since` (the `/billing` summary).
    pub async fn org_spend_since(&self, org_id: &str, since: UnixMillis) -> Result<MicroUsd> {
        let sum: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(cost_micros) AS BIGINT) FROM usage_daily WHERE org_id = $1 AND day >= $2",
        )
        .bind(org_id)
        .bind(since.div_euclid(86_400_000))
        .fetch_one(&self.pool)
        .await?;
        Ok(MicroUsd(sum.unwrap_or(0)))
    }

    /// Spend and tokens of the keys used since `since` (multi-instance baselines).
    pub async fn key_counters_used_since(&self, since: UnixMillis) -> Result<Vec<Counters>> {
        let rows = sqlx::query("SELECT id, spend_micros, tokens_used FROM api_keys WHERE last_used_at >= $1")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(counters_from_row).collect()
    }

    pub async fn team_counters(&self) -> Result<Vec<Counters>> {
        let rows = sqlx::query("SELECT id, spend_micros, tokens_used FROM teams").fetch_all(&self.pool).await?;
        rows.iter().map(counters_from_row).collect()
    }
}

fn counters_from_row(r: &AnyRow) -> Result<Counters> {
    Ok(Counters { id: r.try_get(0)?, spend: MicroUsd(r.try_get(1)?), tokens: r.try_get(2)? })
}

fn entry_from_row(r: &AnyRow) -> Result<LedgerEntry> {
    let kind: String = r.try_get("kind")?;
    Ok(LedgerEntry {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        kind: LedgerKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("ledger kind {kind}")))?,
        amount: MicroUsd(r.try_get("amount_micros")?),
        balance_after: MicroUsd(r.try_get("balance_after_micros")?),
        note: r.try_get("note")?,
        actor: r.try_get("actor")?,
        created_at: r.try_get("created_at")?,
    })
}

fn entry_json(e: &LedgerEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "kind": e.kind.as_str(),
        "amount_micros": e.amount.0,
        "balance_after_micros": e.balance_after.0,
        "note": e.note,
    })
}
