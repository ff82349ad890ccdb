//! Reading the client's request: the body within its size limit, the few fields the
//! gateway acts on, and the rewrite for the upstream (public model id → upstream name;
//! streams always ask for usage so that every stream can be billed exactly).

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, ErrorCode};

/// Reads the whole body, refusing more than `limit` bytes (checked against
/// `Content-Length` first, then while reading).
pub(crate) async fn read_body(
    body: axum::body::Body,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(ErrorCode::RequestTooLarge, format!("Request body is larger than the limit of {limit} bytes."))
    };
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::invalid_request("Could not read the request body.")),
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The fields of a request body the gateway acts on. The rest passes through untouched.
#[derive(Debug)]
pub(crate) struct ParsedRequest {
    pub body: Bytes,
    pub model: String,
    pub stream: bool,
    /// Whether the client itself asked for the usage chunk of a stream.
    pub client_wants_usage: bool,
    /// Images requested (`n`), for per-image prices.
    pub images: u64,
    /// The output cap the client set (`max_tokens`, `max_completion_tokens` or the
    /// Responses API's `max_output_tokens`).
    pub max_tokens: Option<u64>,
}

pub(crate) fn parse(body: Bytes) -> Result<ParsedRequest, ApiError> {
    let head: Head<'_> = serde_json::from_slice(&body).map_err(|e| {
        let msg = if e.is_data() {
            format!("Invalid request body: {e}")
        } else {
            format!("Request body is not valid JSON: {e}")
        };
        ApiError::invalid_request(msg)
    })?;
    let model = match head.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => {
            return Err(ApiError::invalid_request("You must provide a model parameter.").with_param("model"));
        }
    };
    let stream = head.stream.unwrap_or(false);
    let client_wants_usage = stream && head.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let max_tokens = head.max_completion_tokens.or(head.max_tokens).or(head.max_output_tokens);
    Ok(ParsedRequest { model, stream, client_wants_usage, images: head.n.unwrap_or(1), max_tokens, body })
}

impl ParsedRequest {
    /// The body to send upstream. Unchanged bytes when nothing needs rewriting (the common
    /// case: same model name, no stream), otherwise re-serialized once.
    pub fn upstream_body(&self, endpoint: Endpoint, upstream_model: &str) -> Result<Bytes, ApiError> {
        let ask_usage = self.stream
            && !self.client_wants_usage
            && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        if upstream_model == self.model && !ask_usage {
            return Ok(self.body.clone());
        }
        let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&self.body)
            .map_err(|_| ApiError::invalid_request("Request body must be a JSON object."))?;
        map.insert("model".into(), upstream_model.into());
        if ask_usage {
            let opts = map.entry("stream_options").or_insert_with(|| serde_json::json!({}));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), true.into());
            }
        }
        serde_json::to_vec(&map).map(Bytes::from).map_err(|_| ApiError::internal())
    }

    /// A rough prompt size for billing when the provider reports none: ~4 bytes a token.
    pub fn prompt_token_estimate(&self) -> u64 {
        (self.body.len() as u64).div_ceil(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<ParsedRequest, ApiError> {
        parse(Bytes::from(s.to_owned()))
    }

    #[test]
    fn parses_the_fields_it_needs() {
        let r = p(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#).unwrap();
        assert_eq!((r.model.as_str(), r.stream, r.client_wants_usage), ("m", true, true));
        let r = p(r#"{"model":"m\u0031","messages":[]}"#).unwrap();
        assert_eq!((r.model.as_str(), r.stream, r.client_wants_usage), ("m1", false, false));
    }

    #[test]
    fn rejects_bad_bodies_with_invalid_request() {
        for bad in
            ["{", "[]", r#"{"messages":[]}"#, r#"{"model":""}"#, r#"{"model":5}"#, r#"{"model":"m","stream":"yes"}"#]
        {
            let e = p(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn upstream_body_untouched_when_possible() {
        let r = p(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(r.upstream_body(Endpoint::ChatCompletions, "m").unwrap(), r.body);
    }

    #[test]
    fn upstream_body_renames_and_asks_for_usage() {
        let r = p(r#"{"model":"m","stream":true,"messages":[]}"#).unwrap();
        let b = r.upstream_body(Endpoint::ChatCompletions, "up").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["model"], "up");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(!r.client_wants_usage);
        // The Responses API always reports usage in its final event: nothing to add.
        let b = r.upstream_body(Endpoint::Responses, "m").unwrap();
        assert_eq!(b, r.body);
    }
}
