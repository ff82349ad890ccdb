//! A fake Google Gemini API upstream: a real HTTP server on a random loopback port that
//! speaks Gemini's wire format, so the `gemini` adapter is tested over real sockets.
//!
//! It owns the wire format and the switchable [`Behavior`]; the server task and the log of
//! received requests are the shared `fake_server` scaffolding.
//! Dropping a [`FakeGemini`] aborts the server and every open connection.
//!
//! # Endpoints (`{version}` is any `v…` segment, e.g. `v1beta`)
//! `POST /{version}/models/{model}:generateContent`, `…:streamGenerateContent` (`?alt=sse`:
//! server-sent events, each `data: {GenerateContentResponse}\r\n\r\n`; without it a JSON
//! array of the same chunks) and `…:batchEmbedContents`. Checks run in this order: the
//! behavior (`Status`, `CloseConnection`, `Delay`), then the API key (`x-goog-api-key`, or
//! `?key=` as Google also accepts: missing → 403 `PERMISSION_DENIED`, wrong → 400
//! `INVALID_ARGUMENT` with reason `API_KEY_INVALID`, as Google answers), then the route
//! (404 `NOT_FOUND`; models must start with `gemini-`, `text-embedding-` or `embedding-`),
//! then the body: unknown fields of the request or of `generationConfig` are a 400
//! (`Invalid JSON payload received. Unknown name …`), so a translation that sends OpenAI's
//! field names fails loudly.
//!
//! # Deterministic content and usage
//! The reply is [`REPLY_TEXT`] (5 words), cut before the first `stopSequences` entry it
//! contains and after `maxOutputTokens` words (`finishReason` `MAX_TOKENS`, else `STOP`).
//! Streams send one word per chunk, every chunk with the `usageMetadata` so far, the last
//! with `finishReason`. `candidateCount` candidates (`index` 0…) carry the same text.
//!
//! A function call is answered instead when `tools` declare functions, the mode in
//! `toolConfig.functionCallingConfig` is not `NONE`, the last content holds no
//! `functionResponse`, and either the mode is `ANY` or the last user text contains
//! [`TOOL_TRIGGER`]: `{"functionCall":{"name": <first allowed function>, "args":
//! {"location":"Paris"}}, "thoughtSignature": THOUGHT_SIGNATURE}` with `finishReason: STOP`.
//!
//! * `promptTokenCount` = Σ over `systemInstruction` and each content of (1 + words of its
//!   text parts + [`MEDIA_TOKENS`] per `inlineData`/`fileData` part + 3 per function call or
//!   response part).
//! * `candidatesTokenCount` = words of the reply × candidates, or [`FUNCTION_CALL_TOKENS`].
//! * `thoughtsTokenCount` = [`THOUGHTS_TOKENS`] for models whose name contains `thinking`
//!   (absent otherwise); `totalTokenCount` = the sum.
//! * embeddings: `outputDimensionality` (default [`DEFAULT_EMBEDDING_DIMENSIONS`]) values;
//!   value `j` of request `i` is `((7 * i + j) % 64) / 64 - 0.5`, exact in `f32`. No usage,
//!   as Google sends none.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

pub use crate::fake_server::RecordedRequest;
use crate::fake_server::{self, Fake, FakeBody, FakeServer};

/// The text every generation answers with.
pub const REPLY_TEXT: &str = "Hello from the fake Gemini.";
/// A word in the last user text that makes the fake call a declared function.
pub const TOOL_TRIGGER: &str = "weather";
/// The `thoughtSignature` sent with every function call.
pub const THOUGHT_SIGNATURE: &str = "ZmFrZS10aG91Z2h0LXNpZ25hdHVyZQ==";
/// `candidatesTokenCount` of a function call.
pub const FUNCTION_CALL_TOKENS: u64 = 5;
/// `thoughtsTokenCount` of models whose name contains `thinking`.
pub const THOUGHTS_TOKENS: u64 = 4;
/// Prompt tokens per image or file part (Gemini counts a small image as 258).
pub const MEDIA_TOKENS: u64 = 258;
/// Embedding width when the request sends no `outputDimensionality`.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 768;
/// `retryDelay` of a 429, in seconds.
pub const RETRY_DELAY_SECS: u64 = 7;

const MAX_EMBED_REQUESTS: usize = 100;
const JSON: &str = "application/json; charset=UTF-8";

/// How the fake answers; applies to requests received after [`FakeGemini::set_behavior`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Behavior {
    /// Answer as Gemini would.
    #[default]
    Normal,
    /// Answer every request with this status and Gemini's error body for it (429:
    /// `RESOURCE_EXHAUSTED` with a `RetryInfo` of [`RETRY_DELAY_SECS`] and no `Retry-After`
    /// header, as Google sends it).
    Status(u16),
    /// Wait this long before sending response headers.
    Delay(Duration),
    /// Streams: the first chunk at once, then wait `chunk_delay` before every further one.
    SlowStream {
        /// Pause before each chunk after the first.
        chunk_delay: Duration,
    },
    /// Streams: send this many chunks, then abort the connection.
    BreakStreamAfter(usize),
    /// Streams: send this many chunks, then a `data: {"error":…}` event (500 `INTERNAL`)
    /// and end the stream cleanly, as Gemini does when generation fails mid-way.
    ErrorEventAfter(usize),
    /// Accept the TCP connection and close it without answering.
    CloseConnection,
    /// Answers carry no `usageMetadata`.
    NoUsage,
}

/// A running fake Gemini API. Serves until dropped.
#[derive(Debug)]
pub struct FakeGemini {
    server: FakeServer<Gemini>,
}

/// The Gemini API, for [`FakeServer`].
#[derive(Debug)]
struct Gemini {
    api_key: String,
}

type Shared = fake_server::Shared<Gemini>;

impl Fake for Gemini {
    type Behavior = Behavior;
    const NAME: &'static str = "fake Gemini";

    fake_server::preflight_by_variant!(Behavior);

    fn status_response(_: &Shared, code: u16) -> Response<FakeBody> {
        status_response(code)
    }

    fn answer(shared: &Shared, parts: &Parts, parsed: Option<Value>, behavior: Behavior) -> Response<FakeBody> {
        handle(shared, parts, parsed, behavior)
    }
}

impl FakeGemini {
    /// Binds `127.0.0.1:0` and serves, accepting only `api_key`, until dropped.
    #[expect(clippy::expect_used, reason = "test helper: without a loopback port there is no test to run")]
    pub async fn start(api_key: &str) -> FakeGemini {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let fake = Gemini { api_key: api_key.to_owned() };
        FakeGemini { server: FakeServer::start(listen, true, fake).await.expect("fake Gemini: bind 127.0.0.1:0") }
    }

    /// `http://127.0.0.1:PORT` (the API version is part of each path).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Changes how subsequent requests are answered.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.server.set_behavior(behavior);
    }
}

/// A request past the behavior's checks.
fn handle(shared: &Shared, parts: &Parts, parsed: Option<Value>, behavior: Behavior) -> Response<FakeBody> {
    let query = parts.uri.query();
    let query_key = query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("key=")));
    let key = parts.headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).or(query_key);
    match key {
        None | Some("") => return error(403, "PERMISSION_DENIED", MISSING_KEY, None),
        Some(k) if k != shared.fake.api_key => {
            let details = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": { "service": "generativelanguage.googleapis.com" }
            }]);
            return error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", Some(details));
        }
        Some(_) => {}
    }

    let path = parts.uri.path();
    let route = path
        .strip_prefix('/')
        .and_then(|p| p.split_once("/models/"))
        .filter(|(version, _)| version.starts_with('v'))
        .and_then(|(_, rest)| rest.split_once(':'));
    let Some((model, method)) = route.filter(|_| parts.method == Method::POST) else {
        return error(404, "NOT_FOUND", &format!("Method not found: {} {path}", parts.method), None);
    };
    let known = ["gemini-", "text-embedding-", "embedding-"].iter().any(|p| model.starts_with(p));
    if !known || model.contains('/') {
        let message = format!("models/{model} is not found for API version v1beta, or is not supported for {method}.");
        return error(404, "NOT_FOUND", &message, None);
    }
    let Some(body) = parsed else {
        return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected end of string.", None);
    };
    let ctx = Ctx { shared, behavior, model, body: &body };
    let sse = query.is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
    match method {
        "generateContent" => generate(&ctx, None),
        "streamGenerateContent" => generate(&ctx, Some(sse)),
        "batchEmbedContents" => embed(&ctx),
        other => error(404, "NOT_FOUND", &format!("Method not found: {other}"), None),
    }
}

const MISSING_KEY: &str = "Method doesn't allow unregistered callers (callers without established identity). \
                           Please use API Key or other form of API consumer identity to call this API.";

struct Ctx<'a> {
    shared: &'a Shared,
    behavior: Behavior,
    model: &'a str,
    body: &'a Value,
}

const REQUEST_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
];
const GENERATION_CONFIG_FIELDS: &[&str] = &[
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
];

fn unknown_field(obj: &Value, known: &[&str], at: &str) -> Option<Response<FakeBody>> {
    let unknown = obj.as_object()?.keys().find(|k| !known.contains(&k.as_str()))?;
    let at = if at.is_empty() { String::new() } else { format!(" at '{at}'") };
    let message = format!("Invalid JSON payload received. Unknown name \"{unknown}\"{at}: Cannot find field.");
    Some(error(400, "INVALID_ARGUMENT", &message, None))
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn content_tokens(content: &Value) -> u64 {
    1 + content["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            if let Some(t) = p["text"].as_str() {
                words(t)
            } else if p.get("inlineData").is_some() || p.get("fileData").is_some() {
                MEDIA_TOKENS
            } else {
                3
            }
        })
        .sum::<u64>()
}

/// The function to call, if this request is answered with a function call.
fn function_to_call(body: &Value) -> Option<String> {
    let config = &body["toolConfig"]["functionCallingConfig"];
    let mode = config["mode"].as_str().unwrap_or("AUTO");
    if mode == "NONE" {
        return None;
    }
    let allowed: Vec<&str> =
        config["allowedFunctionNames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let declared = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten())
        .filter_map(|d| d["name"].as_str())
        .find(|n| allowed.is_empty() || allowed.contains(n))?;
    let last = body["contents"].as_array()?.last()?;
    let parts = last["parts"].as_array()?;
    if parts.iter().any(|p| p.get("functionResponse").is_some()) {
        return None;
    }
    let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" ");
    (mode == "ANY" || (last["role"] == "user" && text.contains(TOOL_TRIGGER))).then(|| declared.to_owned())
}

/// `stream`: `None` for `generateContent`, else whether the stream is SSE.
fn generate(ctx: &Ctx<'_>, stream: Option<bool>) -> Response<FakeBody> {
    let body = ctx.body;
    if let Some(rejection) = unknown_field(body, REQUEST_FIELDS, "")
        .or_else(|| unknown_field(&body["generationConfig"], GENERATION_CONFIG_FIELDS, "generation_config"))
    {
        return rejection;
    }
    let Some(contents) = body["contents"].as_array().filter(|c| !c.is_empty()) else {
        return error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n", None);
    };
    if let Some(bad) = contents.iter().find(|c| !matches!(c["role"].as_str(), Some("user" | "model"))) {
        let message = format!("Please use a valid role: user, model. (got {})", bad["role"]);
        return error(400, "INVALID_ARGUMENT", &message, None);
    }
    let config = &body["generationConfig"];
    let candidates = config["candidateCount"].as_u64().unwrap_or(1);
    if !(1..=8).contains(&candidates) {
        return error(400, "INVALID_ARGUMENT", "candidateCount must be between 1 and 8.", None);
    }
    let prompt_tokens: u64 =
        contents.iter().map(content_tokens).sum::<u64>() + body.get("systemInstruction").map_or(0, content_tokens);
    let thoughts = ctx.model.contains("thinking").then_some(THOUGHTS_TOKENS);

    // Each entry: the parts of one chunk for every candidate, and the finish reason if last.
    let mut script: Vec<(Vec<Value>, Option<&str>)> = Vec::new();
    let output_tokens;
    if let Some(name) = function_to_call(body) {
        let part = json!({
            "functionCall": { "name": name, "args": { "location": "Paris" } }, "thoughtSignature": THOUGHT_SIGNATURE
        });
        script.push((vec![part], Some("STOP")));
        output_tokens = FUNCTION_CALL_TOKENS;
    } else {
        let stops: Vec<&str> =
            config["stopSequences"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let cut = stops.iter().filter_map(|s| REPLY_TEXT.find(s)).min().unwrap_or(REPLY_TEXT.len());
        let mut reply: Vec<&str> = REPLY_TEXT[..cut].split_whitespace().collect();
        let mut finish = "STOP";
        if let Some(max) = config["maxOutputTokens"].as_u64().and_then(|m| usize::try_from(m).ok())
            && max < reply.len()
        {
            reply.truncate(max);
            finish = "MAX_TOKENS";
        }
        let count = reply.len();
        for (i, w) in reply.iter().enumerate() {
            let text = if i == 0 { (*w).to_owned() } else { format!(" {w}") };
            script.push((vec![json!({ "text": text })], (i + 1 == count).then_some(finish)));
        }
        if script.is_empty() {
            script.push((vec![json!({ "text": "" })], Some(finish)));
        }
        output_tokens = count as u64 * candidates;
    }

    let id = format!("fakeGeminiResponse{:08}", ctx.shared.next_id());
    let no_usage = ctx.behavior == Behavior::NoUsage;
    let steps = script.len() as u64;
    let chunk = |parts: &[Value], finish: Option<&str>, so_far: u64| -> Value {
        let cands: Vec<Value> = (0..candidates)
            .map(|index| {
                let mut c = json!({ "content": { "parts": parts, "role": "model" }, "index": index });
                if let Some(f) = finish {
                    c["finishReason"] = f.into();
                }
                c
            })
            .collect();
        let mut out = json!({ "candidates": cands, "modelVersion": ctx.model, "responseId": id });
        if !no_usage {
            let mut usage = json!({
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": so_far,
                "totalTokenCount": prompt_tokens + so_far + thoughts.unwrap_or(0),
                "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": prompt_tokens }],
            });
            if let Some(t) = thoughts {
                usage["thoughtsTokenCount"] = t.into();
            }
            out["usageMetadata"] = usage;
        }
        out
    };

    let Some(sse) = stream else {
        let parts: Vec<Value> = if script.len() == 1 {
            script[0].0.clone()
        } else {
            let text: String = script.iter().filter_map(|(p, _)| p[0]["text"].as_str()).collect();
            vec![json!({ "text": text })]
        };
        let finish = script.last().and_then(|(_, f)| *f);
        return json_response(StatusCode::OK, &chunk(&parts, finish, output_tokens));
    };
    let chunks: Vec<Value> = script
        .iter()
        .enumerate()
        .map(|(i, (parts, finish))| {
            let so_far = if finish.is_some() { output_tokens } else { (i as u64 + 1) * output_tokens / steps.max(1) };
            chunk(parts, *finish, so_far)
        })
        .collect();
    if !sse {
        return json_response(StatusCode::OK, &Value::from(chunks));
    }
    let mut frames: Vec<Bytes> = chunks.iter().map(|c| Bytes::from(format!("data: {c}\r\n\r\n"))).collect();
    let (delay, break_after) = match &ctx.behavior {
        Behavior::SlowStream { chunk_delay } => (Some(*chunk_delay), None),
        Behavior::BreakStreamAfter(n) => (None, Some((*n).min(frames.len()))),
        Behavior::ErrorEventAfter(n) => {
            frames.truncate(*n);
            let e =
                json!({ "error": { "code": 500, "message": "An internal error has occurred.", "status": "INTERNAL" } });
            frames.push(Bytes::from(format!("data: {e}\r\n\r\n")));
            (None, None)
        }
        _ => (None, None),
    };
    let mut response = fake_server::stream_response(frames, 1, delay, break_after, "text/event-stream");
    response.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

fn embed(ctx: &Ctx<'_>) -> Response<FakeBody> {
    if let Some(rejection) = unknown_field(ctx.body, &["requests"], "") {
        return rejection;
    }
    let Some(requests) = ctx.body["requests"].as_array().filter(|r| !r.is_empty()) else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "* BatchEmbedContentsRequest.requests: requests is not specified\n",
            None,
        );
    };
    if requests.len() > MAX_EMBED_REQUESTS {
        let message = format!(
            "* BatchEmbedContentsRequest.requests: at most {MAX_EMBED_REQUESTS} requests can be in one batch\n"
        );
        return error(400, "INVALID_ARGUMENT", &message, None);
    }
    let expected = format!("models/{}", ctx.model);
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let fields = ["model", "content", "taskType", "title", "outputDimensionality"];
        if let Some(rejection) = unknown_field(r, &fields, &format!("requests[{i}]")) {
            return rejection;
        }
        if r["model"].as_str() != Some(expected.as_str()) {
            let message = format!(
                "Model names should match the URL: requests[{i}].model is {}, expected {expected}.",
                r["model"]
            );
            return error(400, "INVALID_ARGUMENT", &message, None);
        }
        let has_text = r["content"]["parts"].as_array().is_some_and(|p| p.iter().any(|p| p["text"].is_string()));
        if !has_text {
            return error(
                400,
                "INVALID_ARGUMENT",
                &format!("* requests[{i}].content: contents is not specified\n"),
                None,
            );
        }
        let dims = r["outputDimensionality"]
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS);
        let values: Vec<f32> = (0..dims).map(|j| ((7 * i + j) % 64) as f32 / 64.0 - 0.5).collect();
        embeddings.push(json!({ "values": values }));
    }
    json_response(StatusCode::OK, &json!({ "embeddings": embeddings }))
}

/// Decodes an OpenAI `encoding_format: "base64"` embedding (little-endian `f32`s), for
/// assertions on what the gateway made of Gemini's float arrays.
pub fn base64_floats(encoded: &str) -> Option<Vec<f32>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn json_response(status: StatusCode, body: &Value) -> Response<FakeBody> {
    fake_server::json_response(status, JSON, Bytes::from(body.to_string()))
}

/// Google's error body: `{"error":{"code","message","status"[,"details"]}}`.
fn error(code: u16, status: &str, message: &str, details: Option<Value>) -> Response<FakeBody> {
    let mut e = json!({ "code": code, "message": message, "status": status });
    if let Some(d) = details {
        e["details"] = d;
    }
    json_response(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &json!({ "error": e }))
}

/// The error Gemini sends with `code`.
fn status_response(code: u16) -> Response<FakeBody> {
    match code {
        400 => error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", None),
        403 => error(403, "PERMISSION_DENIED", "The caller does not have permission", None),
        404 => error(404, "NOT_FOUND", "Requested entity was not found.", None),
        429 => error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            Some(json!([
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{ "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests" }]
                },
                { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{RETRY_DELAY_SECS}s") }
            ])),
        ),
        500 => error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            None,
        ),
        503 => error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", None),
        504 => error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", None),
        c => error(c, "UNKNOWN", "The fake Gemini failed on purpose.", None),
    }
}
