//! Whole answers: a Messages API `message` as a `chat.completion`, Anthropic error bodies in
//! OpenAI's shape, and the body type of a translated answer (JSON or stream).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::upstream::UpstreamFailure;

use super::stream::*;
use super::*;

/// Anthropic's usage object, fields absent or `null` when not reported. In a stream,
/// `message_delta` carries cumulative counts that replace those of `message_start`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct Usage {
    #[serde(default)]
    pub(super) input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Option<u64>,
}

impl Usage {
    pub(super) fn update(&mut self, later: Usage) {
        let keep = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        keep(&mut self.input_tokens, later.input_tokens);
        keep(&mut self.output_tokens, later.output_tokens);
        keep(&mut self.cache_creation_input_tokens, later.cache_creation_input_tokens);
        keep(&mut self.cache_read_input_tokens, later.cache_read_input_tokens);
    }

    /// OpenAI's usage object: cache reads and writes are prompt tokens too.
    pub(super) fn to_openai(self) -> Value {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(cached);
        let completion = self.output_tokens.unwrap_or(0);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt.saturating_add(completion),
            "prompt_tokens_details": { "cached_tokens": cached },
        })
    }
}

#[derive(Deserialize)]
pub(super) struct MessageView {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) content: Vec<BlockView>,
    #[serde(default)]
    pub(super) stop_reason: Option<String>,
    #[serde(default)]
    pub(super) usage: Usage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum BlockView {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking, server tools and block types added later: not part of a chat completion.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum StreamEvent {
    MessageStart {
        message: MessageView,
    },
    ContentBlockStart {
        index: u64,
        content_block: BlockView,
    },
    ContentBlockDelta {
        index: u64,
        delta: DeltaView,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaView,
        #[serde(default)]
        usage: Usage,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorView,
    },
    /// Event types added later are to be ignored (Anthropic's versioning policy).
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum DeltaView {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Default, Deserialize)]
pub(super) struct MessageDeltaView {
    #[serde(default)]
    pub(super) stop_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ErrorView {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) message: String,
}

pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and whatever a later API version adds.
        _ => "stop",
    }
}

/// A whole `message` as a `chat.completion`.
pub(super) fn chat_completion(body: &[u8], created: i64) -> Result<Vec<u8>, serde_json::Error> {
    let m: MessageView = serde_json::from_slice(body)?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in m.content {
        match block {
            BlockView::Text { text: t } => text.push_str(&t),
            BlockView::ToolUse { id, name, input } => calls.push(json!({
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": input.to_string() },
            })),
            BlockView::Other => {}
        }
    }
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) };
    let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    serde_json::to_vec(&json!({
        "id": m.id,
        "object": "chat.completion",
        "created": created,
        "model": m.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(m.stop_reason.as_deref()),
        }],
        "usage": m.usage.to_openai(),
    }))
}

/// A successful Anthropic answer in OpenAI's format: a JSON message is read whole (bounded)
/// and translated; a stream is translated as it flows.
pub(crate) async fn openai_response<B>(res: Response<B>) -> Result<Response<Translated<B>>, UpstreamFailure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (parts, body) = res.into_parts();
    let created = tollgate_core::time::now_millis() / 1000;
    let is_sse = crate::sse::is_event_stream(&parts.headers);
    let (content_type, body) = if is_sse {
        ("text/event-stream", Translated::Stream(ChunkStream::new(body, created)))
    } else {
        let bytes = Limited::new(body, MAX_JSON_RESPONSE)
            .collect()
            .await
            .map_err(|e| UpstreamFailure::Protocol(format!("reading the message: {e}")))?
            .to_bytes();
        let json = chat_completion(&bytes, created)
            .map_err(|e| UpstreamFailure::Protocol(format!("the answer is not a Messages API message: {e}")))?;
        ("application/json", Translated::Json(Some(Bytes::from(json))))
    };
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(out)
}

/// An Anthropic error answer (`{"type":"error","error":{"type","message"}}`) in OpenAI's
/// error shape, keeping its status and `retry-after`, for the handler's relay policy to
/// pass on (the request's own mistakes) or replace (everything else).
pub(crate) async fn openai_error<B>(res: Response<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorView,
    }
    let (parts, body) = res.into_parts();
    let body = Limited::new(body, MAX_ERROR_BODY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let (code, message) = match serde_json::from_slice::<Envelope>(&body) {
        Ok(e) if !e.error.message.is_empty() => (Some(e.error.kind), e.error.message),
        _ => (None, format!("The upstream provider answered {}.", parts.status)),
    };
    let body = json!({
        "error": { "message": message, "type": "invalid_request_error", "param": null, "code": code }
    });
    let mut out = Response::new(Full::new(Bytes::from(body.to_string())));
    *out.status_mut() = parts.status;
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(v) = parts.headers.get(header::RETRY_AFTER) {
        headers.insert(header::RETRY_AFTER, v.clone());
    }
    out
}

/// The body of a translated answer.
pub(crate) enum Translated<B> {
    Json(Option<Bytes>),
    Stream(ChunkStream<B>),
}

impl<B> Body for Translated<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Translated::Json(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Translated::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Translated::Json(data) => data.is_none(),
            Translated::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Translated::Json(Some(data)) => SizeHint::with_exact(data.len() as u64),
            Translated::Json(None) => SizeHint::with_exact(0),
            Translated::Stream(_) => SizeHint::default(),
        }
    }
}
