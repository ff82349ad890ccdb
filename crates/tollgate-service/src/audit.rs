//! Reading the audit log: owners and admins see their organization's entries, the
//! operator sees all, members none. Entries are written by the store in the same
//! transaction as the change they describe.

use serde::Serialize;
use tollgate_core::audit::AuditEntry;
use tollgate_core::time::{parse_rfc3339, to_rfc3339};

use crate::principal::Actor;
use crate::{Page, Result, ServiceError, Services};

/// Audit filters as callers give them: times are RFC 3339; `cursor` is the previous
/// page's `next_cursor`.
#[derive(Debug, Clone, Default)]
pub struct ListAudit {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// One page of the audit log, newest first.
pub type AuditPage = Page<AuditEntryView>;

#[derive(Debug, Serialize)]
pub struct AuditEntryView {
    pub id: String,
    /// RFC 3339; the entry's own `at` (milliseconds) is not serialized.
    pub at: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

impl Services {
    /// One page of the audit log, newest first.
    pub async fn list_audit(&self, caller: &Actor, q: ListAudit) -> Result<AuditPage> {
        let ListAudit { actor: by, action, target, from, to, cursor, limit } = q;
        let org_id = match caller.user_principal() {
            None => None,
            Some(u) if u.role.manages_org() => Some(u.org_id.clone()),
            Some(_) => return Err(ServiceError::Forbidden("the audit log is for owners and admins")),
        };
        let limit = crate::page_limit(limit)?;
        let time = |field: &'static str, v: Option<&str>| {
            v.map(|t| parse_rfc3339(t).ok_or_else(|| ServiceError::invalid(field, "must be an RFC 3339 datetime")))
                .transpose()
        };
        let before_id = cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>().map_err(|_| ServiceError::invalid("cursor", "is not a cursor this server issued"))
            })
            .transpose()?;
        let q = tollgate_store::AuditQuery {
            actor: by,
            org_id,
            action,
            target_id: target,
            from: time("from", from.as_deref())?,
            to: time("to", to.as_deref())?,
            before_id,
            limit,
        };
        let rows = self.store.list_audit(&q).await?;
        let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.to_string())).flatten();
        let data = rows
            .into_iter()
            .map(|r| AuditEntryView { id: r.id.to_string(), at: to_rfc3339(r.entry.at), entry: r.entry })
            .collect();
        Ok(AuditPage { data, next_cursor })
    }
}
