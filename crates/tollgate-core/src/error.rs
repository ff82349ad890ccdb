//! The error every HTTP surface of Tollgate answers with, in OpenAI's shape:
//! `{"error":{"message","type","param","code"}}`.
//!
//! One exhaustive table maps each [`ErrorCode`] to its status, type and code (PRODUCT §3).
//! Messages are written for the caller and never carry secrets or internal detail:
//! 5xx messages are fixed strings; the cause is logged by whoever raised the error.

use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// What went wrong, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidApiKey,
    KeyExpired,
    KeyDisabled,
    IpNotAllowed,
    EndpointNotAllowed,
    ProviderNotAllowed,
    ModelNotFound,
    /// Seconds until a retry may succeed.
    RateLimitExceeded {
        retry_after_secs: u64,
    },
    InsufficientQuota,
    InvalidRequest,
    RequestTooLarge,
    /// The upstream failed or answered with something unusable (502).
    UpstreamError,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// Management API: no or bad credentials.
    Unauthorized,
    /// Management API: authenticated but not allowed.
    Forbidden,
    /// Unknown route or object.
    NotFound,
    Conflict,
    MethodNotAllowed,
    /// The store is unreachable or the server is draining.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// `(status, type, code)` — the single mapping to the wire.
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use ErrorCode as E;
        match self {
            E::InvalidApiKey => (StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key"),
            E::KeyExpired => (StatusCode::UNAUTHORIZED, "authentication_error", "key_expired"),
            E::KeyDisabled => (StatusCode::UNAUTHORIZED, "authentication_error", "key_disabled"),
            E::IpNotAllowed => (StatusCode::UNAUTHORIZED, "authentication_error", "ip_not_allowed"),
            E::EndpointNotAllowed => (StatusCode::FORBIDDEN, "permission_error", "endpoint_not_allowed"),
            E::ProviderNotAllowed => (StatusCode::FORBIDDEN, "permission_error", "provider_not_allowed"),
            E::ModelNotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found"),
            E::RateLimitExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limit_exceeded"),
            E::InsufficientQuota => (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", "insufficient_quota"),
            E::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request"),
            E::RequestTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "request_too_large"),
            E::UpstreamError => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error"),
            E::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_error", "upstream_error"),
            E::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error", "unauthorized"),
            E::Forbidden => (StatusCode::FORBIDDEN, "permission_error", "forbidden"),
            E::NotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            E::Conflict => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            E::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed"),
            E::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "unavailable"),
            E::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error"),
        }
    }
}

/// An error answer: code, a caller-facing message, and optionally the offending parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), param: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn invalid_api_key() -> Self {
        Self::new(
            ErrorCode::InvalidApiKey,
            "Invalid API key provided. Pass a Tollgate key as 'Authorization: Bearer <key>'.",
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        // Model ids come from the caller; keep the echo short and printable.
        let shown: String = model.chars().take(128).filter(|c| !c.is_control()).collect();
        Self::new(
            ErrorCode::ModelNotFound,
            format!("The model '{shown}' does not exist or you do not have access to it."),
        )
        .with_param("model")
    }

    /// 500 with a fixed message; the caller logs the cause.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "Internal server error. The request id identifies it in the server log.")
    }

    pub fn status(&self) -> StatusCode {
        self.code.parts().0
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let (_, ty, code) = self.code.parts();
        let v = serde_json::json!({
            "error": { "message": self.message, "type": ty, "param": self.param, "code": code }
        });
        Bytes::from(v.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = Response::new(axum_core::body::Body::from(self.body()));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let ErrorCode::RateLimitExceeded { retry_after_secs } = self.code {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::model_not_found("gpt-x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap_or_default();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn rate_limit_sets_retry_after() {
        let res = ApiError::new(ErrorCode::RateLimitExceeded { retry_after_secs: 7 }, "slow down").into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("7"));
    }
}
