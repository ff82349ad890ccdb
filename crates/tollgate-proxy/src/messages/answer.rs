//! Answers: the pipeline's OpenAI-shaped answer into Anthropic's — a JSON `message`, a
//! relayed error in Anthropic's error shape, and the gateway's own errors with its statuses.
//! Streams are `stream.rs`'s.

use super::*;

/// An error of this endpoint in Anthropic's shape, with the status the gateway uses.
pub(crate) fn error_response(err: &ApiError) -> Response {
    use ErrorCode as E;
    let kind = match err.code {
        E::InvalidApiKey | E::KeyExpired | E::KeyDisabled | E::IpNotAllowed | E::Unauthorized => "authentication_error",
        E::EndpointNotAllowed | E::ProviderNotAllowed | E::Forbidden => "permission_error",
        E::ModelNotFound | E::NotFound => "not_found_error",
        E::RateLimitExceeded { .. } | E::InsufficientQuota => "rate_limit_error",
        E::InvalidRequest | E::Conflict | E::MethodNotAllowed => "invalid_request_error",
        E::RequestTooLarge => "request_too_large",
        E::Unavailable => "overloaded_error",
        E::UpstreamError | E::UpstreamTimeout | E::Internal => "api_error",
    };
    let mut res = error_body(err.status(), kind, &err.message);
    if let ErrorCode::RateLimitExceeded { retry_after_secs } = err.code {
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
    }
    res
}

pub(super) fn error_body(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The pipeline's answer in Anthropic's shape: a metered stream is translated as it flows;
/// a JSON message, or an upstream error relayed as the provider worded it, is read whole
/// (bounded) and translated. Status and headers are kept.
pub(crate) async fn answer(res: Response, model: &str) -> Response {
    let (mut parts, body) = res.into_parts();
    let is_sse = crate::sse::is_event_stream(&parts.headers);
    if is_sse && parts.status.is_success() {
        let stream = EventStream::new(body, message_id(), model.to_owned());
        return Response::from_parts(parts, Body::new(stream));
    }
    let bytes = match Limited::new(body, MAX_JSON_ANSWER).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // The meter has recorded the interruption; the client gets a clean error.
            tracing::warn!(error = %e, "reading the answer to translate it failed");
            let err = ApiError::new(ErrorCode::UpstreamError, "The upstream provider interrupted the answer.");
            return error_response(&err);
        }
    };
    let translated = if parts.status.is_success() {
        match message(&bytes, &message_id(), model) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(error = %e, "the answer is not a chat completion");
                return error_response(&ApiError::new(
                    ErrorCode::UpstreamError,
                    "The upstream provider failed to answer.",
                ));
            }
        }
    } else {
        return relayed_error(parts.status, &bytes);
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(translated))
}

/// A request error the provider worded (OpenAI's shape), in Anthropic's shape.
pub(super) fn relayed_error(status: StatusCode, body: &[u8]) -> Response {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(|m| m.chars().take(2000).collect::<String>()))
        .unwrap_or_else(|| format!("The upstream provider answered {status}."));
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    error_body(status, kind, &message)
}

pub(super) fn message_id() -> String {
    format!("msg_{}", random_base62(24))
}

/// `finish_reason` → `stop_reason`.
pub(super) fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        // "stop" — a chat completion does not say whether a stop sequence matched.
        _ => "end_turn",
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct UsageView {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl UsageView {
    /// Anthropic counts cache reads apart from `input_tokens`; OpenAI within `prompt_tokens`.
    pub(super) fn to_anthropic(self) -> Value {
        let cached = self.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0);
        let mut usage = json!({
            "input_tokens": self.prompt_tokens.unwrap_or(0).saturating_sub(cached),
            "output_tokens": self.completion_tokens.unwrap_or(0),
        });
        if cached > 0 {
            usage["cache_read_input_tokens"] = cached.into();
        }
        usage
    }
}

#[derive(Deserialize)]
pub(super) struct CompletionView {
    #[serde(default)]
    choices: Option<Vec<ChoiceView>>,
    #[serde(default)]
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
pub(super) struct ChoiceView {
    #[serde(default)]
    message: Option<MessageView>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct MessageView {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallView>>,
}

#[derive(Deserialize)]
pub(super) struct ToolCallView {
    #[serde(default)]
    id: String,
    #[serde(default)]
    function: Option<FunctionView>,
}

#[derive(Deserialize)]
pub(super) struct FunctionView {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) arguments: Option<String>,
}

/// A tool call's `arguments` (a JSON string) as the `input` object Anthropic expects.
pub(super) fn tool_input(arguments: Option<&str>) -> Value {
    match arguments.map(str::trim) {
        None | Some("") => json!({}),
        Some(args) => serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or_else(|| {
            tracing::warn!("a tool call's arguments are not a JSON object; sent as an empty input");
            json!({})
        }),
    }
}

/// A whole `chat.completion` as a `message`.
pub(super) fn message(body: &[u8], id: &str, model: &str) -> Result<Bytes, serde_json::Error> {
    let completion: CompletionView = serde_json::from_slice(body)?;
    let choice = completion.choices.and_then(|c| c.into_iter().next());
    let finish = choice.as_ref().and_then(|c| c.finish_reason.clone());
    let mut content = Vec::new();
    if let Some(m) = choice.and_then(|c| c.message) {
        let text = match m.content {
            Some(Value::String(s)) => s,
            Some(Value::Array(parts)) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            _ => String::new(),
        };
        if !text.is_empty() {
            content.push(json!({ "type": "text", "text": text }));
        }
        for call in m.tool_calls.unwrap_or_default() {
            let function = call.function.unwrap_or(FunctionView { name: None, arguments: None });
            content.push(json!({
                "type": "tool_use",
                "id": call.id,
                "name": function.name.unwrap_or_default(),
                "input": tool_input(function.arguments.as_deref()),
            }));
        }
    }
    let message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish.as_deref()),
        "stop_sequence": null,
        "usage": completion.usage.unwrap_or_default().to_anthropic(),
    });
    serde_json::to_vec(&message).map(Bytes::from)
}
