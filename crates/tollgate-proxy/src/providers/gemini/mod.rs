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

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, Secret};

use crate::upstream::{UpstreamClient, UpstreamFailure};

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use request::{chat_request, embeddings_request};
pub(crate) use stream::Translated;
use stream::{ChatStream, JsonKind, Mode};

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

    /// The credentials this provider is called with, for [`crate::redact`].
    pub(crate) fn secrets(&self) -> Vec<&[u8]> {
        self.api_key.iter().map(HeaderValue::as_bytes).collect()
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
