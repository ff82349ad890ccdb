//! The request direction: OpenAI chat completions and embeddings as Gemini bodies, each
//! client mistake (or what Gemini cannot express) a 400 naming the field.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tollgate_core::ApiError;

use super::*;

pub(super) fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// Contents in order, consecutive turns of one role merged (Gemini wants them alternating).
#[derive(Default)]
pub(super) struct Contents(Vec<(&'static str, Vec<Value>)>);

impl Contents {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => self.0.push((role, parts)),
        }
    }
}

pub(super) fn chat_request(req: &Map<String, Value>) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("'messages' must be a non-empty array.", "messages"))?;
    let mut system = Vec::new();
    let mut contents = Contents::default();
    // Tool results name their call by id; Gemini wants the function's name.
    let mut tool_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" => system.extend(text_parts(content, i)?),
            "user" => contents.push("user", user_parts(content, i)?),
            "assistant" => {
                let mut parts = text_parts(content, i)?;
                for (j, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let f = &call["function"];
                    let (id, name) = (call["id"].as_str().unwrap_or_default(), f["name"].as_str().unwrap_or_default());
                    if name.is_empty() {
                        return Err(invalid(
                            format!("messages[{i}].tool_calls[{j}].function.name is required."),
                            "messages",
                        ));
                    }
                    tool_names.insert(id, name);
                    let signature = call["extra_content"]["google"]["thought_signature"].as_str();
                    parts.push(function_call(name, &f["arguments"], signature, i)?);
                }
                if let Some(f) = m.get("function_call").filter(|f| !f.is_null()) {
                    let name = f["name"].as_str().unwrap_or_default();
                    parts.push(function_call(name, &f["arguments"], None, i)?);
                }
                contents.push("model", parts);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let name = tool_names.get(id).copied().ok_or_else(|| {
                    invalid(
                        format!("messages[{i}].tool_call_id {id:?} does not match a tool call of an earlier assistant message."),
                        "messages",
                    )
                })?;
                contents.push("user", vec![function_response(name, content, i)?]);
            }
            "function" => {
                let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    return Err(invalid(format!("messages[{i}].name is required for role \"function\"."), "messages"));
                }
                contents.push("user", vec![function_response(name, content, i)?]);
            }
            other => {
                return Err(invalid(
                    format!("messages[{i}].role {other:?} is not supported for Gemini models."),
                    "messages",
                ));
            }
        }
    }
    if contents.0.is_empty() {
        return Err(invalid("'messages' must contain at least one user or assistant message.", "messages"));
    }
    let mut out = Map::new();
    let contents: Vec<Value> =
        contents.0.into_iter().map(|(role, parts)| json!({ "role": role, "parts": parts })).collect();
    out.insert("contents".into(), contents.into());
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if let Some(tools) = tools(req)? {
        out.insert("tools".into(), tools);
    }
    if let Some(choice) = tool_choice(req)? {
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": choice }));
    }
    let config = generation_config(req)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), config.into());
    }
    Ok(out.into())
}

/// Text-only content (system prompts, assistant turns): a string or text parts.
pub(super) fn text_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ApiError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p["type"] != "refusal")
            .map(|p| match (p["type"].as_str(), p["text"].as_str()) {
                (Some("text"), Some(t)) => Ok(json!({ "text": t })),
                _ => Err(invalid(format!("messages[{i}].content: only text parts are allowed here."), "messages")),
            })
            .collect(),
        Some(_) => Err(invalid(format!("messages[{i}].content must be a string or an array of parts."), "messages")),
    }
}

pub(super) fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ApiError> {
    let Some(Value::Array(parts)) = content else {
        return text_parts(content, i);
    };
    parts
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let at = format!("messages[{i}].content[{j}]");
            match p["type"].as_str() {
                Some("text") => p["text"]
                    .as_str()
                    .map(|t| json!({ "text": t }))
                    .ok_or_else(|| invalid(format!("{at}.text is required."), "messages")),
                Some("image_url") => {
                    let url = p["image_url"]["url"].as_str().or(p["image_url"].as_str()).unwrap_or_default();
                    inline_data(url).ok_or_else(|| {
                        invalid(
                            format!(
                                "{at}: Gemini models take images as base64 data: URLs (data:image/png;base64,…); the \
                                 gateway does not fetch remote URLs — download the image and send it inline."
                            ),
                            "messages",
                        )
                    })
                }
                Some("input_audio") => {
                    let audio = &p["input_audio"];
                    match (audio["data"].as_str(), audio["format"].as_str()) {
                        (Some(data), Some(format)) => {
                            Ok(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }))
                        }
                        _ => Err(invalid(format!("{at}.input_audio needs data and format."), "messages")),
                    }
                }
                Some("file") => p["file"]["file_data"].as_str().and_then(inline_data).ok_or_else(|| {
                    invalid(
                        format!("{at}.file: Gemini models take files as base64 data: URLs in file_data."),
                        "messages",
                    )
                }),
                other => Err(invalid(
                    format!("{at}: part type {:?} is not supported for Gemini models.", other.unwrap_or("")),
                    "messages",
                )),
            }
        })
        .collect()
}

/// `data:{mime};base64,{data}` → Gemini's `inlineData`.
pub(super) fn inline_data(url: &str) -> Option<Value> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = mime.split(';').next().filter(|m| !m.is_empty())?;
    Some(json!({ "inlineData": { "mimeType": mime, "data": data } }))
}

pub(super) fn function_call(
    name: &str,
    arguments: &Value,
    signature: Option<&str>,
    i: usize,
) -> Result<Value, ApiError> {
    let args = match arguments {
        Value::Null => json!({}),
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str::<Value>(s).map_err(|_| {
            invalid(format!("messages[{i}]: the arguments of tool call {name:?} are not valid JSON."), "messages")
        })?,
        other => other.clone(),
    };
    if !args.is_object() {
        return Err(invalid(
            format!("messages[{i}]: the arguments of tool call {name:?} must be a JSON object."),
            "messages",
        ));
    }
    let mut part = json!({ "functionCall": { "name": name, "args": args } });
    if let Some(sig) = signature {
        part["thoughtSignature"] = sig.into();
    }
    Ok(part)
}

/// A tool's result: a JSON object as it is; anything else as `{"result": …}` (Gemini
/// wants an object).
pub(super) fn function_response(name: &str, content: Option<&Value>, i: usize) -> Result<Value, ApiError> {
    let text = match content {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        Some(_) => return Err(invalid(format!("messages[{i}].content must be a string or text parts."), "messages")),
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "result": v }),
        Err(_) => json!({ "result": text }),
    };
    Ok(json!({ "functionResponse": { "name": name, "response": response } }))
}

pub(super) fn tools(req: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    let Some(tools) = req.get("tools").filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let tools = tools.as_array().ok_or_else(|| invalid("'tools' must be an array.", "tools"))?;
    let mut declarations = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let f = &t["function"];
        let name = f["name"].as_str().filter(|n| !n.is_empty());
        let (Some("function"), Some(name)) = (t["type"].as_str(), name) else {
            return Err(invalid(format!("tools[{i}]: Gemini models take function tools with a name only."), "tools"));
        };
        let mut d = json!({ "name": name });
        if let Some(desc) = f["description"].as_str() {
            d["description"] = desc.into();
        }
        // JSON Schema as the client wrote it: Gemini's `parameters` takes only an OpenAPI
        // subset, `parametersJsonSchema` takes JSON Schema.
        if let Some(schema) = f.get("parameters").filter(|p| !p.is_null()) {
            d["parametersJsonSchema"] = schema.clone();
        }
        declarations.push(d);
    }
    Ok((!declarations.is_empty()).then(|| json!([{ "functionDeclarations": declarations }])))
}

pub(super) fn tool_choice(req: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    Ok(match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => json!({ "mode": "NONE" }),
            "auto" => json!({ "mode": "AUTO" }),
            "required" => json!({ "mode": "ANY" }),
            other => {
                return Err(invalid(
                    format!("tool_choice {other:?} is not one of none, auto, required."),
                    "tool_choice",
                ));
            }
        }),
        Some(v) => match v["function"]["name"].as_str() {
            Some(name) if v["type"] == "function" => Some(json!({ "mode": "ANY", "allowedFunctionNames": [name] })),
            _ => {
                return Err(invalid(
                    "tool_choice must name a function: {\"type\":\"function\",\"function\":{\"name\":…}}.",
                    "tool_choice",
                ));
            }
        },
    })
}

pub(super) fn generation_config(req: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let number = |field: &str| -> Result<Option<Value>, ApiError> {
        match req.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
            Some(_) => Err(invalid(format!("'{field}' must be a number."), field)),
        }
    };
    let max_tokens = match number("max_completion_tokens")? {
        Some(v) => Some(v),
        None => number("max_tokens")?,
    };
    for (value, to) in [
        (max_tokens, "maxOutputTokens"),
        (number("temperature")?, "temperature"),
        (number("top_p")?, "topP"),
        (number("presence_penalty")?, "presencePenalty"),
        (number("frequency_penalty")?, "frequencyPenalty"),
        (number("seed")?, "seed"),
    ] {
        if let Some(v) = value {
            out.insert(to.into(), v);
        }
    }
    match req.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            out.insert("stopSequences".into(), a.clone().into());
        }
        Some(_) => return Err(invalid("'stop' must be a string or an array of strings.", "stop")),
    }
    match req.get("n") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(1) => {}
            Some(n @ 2..=MAX_CANDIDATES) => {
                out.insert("candidateCount".into(), n.into());
            }
            _ => return Err(invalid(format!("'n' must be between 1 and {MAX_CANDIDATES} for Gemini models."), "n")),
        },
    }
    match req.get("response_format").filter(|f| !f.is_null()) {
        None => {}
        Some(f) => match f["type"].as_str() {
            Some("text") => {}
            Some("json_object") => {
                out.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                out.insert("responseMimeType".into(), "application/json".into());
                if let Some(schema) = f["json_schema"].get("schema").filter(|s| !s.is_null()) {
                    out.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {
                return Err(invalid(
                    "response_format.type must be text, json_object or json_schema.",
                    "response_format",
                ));
            }
        },
    }
    Ok(out)
}

pub(super) fn embeddings_request(req: &Map<String, Value>, upstream_model: &str) -> Result<(Value, Reply), ApiError> {
    let inputs: Vec<&str> = match req.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    invalid("Gemini models embed text: 'input' must be a string or an array of strings.", "input")
                })
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("'input' must be a string or a non-empty array of strings.", "input")),
    };
    if inputs.len() > MAX_EMBED_INPUTS {
        return Err(invalid(format!("Gemini models embed at most {MAX_EMBED_INPUTS} inputs per request."), "input"));
    }
    if inputs.iter().any(|s| s.is_empty()) {
        return Err(invalid("'input' must not contain empty strings.", "input"));
    }
    let dimensions = match req.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| invalid("'dimensions' must be a positive integer.", "dimensions"))?,
        ),
    };
    let base64 = match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(format!("encoding_format {other:?} is not float or base64."), "encoding_format"));
        }
    };
    let model = format!("models/{upstream_model}");
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut r = json!({ "model": model, "content": { "parts": [{ "text": text }] } });
            if let Some(d) = dimensions {
                r["outputDimensionality"] = d.into();
            }
            r
        })
        .collect();
    let prompt_tokens = inputs.iter().map(|s| (s.len() as u64).div_ceil(4)).sum();
    Ok((json!({ "requests": requests }), Reply::Embeddings { inputs: inputs.len(), base64, prompt_tokens }))
}
