//! The organization's money, as owners and admins see and move it: the balance (the sum
//! of the ledger), recent spend, the ledger itself, and admin credits, debits and refunds.
//! Payments (Stripe, redemption codes) will add `topup` entries through the same store
//! call. Usage debits are written by the usage writer, never here.

use tollgate_core::MicroUsd;
use tollgate_core::time::UnixMillis;
use tollgate_store::{LedgerEntry, LedgerKind, LedgerQuery};

use crate::{Actor, Page, Result, ServiceError, Services};

/// `GET /billing`.
#[derive(Debug, serde::Serialize)]
pub struct BillingSummary {
    pub organization_id: String,
    pub balance_usd: MicroUsd,
    pub balance_micros: i64,
    /// Every credit ever added (top-ups, adjustments, refunds).
    pub credit_usd: MicroUsd,
    /// Every usage debit ever written.
    pub spend_usd: MicroUsd,
    pub spend_30d_usd: MicroUsd,
    /// Whether requests are refused when the balance cannot cover them.
    pub balance_enforced: bool,
}

/// A ledger entry as the API shows it.
#[derive(Debug, serde::Serialize)]
pub struct LedgerView {
    pub id: String,
    pub kind: &'static str,
    pub amount_usd: MicroUsd,
    pub amount_micros: i64,
    pub balance_after_usd: MicroUsd,
    pub note: Option<String>,
    pub actor: Option<String>,
    pub created_at: String,
}

impl From<&LedgerEntry> for LedgerView {
    fn from(e: &LedgerEntry) -> Self {
        Self {
            id: e.id.clone(),
            kind: e.kind.as_str(),
            amount_usd: e.amount,
            amount_micros: e.amount.0,
            balance_after_usd: e.balance_after,
            note: e.note.clone(),
            actor: e.actor.clone(),
            created_at: tollgate_core::time::to_rfc3339(e.created_at),
        }
    }
}

/// An admin's change to the balance.
#[derive(Debug, Default)]
pub struct Credit {
    /// `None`: the actor's organization (the first one for the operator).
    pub org_id: Option<String>,
    /// USD; positive adds money. Negative only for adjustments.
    pub amount_usd: f64,
    /// `topup` (default), `adjustment` or `refund`.
    pub kind: Option<String>,
    pub note: Option<String>,
}

const MAX_NOTE: usize = 500;
const DAY_MS: UnixMillis = 86_400_000;

impl Services {
    /// The organization whose money `actor` asks about, checked: owners and admins of it,
    /// or the operator.
    async fn billing_org(&self, actor: &Actor, org_id: Option<String>) -> Result<String> {
        let org = match org_id {
            Some(o) => o,
            None => self.org_of(actor).await?,
        };
        if !actor.manages_org(&org) {
            // Members see no billing; another organization does not exist for them.
            return Err(match actor.user_principal() {
                Some(u) if u.org_id == org => ServiceError::Forbidden("billing is for owners and admins"),
                _ => ServiceError::NotFound,
            });
        }
        Ok(org)
    }

    pub async fn billing_summary(
        &self,
        actor: &Actor,
        org_id: Option<String>,
        balance_enforced: bool,
    ) -> Result<BillingSummary> {
        let org = self.billing_org(actor, org_id).await?;
        let money = self.store.org_money(&org).await?;
        let since = tollgate_core::time::now_millis() - 30 * DAY_MS;
        let spend_30d = self.store.org_spend_since(&org, since).await?;
        Ok(BillingSummary {
            organization_id: org,
            balance_usd: money.balance(),
            balance_micros: money.balance().0,
            credit_usd: money.credit,
            spend_usd: money.spend,
            spend_30d_usd: spend_30d,
            balance_enforced,
        })
    }

    /// Adds a ledger entry that moves the balance, audited as `billing.credit`.
    pub async fn add_credit(&self, actor: &Actor, c: Credit) -> Result<LedgerView> {
        let org = self.billing_org(actor, c.org_id).await?;
        let kind = match c.kind.as_deref().unwrap_or("topup") {
            "topup" => LedgerKind::Topup,
            "adjustment" => LedgerKind::Adjustment,
            "refund" => LedgerKind::Refund,
            "usage" => return Err(ServiceError::invalid("kind", "usage debits are written by the gateway")),
            _ => return Err(ServiceError::invalid("kind", "must be topup, adjustment or refund")),
        };
        let magnitude = MicroUsd::from_usd(c.amount_usd.abs()).map_err(|m| ServiceError::invalid("amount_usd", m))?;
        if magnitude.0 == 0 {
            return Err(ServiceError::invalid("amount_usd", "must not be zero"));
        }
        let amount = if c.amount_usd < 0.0 {
            if kind != LedgerKind::Adjustment {
                return Err(ServiceError::invalid("amount_usd", "only an adjustment may be negative"));
            }
            MicroUsd(-magnitude.0)
        } else {
            magnitude
        };
        let note = c.note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if note.as_ref().is_some_and(|n| n.chars().count() > MAX_NOTE) {
            return Err(ServiceError::invalid("note", format!("at most {MAX_NOTE} characters")));
        }
        let audit = actor.audit(&org, "billing.credit", "organization", &org);
        let entry =
            self.store.add_ledger_entry(&org, kind, amount, note.as_deref(), Some(actor.id.as_str()), &audit).await?;
        Ok(LedgerView::from(&entry))
    }

    /// One page of the ledger, newest first.
    pub async fn list_ledger(
        &self,
        actor: &Actor,
        org_id: Option<String>,
        kind: Option<&str>,
        cursor: Option<String>,
        limit: Option<i64>,
    ) -> Result<Page<LedgerView>> {
        let org = self.billing_org(actor, org_id).await?;
        let kind = kind
            .map(|k| LedgerKind::parse(k).ok_or_else(|| ServiceError::invalid("kind", "unknown ledger entry kind")))
            .transpose()?;
        let limit = crate::page_limit(limit)?;
        let rows = self.store.list_ledger(&LedgerQuery { org_id: org, kind, before_id: cursor, limit }).await?;
        let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.clone())).flatten();
        Ok(Page { data: rows.iter().map(LedgerView::from).collect(), next_cursor })
    }
}
