//! `/v1/messages` on Anthropic channels, natively: the client's Messages body goes to
//! Anthropic as written — only `model` becomes the channel's upstream name — and Anthropic's
//! message or event stream comes back as Anthropic sent it. Nothing is lost in translation:
//! `stop_sequence`, cache reads and writes, thinking blocks, `top_k`, documents and server
//! tools all pass. The meter reads Anthropic's own usage (`sse`, `meter::Dialect`), so the
//! bill is the same as for a translated answer: input plus cache tokens as prompt tokens.
//!
//! One thing is changed on the way back: the answer names the public model id, as a
//! translated answer does (in the JSON message, and in the stream's `message_start` — the
//! first event, so later events pass untouched). The upstream's own name for the model
//! stays private: a local server may even report a file path there.
//!
//! Which path a request takes is decided per model: when every channel of the model is an
//! Anthropic provider, the body is not translated at all (a chat-only parameter such as
//! `top_k` is then fine); when the model also has other channels, the request must be one a
//! chat model can take (it may fail over to one), so it is translated and checked — yet its
//! Anthropic channels still receive the original body. Errors keep one path: an upstream
//! error is mapped by the gateway's policy and answered in Anthropic's shape either way.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, header};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use tollgate_core::{ApiError, ErrorCode};

use super::{BoxError, MAX_JSON_ANSWER, MessagesRequest, error_response, write_event};
use crate::providers::anthropic::event_data;
use crate::sse::event_end;

/// Marks a response that is already in Anthropic's shape (nothing to translate back).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NativeAnswer;

/// The request the pipeline meters and routes: the client's own body when every channel is
/// Anthropic's (`anthropic_only` is asked with the model id), else its chat translation;
/// with the parsed request, kept for the Anthropic channels (see [`upstream_body`]).
pub(crate) fn pipeline_body(
    body: &Bytes,
    anthropic_only: impl FnOnce(&str) -> bool,
) -> Result<(Bytes, MessagesRequest), ApiError> {
    let req = MessagesRequest::parse(body)?;
    let pipeline = if anthropic_only(req.model()) { body.clone() } else { super::translate(&req)? };
    Ok((pipeline, req))
}

/// The body for an Anthropic channel: the client's, with the channel's model name.
pub(crate) fn upstream_body(req: &MessagesRequest, upstream_model: &str) -> Result<Bytes, ApiError> {
    let mut fields = req.fields.clone();
    fields.insert("model".into(), Value::from(upstream_model));
    serde_json::to_vec(&fields).map(Bytes::from).map_err(|_| ApiError::internal())
}

/// The client's `anthropic-beta` header, passed on to Anthropic channels (it turns on
/// features of the Messages API; it can neither choose the host nor carry credentials).
pub(crate) fn beta_header(headers: &http::HeaderMap) -> Option<HeaderValue> {
    headers.get("anthropic-beta").filter(|v| !v.is_empty() && v.len() <= 1024).cloned()
}

/// Anthropic's answer with the public model id in place of the upstream's name.
pub(crate) async fn with_public_model(res: Response, model: &str) -> Response {
    let (mut parts, body) = res.into_parts();
    let is_sse = crate::sse::is_event_stream(&parts.headers);
    if is_sse {
        let body = PublicModel { inner: body, model: model.to_owned(), head: Some(BytesMut::new()) };
        return Response::from_parts(parts, Body::new(body));
    }
    let bytes = match Limited::new(body, MAX_JSON_ANSWER).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // The meter has recorded the interruption; the client gets a clean error.
            tracing::warn!(error = %e, "reading Anthropic's message failed");
            return error_response(&ApiError::new(
                ErrorCode::UpstreamError,
                "The upstream provider interrupted the answer.",
            ));
        }
    };
    let relabeled = serde_json::from_slice::<Map<String, Value>>(&bytes).ok().and_then(|mut message| {
        message.insert("model".into(), Value::from(model));
        serde_json::to_vec(&message).ok()
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(relabeled.map_or(bytes, Bytes::from)))
}

/// An Anthropic event stream whose `message_start` names the public model. Events are read
/// until that first one; after it, frames pass untouched.
struct PublicModel<B> {
    inner: B,
    model: String,
    /// The stream's beginning, until `message_start` has passed; then `None`.
    head: Option<BytesMut>,
}

impl<B> PublicModel<B> {
    /// Takes the complete events out of `head`, relabeling `message_start`.
    fn drain(&mut self, out: &mut Vec<u8>) {
        let Some(head) = &mut self.head else { return };
        while let Some(end) = event_end(head) {
            let event = head.split_to(end);
            let start = event_data(&event)
                .and_then(|d| serde_json::from_slice::<Map<String, Value>>(&d).ok())
                .filter(|d| d.get("type").and_then(Value::as_str) == Some("message_start"));
            match start {
                Some(mut data) => {
                    if let Some(message) = data.get_mut("message").and_then(Value::as_object_mut) {
                        message.insert("model".into(), Value::from(self.model.as_str()));
                    }
                    write_event(out, "message_start", &Value::Object(data));
                    out.extend_from_slice(head);
                    self.head = None;
                    return;
                }
                None => out.extend_from_slice(&event),
            }
        }
    }
}

impl<B> http_body::Body for PublicModel<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    // Never saw `message_start`: whatever came is the client's.
                    let rest = this.head.take().filter(|h| !h.is_empty());
                    return Poll::Ready(rest.map(|r| Ok(Frame::data(r.freeze()))));
                }
            };
            let Some(head) = &mut this.head else { return Poll::Ready(Some(Ok(frame))) };
            let Ok(data) = frame.into_data() else { continue };
            head.extend_from_slice(&data);
            let mut out = Vec::new();
            this.drain(&mut out);
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_anthropic_models_keep_the_clients_body() {
        let body = Bytes::from(
            json!({ "model": "claude", "max_tokens": 10, "top_k": 5, "messages": [{ "role": "user", "content": "hi" }] })
                .to_string(),
        );
        assert_eq!(pipeline_body(&body, |m| m == "claude").unwrap().0, body, "untouched");
        let refused = pipeline_body(&body, |_| false).unwrap_err();
        assert_eq!(refused.param.as_deref(), Some("top_k"), "a chat model cannot take top_k");
        let bad = Bytes::from_static(br#"{"model":"claude","messages":[]}"#);
        assert_eq!(pipeline_body(&bad, |_| true).unwrap_err().param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn the_upstream_gets_its_model_name_and_everything_else_as_sent() {
        let sent = json!({ "model": "claude", "max_tokens": 10, "thinking": { "type": "enabled", "budget_tokens": 1024 },
                           "system": [{ "type": "text", "text": "x", "cache_control": { "type": "ephemeral" } }],
                           "messages": [{ "role": "user", "content": "hi" }] });
        let out: Value = serde_json::from_slice(
            &upstream_body(&MessagesRequest::parse(sent.to_string().as_bytes()).unwrap(), "claude-x-1").unwrap(),
        )
        .unwrap();
        let mut expected = sent;
        expected["model"] = "claude-x-1".into();
        assert_eq!(out, expected);
    }
}
