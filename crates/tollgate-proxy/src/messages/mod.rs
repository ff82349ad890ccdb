//! The inbound Anthropic Messages API (`POST /v1/messages`): a Messages request is
//! translated into an OpenAI chat completion request, served by the very same pipeline as
//! `/v1/chat/completions` (key, scopes, admission, failover, metering), and its answer —
//! a `chat.completion`, a chunk stream, or an error — is translated back into Anthropic's
//! shapes (`message`, the `message_start` … `message_stop` events, `{"type":"error"}`).
//!
//! Invariants: translation happens *outside* the meter — the meter reads the OpenAI-format
//! answer exactly as for chat completions, so billing cannot differ between the two
//! endpoints. The translated request always asks for the stream's usage chunk (the client
//! never sees it: it becomes `message_delta.usage`). What cannot be said to a chat model
//! faithfully is refused with a 400 naming the parameter, not dropped. At most one
//! incomplete event is buffered, and never more than [`MAX_EVENT_BYTES`].
//!
//! A model served only by Anthropic channels skips both translations: see [`native`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tollgate_core::ids::random_base62;
use tollgate_core::{ApiError, ErrorCode};

use crate::providers::anthropic::{bad, event_data, present};

pub(crate) mod count_tokens;
pub(crate) mod native;
use crate::sse::event_end;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A JSON answer (or relayed error) larger than this is treated as a failed upstream.
const MAX_JSON_ANSWER: usize = 8 << 20;
/// The largest single SSE event accepted from the metered stream.
const MAX_EVENT_BYTES: usize = 1 << 20;

mod answer;
mod request;
mod stream;

use answer::*;
pub(crate) use answer::{answer, error_response};
#[cfg(test)]
pub(crate) use request::chat_request;
pub(crate) use request::{MessagesRequest, object_with_model, translate};
use stream::*;

#[cfg(test)]
mod tests;
