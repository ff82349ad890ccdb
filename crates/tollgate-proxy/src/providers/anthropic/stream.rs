//! Streams: Anthropic's SSE events translated one upstream frame at a time into OpenAI
//! `chat.completion.chunk` events, ending with a usage-only chunk and `[DONE]`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};

use crate::sse::event_end;

use super::response::*;
use super::*;

/// Anthropic SSE in, OpenAI chunks out, one upstream frame at a time: what a frame
/// completes is translated and passed on at once; an incomplete event waits in `pending`.
pub(crate) struct ChunkStream<B> {
    inner: B,
    pending: BytesMut,
    state: StreamState,
    /// Reported on the next poll, after the chunks translated before it went out.
    failure: Option<BoxError>,
    ended: bool,
}

impl<B> ChunkStream<B> {
    pub(super) fn new(inner: B, created: i64) -> Self {
        Self { inner, pending: BytesMut::new(), state: StreamState::new(created), failure: None, ended: false }
    }

    /// Translates every complete event in `pending`, stopping at the first failure.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while self.failure.is_none()
            && !self.state.done
            && let Some(end) = event_end(&self.pending)
        {
            let event = self.pending.split_to(end);
            if let Err(e) = self.state.translate(&event, out) {
                self.failure = Some(e);
            }
        }
        if self.failure.is_none() && !self.state.done && self.pending.len() > MAX_EVENT_BYTES {
            self.failure = Some(format!("an upstream event exceeded {MAX_EVENT_BYTES} bytes").into());
        }
    }
}

impl<B> Body for ChunkStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(e) = this.failure.take() {
                this.ended = true;
                tracing::warn!(error = %e, "anthropic stream failed");
                return Poll::Ready(Some(Err(e)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers, and anything after `message_stop`, have no OpenAI form.
                    if let Ok(data) = frame.into_data()
                        && !this.state.done
                    {
                        this.pending.extend_from_slice(&data);
                        this.drain(&mut out);
                    }
                }
                Some(Err(e)) => {
                    this.ended = true;
                    // Once `message_stop` has come, a reset loses nothing.
                    if !this.state.done {
                        this.failure = Some(e.into());
                    }
                }
                None => {
                    this.ended = true;
                    if !this.state.done && !this.pending.is_empty() {
                        // The last event may lack its blank line.
                        this.pending.extend_from_slice(b"\n\n");
                        this.drain(&mut out);
                    }
                    if !this.state.done && this.failure.is_none() {
                        this.failure = Some("the upstream stream ended before message_stop".into());
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.failure.is_none()
    }
}

/// What the translation of one stream has seen so far.
pub(super) struct StreamState {
    created: i64,
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`,
    /// set by `message_start`.
    prefix: Option<Vec<u8>>,
    usage: Usage,
    finish: Option<&'static str>,
    tool_calls: usize,
    /// The open `tool_use` block: its Anthropic index and its OpenAI tool-call index.
    open_tool: Option<(u64, usize)>,
    /// `message_stop` was translated: the usage chunk and `[DONE]` are out.
    done: bool,
}

impl StreamState {
    fn new(created: i64) -> Self {
        Self {
            created,
            prefix: None,
            usage: Usage::default(),
            finish: None,
            tool_calls: 0,
            open_tool: None,
            done: false,
        }
    }

    fn translate(&mut self, event: &[u8], out: &mut Vec<u8>) -> Result<(), BoxError> {
        let Some(data) = event_data(event) else {
            return Ok(());
        };
        let event: StreamEvent = serde_json::from_slice(&data)?;
        if let StreamEvent::MessageStart { message } = &event {
            let mut prefix = br#"{"id":"#.to_vec();
            serde_json::to_writer(&mut prefix, &message.id)?;
            prefix.extend_from_slice(
                format!(r#","object":"chat.completion.chunk","created":{},"model":"#, self.created).as_bytes(),
            );
            serde_json::to_writer(&mut prefix, &message.model)?;
            prefix.extend_from_slice(br#","choices":["#);
            self.usage = message.usage;
            self.prefix = Some(prefix);
        }
        let Some(prefix) = self.prefix.as_deref() else {
            return match event {
                StreamEvent::Ping {} | StreamEvent::Other => Ok(()),
                StreamEvent::Error { error } => Err(upstream_error_event(&error)),
                _ => Err("the upstream stream sent content before message_start".into()),
            };
        };
        match event {
            StreamEvent::MessageStart { .. } => choice(out, prefix, br#"{"role":"assistant","content":""}"#, None),
            StreamEvent::ContentBlockStart { index, content_block } => match content_block {
                BlockView::Text { text } if !text.is_empty() => content_chunk(out, prefix, &text)?,
                BlockView::ToolUse { id, name, .. } => {
                    let k = self.tool_calls;
                    self.tool_calls += 1;
                    self.open_tool = Some((index, k));
                    let mut delta = format!(r#"{{"tool_calls":[{{"index":{k},"id":"#).into_bytes();
                    serde_json::to_writer(&mut delta, &id)?;
                    delta.extend_from_slice(br#","type":"function","function":{"name":"#);
                    serde_json::to_writer(&mut delta, &name)?;
                    delta.extend_from_slice(br#","arguments":""}}]}"#);
                    choice(out, prefix, &delta, None);
                }
                BlockView::Text { .. } | BlockView::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                DeltaView::TextDelta { text } if !text.is_empty() => content_chunk(out, prefix, &text)?,
                DeltaView::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    if let Some((_, k)) = self.open_tool.filter(|(open, _)| *open == index) {
                        let mut delta =
                            format!(r#"{{"tool_calls":[{{"index":{k},"function":{{"arguments":"#).into_bytes();
                        serde_json::to_writer(&mut delta, &partial_json)?;
                        delta.extend_from_slice(b"}}]}");
                        choice(out, prefix, &delta, None);
                    }
                }
                DeltaView::TextDelta { .. } | DeltaView::InputJsonDelta { .. } | DeltaView::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if self.open_tool.is_some_and(|(open, _)| open == index) {
                    self.open_tool = None;
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                self.usage.update(usage);
                if self.finish.is_none() {
                    let finish = finish_reason(delta.stop_reason.as_deref());
                    self.finish = Some(finish);
                    choice(out, prefix, b"{}", Some(finish));
                }
            }
            StreamEvent::MessageStop {} => {
                if self.finish.is_none() {
                    self.finish = Some("stop");
                    choice(out, prefix, b"{}", Some("stop"));
                }
                // The usage-only chunk the meter bills from (and hides unless asked for).
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(prefix);
                out.extend_from_slice(br#"],"usage":"#);
                serde_json::to_writer(&mut *out, &self.usage.to_openai())?;
                out.extend_from_slice(b"}\n\ndata: [DONE]\n\n");
                self.done = true;
            }
            StreamEvent::Error { error } => return Err(upstream_error_event(&error)),
            StreamEvent::Ping {} | StreamEvent::Other => {}
        }
        Ok(())
    }
}

pub(super) fn upstream_error_event(error: &ErrorView) -> BoxError {
    let message: String = error.message.chars().take(200).collect();
    format!("the upstream sent an error event: {}: {message}", error.kind).into()
}

/// One `chat.completion.chunk` event with a single choice.
pub(super) fn choice(out: &mut Vec<u8>, prefix: &[u8], delta: &[u8], finish: Option<&str>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(prefix);
    out.extend_from_slice(br#"{"index":0,"delta":"#);
    out.extend_from_slice(delta);
    out.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
    match finish {
        Some(f) => {
            out.push(b'"');
            out.extend_from_slice(f.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}]}\n\n");
}

pub(super) fn content_chunk(out: &mut Vec<u8>, prefix: &[u8], text: &str) -> Result<(), BoxError> {
    let mut delta = br#"{"content":"#.to_vec();
    serde_json::to_writer(&mut delta, text)?;
    delta.push(b'}');
    choice(out, prefix, &delta, None);
    Ok(())
}

/// The `data:` of one SSE event (lines joined by `\n`), `None` if it has none.
pub(crate) fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(rest);
                }
                None => data = Some(rest.to_vec()),
            }
        }
    }
    data.filter(|d| !d.is_empty())
}
