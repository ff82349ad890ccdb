//! Streams: metered OpenAI chunks in, Anthropic's events out (`message_start`,
//! `content_block_start/delta/stop` for text and tool calls, `message_delta` with the stop
//! reason and usage, `message_stop`; an interruption ends with an `error` event). At most
//! one incomplete event is buffered, and never more than [`MAX_EVENT_BYTES`].

use super::*;

/// Metered OpenAI chunks in, Anthropic stream events out, one frame at a time.
pub(crate) struct EventStream<B> {
    inner: B,
    pending: BytesMut,
    state: StreamState,
    ended: bool,
}

impl<B> EventStream<B> {
    pub(super) fn new(inner: B, id: String, model: String) -> Self {
        Self { inner, pending: BytesMut::new(), state: StreamState::new(id, model), ended: false }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        while !self.state.done
            && let Some(end) = event_end(&self.pending)
        {
            let event = self.pending.split_to(end);
            self.state.translate(&event, out);
        }
        if !self.state.done && self.pending.len() > MAX_EVENT_BYTES {
            tracing::warn!("a stream event exceeded {MAX_EVENT_BYTES} bytes");
            self.state.fail("The upstream provider sent an oversized event.", out);
        }
    }
}

impl<B> http_body::Body for EventStream<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !this.state.done
                    {
                        this.pending.extend_from_slice(&data);
                        this.drain(&mut out);
                    }
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.ended = true;
                    if !this.state.done && !this.pending.is_empty() {
                        this.pending.extend_from_slice(b"\n\n");
                        this.drain(&mut out);
                    }
                    // A stream that ended without `[DONE]` but cleanly still closes properly.
                    if !this.state.done {
                        this.state.close(&mut out);
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[derive(Deserialize)]
pub(super) struct ChunkView {
    #[serde(default)]
    choices: Option<Vec<ChunkChoiceView>>,
    #[serde(default)]
    usage: Option<UsageView>,
    #[serde(default)]
    error: Option<ChunkErrorView>,
}

#[derive(Deserialize)]
pub(super) struct ChunkErrorView {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ChunkChoiceView {
    #[serde(default)]
    delta: Option<DeltaView>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct DeltaView {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDeltaView>>,
}

#[derive(Deserialize)]
pub(super) struct ToolCallDeltaView {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionView>,
}

/// The content block being streamed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    Text,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

/// What the translation of one stream has seen so far.
pub(super) struct StreamState {
    id: String,
    model: String,
    started: bool,
    /// The open block and its Anthropic index.
    open: Option<(Open, u64)>,
    next_index: u64,
    /// Each OpenAI tool-call index with the Anthropic block index it opened.
    tools: Vec<(u64, u64)>,
    finish: Option<String>,
    usage: UsageView,
    /// `message_stop` or an `error` event is out: nothing more is sent.
    done: bool,
}

impl StreamState {
    pub(super) fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            started: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish: None,
            usage: UsageView::default(),
            done: false,
        }
    }

    pub(super) fn translate(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let Some(data) = event_data(event) else {
            return;
        };
        if data == b"[DONE]" {
            self.close(out);
            return;
        }
        let chunk: ChunkView = match serde_json::from_slice(&data) {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(error = %e, "a stream event is not a chat completion chunk");
                self.fail("The upstream provider sent an unreadable event.", out);
                return;
            }
        };
        if let Some(error) = chunk.error {
            let message = error.message.unwrap_or_else(|| "The upstream provider interrupted the stream.".to_owned());
            self.fail(&message, out);
            return;
        }
        self.start(out);
        if let Some(usage) = chunk.usage {
            self.usage = usage;
        }
        for choice in chunk.choices.unwrap_or_default() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    self.text(&text, out);
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    self.tool_call(call, out);
                }
            }
            if let Some(finish) = choice.finish_reason {
                self.finish = Some(finish);
            }
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        // A chat stream reports usage only at its end: `message_delta` carries the counts.
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": { "input_tokens": 0, "output_tokens": 0 },
        });
        write_event(out, "message_start", &json!({ "type": "message_start", "message": message }));
    }

    /// Opens a block of `kind` unless it is the open one; returns its index.
    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<u8>) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.stop_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        let start = json!({ "type": "content_block_start", "index": index, "content_block": block });
        write_event(out, "content_block_start", &start);
        index
    }

    fn stop_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            write_event(out, "content_block_stop", &json!({ "type": "content_block_stop", "index": index }));
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = self.open(Open::Text, json!({ "type": "text", "text": "" }), out);
        let delta =
            json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": text } });
        write_event(out, "content_block_delta", &delta);
    }

    fn tool_call(&mut self, call: ToolCallDeltaView, out: &mut Vec<u8>) {
        let k = call.index.unwrap_or(0);
        let (name, arguments) = call.function.map_or((None, None), |f| (f.name, f.arguments));
        let index = match self.tools.iter().find(|(tool, _)| *tool == k) {
            Some(&(_, index)) => index,
            None => {
                let block = json!({
                    "type": "tool_use",
                    "id": call.id.unwrap_or_default(),
                    "name": name.unwrap_or_default(),
                    "input": {},
                });
                let index = self.open(Open::Tool(k), block, out);
                self.tools.push((k, index));
                index
            }
        };
        if let Some(partial) = arguments.filter(|a| !a.is_empty()) {
            let delta = json!({
                "type": "content_block_delta",
                "index": index,
                "delta": { "type": "input_json_delta", "partial_json": partial },
            });
            write_event(out, "content_block_delta", &delta);
        }
    }

    /// The end of a complete stream: the open block, the stop reason with the usage, the stop.
    fn close(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.stop_block(out);
        let delta = json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null },
            "usage": self.usage.to_anthropic(),
        });
        write_event(out, "message_delta", &delta);
        write_event(out, "message_stop", &json!({ "type": "message_stop" }));
        self.done = true;
    }

    /// A failed stream ends with an `error` event (no `message_stop`), as Anthropic's do.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        let error = json!({ "type": "error", "error": { "type": "api_error", "message": message } });
        write_event(out, "error", &error);
        self.done = true;
    }
}

pub(super) fn write_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}
