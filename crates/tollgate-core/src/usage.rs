//! The usage event: one per `/v1` request, emitted by the data plane, written in batches
//! by the control plane. It never carries a secret.

use crate::MicroUsd;
use crate::time::UnixMillis;

/// Why a row is billed the way it is (the billing policy in the README names each case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingReason {
    /// The provider reported usage; billed exactly.
    Completed,
    /// Completed, but the provider sent no usage block: tokens estimated from the text.
    Estimated,
    /// The client went away mid-response: what was delivered is billed (estimated
    /// unless the provider had already reported usage).
    ClientDisconnected,
    /// The upstream failed mid-stream: what was delivered is billed.
    UpstreamInterrupted,
    /// Rejected by the gateway or failed upstream before any output: nothing billed.
    NotBilled,
    /// Still streaming when the shutdown grace period ended: cut by the gateway, the
    /// client told so in an error event; what was delivered is billed.
    ShutdownCut,
}

impl BillingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Estimated => "estimated",
            Self::ClientDisconnected => "client_disconnected",
            Self::UpstreamInterrupted => "upstream_interrupted",
            Self::NotBilled => "not_billed",
            Self::ShutdownCut => "shutdown_cut",
        }
    }
}

/// One request's usage row. Serializes with `cost` in integer micro-USD (the spill
/// file's format), not as a USD number.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageEvent {
    /// Unique per event (the request id may come from the client): writing an event twice,
    /// as a replayed spill file could, stores it once.
    pub event_id: String,
    /// The gateway's id of the request, unique per row.
    pub request_id: String,
    /// The caller's own `x-request-id`, when it sent a sane one (not unique: clients reuse ids).
    #[serde(default)]
    pub client_request_id: Option<String>,
    pub created_at: UnixMillis,
    /// Empty when the request was rejected before a key was identified.
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    /// The key's organization, team and owner (the user filter of the usage log).
    #[serde(default)]
    pub org_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    /// The key's metadata JSON, echoed into the row.
    #[serde(default)]
    pub key_metadata: Option<std::sync::Arc<str>>,
    pub model: Option<String>,
    /// The provider of the channel that answered (or failed last).
    pub provider: Option<String>,
    /// Channels tried (failover): 0 when no upstream was called, 1 without failover.
    #[serde(default)]
    pub attempts: u32,
    /// The channels tried, in order, as `provider/upstream_model`, comma-separated; the
    /// last is the one that answered (or failed last). `None` when none was tried.
    #[serde(default)]
    pub channel: Option<String>,
    pub endpoint: String,
    pub status: u16,
    /// The error `code` the client was sent (`rate_limit_exceeded`, `insufficient_quota`…).
    #[serde(default)]
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(with = "crate::money::as_micros")]
    pub cost: MicroUsd,
    /// What the provider billed above the request's reservation (charged all the same).
    #[serde(default, with = "crate::money::as_micros")]
    pub excess: MicroUsd,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    pub client_ip: Option<String>,
    pub billing_reason: BillingReason,
}

impl UsageEvent {
    /// A fresh event of a request that has just arrived: nothing identified, nothing
    /// billed yet, status 200 until told otherwise.
    pub fn new(request_id: String, created_at: UnixMillis, endpoint: String) -> Self {
        Self {
            event_id: crate::ids::new_id("use"),
            request_id,
            client_request_id: None,
            created_at,
            key_id: None,
            key_name: None,
            org_id: None,
            team_id: None,
            user_id: None,
            key_metadata: None,
            model: None,
            provider: None,
            attempts: 0,
            channel: None,
            endpoint,
            status: 200,
            error_code: None,
            error: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: MicroUsd::ZERO,
            excess: MicroUsd::ZERO,
            latency_ms: 0,
            ttft_ms: None,
            stream: false,
            client_ip: None,
            billing_reason: BillingReason::NotBilled,
        }
    }
}
