//! The inbound Anthropic Messages API (`POST /v1/messages`): a Messages request is
//! translated into an OpenAI chat completion request, served by the very same pipeline as
//! `/v1/chat/completions` (key, scopes, admission, failover, metering), and its answer —
//! a `chat.completion`, a chunk stream, or an error — is translated back into Anthropic's
//! shapes (`message`, the `message_start` … `message_stop` events, `{"type":"error"}`).
//!
//! Invariants: translation happens *outside* the meter — the meter reads the OpenAI-format
//! answer exactly as for chat completions, so billing cannot differ between the two
//! endpoints. The translated request always asks for the stream's usage chunk (the client
//! never sees it: it becomes `message_delta.usage`). What cannot be said to a chat model
//! faithfully is refused with a 400 naming the parameter, not dropped. At most one
//! incomplete event is buffered, and never more than [`MAX_EVENT_BYTES`].
//!
//! A model served only by Anthropic channels skips both translations: see [`native`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tollgate_core::ids::random_base62;
use tollgate_core::{ApiError, ErrorCode};

use crate::providers::anthropic::{bad, event_data, present};

pub(crate) mod count_tokens;
pub(crate) mod native;
use crate::sse::event_end;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A JSON answer (or relayed error) larger than this is treated as a failed upstream.
const MAX_JSON_ANSWER: usize = 8 << 20;
/// The largest single SSE event accepted from the metered stream.
const MAX_EVENT_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Request: Messages API → OpenAI chat completion
// ---------------------------------------------------------------------------------------------

/// The chat completion request for a Messages request body. The public model id is kept
/// (the pipeline renames it per channel); `max_tokens` is required, as Anthropic requires it.
#[cfg(test)]
pub(crate) fn chat_request(body: &[u8]) -> Result<Bytes, ApiError> {
    let req = MessagesRequest::parse(body)?;
    translate(&req)
}

/// A Messages request body, parsed, with the fields every path needs checked.
pub(crate) struct MessagesRequest {
    fields: Map<String, Value>,
    max_tokens: u64,
}

/// A Messages API body (a message, or a token count) as a JSON object naming a model.
pub(crate) fn object_with_model(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let fields: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(if e.is_data() {
            "Request body must be a JSON object.".to_owned()
        } else {
            format!("Request body is not valid JSON: {e}")
        })
    })?;
    present(&fields, "model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("model", "model: Field required (a non-empty string)."))?;
    Ok(fields)
}

impl MessagesRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let fields = object_with_model(body)?;
        let max_tokens = present(&fields, "max_tokens")
            .ok_or_else(|| bad("max_tokens", "max_tokens: Field required."))?
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("max_tokens", "max_tokens: must be a positive integer."))?;
        match present(&fields, "stream") {
            None | Some(Value::Bool(_)) => Ok(Self { fields, max_tokens }),
            Some(_) => Err(bad("stream", "stream: must be a boolean.")),
        }
    }

    /// The public model id the client named.
    pub(crate) fn model(&self) -> &str {
        present(&self.fields, "model").and_then(Value::as_str).unwrap_or_default()
    }
}

/// The chat completion request for a parsed Messages request.
pub(crate) fn translate(req: &MessagesRequest) -> Result<Bytes, ApiError> {
    let MessagesRequest { fields: req, max_tokens } = req;
    let (model, max_tokens) = (present(req, "model").cloned().unwrap_or_default(), *max_tokens);
    reject_untranslatable(req)?;

    let mut out = Map::new();
    out.insert("model".into(), model);
    let mut messages = Vec::new();
    if let Some(system) = present(req, "system") {
        let text = texts(system, "system")?.join("\n\n");
        if !text.is_empty() {
            messages.push(json!({ "role": "system", "content": text }));
        }
    }
    translate_messages(present(req, "messages"), &mut messages)?;
    out.insert("messages".into(), messages.into());
    out.insert("max_tokens".into(), max_tokens.into());
    for number in ["temperature", "top_p"] {
        if let Some(v) = present(req, number) {
            if !v.is_number() {
                return Err(bad(number, format!("{number}: must be a number.")));
            }
            out.insert(number.into(), v.clone());
        }
    }
    if let Some(stop) = present(req, "stop_sequences") {
        let stop = stop
            .as_array()
            .filter(|s| s.iter().all(Value::is_string))
            .ok_or_else(|| bad("stop_sequences", "stop_sequences: must be an array of strings."))?;
        if !stop.is_empty() {
            out.insert("stop".into(), stop.clone().into());
        }
    }
    let has_tools = match present(req, "tools") {
        Some(tools) => {
            let tools = translate_tools(tools)?;
            let any = !tools.is_empty();
            if any {
                out.insert("tools".into(), tools.into());
            }
            any
        }
        None => false,
    };
    if let Some(choice) = present(req, "tool_choice") {
        translate_tool_choice(choice, has_tools, &mut out)?;
    }
    if let Some(user) = present(req, "metadata").and_then(|m| m.get("user_id")).filter(|u| !u.is_null()) {
        let user = user.as_str().ok_or_else(|| bad("metadata.user_id", "metadata.user_id: must be a string."))?;
        out.insert("user".into(), user.into());
    }
    if present(req, "stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), true.into());
        // The usage chunk becomes `message_delta.usage`; it is never shown as a chunk.
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    serde_json::to_vec(&out).map(Bytes::from).map_err(|_| ApiError::internal())
}

/// Parameters a chat completion cannot express, refused when set.
fn reject_untranslatable(req: &Map<String, Value>) -> Result<(), ApiError> {
    if present(req, "top_k").is_some() {
        return Err(bad("top_k", "top_k: is not supported by this gateway for this model."));
    }
    if present(req, "thinking").is_some_and(|t| t.get("type").and_then(Value::as_str) != Some("disabled")) {
        return Err(bad("thinking", "thinking: extended thinking is not supported by this gateway."));
    }
    for key in ["mcp_servers", "container"] {
        if present(req, key).is_some() {
            return Err(bad(key, format!("{key}: is not supported by this gateway.")));
        }
    }
    Ok(())
}

/// A string, or an array of `text` blocks (as `system` and tool results may be).
fn texts(content: &Value, at: &str) -> Result<Vec<String>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| match block_type(b) {
                Some("text") => block_text(b, &format!("{at}[{j}]")),
                _ => Err(bad(format!("{at}[{j}].type"), format!("{at}[{j}]: only text blocks are allowed here."))),
            })
            .collect(),
        _ => Err(bad(at, format!("{at}: must be a string or an array of text blocks."))),
    }
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

fn block_text(block: &Value, at: &str) -> Result<String, ApiError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{at}.text"), format!("{at}.text: Field required (a string).")))
}

/// User turns become `user` messages (their `tool_result` blocks, which Anthropic puts
/// first, become the `tool` messages OpenAI expects right after the assistant's calls);
/// assistant turns become `assistant` messages with `tool_calls`.
fn translate_messages(messages: Option<&Value>, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let messages = messages
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("messages", "messages: must be a non-empty array."))?;
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str) {
            Some("user") => user_message(content, &at, out)?,
            Some("assistant") => out.push(assistant_message(content, &at)?),
            _ => return Err(bad(format!("{at}.role"), format!("{at}.role: must be 'user' or 'assistant'."))),
        }
    }
    Ok(())
}

fn user_message(content: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({ "role": "user", "content": s }));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(bad(format!("{at}.content"), format!("{at}.content: must be a string or an array."))),
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block_type(block) {
            Some("text") => parts.push(json!({ "type": "text", "text": block_text(block, &at)? })),
            Some("image") => parts.push(image_part(block, &at)?),
            Some("tool_result") => out.push(tool_message(block, &at)?),
            _ => {
                return Err(bad(
                    format!("{at}.type"),
                    format!("{at}: only text, image and tool_result blocks can be sent to this model."),
                ));
            }
        }
    }
    let content = match parts.as_slice() {
        [] => return Ok(()),
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({ "role": "user", "content": content }));
    Ok(())
}

/// A base64 image becomes a data URL; a URL image passes as its URL.
fn image_part(block: &Value, at: &str) -> Result<Value, ApiError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let field = |name: &str| source.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => match (field("media_type"), field("data")) {
            (Some(media_type), Some(data)) if media_type.starts_with("image/") => {
                format!("data:{media_type};base64,{data}")
            }
            _ => {
                return Err(bad(
                    format!("{at}.source"),
                    format!("{at}.source: a base64 image needs an image/* media_type and data."),
                ));
            }
        },
        Some("url") => field("url")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| bad(format!("{at}.source.url"), format!("{at}.source.url: must be an http(s) URL.")))?
            .to_owned(),
        _ => {
            return Err(bad(
                format!("{at}.source.type"),
                format!("{at}.source.type: only base64 and url images can be sent to this model."),
            ));
        }
    };
    Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
}

fn tool_message(block: &Value, at: &str) -> Result<Value, ApiError> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(format!("{at}.tool_use_id"), format!("{at}.tool_use_id: Field required.")))?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(content) => texts(content, &format!("{at}.content"))?.concat(),
    };
    // A chat model has no error flag on tool output: say it in the text.
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({ "role": "tool", "tool_call_id": id, "content": text }))
}

fn assistant_message(content: &Value, at: &str) -> Result<Value, ApiError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({ "role": "assistant", "content": s })),
        Value::Array(blocks) => blocks,
        _ => return Err(bad(format!("{at}.content"), format!("{at}.content: must be a string or an array."))),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block_type(block) {
            Some("text") => text.push_str(&block_text(block, &at)?),
            Some("tool_use") => {
                let field = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| bad(format!("{at}.{name}"), format!("{at}.{name}: Field required.")))
                };
                let input = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(input @ Value::Object(_)) => input.to_string(),
                    Some(_) => return Err(bad(format!("{at}.input"), format!("{at}.input: must be an object."))),
                };
                calls.push(json!({
                    "id": field("id")?,
                    "type": "function",
                    "function": { "name": field("name")?, "arguments": input },
                }));
            }
            // The model's own reasoning from an earlier turn: a chat model neither needs
            // nor accepts it.
            Some("thinking" | "redacted_thinking") => {}
            _ => {
                return Err(bad(
                    format!("{at}.type"),
                    format!("{at}: only text and tool_use blocks can be sent in assistant turns."),
                ));
            }
        }
    }
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) };
    let mut message = json!({ "role": "assistant", "content": content });
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    Ok(message)
}

fn translate_tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let tools = tools.as_array().ok_or_else(|| bad("tools", "tools: must be an array."))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        if let Some(kind) = block_type(tool).filter(|t| *t != "custom") {
            let shown: String = kind.chars().take(64).collect();
            return Err(bad(format!("{at}.type"), format!("{at}: server tool '{shown}' is not available here.")));
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("{at}.name"), format!("{at}.name: Field required.")))?;
        let mut function = Map::new();
        function.insert("name".into(), name.into());
        if let Some(description) = tool.get("description").and_then(Value::as_str) {
            function.insert("description".into(), description.into());
        }
        let schema = tool
            .get("input_schema")
            .filter(|s| s.is_object())
            .cloned()
            .ok_or_else(|| bad(format!("{at}.input_schema"), format!("{at}.input_schema: Field required.")))?;
        function.insert("parameters".into(), schema);
        out.push(json!({ "type": "function", "function": function }));
    }
    Ok(out)
}

/// `auto`/`any`/`tool`/`none` → `auto`/`required`/a named function/`none`;
/// `disable_parallel_tool_use` → `parallel_tool_calls: false`.
fn translate_tool_choice(choice: &Value, has_tools: bool, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let translated = match block_type(choice) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name", "tool_choice.name: Field required."))?;
            json!({ "type": "function", "function": { "name": name } })
        }
        _ => return Err(bad("tool_choice.type", "tool_choice.type: must be 'auto', 'any', 'tool' or 'none'.")),
    };
    // OpenAI refuses both without tools; Anthropic accepts them, so they are moot.
    if !has_tools {
        return Ok(());
    }
    out.insert("tool_choice".into(), translated);
    if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), false.into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Answers: OpenAI chat completion → Messages API (JSON, stream, errors)
// ---------------------------------------------------------------------------------------------

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

fn error_body(status: StatusCode, kind: &str, message: &str) -> Response {
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
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
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
fn relayed_error(status: StatusCode, body: &[u8]) -> Response {
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

fn message_id() -> String {
    format!("msg_{}", random_base62(24))
}

/// `finish_reason` → `stop_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        // "stop" — a chat completion does not say whether a stop sequence matched.
        _ => "end_turn",
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct UsageView {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl UsageView {
    /// Anthropic counts cache reads apart from `input_tokens`; OpenAI within `prompt_tokens`.
    fn to_anthropic(self) -> Value {
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
struct CompletionView {
    #[serde(default)]
    choices: Option<Vec<ChoiceView>>,
    #[serde(default)]
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct ChoiceView {
    #[serde(default)]
    message: Option<MessageView>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageView {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallView>>,
}

#[derive(Deserialize)]
struct ToolCallView {
    #[serde(default)]
    id: String,
    #[serde(default)]
    function: Option<FunctionView>,
}

#[derive(Deserialize)]
struct FunctionView {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// A tool call's `arguments` (a JSON string) as the `input` object Anthropic expects.
fn tool_input(arguments: Option<&str>) -> Value {
    match arguments.map(str::trim) {
        None | Some("") => json!({}),
        Some(args) => serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or_else(|| {
            tracing::warn!("a tool call's arguments are not a JSON object; sent as an empty input");
            json!({})
        }),
    }
}

/// A whole `chat.completion` as a `message`.
fn message(body: &[u8], id: &str, model: &str) -> Result<Bytes, serde_json::Error> {
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

/// Metered OpenAI chunks in, Anthropic stream events out, one frame at a time.
pub(crate) struct EventStream<B> {
    inner: B,
    pending: BytesMut,
    state: StreamState,
    ended: bool,
}

impl<B> EventStream<B> {
    fn new(inner: B, id: String, model: String) -> Self {
        Self { inner, pending: BytesMut::new(), state: StreamState::new(id, model), ended: false }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        while !self.state.done
            && let Some(end) = event_end(&self.pending)
        {
            let event = self.pending.split_to(end);
            self.state.translate(&event, out);
        }
        if !self.state.done && self.pending.len() > MAX_EVENT_BYTES {
            tracing::warn!("a stream event exceeded {MAX_EVENT_BYTES} bytes");
            self.state.fail("The upstream provider sent an oversized event.", out);
        }
    }
}

impl<B> http_body::Body for EventStream<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !this.state.done
                    {
                        this.pending.extend_from_slice(&data);
                        this.drain(&mut out);
                    }
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.ended = true;
                    if !this.state.done && !this.pending.is_empty() {
                        this.pending.extend_from_slice(b"\n\n");
                        this.drain(&mut out);
                    }
                    // A stream that ended without `[DONE]` but cleanly still closes properly.
                    if !this.state.done {
                        this.state.close(&mut out);
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[derive(Deserialize)]
struct ChunkView {
    #[serde(default)]
    choices: Option<Vec<ChunkChoiceView>>,
    #[serde(default)]
    usage: Option<UsageView>,
    #[serde(default)]
    error: Option<ChunkErrorView>,
}

#[derive(Deserialize)]
struct ChunkErrorView {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ChunkChoiceView {
    #[serde(default)]
    delta: Option<DeltaView>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaView {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDeltaView>>,
}

#[derive(Deserialize)]
struct ToolCallDeltaView {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionView>,
}

/// The content block being streamed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

/// What the translation of one stream has seen so far.
struct StreamState {
    id: String,
    model: String,
    started: bool,
    /// The open block and its Anthropic index.
    open: Option<(Open, u64)>,
    next_index: u64,
    /// Each OpenAI tool-call index with the Anthropic block index it opened.
    tools: Vec<(u64, u64)>,
    finish: Option<String>,
    usage: UsageView,
    /// `message_stop` or an `error` event is out: nothing more is sent.
    done: bool,
}

impl StreamState {
    fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            started: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish: None,
            usage: UsageView::default(),
            done: false,
        }
    }

    fn translate(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let Some(data) = event_data(event) else {
            return;
        };
        if data == b"[DONE]" {
            self.close(out);
            return;
        }
        let chunk: ChunkView = match serde_json::from_slice(&data) {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(error = %e, "a stream event is not a chat completion chunk");
                self.fail("The upstream provider sent an unreadable event.", out);
                return;
            }
        };
        if let Some(error) = chunk.error {
            let message = error.message.unwrap_or_else(|| "The upstream provider interrupted the stream.".to_owned());
            self.fail(&message, out);
            return;
        }
        self.start(out);
        if let Some(usage) = chunk.usage {
            self.usage = usage;
        }
        for choice in chunk.choices.unwrap_or_default() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    self.text(&text, out);
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    self.tool_call(call, out);
                }
            }
            if let Some(finish) = choice.finish_reason {
                self.finish = Some(finish);
            }
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        // A chat stream reports usage only at its end: `message_delta` carries the counts.
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": { "input_tokens": 0, "output_tokens": 0 },
        });
        write_event(out, "message_start", &json!({ "type": "message_start", "message": message }));
    }

    /// Opens a block of `kind` unless it is the open one; returns its index.
    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<u8>) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.stop_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        let start = json!({ "type": "content_block_start", "index": index, "content_block": block });
        write_event(out, "content_block_start", &start);
        index
    }

    fn stop_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            write_event(out, "content_block_stop", &json!({ "type": "content_block_stop", "index": index }));
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = self.open(Open::Text, json!({ "type": "text", "text": "" }), out);
        let delta =
            json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": text } });
        write_event(out, "content_block_delta", &delta);
    }

    fn tool_call(&mut self, call: ToolCallDeltaView, out: &mut Vec<u8>) {
        let k = call.index.unwrap_or(0);
        let (name, arguments) = call.function.map_or((None, None), |f| (f.name, f.arguments));
        let index = match self.tools.iter().find(|(tool, _)| *tool == k) {
            Some(&(_, index)) => index,
            None => {
                let block = json!({
                    "type": "tool_use",
                    "id": call.id.unwrap_or_default(),
                    "name": name.unwrap_or_default(),
                    "input": {},
                });
                let index = self.open(Open::Tool(k), block, out);
                self.tools.push((k, index));
                index
            }
        };
        if let Some(partial) = arguments.filter(|a| !a.is_empty()) {
            let delta = json!({
                "type": "content_block_delta",
                "index": index,
                "delta": { "type": "input_json_delta", "partial_json": partial },
            });
            write_event(out, "content_block_delta", &delta);
        }
    }

    /// The end of a complete stream: the open block, the stop reason with the usage, the stop.
    fn close(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.stop_block(out);
        let delta = json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null },
            "usage": self.usage.to_anthropic(),
        });
        write_event(out, "message_delta", &delta);
        write_event(out, "message_stop", &json!({ "type": "message_stop" }));
        self.done = true;
    }

    /// A failed stream ends with an `error` event (no `message_stop`), as Anthropic's do.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        let error = json!({ "type": "error", "error": { "type": "api_error", "message": message } });
        write_event(out, "error", &error);
        self.done = true;
    }
}

fn write_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests;
