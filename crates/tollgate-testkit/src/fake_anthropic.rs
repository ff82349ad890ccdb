//! A fake Anthropic upstream: a real HTTP server on a random loopback port that speaks the
//! Messages API's wire format (JSON and server-sent events), so the `anthropic` adapter is
//! tested over real sockets against what Anthropic documents.
//!
//! It owns the wire format and the switchable [`Behavior`]; the server task and the log of
//! received requests are the shared `fake_server` scaffolding.
//! Dropping a [`FakeAnthropic`] aborts the server and every open connection.
//!
//! # Endpoints
//! `POST /v1/messages` and `POST /v1/messages/count_tokens` (anything else: 404
//! `not_found_error`; counting takes a message's fields without `max_tokens` and `stream`,
//! and answers `{"input_tokens"}`: the input and cache-read tokens below, together). Checks run in this order:
//! the behavior (`Status`, `CloseConnection`, `Delay`); `x-api-key` (missing, or not the
//! [`Options::api_key`] when one is set: 401 `authentication_error`); `anthropic-version`
//! (missing or not one of [`VERSIONS`]: 400); the route; then the body, as strictly as the
//! real API: unknown top-level fields, a missing `model`/`max_tokens`/`messages`, roles other
//! than `user`/`assistant`, roles that do not alternate, empty text blocks, a `tool_result`
//! without a `tool_use` of that id in the previous message, `temperature` outside [0, 1] and
//! malformed `tools`/`tool_choice`/`stop_sequences` are 400 `invalid_request_error`.
//!
//! # Deterministic content and usage
//! * `input_tokens` = words of `system` + Σ over messages of (1 + Σ over blocks: words of a
//!   text block, [`IMAGE_TOKENS`] per image, 1 per `tool_use`, 1 + words of a `tool_result`).
//!   A string `content` is one text block. A "word" is a `split_whitespace` run. The words
//!   of `system` blocks marked `cache_control` are `cache_read_input_tokens` instead (as if
//!   the prompt cache held them).
//! * Text replies are [`REPLY_TEXT`] (`"Hello from the fake Claude."`, 5 words, one token
//!   each), cut before the first word containing one of `stop_sequences` (`stop_reason`
//!   `stop_sequence`) or after `max_tokens` words (`max_tokens`); else `end_turn`.
//! * Tool use: when `tools` are given, `tool_choice` is not `none`, and either `tool_choice`
//!   is `any`/`tool` or the last user message ends with text containing [`TOOL_TRIGGER`],
//!   the reply is the text [`TOOL_TEXT`] then one `tool_use` block (the named tool, else the
//!   first) with input `{"query": <that last text>}`; `stop_reason` `tool_use`;
//!   `output_tokens` = 3 + [`TOOL_USE_TOKENS`].
//! * Streams: `message_start` (usage with `input_tokens`, `output_tokens: 1`),
//!   `content_block_start`, `ping`, one `text_delta` per word, `content_block_stop`, for tool
//!   use a second block with an empty then two `input_json_delta`s, `message_delta`
//!   (`stop_reason`, cumulative `usage.output_tokens`), `message_stop`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

pub use crate::fake_server::RecordedRequest;
use crate::fake_server::{self, Fake, FakeBody, FakeServer};

/// The text every plain reply is made of.
pub const REPLY_TEXT: &str = "Hello from the fake Claude.";
/// The text before a `tool_use` block.
pub const TOOL_TEXT: &str = "Let me check.";
/// A last user text containing this makes the fake call a tool (when tools are given).
pub const TOOL_TRIGGER: &str = "weather";
/// Output tokens a `tool_use` block costs.
pub const TOOL_USE_TOKENS: u64 = 10;
/// Input tokens an image block costs.
pub const IMAGE_TOKENS: u64 = 10;
/// The `anthropic-version` values accepted.
pub const VERSIONS: &[&str] = &["2023-06-01", "2023-01-01"];

const REPLY_WORDS: [&str; 5] = ["Hello", "from", "the", "fake", "Claude."];
const TOP_LEVEL_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
];
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// How the fake answers; applies to requests received after [`FakeAnthropic::set_behavior`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Behavior {
    /// Answer as Anthropic would.
    #[default]
    Normal,
    /// Answer every request with this status and Anthropic's error body for it (429 also
    /// carries `retry-after: 7` and `anthropic-ratelimit-*` headers; 529 is `overloaded_error`).
    Status(u16),
    /// Wait this long before sending response headers.
    Delay(Duration),
    /// For streams: send the opening events and the first delta at once, then wait
    /// `chunk_delay` before every further event.
    SlowStream {
        /// Pause before each event after the first delta.
        chunk_delay: Duration,
    },
    /// For streams: send the opening events and this many deltas, then abort the connection
    /// (no `message_delta`, no `message_stop`). Non-streams are unaffected.
    BreakStreamAfter(usize),
    /// For streams: send the opening events and this many deltas, then an `error` event
    /// (`overloaded_error`) and end the stream, as Anthropic does when it fails mid-way.
    ErrorEventAfter(usize),
    /// Accept the TCP connection and close it without answering.
    CloseConnection,
}

/// Start-up options for [`FakeAnthropic::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to bind; the default is `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Keep every request for [`FakeAnthropic::requests`]; turn off for load tests.
    pub record: bool,
    /// The only `x-api-key` accepted; `None` accepts any non-empty key.
    pub api_key: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self { listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), record: true, api_key: None }
    }
}

/// A running fake Anthropic. Serves until dropped.
#[derive(Debug)]
pub struct FakeAnthropic {
    server: FakeServer<Anthropic>,
}

/// The Messages API, for [`FakeServer`].
#[derive(Debug)]
struct Anthropic {
    api_key: Option<String>,
}

type Shared = fake_server::Shared<Anthropic>;

impl Fake for Anthropic {
    type Behavior = Behavior;
    const NAME: &'static str = "fake Anthropic";

    fake_server::preflight_by_variant!(Behavior);

    fn status_response(shared: &Shared, code: u16) -> Response<FakeBody> {
        status_response(code, shared)
    }

    fn answer(shared: &Shared, parts: &Parts, parsed: Option<Value>, behavior: Behavior) -> Response<FakeBody> {
        handle(shared, parts, parsed, &behavior)
    }
}

impl FakeAnthropic {
    /// Binds `127.0.0.1:0` and serves, recording requests, until dropped.
    #[expect(clippy::expect_used, reason = "test helper: without a loopback port there is no test to run")]
    pub async fn start() -> FakeAnthropic {
        Self::start_with(Options::default()).await.expect("fake Anthropic: bind 127.0.0.1:0")
    }

    /// Binds `options.listen` and serves until dropped.
    pub async fn start_with(options: Options) -> io::Result<FakeAnthropic> {
        let fake = Anthropic { api_key: options.api_key };
        Ok(FakeAnthropic { server: FakeServer::start(options.listen, options.record, fake).await? })
    }

    /// `http://127.0.0.1:PORT` — the API root, as Anthropic's `https://api.anthropic.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

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

/// A request past the behavior's checks.
fn handle(shared: &Shared, parts: &Parts, parsed: Option<Value>, behavior: &Behavior) -> Response<FakeBody> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = header("x-api-key");
    if key.is_empty() {
        return error(shared, StatusCode::UNAUTHORIZED, "authentication_error", "x-api-key header is required");
    }
    if shared.fake.api_key.as_deref().is_some_and(|expected| expected != key) {
        return error(shared, StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key");
    }
    match header("anthropic-version") {
        "" => {
            return error(
                shared,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "anthropic-version: header is required",
            );
        }
        v if !VERSIONS.contains(&v) => {
            let message = format!("anthropic-version: {v:?} is not a valid version");
            return error(shared, StatusCode::BAD_REQUEST, "invalid_request_error", &message);
        }
        _ => {}
    }
    let counting = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/messages") => false,
        (&Method::POST, "/v1/messages/count_tokens") => true,
        _ => return error(shared, StatusCode::NOT_FOUND, "not_found_error", "Not Found"),
    };
    let Some(body) = parsed.filter(Value::is_object) else {
        return error(
            shared,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "There was an error parsing the body of your request. Please check that it is valid JSON.",
        );
    };
    if counting {
        // Counting takes what a message takes, but no `max_tokens` (nor `stream`).
        let mut body = body;
        if let Some(map) = body.as_object_mut() {
            if let Some(extra) = ["max_tokens", "stream"].iter().find(|k| map.contains_key(**k)) {
                let message = format!("{extra}: Extra inputs are not permitted");
                return error(shared, StatusCode::BAD_REQUEST, "invalid_request_error", &message);
            }
            map.insert("max_tokens".into(), 1.into());
        }
        return match check_request(&body) {
            Err(message) => error(shared, StatusCode::BAD_REQUEST, "invalid_request_error", &message),
            Ok(request) => {
                let count = json!({ "input_tokens": request.input_tokens + request.cache_read_tokens });
                json_response(shared, StatusCode::OK, &count)
            }
        };
    }
    match check_request(&body) {
        Err(message) => error(shared, StatusCode::BAD_REQUEST, "invalid_request_error", &message),
        Ok(request) => answer(shared, behavior, &request),
    }
}

/// What the reply depends on, once the request is known to be valid.
struct Checked {
    model: String,
    max_tokens: u64,
    stream: bool,
    input_tokens: u64,
    cache_read_tokens: u64,
    stop_sequences: Vec<String>,
    /// The tool to call, when the request triggers one.
    tool: Option<String>,
    last_user_text: String,
}

fn check_request(body: &Value) -> Result<Checked, String> {
    let Some(map) = body.as_object() else {
        return Err("body: Input should be an object".into());
    };
    if let Some(extra) = map.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    let model = map.get("model").and_then(Value::as_str).ok_or("model: Field required")?.to_owned();
    let max_tokens = match map.get("max_tokens") {
        None => return Err("max_tokens: Field required".into()),
        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or("max_tokens: Input should be greater than or equal to 1")?,
    };
    let stream = match map.get("stream") {
        None => false,
        Some(v) => v.as_bool().ok_or("stream: Input should be a valid boolean")?,
    };
    if let Some(t) = map.get("temperature")
        && !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t))
    {
        return Err("temperature: Input should be less than or equal to 1".into());
    }
    let stop_sequences = match map.get("stop_sequences") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or("stop_sequences: Input should be a valid list of strings"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("stop_sequences: Input should be a valid list".into()),
    };
    let mut cache_read_tokens = 0;
    let mut input_tokens = match map.get("system") {
        None => 0,
        Some(Value::String(s)) => words(s),
        Some(Value::Array(blocks)) => {
            let mut uncached = 0;
            for b in blocks {
                let (Some("text"), Some(t)) =
                    (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str))
                else {
                    return Err("system: Input should be a valid list of text blocks".to_owned());
                };
                if b.get("cache_control").is_some() { cache_read_tokens += words(t) } else { uncached += words(t) }
            }
            uncached
        }
        Some(_) => return Err("system: Input should be a valid string".into()),
    };
    let messages = map.get("messages").and_then(Value::as_array).ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut previous_tool_uses: Vec<String> = Vec::new();
    let mut previous_role = "";
    let mut last_user_text = String::new();
    let mut last_user_ends_with_text = false;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant'"));
        }
        if role == previous_role {
            return Err(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple {role:?} roles in a row"
            ));
        }
        let blocks: Vec<Value> = match m.get("content") {
            Some(Value::String(s)) => vec![json!({ "type": "text", "text": s })],
            Some(Value::Array(blocks)) => blocks.clone(),
            _ => return Err(format!("messages.{i}.content: Field required")),
        };
        if blocks.is_empty() && i + 1 < messages.len() {
            return Err(format!("messages.{i}: all messages must have non-empty content"));
        }
        let mut tool_uses = Vec::new();
        input_tokens += 1;
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match b.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" => {
                    let text = b.get("text").and_then(Value::as_str).ok_or(format!("{at}.text: Field required"))?;
                    if text.is_empty() {
                        return Err("messages: text content blocks must be non-empty".into());
                    }
                    input_tokens += words(text);
                }
                "image" if role == "user" => {
                    check_image(b.get("source"), &at)?;
                    input_tokens += IMAGE_TOKENS;
                }
                "tool_use" if role == "assistant" => {
                    let id = b.get("id").and_then(Value::as_str).ok_or(format!("{at}.id: Field required"))?;
                    b.get("name").and_then(Value::as_str).ok_or(format!("{at}.name: Field required"))?;
                    if !b.get("input").is_some_and(Value::is_object) {
                        return Err(format!("{at}.input: Input should be a valid dictionary"));
                    }
                    tool_uses.push(id.to_owned());
                    input_tokens += 1;
                }
                "tool_result" if role == "user" => {
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                    if !previous_tool_uses.iter().any(|u| u == id) {
                        return Err(format!(
                            "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` \
                             block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                    input_tokens += 1 + match b.get("content") {
                        None => 0,
                        Some(Value::String(s)) => words(s),
                        Some(Value::Array(parts)) => {
                            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(words).sum()
                        }
                        Some(_) => return Err(format!("{at}.content: Input should be a valid list")),
                    };
                }
                other => return Err(format!("{at}.type: unexpected block type {other:?} in a {role} message")),
            }
        }
        if role == "user" {
            last_user_ends_with_text = false;
            if let Some(text) = blocks.last().filter(|b| b["type"] == "text").and_then(|b| b["text"].as_str()) {
                last_user_text = text.to_owned();
                last_user_ends_with_text = true;
            }
        }
        previous_tool_uses = tool_uses;
        previous_role = role;
    }
    let tool = check_tools(map, last_user_ends_with_text && last_user_text.contains(TOOL_TRIGGER))?;
    Ok(Checked { model, max_tokens, stream, input_tokens, cache_read_tokens, stop_sequences, tool, last_user_text })
}

fn check_image(source: Option<&Value>, at: &str) -> Result<(), String> {
    let source = source.ok_or(format!("{at}.source: Field required"))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = source.get("media_type").and_then(Value::as_str).unwrap_or("");
            if !IMAGE_TYPES.contains(&media_type) {
                return Err(format!(
                    "{at}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                ));
            }
            if source.get("data").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(format!("{at}.source.base64.data: Field required"));
            }
            Ok(())
        }
        Some("url") if source.get("url").and_then(Value::as_str).is_some() => Ok(()),
        _ => Err(format!("{at}.source: Input tag does not match any of the expected tags: 'base64', 'url'")),
    }
}

/// Validates `tools` and `tool_choice`; returns the tool to call, if any.
fn check_tools(map: &serde_json::Map<String, Value>, triggered: bool) -> Result<Option<String>, String> {
    let tools = match map.get("tools") {
        None => &Vec::new(),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err("tools: Input should be a valid list".into()),
    };
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let name = t.get("name").and_then(Value::as_str).ok_or(format!("tools.{i}.name: Field required"))?;
        if t.get("input_schema").and_then(|s| s.get("type")).and_then(Value::as_str) != Some("object") {
            return Err(format!("tools.{i}.input_schema.type: Input should be 'object'"));
        }
        if let Some(extra) = t.as_object().and_then(|o| {
            o.keys().find(|k| !["name", "description", "input_schema", "cache_control"].contains(&k.as_str()))
        }) {
            return Err(format!("tools.{i}.{extra}: Extra inputs are not permitted"));
        }
        names.push(name.to_owned());
    }
    let choice = map.get("tool_choice");
    let kind = match choice {
        None => "auto",
        Some(c) => match c.get("type").and_then(Value::as_str) {
            Some(k @ ("auto" | "any" | "none")) => k,
            Some("tool") => "tool",
            _ => return Err("tool_choice: Input tag does not match any of the expected tags".into()),
        },
    };
    if choice.is_some() && names.is_empty() {
        return Err("tool_choice: may only be specified while providing tools".into());
    }
    let named = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
    if kind == "tool" && !named.is_some_and(|n| names.iter().any(|t| t == n)) {
        return Err("tool_choice.name: must name one of the tools".into());
    }
    let call = match kind {
        "none" => false,
        "any" | "tool" => true,
        _ => triggered,
    };
    Ok(if call { named.map(str::to_owned).or_else(|| names.first().cloned()) } else { None })
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The reply's content, stop reason and output tokens.
struct Reply {
    words: Vec<&'static str>,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
    tool: Option<(String, String, Value)>,
}

impl Reply {
    fn new(shared: &Shared, req: &Checked) -> Self {
        if let Some(name) = &req.tool {
            let id = format!("toolu_fake{:016x}", shared.next_id());
            let input = json!({ "query": req.last_user_text });
            let words = TOOL_TEXT.split(' ').collect::<Vec<_>>();
            return Reply {
                words,
                stop_reason: "tool_use",
                stop_sequence: None,
                tool: Some((id, name.clone(), input)),
            };
        }
        let mut words = Vec::new();
        for w in REPLY_WORDS {
            if let Some(seq) = req.stop_sequences.iter().find(|s| !s.is_empty() && w.contains(s.as_str())) {
                return Reply { words, stop_reason: "stop_sequence", stop_sequence: Some(seq.clone()), tool: None };
            }
            if words.len() as u64 >= req.max_tokens {
                return Reply { words, stop_reason: "max_tokens", stop_sequence: None, tool: None };
            }
            words.push(w);
        }
        Reply { words, stop_reason: "end_turn", stop_sequence: None, tool: None }
    }

    fn output_tokens(&self) -> u64 {
        self.words.len() as u64 + if self.tool.is_some() { TOOL_USE_TOKENS } else { 0 }
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn pieces(&self) -> impl Iterator<Item = String> + '_ {
        self.words.iter().enumerate().map(|(i, w)| if i == 0 { (*w).to_owned() } else { format!(" {w}") })
    }
}

fn answer(shared: &Shared, behavior: &Behavior, req: &Checked) -> Response<FakeBody> {
    let reply = Reply::new(shared, req);
    let id = format!("msg_fake{:016x}", shared.next_id());
    let usage = |output: u64| {
        json!({
            "input_tokens": req.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": req.cache_read_tokens,
            "output_tokens": output,
            "service_tier": "standard",
        })
    };
    if !req.stream {
        let mut content = vec![json!({ "type": "text", "text": reply.text() })];
        if reply.words.is_empty() {
            content.clear();
        }
        if let Some((tool_id, name, input)) = &reply.tool {
            content.push(json!({ "type": "tool_use", "id": tool_id, "name": name, "input": input }));
        }
        let message = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": reply.stop_sequence,
            "usage": usage(reply.output_tokens()),
        });
        return json_response(shared, StatusCode::OK, &message);
    }

    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut frames = vec![
        event(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": req.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage(1),
            } }),
        ),
        event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        event("ping", json!({ "type": "ping" })),
    ];
    let preface = frames.len();
    let delta = |index: usize, delta: Value| {
        event("content_block_delta", json!({ "type": "content_block_delta", "index": index, "delta": delta }))
    };
    for piece in reply.pieces() {
        frames.push(delta(0, json!({ "type": "text_delta", "text": piece })));
    }
    let mut content_frames = reply.words.len();
    frames.push(event("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })));
    if let Some((tool_id, name, input)) = &reply.tool {
        frames.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 1, "content_block": {
                "type": "tool_use", "id": tool_id, "name": name, "input": {},
            } }),
        ));
        let json = input.to_string();
        let mid = (0..=json.len() / 2).rev().find(|&i| json.is_char_boundary(i)).unwrap_or(0);
        let (a, b) = json.split_at(mid);
        for piece in ["", a, b] {
            frames.push(delta(1, json!({ "type": "input_json_delta", "partial_json": piece })));
        }
        content_frames += 3;
        frames.push(event("content_block_stop", json!({ "type": "content_block_stop", "index": 1 })));
    }
    frames.push(event(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": { "stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence },
            "usage": { "output_tokens": reply.output_tokens() },
        }),
    ));
    frames.push(event("message_stop", json!({ "type": "message_stop" })));

    let (delay, cut) = match behavior {
        Behavior::SlowStream { chunk_delay } => (Some(*chunk_delay), None),
        Behavior::BreakStreamAfter(n) => (None, Some((preface + (*n).min(content_frames), true))),
        Behavior::ErrorEventAfter(n) => (None, Some((preface + (*n).min(content_frames), false))),
        _ => (None, None),
    };
    let mut break_after = None;
    if let Some((at, abort)) = cut {
        frames.truncate(at);
        if abort {
            break_after = Some(at);
        } else {
            frames.push(event(
                "error",
                json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
            ));
        }
    }
    let mut response =
        fake_server::stream_response(frames, preface + 1, delay, break_after, "text/event-stream; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    insert_request_id(shared, headers);
    response
}

fn insert_request_id(shared: &Shared, headers: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&format!("req_fake{:016x}", shared.next_id())) {
        headers.insert("request-id", v);
    }
}

fn json_response(shared: &Shared, status: StatusCode, body: &Value) -> Response<FakeBody> {
    let mut response = fake_server::json_response(status, "application/json", Bytes::from(body.to_string()));
    insert_request_id(shared, response.headers_mut());
    response
}

/// Anthropic's error shape: `{"type":"error","error":{"type","message"},"request_id"}`.
fn error(shared: &Shared, status: StatusCode, kind: &str, message: &str) -> Response<FakeBody> {
    let request_id = format!("req_fake{:016x}", shared.next_id());
    let body = json!({ "type": "error", "error": { "type": kind, "message": message }, "request_id": request_id });
    json_response(shared, status, &body)
}

/// The error Anthropic sends with `code`; an invalid code becomes 500.
fn status_response(code: u16, shared: &Shared) -> Response<FakeBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, message) = match status.as_u16() {
        400 => ("invalid_request_error", "The fake Anthropic rejected this request on purpose."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => ("permission_error", "Your API key does not have permission to use the specified resource."),
        404 => ("not_found_error", "The requested resource could not be found."),
        413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429 => (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
        ),
        529 => ("overloaded_error", "Overloaded"),
        c if c >= 500 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "The fake Anthropic rejected this request on purpose."),
    };
    let mut response = error(shared, status, kind, message);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        headers.insert("anthropic-ratelimit-requests-limit", HeaderValue::from_static("50"));
        headers.insert("anthropic-ratelimit-requests-remaining", HeaderValue::from_static("0"));
        headers.insert("anthropic-ratelimit-requests-reset", HeaderValue::from_static("2030-01-01T00:00:07Z"));
    }
    response
}
