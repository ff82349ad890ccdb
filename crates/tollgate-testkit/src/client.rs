//! A small real HTTP client for tests (hyper-util's pooled client, no extra stack):
//! whole answers for assertions, and raw responses for reading streams frame by frame.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `error.code` of an OpenAI-shaped error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for TestClient {
    fn default() -> Self {
        Self { client: Client::builder(TokioExecutor::new()).build_http() }
    }
}

/// Failures are test failures: the error says what was asked.
pub type ClientResult<T> = Result<T, String>;

impl TestClient {
    /// Sends a request and returns the response head with its body unread.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> ClientResult<hyper::Response<Incoming>> {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(Full::new(body.into())).map_err(|e| format!("{method} {url}: {e}"))?;
        self.client.request(req).await.map_err(|e| format!("{method} {url}: {e}"))
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> ClientResult<Answer> {
        let res = self.send(method, url, headers, body).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| format!("reading the body from {url}: {e}"))?.to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    /// `POST` a JSON body with `Authorization: Bearer <key>` when given.
    pub async fn post_json(&self, url: &str, key: Option<&str>, body: &serde_json::Value) -> ClientResult<Answer> {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![(header::CONTENT_TYPE.as_str(), "application/json")];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        self.call(Method::POST, url, &headers, body.to_string()).await
    }

    pub async fn get(&self, url: &str, key: Option<&str>) -> ClientResult<Answer> {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("authorization", a)).into_iter().collect();
        self.call(Method::GET, url, &headers, Bytes::new()).await
    }

    /// `PATCH` a JSON body with `Authorization: Bearer <key>`.
    pub async fn patch_json(&self, url: &str, key: &str, body: &serde_json::Value) -> ClientResult<Answer> {
        let auth = format!("Bearer {key}");
        let headers = [(header::CONTENT_TYPE.as_str(), "application/json"), ("authorization", auth.as_str())];
        self.call(Method::PATCH, url, &headers, body.to_string()).await
    }

    /// `DELETE` with `Authorization: Bearer <key>`.
    pub async fn delete(&self, url: &str, key: &str) -> ClientResult<Answer> {
        let auth = format!("Bearer {key}");
        self.call(Method::DELETE, url, &[("authorization", auth.as_str())], Bytes::new()).await
    }
}

/// An opened streaming response: its request id and its unread body.
pub struct OpenStream {
    pub request_id: String,
    pub body: Incoming,
}

impl TestClient {
    /// `POST url` with `body` as `key`, returning as soon as the response head arrives.
    pub async fn open_stream(&self, url: &str, key: &str, body: &serde_json::Value) -> ClientResult<OpenStream> {
        let auth = format!("Bearer {key}");
        let res = self.send(Method::POST, url, &[("authorization", &auth)], body.to_string()).await?;
        let request_id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("no x-request-id from {url}"))?
            .to_owned();
        Ok(OpenStream { request_id, body: res.into_body() })
    }
}

/// Reads the body until `text` has been seen; returns everything read.
pub async fn read_until(body: &mut Incoming, text: &str) -> ClientResult<String> {
    let mut seen = String::new();
    while !seen.contains(text) {
        let chunk = next_data(body).await?.ok_or_else(|| format!("stream ended before {text:?}: {seen}"))?;
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(seen)
}

/// Reads the body to its end; returns everything read.
pub async fn read_to_end(body: &mut Incoming) -> ClientResult<String> {
    let mut all = String::new();
    while let Some(chunk) = next_data(body).await? {
        all.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(all)
}

/// Reads the next data frame of a streaming body; `None` at the end.
pub async fn next_data(body: &mut Incoming) -> ClientResult<Option<Bytes>> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(format!("stream failed: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// The `data:` payloads of an SSE body, in order (`[DONE]` included).
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
}
