//! The `anthropic` provider: an OpenAI chat completion goes out as a Messages API request
//! (`POST {base}/v1/messages`), and the answer comes back in OpenAI's wire format — a JSON
//! message as one `chat.completion`, a stream event by event as `chat.completion.chunk`s —
//! *before* the meter sees it, so metering, usage-chunk hiding and billing run exactly as
//! for an OpenAI-compatible provider.
//!
//! Invariants: the upstream URI and the `x-api-key` header are built once per provider,
//! never from request fields. What cannot be said to Anthropic faithfully is refused with a
//! 400 naming the parameter, not dropped. A translated stream ends with a usage-only chunk
//! and `[DONE]` (the meter bills from the first and hides it from clients that did not ask),
//! or fails: an `error` event, a broken connection or an end before `message_stop` all
//! fail the body, which the meter records as `upstream_interrupted`. At most one incomplete
//! event is buffered, and never more than [`MAX_EVENT_BYTES`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, Secret};

use crate::request::ParsedRequest;
use crate::sse::event_end;
use crate::upstream::UpstreamFailure;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A JSON message larger than this is treated as a failed upstream.
const MAX_JSON_RESPONSE: usize = 8 << 20;
/// Bytes of an error body read to translate it.
const MAX_ERROR_BODY: usize = 64 << 10;
/// The largest single SSE event accepted from the upstream.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// An Anthropic provider, ready to call: its Messages URI and headers are built once.
#[derive(Debug)]
pub struct AnthropicUpstream {
    pub base_url: String,
    messages_uri: http::Uri,
    /// Marked sensitive; `None` for keyless Anthropic-compatible local servers.
    api_key: Option<HeaderValue>,
    version: HeaderValue,
}

impl AnthropicUpstream {
    /// The `anthropic-version` sent when the provider's config names none.
    pub const DEFAULT_VERSION: &str = "2023-06-01";
    /// The API root when the provider's config names none.
    pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

    /// `base_url` is the API root (`https://api.anthropic.com`); a root ending in `/v1` is
    /// accepted too. Fails (naming neither URL nor key) if they do not form valid requests.
    pub fn new(base_url: &str, api_key: &Secret, version: &str) -> Result<Self, String> {
        let base = base_url.trim_end_matches('/');
        let path = if base.ends_with("/v1") { "/messages" } else { "/v1/messages" };
        let messages_uri =
            format!("{base}{path}").parse().map_err(|_| "the base URL does not form a valid URI".to_owned())?;
        let api_key = if api_key.is_empty() {
            None
        } else {
            let mut v = HeaderValue::from_str(api_key.expose())
                .map_err(|_| "the API key is not a valid header value".to_owned())?;
            v.set_sensitive(true);
            Some(v)
        };
        let version =
            HeaderValue::from_str(version).map_err(|_| "anthropic_version is not a valid header value".to_owned())?;
        Ok(Self { base_url: base.to_owned(), messages_uri, api_key, version })
    }

    /// The upstream request for a body made by [`request_body`].
    pub(crate) fn request(&self, request_id: &str, body: Bytes) -> Result<Request<Full<Bytes>>, UpstreamFailure> {
        let mut req =
            Request::post(self.messages_uri.clone()).body(Full::new(body)).map_err(|_| UpstreamFailure::BadUrl)?;
        let headers = req.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))));
        headers.insert("anthropic-version", self.version.clone());
        if let Some(key) = &self.api_key {
            headers.insert("x-api-key", key.clone());
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", id);
        }
        Ok(req)
    }
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat completion → Messages API
// ---------------------------------------------------------------------------------------------

/// The Messages API body for the client's request. Only chat completions can be served
/// here; `default_max_tokens` (the model's `max_output_tokens`) fills Anthropic's required
/// `max_tokens` when the client set none, which is also what the reservation assumed.
pub(crate) fn request_body(
    endpoint: Endpoint,
    parsed: &ParsedRequest,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Bytes, ApiError> {
    if endpoint != Endpoint::ChatCompletions {
        return Err(ApiError::invalid_request(format!(
            "The model '{}' is served by an Anthropic channel, which answers /v1/chat/completions only, not {}.",
            parsed.model,
            endpoint.path()
        ))
        .with_param("model"));
    }
    let req: Map<String, Value> = serde_json::from_slice(&parsed.body)
        .map_err(|_| ApiError::invalid_request("Request body must be a JSON object."))?;
    let max_tokens = parsed.max_tokens.unwrap_or(default_max_tokens);
    let out = translate_request(&req, upstream_model, max_tokens, parsed.stream)?;
    serde_json::to_vec(&out).map(Bytes::from).map_err(|_| ApiError::internal())
}

pub(crate) fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// A field that is set (present and not `null`).
pub(crate) fn present<'a>(req: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    req.get(key).filter(|v| !v.is_null())
}

fn translate_request(
    req: &Map<String, Value>,
    upstream_model: &str,
    max_tokens: u64,
    stream: bool,
) -> Result<Value, ApiError> {
    reject_untranslatable(req)?;
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("max_tokens".into(), max_tokens.into());
    let (system, messages) = translate_messages(req.get("messages"))?;
    if let Some(system) = system {
        out.insert("system".into(), system.into());
    }
    out.insert("messages".into(), messages);
    if let Some(t) = present(req, "temperature") {
        // Anthropic's range is [0, 1], OpenAI's [0, 2]: rescaling would change the meaning.
        if !t.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)) {
            return Err(bad("temperature", "'temperature' must be a number between 0 and 1 for Anthropic models."));
        }
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = present(req, "top_p") {
        if !p.is_number() {
            return Err(bad("top_p", "'top_p' must be a number."));
        }
        out.insert("top_p".into(), p.clone());
    }
    if let Some(stop) = present(req, "stop") {
        let sequences = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
            _ => return Err(bad("stop", "'stop' must be a string or an array of strings.")),
        };
        if !sequences.is_empty() {
            out.insert("stop_sequences".into(), sequences.into());
        }
    }
    if let Some(tools) = present(req, "tools") {
        let tools = translate_tools(tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), tools.into());
        }
    }
    let parallel = present(req, "parallel_tool_calls").and_then(Value::as_bool);
    if let Some(choice) = translate_tool_choice(present(req, "tool_choice"), parallel, out.contains_key("tools"))? {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = present(req, "user") {
        let user = user.as_str().ok_or_else(|| bad("user", "'user' must be a string."))?;
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if stream {
        out.insert("stream".into(), true.into());
    }
    Ok(Value::Object(out))
}

/// Parameters with no Anthropic equivalent, refused when set to anything but their default.
fn reject_untranslatable(req: &Map<String, Value>) -> Result<(), ApiError> {
    let set = |key: &str| present(req, key);
    let checks: [(&str, bool, &str); 12] = [
        ("n", set("n").is_some_and(|n| n.as_u64() != Some(1)), "Anthropic models return one choice: 'n' must be 1."),
        ("logprobs", set("logprobs").is_some_and(|v| v != &Value::Bool(false)), "Anthropic models return no logprobs."),
        ("top_logprobs", set("top_logprobs").is_some(), "Anthropic models return no logprobs."),
        (
            "response_format",
            set("response_format").is_some_and(|f| f.get("type").and_then(Value::as_str) != Some("text")),
            "Anthropic models do not take 'response_format'; describe the format in the prompt or use tools.",
        ),
        (
            "logit_bias",
            set("logit_bias").is_some_and(|b| b.as_object().is_none_or(|m| !m.is_empty())),
            "Anthropic models do not take 'logit_bias'.",
        ),
        (
            "presence_penalty",
            set("presence_penalty").is_some_and(|v| v.as_f64() != Some(0.0)),
            "Anthropic models do not take 'presence_penalty'.",
        ),
        (
            "frequency_penalty",
            set("frequency_penalty").is_some_and(|v| v.as_f64() != Some(0.0)),
            "Anthropic models do not take 'frequency_penalty'.",
        ),
        (
            "modalities",
            set("modalities").is_some_and(|m| m != &json!(["text"])),
            "Anthropic models answer with text only.",
        ),
        ("audio", set("audio").is_some(), "Anthropic models answer with text only."),
        ("prediction", set("prediction").is_some(), "Anthropic models do not take 'prediction'."),
        ("functions", set("functions").is_some(), "'functions' is deprecated; use 'tools'."),
        ("function_call", set("function_call").is_some(), "'function_call' is deprecated; use 'tool_choice'."),
    ];
    match checks.iter().find(|(_, refused, _)| *refused) {
        Some((param, _, message)) => Err(bad(*param, *message)),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// `system`/`developer` messages become the top-level `system`; the rest become strictly
/// alternating user/assistant turns (consecutive same-role messages merged, `tool`
/// messages turned into the user's `tool_result` blocks). Empty messages are left out.
fn translate_messages(messages: Option<&Value>) -> Result<(Option<String>, Value), ApiError> {
    let messages = messages
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("messages", "'messages' must be a non-empty array."))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                system.extend(texts(content, &at)?.into_iter().filter(|t| !t.is_empty()));
                continue;
            }
            Some("user") => (Role::User, user_blocks(content, &at)?),
            Some("assistant") => (Role::Assistant, assistant_blocks(m, content, &at)?),
            Some("tool") => (Role::User, vec![tool_result(m, content, &at)?]),
            Some(other) => {
                let shown: String = other.chars().take(32).collect();
                return Err(bad(
                    format!("{at}.role"),
                    format!("Role '{shown}' is not supported for Anthropic models."),
                ));
            }
            None => return Err(bad(format!("{at}.role"), "Every message needs a 'role'.")),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(bad("messages", "'messages' needs at least one user or assistant message with content."));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let turns = turns.into_iter().map(|(role, content)| json!({ "role": role.as_str(), "content": content })).collect();
    Ok((system, Value::Array(turns)))
}

/// The texts of a content that may hold text only: a string or `text` parts.
fn texts(content: &Value, at: &str) -> Result<Vec<String>, ApiError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match part.get("type").and_then(Value::as_str) {
                Some("text") => part_text(part, &format!("{at}.content[{j}]")),
                _ => Err(bad(format!("{at}.content[{j}].type"), "Only text parts are allowed in this message.")),
            })
            .collect(),
        _ => Err(bad(format!("{at}.content"), "'content' must be a string or an array of content parts.")),
    }
}

fn part_text(part: &Value, at: &str) -> Result<String, ApiError> {
    part.get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{at}.text"), "A text part needs a string 'text'."))
}

fn text_block(text: String) -> Value {
    json!({ "type": "text", "text": text })
}

fn user_blocks(content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let Value::Array(parts) = content else {
        return Ok(texts(content, at)?.into_iter().filter(|t| !t.is_empty()).map(text_block).collect());
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = part_text(part, &at)?;
                if !text.is_empty() {
                    blocks.push(text_block(text));
                }
            }
            Some("image_url") => blocks.push(image_block(part, &at)?),
            _ => {
                return Err(bad(
                    format!("{at}.type"),
                    "Only 'text' and 'image_url' content parts can be sent to Anthropic models.",
                ));
            }
        }
    }
    Ok(blocks)
}

/// `image_url` → a base64 image (data URL) or a URL image that Anthropic fetches itself.
fn image_block(part: &Value, at: &str) -> Result<Value, ApiError> {
    let image = part.get("image_url");
    let url = image
        .and_then(|i| i.get("url").and_then(Value::as_str).or_else(|| i.as_str()))
        .ok_or_else(|| bad(format!("{at}.image_url.url"), "An image part needs 'image_url.url'."))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(',')
            .and_then(|(meta, data)| Some((meta.strip_suffix(";base64")?, data)))
            .filter(|(media_type, data)| media_type.starts_with("image/") && !data.is_empty())
            .ok_or_else(|| {
                bad(format!("{at}.image_url.url"), "A data URL image must look like 'data:image/png;base64,…'.")
            })?;
        return Ok(json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media_type, "data": data },
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(bad(format!("{at}.image_url.url"), "An image URL must be an http(s) URL or a base64 data URL."))
}

fn assistant_blocks(m: &Value, content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    match content {
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part_text(part, &at)?,
                    Some("refusal") => part.get("refusal").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    _ => return Err(bad(format!("{at}.type"), "Assistant messages may hold text parts only.")),
                };
                if !text.is_empty() {
                    blocks.push(text_block(text));
                }
            }
        }
        other => blocks.extend(texts(other, at)?.into_iter().filter(|t| !t.is_empty()).map(text_block)),
    }
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(bad(format!("{at}.tool_calls"), "'tool_calls' must be an array.")),
    };
    for (j, call) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        if call.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(bad(format!("{at}.type"), "Only function tool calls can be sent to Anthropic models."));
        }
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad(format!("{at}.id"), "A tool call needs an 'id'."))?;
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}.function.name"), "A tool call needs 'function.name'."))?;
        let input = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => {
                serde_json::from_str::<Value>(s).ok().filter(Value::is_object).ok_or_else(|| {
                    bad(format!("{at}.function.arguments"), "Tool call arguments must be a JSON object (as a string).")
                })?
            }
            Some(object @ Value::Object(_)) => object.clone(),
            Some(_) => {
                return Err(bad(format!("{at}.function.arguments"), "Tool call arguments must be a JSON object."));
            }
        };
        blocks.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
    }
    Ok(blocks)
}

fn tool_result(m: &Value, content: &Value, at: &str) -> Result<Value, ApiError> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(format!("{at}.tool_call_id"), "A tool message needs 'tool_call_id'."))?;
    let mut block = json!({ "type": "tool_result", "tool_use_id": id });
    match content {
        Value::String(s) if !s.is_empty() => block["content"] = s.clone().into(),
        Value::Array(_) => {
            let parts: Vec<Value> = texts(content, at)?.into_iter().filter(|t| !t.is_empty()).map(text_block).collect();
            if !parts.is_empty() {
                block["content"] = parts.into();
            }
        }
        Value::Null | Value::String(_) => {}
        _ => return Err(bad(format!("{at}.content"), "'content' must be a string or an array of text parts.")),
    }
    Ok(block)
}

fn translate_tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let tools = tools.as_array().ok_or_else(|| bad("tools", "'tools' must be an array."))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(bad(format!("tools[{i}].type"), "Only function tools can be sent to Anthropic models."));
        }
        let function = tool.get("function").filter(|f| f.is_object());
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("tools[{i}].function.name"), "A function tool needs 'function.name'."))?;
        let mut t = Map::new();
        t.insert("name".into(), name.into());
        if let Some(description) = function.and_then(|f| f.get("description")).and_then(Value::as_str) {
            t.insert("description".into(), description.into());
        }
        let schema = function
            .and_then(|f| f.get("parameters"))
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        t.insert("input_schema".into(), schema);
        out.push(Value::Object(t));
    }
    Ok(out)
}

/// `auto`/`none`/`required`/a named function → `auto`/`none`/`any`/`tool`;
/// `parallel_tool_calls: false` → `disable_parallel_tool_use`.
fn translate_tool_choice(
    choice: Option<&Value>,
    parallel: Option<bool>,
    has_tools: bool,
) -> Result<Option<Value>, ApiError> {
    let mut out = match choice {
        None => {
            if parallel == Some(false) && has_tools {
                json!({ "type": "auto" })
            } else {
                return Ok(None);
            }
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({ "type": "auto" }),
            "none" => return Ok(Some(json!({ "type": "none" }))),
            "required" => json!({ "type": "any" }),
            _ => return Err(bad("tool_choice", "'tool_choice' must be 'auto', 'none', 'required' or a function.")),
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        "'tool_choice' must name a function: {\"type\":\"function\",\"function\":{\"name\":…}}.",
                    )
                })?;
            json!({ "type": "tool", "name": name })
        }
    };
    if parallel == Some(false) {
        out["disable_parallel_tool_use"] = true.into();
    }
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Responses: Messages API → OpenAI chat completion (JSON and stream)
// ---------------------------------------------------------------------------------------------

/// Anthropic's usage object, fields absent or `null` when not reported. In a stream,
/// `message_delta` carries cumulative counts that replace those of `message_start`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl Usage {
    fn update(&mut self, later: Usage) {
        let keep = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        keep(&mut self.input_tokens, later.input_tokens);
        keep(&mut self.output_tokens, later.output_tokens);
        keep(&mut self.cache_creation_input_tokens, later.cache_creation_input_tokens);
        keep(&mut self.cache_read_input_tokens, later.cache_read_input_tokens);
    }

    /// OpenAI's usage object: cache reads and writes are prompt tokens too.
    fn to_openai(self) -> Value {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(cached);
        let completion = self.output_tokens.unwrap_or(0);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt.saturating_add(completion),
            "prompt_tokens_details": { "cached_tokens": cached },
        })
    }
}

#[derive(Deserialize)]
struct MessageView {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<BlockView>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockView {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking, server tools and block types added later: not part of a chat completion.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: MessageView,
    },
    ContentBlockStart {
        index: u64,
        content_block: BlockView,
    },
    ContentBlockDelta {
        index: u64,
        delta: DeltaView,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaView,
        #[serde(default)]
        usage: Usage,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorView,
    },
    /// Event types added later are to be ignored (Anthropic's versioning policy).
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaView {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Default, Deserialize)]
struct MessageDeltaView {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorView {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and whatever a later API version adds.
        _ => "stop",
    }
}

/// A whole `message` as a `chat.completion`.
fn chat_completion(body: &[u8], created: i64) -> Result<Vec<u8>, serde_json::Error> {
    let m: MessageView = serde_json::from_slice(body)?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in m.content {
        match block {
            BlockView::Text { text: t } => text.push_str(&t),
            BlockView::ToolUse { id, name, input } => calls.push(json!({
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": input.to_string() },
            })),
            BlockView::Other => {}
        }
    }
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) };
    let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    serde_json::to_vec(&json!({
        "id": m.id,
        "object": "chat.completion",
        "created": created,
        "model": m.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(m.stop_reason.as_deref()),
        }],
        "usage": m.usage.to_openai(),
    }))
}

/// A successful Anthropic answer in OpenAI's format: a JSON message is read whole (bounded)
/// and translated; a stream is translated as it flows.
pub(crate) async fn openai_response<B>(res: Response<B>) -> Result<Response<Translated<B>>, UpstreamFailure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (parts, body) = res.into_parts();
    let created = tollgate_core::time::now_millis() / 1000;
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (content_type, body) = if is_sse {
        ("text/event-stream", Translated::Stream(ChunkStream::new(body, created)))
    } else {
        let bytes = Limited::new(body, MAX_JSON_RESPONSE)
            .collect()
            .await
            .map_err(|e| UpstreamFailure::Protocol(format!("reading the message: {e}")))?
            .to_bytes();
        let json = chat_completion(&bytes, created)
            .map_err(|e| UpstreamFailure::Protocol(format!("the answer is not a Messages API message: {e}")))?;
        ("application/json", Translated::Json(Some(Bytes::from(json))))
    };
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(out)
}

/// An Anthropic error answer (`{"type":"error","error":{"type","message"}}`) in OpenAI's
/// error shape, keeping its status and `retry-after`, for the handler's relay policy to
/// pass on (the request's own mistakes) or replace (everything else).
pub(crate) async fn openai_error<B>(res: Response<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorView,
    }
    let (parts, body) = res.into_parts();
    let body = Limited::new(body, MAX_ERROR_BODY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let (code, message) = match serde_json::from_slice::<Envelope>(&body) {
        Ok(e) if !e.error.message.is_empty() => (Some(e.error.kind), e.error.message),
        _ => (None, format!("The upstream provider answered {}.", parts.status)),
    };
    let body = json!({
        "error": { "message": message, "type": "invalid_request_error", "param": null, "code": code }
    });
    let mut out = Response::new(Full::new(Bytes::from(body.to_string())));
    *out.status_mut() = parts.status;
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(v) = parts.headers.get(header::RETRY_AFTER) {
        headers.insert(header::RETRY_AFTER, v.clone());
    }
    out
}

/// The body of a translated answer.
pub(crate) enum Translated<B> {
    Json(Option<Bytes>),
    Stream(ChunkStream<B>),
}

impl<B> Body for Translated<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Translated::Json(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Translated::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Translated::Json(data) => data.is_none(),
            Translated::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Translated::Json(Some(data)) => SizeHint::with_exact(data.len() as u64),
            Translated::Json(None) => SizeHint::with_exact(0),
            Translated::Stream(_) => SizeHint::default(),
        }
    }
}

/// Anthropic SSE in, OpenAI chunks out, one upstream frame at a time: what a frame
/// completes is translated and passed on at once; an incomplete event waits in `pending`.
pub(crate) struct ChunkStream<B> {
    inner: B,
    pending: BytesMut,
    state: StreamState,
    /// Reported on the next poll, after the chunks translated before it went out.
    failure: Option<BoxError>,
    ended: bool,
}

impl<B> ChunkStream<B> {
    fn new(inner: B, created: i64) -> Self {
        Self { inner, pending: BytesMut::new(), state: StreamState::new(created), failure: None, ended: false }
    }

    /// Translates every complete event in `pending`, stopping at the first failure.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while self.failure.is_none()
            && !self.state.done
            && let Some(end) = event_end(&self.pending)
        {
            let event = self.pending.split_to(end);
            if let Err(e) = self.state.translate(&event, out) {
                self.failure = Some(e);
            }
        }
        if self.failure.is_none() && !self.state.done && self.pending.len() > MAX_EVENT_BYTES {
            self.failure = Some(format!("an upstream event exceeded {MAX_EVENT_BYTES} bytes").into());
        }
    }
}

impl<B> Body for ChunkStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(e) = this.failure.take() {
                this.ended = true;
                tracing::warn!(error = %e, "anthropic stream failed");
                return Poll::Ready(Some(Err(e)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers, and anything after `message_stop`, have no OpenAI form.
                    if let Ok(data) = frame.into_data()
                        && !this.state.done
                    {
                        this.pending.extend_from_slice(&data);
                        this.drain(&mut out);
                    }
                }
                Some(Err(e)) => {
                    this.ended = true;
                    // Once `message_stop` has come, a reset loses nothing.
                    if !this.state.done {
                        this.failure = Some(e.into());
                    }
                }
                None => {
                    this.ended = true;
                    if !this.state.done && !this.pending.is_empty() {
                        // The last event may lack its blank line.
                        this.pending.extend_from_slice(b"\n\n");
                        this.drain(&mut out);
                    }
                    if !this.state.done && this.failure.is_none() {
                        this.failure = Some("the upstream stream ended before message_stop".into());
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.failure.is_none()
    }
}

/// What the translation of one stream has seen so far.
struct StreamState {
    created: i64,
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`,
    /// set by `message_start`.
    prefix: Option<Vec<u8>>,
    usage: Usage,
    finish: Option<&'static str>,
    tool_calls: usize,
    /// The open `tool_use` block: its Anthropic index and its OpenAI tool-call index.
    open_tool: Option<(u64, usize)>,
    /// `message_stop` was translated: the usage chunk and `[DONE]` are out.
    done: bool,
}

impl StreamState {
    fn new(created: i64) -> Self {
        Self {
            created,
            prefix: None,
            usage: Usage::default(),
            finish: None,
            tool_calls: 0,
            open_tool: None,
            done: false,
        }
    }

    fn translate(&mut self, event: &[u8], out: &mut Vec<u8>) -> Result<(), BoxError> {
        let Some(data) = event_data(event) else {
            return Ok(());
        };
        let event: StreamEvent = serde_json::from_slice(&data)?;
        if let StreamEvent::MessageStart { message } = &event {
            let mut prefix = br#"{"id":"#.to_vec();
            serde_json::to_writer(&mut prefix, &message.id)?;
            prefix.extend_from_slice(
                format!(r#","object":"chat.completion.chunk","created":{},"model":"#, self.created).as_bytes(),
            );
            serde_json::to_writer(&mut prefix, &message.model)?;
            prefix.extend_from_slice(br#","choices":["#);
            self.usage = message.usage;
            self.prefix = Some(prefix);
        }
        let Some(prefix) = self.prefix.as_deref() else {
            return match event {
                StreamEvent::Ping {} | StreamEvent::Other => Ok(()),
                StreamEvent::Error { error } => Err(upstream_error_event(&error)),
                _ => Err("the upstream stream sent content before message_start".into()),
            };
        };
        match event {
            StreamEvent::MessageStart { .. } => choice(out, prefix, br#"{"role":"assistant","content":""}"#, None),
            StreamEvent::ContentBlockStart { index, content_block } => match content_block {
                BlockView::Text { text } if !text.is_empty() => content_chunk(out, prefix, &text)?,
                BlockView::ToolUse { id, name, .. } => {
                    let k = self.tool_calls;
                    self.tool_calls += 1;
                    self.open_tool = Some((index, k));
                    let mut delta = format!(r#"{{"tool_calls":[{{"index":{k},"id":"#).into_bytes();
                    serde_json::to_writer(&mut delta, &id)?;
                    delta.extend_from_slice(br#","type":"function","function":{"name":"#);
                    serde_json::to_writer(&mut delta, &name)?;
                    delta.extend_from_slice(br#","arguments":""}}]}"#);
                    choice(out, prefix, &delta, None);
                }
                BlockView::Text { .. } | BlockView::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                DeltaView::TextDelta { text } if !text.is_empty() => content_chunk(out, prefix, &text)?,
                DeltaView::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    if let Some((_, k)) = self.open_tool.filter(|(open, _)| *open == index) {
                        let mut delta =
                            format!(r#"{{"tool_calls":[{{"index":{k},"function":{{"arguments":"#).into_bytes();
                        serde_json::to_writer(&mut delta, &partial_json)?;
                        delta.extend_from_slice(b"}}]}");
                        choice(out, prefix, &delta, None);
                    }
                }
                DeltaView::TextDelta { .. } | DeltaView::InputJsonDelta { .. } | DeltaView::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if self.open_tool.is_some_and(|(open, _)| open == index) {
                    self.open_tool = None;
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                self.usage.update(usage);
                if self.finish.is_none() {
                    let finish = finish_reason(delta.stop_reason.as_deref());
                    self.finish = Some(finish);
                    choice(out, prefix, b"{}", Some(finish));
                }
            }
            StreamEvent::MessageStop {} => {
                if self.finish.is_none() {
                    self.finish = Some("stop");
                    choice(out, prefix, b"{}", Some("stop"));
                }
                // The usage-only chunk the meter bills from (and hides unless asked for).
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(prefix);
                out.extend_from_slice(br#"],"usage":"#);
                serde_json::to_writer(&mut *out, &self.usage.to_openai())?;
                out.extend_from_slice(b"}\n\ndata: [DONE]\n\n");
                self.done = true;
            }
            StreamEvent::Error { error } => return Err(upstream_error_event(&error)),
            StreamEvent::Ping {} | StreamEvent::Other => {}
        }
        Ok(())
    }
}

fn upstream_error_event(error: &ErrorView) -> BoxError {
    let message: String = error.message.chars().take(200).collect();
    format!("the upstream sent an error event: {}: {message}", error.kind).into()
}

/// One `chat.completion.chunk` event with a single choice.
fn choice(out: &mut Vec<u8>, prefix: &[u8], delta: &[u8], finish: Option<&str>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(prefix);
    out.extend_from_slice(br#"{"index":0,"delta":"#);
    out.extend_from_slice(delta);
    out.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
    match finish {
        Some(f) => {
            out.push(b'"');
            out.extend_from_slice(f.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}]}\n\n");
}

fn content_chunk(out: &mut Vec<u8>, prefix: &[u8], text: &str) -> Result<(), BoxError> {
    let mut delta = br#"{"content":"#.to_vec();
    serde_json::to_writer(&mut delta, text)?;
    delta.push(b'}');
    choice(out, prefix, &delta, None);
    Ok(())
}

/// The `data:` of one SSE event (lines joined by `\n`), `None` if it has none.
pub(crate) fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(rest);
                }
                None => data = Some(rest.to_vec()),
            }
        }
    }
    data.filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::stream;
    use http_body_util::StreamBody;

    fn parsed(body: Value) -> ParsedRequest {
        crate::request::parse(Bytes::from(body.to_string())).unwrap()
    }

    fn translate(body: Value) -> Result<Value, ApiError> {
        let p = parsed(body);
        request_body(Endpoint::ChatCompletions, &p, "claude-up", 4096).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn translates_a_full_conversation() {
        let req = json!({
            "model": "claude",
            "max_completion_tokens": 300,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-1",
            "stream": true,
            "stream_options": { "include_usage": true },
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "developer", "content": [{ "type": "text", "text": "Use tools." }] },
                { "role": "user", "content": "What is the weather?" },
                { "role": "user", "content": [
                    { "type": "text", "text": "Here is a photo." },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
                    { "type": "image_url", "image_url": { "url": "https://example.com/cat.jpg", "detail": "high" } },
                ] },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                ] },
                { "role": "tool", "tool_call_id": "call_1", "content": "sunny" },
                { "role": "user", "content": "Thanks" },
            ],
            "tools": [{ "type": "function", "function": {
                "name": "weather", "description": "Weather by city",
                "parameters": { "type": "object", "properties": { "city": { "type": "string" } } },
            } }],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        });
        let out = translate(req).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-up",
                "max_tokens": 300,
                "temperature": 0.5,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "metadata": { "user_id": "u-1" },
                "stream": true,
                "system": "Be brief.\n\nUse tools.",
                "messages": [
                    { "role": "user", "content": [
                        { "type": "text", "text": "What is the weather?" },
                        { "type": "text", "text": "Here is a photo." },
                        { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
                        { "type": "image", "source": { "type": "url", "url": "https://example.com/cat.jpg" } },
                    ] },
                    { "role": "assistant", "content": [
                        { "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } },
                    ] },
                    { "role": "user", "content": [
                        { "type": "tool_result", "tool_use_id": "call_1", "content": "sunny" },
                        { "type": "text", "text": "Thanks" },
                    ] },
                ],
                "tools": [{
                    "name": "weather", "description": "Weather by city",
                    "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } },
                }],
                "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
            })
        );
    }

    #[test]
    fn defaults_and_choices() {
        let out = translate(json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] })).unwrap();
        assert_eq!(out["max_tokens"], 4096, "the model's max_output_tokens fills the required max_tokens");
        assert!(out.get("stream").is_none() && out.get("system").is_none());
        let with = |choice: Value| {
            translate(json!({
                "model": "m", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 7,
                "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": choice,
                "stop": ["a", "b"],
            }))
            .unwrap()
        };
        let out = with(json!("auto"));
        assert_eq!((out["max_tokens"].clone(), out["tool_choice"].clone()), (json!(7), json!({ "type": "auto" })));
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));
        assert_eq!(out["tools"][0]["input_schema"], json!({ "type": "object", "properties": {} }));
        assert_eq!(with(json!("none"))["tool_choice"], json!({ "type": "none" }));
        assert_eq!(
            with(json!({ "type": "function", "function": { "name": "f" } }))["tool_choice"],
            json!({ "type": "tool", "name": "f" })
        );
    }

    #[test]
    fn refuses_what_cannot_be_translated_naming_the_param() {
        let base = || json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] });
        for (field, value, param) in [
            ("n", json!(2), "n"),
            ("logprobs", json!(true), "logprobs"),
            ("response_format", json!({ "type": "json_object" }), "response_format"),
            ("presence_penalty", json!(0.5), "presence_penalty"),
            ("temperature", json!(1.5), "temperature"),
            ("stop", json!(5), "stop"),
            ("tool_choice", json!("sometimes"), "tool_choice"),
            ("functions", json!([]), "functions"),
        ] {
            let mut req = base();
            req[field] = value;
            let e = translate(req).unwrap_err();
            assert_eq!(
                (e.code, e.param.as_deref()),
                (tollgate_core::ErrorCode::InvalidRequest, Some(param)),
                "{field}"
            );
        }
        // Defaults are fine.
        let mut req = base();
        req["n"] = json!(1);
        req["presence_penalty"] = json!(0);
        req["logprobs"] = json!(false);
        req["response_format"] = json!({ "type": "text" });
        assert!(translate(req).is_ok());

        for (messages, param) in [
            (json!([{ "role": "system", "content": "only a system prompt" }]), "messages"),
            (json!([{ "role": "function", "content": "x" }]), "messages[0].role"),
            (json!([{ "role": "user", "content": [{ "type": "input_audio" }] }]), "messages[0].content[0].type"),
            (
                json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "ftp://x" } }] }]),
                "messages[0].content[0].image_url.url",
            ),
            (json!([{ "role": "tool", "content": "x" }]), "messages[0].tool_call_id"),
            (
                json!([{ "role": "assistant", "tool_calls": [{ "id": "c", "function": { "name": "f", "arguments": "[1]" } }] }]),
                "messages[0].tool_calls[0].function.arguments",
            ),
        ] {
            let e = translate(json!({ "model": "m", "messages": messages })).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{messages}");
        }
    }

    #[test]
    fn only_chat_completions_are_served() {
        let p = parsed(json!({ "model": "claude", "input": "hi" }));
        let e = request_body(Endpoint::Responses, &p, "up", 10).unwrap_err();
        assert_eq!(e.code, tollgate_core::ErrorCode::InvalidRequest);
        assert!(e.message.contains("/v1/chat/completions") && e.message.contains("/v1/responses"), "{}", e.message);
    }

    #[test]
    fn translates_a_message() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up",
            "content": [
                { "type": "text", "text": "Let me check." },
                { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } },
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0 },
        });
        let out: Value = serde_json::from_slice(&chat_completion(body.to_string().as_bytes(), 42).unwrap()).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!((out["id"].as_str(), out["created"].as_i64()), (Some("msg_1"), Some(42)));
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(choice["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(choice["message"]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(
            out["usage"],
            json!({ "prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22, "prompt_tokens_details": { "cached_tokens": 5 } })
        );
        for (stop, finish) in [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")] {
            let b = json!({ "id": "m", "model": "x", "content": [], "stop_reason": stop, "usage": { "input_tokens": 1, "output_tokens": 1 } });
            let out: Value = serde_json::from_slice(&chat_completion(b.to_string().as_bytes(), 0).unwrap()).unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], finish);
            assert_eq!(out["choices"][0]["message"]["content"], "");
        }
    }

    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-up\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\\"there\\\"\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    type TestBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

    fn body_of(pieces: Vec<Result<&'static [u8], std::io::Error>>) -> TestBody {
        let frames: Vec<_> = pieces.into_iter().map(|p| p.map(|b| Frame::data(Bytes::from_static(b)))).collect();
        StreamBody::new(stream::iter(frames))
    }

    /// Polls to the end: the frames' text, and the error if the body failed.
    async fn run(body: TestBody) -> (String, Option<String>) {
        let mut s = ChunkStream::new(body, 7);
        let mut text = String::new();
        while let Some(frame) = s.frame().await {
            match frame {
                Ok(f) => text.push_str(std::str::from_utf8(&f.into_data().unwrap()).unwrap()),
                Err(e) => return (text, Some(e.to_string())),
            }
        }
        assert!(s.is_end_stream());
        (text, None)
    }

    fn chunks(text: &str) -> Vec<Value> {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn translates_a_stream_split_anywhere() {
        let whole = STREAM.as_bytes();
        // Every split point, including inside multi-byte escapes and the blank lines.
        for at in (0..whole.len()).step_by(7) {
            let (text, error) = run(body_of(vec![Ok(&whole[..at]), Ok(&whole[at..])])).await;
            assert_eq!(error, None);
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            let c = chunks(&text);
            assert_eq!(c.len(), 7, "{text}");
            assert!(
                c.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "msg_1" && c["created"] == 7)
            );
            assert_eq!(c[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
            assert_eq!(c[1]["choices"][0]["delta"]["content"], "Hi \"there\"");
            assert_eq!(
                c[2]["choices"][0]["delta"]["tool_calls"][0],
                json!({ "index": 0, "id": "toolu_1", "type": "function", "function": { "name": "weather", "arguments": "" } })
            );
            let args: String = c[3..5]
                .iter()
                .map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
                .collect();
            assert_eq!(args, r#"{"city": "Paris"}"#);
            assert_eq!(c[5]["choices"][0]["finish_reason"], "tool_calls");
            assert_eq!(c[6]["choices"], json!([]));
            assert_eq!(c[6]["usage"]["prompt_tokens"], 12);
            assert_eq!(c[6]["usage"]["completion_tokens"], 9);
        }
    }

    #[tokio::test]
    async fn the_meter_reads_the_translation() {
        let (text, _) = run(body_of(vec![Ok(STREAM.as_bytes())])).await;
        let mut pending = text.as_bytes();
        let mut usage = None;
        let mut output = 0;
        while let Some(end) = event_end(pending) {
            let info = crate::sse::inspect_event(&pending[..end]);
            output += info.output_bytes;
            if info.usage.is_some() {
                assert!(info.usage_only);
                usage = info.usage;
            }
            pending = &pending[end..];
        }
        assert_eq!(usage, Some(crate::sse::TokenUsage { prompt: 12, completion: 9 }));
        assert_eq!(output, "Hi \"there\"".len() as u64);
    }

    #[tokio::test]
    async fn failures_fail_the_body_after_what_came_before() {
        let first_event = STREAM.split_inclusive("\n\n").next().unwrap();
        // A mid-stream error event.
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let both: &'static str = Box::leak(format!("{first_event}{error}").into_boxed_str());
        let (text, e) = run(body_of(vec![Ok(both.as_bytes())])).await;
        assert_eq!(chunks(&text).len(), 1, "the role chunk still goes out");
        assert!(e.unwrap().contains("overloaded_error"));
        // A broken connection.
        let (_, e) = run(body_of(vec![Ok(first_event.as_bytes()), Err(std::io::Error::other("reset"))])).await;
        assert!(e.is_some());
        // A clean end before message_stop.
        let (_, e) = run(body_of(vec![Ok(first_event.as_bytes())])).await;
        assert!(e.unwrap().contains("message_stop"));
        // Garbage, and an event over the size limit.
        let (_, e) = run(body_of(vec![Ok(b"data: {not json\n\n")])).await;
        assert!(e.is_some());
        let big: &'static [u8] = Box::leak(vec![b'x'; MAX_EVENT_BYTES + 1].into_boxed_slice());
        let (_, e) = run(body_of(vec![Ok(big)])).await;
        assert!(e.unwrap().contains("exceeded"));
        // After message_stop, a reset loses nothing.
        let (text, e) = run(body_of(vec![Ok(STREAM.as_bytes()), Err(std::io::Error::other("reset"))])).await;
        assert!(e.is_none() && text.ends_with("[DONE]\n\n"));
    }

    #[tokio::test]
    async fn errors_are_reshaped_for_the_relay_policy() {
        let mut res = Response::new(Full::new(Bytes::from_static(
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#,
        )));
        *res.status_mut() = http::StatusCode::BAD_REQUEST;
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        let out = openai_error(res).await;
        assert_eq!(out.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(out.headers()[header::RETRY_AFTER], "3");
        let body: Value = serde_json::from_slice(&out.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["error"]["message"], "max_tokens: too large");
        assert_eq!(body["error"]["code"], "invalid_request_error");
    }

    #[test]
    fn builds_the_upstream_request_once() {
        let key = Secret::new("sk-ant-secret");
        let up =
            AnthropicUpstream::new("https://api.anthropic.com/", &key, AnthropicUpstream::DEFAULT_VERSION).unwrap();
        let req = up.request("req_1", Bytes::new()).unwrap();
        assert_eq!(req.uri(), "https://api.anthropic.com/v1/messages");
        assert_eq!(req.headers()["x-api-key"], "sk-ant-secret");
        assert!(req.headers()["x-api-key"].is_sensitive());
        assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
        assert!(!format!("{up:?}").contains("sk-ant-secret"));
        let up =
            AnthropicUpstream::new("http://127.0.0.1:9/v1", &Secret::default(), AnthropicUpstream::DEFAULT_VERSION)
                .unwrap();
        let req = up.request("", Bytes::new()).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/v1/messages");
        assert!(req.headers().get("x-api-key").is_none());
    }
}
