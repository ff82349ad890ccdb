//! Prometheus metrics of the data plane and the usage writer, and the one log line each
//! `/v1` request leaves.
//!
//! Every usage event passes through [`Metrics::record`] (called by `UsageSink::emit`), so
//! the counters agree with the usage log. Invariants:
//! - Recording takes no lock and allocates nothing: counters are atomics, histograms are
//!   fixed bucket arrays, and the per-model series are created at start-up from the
//!   configured models. The only exception is the optional per-key series
//!   (`key_labels`): a read lock on the key map, and a write lock the first time a key is
//!   seen.
//! - Every label value comes from a bounded set: endpoints from the route table, models
//!   from the configuration (anything else is `other`, no model at all is `none`), status
//!   codes from a fixed table (the rest as their class, `4xx`), error codes from
//!   [`ErrorCode`]. A client cannot create a series. Key ids come only from authenticated
//!   keys and are capped at [`MAX_KEY_SERIES`].
//! - Series of fixed small sets (error codes, billing reasons, unlabelled metrics) are
//!   always rendered; series labelled by endpoint, model, status or key appear at their
//!   first observation.
//! - Channel series ([`render_channels`]) are read from the live snapshot at scrape time:
//!   exactly the channels configured now, whatever changed at runtime.
//!
//! [`ErrorCode`]: tollgate_core::ErrorCode

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use tollgate_core::usage::{BillingReason, UsageEvent};

use crate::routing::CircuitState;

/// Beyond this many distinct keys, further keys are counted as `key_id="other"`.
pub const MAX_KEY_SERIES: usize = 10_000;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The endpoint label: the `/v1` routes, then `other` (unknown paths).
const ENDPOINTS: [&str; 9] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "other",
];
const N_ENDPOINTS: usize = ENDPOINTS.len();

/// Status codes counted as themselves; any other is counted as its class.
const STATUS_CODES: [(u16, &str); 21] = [
    (200, "200"),
    (201, "201"),
    (202, "202"),
    (204, "204"),
    (400, "400"),
    (401, "401"),
    (402, "402"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (409, "409"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (429, "429"),
    (499, "499"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
const N_STATUS: usize = STATUS_CODES.len() + STATUS_CLASSES.len();

/// The `code` of every [`tollgate_core::ErrorCode`], then `other`.
const ERROR_CODES: [&str; 20] = [
    "invalid_api_key",
    "key_expired",
    "key_disabled",
    "ip_not_allowed",
    "endpoint_not_allowed",
    "provider_not_allowed",
    "model_not_found",
    "rate_limit_exceeded",
    "insufficient_quota",
    "invalid_request",
    "request_too_large",
    "upstream_error",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "method_not_allowed",
    "unavailable",
    "internal_error",
    "other",
];

const BILLING_REASONS: [BillingReason; 6] = [
    BillingReason::Completed,
    BillingReason::Estimated,
    BillingReason::ClientDisconnected,
    BillingReason::UpstreamInterrupted,
    BillingReason::NotBilled,
    BillingReason::ShutdownCut,
];

/// Upper bounds of the buckets, in microseconds.
const REQUEST_BUCKETS: &[u64] = &[
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];
const TTFT_BUCKETS: &[u64] = &[
    10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
    60_000_000,
];
const STORE_BUCKETS: &[u64] = &[
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// What the configuration decides about metrics.
#[derive(Debug, Clone, Default)]
pub struct MetricsOptions {
    /// Off: nothing is recorded (the request log line is still written).
    pub disabled: bool,
    /// Also keep `tollgate_key_*` series labelled by key id.
    pub key_labels: bool,
}

/// A histogram with fixed buckets; values in microseconds, rendered in seconds.
pub struct Histogram {
    bounds: &'static [u64],
    /// Per bucket, not cumulative; the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0) }
    }

    pub fn observe_micros(&self, micros: u64) {
        // `le` is inclusive: the first bucket whose bound is at least the value.
        let i = self.bounds.partition_point(|&b| b < micros);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = self.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |&b| seconds(b));
            sample_le(out, name, "_bucket", labels, Some(&le), cumulative);
        }
        sample_le(out, name, "_sum", labels, None, seconds(self.sum_micros.load(Relaxed)));
        sample_le(out, name, "_count", labels, None, cumulative);
    }
}

/// The series of one model (or of `other`/`none`).
struct ModelSeries {
    /// By endpoint, then status.
    requests: [[AtomicU64; N_STATUS]; N_ENDPOINTS],
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    spend_micro_usd: AtomicU64,
    ttft: Histogram,
}

impl ModelSeries {
    fn new() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            spend_micro_usd: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BUCKETS),
        }
    }

    fn seen(&self) -> bool {
        self.requests.iter().flatten().any(|c| c.load(Relaxed) > 0)
    }
}

/// Picks one counter of a [`KeySeries`].
type KeyCounter = fn(&KeySeries) -> &AtomicU64;

#[derive(Default)]
struct KeySeries {
    requests: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    spend_micro_usd: AtomicU64,
}

/// The usage writer's side: what happens between the queue and the store.
pub struct WriterMetrics {
    rows_written: AtomicU64,
    write_failures: AtomicU64,
    rows_spilled: AtomicU64,
    rows_replayed: AtomicU64,
    spill_bytes: AtomicU64,
    journal_bytes: AtomicU64,
    journal_errors: AtomicU64,
    store_write: Histogram,
}

impl WriterMetrics {
    /// One `insert_usage` call: how long it took and whether it committed `rows`.
    pub fn record_write(&self, took: std::time::Duration, rows: usize, ok: bool) {
        self.store_write.observe_micros(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        if ok {
            self.rows_written.fetch_add(rows as u64, Relaxed);
        } else {
            self.write_failures.fetch_add(1, Relaxed);
        }
    }

    pub fn record_spilled(&self, rows: usize) {
        self.rows_spilled.fetch_add(rows as u64, Relaxed);
    }

    pub fn record_replayed(&self, rows: usize) {
        self.rows_replayed.fetch_add(rows as u64, Relaxed);
    }

    /// The spill files' current total size.
    pub fn set_spill_bytes(&self, bytes: u64) {
        self.spill_bytes.store(bytes, Relaxed);
    }

    /// This process's usage journal's current size.
    pub fn set_journal_bytes(&self, bytes: u64) {
        self.journal_bytes.store(bytes, Relaxed);
    }

    /// An event that could not be appended to the usage journal.
    pub fn record_journal_error(&self) {
        self.journal_errors.fetch_add(1, Relaxed);
    }
}

/// Every counter Tollgate exports. Shared by the usage sink (which records), the usage
/// writer, and the `/metrics` handler (which renders).
pub struct Metrics {
    options: MetricsOptions,
    /// Known models: those configured, then those the routes gained since (see
    /// [`Metrics::know_models`]). Read without a lock; replaced whole when one is added.
    models: ArcSwap<HashMap<Box<str>, Arc<ModelSeries>>>,
    other: Arc<ModelSeries>,
    none: Arc<ModelSeries>,
    durations: [Histogram; N_ENDPOINTS],
    errors: [AtomicU64; ERROR_CODES.len()],
    billing: [AtomicU64; BILLING_REASONS.len()],
    rate_limited: AtomicU64,
    budget_rejections: AtomicU64,
    /// Requests a provider billed above their reservation, and the sum above it.
    billing_excess_requests: AtomicU64,
    billing_excess_micros: AtomicU64,
    /// Moves to the next channel after a failed attempt (`attempts - 1` per request).
    failovers: AtomicU64,
    keys: RwLock<HashMap<Box<str>, KeySeries>>,
    pub writer: WriterMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(MetricsOptions::default(), std::iter::empty::<&str>())
    }
}

impl Metrics {
    /// Metrics with one series set per configured model id.
    pub fn new<S: AsRef<str>>(options: MetricsOptions, model_ids: impl IntoIterator<Item = S>) -> Self {
        let mut models: HashMap<Box<str>, Arc<ModelSeries>> =
            model_ids.into_iter().map(|id| (Box::from(id.as_ref()), Arc::new(ModelSeries::new()))).collect();
        // A configured model named `other` or `none` shares its series rather than
        // rendering the same labels twice.
        let other = models.entry("other".into()).or_insert_with(|| Arc::new(ModelSeries::new())).clone();
        let none = models.entry("none".into()).or_insert_with(|| Arc::new(ModelSeries::new())).clone();
        Self {
            options,
            models: ArcSwap::from_pointee(models),
            other,
            none,
            durations: std::array::from_fn(|_| Histogram::new(REQUEST_BUCKETS)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            billing: std::array::from_fn(|_| AtomicU64::new(0)),
            rate_limited: AtomicU64::new(0),
            budget_rejections: AtomicU64::new(0),
            billing_excess_requests: AtomicU64::new(0),
            billing_excess_micros: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            keys: RwLock::new(HashMap::new()),
            writer: WriterMetrics {
                rows_written: AtomicU64::new(0),
                write_failures: AtomicU64::new(0),
                rows_spilled: AtomicU64::new(0),
                rows_replayed: AtomicU64::new(0),
                spill_bytes: AtomicU64::new(0),
                journal_bytes: AtomicU64::new(0),
                journal_errors: AtomicU64::new(0),
                store_write: Histogram::new(STORE_BUCKETS),
            },
        }
    }

    /// Gives each of `ids` its own series from now on (a model added at runtime). Models
    /// are never forgotten: their counters stay, as counters must.
    pub fn know_models<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let known = self.models.load();
        let new: Vec<&str> = ids.into_iter().filter(|id| !known.contains_key(*id)).collect();
        if new.is_empty() {
            return;
        }
        let mut models = HashMap::clone(&known);
        models.extend(new.into_iter().map(|id| (Box::from(id), Arc::new(ModelSeries::new()))));
        self.models.store(Arc::new(models));
    }

    /// Counts one finished request. Called once per usage event, on the request path.
    pub fn record(&self, ev: &UsageEvent) {
        if self.options.disabled {
            return;
        }
        let endpoint = endpoint_index(&ev.endpoint);
        let known = self.models.load();
        let model = match ev.model.as_deref() {
            None => &self.none,
            Some(m) => known.get(m).unwrap_or(&self.other),
        };
        model.requests[endpoint][status_index(ev.status)].fetch_add(1, Relaxed);
        model.prompt_tokens.fetch_add(ev.prompt_tokens, Relaxed);
        model.completion_tokens.fetch_add(ev.completion_tokens, Relaxed);
        let spend = u64::try_from(ev.cost.0).unwrap_or(0);
        model.spend_micro_usd.fetch_add(spend, Relaxed);
        if let Some(ttft) = ev.ttft_ms {
            model.ttft.observe_micros(ttft.saturating_mul(1_000));
        }
        self.durations[endpoint].observe_micros(ev.latency_ms.saturating_mul(1_000));
        if let Some(code) = ev.error_code.as_deref() {
            self.errors[error_index(code)].fetch_add(1, Relaxed);
            match code {
                "rate_limit_exceeded" => self.rate_limited.fetch_add(1, Relaxed),
                "insufficient_quota" => self.budget_rejections.fetch_add(1, Relaxed),
                _ => 0,
            };
        }
        self.billing[billing_index(ev.billing_reason)].fetch_add(1, Relaxed);
        if ev.excess.0 > 0 {
            self.billing_excess_requests.fetch_add(1, Relaxed);
            self.billing_excess_micros.fetch_add(u64::try_from(ev.excess.0).unwrap_or(0), Relaxed);
        }
        if ev.attempts > 1 {
            self.failovers.fetch_add(u64::from(ev.attempts - 1), Relaxed);
        }
        if self.options.key_labels
            && let Some(key_id) = ev.key_id.as_deref()
        {
            self.record_key(key_id, ev, spend);
        }
    }

    fn record_key(&self, key_id: &str, ev: &UsageEvent, spend: u64) {
        let add = |k: &KeySeries| {
            k.requests.fetch_add(1, Relaxed);
            if ev.status >= 400 {
                k.errors.fetch_add(1, Relaxed);
            }
            k.prompt_tokens.fetch_add(ev.prompt_tokens, Relaxed);
            k.completion_tokens.fetch_add(ev.completion_tokens, Relaxed);
            k.spend_micro_usd.fetch_add(spend, Relaxed);
        };
        // The counters are atomics: the lock only guards the map, so readers share it.
        if let Some(k) = self.keys.read().unwrap_or_else(PoisonError::into_inner).get(key_id) {
            return add(k);
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let id = if keys.len() < MAX_KEY_SERIES || keys.contains_key(key_id) { key_id } else { "other" };
        add(keys.entry(id.into()).or_default());
    }

    /// The Prometheus text exposition (format 0.0.4) of everything, with the usage
    /// queue's current depth.
    pub fn render(&self, queue_depth: usize) -> String {
        let mut out = String::with_capacity(16 << 10);
        let known = self.models.load();
        let mut models: Vec<(&str, &ModelSeries)> =
            known.iter().filter(|(_, m)| m.seen()).map(|(id, m)| (&**id, &**m)).collect();
        models.sort_by_key(|(id, _)| *id);

        help(&mut out, "tollgate_requests_total", "counter", "Finished /v1 requests.");
        for (id, m) in &models {
            for (e, by_status) in m.requests.iter().enumerate() {
                for (s, count) in by_status.iter().enumerate() {
                    let n = count.load(Relaxed);
                    if n > 0 {
                        let labels = [("endpoint", ENDPOINTS[e]), ("model", *id), ("status", status_label(s))];
                        sample(&mut out, "tollgate_requests_total", &labels, n);
                    }
                }
            }
        }

        help(&mut out, "tollgate_request_errors_total", "counter", "Requests answered with an error, by error code.");
        for (code, n) in ERROR_CODES.iter().zip(&self.errors) {
            sample(&mut out, "tollgate_request_errors_total", &[("code", code)], n.load(Relaxed));
        }
        help(&mut out, "tollgate_rate_limited_total", "counter", "Requests refused by a rate limit.");
        sample(&mut out, "tollgate_rate_limited_total", &[], self.rate_limited.load(Relaxed));
        help(&mut out, "tollgate_budget_rejections_total", "counter", "Requests refused by a budget or quota.");
        sample(&mut out, "tollgate_budget_rejections_total", &[], self.budget_rejections.load(Relaxed));
        let (name, text) = ("tollgate_billing_excess_total", "Requests a provider billed above their reservation.");
        help(&mut out, name, "counter", text);
        sample(&mut out, name, &[], self.billing_excess_requests.load(Relaxed));
        let name = "tollgate_billing_excess_micro_usd_total";
        help(&mut out, name, "counter", "What providers billed above reservations (charged all the same), micro-USD.");
        sample(&mut out, name, &[], self.billing_excess_micros.load(Relaxed));
        let text = "Requests moved to the next channel after a failed attempt (one per move).";
        help(&mut out, "tollgate_failovers_total", "counter", text);
        sample(&mut out, "tollgate_failovers_total", &[], self.failovers.load(Relaxed));

        let name = "tollgate_request_duration_seconds";
        help(&mut out, name, "histogram", "Time from request to the end of the response.");
        for (endpoint, h) in ENDPOINTS.iter().zip(&self.durations) {
            if h.count() > 0 {
                h.render(&mut out, name, &[("endpoint", endpoint)]);
            }
        }
        let name = "tollgate_time_to_first_token_seconds";
        help(&mut out, name, "histogram", "Time from request to the first byte of the upstream's response.");
        for (id, m) in &models {
            if m.ttft.count() > 0 {
                m.ttft.render(&mut out, name, &[("model", id)]);
            }
        }

        help(&mut out, "tollgate_tokens_total", "counter", "Tokens billed, by model and kind.");
        for (id, m) in &models {
            for (kind, n) in [("prompt", &m.prompt_tokens), ("completion", &m.completion_tokens)] {
                sample(&mut out, "tollgate_tokens_total", &[("model", id), ("kind", kind)], n.load(Relaxed));
            }
        }
        help(&mut out, "tollgate_spend_micro_usd_total", "counter", "Spend billed, in micro-USD.");
        for (id, m) in &models {
            sample(&mut out, "tollgate_spend_micro_usd_total", &[("model", id)], m.spend_micro_usd.load(Relaxed));
        }
        help(&mut out, "tollgate_billing_reason_total", "counter", "Usage rows by billing reason.");
        for (reason, n) in BILLING_REASONS.iter().zip(&self.billing) {
            sample(&mut out, "tollgate_billing_reason_total", &[("reason", reason.as_str())], n.load(Relaxed));
        }

        if self.options.key_labels {
            self.render_keys(&mut out);
        }

        let w = &self.writer;
        help(&mut out, "tollgate_usage_queue_depth", "gauge", "Usage events waiting for the writer.");
        sample(&mut out, "tollgate_usage_queue_depth", &[], queue_depth);
        help(&mut out, "tollgate_usage_spill_bytes", "gauge", "Size of the usage spill files on disk.");
        sample(&mut out, "tollgate_usage_spill_bytes", &[], w.spill_bytes.load(Relaxed));
        help(&mut out, "tollgate_usage_journal_bytes", "gauge", "Size of this process's usage journal on disk.");
        sample(&mut out, "tollgate_usage_journal_bytes", &[], w.journal_bytes.load(Relaxed));
        let name = "tollgate_usage_journal_errors_total";
        help(&mut out, name, "counter", "Usage events that could not be appended to the journal.");
        sample(&mut out, name, &[], w.journal_errors.load(Relaxed));
        help(&mut out, "tollgate_usage_rows_written_total", "counter", "Usage rows committed to the store.");
        sample(&mut out, "tollgate_usage_rows_written_total", &[], w.rows_written.load(Relaxed));
        help(&mut out, "tollgate_usage_write_failures_total", "counter", "Failed usage inserts (each attempt).");
        sample(&mut out, "tollgate_usage_write_failures_total", &[], w.write_failures.load(Relaxed));
        help(&mut out, "tollgate_usage_rows_spilled_total", "counter", "Usage rows written to the spill file.");
        sample(&mut out, "tollgate_usage_rows_spilled_total", &[], w.rows_spilled.load(Relaxed));
        help(&mut out, "tollgate_usage_rows_replayed_total", "counter", "Spilled usage rows moved into the store.");
        sample(&mut out, "tollgate_usage_rows_replayed_total", &[], w.rows_replayed.load(Relaxed));
        let name = "tollgate_store_write_seconds";
        help(&mut out, name, "histogram", "Duration of usage inserts into the store.");
        w.store_write.render(&mut out, name, &[]);
        out
    }

    fn render_keys(&self, out: &mut String) {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<(&str, &KeySeries)> = keys.iter().map(|(id, k)| (&**id, k)).collect();
        sorted.sort_by_key(|(id, _)| *id);
        let families: [(&str, &str, KeyCounter); 3] = [
            ("tollgate_key_requests_total", "Finished /v1 requests, by key.", |k| &k.requests),
            ("tollgate_key_errors_total", "Requests answered with status >= 400, by key.", |k| &k.errors),
            ("tollgate_key_spend_micro_usd_total", "Spend billed in micro-USD, by key.", |k| &k.spend_micro_usd),
        ];
        for (name, text, counter) in families {
            help(out, name, "counter", text);
            for (id, k) in &sorted {
                sample(out, name, &[("key_id", id)], counter(k).load(Relaxed));
            }
        }
        help(out, "tollgate_key_tokens_total", "counter", "Tokens billed, by key and kind.");
        for (id, k) in &sorted {
            for (kind, n) in [("prompt", &k.prompt_tokens), ("completion", &k.completion_tokens)] {
                sample(out, "tollgate_key_tokens_total", &[("key_id", id), ("kind", kind)], n.load(Relaxed));
            }
        }
    }
}

/// The shared limiter's series, rendered only when Redis is configured: whether it
/// answered the last call (`tollgate_redis_up`, refreshed by traffic and by the server's
/// probe every few seconds) and how many requests were decided by this instance alone.
pub fn render_shared(out: &mut String, health: &crate::SharedHealth) {
    let text = "Whether Redis (the shared limits) answered the last call: 1 yes, 0 no.";
    help(out, "tollgate_redis_up", "gauge", text);
    sample(out, "tollgate_redis_up", &[], u8::from(health.reachable()));
    let text = "Requests checked against this instance's own share of the limits because Redis did not answer.";
    help(out, "tollgate_redis_fallback_admissions_total", "counter", text);
    sample(out, "tollgate_redis_fallback_admissions_total", &[], health.fallback_admissions());
}

/// Appends the channel series: each configured channel's circuit state (a state set: 1 for
/// its current state, 0 for the others) and its attempts by outcome, labelled by model,
/// provider and upstream model — read from `snapshot` now, so the series follow channels
/// added or removed at runtime, and a client can never create one.
pub fn render_channels<'a>(out: &mut String, snapshot: &'a crate::Snapshot) {
    let mut models: Vec<&crate::ModelRoute> = snapshot.models.values().map(|m| &**m).collect();
    models.sort_by(|a, b| a.id.cmp(&b.id));
    let reports: Vec<(&crate::ModelRoute, &crate::Channel, crate::routing::HealthReport)> =
        models.iter().flat_map(|m| m.channels.iter().map(move |c| (*m, c, c.health.report()))).collect();
    let labels = |m: &'a crate::ModelRoute, c: &'a crate::Channel| {
        [
            ("model", m.id.as_str()),
            ("provider", c.provider.name.as_str()),
            ("upstream_model", c.upstream_model.as_str()),
        ]
    };
    let text = "A channel's circuit breaker: 1 for its current state (closed, open, half_open), else 0.";
    help(out, "tollgate_channel_state", "gauge", text);
    for (m, c, report) in &reports {
        let [model, provider, upstream] = labels(m, c);
        for (state, name) in
            [(CircuitState::Closed, "closed"), (CircuitState::Open, "open"), (CircuitState::HalfOpen, "half_open")]
        {
            let set = [model, provider, upstream, ("state", name)];
            sample(out, "tollgate_channel_state", &set, u8::from(report.state == state));
        }
    }
    let text = "Attempts on a channel, by outcome (failure: connect error, timeout, 429 or 5xx).";
    help(out, "tollgate_channel_attempts_total", "counter", text);
    for (m, c, report) in &reports {
        let [model, provider, upstream] = labels(m, c);
        for (outcome, n) in [("success", report.successes), ("failure", report.failures)] {
            let set = [model, provider, upstream, ("outcome", outcome)];
            sample(out, "tollgate_channel_attempts_total", &set, n);
        }
    }
}

/// The request log line: who asked for what and how it ended. Never the key's secret, the
/// error text (an upstream may echo a credential in it) or the key's metadata.
pub(crate) fn log_request(ev: &UsageEvent) {
    tracing::info!(
        target: "tollgate::request",
        request_id = ev.request_id.as_str(),
        key_id = ev.key_id.as_deref(),
        model = ev.model.as_deref(),
        provider = ev.provider.as_deref(),
        endpoint = ev.endpoint.as_str(),
        status = ev.status,
        error_code = ev.error_code.as_deref(),
        latency_ms = ev.latency_ms,
        ttft_ms = ev.ttft_ms,
        stream = ev.stream,
        prompt_tokens = ev.prompt_tokens,
        completion_tokens = ev.completion_tokens,
        cost_micro_usd = ev.cost.0,
        billing_reason = ev.billing_reason.as_str(),
        "request finished"
    );
}

fn endpoint_index(path: &str) -> usize {
    ENDPOINTS[..N_ENDPOINTS - 1].iter().position(|e| *e == path).unwrap_or(N_ENDPOINTS - 1)
}

fn status_index(status: u16) -> usize {
    match STATUS_CODES.iter().position(|(code, _)| *code == status) {
        Some(i) => i,
        None => STATUS_CODES.len() + usize::from(status / 100).saturating_sub(1).min(STATUS_CLASSES.len() - 1),
    }
}

fn status_label(index: usize) -> &'static str {
    match STATUS_CODES.get(index) {
        Some((_, label)) => label,
        None => STATUS_CLASSES[(index - STATUS_CODES.len()).min(STATUS_CLASSES.len() - 1)],
    }
}

fn error_index(code: &str) -> usize {
    ERROR_CODES.iter().position(|c| *c == code).unwrap_or(ERROR_CODES.len() - 1)
}

fn billing_index(reason: BillingReason) -> usize {
    match reason {
        BillingReason::Completed => 0,
        BillingReason::Estimated => 1,
        BillingReason::ClientDisconnected => 2,
        BillingReason::UpstreamInterrupted => 3,
        BillingReason::NotBilled => 4,
        BillingReason::ShutdownCut => 5,
    }
}

/// Microseconds as a decimal number of seconds, exactly (`2500000` → `2.5`).
fn seconds(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    sample_le(out, name, "", labels, None, value);
}

fn sample_le(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (k, v)) in all.enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !labels.is_empty() || le.is_some() {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::ErrorCode;
    use tollgate_core::money::MicroUsd;

    fn event(endpoint: &str, model: Option<&str>, status: u16) -> UsageEvent {
        let mut e = UsageEvent::new("req_1".into(), 0, endpoint.into());
        e.model = model.map(str::to_owned);
        e.status = status;
        e
    }

    fn metrics() -> Metrics {
        Metrics::new(MetricsOptions::default(), ["gpt-4o-mini", "demo-chat"])
    }

    /// The value of the one sample line starting with `series ` (name and labels).
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn a_request_is_counted_by_endpoint_model_and_status() {
        let m = metrics();
        let mut e = event("/v1/chat/completions", Some("gpt-4o-mini"), 200);
        (e.prompt_tokens, e.completion_tokens, e.cost) = (3, 5, MicroUsd(7));
        e.latency_ms = 120;
        e.ttft_ms = Some(40);
        e.billing_reason = BillingReason::Completed;
        m.record(&e);
        m.record(&e);
        let text = m.render(4);
        let ok = r#"tollgate_requests_total{endpoint="/v1/chat/completions",model="gpt-4o-mini",status="200"}"#;
        assert_eq!(value(&text, ok).as_deref(), Some("2"), "{text}");
        assert_eq!(value(&text, r#"tollgate_tokens_total{model="gpt-4o-mini",kind="prompt"}"#).as_deref(), Some("6"));
        assert_eq!(
            value(&text, r#"tollgate_tokens_total{model="gpt-4o-mini",kind="completion"}"#).as_deref(),
            Some("10")
        );
        assert_eq!(value(&text, r#"tollgate_spend_micro_usd_total{model="gpt-4o-mini"}"#).as_deref(), Some("14"));
        assert_eq!(value(&text, r#"tollgate_billing_reason_total{reason="completed"}"#).as_deref(), Some("2"));
        let bucket = r#"tollgate_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="0.1"}"#;
        assert_eq!(value(&text, bucket).as_deref(), Some("0"));
        let bucket = r#"tollgate_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="0.25"}"#;
        assert_eq!(value(&text, bucket).as_deref(), Some("2"));
        let sum = r#"tollgate_request_duration_seconds_sum{endpoint="/v1/chat/completions"}"#;
        assert_eq!(value(&text, sum).as_deref(), Some("0.24"));
        let ttft = r#"tollgate_time_to_first_token_seconds_count{model="gpt-4o-mini"}"#;
        assert_eq!(value(&text, ttft).as_deref(), Some("2"));
        assert_eq!(value(&text, "tollgate_usage_queue_depth").as_deref(), Some("4"));
        assert!(!text.contains("demo-chat"), "unused models have no series yet:\n{text}");
    }

    #[test]
    fn unknown_models_and_paths_never_create_series() {
        let m = metrics();
        m.record(&event("/v1/chat/completions", Some("random-1"), 404));
        let before: Vec<String> = m.render(0).lines().map(|l| l.rsplit_once(' ').unwrap().0.to_owned()).collect();
        m.record(&event("/v1/chat/completions", Some("random-2"), 404));
        m.record(&event("/v1/whatever-3", None, 404));
        m.record(&event("/v1/whatever-3", Some("x\"y"), 404));
        let text = m.render(0);
        assert!(!text.contains("random") && !text.contains("whatever") && !text.contains("x\\\"y"), "{text}");
        let other = r#"tollgate_requests_total{endpoint="/v1/chat/completions",model="other",status="404"}"#;
        assert_eq!(value(&text, other).as_deref(), Some("2"));
        let none = r#"tollgate_requests_total{endpoint="other",model="none",status="404"}"#;
        assert_eq!(value(&text, none).as_deref(), Some("1"));
        let after: Vec<String> = text.lines().map(|l| l.rsplit_once(' ').unwrap().0.to_owned()).collect();
        let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
        assert!(!new.is_empty());
        for s in new {
            assert!(s.contains(r#"endpoint="other""#) || s.contains(r#"model="none""#), "unexpected new series {s}");
        }
    }

    #[test]
    fn error_codes_feed_rate_limit_and_budget_counters() {
        let m = metrics();
        for code in ["rate_limit_exceeded", "insufficient_quota", "insufficient_quota", "made_up"] {
            let mut e = event("/v1/chat/completions", Some("demo-chat"), 429);
            e.error_code = Some(code.into());
            m.record(&e);
        }
        let text = m.render(0);
        assert_eq!(value(&text, "tollgate_rate_limited_total").as_deref(), Some("1"));
        assert_eq!(value(&text, "tollgate_budget_rejections_total").as_deref(), Some("2"));
        assert_eq!(value(&text, r#"tollgate_request_errors_total{code="insufficient_quota"}"#).as_deref(), Some("2"));
        assert_eq!(value(&text, r#"tollgate_request_errors_total{code="other"}"#).as_deref(), Some("1"));
        assert_eq!(value(&text, r#"tollgate_request_errors_total{code="not_found"}"#).as_deref(), Some("0"));
    }

    #[test]
    fn billing_excess_is_counted_in_requests_and_micro_usd() {
        let m = metrics();
        for excess in [0, 250, 1_000] {
            let mut e = event("/v1/chat/completions", Some("demo-chat"), 200);
            e.excess = tollgate_core::MicroUsd(excess);
            m.record(&e);
        }
        let text = m.render(0);
        assert_eq!(value(&text, "tollgate_billing_excess_total").as_deref(), Some("2"));
        assert_eq!(value(&text, "tollgate_billing_excess_micro_usd_total").as_deref(), Some("1250"));
    }

    #[test]
    fn every_error_code_has_its_own_label() {
        use ErrorCode as E;
        // Exhaustive on purpose: a new code fails to compile here until it is listed.
        let label = |c: ErrorCode| match c {
            E::InvalidApiKey
            | E::KeyExpired
            | E::KeyDisabled
            | E::IpNotAllowed
            | E::EndpointNotAllowed
            | E::ProviderNotAllowed
            | E::ModelNotFound
            | E::RateLimitExceeded { .. }
            | E::InsufficientQuota
            | E::InvalidRequest
            | E::RequestTooLarge
            | E::UpstreamError
            | E::UpstreamTimeout
            | E::Unauthorized
            | E::Forbidden
            | E::NotFound
            | E::Conflict
            | E::MethodNotAllowed
            | E::Unavailable
            | E::Internal => c.parts().2,
        };
        for c in [
            E::InvalidApiKey,
            E::KeyExpired,
            E::KeyDisabled,
            E::IpNotAllowed,
            E::EndpointNotAllowed,
            E::ProviderNotAllowed,
            E::ModelNotFound,
            E::RateLimitExceeded { retry_after_secs: 1 },
            E::InsufficientQuota,
            E::InvalidRequest,
            E::RequestTooLarge,
            E::UpstreamError,
            E::UpstreamTimeout,
            E::Unauthorized,
            E::Forbidden,
            E::NotFound,
            E::Conflict,
            E::MethodNotAllowed,
            E::Unavailable,
            E::Internal,
        ] {
            assert_ne!(error_index(label(c)), ERROR_CODES.len() - 1, "{c:?}");
        }
    }

    #[test]
    fn statuses_outside_the_table_are_counted_by_class() {
        assert_eq!(status_label(status_index(429)), "429");
        assert_eq!(status_label(status_index(418)), "4xx");
        assert_eq!(status_label(status_index(207)), "2xx");
        assert_eq!(status_label(status_index(599)), "5xx");
        assert_eq!(status_label(status_index(0)), "1xx");
        assert_eq!(status_label(status_index(999)), "other");
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(5_000), "0.005");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(300_000_000), "300");
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000_001), "1.000001");
    }

    #[test]
    fn key_series_exist_only_when_asked_for() {
        let mut e = event("/v1/chat/completions", Some("demo-chat"), 200);
        e.key_id = Some("key_abc".into());
        e.cost = MicroUsd(9);
        let m = metrics();
        m.record(&e);
        assert!(!m.render(0).contains("key_abc"));

        let m = Metrics::new(MetricsOptions { key_labels: true, ..Default::default() }, ["demo-chat"]);
        m.record(&e);
        e.status = 429;
        m.record(&e);
        let text = m.render(0);
        assert_eq!(value(&text, r#"tollgate_key_requests_total{key_id="key_abc"}"#).as_deref(), Some("2"));
        assert_eq!(value(&text, r#"tollgate_key_errors_total{key_id="key_abc"}"#).as_deref(), Some("1"));
        assert_eq!(value(&text, r#"tollgate_key_spend_micro_usd_total{key_id="key_abc"}"#).as_deref(), Some("18"));
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let m = Metrics::new(MetricsOptions { disabled: true, ..Default::default() }, ["demo-chat"]);
        m.record(&event("/v1/chat/completions", Some("demo-chat"), 200));
        assert!(!m.render(0).contains("demo-chat"));
    }

    #[test]
    fn the_writer_side_is_rendered() {
        let m = metrics();
        m.writer.record_write(std::time::Duration::from_micros(700), 3, true);
        m.writer.record_write(std::time::Duration::from_millis(20), 3, false);
        m.writer.record_spilled(3);
        m.writer.set_spill_bytes(1234);
        m.writer.set_journal_bytes(567);
        m.writer.record_journal_error();
        let text = m.render(0);
        assert_eq!(value(&text, "tollgate_usage_rows_written_total").as_deref(), Some("3"));
        assert_eq!(value(&text, "tollgate_usage_write_failures_total").as_deref(), Some("1"));
        assert_eq!(value(&text, "tollgate_usage_rows_spilled_total").as_deref(), Some("3"));
        assert_eq!(value(&text, "tollgate_usage_spill_bytes").as_deref(), Some("1234"));
        assert_eq!(value(&text, "tollgate_usage_journal_bytes").as_deref(), Some("567"));
        assert_eq!(value(&text, "tollgate_usage_journal_errors_total").as_deref(), Some("1"));
        assert_eq!(value(&text, r#"tollgate_store_write_seconds_bucket{le="0.001"}"#).as_deref(), Some("1"));
        assert_eq!(value(&text, r#"tollgate_store_write_seconds_bucket{le="+Inf"}"#).as_deref(), Some("2"));
        assert_eq!(value(&text, "tollgate_store_write_seconds_sum").as_deref(), Some("0.0207"));
    }
}
