//! Tollgate's data plane: everything a `/v1/*` request touches, from the key in its header
//! to the usage event it leaves behind.
//!
//! Invariants: nothing here awaits SQL (this crate does not depend on a SQL driver); the
//! only shared state is the [`Snapshot`] (read wait-free through `arc-swap`) and the
//! [`UsageSink`] (a bounded channel that never blocks); no task is spawned per request.
//! Every request emits exactly one [`UsageEvent`], appended to the usage [`journal`]
//! before the response's last byte is released — except refusals of unknown keys past
//! their address's first in a minute: those are counted ([`auth_failures`]) and in the
//! metrics, without a row.
//!
//! [`UsageEvent`]: tollgate_core::usage::UsageEvent

mod accounts;
mod admission;
mod auth;
pub mod auth_failures;
mod demo;
mod estimate;
mod handler;
pub mod journal;
mod messages;
mod meter;
pub mod metrics;
mod providers;
mod redact;
mod request;
pub mod routing;
pub mod shared_limits;
mod snapshot;
mod sse;
mod upstream;
mod usage_sink;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::{get, post};
use tollgate_core::key::{Digester, KeyFormat};

pub use accounts::{Account, AccountLimits, AccountTotals, Accounts};
pub use admission::{Policy, SettlementSender, Shared, SharedHealth, SharedSettlement};
pub use providers::anthropic::AnthropicUpstream;
pub use providers::azure::AzureUpstream;
pub use providers::gemini::GeminiUpstream;
pub use snapshot::{
    Channel, KeyAuth, KeyEntry, ModelRoute, OrgBalance, OrgEntry, Provider, ProviderKind, Snapshot, TeamEntry,
};
pub use upstream::{ExtraHeaders, OpenAiUpstream, UpstreamClient};
pub use usage_sink::{Queued, UsageReceiver, UsageSink, usage_channel, usage_channel_with_metrics};

/// The id of the request being served, set by the server's outermost layer: the
/// gateway's own, unique per usage row.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The caller's own `x-request-id`, when it sent a sane one: kept on the usage row beside
/// the gateway's id (a client may send the same id many times).
#[derive(Debug, Clone)]
pub struct ClientRequestId(pub Arc<str>);

pub use tollgate_core::PeerAddr;

/// Limits that shape every request.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Time allowed from sending the request to receiving the upstream's response head.
    pub first_byte_timeout: Duration,
    /// The longest silence of an upstream mid-response (between two chunks of a stream)
    /// before the response is ended as interrupted. Never a limit on the total time.
    pub stream_idle_timeout: Duration,
    /// All attempts of one request (failover across channels) end by this time.
    pub failover_deadline: Duration,
    /// Backoff before the second attempt (doubling, with full jitter, up to 2 s).
    pub retry_base: Duration,
    pub breaker: routing::BreakerPolicy,
}

/// What the `/v1` handlers share. Built once by the server; the snapshot inside is
/// replaced as the change feed delivers updates.
pub struct DataPlane {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub key_format: KeyFormat,
    /// `{key prefix}eph_`: where ephemeral tokens begin.
    pub ephemeral_prefix: String,
    pub digester: Digester,
    pub client: UpstreamClient,
    pub usage: UsageSink,
    pub limits: Limits,
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front of Tollgate).
    pub trusted_proxies: Vec<tollgate_core::scope::IpNet>,
    /// How budgets, balances and rate limits are applied.
    pub policy: Policy,
    /// Limits shared with other instances (Redis), when configured.
    pub shared: Option<Shared>,
    /// Cancelled when the shutdown grace period ends: streams still running end with an
    /// error event and are billed `shutdown_cut`.
    pub shutdown_cut: tokio_util::sync::CancellationToken,
    /// Refusals of unknown keys, counted per address and minute (and throttled).
    pub auth_failures: Arc<auth_failures::AuthFailures>,
}

/// The `/v1` route table.
pub fn router(data_plane: Arc<DataPlane>) -> Router {
    use tollgate_core::model::Endpoint as E;
    Router::new()
        .route("/v1/chat/completions", post(|s, r| handler::proxy(s, E::ChatCompletions, r)))
        .route("/v1/completions", post(|s, r| handler::proxy(s, E::Completions, r)))
        .route("/v1/embeddings", post(|s, r| handler::proxy(s, E::Embeddings, r)))
        .route("/v1/images/generations", post(|s, r| handler::proxy(s, E::ImagesGenerations, r)))
        .route("/v1/responses", post(|s, r| handler::proxy(s, E::Responses, r)))
        .route("/v1/messages", post(|s, r| handler::proxy(s, E::Messages, r)))
        .route("/v1/messages/count_tokens", post(messages::count_tokens::count_tokens))
        .route("/v1/models", get(handler::list_models))
        .route("/v1/models/{*id}", get(handler::get_model))
        .route("/v1/{*rest}", axum::routing::any(handler::not_found))
        .method_not_allowed_fallback(handler::method_not_allowed)
        .with_state(data_plane)
}
