//! Validation of the creatable/editable key fields into [`KeySettings`]. Each error names
//! its field. Input uses `Option<Option<T>>` for patches: `None` keeps the current value,
//! `Some(None)` clears it, `Some(Some(v))` sets it.

use tollgate_core::key::KeySettings;
use tollgate_core::money::MicroUsd;
use tollgate_core::scope::{IpNet, ModelScope, parse_endpoint};

use crate::{Result, ServiceError};

const MAX_LIST: usize = 256;
const MAX_ITEM: usize = 256;
const MAX_JSON_BYTES: usize = 16 * 1024;
const MCP_MODES: &[&str] = &["allow_all", "deny_all", "allow_list", "deny_list"];
const MCP_FIELDS: &[&str] = &["enabled", "mode", "servers", "tools"];

/// Scope and limit fields as callers give them (API body, CLI flags).
#[derive(Debug, Clone, Default)]
pub struct SettingsInput {
    pub budget_usd: Option<Option<f64>>,
    pub budget_alert_thresholds: Option<Option<Vec<i64>>>,
    pub token_quota: Option<Option<i64>>,
    pub rpm: Option<Option<i64>>,
    pub tpm: Option<Option<i64>>,
    pub model_scope: Option<Option<String>>,
    pub models: Option<Option<Vec<String>>>,
    pub allowed_endpoints: Option<Option<Vec<String>>>,
    pub allowed_providers: Option<Option<Vec<String>>>,
    pub ip_allowlist: Option<Option<Vec<String>>>,
    pub group: Option<Option<String>>,
    pub metadata: Option<Option<serde_json::Value>>,
    pub mcp: Option<Option<serde_json::Value>>,
}

impl SettingsInput {
    /// Applies the input on top of `current` and validates the result as a whole.
    pub fn apply(self, current: &KeySettings) -> Result<KeySettings> {
        let mut s = current.clone();
        if let Some(v) = self.budget_usd {
            s.budget_micros = v
                .map(|usd| MicroUsd::from_usd(usd).map(|m| m.0).map_err(|m| ServiceError::invalid("budget_usd", m)))
                .transpose()?;
        }
        if let Some(v) = self.budget_alert_thresholds {
            let mut t = Vec::new();
            for p in v.unwrap_or_default() {
                let p = u8::try_from(p).ok().filter(|p| (1..=100).contains(p)).ok_or_else(|| {
                    ServiceError::invalid("budget_alert_thresholds", "each threshold is a percentage from 1 to 100")
                })?;
                t.push(p);
            }
            t.sort_unstable();
            t.dedup();
            s.budget_alert_thresholds = t;
        }
        for (field, input, slot) in [
            ("token_quota", self.token_quota, &mut s.token_quota),
            ("rpm", self.rpm, &mut s.rpm),
            ("tpm", self.tpm, &mut s.tpm),
        ] {
            if let Some(v) = input {
                if v.is_some_and(|n| n < 1) {
                    return Err(ServiceError::invalid(field, "must be at least 1, or null for no limit"));
                }
                *slot = v;
            }
        }
        if let Some(v) = self.model_scope {
            s.model_scope = match v.as_deref() {
                None => ModelScope::All,
                Some(m) => ModelScope::parse(m)
                    .ok_or_else(|| ServiceError::invalid("model_scope", "must be one of all, chat, list"))?,
            };
        }
        if let Some(v) = self.models {
            s.models = names("models", v.unwrap_or_default())?;
        }
        if let Some(v) = self.allowed_endpoints {
            let mut out = Vec::new();
            for e in v.unwrap_or_default() {
                let path = parse_endpoint(&e).map_err(|m| ServiceError::invalid("allowed_endpoints", m))?.path();
                if !out.iter().any(|p: &String| p == path) {
                    out.push(path.to_owned());
                }
            }
            s.allowed_endpoints = out;
        }
        if let Some(v) = self.allowed_providers {
            s.allowed_providers = names("allowed_providers", v.unwrap_or_default())?;
        }
        if let Some(v) = self.ip_allowlist {
            let mut out = Vec::new();
            for ip in v.unwrap_or_default() {
                let net = IpNet::parse(&ip).map_err(|m| ServiceError::invalid("ip_allowlist", m))?.to_string();
                if !out.contains(&net) {
                    out.push(net);
                }
            }
            s.ip_allowlist = out;
        }
        if let Some(v) = self.group {
            s.group = match v.map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()) {
                Some(g) if g.len() > 64 => return Err(ServiceError::invalid("group", "must be at most 64 characters")),
                g => g,
            };
        }
        if let Some(v) = self.metadata {
            s.metadata = json_object("metadata", v)?;
        }
        if let Some(v) = self.mcp {
            s.mcp = json_object("mcp", v)?;
            validate_mcp(&s.mcp)?;
        }
        // A list scope needs its list; a list given alone implies the list scope.
        if s.model_scope != ModelScope::List && !s.models.is_empty() {
            s.model_scope = ModelScope::List;
        }
        if s.model_scope == ModelScope::List && s.models.is_empty() {
            return Err(ServiceError::invalid("models", "model_scope \"list\" needs at least one model id"));
        }
        if s.model_scope != ModelScope::List {
            s.models.clear();
        }
        Ok(s)
    }
}

fn names(field: &'static str, v: Vec<String>) -> Result<Vec<String>> {
    if v.len() > MAX_LIST {
        return Err(ServiceError::invalid(field, format!("at most {MAX_LIST} entries")));
    }
    let mut out: Vec<String> = Vec::new();
    for n in v {
        let n = n.trim().to_owned();
        if n.is_empty() || n.len() > MAX_ITEM || n.chars().any(char::is_control) {
            return Err(ServiceError::invalid(field, format!("entries are 1-{MAX_ITEM} printable characters")));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn json_object(
    field: &'static str,
    v: Option<serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    match v {
        None => Ok(serde_json::Map::new()),
        Some(serde_json::Value::Object(m)) => {
            if serde_json::to_string(&m).map_or(usize::MAX, |t| t.len()) > MAX_JSON_BYTES {
                return Err(ServiceError::invalid(field, format!("must be at most {MAX_JSON_BYTES} bytes of JSON")));
            }
            Ok(m)
        }
        Some(_) => Err(ServiceError::invalid(field, "must be a JSON object")),
    }
}

fn validate_mcp(m: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let bad = |msg: &str| Err(ServiceError::invalid("mcp", msg.to_owned()));
    if let Some(k) = m.keys().find(|k| !MCP_FIELDS.contains(&k.as_str())) {
        return Err(ServiceError::invalid("mcp", format!("unknown field {k:?} (known: {})", MCP_FIELDS.join(", "))));
    }
    if m.get("enabled").is_some_and(|v| !v.is_boolean()) {
        return bad("enabled must be true or false");
    }
    if m.get("mode").is_some_and(|v| !v.as_str().is_some_and(|s| MCP_MODES.contains(&s))) {
        return bad("mode must be one of allow_all, deny_all, allow_list, deny_list");
    }
    if m.get("servers").is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(serde_json::Value::is_string))) {
        return bad("servers must be a list of server names");
    }
    let tools_ok = |v: &serde_json::Value| {
        v.as_object().is_some_and(|o| {
            o.values().all(|t| t.as_array().is_some_and(|a| a.iter().all(serde_json::Value::is_string)))
        })
    };
    if m.get("tools").is_some_and(|v| !tools_ok(v)) {
        return bad("tools must map server names to lists of tool names");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<KeySettings>) -> &'static str {
        match r {
            Err(ServiceError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn normalises_and_validates() {
        let s = SettingsInput {
            budget_usd: Some(Some(12.5)),
            budget_alert_thresholds: Some(Some(vec![100, 50, 80, 50])),
            models: Some(Some(vec!["gpt-4o".into(), " gpt-4o ".into()])),
            allowed_endpoints: Some(Some(vec!["embeddings".into(), "/v1/embeddings".into()])),
            ip_allowlist: Some(Some(vec!["10.0.0.1".into(), "192.168.1.0/24".into()])),
            ..Default::default()
        }
        .apply(&KeySettings::default())
        .unwrap();
        assert_eq!(s.budget_micros, Some(12_500_000));
        assert_eq!(s.budget_alert_thresholds, [50, 80, 100]);
        assert_eq!((s.model_scope, s.models.as_slice()), (ModelScope::List, ["gpt-4o".to_owned()].as_slice()));
        assert_eq!(s.allowed_endpoints, ["/v1/embeddings"]);
        assert_eq!(s.ip_allowlist, ["10.0.0.1/32", "192.168.1.0/24"]);
    }

    #[test]
    fn patches_keep_clear_or_set() {
        let base = SettingsInput { rpm: Some(Some(60)), tpm: Some(Some(1000)), ..Default::default() }
            .apply(&KeySettings::default())
            .unwrap();
        let next = SettingsInput { rpm: Some(None), ..Default::default() }.apply(&base).unwrap();
        assert_eq!((next.rpm, next.tpm), (None, Some(1000)));
    }

    #[test]
    fn errors_name_the_field() {
        let d = KeySettings::default();
        assert_eq!(field(SettingsInput { budget_usd: Some(Some(-1.0)), ..Default::default() }.apply(&d)), "budget_usd");
        assert_eq!(field(SettingsInput { rpm: Some(Some(0)), ..Default::default() }.apply(&d)), "rpm");
        assert_eq!(
            field(SettingsInput { model_scope: Some(Some("list".into())), ..Default::default() }.apply(&d)),
            "models"
        );
        assert_eq!(
            field(SettingsInput { model_scope: Some(Some("some".into())), ..Default::default() }.apply(&d)),
            "model_scope"
        );
        assert_eq!(
            field(
                SettingsInput { allowed_endpoints: Some(Some(vec!["/v1/files".into()])), ..Default::default() }
                    .apply(&d)
            ),
            "allowed_endpoints"
        );
        assert_eq!(
            field(
                SettingsInput { ip_allowlist: Some(Some(vec!["10.0.0.0/40".into()])), ..Default::default() }.apply(&d)
            ),
            "ip_allowlist"
        );
        assert_eq!(
            field(SettingsInput { metadata: Some(Some(serde_json::json!([1]))), ..Default::default() }.apply(&d)),
            "metadata"
        );
        assert_eq!(
            field(
                SettingsInput { mcp: Some(Some(serde_json::json!({"mode": "sometimes"}))), ..Default::default() }
                    .apply(&d)
            ),
            "mcp"
        );
        assert_eq!(
            field(SettingsInput { budget_alert_thresholds: Some(Some(vec![0])), ..Default::default() }.apply(&d)),
            "budget_alert_thresholds"
        );
    }
}
