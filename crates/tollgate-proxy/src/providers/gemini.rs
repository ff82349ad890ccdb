//! The `gemini` provider: OpenAI chat completions and embeddings in, Google's Gemini API
//! (`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`) upstream, and
//! Gemini's answers translated back to OpenAI's wire format *before* the meter wraps them,
//! so metering, usage-chunk hiding and billing run exactly as for an OpenAI-compatible
//! provider.
//!
//! Invariants: a request URL is the configured base URL and API version, `models/`, the
//! channel's upstream model (checked to be a plain model id, at start and per request) and
//! a fixed method — no request field chooses the host or the path. The API key travels only
//! in the `x-goog-api-key` header (marked sensitive), never in the URL, so it cannot reach
//! a log line through one. Streams are parsed incrementally; an incomplete upstream event
//! may hold at most [`MAX_EVENT_BYTES`], a JSON answer at most [`MAX_JSON_BODY`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tollgate_core::ids::random_base62;
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, Secret};

use crate::sse::event_end;
use crate::upstream::{UpstreamClient, UpstreamFailure};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A whole (non-streamed) Gemini answer larger than this is refused mid-body.
const MAX_JSON_BODY: usize = 64 << 20;
/// One streamed event larger than this (without its end) is refused mid-stream.
const MAX_EVENT_BYTES: usize = 16 << 20;
/// Bytes of an upstream error body read to translate it.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Gemini's own limit on `candidateCount`.
const MAX_CANDIDATES: u64 = 8;
/// Gemini's own limit on requests in one `batchEmbedContents`.
const MAX_EMBED_INPUTS: usize = 100;

/// A Gemini API endpoint, ready to call: the models URL and the `x-goog-api-key` header
/// are built once, from the configured base URL, API version and key.
#[derive(Debug)]
pub struct GeminiUpstream {
    pub base_url: String,
    /// `{base_url}/{api_version}/models/`: a method URL is this, a model id and `:method`.
    models_url: String,
    /// Marked sensitive (its `Debug` prints `Sensitive`); `None` when no key is configured.
    api_key: Option<HeaderValue>,
}

impl GeminiUpstream {
    /// Fails (with a message naming neither URL nor key) if they do not form valid requests.
    pub fn new(base_url: &str, api_version: &str, api_key: &Secret) -> Result<Self, String> {
        Self::check_api_version(api_version)?;
        let models_url = format!("{base_url}/{api_version}/models/");
        format!("{models_url}gemini:generateContent")
            .parse::<http::Uri>()
            .map_err(|_| "the base URL does not form a valid URI".to_owned())?;
        let api_key = if api_key.is_empty() {
            None
        } else {
            let mut v = HeaderValue::from_str(api_key.expose())
                .map_err(|_| "the API key is not a valid header value".to_owned())?;
            v.set_sensitive(true);
            Some(v)
        };
        Ok(Self { base_url: base_url.to_owned(), models_url, api_key })
    }

    /// Whether `version` is a Gemini API version path segment such as `v1beta` or `v1`.
    pub fn check_api_version(version: &str) -> Result<(), String> {
        let rest = version.strip_prefix('v').unwrap_or("");
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let suffix = &rest[digits..];
        let suffix = suffix.strip_prefix("alpha").or_else(|| suffix.strip_prefix("beta")).unwrap_or(suffix);
        if digits == 0 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{version:?} is not an API version such as v1beta or v1"));
        }
        Ok(())
    }

    /// Whether `name` is a plain model id (`gemini-2.5-flash`): it becomes a path segment of
    /// every request URL, so nothing that could leave that segment is allowed.
    pub fn check_model(name: &str) -> Result<(), String> {
        let plain = (1..=128).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.')
            && !name.contains("..");
        if plain {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not a plain Gemini model id such as \"gemini-2.5-flash\" (letters, digits, '-', '_' \
                 and '.'; no \"models/\" prefix, '/', '?', '#', ':' or \"..\")"
            ))
        }
    }

    fn uri(&self, model: &str, method: &str) -> Result<http::Uri, UpstreamFailure> {
        Self::check_model(model).map_err(|_| UpstreamFailure::BadUrl)?;
        format!("{}{model}:{method}", self.models_url).parse().map_err(|_| UpstreamFailure::BadUrl)
    }
}

/// Where a translated request goes, and how to translate its answer back.
#[derive(Debug)]
pub(crate) struct Call {
    /// The method and its query, appended to `models/{model}:`.
    method: &'static str,
    reply: Reply,
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    Chat { stream: bool },
    Embeddings { inputs: usize, base64: bool, prompt_tokens: u64 },
}

impl Call {
    /// The answer carries token counts the gateway estimated, not ones Gemini reported
    /// (Gemini reports none for embeddings).
    pub(crate) fn usage_is_estimate(&self) -> bool {
        matches!(self.reply, Reply::Embeddings { .. })
    }
}

/// Translates the client's request into Gemini's body. Everything the client got wrong (or
/// that Gemini cannot express) is a 400 that names the field.
pub(crate) fn prepare(endpoint: Endpoint, upstream_model: &str, body: &[u8]) -> Result<(Bytes, Call), ApiError> {
    let req: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| ApiError::invalid_request("Request body must be a JSON object."))?;
    let (method, translated, reply) = match endpoint {
        Endpoint::ChatCompletions => {
            let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
            let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            (method, chat_request(&req)?, Reply::Chat { stream })
        }
        Endpoint::Embeddings => {
            let (translated, reply) = embeddings_request(&req, upstream_model)?;
            ("batchEmbedContents", translated, reply)
        }
        Endpoint::Completions
        | Endpoint::ImagesGenerations
        | Endpoint::Responses
        | Endpoint::Messages
        | Endpoint::Models => {
            return Err(ApiError::invalid_request(format!(
                "Gemini models serve /v1/chat/completions and /v1/embeddings only, not {}.",
                endpoint.path()
            )));
        }
    };
    let body = serde_json::to_vec(&translated).map_err(|_| ApiError::internal())?;
    Ok((Bytes::from(body), Call { method, reply }))
}

/// Sends `body` (from [`prepare`]) to `models/{model}:{method}` and waits for the response
/// head.
pub(crate) async fn send(
    client: &UpstreamClient,
    target: &GeminiUpstream,
    model: &str,
    call: &Call,
    body: Bytes,
    request_id: &str,
    first_byte_timeout: Duration,
) -> Result<Response<Incoming>, UpstreamFailure> {
    let uri = target.uri(model, call.method)?;
    let mut req = Request::post(uri).body(Full::new(body)).map_err(|_| UpstreamFailure::BadUrl)?;
    let headers = req.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))));
    if let Some(key) = &target.api_key {
        headers.insert("x-goog-api-key", key.clone());
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    client.send(req, first_byte_timeout).await
}

/// Wraps a successful Gemini response so that it reads as OpenAI's answer to the call.
pub(crate) fn translate<B>(call: &Call, upstream_model: &str, res: Response<B>) -> Response<Translated<B>> {
    let (mut parts, inner) = res.into_parts();
    let model = upstream_model.to_owned();
    let (mode, content_type) = match call.reply {
        Reply::Chat { stream: true } => {
            (Mode::Sse { pending: BytesMut::new(), stream: ChatStream::new(model) }, "text/event-stream")
        }
        Reply::Chat { stream: false } => {
            (Mode::Json { buf: BytesMut::new(), kind: JsonKind::Chat { model } }, "application/json")
        }
        Reply::Embeddings { inputs, base64, prompt_tokens } => (
            Mode::Json { buf: BytesMut::new(), kind: JsonKind::Embeddings { model, inputs, base64, prompt_tokens } },
            "application/json",
        ),
    };
    parts.headers = HeaderMap::new();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(parts, Translated { inner, mode, done: false })
}

/// Rewrites a Gemini error answer for the gateway's upstream-error policy: an OpenAI-shaped
/// body with Gemini's message, `Retry-After` from Gemini's `RetryInfo`, and an API key that
/// Gemini calls invalid (a 400 there) reported as the credential failure it is (401).
pub(crate) async fn error_response<B>(res: Response<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let status = res.status();
    let header_retry = res.headers().get(header::RETRY_AFTER).cloned();
    let body = http_body_util::Limited::new(res.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let (status, retry_after, body) = openai_error(status, &body);
    let mut out = Response::new(Full::new(body));
    *out.status_mut() = status;
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(v) = header_retry.or_else(|| retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok())) {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}

fn openai_error(status: StatusCode, body: &[u8]) -> (StatusCode, Option<u64>, Bytes) {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let details = error["details"].as_array().map(Vec::as_slice).unwrap_or_default();
    let key_invalid = details.iter().any(|d| d["reason"] == "API_KEY_INVALID");
    let status = if key_invalid || error["status"] == "UNAUTHENTICATED" { StatusCode::UNAUTHORIZED } else { status };
    let retry_after = details
        .iter()
        .find_map(|d| d["retryDelay"].as_str())
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s.ceil() as u64);
    let message: String = error["message"]
        .as_str()
        .map_or_else(|| format!("The upstream provider answered {status}."), |m| m.chars().take(2000).collect());
    let code = error["status"].as_str().map(str::to_ascii_lowercase);
    let out = json!({
        "error": { "message": message, "type": "invalid_request_error", "param": null, "code": code }
    });
    (status, retry_after, Bytes::from(out.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// Contents in order, consecutive turns of one role merged (Gemini wants them alternating).
#[derive(Default)]
struct Contents(Vec<(&'static str, Vec<Value>)>);

impl Contents {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => self.0.push((role, parts)),
        }
    }
}

fn chat_request(req: &Map<String, Value>) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("'messages' must be a non-empty array.", "messages"))?;
    let mut system = Vec::new();
    let mut contents = Contents::default();
    // Tool results name their call by id; Gemini wants the function's name.
    let mut tool_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" => system.extend(text_parts(content, i)?),
            "user" => contents.push("user", user_parts(content, i)?),
            "assistant" => {
                let mut parts = text_parts(content, i)?;
                for (j, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let f = &call["function"];
                    let (id, name) = (call["id"].as_str().unwrap_or_default(), f["name"].as_str().unwrap_or_default());
                    if name.is_empty() {
                        return Err(invalid(
                            format!("messages[{i}].tool_calls[{j}].function.name is required."),
                            "messages",
                        ));
                    }
                    tool_names.insert(id, name);
                    let signature = call["extra_content"]["google"]["thought_signature"].as_str();
                    parts.push(function_call(name, &f["arguments"], signature, i)?);
                }
                if let Some(f) = m.get("function_call").filter(|f| !f.is_null()) {
                    let name = f["name"].as_str().unwrap_or_default();
                    parts.push(function_call(name, &f["arguments"], None, i)?);
                }
                contents.push("model", parts);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let name = tool_names.get(id).copied().ok_or_else(|| {
                    invalid(
                        format!("messages[{i}].tool_call_id {id:?} does not match a tool call of an earlier assistant message."),
                        "messages",
                    )
                })?;
                contents.push("user", vec![function_response(name, content, i)?]);
            }
            "function" => {
                let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    return Err(invalid(format!("messages[{i}].name is required for role \"function\"."), "messages"));
                }
                contents.push("user", vec![function_response(name, content, i)?]);
            }
            other => {
                return Err(invalid(
                    format!("messages[{i}].role {other:?} is not supported for Gemini models."),
                    "messages",
                ));
            }
        }
    }
    if contents.0.is_empty() {
        return Err(invalid("'messages' must contain at least one user or assistant message.", "messages"));
    }
    let mut out = Map::new();
    let contents: Vec<Value> =
        contents.0.into_iter().map(|(role, parts)| json!({ "role": role, "parts": parts })).collect();
    out.insert("contents".into(), contents.into());
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if let Some(tools) = tools(req)? {
        out.insert("tools".into(), tools);
    }
    if let Some(choice) = tool_choice(req)? {
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": choice }));
    }
    let config = generation_config(req)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), config.into());
    }
    Ok(out.into())
}

/// Text-only content (system prompts, assistant turns): a string or text parts.
fn text_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ApiError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p["type"] != "refusal")
            .map(|p| match (p["type"].as_str(), p["text"].as_str()) {
                (Some("text"), Some(t)) => Ok(json!({ "text": t })),
                _ => Err(invalid(format!("messages[{i}].content: only text parts are allowed here."), "messages")),
            })
            .collect(),
        Some(_) => Err(invalid(format!("messages[{i}].content must be a string or an array of parts."), "messages")),
    }
}

fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ApiError> {
    let Some(Value::Array(parts)) = content else {
        return text_parts(content, i);
    };
    parts
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let at = format!("messages[{i}].content[{j}]");
            match p["type"].as_str() {
                Some("text") => p["text"]
                    .as_str()
                    .map(|t| json!({ "text": t }))
                    .ok_or_else(|| invalid(format!("{at}.text is required."), "messages")),
                Some("image_url") => {
                    let url = p["image_url"]["url"].as_str().or(p["image_url"].as_str()).unwrap_or_default();
                    inline_data(url).ok_or_else(|| {
                        invalid(
                            format!(
                                "{at}: Gemini models take images as base64 data: URLs (data:image/png;base64,…); the \
                                 gateway does not fetch remote URLs — download the image and send it inline."
                            ),
                            "messages",
                        )
                    })
                }
                Some("input_audio") => {
                    let audio = &p["input_audio"];
                    match (audio["data"].as_str(), audio["format"].as_str()) {
                        (Some(data), Some(format)) => {
                            Ok(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }))
                        }
                        _ => Err(invalid(format!("{at}.input_audio needs data and format."), "messages")),
                    }
                }
                Some("file") => p["file"]["file_data"].as_str().and_then(inline_data).ok_or_else(|| {
                    invalid(
                        format!("{at}.file: Gemini models take files as base64 data: URLs in file_data."),
                        "messages",
                    )
                }),
                other => Err(invalid(
                    format!("{at}: part type {:?} is not supported for Gemini models.", other.unwrap_or("")),
                    "messages",
                )),
            }
        })
        .collect()
}

/// `data:{mime};base64,{data}` → Gemini's `inlineData`.
fn inline_data(url: &str) -> Option<Value> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = mime.split(';').next().filter(|m| !m.is_empty())?;
    Some(json!({ "inlineData": { "mimeType": mime, "data": data } }))
}

fn function_call(name: &str, arguments: &Value, signature: Option<&str>, i: usize) -> Result<Value, ApiError> {
    let args = match arguments {
        Value::Null => json!({}),
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str::<Value>(s).map_err(|_| {
            invalid(format!("messages[{i}]: the arguments of tool call {name:?} are not valid JSON."), "messages")
        })?,
        other => other.clone(),
    };
    if !args.is_object() {
        return Err(invalid(
            format!("messages[{i}]: the arguments of tool call {name:?} must be a JSON object."),
            "messages",
        ));
    }
    let mut part = json!({ "functionCall": { "name": name, "args": args } });
    if let Some(sig) = signature {
        part["thoughtSignature"] = sig.into();
    }
    Ok(part)
}

/// A tool's result: a JSON object as it is; anything else as `{"result": …}` (Gemini
/// wants an object).
fn function_response(name: &str, content: Option<&Value>, i: usize) -> Result<Value, ApiError> {
    let text = match content {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        Some(_) => return Err(invalid(format!("messages[{i}].content must be a string or text parts."), "messages")),
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "result": v }),
        Err(_) => json!({ "result": text }),
    };
    Ok(json!({ "functionResponse": { "name": name, "response": response } }))
}

fn tools(req: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    let Some(tools) = req.get("tools").filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let tools = tools.as_array().ok_or_else(|| invalid("'tools' must be an array.", "tools"))?;
    let mut declarations = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let f = &t["function"];
        let name = f["name"].as_str().filter(|n| !n.is_empty());
        let (Some("function"), Some(name)) = (t["type"].as_str(), name) else {
            return Err(invalid(format!("tools[{i}]: Gemini models take function tools with a name only."), "tools"));
        };
        let mut d = json!({ "name": name });
        if let Some(desc) = f["description"].as_str() {
            d["description"] = desc.into();
        }
        // JSON Schema as the client wrote it: Gemini's `parameters` takes only an OpenAPI
        // subset, `parametersJsonSchema` takes JSON Schema.
        if let Some(schema) = f.get("parameters").filter(|p| !p.is_null()) {
            d["parametersJsonSchema"] = schema.clone();
        }
        declarations.push(d);
    }
    Ok((!declarations.is_empty()).then(|| json!([{ "functionDeclarations": declarations }])))
}

fn tool_choice(req: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    Ok(match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => json!({ "mode": "NONE" }),
            "auto" => json!({ "mode": "AUTO" }),
            "required" => json!({ "mode": "ANY" }),
            other => {
                return Err(invalid(
                    format!("tool_choice {other:?} is not one of none, auto, required."),
                    "tool_choice",
                ));
            }
        }),
        Some(v) => match v["function"]["name"].as_str() {
            Some(name) if v["type"] == "function" => Some(json!({ "mode": "ANY", "allowedFunctionNames": [name] })),
            _ => {
                return Err(invalid(
                    "tool_choice must name a function: {\"type\":\"function\",\"function\":{\"name\":…}}.",
                    "tool_choice",
                ));
            }
        },
    })
}

fn generation_config(req: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let number = |field: &str| -> Result<Option<Value>, ApiError> {
        match req.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
            Some(_) => Err(invalid(format!("'{field}' must be a number."), field)),
        }
    };
    let max_tokens = match number("max_completion_tokens")? {
        Some(v) => Some(v),
        None => number("max_tokens")?,
    };
    for (value, to) in [
        (max_tokens, "maxOutputTokens"),
        (number("temperature")?, "temperature"),
        (number("top_p")?, "topP"),
        (number("presence_penalty")?, "presencePenalty"),
        (number("frequency_penalty")?, "frequencyPenalty"),
        (number("seed")?, "seed"),
    ] {
        if let Some(v) = value {
            out.insert(to.into(), v);
        }
    }
    match req.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            out.insert("stopSequences".into(), a.clone().into());
        }
        Some(_) => return Err(invalid("'stop' must be a string or an array of strings.", "stop")),
    }
    match req.get("n") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(1) => {}
            Some(n @ 2..=MAX_CANDIDATES) => {
                out.insert("candidateCount".into(), n.into());
            }
            _ => return Err(invalid(format!("'n' must be between 1 and {MAX_CANDIDATES} for Gemini models."), "n")),
        },
    }
    match req.get("response_format").filter(|f| !f.is_null()) {
        None => {}
        Some(f) => match f["type"].as_str() {
            Some("text") => {}
            Some("json_object") => {
                out.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                out.insert("responseMimeType".into(), "application/json".into());
                if let Some(schema) = f["json_schema"].get("schema").filter(|s| !s.is_null()) {
                    out.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {
                return Err(invalid(
                    "response_format.type must be text, json_object or json_schema.",
                    "response_format",
                ));
            }
        },
    }
    Ok(out)
}

fn embeddings_request(req: &Map<String, Value>, upstream_model: &str) -> Result<(Value, Reply), ApiError> {
    let inputs: Vec<&str> = match req.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    invalid("Gemini models embed text: 'input' must be a string or an array of strings.", "input")
                })
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("'input' must be a string or a non-empty array of strings.", "input")),
    };
    if inputs.len() > MAX_EMBED_INPUTS {
        return Err(invalid(format!("Gemini models embed at most {MAX_EMBED_INPUTS} inputs per request."), "input"));
    }
    if inputs.iter().any(|s| s.is_empty()) {
        return Err(invalid("'input' must not contain empty strings.", "input"));
    }
    let dimensions = match req.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| invalid("'dimensions' must be a positive integer.", "dimensions"))?,
        ),
    };
    let base64 = match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(format!("encoding_format {other:?} is not float or base64."), "encoding_format"));
        }
    };
    let model = format!("models/{upstream_model}");
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut r = json!({ "model": model, "content": { "parts": [{ "text": text }] } });
            if let Some(d) = dimensions {
                r["outputDimensionality"] = d.into();
            }
            r
        })
        .collect();
    let prompt_tokens = inputs.iter().map(|s| (s.len() as u64).div_ceil(4)).sum();
    Ok((json!({ "requests": requests }), Reply::Embeddings { inputs: inputs.len(), base64, prompt_tokens }))
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn now_secs() -> i64 {
    tollgate_core::time::now_millis() / 1000
}

/// OpenAI's `usage` from Gemini's `usageMetadata`. Thinking is output the caller pays
/// for: it counts as completion tokens (and is shown as `reasoning_tokens`).
fn usage(meta: &Value) -> Option<Value> {
    if !meta.is_object() {
        return None;
    }
    let count = |field: &str| meta[field].as_u64().unwrap_or(0);
    let prompt = count("promptTokenCount") + count("toolUsePromptTokenCount");
    let thoughts = count("thoughtsTokenCount");
    let completion = count("candidatesTokenCount") + thoughts;
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": count("cachedContentTokenCount") },
        "completion_tokens_details": { "reasoning_tokens": thoughts },
    }))
}

fn finish_reason(gemini: &str, tool_calls: bool) -> &'static str {
    match gemini {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// A candidate's answer text (thought summaries left out) and its function calls as
/// OpenAI tool calls (without their stream `index`).
fn read_parts(candidate: &Value) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in candidate["content"]["parts"].as_array().into_iter().flatten() {
        if let Some(fc) = p.get("functionCall") {
            calls.push(tool_call(fc, p["thoughtSignature"].as_str()));
        } else if p["thought"] != true
            && let Some(t) = p["text"].as_str()
        {
            text.push_str(t);
        }
    }
    (text, calls)
}

/// Gemini's thought signature rides along as Google's own OpenAI-compatible API carries it
/// (`extra_content.google.thought_signature`), so that clients sending it back keep
/// multi-turn function calling working on thinking models.
fn tool_call(fc: &Value, signature: Option<&str>) -> Value {
    let id = fc["id"]
        .as_str()
        .filter(|i| !i.is_empty())
        .map_or_else(|| format!("call_{}", random_base62(24)), str::to_owned);
    let arguments = fc.get("args").filter(|a| !a.is_null()).map_or_else(|| "{}".to_owned(), Value::to_string);
    let mut call = json!({ "id": id, "type": "function", "function": { "name": fc["name"], "arguments": arguments } });
    if let Some(sig) = signature {
        call["extra_content"] = json!({ "google": { "thought_signature": sig } });
    }
    call
}

fn candidate_index(c: &Value, position: usize) -> u64 {
    c["index"].as_u64().unwrap_or(position as u64)
}

fn chat_response(body: &[u8], model: &str) -> Result<Bytes, BoxError> {
    let v: Value = serde_json::from_slice(body)?;
    let mut choices: Vec<Value> = Vec::new();
    for (position, c) in v["candidates"].as_array().into_iter().flatten().enumerate() {
        let (text, calls) = read_parts(c);
        let finish = finish_reason(c["finishReason"].as_str().unwrap_or("STOP"), !calls.is_empty());
        let content = if text.is_empty() && (!calls.is_empty() || finish == "content_filter") {
            Value::Null
        } else {
            text.into()
        };
        let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
        if !calls.is_empty() {
            message["tool_calls"] = calls.into();
        }
        choices.push(json!({
            "index": candidate_index(c, position), "message": message, "logprobs": null, "finish_reason": finish
        }));
    }
    if choices.is_empty() {
        // The prompt itself was blocked (`promptFeedback.blockReason`): no candidates.
        let message = json!({ "role": "assistant", "content": null, "refusal": null });
        choices.push(json!({ "index": 0, "message": message, "logprobs": null, "finish_reason": "content_filter" }));
    }
    let mut out = json!({
        "id": response_id(&v),
        "object": "chat.completion",
        "created": now_secs(),
        "model": v["modelVersion"].as_str().unwrap_or(model),
        "choices": choices,
    });
    if let Some(u) = usage(&v["usageMetadata"]) {
        out["usage"] = u;
    }
    Ok(Bytes::from(serde_json::to_vec(&out)?))
}

fn response_id(v: &Value) -> String {
    match v["responseId"].as_str() {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-{}", random_base62(24)),
    }
}

fn embeddings_response(
    body: &[u8],
    model: &str,
    inputs: usize,
    base64: bool,
    prompt_tokens: u64,
) -> Result<Bytes, BoxError> {
    #[derive(serde::Deserialize)]
    struct Batch {
        #[serde(default)]
        embeddings: Vec<Embedding>,
    }
    #[derive(serde::Deserialize)]
    struct Embedding {
        values: Vec<f32>,
    }
    let batch: Batch = serde_json::from_slice(body)?;
    if batch.embeddings.len() != inputs {
        return Err(format!("Gemini returned {} embeddings for {inputs} inputs", batch.embeddings.len()).into());
    }
    let data: Vec<Value> = batch
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(e.values)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    });
    Ok(Bytes::from(serde_json::to_vec(&out)?))
}

/// One streamed answer being translated: Gemini's `GenerateContentResponse` chunks in,
/// OpenAI `chat.completion.chunk` events out.
struct ChatStream {
    id: Option<String>,
    created: i64,
    model: String,
    /// By candidate index.
    choices: Vec<ChoiceState>,
    /// The latest `usageMetadata` (Gemini repeats it, growing, on every chunk).
    usage: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ChoiceState {
    opened: bool,
    tool_calls: usize,
    finished: bool,
}

impl ChatStream {
    fn new(model: String) -> Self {
        Self { id: None, created: now_secs(), model, choices: Vec::new(), usage: None }
    }

    fn write(&mut self, out: &mut BytesMut, choices: Value, usage: Option<Value>) {
        let id = self.id.get_or_insert_with(|| format!("chatcmpl-{}", random_base62(24)));
        let mut chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices
        });
        if let Some(u) = usage {
            chunk["usage"] = u;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }

    fn state(&mut self, index: u64) -> Result<&mut ChoiceState, BoxError> {
        let i = usize::try_from(index)
            .ok()
            .filter(|i| (*i as u64) < MAX_CANDIDATES)
            .ok_or("candidate index out of range")?;
        if self.choices.len() <= i {
            self.choices.resize(i + 1, ChoiceState::default());
        }
        Ok(&mut self.choices[i])
    }

    /// The role chunk a choice opens with.
    fn open(&mut self, index: u64, out: &mut BytesMut) -> Result<(), BoxError> {
        if !self.state(index)?.opened {
            self.state(index)?.opened = true;
            let delta = json!({ "role": "assistant", "content": "" });
            self.write(out, json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }]), None);
        }
        Ok(())
    }

    fn finish_choice(&mut self, index: u64, reason: &'static str, out: &mut BytesMut) -> Result<(), BoxError> {
        let state = self.state(index)?;
        if !state.finished {
            state.finished = true;
            self.write(out, json!([{ "index": index, "delta": {}, "logprobs": null, "finish_reason": reason }]), None);
        }
        Ok(())
    }

    /// Translates one upstream event's `data`.
    fn event(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), BoxError> {
        let v: Value = serde_json::from_slice(data)?;
        if let Some(error) = v.get("error") {
            let message: String = error["message"].as_str().unwrap_or("").chars().take(300).collect();
            return Err(format!("Gemini reported an error mid-stream: {message}").into());
        }
        if self.id.is_none() {
            if let Some(m) = v["modelVersion"].as_str() {
                m.clone_into(&mut self.model);
            }
            if let Some(r) = v["responseId"].as_str().filter(|r| !r.is_empty()) {
                self.id = Some(format!("chatcmpl-{r}"));
            }
        }
        if let Some(u) = usage(&v["usageMetadata"]) {
            self.usage = Some(u);
        }
        let candidates = v["candidates"].as_array().map(Vec::as_slice).unwrap_or_default();
        if candidates.is_empty() && v["promptFeedback"]["blockReason"].is_string() {
            self.open(0, out)?;
            self.finish_choice(0, "content_filter", out)?;
        }
        for (position, c) in candidates.iter().enumerate() {
            let index = candidate_index(c, position);
            self.open(index, out)?;
            let (text, calls) = read_parts(c);
            if !text.is_empty() {
                let delta = json!({ "content": text });
                self.write(
                    out,
                    json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }]),
                    None,
                );
            }
            if !calls.is_empty() {
                let first = self.state(index)?.tool_calls;
                self.state(index)?.tool_calls += calls.len();
                let calls: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut call)| {
                        call["index"] = (first + k).into();
                        call
                    })
                    .collect();
                let delta = json!({ "tool_calls": calls });
                self.write(
                    out,
                    json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }]),
                    None,
                );
            }
            if let Some(reason) = c["finishReason"].as_str() {
                let reason = finish_reason(reason, self.state(index)?.tool_calls > 0);
                self.finish_choice(index, reason, out)?;
            }
        }
        Ok(())
    }

    /// The end of a clean upstream stream: open choices finish, the usage-only chunk the
    /// gateway always wants (the meter hides it from clients that did not ask), `[DONE]`.
    fn end(&mut self, out: &mut BytesMut) {
        let unfinished: Vec<(u64, bool)> = (0u64..)
            .zip(&self.choices)
            .filter(|(_, s)| s.opened && !s.finished)
            .map(|(i, s)| (i, s.tool_calls > 0))
            .collect();
        for (index, tools) in unfinished {
            let reason = if tools { "tool_calls" } else { "stop" };
            let _ = self.finish_choice(index, reason, out);
        }
        if let Some(u) = self.usage.take() {
            self.write(out, json!([]), Some(u));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// The `data` of one SSE event (lines joined by `\n`), empty if it has none.
fn event_data(event: &[u8]) -> Cow<'_, [u8]> {
    let mut data: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            data = if data.is_empty() {
                Cow::Borrowed(rest)
            } else {
                let mut joined = data.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(rest);
                Cow::Owned(joined)
            };
        }
    }
    data
}

enum Mode {
    /// Gathered whole, then translated at once.
    Json { buf: BytesMut, kind: JsonKind },
    /// Translated event by event; `pending` holds an incomplete event.
    Sse { pending: BytesMut, stream: ChatStream },
}

enum JsonKind {
    Chat { model: String },
    Embeddings { model: String, inputs: usize, base64: bool, prompt_tokens: u64 },
}

impl Mode {
    /// Takes in upstream bytes; returns the translated bytes that are ready.
    fn feed(&mut self, data: &[u8]) -> Result<Bytes, BoxError> {
        match self {
            Mode::Json { buf, .. } => {
                if buf.len() + data.len() > MAX_JSON_BODY {
                    return Err("the Gemini answer is larger than the gateway translates".into());
                }
                buf.extend_from_slice(data);
                Ok(Bytes::new())
            }
            Mode::Sse { pending, stream } => {
                pending.extend_from_slice(data);
                let mut out = BytesMut::new();
                while let Some(end) = event_end(pending) {
                    let event = pending.split_to(end);
                    let data = event_data(&event);
                    if !data.is_empty() {
                        stream.event(&data, &mut out)?;
                    }
                }
                if pending.len() > MAX_EVENT_BYTES {
                    return Err("a Gemini stream event is larger than the gateway translates".into());
                }
                Ok(out.freeze())
            }
        }
    }

    /// The upstream body ended cleanly: what is left to send.
    fn end(&mut self) -> Result<Bytes, BoxError> {
        match self {
            Mode::Json { buf, kind: JsonKind::Chat { model } } => chat_response(buf, model),
            Mode::Json { buf, kind: JsonKind::Embeddings { model, inputs, base64, prompt_tokens } } => {
                embeddings_response(buf, model, *inputs, *base64, *prompt_tokens)
            }
            Mode::Sse { pending, stream } => {
                let mut out = BytesMut::new();
                // An unterminated last event is still an event.
                let last = pending.split();
                let data = event_data(&last);
                if !data.is_empty() {
                    stream.event(&data, &mut out)?;
                }
                stream.end(&mut out);
                Ok(out.freeze())
            }
        }
    }
}

/// A Gemini response body read as OpenAI's. Upstream failures (and answers that cannot be
/// translated) surface as body errors, which the meter records as `upstream_interrupted`
/// exactly as for an OpenAI-compatible upstream. Dropping it drops the upstream body,
/// which cancels the upstream request.
pub(crate) struct Translated<B> {
    inner: B,
    mode: Mode,
    done: bool,
}

impl<B> Translated<B> {
    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!(error = %e, "translating the Gemini response failed");
        Poll::Ready(Some(Err(e)))
    }
}

impl<B> Body for Translated<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let data = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_trailers) => continue,
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.done = true;
                    return match this.mode.end() {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => this.fail(e),
                    };
                }
            };
            let mut out = match this.mode.feed(&data) {
                Ok(out) => out,
                Err(e) => return this.fail(e),
            };
            // With a Content-Length the upstream body may never yield `None`.
            if this.inner.is_end_stream() {
                this.done = true;
                match this.mode.end() {
                    Ok(rest) if out.is_empty() => out = rest,
                    Ok(rest) => {
                        let mut all = BytesMut::from(out);
                        all.extend_from_slice(&rest);
                        out = all.freeze();
                    }
                    Err(e) => return this.fail(e),
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn chat(body: Value) -> Value {
        let (sent, _) = prepare(Endpoint::ChatCompletions, "gemini-2.5-flash", body.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&sent).unwrap()
    }

    fn chat_err(body: Value) -> ApiError {
        prepare(Endpoint::ChatCompletions, "gemini-2.5-flash", body.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn model_ids_and_versions_are_checked() {
        for good in ["gemini-2.5-flash", "gemini-embedding-001", "text-embedding-004", "gemini-1.5-pro_latest"] {
            assert!(GeminiUpstream::check_model(good).is_ok(), "{good}");
        }
        for bad in ["", "models/gemini", "a?b", "a#b", "x:generateContent", "..", "a..b", ".hidden", "a b", "é"] {
            assert!(GeminiUpstream::check_model(bad).is_err(), "{bad}");
        }
        for good in ["v1", "v1beta", "v1alpha", "v2beta3"] {
            assert!(GeminiUpstream::check_api_version(good).is_ok(), "{good}");
        }
        for bad in ["", "v", "beta", "v1/../x", "v1beta?x", "1"] {
            assert!(GeminiUpstream::check_api_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_is_a_sensitive_header_never_in_debug_output() {
        let up = GeminiUpstream::new("https://g.example", "v1beta", &Secret::new("AIza-secret-key")).unwrap();
        assert!(!format!("{up:?}").contains("AIza-secret-key"));
        assert!(up.api_key.as_ref().is_some_and(HeaderValue::is_sensitive));
        let uri = up.uri("gemini-2.5-flash", "streamGenerateContent?alt=sse").unwrap();
        assert_eq!(uri.to_string(), "https://g.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
        assert!(up.uri("../files", "generateContent").is_err());
    }

    #[test]
    fn chat_requests_translate_roles_parts_tools_and_settings() {
        let g = chat(json!({
            "model": "m",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "developer", "content": [{ "type": "text", "text": "Use metric." }] },
                { "role": "user", "content": "hi" },
                { "role": "user", "content": [
                    { "type": "text", "text": "what is this?" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0=" } }
                ] },
                { "role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" },
                    "extra_content": { "google": { "thought_signature": "sig==" } }
                }] },
                { "role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}" }
            ],
            "tools": [{ "type": "function", "function": {
                "name": "weather", "description": "Weather now", "parameters": { "type": "object" }
            } }],
            "tool_choice": { "type": "function", "function": { "name": "weather" } },
            "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stop": "END", "n": 2,
            "response_format": { "type": "json_object" }
        }));
        assert_eq!(g["systemInstruction"], json!({ "parts": [{ "text": "Be brief." }, { "text": "Use metric." }] }));
        assert_eq!(
            g["contents"],
            json!([
                { "role": "user", "parts": [
                    { "text": "hi" }, { "text": "what is this?" },
                    { "inlineData": { "mimeType": "image/png", "data": "iVBORw0=" } }
                ] },
                { "role": "model", "parts": [{
                    "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "sig=="
                }] },
                { "role": "user", "parts": [{ "functionResponse": { "name": "weather", "response": { "temp": 21 } } }] }
            ])
        );
        assert_eq!(
            g["tools"],
            json!([{ "functionDeclarations": [{
                "name": "weather", "description": "Weather now", "parametersJsonSchema": { "type": "object" }
            }] }])
        );
        assert_eq!(
            g["toolConfig"],
            json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["weather"] } })
        );
        assert_eq!(
            g["generationConfig"],
            json!({
                "maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"],
                "candidateCount": 2, "responseMimeType": "application/json"
            })
        );
    }

    #[test]
    fn chat_requests_gemini_cannot_express_are_400s() {
        let user = |content: Value| json!({ "model": "m", "messages": [{ "role": "user", "content": content }] });
        let remote = user(json!([{ "type": "image_url", "image_url": { "url": "https://x.example/cat.png" } }]));
        let e = chat_err(remote);
        assert!(e.message.contains("data: URLs"), "{}", e.message);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let orphan = json!({ "model": "m", "messages": [{ "role": "tool", "tool_call_id": "nope", "content": "1" }] });
        assert!(chat_err(orphan).message.contains("tool_call_id"));
        assert!(chat_err(json!({ "model": "m", "messages": [] })).message.contains("messages"));
        assert!(
            chat_err(json!({ "model": "m", "messages": [{ "role": "system", "content": "x" }] }))
                .message
                .contains("user")
        );
        let mut many = user(json!("x"));
        many["n"] = 9.into();
        assert_eq!(chat_err(many).param.as_deref(), Some("n"));
        let mut bad = user(json!("x"));
        bad["temperature"] = "hot".into();
        assert_eq!(chat_err(bad).param.as_deref(), Some("temperature"));
        let e = prepare(Endpoint::Completions, "m", br#"{"model":"m","prompt":"x"}"#).unwrap_err();
        assert!(e.message.contains("/v1/chat/completions and /v1/embeddings only"), "{}", e.message);
    }

    #[test]
    fn embeddings_translate_and_answer_in_openai_shape() {
        let body =
            json!({ "model": "e", "input": ["hello world", "abc"], "dimensions": 4, "encoding_format": "base64" });
        let (sent, call) = prepare(Endpoint::Embeddings, "gemini-embedding-001", body.to_string().as_bytes()).unwrap();
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(call.method, "batchEmbedContents");
        assert_eq!(
            sent["requests"][1],
            json!({
                "model": "models/gemini-embedding-001", "content": { "parts": [{ "text": "abc" }] }, "outputDimensionality": 4
            })
        );
        assert!(call.usage_is_estimate());
        let upstream = br#"{"embeddings":[{"values":[0.5,-1.0]},{"values":[0.25,2.0]}]}"#;
        let out = embeddings_response(upstream, "gemini-embedding-001", 2, true, 4).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let b64 = v["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(bytes, [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat());
        assert_eq!(v["usage"], json!({ "prompt_tokens": 4, "total_tokens": 4 }));
        let out = embeddings_response(upstream, "m", 2, false, 4).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][1], json!({ "object": "embedding", "index": 1, "embedding": [0.25, 2.0] }));
        assert!(embeddings_response(upstream, "m", 3, false, 4).is_err(), "a count mismatch is an upstream failure");
    }

    #[test]
    fn chat_responses_translate_text_tools_finish_and_usage() {
        let upstream = json!({
            "candidates": [{
                "content": { "role": "model", "parts": [
                    { "text": "thinking…", "thought": true },
                    { "text": "Let me check." },
                    { "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "s1" }
                ] },
                "finishReason": "STOP", "index": 0
            }],
            "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "totalTokenCount": 22 },
            "modelVersion": "gemini-2.5-flash", "responseId": "abc"
        });
        let out: Value = serde_json::from_slice(&chat_response(upstream.to_string().as_bytes(), "x").unwrap()).unwrap();
        assert_eq!(out["id"], "chatcmpl-abc");
        assert_eq!(out["model"], "gemini-2.5-flash");
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        let call = &choice["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["function"], json!({ "name": "weather", "arguments": "{\"city\":\"Paris\"}" }));
        assert_eq!(call["extra_content"]["google"]["thought_signature"], "s1");
        assert_eq!(
            (out["usage"]["prompt_tokens"].as_u64(), out["usage"]["completion_tokens"].as_u64()),
            (Some(10), Some(12))
        );
        for (gemini, openai) in
            [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("STOP", "stop")]
        {
            let v = json!({ "candidates": [{ "content": { "parts": [{ "text": "x" }] }, "finishReason": gemini }] });
            let out: Value = serde_json::from_slice(&chat_response(v.to_string().as_bytes(), "x").unwrap()).unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], openai, "{gemini}");
        }
        let blocked =
            json!({ "promptFeedback": { "blockReason": "SAFETY" }, "usageMetadata": { "promptTokenCount": 3 } });
        let out: Value = serde_json::from_slice(&chat_response(blocked.to_string().as_bytes(), "x").unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    }

    #[test]
    fn errors_become_openai_shaped_and_bad_keys_are_credential_failures() {
        let bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        let (status, _, _) = openai_error(StatusCode::BAD_REQUEST, bad_key);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let limited = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7.2s"}]}}"#;
        let (status, retry, _) = openai_error(StatusCode::TOO_MANY_REQUESTS, limited);
        assert_eq!((status, retry), (StatusCode::TOO_MANY_REQUESTS, Some(8)));
        let (status, _, body) = openai_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"Invalid value at 'contents'","status":"INVALID_ARGUMENT"}}"#,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["message"], "Invalid value at 'contents'");
        assert_eq!(v["error"]["code"], "invalid_argument");
    }

    fn sse_chunks(text: &str) -> Vec<Value> {
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// Feeds `upstream` in pieces of `step` bytes through the translating body.
    async fn translate_stream(upstream: &str, step: usize) -> Result<String, BoxError> {
        let pieces: Vec<Result<Frame<Bytes>, std::io::Error>> =
            upstream.as_bytes().chunks(step).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        let inner = StreamBody::new(futures_util::stream::iter(pieces));
        let call = Call { method: "streamGenerateContent?alt=sse", reply: Reply::Chat { stream: true } };
        let res = translate(&call, "gemini-2.5-flash", Response::new(inner));
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
        let bytes = res.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec())?)
    }

    #[tokio::test]
    async fn streams_translate_incrementally_whatever_the_cuts() {
        let upstream = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],",
            "\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1,\"totalTokenCount\":5},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],",
            "\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2,\"totalTokenCount\":6},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
        );
        for step in [1, 7, 64, upstream.len()] {
            let out = translate_stream(upstream, step).await.unwrap();
            assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
            let chunks = sse_chunks(&out);
            assert_eq!(chunks[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
            assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-r1" && c["object"] == "chat.completion.chunk"));
            let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
            assert_eq!(text, "Hello", "step {step}");
            let finish: Vec<_> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
            assert_eq!(finish, ["stop"]);
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]));
            assert_eq!(
                (last["usage"]["prompt_tokens"].as_u64(), last["usage"]["completion_tokens"].as_u64()),
                (Some(4), Some(2))
            );
        }
    }

    #[tokio::test]
    async fn streamed_function_calls_become_tool_call_deltas() {
        let upstream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{\"city\":\"Oslo\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":3}}\n\n";
        let chunks = sse_chunks(&translate_stream(upstream, 13).await.unwrap());
        let call = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert_eq!(call["function"], json!({ "name": "weather", "arguments": "{\"city\":\"Oslo\"}" }));
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[tokio::test]
    async fn an_error_event_or_an_oversized_event_fails_the_body() {
        let upstream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"index\":0}]}\n\ndata: {\"error\":{\"code\":500,\"message\":\"Internal\",\"status\":\"INTERNAL\"}}\n\n";
        assert!(translate_stream(upstream, 5).await.is_err());
        let huge = format!("data: {}", "x".repeat(MAX_EVENT_BYTES + 1));
        assert!(translate_stream(&huge, 1 << 20).await.is_err());
    }
}
