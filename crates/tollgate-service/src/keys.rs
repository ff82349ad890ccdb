//! Key lifecycle. Creation mints the secret, keeps only its digest, and returns the
//! secret to the caller this once.

use serde::Serialize;
use tollgate_core::MicroUsd;
use tollgate_core::audit::AuditEntry;
use tollgate_core::ids::new_id;
use tollgate_core::key::{KeyRecord, KeySettings, KeyStatus, parse_expires_in};
use tollgate_core::scope::ModelScope;
use tollgate_core::time::{UnixMillis, now_millis, parse_rfc3339, to_rfc3339};
use tollgate_store::{KeyListQuery, KeySort};

use crate::principal::Actor;
use crate::settings::SettingsInput;
use crate::{Result, ServiceError, Services};

const MAX_NAME_CHARS: usize = 128;

/// A request to create a key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    /// A preset: `never`, `30d`, `60d`, `90d`, `180d`, `365d`.
    pub expires_in: Option<String>,
    /// An RFC 3339 datetime in the future.
    pub expires_at: Option<String>,
    /// Default: the actor's team (the organization's `default` team for the operator).
    pub team_id: Option<String>,
    /// Default: the actor (an owner of the organization for the operator). Only
    /// owners and admins may create a key for someone else; it is then theirs.
    pub owner_id: Option<String>,
    pub settings: SettingsInput,
}

/// A change to a key: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub team_id: Option<String>,
    pub owner_id: Option<String>,
    pub expires_in: Option<String>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<String>>,
    pub settings: SettingsInput,
}

/// The created (or rotated) key and its secret, which exists nowhere else.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: KeyView,
    pub secret: String,
}

/// A key as the API and CLI show it: never the secret.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub org_id: String,
    pub team_id: String,
    pub owner_id: String,
    pub preview: String,
    pub status: KeyStatus,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub request_count: i64,
    pub tokens_used: i64,
    pub spend_usd: MicroUsd,
    pub budget_usd: Option<MicroUsd>,
    pub budget_alert_thresholds: Vec<u8>,
    pub token_quota: Option<i64>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub model_scope: ModelScope,
    pub models: Vec<String>,
    pub allowed_endpoints: Vec<String>,
    pub allowed_providers: Vec<String>,
    pub ip_allowlist: Vec<String>,
    pub group: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub mcp: serde_json::Map<String, serde_json::Value>,
    /// While a rotated key's old secret still works: until when.
    pub previous_secret_expires_at: Option<String>,
}

impl KeyView {
    pub fn new(k: &KeyRecord, now: UnixMillis) -> Self {
        let s = &k.settings;
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            org_id: k.org_id.clone(),
            team_id: k.team_id.clone(),
            owner_id: k.owner_id.clone(),
            preview: k.preview.clone(),
            status: k.effective_status(now),
            created_at: to_rfc3339(k.created_at),
            updated_at: to_rfc3339(k.updated_at.max(k.created_at)),
            expires_at: k.expires_at.map(to_rfc3339),
            last_used_at: k.last_used_at.map(to_rfc3339),
            request_count: k.request_count,
            tokens_used: k.tokens_used,
            spend_usd: k.spend,
            budget_usd: s.budget_micros.map(MicroUsd),
            budget_alert_thresholds: s.budget_alert_thresholds.clone(),
            token_quota: s.token_quota,
            rpm: s.rpm,
            tpm: s.tpm,
            model_scope: s.model_scope,
            models: s.models.clone(),
            allowed_endpoints: s.allowed_endpoints.clone(),
            allowed_providers: s.allowed_providers.clone(),
            ip_allowlist: s.ip_allowlist.clone(),
            group: s.group.clone(),
            metadata: s.metadata.clone(),
            mcp: s.mcp.clone(),
            previous_secret_expires_at: k.previous_digest.filter(|(_, until)| *until > now).map(|(_, u)| to_rfc3339(u)),
        }
    }

    fn audit_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}

/// Listing parameters as callers give them.
#[derive(Debug, Clone, Default)]
pub struct ListKeys {
    /// `name` (default), `owner`, `status`, `requests` or `created`.
    pub sort: Option<String>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
    pub search: Option<String>,
    pub team_id: Option<String>,
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// One page of keys.
pub type KeyList = crate::Page<KeyView>;

/// The longest grace period a rotation may leave the old secret working.
pub const MAX_ROTATION_GRACE_SECS: u64 = 7 * 86_400;

impl Services {
    pub async fn create_key(&self, actor: &Actor, new: NewKey) -> Result<CreatedKey> {
        let name = validate_name(&new.name)?;
        let now = now_millis();
        let expires_at =
            expiry(new.expires_in.as_deref(), new.expires_at.as_ref().map(|s| Some(s.clone())), now)?.flatten();
        let settings = new.settings.apply(&KeySettings::default())?;
        let (org_id, team_id, owner_id) = self.placement(actor, new.team_id, new.owner_id).await?;
        self.check_within_team(&team_id, &settings).await?;
        let secret = self.key_format.generate();
        let record = KeyRecord {
            id: new_id("key"),
            name,
            org_id,
            team_id,
            owner_id,
            digest: self.digester.digest(&secret),
            preview: self.key_format.preview(&secret),
            status: KeyStatus::Active,
            created_at: now,
            updated_at: now,
            expires_at,
            last_used_at: None,
            request_count: 0,
            tokens_used: 0,
            spend: MicroUsd::ZERO,
            settings,
            previous_digest: None,
            rotation_key: None,
            secret_sealed: None,
        };
        let mut record = record;
        record.secret_sealed = self.seal(&record.id, &secret);
        let view = KeyView::new(&record, now);
        self.store.insert_key(&record, &audit(actor, "key.create", &record.id, None, Some(&view))).await?;
        tracing::info!(key_id = %record.id, actor = %actor.id, "key created");
        Ok(CreatedKey { key: view, secret })
    }

    pub async fn get_key(&self, actor: &Actor, id: &str) -> Result<KeyView> {
        Ok(KeyView::new(&self.visible_key(actor, id).await?, now_millis()))
    }

    /// The key if the actor may see it; `NotFound` otherwise (ids cannot be probed).
    pub(crate) async fn visible_key(&self, actor: &Actor, id: &str) -> Result<KeyRecord> {
        let key = self.store.get_key(id).await?;
        actor.check_sees_key(&key)?;
        Ok(key)
    }

    /// A key can never exceed what its team may do: none of its own limits may be larger
    /// than the team's. Refused with `Forbidden` (PRODUCT §9: limits above the caller's own).
    async fn check_within_team(&self, team_id: &str, s: &KeySettings) -> Result<()> {
        let team = self.store.get_team(team_id).await?.settings;
        let checks = [
            (s.budget_micros, team.budget_micros, "budget_usd may not exceed the team's budget"),
            (s.rpm, team.rpm, "rpm may not exceed the team's rpm"),
            (s.tpm, team.tpm, "tpm may not exceed the team's tpm"),
            (s.token_quota, team.token_quota, "token_quota may not exceed the team's token quota"),
        ];
        for (key, cap, why) in checks {
            if let (Some(k), Some(c)) = (key, cap)
                && k > c
            {
                return Err(ServiceError::Forbidden(why));
            }
        }
        Ok(())
    }

    /// Where a new key lives: the organization, team and owner, checked against the
    /// actor's role (see `principal`).
    async fn placement(
        &self,
        actor: &Actor,
        team_id: Option<String>,
        owner_id: Option<String>,
    ) -> Result<(String, String, String)> {
        let org_id = self.org_of(actor).await?;
        if let Some(u) = actor.user_principal().filter(|u| !u.role.manages_org()) {
            if owner_id.as_ref().is_some_and(|o| *o != u.user_id) {
                return Err(ServiceError::Forbidden("members may only own their own keys"));
            }
            let team = match team_id {
                Some(t) if u.team_ids.contains(&t) => t,
                Some(t) => {
                    let exists_here = self.store.get_team(&t).await.is_ok_and(|team| team.org_id == org_id);
                    return Err(if exists_here {
                        ServiceError::Forbidden("members may only use their own teams")
                    } else {
                        ServiceError::NotFound
                    });
                }
                None => u.team_ids.first().cloned().ok_or(ServiceError::Forbidden("you are not in any team"))?,
            };
            return Ok((org_id, team, u.user_id.clone()));
        }
        let team = match team_id {
            Some(t) => {
                if self.store.get_team(&t).await?.org_id != org_id {
                    return Err(ServiceError::NotFound);
                }
                t
            }
            None => {
                let teams = self.store.list_teams(Some(&org_id)).await?;
                let default = teams.iter().find(|t| t.name == "default").or(teams.first());
                default
                    .map(|t| t.id.clone())
                    .ok_or_else(|| ServiceError::invalid("team_id", "the organization has no team"))?
            }
        };
        let owner = match (owner_id, actor.user_principal()) {
            (Some(o), _) => {
                if self.store.role_of(&org_id, &o).await?.is_none() {
                    return Err(ServiceError::NotFound);
                }
                o
            }
            (None, Some(u)) => u.user_id.clone(),
            (None, None) => {
                let members = self.store.list_members(&org_id).await?;
                let owner = members.iter().find(|(_, r)| *r == tollgate_core::tenancy::Role::Owner);
                owner
                    .map(|(u, _)| u.id.clone())
                    .ok_or_else(|| ServiceError::invalid("owner_id", "the organization has no owner"))?
            }
        };
        Ok((org_id, team, owner))
    }

    pub async fn update_key(&self, actor: &Actor, id: &str, patch: KeyPatch) -> Result<KeyView> {
        let mut key = self.visible_key(actor, id).await?;
        refuse_if_revoked(&key)?;
        if patch.team_id.is_some() || patch.owner_id.is_some() {
            if !actor.manages_org(&key.org_id) {
                return Err(ServiceError::Forbidden("only owners and admins may move a key to another team or owner"));
            }
            let (_, team, owner) = self
                .placement(
                    actor,
                    patch.team_id.clone().or(Some(key.team_id.clone())),
                    patch.owner_id.clone().or(Some(key.owner_id.clone())),
                )
                .await?;
            key.team_id = team;
            key.owner_id = owner;
        }
        let now = now_millis();
        let before = KeyView::new(&key, now);
        if let Some(name) = &patch.name {
            key.name = validate_name(name)?;
        }
        if let Some(exp) = expiry(patch.expires_in.as_deref(), patch.expires_at, now)? {
            key.expires_at = exp;
        }
        key.settings = patch.settings.apply(&key.settings)?;
        self.check_within_team(&key.team_id, &key.settings).await?;
        key.updated_at = now;
        let after = KeyView::new(&key, now);
        self.store.update_key(&key, &audit(actor, "key.update", id, Some(&before), Some(&after))).await?;
        Ok(after)
    }

    /// `disable`: stops authenticating until enabled again.
    pub async fn disable_key(&self, actor: &Actor, id: &str) -> Result<KeyView> {
        self.set_status(actor, id, KeyStatus::Inactive, "key.disable").await
    }

    pub async fn enable_key(&self, actor: &Actor, id: &str) -> Result<KeyView> {
        self.set_status(actor, id, KeyStatus::Active, "key.enable").await
    }

    /// `revoke` is terminal: a revoked key can be deleted, never used again.
    pub async fn revoke_key(&self, actor: &Actor, id: &str) -> Result<KeyView> {
        self.set_status(actor, id, KeyStatus::Revoked, "key.revoke").await
    }

    async fn set_status(&self, actor: &Actor, id: &str, status: KeyStatus, action: &str) -> Result<KeyView> {
        let mut key = self.visible_key(actor, id).await?;
        refuse_if_revoked(&key)?;
        let now = now_millis();
        let before = KeyView::new(&key, now);
        key.status = status;
        if status == KeyStatus::Revoked {
            // A revoked key's rotated-out secret stops with it.
            key.previous_digest = None;
        }
        key.updated_at = now;
        let after = KeyView::new(&key, now);
        self.store.update_key(&key, &audit(actor, action, id, Some(&before), Some(&after))).await?;
        tracing::info!(key_id = %id, actor = %actor.id, action, "key status changed");
        Ok(after)
    }

    /// Deletes the key permanently.
    pub async fn delete_key(&self, actor: &Actor, id: &str) -> Result<()> {
        let key = self.visible_key(actor, id).await?;
        let now = now_millis();
        let before = KeyView::new(&key, now);
        self.store.delete_key(id, &audit(actor, "key.delete", id, Some(&before), None)).await?;
        tracing::info!(key_id = %id, actor = %actor.id, "key deleted");
        Ok(())
    }

    /// Issues a new secret for the same key. The old secret stops at once, or after
    /// `grace_secs`. With an idempotency key, a retry of the same rotation returns the
    /// same new secret (re-derived from a pepper-keyed seed, never stored) and does not
    /// rotate again; reusing the idempotency key after a later rotation is a conflict.
    pub async fn rotate_key(
        &self,
        actor: &Actor,
        id: &str,
        grace_secs: u64,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedKey> {
        if grace_secs > MAX_ROTATION_GRACE_SECS {
            return Err(ServiceError::invalid("grace_seconds", format!("must be at most {MAX_ROTATION_GRACE_SECS}")));
        }
        let mut key = self.visible_key(actor, id).await?;
        refuse_if_revoked(&key)?;
        let now = now_millis();
        let (secret, rotation_key) = match idempotency_key {
            Some(idem) => {
                if idem.is_empty() || idem.len() > 255 {
                    return Err(ServiceError::invalid("Idempotency-Key", "must be 1-255 characters"));
                }
                let tag = hex(&self.digester.keyed(&[b"rotate-idempotency", id.as_bytes(), idem.as_bytes()]));
                let secret =
                    self.key_format.derive(&self.digester.keyed(&[b"rotate-secret", id.as_bytes(), idem.as_bytes()]));
                if key.rotation_key.as_deref() == Some(tag.as_str()) {
                    if key.digest == self.digester.digest(&secret) {
                        return Ok(CreatedKey { key: KeyView::new(&key, now), secret });
                    }
                    return Err(ServiceError::Conflict);
                }
                (secret, Some(tag))
            }
            None => (self.key_format.generate(), None),
        };
        let before = KeyView::new(&key, now);
        let grace_ms = i64::try_from(grace_secs).unwrap_or(0) * 1000;
        key.previous_digest = (grace_secs > 0).then_some((key.digest, now + grace_ms));
        key.digest = self.digester.digest(&secret);
        key.preview = self.key_format.preview(&secret);
        key.rotation_key = rotation_key;
        key.secret_sealed = self.seal(id, &secret);
        key.updated_at = now;
        let after = KeyView::new(&key, now);
        self.store.update_key(&key, &audit(actor, "key.rotate", id, Some(&before), Some(&after))).await?;
        tracing::info!(key_id = %id, actor = %actor.id, grace_secs, "key rotated");
        Ok(CreatedKey { key: after, secret })
    }

    /// A new key with the same scopes and limits (and expiry, if still ahead).
    pub async fn duplicate_key(&self, actor: &Actor, id: &str, name: Option<String>) -> Result<CreatedKey> {
        let source = self.visible_key(actor, id).await?;
        let now = now_millis();
        let name = validate_name(&name.unwrap_or_else(|| format!("{} (copy)", source.name)))?;
        let secret = self.key_format.generate();
        let record = KeyRecord {
            id: new_id("key"),
            name,
            org_id: source.org_id.clone(),
            team_id: source.team_id.clone(),
            owner_id: source.owner_id.clone(),
            digest: self.digester.digest(&secret),
            preview: self.key_format.preview(&secret),
            status: KeyStatus::Active,
            created_at: now,
            updated_at: now,
            expires_at: source.expires_at.filter(|e| *e > now),
            last_used_at: None,
            request_count: 0,
            tokens_used: 0,
            spend: MicroUsd::ZERO,
            settings: source.settings.clone(),
            previous_digest: None,
            rotation_key: None,
            secret_sealed: None,
        };
        let mut record = record;
        record.secret_sealed = self.seal(&record.id, &secret);
        let view = KeyView::new(&record, now);
        let entry = audit(actor, "key.duplicate", &record.id, None, Some(&view))
            .with_before(Some(serde_json::json!({ "duplicated_from": id })));
        self.store.insert_key(&record, &entry).await?;
        Ok(CreatedKey { key: view, secret })
    }

    pub async fn list_keys(&self, actor: &Actor, q: ListKeys) -> Result<KeyList> {
        let limit = crate::page_limit(q.limit)?;
        let status = match q.status.as_deref() {
            None | Some("" | "all") => None,
            Some(s) => Some(KeyStatus::parse(s).ok_or_else(|| {
                ServiceError::invalid("status", "must be one of all, active, inactive, expired, revoked, exhausted")
            })?),
        };
        let sort = match q.sort.as_deref() {
            None | Some("name") => KeySort::Name,
            Some("owner") => KeySort::Owner,
            Some("status") => KeySort::Status,
            Some("requests") => KeySort::Requests,
            Some("created") => KeySort::Created,
            Some(_) => {
                return Err(ServiceError::invalid("sort", "must be one of name, owner, status, requests, created"));
            }
        };
        let descending = match q.order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(ServiceError::invalid("order", "must be asc or desc")),
        };
        let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
        // `expired` (the clock) and `exhausted` (the counters) are derived, not stored:
        // filter them after reading.
        let stored_status = match status {
            Some(KeyStatus::Expired | KeyStatus::Exhausted) => Some(KeyStatus::Active),
            s => s,
        };
        let (org_id, owner_id) = match actor.user_principal() {
            None => (None, None),
            Some(u) if u.role.manages_org() => (Some(u.org_id.clone()), None),
            Some(u) => (Some(u.org_id.clone()), Some(u.user_id.clone())),
        };
        let query = KeyListQuery {
            sort,
            descending,
            search: q.search.filter(|s| !s.is_empty()),
            status: stored_status,
            after,
            org_id,
            team_id: q.team_id,
            owner_id,
            limit,
        };
        let now = now_millis();
        let mut rows: Vec<KeyRecord> = Vec::new();
        let mut page = self.store.list_keys(&query).await?;
        // Derived statuses (`expired`) can thin a page out; read on until it is full or done.
        loop {
            let full_page = page.len() as i64 == limit;
            let last = page.last().map(|k| (sort.value_of(k), k.id.clone()));
            rows.extend(page.into_iter().filter(|k| status.is_none_or(|s| k.effective_status(now) == s)));
            if rows.len() as i64 >= limit || !full_page {
                break;
            }
            page = self.store.list_keys(&KeyListQuery { after: last, ..query.clone() }).await?;
        }
        rows.truncate(limit as usize);
        let next_cursor = if rows.len() as i64 == limit {
            rows.last().map(|k| encode_cursor(&sort.value_of(k), &k.id))
        } else {
            None
        };
        let data = rows.iter().map(|k| KeyView::new(k, now)).collect();
        Ok(KeyList { data, next_cursor })
    }
}

fn refuse_if_revoked(key: &KeyRecord) -> Result<()> {
    if key.status == KeyStatus::Revoked {
        return Err(ServiceError::invalid("status", "the key is revoked; revocation is permanent"));
    }
    Ok(())
}

/// Resolves expiry input: `None` = unchanged, `Some(None)` = never, `Some(Some(t))`.
fn expiry(
    expires_in: Option<&str>,
    expires_at: Option<Option<String>>,
    now: UnixMillis,
) -> Result<Option<Option<UnixMillis>>> {
    match (expires_in, expires_at) {
        (Some(_), Some(_)) => {
            Err(ServiceError::invalid("expires_at", "give either expires_in or expires_at, not both"))
        }
        (Some(preset), None) => {
            Ok(Some(parse_expires_in(preset).map_err(|m| ServiceError::invalid("expires_in", m))?.map(|d| now + d)))
        }
        (None, Some(None)) => Ok(Some(None)),
        (None, Some(Some(at))) => {
            let at = parse_rfc3339(&at)
                .ok_or_else(|| ServiceError::invalid("expires_at", "must be an RFC 3339 datetime"))?;
            if at <= now {
                return Err(ServiceError::invalid("expires_at", "must be in the future"));
            }
            Ok(Some(Some(at)))
        }
        (None, None) => Ok(None),
    }
}

/// The audit entry of a key action, with the key's state before and after.
fn audit(actor: &Actor, action: &str, id: &str, before: Option<&KeyView>, after: Option<&KeyView>) -> AuditEntry {
    let org_id = before.or(after).map_or("", |k| k.org_id.as_str());
    actor
        .audit(org_id, action, "key", id)
        .with_before(before.and_then(KeyView::audit_json))
        .with_after(after.and_then(KeyView::audit_json))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ServiceError::invalid("name", "is required"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ServiceError::invalid("name", format!("must be at most {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::invalid("name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Cursors are opaque to callers: hex of `name \0 id`.
fn encode_cursor(name: &str, id: &str) -> String {
    format!("{name}\0{id}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(c: &str) -> Result<(String, String)> {
    let bad = || ServiceError::invalid("cursor", "is not a cursor this server issued");
    if !c.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..c.len())
        .step_by(2)
        .map(|i| c.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
        .collect::<Result<_>>()?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (name, id) = s.split_once('\0').ok_or_else(bad)?;
    Ok((name.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ListAudit;
    use tollgate_core::key::Digester;
    use tollgate_store::Store;

    async fn services() -> (Services, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&Store::sqlite_url(&dir.path().join("s.db"))).await.unwrap();
        store.migrate().await.unwrap();
        let s = Services::new(store, Default::default(), Digester::new(b"pepper"));
        s.bootstrap("owner@example.com", Some("correct horse battery")).await.unwrap();
        (s, dir)
    }

    fn named(name: &str) -> NewKey {
        NewKey { name: name.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn create_keeps_only_the_digest_and_audits() {
        let (s, _dir) = services().await;
        let created = s
            .create_key(
                &Actor::cli(),
                NewKey { name: " dev ".into(), expires_in: Some("30d".into()), ..Default::default() },
            )
            .await
            .unwrap();
        assert_eq!(created.key.name, "dev");
        assert!(s.key_format.is_well_formed(&created.secret));
        let stored = s.store.get_key(&created.key.id).await.unwrap();
        assert_eq!(stored.digest, s.digester.digest(&created.secret));
        assert!(stored.expires_at.unwrap() > stored.created_at + 29 * 86_400_000);
        let audit = s.list_audit(&Actor::cli(), ListAudit::default()).await.unwrap();
        assert_eq!(audit.data.len(), 1);
        assert_eq!((audit.data[0].entry.action.as_str(), audit.data[0].entry.actor.as_str()), ("key.create", "cli"));
        assert!(!serde_json::to_string(&audit.data).unwrap().contains(&created.secret));
    }

    #[tokio::test]
    async fn bad_input_names_the_field() {
        let (s, _dir) = services().await;
        let a = Actor::cli();
        let field = |r: Result<CreatedKey>| match r {
            Err(ServiceError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(field(s.create_key(&a, named("  ")).await), "name");
        assert_eq!(field(s.create_key(&a, NewKey { expires_in: Some("7d".into()), ..named("a") }).await), "expires_in");
        let past = NewKey { expires_at: Some("2001-01-01T00:00:00Z".into()), ..named("a") };
        assert_eq!(field(s.create_key(&a, past).await), "expires_at");
        assert!(matches!(
            s.list_keys(&Actor::cli(), ListKeys { limit: Some(0), ..Default::default() }).await,
            Err(ServiceError::Invalid { field: "limit", .. })
        ));
        assert!(matches!(
            s.list_keys(&Actor::cli(), ListKeys { cursor: Some("zz".into()), ..Default::default() }).await,
            Err(ServiceError::Invalid { field: "cursor", .. })
        ));
    }

    #[tokio::test]
    async fn list_pages_with_cursors() {
        let (s, _dir) = services().await;
        for name in ["c", "a", "b"] {
            s.create_key(&Actor::cli(), named(name)).await.unwrap();
            // Distinct creation times, so that the `created` order below is not a tie.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let p1 = s.list_keys(&Actor::cli(), ListKeys { limit: Some(2), ..Default::default() }).await.unwrap();
        assert_eq!(p1.data.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let p2 = s
            .list_keys(&Actor::cli(), ListKeys { limit: Some(2), cursor: p1.next_cursor, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(p2.data.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["c"]);
        assert_eq!(p2.next_cursor, None);

        // Newest first, two per page, across the cursor.
        let newest = |cursor| ListKeys {
            sort: Some("created".into()),
            order: Some("desc".into()),
            limit: Some(2),
            cursor,
            ..Default::default()
        };
        let d1 = s.list_keys(&Actor::cli(), newest(None)).await.unwrap();
        let d2 = s.list_keys(&Actor::cli(), newest(d1.next_cursor.clone())).await.unwrap();
        let order: Vec<&str> = d1.data.iter().chain(&d2.data).map(|k| k.name.as_str()).collect();
        assert_eq!(order, ["b", "a", "c"]);
        let bad = ListKeys { sort: Some("colour".into()), ..Default::default() };
        assert!(matches!(s.list_keys(&Actor::cli(), bad).await, Err(ServiceError::Invalid { field: "sort", .. })));
    }

    #[tokio::test]
    async fn rotation_with_an_idempotency_key_happens_once() {
        let (s, _dir) = services().await;
        let a = Actor::cli();
        let k = s.create_key(&a, named("svc")).await.unwrap();
        let r1 = s.rotate_key(&a, &k.key.id, 3600, Some("req-1")).await.unwrap();
        let r2 = s.rotate_key(&a, &k.key.id, 3600, Some("req-1")).await.unwrap();
        assert_eq!(r1.secret, r2.secret, "a retry returns the same new secret");
        assert_ne!(r1.secret, k.secret);
        let stored = s.store.get_key(&k.key.id).await.unwrap();
        assert_eq!(stored.digest, s.digester.digest(&r1.secret));
        assert_eq!(stored.previous_digest.map(|p| p.0), Some(s.digester.digest(&k.secret)), "old secret in grace");
        let rotations = s
            .list_audit(&Actor::cli(), ListAudit { action: Some("key.rotate".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(rotations.data.len(), 1, "the retry did not rotate again");

        let r3 = s.rotate_key(&a, &k.key.id, 0, None).await.unwrap();
        assert_ne!(r3.secret, r1.secret);
        assert_eq!(
            s.store.get_key(&k.key.id).await.unwrap().previous_digest,
            None,
            "no grace: the old secret stops at once"
        );
        assert!(
            s.rotate_key(&a, &k.key.id, 0, Some("req-1")).await.is_ok(),
            "a fresh use after another rotation rotates"
        );
        assert!(matches!(
            s.rotate_key(&a, &k.key.id, MAX_ROTATION_GRACE_SECS + 1, None).await,
            Err(ServiceError::Invalid { field: "grace_seconds", .. })
        ));
    }

    #[tokio::test]
    async fn a_reused_idempotency_key_after_a_later_rotation_conflicts() {
        let (s, _dir) = services().await;
        let a = Actor::cli();
        let k = s.create_key(&a, named("svc")).await.unwrap();
        s.rotate_key(&a, &k.key.id, 0, Some("x")).await.unwrap();
        // Another rotation by a different request, which records its own key.
        s.rotate_key(&a, &k.key.id, 0, Some("y")).await.unwrap();
        s.rotate_key(&a, &k.key.id, 0, Some("y")).await.unwrap();
        let mut key = s.store.get_key(&k.key.id).await.unwrap();
        // Simulate: the stored tag is "y"'s; a retry of "y" after an unrelated secret change conflicts.
        key.digest = s.digester.digest("something-else");
        s.store.update_key(&key, &audit(&a, "test", &k.key.id, None, None)).await.unwrap();
        assert!(matches!(s.rotate_key(&a, &k.key.id, 0, Some("y")).await, Err(ServiceError::Conflict)));
    }

    #[tokio::test]
    async fn revocation_is_terminal_and_delete_is_permanent() {
        let (s, _dir) = services().await;
        let a = Actor::cli();
        let k = s.create_key(&a, named("svc")).await.unwrap();
        assert_eq!(s.disable_key(&a, &k.key.id).await.unwrap().status, KeyStatus::Inactive);
        assert_eq!(s.enable_key(&a, &k.key.id).await.unwrap().status, KeyStatus::Active);
        assert_eq!(s.revoke_key(&a, &k.key.id).await.unwrap().status, KeyStatus::Revoked);
        for r in [s.enable_key(&a, &k.key.id).await.map(|_| ()), s.rotate_key(&a, &k.key.id, 0, None).await.map(|_| ())]
        {
            assert!(matches!(r, Err(ServiceError::Invalid { field: "status", .. })));
        }
        s.delete_key(&a, &k.key.id).await.unwrap();
        assert!(matches!(s.get_key(&Actor::cli(), &k.key.id).await, Err(ServiceError::NotFound)));
        let actions: Vec<String> = s
            .list_audit(&Actor::cli(), ListAudit { target: Some(k.key.id.clone()), ..Default::default() })
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|e| e.entry.action)
            .collect();
        assert_eq!(actions, ["key.delete", "key.revoke", "key.enable", "key.disable", "key.create"]);
    }

    #[tokio::test]
    async fn duplicate_copies_scopes_and_patch_changes_only_what_is_given() {
        let (s, _dir) = services().await;
        let a = Actor::cli();
        let settings =
            SettingsInput { rpm: Some(Some(60)), models: Some(Some(vec!["m".into()])), ..Default::default() };
        let k = s.create_key(&a, NewKey { settings, ..named("svc") }).await.unwrap();
        let d = s.duplicate_key(&a, &k.key.id, None).await.unwrap();
        assert_eq!(
            (d.key.name.as_str(), d.key.rpm, d.key.models.clone()),
            ("svc (copy)", Some(60), vec!["m".to_owned()])
        );
        assert_ne!(d.key.id, k.key.id);
        let patch = KeyPatch {
            name: Some("svc2".into()),
            settings: SettingsInput { rpm: Some(None), ..Default::default() },
            ..Default::default()
        };
        let v = s.update_key(&a, &k.key.id, patch).await.unwrap();
        assert_eq!((v.name.as_str(), v.rpm, v.models.clone()), ("svc2", None, vec!["m".to_owned()]));
    }
}
