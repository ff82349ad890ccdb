//! Unit tests of the Messages translation (requests, answers, streams, errors).
use super::*;

fn req(v: Value) -> Result<Value, ApiError> {
    chat_request(v.to_string().as_bytes()).map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn translates_system_turns_images_and_tools() {
    let out = req(json!({
        "model": "m", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9,
        "system": [{ "type": "text", "text": "Be brief." }, { "type": "text", "text": "Be kind." }],
        "stop_sequences": ["END"],
        "metadata": { "user_id": "u-1" },
        "tools": [{ "name": "get_weather", "description": "Weather", "input_schema": { "type": "object" } }],
        "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
        "messages": [
            { "role": "user", "content": [
                { "type": "text", "text": "Weather here?" },
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "AAAA" } },
                { "type": "image", "source": { "type": "url", "url": "https://x.test/a.png" } },
            ] },
            { "role": "assistant", "content": [
                { "type": "thinking", "thinking": "hmm", "signature": "s" },
                { "type": "text", "text": "Let me look." },
                { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Oslo" } },
            ] },
            { "role": "user", "content": [
                { "type": "tool_result", "tool_use_id": "toolu_1", "content": [{ "type": "text", "text": "rain" }] },
                { "type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true },
                { "type": "text", "text": "Thanks" },
            ] },
        ],
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "model": "m", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9,
            "stop": ["END"], "user": "u-1",
            "tools": [{ "type": "function", "function": {
                "name": "get_weather", "description": "Weather", "parameters": { "type": "object" } } }],
            "tool_choice": "required", "parallel_tool_calls": false,
            "messages": [
                { "role": "system", "content": "Be brief.\n\nBe kind." },
                { "role": "user", "content": [
                    { "type": "text", "text": "Weather here?" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } },
                    { "type": "image_url", "image_url": { "url": "https://x.test/a.png" } },
                ] },
                { "role": "assistant", "content": "Let me look.", "tool_calls": [{
                    "id": "toolu_1", "type": "function",
                    "function": { "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}" } }] },
                { "role": "tool", "tool_call_id": "toolu_1", "content": "rain" },
                { "role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom" },
                { "role": "user", "content": "Thanks" },
            ],
        })
    );
}

#[test]
fn streams_ask_for_usage_and_tool_choices_map() {
    let base = json!({ "model": "m", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
    let mut r = base.clone();
    r["stream"] = true.into();
    assert_eq!(req(r).unwrap()["stream_options"], json!({ "include_usage": true }));
    let tools = json!([{ "name": "f", "input_schema": { "type": "object" } }]);
    for (choice, expected) in [
        (json!({ "type": "auto" }), json!("auto")),
        (json!({ "type": "none" }), json!("none")),
        (json!({ "type": "tool", "name": "f" }), json!({ "type": "function", "function": { "name": "f" } })),
    ] {
        let mut r = base.clone();
        r["tools"] = tools.clone();
        r["tool_choice"] = choice;
        assert_eq!(req(r).unwrap()["tool_choice"], expected);
    }
}

#[test]
fn refuses_what_a_chat_model_cannot_take() {
    let base = json!({ "model": "m", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
    let cases: [(&str, Value, &str); 8] = [
        ("max_tokens", json!(null), "max_tokens"),
        ("max_tokens", json!(0), "max_tokens"),
        ("model", json!(""), "model"),
        ("top_k", json!(5), "top_k"),
        ("thinking", json!({ "type": "enabled", "budget_tokens": 1024 }), "thinking"),
        ("tools", json!([{ "type": "web_search_20250305", "name": "web_search" }]), "tools[0].type"),
        ("messages", json!([{ "role": "system", "content": "x" }]), "messages[0].role"),
        (
            "messages",
            json!([{ "role": "user", "content": [{ "type": "document", "source": {} }] }]),
            "messages[0].content[0].type",
        ),
    ];
    for (field, value, param) in cases {
        let mut r = base.clone();
        if value.is_null() {
            r.as_object_mut().unwrap().remove(field);
        } else {
            r[field] = value;
        }
        let e = req(r).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::InvalidRequest, Some(param)), "{field}");
    }
    assert_eq!(chat_request(b"{").unwrap_err().code, ErrorCode::InvalidRequest);
}

#[test]
fn a_completion_becomes_a_message() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "upstream-name",
        "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{ "id": "call_1", "type": "function",
                "function": { "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}" } }] } }],
        "usage": { "prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
            "prompt_tokens_details": { "cached_tokens": 2 } },
    });
    let m: Value = serde_json::from_slice(&message(body.to_string().as_bytes(), "msg_1", "public").unwrap()).unwrap();
    assert_eq!(
        m,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "public",
            "content": [
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "call_1", "name": "get_weather", "input": { "city": "Oslo" } },
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 2 },
        })
    );
    assert_eq!(stop_reason(Some("length")), "max_tokens");
    assert_eq!(stop_reason(Some("stop")), "end_turn");
}

/// `(event name, data)` of every event in `out`.
fn events(out: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(out).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            (name, serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap())
        })
        .collect()
}

fn run(chunks: &[Value]) -> Vec<(String, Value)> {
    let mut state = StreamState::new("msg_1".into(), "public".into());
    let mut out = Vec::new();
    for c in chunks {
        state.translate(format!("data: {c}\n\n").as_bytes(), &mut out);
    }
    state.translate(b"data: [DONE]\n\n", &mut out);
    events(&out)
}

#[test]
fn a_tool_call_stream_becomes_tool_use_blocks() {
    let c =
        |delta: Value, finish: Value| json!({ "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] });
    let evs = run(&[
        c(json!({ "role": "assistant", "content": "" }), Value::Null),
        c(json!({ "content": "Let me check." }), Value::Null),
        c(
            json!({ "tool_calls": [{ "index": 0, "id": "call_1", "type": "function",
                "function": { "name": "get_weather", "arguments": "" } }] }),
            Value::Null,
        ),
        c(json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"city\":" } }] }), Value::Null),
        c(json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "\"Oslo\"}" } }] }), Value::Null),
        c(json!({}), json!("tool_calls")),
        json!({ "choices": [], "usage": { "prompt_tokens": 9, "completion_tokens": 4 } }),
    ]);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(evs[0].1["message"]["id"], "msg_1");
    assert_eq!(evs[0].1["message"]["model"], "public");
    assert_eq!(evs[1].1["content_block"], json!({ "type": "text", "text": "" }));
    assert_eq!(evs[2].1["delta"], json!({ "type": "text_delta", "text": "Let me check." }));
    assert_eq!(
        evs[4].1,
        json!({ "type": "content_block_start", "index": 1,
            "content_block": { "type": "tool_use", "id": "call_1", "name": "get_weather", "input": {} } })
    );
    assert_eq!(evs[5].1["delta"], json!({ "type": "input_json_delta", "partial_json": "{\"city\":" }));
    assert_eq!(evs[7].1, json!({ "type": "content_block_stop", "index": 1 }));
    assert_eq!(
        evs[8].1,
        json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use", "stop_sequence": null },
            "usage": { "input_tokens": 9, "output_tokens": 4 } })
    );
}

#[test]
fn an_interrupted_stream_ends_with_an_error_event() {
    let mut state = StreamState::new("msg_1".into(), "m".into());
    let mut out = Vec::new();
    state.translate(br#"data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#, &mut out);
    state.translate(
        br#"data: {"error":{"message":"The upstream provider interrupted the stream.","type":"upstream_error"}}"#,
        &mut out,
    );
    state.translate(b"data: [DONE]\n\n", &mut out);
    let evs = events(&out);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["message_start", "content_block_start", "content_block_delta", "error"]);
    assert_eq!(evs[3].1["error"]["type"], "api_error");
}

#[test]
fn errors_take_anthropic_shape() {
    let res = error_response(&ApiError::new(ErrorCode::RateLimitExceeded { retry_after_secs: 3 }, "slow"));
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::RETRY_AFTER], "3");
    let res = relayed_error(StatusCode::BAD_REQUEST, br#"{"error":{"message":"bad thing"}}"#);
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}
