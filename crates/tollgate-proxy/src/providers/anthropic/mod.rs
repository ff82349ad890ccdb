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

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use tollgate_core::Secret;

use crate::upstream::UpstreamFailure;

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub(crate) use request::{bad, present, request_body};
pub(crate) use response::{openai_error, openai_response};
pub(crate) use stream::event_data;

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
    count_tokens_uri: http::Uri,
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
        let uri = |path: String| path.parse().map_err(|_| "the base URL does not form a valid URI".to_owned());
        let messages_uri = uri(format!("{base}{path}"))?;
        let count_tokens_uri = uri(format!("{base}{path}/count_tokens"))?;
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
        Ok(Self { base_url: base.to_owned(), messages_uri, count_tokens_uri, api_key, version })
    }

    /// The credentials this provider is called with, for [`crate::redact`].
    pub(crate) fn secrets(&self) -> Vec<&[u8]> {
        self.api_key.iter().map(HeaderValue::as_bytes).collect()
    }

    /// The upstream request for a body made by [`request_body`] (or a client's own).
    pub(crate) fn request(&self, request_id: &str, body: Bytes) -> Result<Request<Full<Bytes>>, UpstreamFailure> {
        self.post(&self.messages_uri, request_id, body)
    }

    /// The upstream request that counts a Messages body's input tokens.
    pub(crate) fn count_tokens_request(
        &self,
        request_id: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, UpstreamFailure> {
        self.post(&self.count_tokens_uri, request_id, body)
    }

    fn post(&self, uri: &http::Uri, request_id: &str, body: Bytes) -> Result<Request<Full<Bytes>>, UpstreamFailure> {
        let mut req = Request::post(uri.clone()).body(Full::new(body)).map_err(|_| UpstreamFailure::BadUrl)?;
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
