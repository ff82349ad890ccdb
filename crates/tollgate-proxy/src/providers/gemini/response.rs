//! Whole answers: Gemini's `GenerateContentResponse` and `batchEmbedContents` answers as
//! OpenAI `chat.completion` and embeddings lists.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_core::ids::random_base62;

use super::*;

pub(super) fn now_secs() -> i64 {
    tollgate_core::time::now_millis() / 1000
}

/// OpenAI's `usage` from Gemini's `usageMetadata`. Thinking is output the caller pays
/// for: it counts as completion tokens (and is shown as `reasoning_tokens`).
pub(super) fn usage(meta: &Value) -> Option<Value> {
    if !meta.is_object() {
        return None;
    }
    let count = |field: &str| meta[field].as_u64().unwrap_or(0);
    let prompt = count("promptTokenCount") + count("toolUsePromptTokenCount");
    let thoughts = count("thoughtsTokenCount");
    let completion = count("candidatesTokenCount") + thoughts;
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": count("cachedContentTokenCount") },
        "completion_tokens_details": { "reasoning_tokens": thoughts },
    }))
}

pub(super) fn finish_reason(gemini: &str, tool_calls: bool) -> &'static str {
    match gemini {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// A candidate's answer text (thought summaries left out) and its function calls as
/// OpenAI tool calls (without their stream `index`).
pub(super) fn read_parts(candidate: &Value) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in candidate["content"]["parts"].as_array().into_iter().flatten() {
        if let Some(fc) = p.get("functionCall") {
            calls.push(tool_call(fc, p["thoughtSignature"].as_str()));
        } else if p["thought"] != true
            && let Some(t) = p["text"].as_str()
        {
            text.push_str(t);
        }
    }
    (text, calls)
}

/// Gemini's thought signature rides along as Google's own OpenAI-compatible API carries it
/// (`extra_content.google.thought_signature`), so that clients sending it back keep
/// multi-turn function calling working on thinking models.
pub(super) fn tool_call(fc: &Value, signature: Option<&str>) -> Value {
    let id = fc["id"]
        .as_str()
        .filter(|i| !i.is_empty())
        .map_or_else(|| format!("call_{}", random_base62(24)), str::to_owned);
    let arguments = fc.get("args").filter(|a| !a.is_null()).map_or_else(|| "{}".to_owned(), Value::to_string);
    let mut call = json!({ "id": id, "type": "function", "function": { "name": fc["name"], "arguments": arguments } });
    if let Some(sig) = signature {
        call["extra_content"] = json!({ "google": { "thought_signature": sig } });
    }
    call
}

pub(super) fn candidate_index(c: &Value, position: usize) -> u64 {
    c["index"].as_u64().unwrap_or(position as u64)
}

pub(super) fn chat_response(body: &[u8], model: &str) -> Result<Bytes, BoxError> {
    let v: Value = serde_json::from_slice(body)?;
    let mut choices: Vec<Value> = Vec::new();
    for (position, c) in v["candidates"].as_array().into_iter().flatten().enumerate() {
        let (text, calls) = read_parts(c);
        let finish = finish_reason(c["finishReason"].as_str().unwrap_or("STOP"), !calls.is_empty());
        let content = if text.is_empty() && (!calls.is_empty() || finish == "content_filter") {
            Value::Null
        } else {
            text.into()
        };
        let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
        if !calls.is_empty() {
            message["tool_calls"] = calls.into();
        }
        choices.push(json!({
            "index": candidate_index(c, position), "message": message, "logprobs": null, "finish_reason": finish
        }));
    }
    if choices.is_empty() {
        // The prompt itself was blocked (`promptFeedback.blockReason`): no candidates.
        let message = json!({ "role": "assistant", "content": null, "refusal": null });
        choices.push(json!({ "index": 0, "message": message, "logprobs": null, "finish_reason": "content_filter" }));
    }
    let mut out = json!({
        "id": response_id(&v),
        "object": "chat.completion",
        "created": now_secs(),
        "model": v["modelVersion"].as_str().unwrap_or(model),
        "choices": choices,
    });
    if let Some(u) = usage(&v["usageMetadata"]) {
        out["usage"] = u;
    }
    Ok(Bytes::from(serde_json::to_vec(&out)?))
}

pub(super) fn response_id(v: &Value) -> String {
    match v["responseId"].as_str() {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-{}", random_base62(24)),
    }
}

pub(super) fn embeddings_response(
    body: &[u8],
    model: &str,
    inputs: usize,
    base64: bool,
    prompt_tokens: u64,
) -> Result<Bytes, BoxError> {
    #[derive(serde::Deserialize)]
    struct Batch {
        #[serde(default)]
        embeddings: Vec<Embedding>,
    }
    #[derive(serde::Deserialize)]
    struct Embedding {
        values: Vec<f32>,
    }
    let batch: Batch = serde_json::from_slice(body)?;
    if batch.embeddings.len() != inputs {
        return Err(format!("Gemini returned {} embeddings for {inputs} inputs", batch.embeddings.len()).into());
    }
    let data: Vec<Value> = batch
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(e.values)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    });
    Ok(Bytes::from(serde_json::to_vec(&out)?))
}
