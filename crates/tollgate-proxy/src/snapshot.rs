//! The data plane's view of the world: keys by digest, models with their channels and
//! prices, and the pre-rendered model list. Immutable once built; the server builds a new
//! one and swaps it in (`arc-swap`), so readers never wait and never see half an update.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use tollgate_core::key::{KeyDigest, KeyRecord, KeyStatus};
use tollgate_core::model::ModelType;
use tollgate_core::money::Pricing;
use tollgate_core::scope::{KeyScopes, ModelScope};
use tollgate_core::tenancy::Team;
use tollgate_core::time::UnixMillis;

use crate::accounts::{Account, AccountLimits, Accounts};

/// What the data plane needs to know about a key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: String,
    pub name: String,
    pub org_id: String,
    pub team_id: String,
    pub owner_id: String,
    /// The key's metadata as JSON text, echoed into its usage rows (`None` when empty).
    pub metadata: Option<Arc<str>>,
    pub status: KeyStatus,
    pub expires_at: Option<UnixMillis>,
    pub scopes: KeyScopes,
    /// An ephemeral token's own narrowing, checked in addition to `scopes`.
    pub narrowing: Option<Arc<KeyScopes>>,
    pub limits: AccountLimits,
    /// The channel group the key routes through (`None`: `default`).
    pub group: Option<String>,
    /// The key's counters, shared by every snapshot version (and its ephemeral tokens).
    pub account: Arc<Account>,
}

impl KeyEntry {
    pub fn allows_ip(&self, ip: std::net::IpAddr) -> bool {
        self.scopes.allows_ip(ip) && self.narrowing.as_ref().is_none_or(|n| n.allows_ip(ip))
    }

    pub fn ip_restricted(&self) -> bool {
        self.scopes.ip_restricted || self.narrowing.as_ref().is_some_and(|n| n.ip_restricted)
    }

    pub fn allows_endpoint(&self, e: tollgate_core::model::Endpoint) -> bool {
        self.scopes.allows_endpoint(e) && self.narrowing.as_ref().is_none_or(|n| n.allows_endpoint(e))
    }

    pub fn allows_model(&self, id: &str, model_type: ModelType) -> bool {
        self.scopes.allows_model(id, model_type)
            && self.narrowing.as_ref().is_none_or(|n| n.allows_model(id, model_type))
    }

    pub fn allows_provider(&self, provider: &str) -> bool {
        self.scopes.allows_provider(provider) && self.narrowing.as_ref().is_none_or(|n| n.allows_provider(provider))
    }

    /// Whether no model or provider restriction applies (the model list needs no filtering).
    pub fn sees_every_model(&self) -> bool {
        let open = |s: &KeyScopes| s.model_scope == ModelScope::All && s.providers.is_empty();
        open(&self.scopes) && self.narrowing.as_deref().is_none_or(open)
    }
}

impl KeyEntry {
    /// The entry of a stored key; its account comes from the registry and learns the
    /// stored counters.
    pub fn new(k: &KeyRecord, accounts: &Accounts) -> Self {
        let account = accounts.key(&k.id);
        account.merge_stored(k.spend.0, k.tokens_used);
        let s = &k.settings;
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            org_id: k.org_id.clone(),
            team_id: k.team_id.clone(),
            owner_id: k.owner_id.clone(),
            metadata: (!s.metadata.is_empty())
                .then(|| Arc::from(serde_json::Value::Object(s.metadata.clone()).to_string())),
            status: k.status,
            expires_at: k.expires_at,
            scopes: s.scopes(),
            narrowing: None,
            limits: AccountLimits {
                budget: s.budget_micros,
                token_quota: s.token_quota,
                rpm: s.rpm.and_then(|v| u64::try_from(v).ok()),
                tpm: s.tpm.and_then(|v| u64::try_from(v).ok()),
            },
            group: s.group.clone(),
            account,
        }
    }
}

/// What the data plane needs to know about a team.
#[derive(Debug)]
pub struct TeamEntry {
    /// The models the team may use (empty: all).
    pub allowed_models: BTreeSet<String>,
    pub limits: AccountLimits,
    pub account: Arc<Account>,
}

impl TeamEntry {
    fn new(t: &Team, accounts: &Accounts) -> Self {
        let s = &t.settings;
        Self {
            allowed_models: s.allowed_models.iter().cloned().collect(),
            limits: AccountLimits {
                budget: s.budget_micros,
                token_quota: s.token_quota,
                rpm: s.rpm.and_then(|v| u64::try_from(v).ok()),
                tpm: s.tpm.and_then(|v| u64::try_from(v).ok()),
            },
            account: accounts.team(&t.id),
        }
    }
}

/// An organization's money as the store last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgBalance {
    pub id: String,
    /// Sum of its non-usage ledger entries (micro-USD): the limit of its spend.
    pub credit: i64,
    /// Sum of its usage debits.
    pub spend: i64,
}

#[derive(Debug)]
pub struct OrgEntry {
    pub credit: i64,
    pub account: Arc<Account>,
}

/// A digest the data plane accepts: the key it belongs to and, for a secret rotated out
/// with a grace period, the moment it stops working.
#[derive(Debug, Clone)]
pub struct KeyAuth {
    pub key: Arc<KeyEntry>,
    pub valid_until: Option<UnixMillis>,
}

/// How a provider is reached.
#[derive(Debug)]
pub enum ProviderKind {
    /// Answers locally, deterministically; streams word by word with this pause.
    Demo { word_delay: std::time::Duration },
    /// Any OpenAI-compatible server (base URL such as `https://api.openai.com/v1`, to
    /// which endpoint paths are appended).
    OpenAi(crate::upstream::OpenAiUpstream),
    /// Google's Gemini API (`generateContent`), translated to and from OpenAI's format.
    Gemini(crate::providers::gemini::GeminiUpstream),
    /// Anthropic's Messages API, translated to and from OpenAI chat completions.
    Anthropic(crate::providers::anthropic::AnthropicUpstream),
    /// Azure OpenAI: OpenAI's wire format at `/openai/deployments/{deployment}/…`; the
    /// channel's upstream model is the deployment name.
    Azure(crate::providers::azure::AzureUpstream),
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
}

impl Provider {
    /// Every credential the provider is called with (its key, extra header values): what
    /// must never come back to a client or into a row in the provider's own text.
    pub(crate) fn secrets(&self) -> Vec<&[u8]> {
        match &self.kind {
            ProviderKind::Demo { .. } => Vec::new(),
            ProviderKind::OpenAi(t) => t.secrets(),
            ProviderKind::Gemini(t) => t.secrets(),
            ProviderKind::Anthropic(t) => t.secrets(),
            ProviderKind::Azure(t) => t.secrets(),
        }
    }
}

/// One way to serve a model: a provider and the model's name there.
#[derive(Debug, Clone)]
pub struct Channel {
    pub provider: Arc<Provider>,
    pub upstream_model: String,
    /// Higher first; equals share requests by `weight`.
    pub priority: i32,
    pub weight: u32,
    /// The key groups this channel serves (never empty; `default` for keys with no group).
    pub groups: Vec<String>,
    /// The channel's circuit breaker, shared by every snapshot version.
    pub health: Arc<crate::routing::ChannelHealth>,
}

impl Channel {
    /// Whether a key pinned to `group` (none: `default`) may use this channel.
    pub fn serves_group(&self, group: Option<&str>) -> bool {
        let group = group.unwrap_or("default");
        self.groups.iter().any(|g| g == group)
    }
}

impl crate::routing::Candidate for Channel {
    fn priority(&self) -> i32 {
        self.priority
    }

    fn weight(&self) -> u32 {
        self.weight
    }

    fn health(&self) -> &crate::routing::ChannelHealth {
        &self.health
    }
}

/// A public model.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub id: String,
    pub model_type: ModelType,
    /// What requests are billed at: the API's override if one is set, else `config_pricing`.
    pub pricing: Pricing,
    pub config_pricing: Pricing,
    /// The most output a request may produce when it sets no `max_tokens`: what its
    /// reservation assumes.
    pub max_output_tokens: u64,
    /// Never empty (the server validates it).
    pub channels: Vec<Channel>,
    pub created: i64,
}

impl ModelRoute {
    /// The OpenAI model object for `/v1/models`.
    pub fn to_json(&self) -> serde_json::Value {
        let owned_by = self.channels.first().map_or("tollgate", |c| c.provider.name.as_str());
        serde_json::json!({ "id": self.id, "object": "model", "created": self.created, "owned_by": owned_by })
    }

    /// Whether every channel is an Anthropic provider (`/v1/messages` then goes natively).
    pub fn anthropic_only(&self) -> bool {
        !self.channels.is_empty() && self.channels.iter().all(|c| matches!(c.provider.kind, ProviderKind::Anthropic(_)))
    }
}

/// Everything the data plane reads, as of one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub keys: HashMap<KeyDigest, KeyAuth>,
    /// The same keys by id (ephemeral tokens name their parent by id).
    pub keys_by_id: HashMap<String, Arc<KeyEntry>>,
    pub models: HashMap<String, Arc<ModelRoute>>,
    pub teams: HashMap<String, Arc<TeamEntry>>,
    pub orgs: HashMap<String, Arc<OrgEntry>>,
    /// `GET /v1/models`, rendered once per snapshot.
    pub model_list: Bytes,
    /// The counters' registry, handed from each snapshot to the next.
    pub accounts: Arc<Accounts>,
}

impl Snapshot {
    pub fn new(
        accounts: Arc<Accounts>,
        keys: &[KeyRecord],
        teams: &[Team],
        orgs: &[OrgBalance],
        models: Vec<ModelRoute>,
    ) -> Self {
        let mut map = HashMap::with_capacity(keys.len());
        insert_key_digests(&mut map, keys, &accounts);
        let keys = map;
        let (models, model_list) = model_maps(models);
        let teams = teams.iter().map(|t| (t.id.clone(), Arc::new(TeamEntry::new(t, &accounts)))).collect();
        let orgs = orgs.iter().map(|o| (o.id.clone(), org_entry(o, &accounts))).collect();
        let keys_by_id = by_id(&keys);
        Self { keys, keys_by_id, models, teams, orgs, model_list, accounts }
    }

    /// A copy with these keys inserted or replaced (by id: a key whose digest changed
    /// loses its old digest) and these key ids removed. Models are shared, not copied.
    pub fn with_key_changes(&self, upserts: &[KeyRecord], removed_ids: &[String]) -> Self {
        let mut keys = self.keys.clone();
        let gone: std::collections::HashSet<&str> =
            upserts.iter().map(|k| k.id.as_str()).chain(removed_ids.iter().map(String::as_str)).collect();
        keys.retain(|_, auth| !gone.contains(auth.key.id.as_str()));
        for id in removed_ids {
            self.accounts.forget_key(id);
        }
        insert_key_digests(&mut keys, upserts, &self.accounts);
        let keys_by_id = by_id(&keys);
        Self {
            keys,
            keys_by_id,
            models: self.models.clone(),
            teams: self.teams.clone(),
            orgs: self.orgs.clone(),
            model_list: self.model_list.clone(),
            accounts: self.accounts.clone(),
        }
    }

    /// A copy with these teams inserted or replaced and these team ids removed.
    pub fn with_team_changes(&self, upserts: &[Team], removed_ids: &[String]) -> Self {
        let mut teams = self.teams.clone();
        for id in removed_ids {
            teams.remove(id);
        }
        teams.extend(upserts.iter().map(|t| (t.id.clone(), Arc::new(TeamEntry::new(t, &self.accounts)))));
        Self {
            keys: self.keys.clone(),
            keys_by_id: self.keys_by_id.clone(),
            models: self.models.clone(),
            teams,
            orgs: self.orgs.clone(),
            model_list: self.model_list.clone(),
            accounts: self.accounts.clone(),
        }
    }

    /// A copy whose model prices are `overrides` (by model id) and the config's elsewhere.
    pub fn with_prices(&self, overrides: &[(String, Pricing)]) -> Self {
        let models = self
            .models
            .iter()
            .map(|(id, m)| {
                let pricing = overrides.iter().find(|(o, _)| o == id).map_or(m.config_pricing, |(_, p)| *p);
                let m =
                    if pricing == m.pricing { m.clone() } else { Arc::new(ModelRoute { pricing, ..(**m).clone() }) };
                (id.clone(), m)
            })
            .collect();
        Self {
            keys: self.keys.clone(),
            keys_by_id: self.keys_by_id.clone(),
            models,
            teams: self.teams.clone(),
            orgs: self.orgs.clone(),
            model_list: self.model_list.clone(),
            accounts: self.accounts.clone(),
        }
    }

    /// A copy whose models are `routes` (rebuilt after a routing change) priced with
    /// `overrides`; a model that was already served keeps its `created` time.
    pub fn with_models(&self, mut routes: Vec<ModelRoute>, overrides: &[(String, Pricing)]) -> Self {
        for r in &mut routes {
            if let Some(old) = self.models.get(&r.id) {
                r.created = old.created;
            }
        }
        let (models, model_list) = model_maps(routes);
        let rebuilt = Self {
            keys: self.keys.clone(),
            keys_by_id: self.keys_by_id.clone(),
            models,
            teams: self.teams.clone(),
            orgs: self.orgs.clone(),
            model_list,
            accounts: self.accounts.clone(),
        };
        rebuilt.with_prices(overrides)
    }

    /// A copy with these organizations' money replaced.
    pub fn with_org_changes(&self, upserts: &[OrgBalance]) -> Self {
        let mut orgs = self.orgs.clone();
        orgs.extend(upserts.iter().map(|o| (o.id.clone(), org_entry(o, &self.accounts))));
        Self {
            keys: self.keys.clone(),
            keys_by_id: self.keys_by_id.clone(),
            models: self.models.clone(),
            teams: self.teams.clone(),
            orgs,
            model_list: self.model_list.clone(),
            accounts: self.accounts.clone(),
        }
    }

    /// Whether the key's team lets it use `model_id` (a key can never exceed its team).
    pub fn team_allows(&self, key: &KeyEntry, model_id: &str) -> bool {
        self.teams.get(&key.team_id).is_none_or(|t| t.allowed_models.is_empty() || t.allowed_models.contains(model_id))
    }
}

/// The models by id and the rendered `GET /v1/models` list (sorted by id).
fn model_maps(models: Vec<ModelRoute>) -> (HashMap<String, Arc<ModelRoute>>, Bytes) {
    let mut models: Vec<Arc<ModelRoute>> = models.into_iter().map(Arc::new).collect();
    models.sort_by(|a, b| a.id.cmp(&b.id));
    let data: Vec<_> = models.iter().map(|m| m.to_json()).collect();
    let model_list = Bytes::from(serde_json::json!({ "object": "list", "data": data }).to_string());
    (models.into_iter().map(|m| (m.id.clone(), m)).collect(), model_list)
}

fn by_id(keys: &HashMap<KeyDigest, KeyAuth>) -> HashMap<String, Arc<KeyEntry>> {
    keys.values().filter(|a| a.valid_until.is_none()).map(|a| (a.key.id.clone(), a.key.clone())).collect()
}

fn org_entry(o: &OrgBalance, accounts: &Accounts) -> Arc<OrgEntry> {
    let account = accounts.org(&o.id);
    account.merge_stored(o.spend, 0);
    Arc::new(OrgEntry { credit: o.credit, account })
}

/// Maps each key's current digest, and its previous one while in grace.
fn insert_key_digests(map: &mut HashMap<KeyDigest, KeyAuth>, keys: &[KeyRecord], accounts: &Accounts) {
    for k in keys {
        let entry = Arc::new(KeyEntry::new(k, accounts));
        if let Some((old, until)) = k.previous_digest {
            map.insert(old, KeyAuth { key: entry.clone(), valid_until: Some(until) });
        }
        map.insert(k.digest, KeyAuth { key: entry, valid_until: None });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::MicroUsd;

    fn record(id: &str, byte: u8) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            name: id.into(),
            org_id: "org".into(),
            team_id: "team".into(),
            owner_id: "usr".into(),
            digest: KeyDigest([byte; 32]),
            preview: String::new(),
            status: KeyStatus::Active,
            created_at: 0,
            updated_at: 0,
            expires_at: None,
            last_used_at: None,
            request_count: 0,
            tokens_used: 0,
            spend: MicroUsd::ZERO,
            settings: Default::default(),
            previous_digest: None,
            rotation_key: None,
            secret_sealed: None,
        }
    }

    #[test]
    fn key_changes_replace_by_id() {
        let s = Snapshot::new(Default::default(), &[record("a", 1), record("b", 2)], &[], &[], vec![]);
        let mut a2 = record("a", 9);
        a2.status = KeyStatus::Inactive;
        let s2 = s.with_key_changes(&[a2.clone()], &["b".to_owned()]);
        assert_eq!(s2.keys.len(), 1);
        assert!(!s2.keys.contains_key(&KeyDigest([1; 32])), "old digest of a rotated key must go");
        assert_eq!(s2.keys[&KeyDigest([9; 32])].key.status, KeyStatus::Inactive);
        assert_eq!(s.keys.len(), 2, "the original snapshot is untouched");
        // Rotated with grace: both digests lead to the key, the old one with its deadline.
        a2.previous_digest = Some((KeyDigest([1; 32]), 5_000));
        let s3 = s2.with_key_changes(&[a2], &[]);
        assert_eq!(s3.keys[&KeyDigest([1; 32])].valid_until, Some(5_000));
        assert_eq!(s3.keys[&KeyDigest([9; 32])].valid_until, None);
    }
}
