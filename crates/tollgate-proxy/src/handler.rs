//! The `/v1` request lifecycle, in the order of PRODUCT §3 (cheapest check first, nothing
//! billed when rejected): key → body → model → route → upstream → metered response.
//! Every path ends in exactly one usage event: rejections and upstream errors emit it
//! here; successful responses hand it to the [`MeteredBody`], which emits it when the
//! body ends or is dropped.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use tollgate_core::model::Endpoint;
use tollgate_core::time::now_millis;
use tollgate_core::usage::UsageEvent;
use tollgate_core::{ApiError, ErrorCode};

use crate::accounts::clock_micros;
use crate::admission::{self, Charge, Hold, RateHeaders};
use crate::meter::{Dialect, Meter, MeteredBody, elapsed_ms};
use crate::providers::{anthropic, azure, gemini};
use crate::snapshot::{Channel, KeyEntry, ModelRoute, Provider, ProviderKind, Snapshot};
use crate::upstream::{UpstreamFailure, relay_status};
use crate::{ClientRequestId, DataPlane, PeerAddr, RequestId, auth, demo, estimate, messages, request, routing};

/// Bytes of an upstream error body read to relay or log it.
const MAX_ERROR_BODY: usize = 64 << 10;

/// The usage event of a request in progress, and when the request started.
pub(crate) struct Pending {
    event: Option<UsageEvent>,
    started: Instant,
    pub(crate) client_ip: Option<std::net::IpAddr>,
    /// Whether the request body was read to its end (see `proxy`).
    pub(crate) body_consumed: bool,
    /// Reserved budget until a metered body takes it; released (not billed) if dropped here.
    hold: Option<Hold>,
    rate_headers: RateHeaders,
    /// `/v1/messages`: the public model id, named in the translated answer.
    reply_model: Option<String>,
    /// The request named no known key: its refusal is counted in `AuthFailures`.
    unknown_key: bool,
    /// Whether the refusal keeps its usage row (false: counted in the metrics only).
    keep_row: bool,
}

impl Pending {
    pub(crate) fn new(dp: &DataPlane, req: &Request, endpoint: &str) -> Self {
        let request_id = req.extensions().get::<RequestId>().map_or_else(String::new, |r| r.0.to_string());
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let client_ip = tollgate_core::scope::client_ip(peer, req.headers(), &dp.trusted_proxies);
        let mut event = UsageEvent::new(request_id, now_millis(), endpoint.to_owned());
        event.client_ip = client_ip.map(|ip| ip.to_string());
        event.client_request_id = req.extensions().get::<ClientRequestId>().map(|c| c.0.to_string());
        Self {
            event: Some(event),
            started: Instant::now(),
            client_ip,
            body_consumed: false,
            hold: None,
            rate_headers: RateHeaders::default(),
            reply_model: None,
            unknown_key: false,
            keep_row: true,
        }
    }

    /// The calling key (see `auth::authenticate`): a refused known key is identified on
    /// the row; a request that named no known key is marked for `AuthFailures`.
    pub(crate) fn authenticate(
        &mut self,
        dp: &DataPlane,
        headers: &http::HeaderMap,
    ) -> Result<Arc<KeyEntry>, ApiError> {
        match auth::authenticate(dp, headers, self.client_ip, now_millis()) {
            Ok(key) => {
                self.identify(&key);
                Ok(key)
            }
            Err(auth::Refusal::Known(key, err)) => {
                self.identify(&key);
                Err(err)
            }
            Err(auth::Refusal::Unknown) => {
                self.unknown_key = true;
                Err(ApiError::invalid_api_key())
            }
        }
    }

    /// A refusal of a request that named no known key is counted per address and minute;
    /// only the first of each keeps its row, and past the limit the answer becomes `429`
    /// (returned here in place of `err`). Other refusals are left as they are.
    fn judge(&mut self, dp: &DataPlane) -> Option<ApiError> {
        if !self.unknown_key {
            return None;
        }
        match dp.auth_failures.record(self.client_ip, now_millis()) {
            crate::auth_failures::Verdict::Sample => None,
            crate::auth_failures::Verdict::Count => {
                self.keep_row = false;
                None
            }
            crate::auth_failures::Verdict::Throttle { retry_after_secs } => {
                self.keep_row = false;
                Some(ApiError::new(
                    ErrorCode::RateLimitExceeded { retry_after_secs },
                    "Too many requests without a valid API key from this address; retry later.",
                ))
            }
        }
    }

    pub(crate) fn event(&mut self) -> Option<&mut UsageEvent> {
        self.event.as_mut()
    }

    /// Records an attempt on `channel`: the row names its provider and counts it among
    /// the channels tried.
    pub(crate) fn tried(&mut self, channel: &Channel) {
        if let Some(e) = self.event() {
            e.provider = Some(channel.provider.name.clone());
            e.attempts += 1;
            let tried = e.channel.get_or_insert_with(String::new);
            if !tried.is_empty() {
                tried.push(',');
            }
            tried.push_str(&channel.provider.name);
            tried.push('/');
            tried.push_str(&channel.upstream_model);
        }
    }

    pub(crate) fn identify(&mut self, key: &KeyEntry) {
        if let Some(e) = self.event() {
            e.key_id = Some(key.id.clone());
            e.key_name = Some(key.name.clone());
            e.org_id = Some(key.org_id.clone());
            e.team_id = Some(key.team_id.clone());
            e.user_id = Some(key.owner_id.clone());
            e.key_metadata.clone_from(&key.metadata);
        }
    }

    /// The answer to a request refused with `err` (rendered by `render`), its row emitted.
    /// Refused before the body was read (bad key, endpoint scope, too large): hyper cannot
    /// reuse the connection, so say so instead of leaving a client to send its next request
    /// into a closing socket. Reading an unauthenticated body just to keep the connection
    /// would hand attackers free bandwidth.
    pub(crate) fn refuse(
        mut self,
        dp: &DataPlane,
        err: &ApiError,
        render: impl FnOnce(&ApiError) -> Response,
    ) -> Response {
        let throttled = self.judge(dp);
        let err = throttled.as_ref().unwrap_or(err);
        let body_consumed = self.body_consumed;
        self.finish_unbilled(dp, err.status(), Some(err));
        let mut res = render(err);
        if !body_consumed {
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }

    /// Emits the unbilled row of a request that produced no metered body.
    pub(crate) fn finish_unbilled(mut self, dp: &DataPlane, status: StatusCode, error: Option<&ApiError>) {
        if let Some(mut e) = self.event.take() {
            e.status = status.as_u16();
            if let Some(err) = error {
                e.error = Some(err.message.clone());
                e.error_code = Some(err.code.parts().2.to_owned());
            }
            e.latency_ms = elapsed_ms(self.started, Instant::now());
            // Past its sample, an unknown key's refusal is only counted (`auth_failures`):
            // no row, no log line, and not in the request metrics, which agree with the rows.
            if self.keep_row {
                dp.usage.emit(e);
            }
        }
    }
}

pub(crate) async fn proxy(State(dp): State<Arc<DataPlane>>, endpoint: Endpoint, req: Request) -> Response {
    let mut pending = Pending::new(&dp, &req, endpoint.path());
    let anthropic_shape = endpoint == Endpoint::Messages;
    let request_id = req.extensions().get::<RequestId>().filter(|_| anthropic_shape).cloned();
    let result = serve(&dp, endpoint, req, &mut pending).await;
    let rate_headers = pending.rate_headers;
    let reply_model = pending.reply_model.take();
    let mut res = match result {
        Ok(res) => {
            // A relayed upstream error has not been recorded yet; a metered body has
            // taken the event and will record it itself.
            let status = res.status();
            pending.finish_unbilled(&dp, status, None);
            let native = res.extensions().get::<messages::native::NativeAnswer>().is_some();
            match reply_model {
                Some(model) if anthropic_shape && native => messages::native::with_public_model(res, &model).await,
                Some(model) if anthropic_shape => messages::answer(res, &model).await,
                _ => res,
            }
        }
        Err(err) if anthropic_shape => pending.refuse(&dp, &err, messages::error_response),
        Err(err) => pending.refuse(&dp, &err, |e| e.clone().into_response()),
    };
    rate_headers.apply(res.headers_mut());
    with_request_id(&mut res, request_id);
    res
}

/// Anthropic's SDKs report `request-id`; the server's layer sets `x-request-id`.
pub(crate) fn with_request_id(res: &mut Response, id: Option<RequestId>) {
    if let Some(id) = id.and_then(|id| HeaderValue::from_str(&id.0).ok()) {
        res.headers_mut().insert("request-id", id);
    }
}

async fn serve(dp: &DataPlane, endpoint: Endpoint, req: Request, pending: &mut Pending) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let key = pending.authenticate(dp, &parts.headers)?;
    if !key.allows_endpoint(endpoint) {
        return Err(ApiError::new(
            ErrorCode::EndpointNotAllowed,
            format!("This API key may not call {}.", endpoint.path()),
        ));
    }

    let body = request::read_body(body, &parts.headers, dp.limits.max_body_bytes).await?;
    pending.body_consumed = true;
    let snapshot = dp.snapshot.load();
    // From here on a Messages request is a chat completion; only its row keeps the path.
    // Its Anthropic channels get the client's own body (see `messages::native`).
    let inbound = endpoint;
    let mut native = None;
    let (endpoint, body) = match endpoint {
        Endpoint::Messages => {
            let anthropic_only = |model: &str| snapshot.models.get(model).is_some_and(|m| m.anthropic_only());
            let (pipeline, request) = messages::native::pipeline_body(&body, anthropic_only)?;
            native = Some(Native { request, beta: messages::native::beta_header(&parts.headers) });
            (Endpoint::ChatCompletions, pipeline)
        }
        other => (other, body),
    };
    let parsed = request::parse(body)?;
    if inbound == Endpoint::Messages {
        pending.reply_model = Some(parsed.model.clone());
    }
    if let Some(e) = pending.event() {
        e.model = Some(parsed.model.clone());
        e.stream = parsed.stream;
    }

    let (model, candidates) = resolve(&snapshot, &key, &parsed.model, endpoint, inbound)?;

    let images = if endpoint == Endpoint::ImagesGenerations { parsed.images } else { 0 };
    let prompt_estimate = parsed.prompt_token_estimate();
    // The reservation is the worst case over every channel the request may take
    // (see `estimate`): every choice at its output cap, images by their family's rule.
    let charge = || {
        let rules: Vec<estimate::ImageRule> = std::iter::once(model.id.as_str())
            .chain(candidates.iter().map(|c| c.upstream_model.as_str()))
            .map(estimate::ImageRule::for_model)
            .collect();
        let worst = estimate::worst_case(endpoint, &parsed.body, &rules);
        let max_output = match endpoint {
            Endpoint::Embeddings | Endpoint::ImagesGenerations => 0,
            _ => parsed.max_tokens.unwrap_or(model.max_output_tokens).saturating_mul(worst.choices),
        };
        Charge {
            max_spend: model.pricing.cost(worst.prompt, max_output, images),
            max_tokens: worst.prompt.saturating_add(max_output),
            rate_tokens: prompt_estimate.saturating_add(parsed.max_tokens.unwrap_or(0)),
        }
    };
    pending.hold =
        admission::admit(&snapshot, &key, charge, dp.policy, dp.shared.as_ref(), &mut pending.rate_headers).await?;

    // Failover: highest priority first, weighted among equals, open circuits skipped; a
    // channel that fails before any byte reached the client (connect error, timeout,
    // 429, 5xx) hands over to the next after a jittered backoff, within the deadline.
    // Once a response is returned it streams to the client and is never retried.
    let mut plan = routing::plan(&candidates, clock_micros(), routing::random_u64);
    if plan.is_empty() {
        // Every circuit is open: with no healthy alternative the breaker only orders the
        // attempts, it does not refuse the request.
        plan = routing::plan_ignoring_health(&candidates, routing::random_u64);
    }
    let deadline = Instant::now() + dp.limits.failover_deadline;
    let call = Call { endpoint, parsed: &parsed, model, images, prompt_estimate, native: native.as_ref() };
    for (i, channel) in plan.iter().enumerate() {
        pending.tried(channel);
        match attempt(dp, &call, channel, pending).await {
            Ok(res) => {
                channel.health.record_success();
                return Ok(res);
            }
            Err(Failure::Final(err)) => return Err(err),
            Err(Failure::Retryable(err)) => {
                channel.health.record_failure(dp.limits.breaker, clock_micros());
                let left = deadline.saturating_duration_since(Instant::now());
                if i + 1 == plan.len() || left.is_zero() {
                    return Err(err);
                }
                tracing::info!(provider = %channel.provider.name, error = %err.message, "failing over to the next channel");
                let pause =
                    routing::backoff(i as u32 + 1, dp.limits.retry_base, MAX_BACKOFF, left, routing::random_u64());
                tokio::time::sleep(pause).await;
            }
        }
    }
    Err(ApiError::internal())
}

/// The model `key` may call as `model_id` at `endpoint` (`inbound` is the path the client
/// called, for the message), and the channels the key may use for it: model scope, team,
/// model type, provider scope and group, in that order.
pub(crate) fn resolve<'s>(
    snapshot: &'s Snapshot,
    key: &KeyEntry,
    model_id: &str,
    endpoint: Endpoint,
    inbound: Endpoint,
) -> Result<(&'s ModelRoute, Vec<&'s Channel>), ApiError> {
    let model = snapshot
        .models
        .get(model_id)
        .filter(|m| key.allows_model(&m.id, m.model_type) && snapshot.team_allows(key, &m.id))
        .ok_or_else(|| ApiError::model_not_found(model_id))?;
    if endpoint.model_type() != Some(model.model_type) {
        return Err(ApiError::invalid_request(format!(
            "The model '{}' is a {} model and cannot be used with {}.",
            model.id,
            model.model_type.as_str(),
            inbound.path()
        ))
        .with_param("model"));
    }
    let group = key.group.as_deref();
    let candidates: Vec<&Channel> =
        model.channels.iter().filter(|c| key.allows_provider(&c.provider.name) && c.serves_group(group)).collect();
    if candidates.is_empty() {
        // The key's group has no channel for the model: for this key the model does not
        // exist (`/v1/models` does not list it either).
        if model.channels.iter().any(|c| key.allows_provider(&c.provider.name)) {
            return Err(ApiError::model_not_found(model_id));
        }
        return Err(ApiError::new(
            ErrorCode::ProviderNotAllowed,
            format!("This API key may not use the providers that serve '{}'.", model.id),
        ));
    }
    Ok((&**model, candidates))
}

/// The longest pause between two attempts.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);

/// What every attempt of one request shares.
struct Call<'a> {
    endpoint: Endpoint,
    parsed: &'a request::ParsedRequest,
    model: &'a ModelRoute,
    images: u64,
    prompt_estimate: u64,
    /// A `/v1/messages` request as the client sent it, for Anthropic channels.
    native: Option<&'a Native>,
}

/// A Messages request, untranslated (parsed once): the client's fields and `anthropic-beta`.
struct Native {
    request: messages::MessagesRequest,
    beta: Option<HeaderValue>,
}

/// Why an attempt on a channel gave no response.
enum Failure {
    /// Connect error, timeout, 429 or 5xx before any byte reached the client: another
    /// channel may do better.
    Retryable(ApiError),
    /// The request itself is at fault, or the provider refused it for good.
    Final(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::Final(e)
    }
}

/// Whether an upstream status is worth another channel.
pub(crate) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// An upstream error answer: relayed or replaced (see `upstream_error`), marked retryable
/// when another channel may do better.
async fn failed_answer<B>(
    res: http::Response<B>,
    provider: &Provider,
    pending: &mut Pending,
) -> Result<Response, Failure>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let again = retryable(res.status());
    match upstream_error(res, provider, pending).await {
        Ok(relayed) => Ok(relayed),
        Err(e) if again => Err(Failure::Retryable(e)),
        Err(e) => Err(Failure::Final(e)),
    }
}

/// One attempt on one channel: the body the provider expects, the call, and the answer —
/// metered when it succeeds.
async fn attempt(
    dp: &DataPlane,
    call: &Call<'_>,
    channel: &Channel,
    pending: &mut Pending,
) -> Result<Response, Failure> {
    let Call { endpoint, parsed, model, images, prompt_estimate, native } = *call;
    let mut gemini_call = None;
    let upstream_body = match &channel.provider.kind {
        ProviderKind::Gemini(_) => {
            let (body, call) = gemini::prepare(endpoint, &channel.upstream_model, &parsed.body)?;
            gemini_call = Some(call);
            body
        }
        ProviderKind::Anthropic(_) => match native {
            Some(n) => messages::native::upstream_body(&n.request, &channel.upstream_model)?,
            None => anthropic::request_body(endpoint, parsed, &channel.upstream_model, model.max_output_tokens)?,
        },
        ProviderKind::Azure(_) => azure::request_body(endpoint, parsed, &channel.upstream_model)?,
        ProviderKind::Demo { .. } | ProviderKind::OpenAi(_) => {
            parsed.upstream_body(endpoint, &channel.upstream_model)?
        }
    };
    let meter = |pending: &mut Pending| -> Option<Meter> {
        Some(Meter {
            sink: dp.usage.clone(),
            event: pending.event.take()?,
            started: pending.started,
            pricing: model.pricing,
            images,
            prompt_estimate,
            usage: None,
            output_bytes: 0,
            output_chunks: 0,
            first_byte: None,
            hold: pending.hold.take(),
            usage_is_estimate: false,
            reported_prompt: None,
            shutdown_cut: dp.shutdown_cut.clone(),
        })
    };
    let hide_usage_only = !parsed.client_wants_usage;
    let transport = |failure: UpstreamFailure| {
        tracing::warn!(provider = %channel.provider.name, error = %failure, "upstream request failed");
        Failure::Retryable(failure.to_api_error())
    };

    let rid = pending.event.as_ref().map_or_else(String::new, |e| e.request_id.clone());
    let timeout = dp.limits.first_byte_timeout;
    let idle = dp.limits.stream_idle_timeout;
    let provider = &*channel.provider;
    match &channel.provider.kind {
        ProviderKind::Demo { word_delay } => {
            let res = demo::respond(endpoint, &upstream_body, *word_delay)?;
            let meter = meter(pending).ok_or_else(ApiError::internal)?;
            Ok(metered(res, meter, hide_usage_only, Dialect::OpenAi, idle))
        }
        ProviderKind::OpenAi(target) => {
            let res = dp.client.post_json(target, endpoint, &rid, upstream_body, timeout).await.map_err(transport)?;
            if !res.status().is_success() {
                return failed_answer(res, provider, pending).await;
            }
            let meter = meter(pending).ok_or_else(ApiError::internal)?;
            Ok(metered(res, meter, hide_usage_only, Dialect::OpenAi, idle))
        }
        ProviderKind::Azure(target) => {
            // OpenAI's wire format: relayed and metered exactly as for an OpenAI provider.
            let req = target.request(&channel.upstream_model, endpoint, &rid, upstream_body).map_err(transport)?;
            let res = dp.client.send(req, timeout).await.map_err(transport)?;
            if !res.status().is_success() {
                return failed_answer(res, provider, pending).await;
            }
            let meter = meter(pending).ok_or_else(ApiError::internal)?;
            Ok(metered(res, meter, hide_usage_only, Dialect::OpenAi, idle))
        }
        ProviderKind::Anthropic(target) => {
            let mut req = target.request(&rid, upstream_body).map_err(transport)?;
            if let Some(beta) = native.and_then(|n| n.beta.clone()) {
                req.headers_mut().insert("anthropic-beta", beta);
            }
            let res = dp.client.send(req, timeout).await.map_err(transport)?;
            if !res.status().is_success() {
                return failed_answer(anthropic::openai_error(res).await, provider, pending).await;
            }
            let meter = meter(pending).ok_or_else(ApiError::internal)?;
            if native.is_some() {
                // Relayed as Anthropic sent it; the meter reads Anthropic's usage.
                let mut res = metered(res, meter, false, Dialect::Anthropic, idle);
                res.extensions_mut().insert(messages::native::NativeAnswer);
                return Ok(res);
            }
            // Translated before the meter wraps it: the meter reads OpenAI's format.
            let res = anthropic::openai_response(res).await.map_err(transport)?;
            Ok(metered(res, meter, hide_usage_only, Dialect::OpenAi, idle))
        }
        ProviderKind::Gemini(target) => {
            let call = gemini_call.ok_or_else(ApiError::internal)?;
            let upstream_model = channel.upstream_model.as_str();
            let res = gemini::send(&dp.client, target, upstream_model, &call, upstream_body, &rid, timeout)
                .await
                .map_err(transport)?;
            if !res.status().is_success() {
                return failed_answer(gemini::error_response(res).await, provider, pending).await;
            }
            // Translated between the upstream body and the meter: the meter reads OpenAI's format.
            let mut meter = meter(pending).ok_or_else(ApiError::internal)?;
            meter.usage_is_estimate = call.usage_is_estimate();
            Ok(metered(gemini::translate(&call, upstream_model, res), meter, hide_usage_only, Dialect::OpenAi, idle))
        }
    }
}

/// Wraps a successful provider response so that it is metered as it streams.
fn metered<B>(
    res: http::Response<B>,
    meter: Meter,
    hide_usage_only: bool,
    dialect: Dialect,
    idle: std::time::Duration,
) -> Response
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, inner) = res.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let is_sse = crate::sse::is_event_stream(&parts.headers);
    let body = if is_sse {
        Body::new(MeteredBody::sse(inner, meter, hide_usage_only, dialect, idle))
    } else {
        Body::new(MeteredBody::json(inner, meter, idle))
    };
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    let content_type = content_type.unwrap_or_else(|| HeaderValue::from_static("application/json"));
    out.headers_mut().insert(header::CONTENT_TYPE, content_type);
    if is_sse {
        out.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    out
}

/// An upstream answered with an error status: relay the request's own mistakes as the
/// provider worded them — its credentials removed (see [`crate::redact`]) — and replace
/// everything else with the gateway's error.
pub(crate) async fn upstream_error<B>(
    res: http::Response<B>,
    provider: &Provider,
    pending: &mut Pending,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let status = res.status();
    let retry_after =
        res.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let body = http_body_util::Limited::new(res.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match relay_status(status) {
        None => {
            let secrets = provider.secrets();
            let body = match crate::redact::redact(&body, &secrets) {
                std::borrow::Cow::Borrowed(_) => body,
                std::borrow::Cow::Owned(clean) => Bytes::from(clean),
            };
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(|m| m.chars().take(500).collect::<String>()));
            if let Some(e) = pending.event() {
                e.error = Some(message.unwrap_or_else(|| format!("upstream answered {status}")));
            }
            let mut out = Response::new(Body::from(body));
            *out.status_mut() = status;
            out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(out)
        }
        Some(mut err) => {
            tracing::warn!(provider = %provider.name, status = status.as_u16(), "upstream answered with an error status");
            if let (ErrorCode::RateLimitExceeded { retry_after_secs }, Some(secs)) = (&mut err.code, retry_after) {
                *retry_after_secs = secs;
            }
            Err(err)
        }
    }
}

pub(crate) async fn list_models(State(dp): State<Arc<DataPlane>>, req: Request) -> Response {
    let mut pending = Pending::new(&dp, &req, Endpoint::Models.path());
    let result = pending.authenticate(&dp, req.headers()).map(|key| {
        let snapshot = dp.snapshot.load();
        let team_unrestricted = snapshot.teams.get(&key.team_id).is_none_or(|t| t.allowed_models.is_empty());
        if key.sees_every_model() && team_unrestricted {
            return json_response(snapshot.model_list.clone());
        }
        let mut visible: Vec<&ModelRoute> =
            snapshot.models.values().filter(|m| may_use(&snapshot, &key, m)).map(|m| &**m).collect();
        visible.sort_by(|a, b| a.id.cmp(&b.id));
        let data: Vec<_> = visible.iter().map(|m| m.to_json()).collect();
        json_response(Bytes::from(serde_json::json!({ "object": "list", "data": data }).to_string()))
    });
    finish(&dp, pending, result)
}

pub(crate) async fn get_model(State(dp): State<Arc<DataPlane>>, Path(id): Path<String>, req: Request) -> Response {
    let mut pending = Pending::new(&dp, &req, Endpoint::Models.path());
    let result = pending.authenticate(&dp, req.headers()).and_then(|key| {
        if let Some(e) = pending.event() {
            e.model = Some(id.clone());
        }
        let snapshot = dp.snapshot.load();
        let model = snapshot
            .models
            .get(&id)
            .filter(|m| may_use(&snapshot, &key, m))
            .ok_or_else(|| ApiError::model_not_found(&id))?;
        Ok(json_response(Bytes::from(model.to_json().to_string())))
    });
    finish(&dp, pending, result)
}

/// Whether the key's model and provider scopes (and its team) leave it a way to call `model`.
fn may_use(snapshot: &Snapshot, key: &KeyEntry, model: &ModelRoute) -> bool {
    key.allows_model(&model.id, model.model_type)
        && snapshot.team_allows(key, &model.id)
        && model.channels.iter().any(|c| key.allows_provider(&c.provider.name) && c.serves_group(key.group.as_deref()))
}

pub(crate) async fn not_found(State(dp): State<Arc<DataPlane>>, req: Request) -> Response {
    let shown: String = req.uri().path().chars().take(128).collect();
    let pending = Pending::new(&dp, &req, &shown);
    let err = ApiError::new(ErrorCode::NotFound, format!("Unknown endpoint: {} {shown}", req.method()));
    finish(&dp, pending, Err(err))
}

pub(crate) async fn method_not_allowed(State(dp): State<Arc<DataPlane>>, req: Request) -> Response {
    let shown: String = req.uri().path().chars().take(128).collect();
    let pending = Pending::new(&dp, &req, &shown);
    let err = ApiError::new(ErrorCode::MethodNotAllowed, format!("{} is not allowed on {shown}", req.method()));
    finish(&dp, pending, Err(err))
}

fn finish(dp: &DataPlane, mut pending: Pending, result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(res) => {
            pending.finish_unbilled(dp, res.status(), None);
            res
        }
        Err(err) => {
            let err = pending.judge(dp).unwrap_or(err);
            pending.finish_unbilled(dp, err.status(), Some(&err));
            err.into_response()
        }
    }
}

fn json_response(body: Bytes) -> Response {
    let mut res = Response::new(Body::from(body));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}
