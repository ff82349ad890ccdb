//! The `azure` provider: Azure OpenAI. It speaks OpenAI's wire format, so bodies go up
//! as they are (the `model` field set to the deployment, which Azure ignores) and answers
//! come back untranslated to the same meter as an OpenAI-compatible provider's.
//!
//! Invariants: a request URL is the configured base URL, `/openai/deployments/`, the
//! channel's deployment name (checked to be one plain path segment, at start and per
//! request), a fixed operation path and the configured `api-version` — no request field
//! chooses the host, the path or the query. The key travels only in the `api-key` header
//! (marked sensitive), never in the URL; no `Authorization` header is sent.
//! `/v1/responses` is refused: Azure serves it on a different API surface
//! (`/openai/v1/responses`) that this adapter does not speak.

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, Secret};

use crate::request::ParsedRequest;
use crate::upstream::{ExtraHeaders, UpstreamFailure};

/// An Azure OpenAI resource, ready to call: its URL prefix, `api-version` query and
/// headers are built once, from the configuration.
#[derive(Debug)]
pub struct AzureUpstream {
    /// `https://{resource}.openai.azure.com`.
    pub base_url: String,
    /// `{base_url}/openai/deployments/`: a request URL is this, a deployment and an operation.
    deployments_url: String,
    /// `?api-version={version}`.
    query: String,
    /// Marked sensitive; `None` only when no key is configured.
    api_key: Option<HeaderValue>,
    extra_headers: ExtraHeaders,
}

impl AzureUpstream {
    /// Fails (with a message naming neither URL nor key) if they do not form valid requests.
    pub fn new(
        base_url: &str,
        api_version: &str,
        api_key: &Secret,
        extra_headers: ExtraHeaders,
    ) -> Result<Self, String> {
        Self::check_api_version(api_version)?;
        let deployments_url = format!("{base_url}/openai/deployments/");
        let query = format!("?api-version={api_version}");
        format!("{deployments_url}d/chat/completions{query}")
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
        Ok(Self { base_url: base_url.to_owned(), deployments_url, query, api_key, extra_headers })
    }

    /// The credentials this provider is called with, for [`crate::redact`].
    pub(crate) fn secrets(&self) -> Vec<&[u8]> {
        self.api_key.iter().map(HeaderValue::as_bytes).chain(self.extra_headers.values()).collect()
    }

    /// Whether `version` is an Azure OpenAI `api-version`: `YYYY-MM-DD`, optionally
    /// followed by `-preview`.
    pub fn check_api_version(version: &str) -> Result<(), String> {
        let date = version.strip_suffix("-preview").unwrap_or(version);
        let b = date.as_bytes();
        let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
        let number = |r: std::ops::Range<usize>| date.get(r).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        let shaped = b.len() == 10 && digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10);
        if shaped && (1..=12).contains(&number(5..7)) && (1..=31).contains(&number(8..10)) {
            Ok(())
        } else {
            Err(format!("{version:?} is not an Azure api-version such as \"2024-10-21\" or \"2025-01-01-preview\""))
        }
    }

    /// Whether `name` is a plain deployment name: it becomes a path segment of every
    /// request URL, so nothing that could leave that segment is allowed.
    pub fn check_deployment(name: &str) -> Result<(), String> {
        let plain = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.')
            && !name.contains("..");
        if plain {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not an Azure deployment name (1-64 letters, digits, '-', '_' and '.'; \
                 no '/', '?', '#' or \"..\")"
            ))
        }
    }

    /// The request for `endpoint` on `deployment`, with the `api-key` header and the
    /// configured extra headers.
    pub(crate) fn request(
        &self,
        deployment: &str,
        endpoint: Endpoint,
        request_id: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, UpstreamFailure> {
        Self::check_deployment(deployment).map_err(|_| UpstreamFailure::BadUrl)?;
        let operation = operation(endpoint).ok_or(UpstreamFailure::BadUrl)?;
        let uri: http::Uri = format!("{}{deployment}/{operation}{}", self.deployments_url, self.query)
            .parse()
            .map_err(|_| UpstreamFailure::BadUrl)?;
        let mut req = Request::post(uri).body(Full::new(body)).map_err(|_| UpstreamFailure::BadUrl)?;
        let headers = req.headers_mut();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))));
        self.extra_headers.apply(headers);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &self.api_key {
            headers.insert("api-key", key.clone());
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", id);
        }
        Ok(req)
    }
}

/// The operation path under `/openai/deployments/{deployment}/`.
fn operation(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::ChatCompletions => Some("chat/completions"),
        Endpoint::Completions => Some("completions"),
        Endpoint::Embeddings => Some("embeddings"),
        Endpoint::ImagesGenerations => Some("images/generations"),
        Endpoint::Responses | Endpoint::Messages | Endpoint::Models => None,
    }
}

/// The body Azure gets: the client's, with `model` set to the deployment (Azure routes by
/// the URL and ignores it) and streams asking for their usage chunk, as for OpenAI.
pub(crate) fn request_body(endpoint: Endpoint, parsed: &ParsedRequest, deployment: &str) -> Result<Bytes, ApiError> {
    if operation(endpoint).is_none() {
        return Err(ApiError::invalid_request(format!(
            "Azure OpenAI deployments serve /v1/chat/completions, /v1/completions, /v1/embeddings and \
             /v1/images/generations, not {}.",
            endpoint.path()
        ))
        .with_param("model"));
    }
    parsed.upstream_body(endpoint, deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> AzureUpstream {
        let extra = ExtraHeaders::new([("X-Custom", "v")]).unwrap();
        AzureUpstream::new("https://res.openai.azure.com", "2024-10-21", &Secret::new("azure-secret-key"), extra)
            .unwrap()
    }

    #[test]
    fn api_versions_are_dates_optionally_in_preview() {
        for ok in ["2024-10-21", "2025-01-01-preview", "2023-05-15"] {
            assert_eq!(AzureUpstream::check_api_version(ok), Ok(()), "{ok}");
        }
        for bad in ["", "v1", "2024-13-01", "2024-10-00", "2024-10-21-beta", "2024-1-21", "2024-10-21&x=1", "preview"] {
            assert!(AzureUpstream::check_api_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deployments_are_one_plain_path_segment() {
        for ok in ["gpt-4o", "my_deploy.v2", "a"] {
            assert_eq!(AzureUpstream::check_deployment(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/b", "..", ".hidden", "a..b", "x?y", "x#y", "a b", "ü", &"x".repeat(65)] {
            assert!(AzureUpstream::check_deployment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_go_to_the_deployment_with_the_key_in_its_header() {
        let up = upstream();
        let req = up.request("gpt-4o", Endpoint::ChatCompletions, "req_1", Bytes::new()).unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        let h = req.headers();
        assert_eq!(h["api-key"], "azure-secret-key");
        assert!(h["api-key"].is_sensitive());
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!((h["x-custom"].to_str().unwrap(), h["x-request-id"].to_str().unwrap()), ("v", "req_1"));
        assert!(!format!("{up:?}").contains("azure-secret-key"), "Debug must not print the key");

        let path = |e| up.request("emb", e, "r", Bytes::new()).unwrap().uri().path().to_owned();
        assert_eq!(path(Endpoint::Embeddings), "/openai/deployments/emb/embeddings");
        assert_eq!(path(Endpoint::ImagesGenerations), "/openai/deployments/emb/images/generations");
        assert_eq!(path(Endpoint::Completions), "/openai/deployments/emb/completions");
        assert!(up.request("../x", Endpoint::ChatCompletions, "r", Bytes::new()).is_err());
        assert!(up.request("d", Endpoint::Responses, "r", Bytes::new()).is_err());
    }

    #[test]
    fn bodies_name_the_deployment_and_responses_are_refused() {
        let parsed = crate::request::parse(Bytes::from_static(br#"{"model":"public","messages":[]}"#)).unwrap();
        let body = request_body(Endpoint::ChatCompletions, &parsed, "deploy-1").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "deploy-1");
        let err = request_body(Endpoint::Responses, &parsed, "deploy-1").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }
}
