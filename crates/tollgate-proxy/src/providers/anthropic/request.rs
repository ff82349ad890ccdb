//! The request direction: an OpenAI chat completion as a Messages API body, refusing
//! with a 400 naming the parameter what Anthropic cannot be told faithfully.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tollgate_core::ApiError;
use tollgate_core::model::Endpoint;

use crate::request::ParsedRequest;

/// The Messages API body for the client's request. Only chat completions can be served
/// here; `default_max_tokens` (the model's `max_output_tokens`) fills Anthropic's required
/// `max_tokens` when the client set none, which is also what the reservation assumed.
pub(crate) fn request_body(
    endpoint: Endpoint,
    parsed: &ParsedRequest,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Bytes, ApiError> {
    if endpoint != Endpoint::ChatCompletions {
        return Err(ApiError::invalid_request(format!(
            "The model '{}' is served by an Anthropic channel, which answers /v1/chat/completions only, not {}.",
            parsed.model,
            endpoint.path()
        ))
        .with_param("model"));
    }
    let req: Map<String, Value> = serde_json::from_slice(&parsed.body)
        .map_err(|_| ApiError::invalid_request("Request body must be a JSON object."))?;
    let max_tokens = parsed.max_tokens.unwrap_or(default_max_tokens);
    let out = translate_request(&req, upstream_model, max_tokens, parsed.stream)?;
    serde_json::to_vec(&out).map(Bytes::from).map_err(|_| ApiError::internal())
}

pub(crate) fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// A field that is set (present and not `null`).
pub(crate) fn present<'a>(req: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    req.get(key).filter(|v| !v.is_null())
}

pub(super) fn translate_request(
    req: &Map<String, Value>,
    upstream_model: &str,
    max_tokens: u64,
    stream: bool,
) -> Result<Value, ApiError> {
    reject_untranslatable(req)?;
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("max_tokens".into(), max_tokens.into());
    let (system, messages) = translate_messages(req.get("messages"))?;
    if let Some(system) = system {
        out.insert("system".into(), system.into());
    }
    out.insert("messages".into(), messages);
    if let Some(t) = present(req, "temperature") {
        // Anthropic's range is [0, 1], OpenAI's [0, 2]: rescaling would change the meaning.
        if !t.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)) {
            return Err(bad("temperature", "'temperature' must be a number between 0 and 1 for Anthropic models."));
        }
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = present(req, "top_p") {
        if !p.is_number() {
            return Err(bad("top_p", "'top_p' must be a number."));
        }
        out.insert("top_p".into(), p.clone());
    }
    if let Some(stop) = present(req, "stop") {
        let sequences = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
            _ => return Err(bad("stop", "'stop' must be a string or an array of strings.")),
        };
        if !sequences.is_empty() {
            out.insert("stop_sequences".into(), sequences.into());
        }
    }
    if let Some(tools) = present(req, "tools") {
        let tools = translate_tools(tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), tools.into());
        }
    }
    let parallel = present(req, "parallel_tool_calls").and_then(Value::as_bool);
    if let Some(choice) = translate_tool_choice(present(req, "tool_choice"), parallel, out.contains_key("tools"))? {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = present(req, "user") {
        let user = user.as_str().ok_or_else(|| bad("user", "'user' must be a string."))?;
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if stream {
        out.insert("stream".into(), true.into());
    }
    Ok(Value::Object(out))
}

/// Parameters with no Anthropic equivalent, refused when set to anything but their default.
pub(super) fn reject_untranslatable(req: &Map<String, Value>) -> Result<(), ApiError> {
    let set = |key: &str| present(req, key);
    let checks: [(&str, bool, &str); 12] = [
        ("n", set("n").is_some_and(|n| n.as_u64() != Some(1)), "Anthropic models return one choice: 'n' must be 1."),
        ("logprobs", set("logprobs").is_some_and(|v| v != &Value::Bool(false)), "Anthropic models return no logprobs."),
        ("top_logprobs", set("top_logprobs").is_some(), "Anthropic models return no logprobs."),
        (
            "response_format",
            set("response_format").is_some_and(|f| f.get("type").and_then(Value::as_str) != Some("text")),
            "Anthropic models do not take 'response_format'; describe the format in the prompt or use tools.",
        ),
        (
            "logit_bias",
            set("logit_bias").is_some_and(|b| b.as_object().is_none_or(|m| !m.is_empty())),
            "Anthropic models do not take 'logit_bias'.",
        ),
        (
            "presence_penalty",
            set("presence_penalty").is_some_and(|v| v.as_f64() != Some(0.0)),
            "Anthropic models do not take 'presence_penalty'.",
        ),
        (
            "frequency_penalty",
            set("frequency_penalty").is_some_and(|v| v.as_f64() != Some(0.0)),
            "Anthropic models do not take 'frequency_penalty'.",
        ),
        (
            "modalities",
            set("modalities").is_some_and(|m| m != &json!(["text"])),
            "Anthropic models answer with text only.",
        ),
        ("audio", set("audio").is_some(), "Anthropic models answer with text only."),
        ("prediction", set("prediction").is_some(), "Anthropic models do not take 'prediction'."),
        ("functions", set("functions").is_some(), "'functions' is deprecated; use 'tools'."),
        ("function_call", set("function_call").is_some(), "'function_call' is deprecated; use 'tool_choice'."),
    ];
    match checks.iter().find(|(_, refused, _)| *refused) {
        Some((param, _, message)) => Err(bad(*param, *message)),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// `system`/`developer` messages become the top-level `system`; the rest become strictly
/// alternating user/assistant turns (consecutive same-role messages merged, `tool`
/// messages turned into the user's `tool_result` blocks). Empty messages are left out.
pub(super) fn translate_messages(messages: Option<&Value>) -> Result<(Option<String>, Value), ApiError> {
    let messages = messages
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("messages", "'messages' must be a non-empty array."))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                system.extend(texts(content, &at)?.into_iter().filter(|t| !t.is_empty()));
                continue;
            }
            Some("user") => (Role::User, user_blocks(content, &at)?),
            Some("assistant") => (Role::Assistant, assistant_blocks(m, content, &at)?),
            Some("tool") => (Role::User, vec![tool_result(m, content, &at)?]),
            Some(other) => {
                let shown: String = other.chars().take(32).collect();
                return Err(bad(
                    format!("{at}.role"),
                    format!("Role '{shown}' is not supported for Anthropic models."),
                ));
            }
            None => return Err(bad(format!("{at}.role"), "Every message needs a 'role'.")),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(bad("messages", "'messages' needs at least one user or assistant message with content."));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let turns = turns.into_iter().map(|(role, content)| json!({ "role": role.as_str(), "content": content })).collect();
    Ok((system, Value::Array(turns)))
}

/// The texts of a content that may hold text only: a string or `text` parts.
pub(super) fn texts(content: &Value, at: &str) -> Result<Vec<String>, ApiError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match part.get("type").and_then(Value::as_str) {
                Some("text") => part_text(part, &format!("{at}.content[{j}]")),
                _ => Err(bad(format!("{at}.content[{j}].type"), "Only text parts are allowed in this message.")),
            })
            .collect(),
        _ => Err(bad(format!("{at}.content"), "'content' must be a string or an array of content parts.")),
    }
}

pub(super) fn part_text(part: &Value, at: &str) -> Result<String, ApiError> {
    part.get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{at}.text"), "A text part needs a string 'text'."))
}

pub(super) fn text_block(text: String) -> Value {
    json!({ "type": "text", "text": text })
}

pub(super) fn user_blocks(content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let Value::Array(parts) = content else {
        return Ok(texts(content, at)?.into_iter().filter(|t| !t.is_empty()).map(text_block).collect());
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = part_text(part, &at)?;
                if !text.is_empty() {
                    blocks.push(text_block(text));
                }
            }
            Some("image_url") => blocks.push(image_block(part, &at)?),
            _ => {
                return Err(bad(
                    format!("{at}.type"),
                    "Only 'text' and 'image_url' content parts can be sent to Anthropic models.",
                ));
            }
        }
    }
    Ok(blocks)
}

/// `image_url` → a base64 image (data URL) or a URL image that Anthropic fetches itself.
pub(super) fn image_block(part: &Value, at: &str) -> Result<Value, ApiError> {
    let image = part.get("image_url");
    let url = image
        .and_then(|i| i.get("url").and_then(Value::as_str).or_else(|| i.as_str()))
        .ok_or_else(|| bad(format!("{at}.image_url.url"), "An image part needs 'image_url.url'."))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(',')
            .and_then(|(meta, data)| Some((meta.strip_suffix(";base64")?, data)))
            .filter(|(media_type, data)| media_type.starts_with("image/") && !data.is_empty())
            .ok_or_else(|| {
                bad(format!("{at}.image_url.url"), "A data URL image must look like 'data:image/png;base64,…'.")
            })?;
        return Ok(json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media_type, "data": data },
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(bad(format!("{at}.image_url.url"), "An image URL must be an http(s) URL or a base64 data URL."))
}

pub(super) fn assistant_blocks(m: &Value, content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    match content {
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part_text(part, &at)?,
                    Some("refusal") => part.get("refusal").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    _ => return Err(bad(format!("{at}.type"), "Assistant messages may hold text parts only.")),
                };
                if !text.is_empty() {
                    blocks.push(text_block(text));
                }
            }
        }
        other => blocks.extend(texts(other, at)?.into_iter().filter(|t| !t.is_empty()).map(text_block)),
    }
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(bad(format!("{at}.tool_calls"), "'tool_calls' must be an array.")),
    };
    for (j, call) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        if call.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(bad(format!("{at}.type"), "Only function tool calls can be sent to Anthropic models."));
        }
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad(format!("{at}.id"), "A tool call needs an 'id'."))?;
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}.function.name"), "A tool call needs 'function.name'."))?;
        let input = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => {
                serde_json::from_str::<Value>(s).ok().filter(Value::is_object).ok_or_else(|| {
                    bad(format!("{at}.function.arguments"), "Tool call arguments must be a JSON object (as a string).")
                })?
            }
            Some(object @ Value::Object(_)) => object.clone(),
            Some(_) => {
                return Err(bad(format!("{at}.function.arguments"), "Tool call arguments must be a JSON object."));
            }
        };
        blocks.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
    }
    Ok(blocks)
}

pub(super) fn tool_result(m: &Value, content: &Value, at: &str) -> Result<Value, ApiError> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(format!("{at}.tool_call_id"), "A tool message needs 'tool_call_id'."))?;
    let mut block = json!({ "type": "tool_result", "tool_use_id": id });
    match content {
        Value::String(s) if !s.is_empty() => block["content"] = s.clone().into(),
        Value::Array(_) => {
            let parts: Vec<Value> = texts(content, at)?.into_iter().filter(|t| !t.is_empty()).map(text_block).collect();
            if !parts.is_empty() {
                block["content"] = parts.into();
            }
        }
        Value::Null | Value::String(_) => {}
        _ => return Err(bad(format!("{at}.content"), "'content' must be a string or an array of text parts.")),
    }
    Ok(block)
}

pub(super) fn translate_tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let tools = tools.as_array().ok_or_else(|| bad("tools", "'tools' must be an array."))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
            return Err(bad(format!("tools[{i}].type"), "Only function tools can be sent to Anthropic models."));
        }
        let function = tool.get("function").filter(|f| f.is_object());
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("tools[{i}].function.name"), "A function tool needs 'function.name'."))?;
        let mut t = Map::new();
        t.insert("name".into(), name.into());
        if let Some(description) = function.and_then(|f| f.get("description")).and_then(Value::as_str) {
            t.insert("description".into(), description.into());
        }
        let schema = function
            .and_then(|f| f.get("parameters"))
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        t.insert("input_schema".into(), schema);
        out.push(Value::Object(t));
    }
    Ok(out)
}

/// `auto`/`none`/`required`/a named function → `auto`/`none`/`any`/`tool`;
/// `parallel_tool_calls: false` → `disable_parallel_tool_use`.
pub(super) fn translate_tool_choice(
    choice: Option<&Value>,
    parallel: Option<bool>,
    has_tools: bool,
) -> Result<Option<Value>, ApiError> {
    let mut out = match choice {
        None => {
            if parallel == Some(false) && has_tools {
                json!({ "type": "auto" })
            } else {
                return Ok(None);
            }
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({ "type": "auto" }),
            "none" => return Ok(Some(json!({ "type": "none" }))),
            "required" => json!({ "type": "any" }),
            _ => return Err(bad("tool_choice", "'tool_choice' must be 'auto', 'none', 'required' or a function.")),
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        "'tool_choice' must name a function: {\"type\":\"function\",\"function\":{\"name\":…}}.",
                    )
                })?;
            json!({ "type": "tool", "name": name })
        }
    };
    if parallel == Some(false) {
        out["disable_parallel_tool_use"] = true.into();
    }
    Ok(Some(out))
}
