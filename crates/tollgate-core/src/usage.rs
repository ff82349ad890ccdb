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
}

impl BillingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Estimated => "estimated",
            Self::ClientDisconnected => "client_disconnected",
            Self::UpstreamInterrupted => "upstream_interrupted",
            Self::NotBilled => "not_billed",
        }
    }
}

/// One request's usage row. Serializes with `cost` in integer micro-USD (the spill
/// file's format), not as a USD number.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageEvent {
    pub request_id: String,
    pub created_at: UnixMillis,
    /// Empty when the request was rejected before a key was identified.
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub endpoint: String,
    pub status: u16,
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(with = "crate::money::as_micros")]
    pub cost: MicroUsd,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    pub client_ip: Option<String>,
    pub billing_reason: BillingReason,
}
