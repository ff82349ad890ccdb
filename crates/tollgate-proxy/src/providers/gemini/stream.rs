//! Streams and the translated body: Gemini's SSE chunks in, OpenAI
//! `chat.completion.chunk` events out, parsed incrementally.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde_json::{Value, json};
use tollgate_core::ids::random_base62;

use crate::sse::event_end;

use super::response::*;
use super::*;

/// One streamed answer being translated: Gemini's `GenerateContentResponse` chunks in,
/// OpenAI `chat.completion.chunk` events out.
pub(super) struct ChatStream {
    id: Option<String>,
    created: i64,
    model: String,
    /// By candidate index.
    choices: Vec<ChoiceState>,
    /// The latest `usageMetadata` (Gemini repeats it, growing, on every chunk).
    usage: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ChoiceState {
    opened: bool,
    tool_calls: usize,
    finished: bool,
}

impl ChatStream {
    pub(super) fn new(model: String) -> Self {
        Self { id: None, created: now_secs(), model, choices: Vec::new(), usage: None }
    }

    fn write(&mut self, out: &mut BytesMut, choices: Value, usage: Option<Value>) {
        let id = self.id.get_or_insert_with(|| format!("chatcmpl-{}", random_base62(24)));
        let mut chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices
        });
        if let Some(u) = usage {
            chunk["usage"] = u;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }

    fn state(&mut self, index: u64) -> Result<&mut ChoiceState, BoxError> {
        let i = usize::try_from(index)
            .ok()
            .filter(|i| (*i as u64) < MAX_CANDIDATES)
            .ok_or("candidate index out of range")?;
        if self.choices.len() <= i {
            self.choices.resize(i + 1, ChoiceState::default());
        }
        Ok(&mut self.choices[i])
    }

    /// The role chunk a choice opens with.
    fn open(&mut self, index: u64, out: &mut BytesMut) -> Result<(), BoxError> {
        if !self.state(index)?.opened {
            self.state(index)?.opened = true;
            let delta = json!({ "role": "assistant", "content": "" });
            self.write(out, json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }]), None);
        }
        Ok(())
    }

    fn finish_choice(&mut self, index: u64, reason: &'static str, out: &mut BytesMut) -> Result<(), BoxError> {
        let state = self.state(index)?;
        if !state.finished {
            state.finished = true;
            self.write(out, json!([{ "index": index, "delta": {}, "logprobs": null, "finish_reason": reason }]), None);
        }
        Ok(())
    }

    /// Translates one upstream event's `data`.
    fn event(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), BoxError> {
        let v: Value = serde_json::from_slice(data)?;
        if let Some(error) = v.get("error") {
            let message: String = error["message"].as_str().unwrap_or("").chars().take(300).collect();
            return Err(format!("Gemini reported an error mid-stream: {message}").into());
        }
        if self.id.is_none() {
            if let Some(m) = v["modelVersion"].as_str() {
                m.clone_into(&mut self.model);
            }
            if let Some(r) = v["responseId"].as_str().filter(|r| !r.is_empty()) {
                self.id = Some(format!("chatcmpl-{r}"));
            }
        }
        if let Some(u) = usage(&v["usageMetadata"]) {
            self.usage = Some(u);
        }
        let candidates = v["candidates"].as_array().map(Vec::as_slice).unwrap_or_default();
        if candidates.is_empty() && v["promptFeedback"]["blockReason"].is_string() {
            self.open(0, out)?;
            self.finish_choice(0, "content_filter", out)?;
        }
        for (position, c) in candidates.iter().enumerate() {
            let index = candidate_index(c, position);
            self.open(index, out)?;
            let (text, calls) = read_parts(c);
            if !text.is_empty() {
                let delta = json!({ "content": text });
                self.write(
                    out,
                    json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }]),
                    None,
                );
            }
            if !calls.is_empty() {
                let first = self.state(index)?.tool_calls;
                self.state(index)?.tool_calls += calls.len();
                let calls: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut call)| {
                        call["index"] = (first + k).into();
                        call
                    })
                    .collect();
                let delta = json!({ "tool_calls": calls });
                self.write(
                    out,
                    json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }]),
                    None,
                );
            }
            if let Some(reason) = c["finishReason"].as_str() {
                let reason = finish_reason(reason, self.state(index)?.tool_calls > 0);
                self.finish_choice(index, reason, out)?;
            }
        }
        Ok(())
    }

    /// The end of a clean upstream stream: open choices finish, the usage-only chunk the
    /// gateway always wants (the meter hides it from clients that did not ask), `[DONE]`.
    fn end(&mut self, out: &mut BytesMut) {
        let unfinished: Vec<(u64, bool)> = (0u64..)
            .zip(&self.choices)
            .filter(|(_, s)| s.opened && !s.finished)
            .map(|(i, s)| (i, s.tool_calls > 0))
            .collect();
        for (index, tools) in unfinished {
            let reason = if tools { "tool_calls" } else { "stop" };
            let _ = self.finish_choice(index, reason, out);
        }
        if let Some(u) = self.usage.take() {
            self.write(out, json!([]), Some(u));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// The `data` of one SSE event (lines joined by `\n`), empty if it has none.
pub(super) fn event_data(event: &[u8]) -> Cow<'_, [u8]> {
    let mut data: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            data = if data.is_empty() {
                Cow::Borrowed(rest)
            } else {
                let mut joined = data.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(rest);
                Cow::Owned(joined)
            };
        }
    }
    data
}

pub(super) enum Mode {
    /// Gathered whole, then translated at once.
    Json { buf: BytesMut, kind: JsonKind },
    /// Translated event by event; `pending` holds an incomplete event.
    Sse { pending: BytesMut, stream: ChatStream },
}

pub(super) enum JsonKind {
    Chat { model: String },
    Embeddings { model: String, inputs: usize, base64: bool, prompt_tokens: u64 },
}

impl Mode {
    /// Takes in upstream bytes; returns the translated bytes that are ready.
    fn feed(&mut self, data: &[u8]) -> Result<Bytes, BoxError> {
        match self {
            Mode::Json { buf, .. } => {
                if buf.len() + data.len() > MAX_JSON_BODY {
                    return Err("the Gemini answer is larger than the gateway translates".into());
                }
                buf.extend_from_slice(data);
                Ok(Bytes::new())
            }
            Mode::Sse { pending, stream } => {
                pending.extend_from_slice(data);
                let mut out = BytesMut::new();
                while let Some(end) = event_end(pending) {
                    let event = pending.split_to(end);
                    let data = event_data(&event);
                    if !data.is_empty() {
                        stream.event(&data, &mut out)?;
                    }
                }
                if pending.len() > MAX_EVENT_BYTES {
                    return Err("a Gemini stream event is larger than the gateway translates".into());
                }
                Ok(out.freeze())
            }
        }
    }

    /// The upstream body ended cleanly: what is left to send.
    fn end(&mut self) -> Result<Bytes, BoxError> {
        match self {
            Mode::Json { buf, kind: JsonKind::Chat { model } } => chat_response(buf, model),
            Mode::Json { buf, kind: JsonKind::Embeddings { model, inputs, base64, prompt_tokens } } => {
                embeddings_response(buf, model, *inputs, *base64, *prompt_tokens)
            }
            Mode::Sse { pending, stream } => {
                let mut out = BytesMut::new();
                // An unterminated last event is still an event.
                let last = pending.split();
                let data = event_data(&last);
                if !data.is_empty() {
                    stream.event(&data, &mut out)?;
                }
                stream.end(&mut out);
                Ok(out.freeze())
            }
        }
    }
}

/// A Gemini response body read as OpenAI's. Upstream failures (and answers that cannot be
/// translated) surface as body errors, which the meter records as `upstream_interrupted`
/// exactly as for an OpenAI-compatible upstream. Dropping it drops the upstream body,
/// which cancels the upstream request.
pub(crate) struct Translated<B> {
    pub(super) inner: B,
    pub(super) mode: Mode,
    pub(super) done: bool,
}

impl<B> Translated<B> {
    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!(error = %e, "translating the Gemini response failed");
        Poll::Ready(Some(Err(e)))
    }
}

impl<B> Body for Translated<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let data = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_trailers) => continue,
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.done = true;
                    return match this.mode.end() {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => this.fail(e),
                    };
                }
            };
            let mut out = match this.mode.feed(&data) {
                Ok(out) => out,
                Err(e) => return this.fail(e),
            };
            // With a Content-Length the upstream body may never yield `None`.
            if this.inner.is_end_stream() {
                this.done = true;
                match this.mode.end() {
                    Ok(rest) if out.is_empty() => out = rest,
                    Ok(rest) => {
                        let mut all = BytesMut::from(out);
                        all.extend_from_slice(&rest);
                        out = all.freeze();
                    }
                    Err(e) => return this.fail(e),
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
