//! Requests: a Messages API body into an OpenAI chat completion request — system turns,
//! user and assistant turns, images, tools and tool results, stop sequences — with what a
//! chat model cannot take faithfully refused as a 400 naming the parameter.

use super::*;

/// The chat completion request for a Messages request body. The public model id is kept
/// (the pipeline renames it per channel); `max_tokens` is required, as Anthropic requires it.
#[cfg(test)]
pub(crate) fn chat_request(body: &[u8]) -> Result<Bytes, ApiError> {
    let req = MessagesRequest::parse(body)?;
    translate(&req)
}

/// A Messages request body, parsed, with the fields every path needs checked.
#[derive(Debug)]
pub(crate) struct MessagesRequest {
    pub(super) fields: Map<String, Value>,
    max_tokens: u64,
}

/// A Messages API body (a message, or a token count) as a JSON object naming a model.
pub(crate) fn object_with_model(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let fields: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(if e.is_data() {
            "Request body must be a JSON object.".to_owned()
        } else {
            format!("Request body is not valid JSON: {e}")
        })
    })?;
    present(&fields, "model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("model", "model: Field required (a non-empty string)."))?;
    Ok(fields)
}

impl MessagesRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let fields = object_with_model(body)?;
        let max_tokens = present(&fields, "max_tokens")
            .ok_or_else(|| bad("max_tokens", "max_tokens: Field required."))?
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("max_tokens", "max_tokens: must be a positive integer."))?;
        match present(&fields, "stream") {
            None | Some(Value::Bool(_)) => Ok(Self { fields, max_tokens }),
            Some(_) => Err(bad("stream", "stream: must be a boolean.")),
        }
    }

    /// The public model id the client named.
    pub(crate) fn model(&self) -> &str {
        present(&self.fields, "model").and_then(Value::as_str).unwrap_or_default()
    }
}

/// The chat completion request for a parsed Messages request.
pub(crate) fn translate(req: &MessagesRequest) -> Result<Bytes, ApiError> {
    let MessagesRequest { fields: req, max_tokens } = req;
    let (model, max_tokens) = (present(req, "model").cloned().unwrap_or_default(), *max_tokens);
    reject_untranslatable(req)?;

    let mut out = Map::new();
    out.insert("model".into(), model);
    let mut messages = Vec::new();
    if let Some(system) = present(req, "system") {
        let text = texts(system, "system")?.join("\n\n");
        if !text.is_empty() {
            messages.push(json!({ "role": "system", "content": text }));
        }
    }
    translate_messages(present(req, "messages"), &mut messages)?;
    out.insert("messages".into(), messages.into());
    out.insert("max_tokens".into(), max_tokens.into());
    for number in ["temperature", "top_p"] {
        if let Some(v) = present(req, number) {
            if !v.is_number() {
                return Err(bad(number, format!("{number}: must be a number.")));
            }
            out.insert(number.into(), v.clone());
        }
    }
    if let Some(stop) = present(req, "stop_sequences") {
        let stop = stop
            .as_array()
            .filter(|s| s.iter().all(Value::is_string))
            .ok_or_else(|| bad("stop_sequences", "stop_sequences: must be an array of strings."))?;
        if !stop.is_empty() {
            out.insert("stop".into(), stop.clone().into());
        }
    }
    let has_tools = match present(req, "tools") {
        Some(tools) => {
            let tools = translate_tools(tools)?;
            let any = !tools.is_empty();
            if any {
                out.insert("tools".into(), tools.into());
            }
            any
        }
        None => false,
    };
    if let Some(choice) = present(req, "tool_choice") {
        translate_tool_choice(choice, has_tools, &mut out)?;
    }
    if let Some(user) = present(req, "metadata").and_then(|m| m.get("user_id")).filter(|u| !u.is_null()) {
        let user = user.as_str().ok_or_else(|| bad("metadata.user_id", "metadata.user_id: must be a string."))?;
        out.insert("user".into(), user.into());
    }
    if present(req, "stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), true.into());
        // The usage chunk becomes `message_delta.usage`; it is never shown as a chunk.
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    serde_json::to_vec(&out).map(Bytes::from).map_err(|_| ApiError::internal())
}

/// Parameters a chat completion cannot express, refused when set.
pub(super) fn reject_untranslatable(req: &Map<String, Value>) -> Result<(), ApiError> {
    if present(req, "top_k").is_some() {
        return Err(bad("top_k", "top_k: is not supported by this gateway for this model."));
    }
    if present(req, "thinking").is_some_and(|t| t.get("type").and_then(Value::as_str) != Some("disabled")) {
        return Err(bad("thinking", "thinking: extended thinking is not supported by this gateway."));
    }
    for key in ["mcp_servers", "container"] {
        if present(req, key).is_some() {
            return Err(bad(key, format!("{key}: is not supported by this gateway.")));
        }
    }
    Ok(())
}

/// A string, or an array of `text` blocks (as `system` and tool results may be).
pub(super) fn texts(content: &Value, at: &str) -> Result<Vec<String>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| match block_type(b) {
                Some("text") => block_text(b, &format!("{at}[{j}]")),
                _ => Err(bad(format!("{at}[{j}].type"), format!("{at}[{j}]: only text blocks are allowed here."))),
            })
            .collect(),
        _ => Err(bad(at, format!("{at}: must be a string or an array of text blocks."))),
    }
}

pub(super) fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

pub(super) fn block_text(block: &Value, at: &str) -> Result<String, ApiError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{at}.text"), format!("{at}.text: Field required (a string).")))
}

/// User turns become `user` messages (their `tool_result` blocks, which Anthropic puts
/// first, become the `tool` messages OpenAI expects right after the assistant's calls);
/// assistant turns become `assistant` messages with `tool_calls`.
pub(super) fn translate_messages(messages: Option<&Value>, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let messages = messages
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("messages", "messages: must be a non-empty array."))?;
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str) {
            Some("user") => user_message(content, &at, out)?,
            Some("assistant") => out.push(assistant_message(content, &at)?),
            _ => return Err(bad(format!("{at}.role"), format!("{at}.role: must be 'user' or 'assistant'."))),
        }
    }
    Ok(())
}

pub(super) fn user_message(content: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({ "role": "user", "content": s }));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(bad(format!("{at}.content"), format!("{at}.content: must be a string or an array."))),
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block_type(block) {
            Some("text") => parts.push(json!({ "type": "text", "text": block_text(block, &at)? })),
            Some("image") => parts.push(image_part(block, &at)?),
            Some("tool_result") => out.push(tool_message(block, &at)?),
            _ => {
                return Err(bad(
                    format!("{at}.type"),
                    format!("{at}: only text, image and tool_result blocks can be sent to this model."),
                ));
            }
        }
    }
    let content = match parts.as_slice() {
        [] => return Ok(()),
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({ "role": "user", "content": content }));
    Ok(())
}

/// A base64 image becomes a data URL; a URL image passes as its URL.
pub(super) fn image_part(block: &Value, at: &str) -> Result<Value, ApiError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let field = |name: &str| source.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => match (field("media_type"), field("data")) {
            (Some(media_type), Some(data)) if media_type.starts_with("image/") => {
                format!("data:{media_type};base64,{data}")
            }
            _ => {
                return Err(bad(
                    format!("{at}.source"),
                    format!("{at}.source: a base64 image needs an image/* media_type and data."),
                ));
            }
        },
        Some("url") => field("url")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| bad(format!("{at}.source.url"), format!("{at}.source.url: must be an http(s) URL.")))?
            .to_owned(),
        _ => {
            return Err(bad(
                format!("{at}.source.type"),
                format!("{at}.source.type: only base64 and url images can be sent to this model."),
            ));
        }
    };
    Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
}

pub(super) fn tool_message(block: &Value, at: &str) -> Result<Value, ApiError> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(format!("{at}.tool_use_id"), format!("{at}.tool_use_id: Field required.")))?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(content) => texts(content, &format!("{at}.content"))?.concat(),
    };
    // A chat model has no error flag on tool output: say it in the text.
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({ "role": "tool", "tool_call_id": id, "content": text }))
}

pub(super) fn assistant_message(content: &Value, at: &str) -> Result<Value, ApiError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({ "role": "assistant", "content": s })),
        Value::Array(blocks) => blocks,
        _ => return Err(bad(format!("{at}.content"), format!("{at}.content: must be a string or an array."))),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match block_type(block) {
            Some("text") => text.push_str(&block_text(block, &at)?),
            Some("tool_use") => {
                let field = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| bad(format!("{at}.{name}"), format!("{at}.{name}: Field required.")))
                };
                let input = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(input @ Value::Object(_)) => input.to_string(),
                    Some(_) => return Err(bad(format!("{at}.input"), format!("{at}.input: must be an object."))),
                };
                calls.push(json!({
                    "id": field("id")?,
                    "type": "function",
                    "function": { "name": field("name")?, "arguments": input },
                }));
            }
            // The model's own reasoning from an earlier turn: a chat model neither needs
            // nor accepts it.
            Some("thinking" | "redacted_thinking") => {}
            _ => {
                return Err(bad(
                    format!("{at}.type"),
                    format!("{at}: only text and tool_use blocks can be sent in assistant turns."),
                ));
            }
        }
    }
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) };
    let mut message = json!({ "role": "assistant", "content": content });
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    Ok(message)
}

pub(super) fn translate_tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let tools = tools.as_array().ok_or_else(|| bad("tools", "tools: must be an array."))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        if let Some(kind) = block_type(tool).filter(|t| *t != "custom") {
            let shown: String = kind.chars().take(64).collect();
            return Err(bad(format!("{at}.type"), format!("{at}: server tool '{shown}' is not available here.")));
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("{at}.name"), format!("{at}.name: Field required.")))?;
        let mut function = Map::new();
        function.insert("name".into(), name.into());
        if let Some(description) = tool.get("description").and_then(Value::as_str) {
            function.insert("description".into(), description.into());
        }
        let schema = tool
            .get("input_schema")
            .filter(|s| s.is_object())
            .cloned()
            .ok_or_else(|| bad(format!("{at}.input_schema"), format!("{at}.input_schema: Field required.")))?;
        function.insert("parameters".into(), schema);
        out.push(json!({ "type": "function", "function": function }));
    }
    Ok(out)
}

/// `auto`/`any`/`tool`/`none` → `auto`/`required`/a named function/`none`;
/// `disable_parallel_tool_use` → `parallel_tool_calls: false`.
pub(super) fn translate_tool_choice(
    choice: &Value,
    has_tools: bool,
    out: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let translated = match block_type(choice) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name", "tool_choice.name: Field required."))?;
            json!({ "type": "function", "function": { "name": name } })
        }
        _ => return Err(bad("tool_choice.type", "tool_choice.type: must be 'auto', 'any', 'tool' or 'none'.")),
    };
    // OpenAI refuses both without tools; Anthropic accepts them, so they are moot.
    if !has_tools {
        return Ok(());
    }
    out.insert("tool_choice".into(), translated);
    if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), false.into());
    }
    Ok(())
}
