//! `POST /v1/messages/count_tokens`: how many input tokens a Messages request would take,
//! before sending it (Claude Code asks this often, to manage its context window).
//!
//! A model served only by Anthropic channels asks Anthropic — the client's body with the
//! channel's model name, as for a native message — and relays its exact count, trying the
//! channels in routing order. Any other model gets an estimate, computed here from the
//! request's text (about four bytes a token) and marked `tollgate-token-count: estimate`.
//!
//! Counting is free: nothing is reserved, no rate limit is consumed, the usage row costs
//! nothing. It is allowed to every key that may call `/v1/messages` (the same scope), and
//! checks the key, model scope, team, provider scope and group as a message would.
//! Answers and errors are in Anthropic's shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, ErrorCode};

use crate::accounts::clock_micros;
use crate::handler::{Pending, resolve, retryable, upstream_error, with_request_id};
use crate::providers::anthropic::{self, bad, present};
use crate::snapshot::ProviderKind;
use crate::{DataPlane, RequestId, request, routing};

/// The path, as usage rows and metrics name it.
pub(crate) const PATH: &str = "/v1/messages/count_tokens";
/// The largest count answer read from Anthropic.
const MAX_ANSWER: usize = 64 << 10;
/// Bytes per token, for the estimate.
const BYTES_PER_TOKEN: usize = 4;

pub(crate) async fn count_tokens(State(dp): State<Arc<DataPlane>>, req: Request) -> Response {
    let mut pending = Pending::new(&dp, &req, PATH);
    let request_id = req.extensions().get::<RequestId>().cloned();
    let mut res = match count(&dp, req, &mut pending).await {
        Ok(res) => {
            pending.finish_unbilled(&dp, res.status(), None);
            res
        }
        Err(err) => pending.refuse(&dp, &err, super::error_response),
    };
    with_request_id(&mut res, request_id);
    res
}

async fn count(dp: &DataPlane, req: Request, pending: &mut Pending) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let key = pending.authenticate(dp, &parts.headers)?;
    if !key.allows_endpoint(Endpoint::Messages) {
        return Err(ApiError::new(ErrorCode::EndpointNotAllowed, "This API key may not call /v1/messages."));
    }
    let body = request::read_body(body, &parts.headers, dp.limits.max_body_bytes).await?;
    pending.body_consumed = true;
    let mut fields = parse(&body)?;
    let model_id = present(&fields, "model").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(e) = pending.event() {
        e.model = Some(model_id.clone());
    }
    let snapshot = dp.snapshot.load();
    let (model, candidates) = resolve(&snapshot, &key, &model_id, Endpoint::ChatCompletions, Endpoint::Messages)?;
    if !model.anthropic_only() {
        return Ok(counted(Bytes::from(estimate(&fields).to_string()), true));
    }
    let rid = pending.event().map_or_else(String::new, |e| e.request_id.clone());
    let beta = super::native::beta_header(&parts.headers);
    let mut plan = routing::plan(&candidates, clock_micros(), routing::random_u64);
    if plan.is_empty() {
        plan = routing::plan_ignoring_health(&candidates, routing::random_u64);
    }
    let mut last = ApiError::internal();
    for channel in plan {
        let ProviderKind::Anthropic(target) = &channel.provider.kind else { continue };
        pending.tried(channel);
        fields.insert("model".into(), Value::from(channel.upstream_model.as_str()));
        let body = serde_json::to_vec(&fields).map(Bytes::from).map_err(|_| ApiError::internal())?;
        let mut req = target.count_tokens_request(&rid, body).map_err(|f| f.to_api_error())?;
        if let Some(beta) = beta.clone() {
            req.headers_mut().insert("anthropic-beta", beta);
        }
        let res = match dp.client.send(req, dp.limits.first_byte_timeout).await {
            Ok(res) => res,
            Err(failure) => {
                tracing::warn!(provider = %channel.provider.name, error = %failure, "counting tokens failed");
                last = failure.to_api_error();
                continue;
            }
        };
        let status = res.status();
        if status.is_success() {
            let read = Limited::new(res.into_body(), MAX_ANSWER).collect().await.map(|c| c.to_bytes());
            let count =
                read.ok().filter(|b| serde_json::from_slice::<Value>(b).is_ok_and(|v| v["input_tokens"].is_u64()));
            return count
                .map(|b| counted(b, false))
                .ok_or_else(|| ApiError::new(ErrorCode::UpstreamError, "The upstream provider failed to answer."));
        }
        // The request's own mistakes are relayed as Anthropic worded them; failures of the
        // provider move on to the next channel.
        match upstream_error(anthropic::openai_error(res).await, &channel.provider, pending).await {
            Ok(relayed) => return Ok(super::answer(relayed, &model_id).await),
            Err(e) if retryable(status) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The request's fields: a JSON object naming a model (no `max_tokens` needed).
fn parse(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let fields = super::object_with_model(body)?;
    if !present(&fields, "messages").is_some_and(Value::is_array) {
        return Err(bad("messages", "messages: Field required (an array)."));
    }
    Ok(fields)
}

/// `{"input_tokens": N}` estimated from the text a model would read: the system prompt, the
/// messages and the tool definitions, as JSON, about four bytes a token.
fn estimate(fields: &Map<String, Value>) -> Value {
    let bytes: usize = ["system", "messages", "tools"]
        .iter()
        .filter_map(|f| present(fields, f))
        .map(|v| serde_json::to_vec(v).map_or(0, |b| b.len()))
        .sum();
    serde_json::json!({ "input_tokens": bytes.div_ceil(BYTES_PER_TOKEN) })
}

fn counted(body: Bytes, estimated: bool) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if estimated {
        res.headers_mut().insert("tollgate-token-count", HeaderValue::from_static("estimate"));
    }
    res
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn estimates_count_the_text_a_model_reads() {
        let fields =
            parse(br#"{"model":"m","system":"Be brief.","messages":[{"role":"user","content":"hello there"}]}"#)
                .unwrap();
        let expected = (r#""Be brief.""#.len() + r#"[{"role":"user","content":"hello there"}]"#.len()).div_ceil(4);
        assert_eq!(estimate(&fields), json!({ "input_tokens": expected }));
        assert_eq!(parse(br#"{"model":"m"}"#).unwrap_err().param.as_deref(), Some("messages"));
        assert_eq!(parse(br#"{"messages":[]}"#).unwrap_err().param.as_deref(), Some("model"));
    }
}
