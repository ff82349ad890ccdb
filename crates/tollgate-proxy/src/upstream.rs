//! Calling OpenAI-compatible upstreams: one pooled HTTP/1.1 + HTTP/2 client (TLS via
//! rustls with the webpki roots), the request the provider should see, and the mapping
//! of upstream failures to the gateway's errors.
//!
//! Security: the URL is always the configured base URL plus a fixed endpoint path — no
//! request field can choose the host. Redirects are not followed (hyper's client never
//! does). The client's own headers are not forwarded, so its Tollgate key stays here; a
//! provider's configured [`ExtraHeaders`] never include framing or credential headers.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate_core::model::Endpoint;
use tollgate_core::{ApiError, ErrorCode, Secret};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The shared upstream client. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<Connector, Full<Bytes>>,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Self { client }
    }

    /// Sends `body` to the provider's endpoint and waits for the response head, at most
    /// `first_byte_timeout`.
    pub(crate) async fn post_json(
        &self,
        target: &OpenAiUpstream,
        endpoint: Endpoint,
        request_id: &str,
        body: Bytes,
        first_byte_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let uri = target.uri(endpoint).ok_or(UpstreamFailure::BadUrl)?.clone();
        let mut req = Request::post(uri).body(Full::new(body)).map_err(|_| UpstreamFailure::BadUrl)?;
        let headers = req.headers_mut();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))));
        target.extra_headers.apply(headers);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &target.authorization {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", id);
        }
        self.send(req, first_byte_timeout).await
    }

    /// Sends a request a provider adapter prepared (its URI and credentials built once per
    /// provider, never from request fields) and waits for the response head, at most
    /// `first_byte_timeout`.
    pub(crate) async fn send(
        &self,
        req: Request<Full<Bytes>>,
        first_byte_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        match tokio::time::timeout(first_byte_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamFailure::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamFailure::Protocol(error_chain(&e))),
            Ok(Ok(res)) => Ok(res),
        }
    }
}

/// An OpenAI-compatible provider, ready to call: its endpoint URIs, its `Authorization`
/// header and its extra headers are built once (not per request), from the configuration.
#[derive(Debug)]
pub struct OpenAiUpstream {
    pub base_url: String,
    uris: Vec<(Endpoint, http::Uri)>,
    /// `Bearer <key>`, marked sensitive; `None` for keyless local servers.
    authorization: Option<HeaderValue>,
    /// `OpenAI-Organization`, `OpenAI-Project` and the configured static headers.
    extra_headers: ExtraHeaders,
}

impl OpenAiUpstream {
    /// Fails (with a message naming neither URL nor key) if they do not form valid requests.
    pub fn new(base_url: &str, api_key: &Secret, extra_headers: ExtraHeaders) -> Result<Self, String> {
        let mut uris = Vec::new();
        for e in [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::ImagesGenerations,
            Endpoint::Responses,
        ] {
            let path = e.path().trim_start_matches("/v1");
            let uri: http::Uri =
                format!("{base_url}{path}").parse().map_err(|_| "the base URL does not form a valid URI".to_owned())?;
            uris.push((e, uri));
        }
        let authorization = if api_key.is_empty() {
            None
        } else {
            let v = HeaderValue::from_str(&format!("Bearer {}", api_key.expose()))
                .map_err(|_| "the API key is not a valid header value".to_owned())?;
            Some(mark_sensitive(v))
        };
        Ok(Self { base_url: base_url.to_owned(), uris, authorization, extra_headers })
    }

    /// The credentials this provider is called with (the key, extra header values), for
    /// [`crate::redact`].
    pub(crate) fn secrets(&self) -> Vec<&[u8]> {
        let key = self.authorization.as_ref().map(|v| v.as_bytes().strip_prefix(b"Bearer ").unwrap_or(v.as_bytes()));
        key.into_iter().chain(self.extra_headers.values()).collect()
    }

    fn uri(&self, endpoint: Endpoint) -> Option<&http::Uri> {
        self.uris.iter().find(|(e, _)| *e == endpoint).map(|(_, u)| u)
    }
}

/// Static headers a provider sends with every request (`OpenAI-Organization`, a proxy's
/// routing header…), parsed once. Names that would change how the request is framed,
/// routed or authenticated are refused (see [`ExtraHeaders::check_name`]); values are
/// marked sensitive, since a custom header may well carry a credential.
#[derive(Debug, Clone, Default)]
pub struct ExtraHeaders(Vec<(HeaderName, HeaderValue)>);

impl ExtraHeaders {
    /// Fails with a message naming the header (never its value).
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (name, value) in pairs {
            Self::check_name(name)?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
            if out.iter().any(|(n, _)| *n == name) {
                return Err(format!("header {name:?} is given twice"));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header {name:?} is not a valid header value"))?;
            out.push((name, mark_sensitive(value)));
        }
        Ok(Self(out))
    }

    /// Whether `name` may be configured: not hop-by-hop, not framing (`host`,
    /// `content-length`), not a credential the gateway sets itself, not a cookie.
    pub fn check_name(name: &str) -> Result<(), String> {
        const FORBIDDEN: [&str; 14] = [
            "host",
            "content-length",
            "authorization",
            "api-key",
            "x-api-key",
            "x-goog-api-key",
            "connection",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "te",
            "trailer",
            "cookie",
            "set-cookie",
        ];
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(format!("header {name:?} may not be configured (hop-by-hop, framing or credential header)"));
        }
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{name:?} is not a header name"));
        }
        Ok(())
    }

    /// Every configured value (each may be a credential).
    pub(crate) fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|(_, v)| v.as_bytes())
    }

    /// Inserts every header, replacing any of the same name already in `headers`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// `error: cause: cause…` — hyper's top-level messages alone say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn mark_sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// Why no usable response came back. The detail is for the log, never for the client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamFailure {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Protocol(String),
    #[error("no response head within the first-byte timeout")]
    Timeout,
    #[error("the configured base URL does not form a valid request URI")]
    BadUrl,
}

impl UpstreamFailure {
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Self::Timeout => ApiError::new(ErrorCode::UpstreamTimeout, "The upstream provider did not answer in time."),
            Self::Connect(_) | Self::Protocol(_) | Self::BadUrl => {
                ApiError::new(ErrorCode::UpstreamError, "The upstream provider could not be reached.")
            }
        }
    }
}

/// Maps an upstream error status to what the client gets. Client errors of the request
/// itself (400, 404, 409, 413, 415, 422) are relayed as the provider wrote them; the
/// provider refusing *our* credentials, its rate limits and its failures become the
/// gateway's own errors (with no upstream text that could carry secrets).
pub(crate) fn relay_status(status: http::StatusCode) -> Option<ApiError> {
    match status.as_u16() {
        400 | 404 | 409 | 413 | 415 | 422 => None,
        401 | 403 => {
            Some(ApiError::new(ErrorCode::UpstreamError, "The upstream provider rejected the gateway's credentials."))
        }
        408 | 504 => Some(ApiError::new(ErrorCode::UpstreamTimeout, "The upstream provider did not answer in time.")),
        429 => Some(ApiError::new(
            ErrorCode::RateLimitExceeded { retry_after_secs: 1 },
            "The upstream provider is rate limiting requests; retry later.",
        )),
        _ => Some(ApiError::new(ErrorCode::UpstreamError, "The upstream provider failed to answer.")),
    }
}
