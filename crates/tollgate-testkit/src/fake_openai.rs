//! A fake OpenAI-compatible upstream: a real HTTP server on a random loopback port that
//! speaks OpenAI's wire format, so gateway tests (and the benchmark) exercise real sockets.
//!
//! It owns the wire format and the switchable [`Behavior`]; the server task and the log of
//! received requests are the shared `fake_server` scaffolding.
//! Dropping a [`FakeOpenAi`] aborts the server and every open connection.
//!
//! # Endpoints (all under `/v1`)
//! `POST /chat/completions`, `POST /completions`, `POST /embeddings`, `POST /responses`,
//! `POST /images/generations`, `GET /models`. The first two and `/responses` stream when the
//! body says `"stream": true`. Checks run in this order: the behavior (`Status`,
//! `CloseConnection`, `Delay`), then `Authorization: Bearer <non-empty>` (else 401
//! `invalid_api_key`), then the route (else 404 `Invalid URL`), then the JSON body (else 400).
//!
//! # Deterministic content and usage
//! The reply is always [`REPLY_TEXT`], `"Hello from the fake upstream."` (5 words); streams send
//! one word per content chunk (`"Hello"`, `" from"`, …). The `model` the request sent is echoed.
//! A "word" is a whitespace-separated run of characters (`str::split_whitespace`).
//!
//! * chat: `prompt_tokens` = Σ over messages of (words in the message's text + 1), where the text
//!   is a string `content` or the `text` of each content part, plus, billed as OpenAI does, each
//!   image by the tile formula (gpt-4o's 85 + 170 a tile, or gpt-4o-mini's 2833 + 5667 when the
//!   model name holds `mini`; `detail: low` is the base alone; a base64 PNG's own size, any other
//!   image 768×2048, the largest) and the `tools` and `response_format` JSON at one token per
//!   4 bytes. `n` choices are returned (streams too, each with its `index`) and
//!   `max(n, best_of)` are billed: `completion_tokens` = that × words in the reply = 5, or
//!   `max_completion_tokens`/`max_tokens` when smaller (reply truncated, `finish_reason:
//!   "length"`). [`Behavior::FullLength`] makes every reply exactly its cap.
//! * completions: `prompt_tokens` = words in `prompt` (a string or every string of an array; a
//!   token array counts its length); `completion_tokens` as for chat (`max_tokens`).
//! * embeddings: `prompt_tokens` = `total_tokens` = words over every input (a token array counts
//!   its length). Vectors have `dimensions` (default [`DEFAULT_EMBEDDING_DIMENSIONS`]) values;
//!   value `j` of input `i` is `((7 * i + j) % 64) / 64 - 0.5`, exact in `f32`.
//! * responses: `input_tokens` = words of a string `input`, or Σ over input items of (words + 1)
//!   like chat messages; `instructions`, when present, counts as one more item.
//!   `output_tokens` = 5; `total_tokens` = the sum.
//! * images: `n` (default 1) images; `b64_json` (a 1×1 PNG) for `gpt-image*` models or
//!   `response_format: "b64_json"`, else a `url`. Only `gpt-image*` models return `usage`:
//!   `input_tokens` = words in `prompt`, `output_tokens` = [`IMAGE_OUTPUT_TOKENS`] × n.
//!
//! # Azure OpenAI
//! `POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings|images/generations}`
//! answers as the matching `/v1` endpoint, after checking, in place of `Authorization`, an
//! `api-key: <non-empty>` header (else 401 with Azure's `{"error":{"code":"401",…}}`) and an
//! `api-version` query (else 404 `Resource not found`, as Azure answers). A body without
//! `model` gets the deployment's name.
//!
//! Streams with `stream_options.include_usage: true` carry `"usage": null` on every chunk and a
//! final chunk with `"choices": []` and the usage object before `data: [DONE]`, as OpenAI does.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

pub use crate::fake_server::RecordedRequest;
use crate::fake_server::{self, Fake, FakeBody, FakeServer};

/// The text every completion answers with.
pub const REPLY_TEXT: &str = "Hello from the fake upstream.";
/// Embedding width when the request sends no `dimensions`.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 1536;
/// `usage.output_tokens` per generated image (for `gpt-image*` models).
pub const IMAGE_OUTPUT_TOKENS: u64 = 100;

const REPLY_WORDS: [&str; 5] = ["Hello", "from", "the", "fake", "upstream."];
const FINGERPRINT: &str = "fp_fake0000001";
/// A 1×1 transparent PNG.
const PNG_1X1_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// How the fake answers; applies to requests received after [`FakeOpenAi::set_behavior`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Behavior {
    /// Answer as OpenAI would.
    #[default]
    Normal,
    /// Answer every request with this status and an OpenAI error body (429 also carries
    /// `retry-after: 1` and `x-ratelimit-*` headers).
    Status(u16),
    /// Wait this long before sending response headers.
    Delay(Duration),
    /// For streams: send the opening events and the first content chunk at once, then wait
    /// `chunk_delay` before every further chunk. Non-streams are unaffected.
    SlowStream {
        /// Pause before each chunk after the first content chunk.
        chunk_delay: Duration,
    },
    /// For streams: send the opening events and this many content chunks, then abort the
    /// connection (no finish chunk, no usage, no `[DONE]`). Non-streams are unaffected.
    BreakStreamAfter(usize),
    /// For streams: send the opening events and this many content chunks, then fall silent
    /// with the connection open (a hung upstream). Non-streams are unaffected.
    StallStreamAfter(usize),
    /// Accept the TCP connection and close it without answering (a request already read on
    /// a kept-alive connection is recorded, then the connection is closed).
    CloseConnection,
    /// Streams omit the usage chunk even when `stream_options.include_usage` is true
    /// (`/responses` sends `"usage": null` in `response.completed`).
    NoUsageInStream,
    /// Answer every request with `307 Temporary Redirect` to this URL (an upstream that
    /// tries to send the gateway elsewhere).
    Redirect(String),
    /// Chat: every choice is as long as `max_completion_tokens`/`max_tokens` allows (the
    /// words repeat), the most a provider can bill for it.
    FullLength,
    /// Chat: usage reports this many prompt tokens, whatever the body (a lying upstream).
    OverReportPrompt(u64),
}

/// Start-up options for [`FakeOpenAi::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to bind; the default is `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Keep every request for [`FakeOpenAi::requests`]; turn off for load tests.
    pub record: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), record: true }
    }
}

/// A running fake upstream. Serves until dropped.
#[derive(Debug)]
pub struct FakeOpenAi {
    server: FakeServer<OpenAi>,
}

/// The OpenAI wire format, for [`FakeServer`].
#[derive(Debug)]
struct OpenAi;

type Shared = fake_server::Shared<OpenAi>;

impl Fake for OpenAi {
    type Behavior = Behavior;
    const NAME: &'static str = "fake upstream";

    fake_server::preflight_by_variant!(Behavior);

    fn status_response(_: &Shared, code: u16) -> Response<FakeBody> {
        status_response(code)
    }

    fn answer(shared: &Shared, parts: &Parts, parsed: Option<Value>, behavior: Behavior) -> Response<FakeBody> {
        answer(shared, parts, parsed, behavior).unwrap_or_else(|rejection| *rejection)
    }
}

impl FakeOpenAi {
    /// Binds `127.0.0.1:0` and serves, recording requests, until dropped.
    #[expect(clippy::expect_used, reason = "test helper: without a loopback port there is no test to run")]
    pub async fn start() -> FakeOpenAi {
        Self::start_with(Options::default()).await.expect("fake upstream: bind 127.0.0.1:0")
    }

    /// Binds `options.listen` and serves until dropped.
    pub async fn start_with(options: Options) -> io::Result<FakeOpenAi> {
        Ok(FakeOpenAi { server: FakeServer::start(options.listen, options.record, OpenAi).await? })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// `http://127.0.0.1:PORT`: the base URL of an `azure` provider in front of this fake.
    pub fn azure_base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request received so far, in order (empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Changes how subsequent requests are answered.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.server.set_behavior(behavior);
    }
}

/// A request past the behavior's checks: `Err` is a ready error answer.
fn answer(shared: &Shared, parts: &Parts, parsed: Option<Value>, behavior: Behavior) -> Handled {
    if let Behavior::Redirect(to) = &behavior {
        let mut response = fake_server::json_response(StatusCode::TEMPORARY_REDIRECT, JSON, Bytes::new());
        if let Ok(location) = HeaderValue::from_str(to) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return Ok(response);
    }
    let path = parts.uri.path();
    let azure = if parts.method == Method::POST { azure_route(path) } else { None };
    let mut parsed = parsed;
    if let Some((deployment, _)) = azure {
        if !azure_authorized(&parts.headers) {
            return Ok(azure_error(
                StatusCode::UNAUTHORIZED,
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a \
                 valid key for an active subscription and use a correct regional API endpoint for your resource.",
            ));
        }
        let version =
            parts.uri.query().into_iter().flat_map(|q| q.split('&')).find_map(|p| p.strip_prefix("api-version="));
        if version.is_none_or(str::is_empty) {
            return Ok(azure_error(StatusCode::NOT_FOUND, "Resource not found"));
        }
        // Azure routes by the URL: the body's `model` is optional.
        if let Some(Value::Object(map)) = parsed.as_mut() {
            map.entry("model").or_insert_with(|| deployment.into());
        }
    } else if !authorized(&parts.headers) {
        return Ok(invalid_api_key());
    }

    let endpoint = if let Some((_, e)) = azure {
        e
    } else {
        match (&parts.method, path) {
            (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
            (&Method::POST, "/v1/completions") => Endpoint::Completions,
            (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
            (&Method::POST, "/v1/responses") => Endpoint::Responses,
            (&Method::POST, "/v1/images/generations") => Endpoint::Images,
            (&Method::GET, "/v1/models") => return Ok(models()),
            (method, _) => {
                return Ok(error_response(
                    StatusCode::NOT_FOUND,
                    &format!("Invalid URL ({method} {path})"),
                    "invalid_request_error",
                    None,
                    None,
                ));
            }
        }
    };
    let Some(body) = parsed else {
        return Ok(error_response(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.)",
            "invalid_request_error",
            None,
            None,
        ));
    };
    let ctx = Ctx { shared, behavior, body: &body };
    match endpoint {
        Endpoint::Chat => chat(&ctx),
        Endpoint::Completions => completions(&ctx),
        Endpoint::Embeddings => embeddings(&ctx),
        Endpoint::Responses => responses(&ctx),
        Endpoint::Images => images(&ctx),
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Images,
}

/// What an endpoint handler reads.
struct Ctx<'a> {
    shared: &'a Shared,
    behavior: Behavior,
    body: &'a Value,
}

/// `Err` is a ready 4xx answer, boxed because a `Response` is large and rejections are rare.
type Handled = Result<Response<FakeBody>, Rejection>;
type Rejection = Box<Response<FakeBody>>;

/// `/openai/deployments/{deployment}/{operation}` → the deployment and the endpoint.
fn azure_route(path: &str) -> Option<(&str, Endpoint)> {
    let rest = path.strip_prefix("/openai/deployments/")?;
    let (deployment, operation) = rest.split_once('/')?;
    let endpoint = match operation {
        "chat/completions" => Endpoint::Chat,
        "completions" => Endpoint::Completions,
        "embeddings" => Endpoint::Embeddings,
        "images/generations" => Endpoint::Images,
        _ => return None,
    };
    (!deployment.is_empty()).then_some((deployment, endpoint))
}

fn azure_authorized(headers: &HeaderMap) -> bool {
    headers.get("api-key").and_then(|v| v.to_str().ok()).is_some_and(|key| !key.trim().is_empty())
}

/// Azure's own error shape: `{"error":{"code":"<status>","message":…}}`.
fn azure_error(status: StatusCode, message: &str) -> Response<FakeBody> {
    let body = json!({ "error": { "code": status.as_u16().to_string(), "message": message } });
    json_response(status, to_bytes(&body))
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty())
}

// ---------------------------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------------------------

fn chat(ctx: &Ctx<'_>) -> Handled {
    let model = require_model(ctx.body)?;
    let Some(messages) = ctx.body.get("messages").and_then(Value::as_array) else {
        return Err(missing_parameter("messages").into());
    };
    let stream = check_stream(ctx.body)?;
    let mini = model.contains("mini");
    let prompt_tokens: u64 = messages.iter().map(|m| words_in_content(m.get("content")) + 1 + images_in(m, mini)).sum();
    let schema_bytes: usize =
        ["tools", "response_format"].iter().filter_map(|k| ctx.body.get(*k)).map(|v| v.to_string().len()).sum();
    let prompt_tokens = match ctx.behavior {
        Behavior::OverReportPrompt(n) => n,
        _ => prompt_tokens + (schema_bytes as u64).div_ceil(4),
    };
    let limit = token_limit(ctx.body, &["max_completion_tokens", "max_tokens"]);
    let reply = if ctx.behavior == Behavior::FullLength { Reply::full(limit) } else { Reply::new(limit) };
    let count = |k: &str| ctx.body.get(k).and_then(Value::as_u64).unwrap_or(1).max(1);
    let (n, billed) = (count("n"), count("n").max(count("best_of")));
    let id = format!("chatcmpl-fake{:016x}", ctx.shared.next_id());
    let created = unix_now();
    let model = json_string(model);
    let usage = chat_usage(prompt_tokens, reply.tokens() * billed);

    let Some(include_usage) = stream else {
        let choices: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"index":{i},"message":{{"role":"assistant","content":{content},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"{finish}"}}"#,
                    content = json_string(&reply.text()),
                    finish = reply.finish_reason(),
                )
            })
            .collect();
        let body = format!(
            r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":{model},"choices":[{choices}],"usage":{usage},"service_tier":"default","system_fingerprint":"{FINGERPRINT}"}}"#,
            choices = choices.join(","),
        );
        return Ok(json_response(StatusCode::OK, Bytes::from(body)));
    };

    let usage_field = if include_usage { r#","usage":null"# } else { "" };
    let chunk = |choices: &str, usage: &str| {
        sse_data(&format!(
            r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":{model},"service_tier":"default","system_fingerprint":"{FINGERPRINT}","choices":[{choices}]{usage}}}"#
        ))
    };
    let mut frames = Vec::with_capacity(reply.words.len() + 4);
    frames.push(chunk(
        r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#,
        usage_field,
    ));
    // Choice after choice, each with its index (OpenAI interleaves them; clients sort by index).
    for i in 0..n {
        if i > 0 {
            let opening = format!(
                r#"{{"index":{i},"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}"#
            );
            frames.push(chunk(&opening, usage_field));
        }
        for piece in reply.pieces() {
            frames.push(chunk(
                &format!(
                    r#"{{"index":{i},"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}"#,
                    json_string(&piece)
                ),
                usage_field,
            ));
        }
        frames.push(chunk(
            &format!(r#"{{"index":{i},"delta":{{}},"logprobs":null,"finish_reason":"{}"}}"#, reply.finish_reason()),
            usage_field,
        ));
    }
    if include_usage && ctx.behavior != Behavior::NoUsageInStream {
        frames.push(chunk("", &format!(r#","usage":{usage}"#)));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let content = frames.len() - 3 - usize::from(include_usage && ctx.behavior != Behavior::NoUsageInStream);
    Ok(stream_response(frames, 1, content, &ctx.behavior))
}

/// A `data:` URL of a PNG whose header says `w` × `h` (all the fake and the gateway read of it).
pub fn png_data_url(w: u32, h: u32) -> String {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(b))
}

/// Image tokens of a chat message, by OpenAI's tile formula (see the module doc).
fn images_in(message: &Value, mini: bool) -> u64 {
    let (base, tile) = if mini { (2833, 5667) } else { (85, 170) };
    let Some(parts) = message.get("content").and_then(Value::as_array) else {
        return 0;
    };
    parts
        .iter()
        .filter_map(|p| p.get("image_url"))
        .map(|image| {
            if image.get("detail").and_then(Value::as_str) == Some("low") {
                return base;
            }
            let url = image.get("url").and_then(Value::as_str).unwrap_or("");
            let (w, h) = url
                .strip_prefix("data:image/png;base64,")
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.get(..32)?).ok())
                .filter(|head| head.len() >= 24 && head[12..16] == *b"IHDR")
                .map_or((768, 2048), |head| {
                    let be = |r: std::ops::Range<usize>| {
                        u64::from(u32::from_be_bytes([
                            head[r.start],
                            head[r.start + 1],
                            head[r.start + 2],
                            head[r.start + 3],
                        ]))
                    };
                    (be(16..20), be(20..24))
                });
            let (w, h) = fit(w, h, 2048);
            let short = w.min(h).max(1);
            let (w, h) = if short > 768 { ((w * 768).div_ceil(short), (h * 768).div_ceil(short)) } else { (w, h) };
            base + tile * w.div_ceil(512) * h.div_ceil(512)
        })
        .sum()
}

fn fit(w: u64, h: u64, max: u64) -> (u64, u64) {
    if w <= max && h <= max {
        (w, h)
    } else if w >= h {
        (max, (h * max).div_ceil(w))
    } else {
        ((w * max).div_ceil(h), max)
    }
}

fn chat_usage(prompt: u64, completion: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{total},"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#,
        total = prompt + completion
    )
}

// ---------------------------------------------------------------------------------------------
// Legacy completions
// ---------------------------------------------------------------------------------------------

fn completions(ctx: &Ctx<'_>) -> Handled {
    let model = require_model(ctx.body)?;
    let stream = check_stream(ctx.body)?;
    let prompt_tokens = words_in_input(ctx.body.get("prompt"));
    let reply = Reply::new(token_limit(ctx.body, &["max_tokens"]));
    let id = format!("cmpl-fake{:016x}", ctx.shared.next_id());
    let created = unix_now();
    let completion_tokens = reply.tokens();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });

    let Some(include_usage) = stream else {
        let body = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{
                "text": reply.text(),
                "index": 0,
                "logprobs": null,
                "finish_reason": reply.finish_reason(),
            }],
            "usage": usage,
        });
        return Ok(json_response(StatusCode::OK, to_bytes(&body)));
    };

    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut chunk = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        sse_data(&chunk.to_string())
    };
    let choice = |text: &str, finish: Option<&str>| json!([{ "text": text, "index": 0, "logprobs": null, "finish_reason": finish }]);
    let mut frames = Vec::with_capacity(reply.words.len() + 3);
    for piece in reply.pieces() {
        frames.push(chunk(choice(&piece, None), None));
    }
    frames.push(chunk(choice("", Some(reply.finish_reason())), None));
    if include_usage && ctx.behavior != Behavior::NoUsageInStream {
        frames.push(chunk(json!([]), Some(&usage)));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Ok(stream_response(frames, 0, reply.words.len(), &ctx.behavior))
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

fn embeddings(ctx: &Ctx<'_>) -> Handled {
    let model = require_model(ctx.body)?;
    let Some(input) = ctx.body.get("input").filter(|v| !v.is_null()) else {
        return Err(missing_parameter("input").into());
    };
    let inputs: Vec<&Value> = match input {
        Value::Array(items) if items.iter().all(|i| i.is_string() || i.is_array()) => items.iter().collect(),
        // A single string, or one token array (a flat array of numbers).
        _ => vec![input],
    };
    let base64 = match ctx.body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                &format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
                "invalid_request_error",
                Some("encoding_format"),
                None,
            ));
        }
    };
    let dimensions = match ctx.body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_EMBEDDING_DIMENSIONS,
        Some(value) => match value.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(d) if d >= 1 => d,
            _ => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "Invalid value for 'dimensions': must be a positive integer.",
                    "invalid_request_error",
                    Some("dimensions"),
                    None,
                ));
            }
        },
    };
    let prompt_tokens: u64 = inputs.iter().map(|i| words_in_input(Some(i))).sum();

    let mut data = String::new();
    for (index, _) in inputs.iter().enumerate() {
        let vector: Vec<f32> = (0..dimensions).map(|j| embedding_value(index, j)).collect();
        let embedding = if base64 {
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            json_string(&base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            // f32 serialises in its shortest form, so floats round-trip through JSON exactly.
            serde_json::to_string(&vector).unwrap_or_default()
        };
        if index > 0 {
            data.push(',');
        }
        data.push_str(&format!(r#"{{"object":"embedding","index":{index},"embedding":{embedding}}}"#));
    }
    let body = format!(
        r#"{{"object":"list","data":[{data}],"model":{model},"usage":{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens}}}}}"#,
        model = json_string(model),
    );
    Ok(json_response(StatusCode::OK, Bytes::from(body)))
}

/// Value `j` of input `i`: a multiple of 1/64 in [-0.5, 0.5), exact in `f32` and `f64`.
fn embedding_value(input: usize, j: usize) -> f32 {
    let step = (input.wrapping_mul(7).wrapping_add(j) % 64) as f32;
    step / 64.0 - 0.5
}

// ---------------------------------------------------------------------------------------------
// Responses API
// ---------------------------------------------------------------------------------------------

fn responses(ctx: &Ctx<'_>) -> Handled {
    let model = require_model(ctx.body)?;
    let Some(input) = ctx.body.get("input").filter(|v| !v.is_null()) else {
        return Err(missing_parameter("input").into());
    };
    let stream = ctx.body.get("stream").and_then(Value::as_bool) == Some(true);
    let mut input_tokens = match input {
        Value::Array(items) => items.iter().map(|item| words_in_content(item.get("content")) + 1).sum(),
        other => words_in_input(Some(other)),
    };
    let instructions = ctx.body.get("instructions").cloned().unwrap_or(Value::Null);
    if let Some(text) = instructions.as_str() {
        input_tokens += word_count(text) + 1;
    }
    let reply = Reply::new(None);
    let output_tokens = reply.tokens();
    let n = ctx.shared.next_id();
    let id = format!("resp_fake{n:032x}");
    let message_id = format!("msg_fake{n:032x}");
    let created = unix_now();
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": output_tokens,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": input_tokens + output_tokens,
    });
    let text = reply.text();
    let part = json!({ "type": "output_text", "text": text, "annotations": [] });
    let item = |status: &str, content: Value| {
        json!({
            "id": message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        })
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": id,
            "object": "response",
            "created_at": created,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": instructions,
            "max_output_tokens": ctx.body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": ctx.body.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "reasoning": { "effort": null, "summary": null },
            "store": ctx.body.get("store").and_then(Value::as_bool).unwrap_or(true),
            "temperature": 1.0,
            "text": { "format": { "type": "text" } },
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {},
        })
    };
    let done_item = item("completed", json!([part]));
    if !stream {
        let body = response("completed", json!([done_item]), usage);
        return Ok(json_response(StatusCode::OK, to_bytes(&body)));
    }

    let mut sequence = 0_u64;
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
    };
    let in_progress = response("in_progress", json!([]), Value::Null);
    let at = |mut extra: Value| {
        extra["item_id"] = json!(message_id);
        extra["output_index"] = json!(0);
        extra["content_index"] = json!(0);
        extra
    };
    let mut frames = vec![
        event("response.created", json!({ "response": in_progress.clone() })),
        event("response.in_progress", json!({ "response": in_progress })),
        event("response.output_item.added", json!({ "output_index": 0, "item": item("in_progress", json!([])) })),
        event(
            "response.content_part.added",
            at(json!({ "part": { "type": "output_text", "text": "", "annotations": [] } })),
        ),
    ];
    let preface = frames.len();
    for piece in reply.pieces() {
        frames.push(event("response.output_text.delta", at(json!({ "delta": piece, "logprobs": [] }))));
    }
    frames.push(event("response.output_text.done", at(json!({ "text": text, "logprobs": [] }))));
    frames.push(event("response.content_part.done", at(json!({ "part": part }))));
    frames.push(event("response.output_item.done", json!({ "output_index": 0, "item": done_item })));
    let final_usage = if ctx.behavior == Behavior::NoUsageInStream { Value::Null } else { usage };
    frames.push(event(
        "response.completed",
        json!({ "response": response("completed", json!([done_item]), final_usage) }),
    ));
    Ok(stream_response(frames, preface, reply.words.len(), &ctx.behavior))
}

// ---------------------------------------------------------------------------------------------
// Images and models
// ---------------------------------------------------------------------------------------------

fn images(ctx: &Ctx<'_>) -> Handled {
    let Some(prompt) = ctx.body.get("prompt").and_then(Value::as_str) else {
        return Err(missing_parameter("prompt").into());
    };
    let model = ctx.body.get("model").and_then(Value::as_str).unwrap_or("dall-e-2");
    let n = ctx.body.get("n").and_then(Value::as_u64).unwrap_or(1);
    if !(1..=10).contains(&n) {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            &format!("{n} is not in [1, 10] - 'n'"),
            "invalid_request_error",
            Some("n"),
            None,
        ));
    }
    let gpt_image = model.starts_with("gpt-image");
    let b64 = match ctx.body.get("response_format").and_then(Value::as_str) {
        Some("b64_json") => true,
        Some("url") => false,
        _ => gpt_image,
    };
    let data: Vec<Value> = (0..n)
        .map(|i| {
            if b64 {
                json!({ "b64_json": PNG_1X1_B64 })
            } else {
                json!({ "url": format!("https://images.fake-upstream.invalid/img-{i}.png") })
            }
        })
        .collect();
    let mut body = json!({ "created": unix_now(), "data": data });
    if gpt_image {
        let input_tokens = word_count(prompt);
        let output_tokens = IMAGE_OUTPUT_TOKENS * n;
        body["usage"] = json!({
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_tokens_details": { "text_tokens": input_tokens, "image_tokens": 0 },
        });
    }
    Ok(json_response(StatusCode::OK, to_bytes(&body)))
}

fn models() -> Response<FakeBody> {
    let ids = ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small", "gpt-image-1", "dall-e-3"];
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_686_935_002, "owned_by": "system" }))
        .collect();
    json_response(StatusCode::OK, to_bytes(&json!({ "object": "list", "data": data })))
}

// ---------------------------------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------------------------------

/// The reply, possibly truncated by a token limit.
struct Reply {
    words: Vec<&'static str>,
}

impl Reply {
    fn new(limit: Option<u64>) -> Self {
        let len = limit.and_then(|l| usize::try_from(l).ok()).map_or(REPLY_WORDS.len(), |l| l.min(REPLY_WORDS.len()));
        Reply { words: REPLY_WORDS.get(..len).unwrap_or(&REPLY_WORDS).to_vec() }
    }

    /// Exactly `limit` words (the reply's words repeated), `finish_reason: "length"`.
    fn full(limit: Option<u64>) -> Self {
        let len = limit.and_then(|l| usize::try_from(l).ok()).unwrap_or(REPLY_WORDS.len());
        Reply { words: REPLY_WORDS.iter().copied().cycle().take(len).collect() }
    }

    fn tokens(&self) -> u64 {
        self.words.len() as u64
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    /// One piece per word, each after the first with its leading space.
    fn pieces(&self) -> impl Iterator<Item = String> + '_ {
        self.words.iter().enumerate().map(|(i, w)| if i == 0 { (*w).to_owned() } else { format!(" {w}") })
    }

    fn finish_reason(&self) -> &'static str {
        if self.words.len() != REPLY_WORDS.len() { "length" } else { "stop" }
    }
}

fn require_model(body: &Value) -> Result<&str, Rejection> {
    body.get("model").and_then(Value::as_str).ok_or_else(|| {
        reject(StatusCode::BAD_REQUEST, "you must provide a model parameter", "invalid_request_error", None, None)
    })
}

/// `None` for a non-stream request, else whether usage was asked for.
fn check_stream(body: &Value) -> Result<Option<bool>, Rejection> {
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let options = body.get("stream_options").filter(|v| !v.is_null());
    if !stream {
        return match options {
            Some(_) => Err(reject(
                StatusCode::BAD_REQUEST,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "invalid_request_error",
                Some("stream_options"),
                None,
            )),
            None => Ok(None),
        };
    }
    let include_usage = options.and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok(Some(include_usage))
}

fn token_limit(body: &Value, fields: &[&str]) -> Option<u64> {
    fields.iter().find_map(|f| body.get(*f).and_then(Value::as_u64))
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Words in a chat/responses `content`: a string, or the `text` of every part.
fn words_in_content(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => word_count(text),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(word_count).sum()
        }
        _ => 0,
    }
}

/// Words in a `prompt`/`input`: a string, strings in an array, or the length of token arrays.
fn words_in_input(input: Option<&Value>) -> u64 {
    match input {
        Some(Value::String(text)) => word_count(text),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Number(_) => 1,
                other => words_in_input(Some(other)),
            })
            .sum(),
        _ => 0,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn json_string(s: &str) -> String {
    Value::from(s).to_string()
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn sse_data(json: &str) -> Bytes {
    let mut frame = String::with_capacity(json.len() + 8);
    frame.push_str("data: ");
    frame.push_str(json);
    frame.push_str("\n\n");
    Bytes::from(frame)
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn json_response(status: StatusCode, body: Bytes) -> Response<FakeBody> {
    fake_server::json_response(status, JSON, body)
}

/// `preface` frames precede the `content` content frames; the behavior paces or breaks them.
fn stream_response(frames: Vec<Bytes>, preface: usize, content: usize, behavior: &Behavior) -> Response<FakeBody> {
    let (delay, break_after) = match behavior {
        Behavior::SlowStream { chunk_delay } => (Some(*chunk_delay), None),
        Behavior::BreakStreamAfter(n) => (None, Some(preface + (*n).min(content))),
        _ => (None, None),
    };
    let mut response = fake_server::stream_response(frames, preface + 1, delay, break_after, EVENT_STREAM);
    if let Behavior::StallStreamAfter(n) = behavior {
        response = fake_server::stall_after(response, preface + (*n).min(content));
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<FakeBody> {
    let body = json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    json_response(status, to_bytes(&body))
}

fn reject(status: StatusCode, message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Rejection {
    Box::new(error_response(status, message, kind, param, code))
}

fn missing_parameter(name: &str) -> Response<FakeBody> {
    error_response(
        StatusCode::BAD_REQUEST,
        &format!("Missing required parameter: '{name}'."),
        "invalid_request_error",
        Some(name),
        Some("missing_required_parameter"),
    )
}

fn invalid_api_key() -> Response<FakeBody> {
    error_response(
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided. You can find your API key at \
         https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        Some("invalid_api_key"),
    )
}

/// The error OpenAI would send with `code`; an invalid code becomes 500.
fn status_response(code: u16) -> Response<FakeBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match status.as_u16() {
        401 => invalid_api_key(),
        403 => error_response(
            status,
            "You are not allowed to sample from this model.",
            "invalid_request_error",
            None,
            None,
        ),
        404 => error_response(
            status,
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        ),
        429 => error_response(
            status,
            "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. \
             Please try again in 1s.",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        500 => error_response(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
        503 => error_response(
            status,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
            None,
        ),
        c if c >= 500 => error_response(status, "The fake upstream failed on purpose.", "server_error", None, None),
        _ => error_response(
            status,
            "The fake upstream rejected this request on purpose.",
            "invalid_request_error",
            None,
            None,
        ),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("3"));
        headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
    }
    response
}
