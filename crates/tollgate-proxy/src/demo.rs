//! The built-in `demo` provider: answers locally and deterministically, in OpenAI's exact
//! wire format, so a fresh install works with no account anywhere. Chat and completions
//! stream word by word; embeddings are unit vectors derived from a hash of the input.
//!
//! Token counts are words: a prompt costs its words plus 3 per message, a reply one token
//! per word. The demo produces the same bytes an upstream would, so metering, usage-chunk
//! hiding and billing run exactly as for a real provider.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use http::{Response, StatusCode, header};
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::{Value, json};
use tollgate_core::ApiError;
use tollgate_core::ids::random_base62;
use tollgate_core::model::Endpoint;

pub(crate) type DemoBody = StreamBody<Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>>;

const DEFAULT_DIMENSIONS: u64 = 256;
const MAX_DIMENSIONS: u64 = 4096;

/// Answers one request. `body` is what an upstream would receive (model already renamed,
/// `stream_options.include_usage` already set for streams).
pub(crate) fn respond(endpoint: Endpoint, body: &[u8], word_delay: Duration) -> Result<Response<DemoBody>, ApiError> {
    let req: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::invalid_request("Request body must be a JSON object."))?;
    let model = req["model"].as_str().unwrap_or_default().to_owned();
    match endpoint {
        Endpoint::ChatCompletions => {
            let messages = req["messages"].as_array().filter(|m| !m.is_empty()).ok_or_else(|| {
                ApiError::invalid_request("'messages' must be a non-empty array.").with_param("messages")
            })?;
            let prompt_tokens: u64 = messages.iter().map(|m| words(&message_text(m)) + 3).sum();
            let last_user = messages.iter().rev().find(|m| m["role"] == "user").map(message_text).unwrap_or_default();
            Ok(text_response(TextKind::Chat, &req, model, &last_user, prompt_tokens, word_delay))
        }
        Endpoint::Completions => {
            let prompt = match &req["prompt"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
                _ => {
                    return Err(ApiError::invalid_request("'prompt' must be a string or an array of strings.")
                        .with_param("prompt"));
                }
            };
            Ok(text_response(TextKind::Completion, &req, model, &prompt, words(&prompt), word_delay))
        }
        Endpoint::Embeddings => embeddings(&req, model),
        Endpoint::Responses | Endpoint::ImagesGenerations | Endpoint::Messages | Endpoint::Models => Err(
            ApiError::invalid_request("The demo provider serves chat completions, completions and embeddings only."),
        ),
    }
}

fn message_text(m: &Value) -> String {
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The deterministic reply to a prompt.
fn reply_words(prompt: &str) -> Vec<String> {
    let mut out: Vec<String> =
        "Hello! This is the Tollgate demo model, answering locally without any provider account. You said:"
            .split(' ')
            .map(str::to_owned)
            .collect();
    let echoed: Vec<&str> = prompt.split_whitespace().take(12).collect();
    if echoed.is_empty() {
        out.push("nothing.".to_owned());
    } else {
        out.extend(echoed.iter().map(|w| (*w).to_owned()));
    }
    out
}

#[derive(Clone, Copy)]
enum TextKind {
    Chat,
    Completion,
}

fn text_response(
    kind: TextKind,
    req: &Value,
    model: String,
    prompt: &str,
    prompt_tokens: u64,
    delay: Duration,
) -> Response<DemoBody> {
    let mut reply = reply_words(prompt);
    let limit = req["max_completion_tokens"].as_u64().or(req["max_tokens"].as_u64());
    let mut finish = "stop";
    if let Some(limit) = limit.filter(|&l| (l as usize) < reply.len()) {
        reply.truncate(limit as usize);
        finish = "length";
    }
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": reply.len(),
        "total_tokens": prompt_tokens + reply.len() as u64,
    });
    let created = tollgate_core::time::now_millis() / 1000;
    let (id, object, chunk_object) = match kind {
        TextKind::Chat => (format!("chatcmpl-{}", random_base62(24)), "chat.completion", "chat.completion.chunk"),
        TextKind::Completion => (format!("cmpl-{}", random_base62(24)), "text_completion", "text_completion"),
    };
    let choice = |text: Option<&str>, finish: Option<&str>, first: bool| match kind {
        TextKind::Chat => {
            let delta = match (first, text) {
                (true, _) => json!({ "role": "assistant", "content": "" }),
                (false, Some(t)) => json!({ "content": t }),
                (false, None) => json!({}),
            };
            json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
        }
        TextKind::Completion => {
            json!({ "text": text.unwrap_or(""), "index": 0, "logprobs": null, "finish_reason": finish })
        }
    };

    if req["stream"].as_bool() != Some(true) {
        let text = reply.join(" ");
        let choice = match kind {
            TextKind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text, "refusal": null, "annotations": [] },
                "logprobs": null,
                "finish_reason": finish,
            }),
            TextKind::Completion => {
                json!({ "text": text, "index": 0, "logprobs": null, "finish_reason": finish })
            }
        };
        let body = json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": [choice], "usage": usage, "system_fingerprint": null,
        });
        return json_body(StatusCode::OK, &body);
    }

    let include_usage = req["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |choices: Value, usage: Value| {
        let mut c = json!({
            "id": id, "object": chunk_object, "created": created, "model": model,
            "system_fingerprint": null, "choices": choices,
        });
        if include_usage {
            c["usage"] = usage;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut events: Vec<Bytes> = Vec::with_capacity(reply.len() + 4);
    if matches!(kind, TextKind::Chat) {
        events.push(chunk(json!([choice(None, None, true)]), Value::Null));
    }
    for (i, w) in reply.iter().enumerate() {
        let piece = if i == 0 { w.clone() } else { format!(" {w}") };
        events.push(chunk(json!([choice(Some(&piece), None, false)]), Value::Null));
    }
    events.push(chunk(json!([choice(None, Some(finish), false)]), Value::Null));
    if include_usage {
        events.push(chunk(json!([]), usage));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));

    let stream = stream::iter(events.into_iter().enumerate()).then(move |(i, ev)| async move {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, Infallible>(Frame::data(ev))
    });
    let mut res = Response::new(StreamBody::new(Box::pin(stream) as Pin<Box<dyn Stream<Item = _> + Send>>));
    res.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    res
}

fn embeddings(req: &Value, model: String) -> Result<Response<DemoBody>, ApiError> {
    let bad_input = || {
        ApiError::invalid_request("'input' must be a string, an array of strings, or an array of token arrays.")
            .with_param("input")
    };
    let inputs: Vec<(String, u64)> = match &req["input"] {
        Value::String(s) => vec![(s.clone(), words(s))],
        Value::Array(items) if !items.is_empty() => {
            if items.iter().all(Value::is_string) {
                items.iter().filter_map(Value::as_str).map(|s| (s.to_owned(), words(s))).collect()
            } else if items.iter().all(Value::is_u64) {
                vec![(Value::Array(items.clone()).to_string(), items.len() as u64)]
            } else if items.iter().all(|i| i.as_array().is_some_and(|a| a.iter().all(Value::is_u64))) {
                items.iter().map(|a| (a.to_string(), a.as_array().map_or(0, Vec::len) as u64)).collect()
            } else {
                return Err(bad_input());
            }
        }
        _ => return Err(bad_input()),
    };
    let dims = match &req["dimensions"] {
        Value::Null => DEFAULT_DIMENSIONS,
        v => v.as_u64().filter(|d| (1..=MAX_DIMENSIONS).contains(d)).ok_or_else(|| {
            ApiError::invalid_request(format!("'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}."))
                .with_param("dimensions")
        })?,
    };
    let base64 = match req["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::invalid_request("'encoding_format' must be 'float' or 'base64'.")
                .with_param("encoding_format"));
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            let v = embedding_vector(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|(_, t)| t).sum();
    let body = json!({
        "object": "list", "data": data, "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    });
    Ok(json_body(StatusCode::OK, &body))
}

/// A unit vector that depends only on `text` and `dims`.
pub(crate) fn embedding_vector(text: &str, dims: u64) -> Vec<f32> {
    // FNV-1a for the seed, SplitMix64 for the stream: fixed, portable, no dependency.
    let seed = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut state = seed;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn json_body(status: StatusCode, body: &Value) -> Response<DemoBody> {
    let bytes = Bytes::from(body.to_string());
    let stream = stream::once(async move { Ok::<_, Infallible>(Frame::data(bytes)) });
    let mut res = Response::new(StreamBody::new(Box::pin(stream) as Pin<Box<dyn Stream<Item = _> + Send>>));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding_vector("hello", 64);
        assert_eq!(a, embedding_vector("hello", 64));
        assert_ne!(a, embedding_vector("hello!", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn reply_echoes_the_prompt() {
        let r = reply_words("what is a gateway").join(" ");
        assert!(r.ends_with("You said: what is a gateway"), "{r}");
    }
}
