//! An audit entry: who did what to which object, from where, with the object's state
//! before and after. Entries never carry secrets (the service layer builds `before` and
//! `after` from views that have none).

use crate::time::UnixMillis;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    /// Not serialized: views render it in their own format (RFC 3339 for the API).
    #[serde(skip)]
    pub at: UnixMillis,
    /// `admin-token`, a user id, or `cli`.
    pub actor: String,
    /// E.g. `key.create`, `key.rotate`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub source_ip: Option<String>,
    /// The organization the target belongs to (scopes who may read the entry).
    pub org_id: Option<String>,
}

impl AuditEntry {
    pub fn with_before(mut self, before: Option<serde_json::Value>) -> Self {
        self.before = before;
        self
    }

    pub fn with_after(mut self, after: Option<serde_json::Value>) -> Self {
        self.after = after;
        self
    }

    /// For a change to the whole gateway (a model's price): no organization's own log
    /// shows it; the operator's does.
    pub fn gateway_wide(mut self) -> Self {
        self.org_id = None;
        self
    }
}
