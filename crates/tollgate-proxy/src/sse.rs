//! Reading usage out of provider responses without holding them back: server-sent events
//! are split at event boundaries and inspected one by one; JSON bodies are inspected once
//! complete. Only the fields that matter for billing are parsed.
//!
//! Two wire formats are read: OpenAI's (chat, completions, embeddings, the Responses API)
//! and Anthropic's Messages API, relayed natively to `/v1/messages` clients. Their fields
//! do not overlap, so one reader serves both: Anthropic's `message_start` reports the
//! prompt (input plus cache reads and writes), `message_delta` the cumulative output, an
//! `error` event a failure and `message_stop` the only clean end.

use std::borrow::Cow;

use memchr::memmem;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Tokens as a provider reported them (OpenAI chat/completions/embeddings name them
/// `prompt_`/`completion_tokens`; the Responses API `input_`/`output_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
}

#[derive(Deserialize)]
struct UsageView {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    /// Anthropic: prompt tokens written to and read from the prompt cache, billed as
    /// prompt tokens beside `input_tokens` (OpenAI counts cached tokens inside its totals).
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl UsageView {
    /// The prompt tokens, when this usage reports them at all.
    fn prompt(&self) -> Option<u64> {
        self.prompt_tokens.or_else(|| {
            let cached = self.cache_creation_input_tokens.unwrap_or(0) + self.cache_read_input_tokens.unwrap_or(0);
            self.input_tokens.map(|i| i + cached)
        })
    }
}

impl From<UsageView> for TokenUsage {
    fn from(u: UsageView) -> Self {
        Self { prompt: u.prompt().unwrap_or(0), completion: u.completion_tokens.or(u.output_tokens).unwrap_or(0) }
    }
}

#[derive(Deserialize)]
struct ResponseView {
    #[serde(default)]
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct ChunkView<'a> {
    /// Anthropic events name their type (`message_start`, `error`, …).
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChoiceView<'a>>>,
    #[serde(default)]
    usage: Option<UsageView>,
    /// Responses API events carry the response (with usage, at `response.completed`).
    #[serde(default)]
    response: Option<ResponseView>,
    /// Anthropic's `message_start` carries the message (with the prompt's usage).
    #[serde(default)]
    message: Option<ResponseView>,
    /// Responses API `*.delta` events: a string of new output; Anthropic's
    /// `content_block_delta`: an object with `text`, `partial_json` or `thinking`.
    #[serde(default, borrow)]
    delta: Option<&'a RawValue>,
}

/// The new output in an Anthropic `content_block_delta`.
#[derive(Deserialize)]
struct BlockDeltaView<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    /// Legacy completions stream text here.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// What one event tells the meter.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EventInfo {
    pub usage: Option<TokenUsage>,
    /// `usage` came without prompt tokens (Anthropic's `message_delta`): its prompt is the
    /// one `message_start` reported.
    pub usage_lacks_prompt: bool,
    /// Anthropic's `message_start`: the prompt tokens, known before any output.
    pub prompt_reported: Option<u64>,
    /// The extra chunk that exists only because the gateway asked for usage.
    pub usage_only: bool,
    /// Bytes of generated text in this event (for estimates when usage never comes).
    pub output_bytes: u64,
    /// Anthropic's `error` event: the upstream failed mid-stream.
    pub failed: bool,
    /// Anthropic's `message_stop`: the stream's clean end.
    pub stopped: bool,
}

/// Whether a response's `Content-Type` says server-sent events.
pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Finds the end of the first complete event in `buf`: the index just past its blank line.
pub(crate) fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn inspect_event(event: &[u8]) -> EventInfo {
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
    if data.is_empty() || data.as_ref() == b"[DONE]" {
        return EventInfo::default();
    }
    let Ok(chunk) = serde_json::from_slice::<ChunkView<'_>>(&data) else {
        return EventInfo::default();
    };
    let mut output_bytes = 0u64;
    let mut no_choices = false;
    if let Some(choices) = &chunk.choices {
        no_choices = choices.is_empty();
        for c in choices {
            let delta = c.delta.as_ref().and_then(|d| d.content.as_deref()).unwrap_or("");
            output_bytes += (delta.len() + c.text.as_deref().unwrap_or("").len()) as u64;
        }
    }
    if let Some(d) = chunk.delta {
        if d.get().starts_with('"') {
            output_bytes += d.get().len().saturating_sub(2) as u64;
        } else if let Ok(block) = serde_json::from_str::<BlockDeltaView<'_>>(d.get()) {
            let len = |s: &Option<Cow<'_, str>>| s.as_deref().map_or(0, str::len) as u64;
            output_bytes += len(&block.text) + len(&block.partial_json) + len(&block.thinking);
        }
    }
    let usage = chunk.usage.or(chunk.response.and_then(|r| r.usage));
    let usage_lacks_prompt = usage.as_ref().is_some_and(|u| u.prompt().is_none());
    let prompt_reported = chunk.message.and_then(|m| m.usage).and_then(|u| u.prompt());
    let usage = usage.map(TokenUsage::from);
    let kind = chunk.kind.as_deref();
    EventInfo {
        usage_only: usage.is_some() && no_choices,
        usage,
        usage_lacks_prompt,
        prompt_reported,
        output_bytes,
        failed: kind == Some("error"),
        stopped: kind == Some("message_stop"),
    }
}

/// Usage from a complete JSON response body, if it has any.
pub(crate) fn json_usage(body: &[u8]) -> Option<TokenUsage> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        usage: Option<UsageView>,
    }
    serde_json::from_slice::<Body>(body).ok()?.usage.map(TokenUsage::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_event_boundaries() {
        assert_eq!(event_end(b"data: x\n\ndata: y"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: x\n"), None);
    }

    #[test]
    fn reads_chat_chunks() {
        let e = inspect_event(br#"data: {"choices":[{"index":0,"delta":{"content":"Hello"}}],"usage":null}"#);
        assert_eq!(e, EventInfo { output_bytes: 5, ..EventInfo::default() });
        let e = inspect_event(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n",
        );
        assert_eq!(e.usage, Some(TokenUsage { prompt: 9, completion: 3 }));
        assert!(e.usage_only);
        assert_eq!(inspect_event(b"data: [DONE]\n\n"), EventInfo::default());
        assert_eq!(inspect_event(b": keep-alive\n\n"), EventInfo::default());
    }

    #[test]
    fn reads_responses_api_events() {
        let e = inspect_event(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi there\"}\n\n");
        assert_eq!(e.output_bytes, 8);
        let e = inspect_event(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":2}}}\n\n");
        assert_eq!(e.usage, Some(TokenUsage { prompt: 4, completion: 2 }));
        assert!(!e.usage_only);
    }

    #[test]
    fn reads_anthropic_events() {
        let start = inspect_event(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":20,\"output_tokens\":1}}}\n\n");
        assert_eq!(start, EventInfo { prompt_reported: Some(35), ..EventInfo::default() });
        let text = inspect_event(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n");
        assert_eq!(text.output_bytes, 5);
        let json = inspect_event(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\"\"}}\n\n");
        assert_eq!(json.output_bytes, 4);
        let delta = inspect_event(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n");
        assert_eq!(delta.usage, Some(TokenUsage { prompt: 0, completion: 15 }));
        assert!(delta.usage_lacks_prompt && !delta.usage_only);
        let stop = inspect_event(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert_eq!(stop, EventInfo { stopped: true, ..EventInfo::default() });
        let error = inspect_event(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        assert_eq!(error, EventInfo { failed: true, ..EventInfo::default() });
    }

    #[test]
    fn reads_json_usage() {
        assert_eq!(
            json_usage(br#"{"type":"message","usage":{"input_tokens":3,"cache_read_input_tokens":4,"cache_creation_input_tokens":2,"output_tokens":9}}"#),
            Some(TokenUsage { prompt: 9, completion: 9 }),
            "Anthropic's cache reads and writes are prompt tokens"
        );
        assert_eq!(
            json_usage(br#"{"id":"x","choices":[{"message":{"content":"\"usage\":1"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#),
            Some(TokenUsage { prompt: 1, completion: 2 })
        );
        assert_eq!(
            json_usage(br#"{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}"#),
            Some(TokenUsage { prompt: 7, completion: 0 })
        );
        assert_eq!(json_usage(b"not json"), None);
    }
}
