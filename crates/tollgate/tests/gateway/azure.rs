//! The `azure` provider end to end, and the extra headers of `openai` providers: the real
//! server in front of a second fake OpenAI upstream that also answers Azure's
//! `/openai/deployments/{deployment}/…?api-version=…` paths with the `api-key` header.

use std::io;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tollgate_testkit::app::TestApp;
use tollgate_testkit::client::{Answer, sse_data};
use tollgate_testkit::fake_openai::{Behavior, FakeOpenAi, REPLY_TEXT};

/// The Azure key only the fake knows; it must travel in `api-key` and nowhere else.
const AZURE_KEY: &str = "azure-fake-key-0123456789abcdef";
const API_VERSION: &str = "2024-10-21";

struct AzureApp {
    app: TestApp,
    /// Serves the `az` and `oa` providers (the app's own fake serves `fake`).
    upstream: FakeOpenAi,
    key: String,
}

/// The default app plus an `azure` provider `az` (deployments `chat-deploy` and
/// `embed-deploy`, serving `az-chat` and `az-embed`) and an `openai` provider `oa` with an
/// organization, a project and a custom header (serving `oa-chat`), both in front of
/// `upstream`.
async fn azure_app() -> AzureApp {
    let upstream = FakeOpenAi::start().await;
    let extra = format!(
        r#"
[[providers]]
name = "az"
kind = "azure"
base_url = "{azure_url}"
api_version = "{API_VERSION}"
api_key = "{AZURE_KEY}"
headers = {{ "X-Tenant" = "blue" }}

[[providers]]
name = "oa"
kind = "openai"
base_url = "{openai_url}"
api_key = "sk-oa-upstream"
organization = "org-tollgate"
project = "proj_gateway"
headers = {{ "X-Custom" = "v", "HTTP-Referer" = "https://tollgate.example" }}

[[models]]
id = "az-chat"
type = "chat"
input_price_per_mtok = 1.0
output_price_per_mtok = 10.0
channels = [{{ provider = "az", model = "chat-deploy" }}]

[[models]]
id = "az-embed"
type = "embedding"
input_price_per_mtok = 2.0
channels = [{{ provider = "az", model = "embed-deploy" }}]

[[models]]
id = "oa-chat"
type = "chat"
channels = [{{ provider = "oa" }}]
"#,
        azure_url = upstream.azure_base_url(),
        openai_url = upstream.base_url(),
    );
    let app = TestApp::start_with(&extra).await.unwrap();
    let key = app.create_key("azure").await.unwrap();
    AzureApp { app, upstream, key }
}

impl AzureApp {
    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.app.client.post_json(&self.app.url(path), Some(&self.key), body).await.unwrap()
    }
}

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hello there" }] })
}

#[tokio::test]
async fn azure_chat_goes_to_the_deployment_with_api_key_and_version_and_is_billed() {
    let a = azure_app().await;
    let res = a.post("/v1/chat/completions", &chat("az-chat")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY_TEXT);
    assert_eq!((&body["usage"]["prompt_tokens"], &body["usage"]["completion_tokens"]), (&json!(3), &json!(5)));

    let sent = a.upstream.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/openai/deployments/chat-deploy/chat/completions");
    assert_eq!(sent[0].query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(sent[0].headers["api-key"], AZURE_KEY);
    assert!(sent[0].headers.get("authorization").is_none(), "Azure gets no Authorization header");
    assert_eq!(sent[0].headers["x-tenant"], "blue");
    assert!(!format!("{:?}", sent[0].headers).contains(&a.key), "the client's key must not reach Azure");
    assert_eq!(sent[0].body["model"], "chat-deploy", "the body names the deployment");
    assert!(a.app.fake.requests().is_empty(), "nothing went to the default provider");

    let row = a.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.stream), (3, 5, false));
    // 3 × $1 + 5 × $10 per million tokens.
    assert_eq!((row.cost.0, row.billing_reason.as_str()), (53, "completed"));
    assert_eq!((row.model.as_deref(), row.provider.as_deref()), (Some("az-chat"), Some("az")));
}

#[tokio::test]
async fn azure_streams_are_relayed_and_billed_from_their_usage_chunk() {
    let a = azure_app().await;
    let mut req = chat("az-chat");
    req["stream"] = true.into();
    let res = a.post("/v1/chat/completions", &req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let events = sse_data(&res.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "usage-only chunk must be hidden");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY_TEXT);

    let sent = &a.upstream.requests()[0];
    assert_eq!(sent.path, "/openai/deployments/chat-deploy/chat/completions");
    assert_eq!(sent.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(sent.headers["api-key"], AZURE_KEY);
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.body["stream_options"]["include_usage"], true, "the gateway asks for usage to bill");

    let row = a.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.stream), (3, 5, true));
    assert_eq!((row.cost.0, row.billing_reason.as_str()), (53, "completed"));
    assert!(row.ttft_ms.is_some());
}

#[tokio::test]
async fn azure_embeddings_go_to_the_embedding_deployment() {
    let a = azure_app().await;
    let res = a.post("/v1/embeddings", &json!({ "model": "az-embed", "input": "hello there world" })).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["usage"]["prompt_tokens"], 3);
    let sent = &a.upstream.requests()[0];
    assert_eq!(sent.path, "/openai/deployments/embed-deploy/embeddings");
    assert_eq!(sent.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(sent.headers["api-key"], AZURE_KEY);
    assert!(sent.headers.get("authorization").is_none());

    let row = a.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (3, 0));
    assert_eq!((row.cost.0, row.billing_reason.as_str()), (6, "completed"), "3 × $2 per million");
}

/// Server logs, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn azure_errors_map_like_openai_ones_and_responses_are_refused() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let a = azure_app().await;
    for (behavior, status, code) in [
        (Behavior::Status(503), 502, "upstream_error"),
        (Behavior::Status(401), 502, "upstream_error"),
        (Behavior::Status(429), 429, "rate_limit_exceeded"),
    ] {
        a.upstream.set_behavior(behavior.clone());
        let res = a.post("/v1/chat/completions", &chat("az-chat")).await;
        assert_eq!((res.status.as_u16(), res.error_code()), (status, code.to_owned()), "{behavior:?}: {}", res.text());
        assert!(!res.text().contains(AZURE_KEY));
        let row = a.app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
        assert_eq!((row.status, row.cost.0, row.billing_reason.as_str()), (status, 0, "not_billed"), "{behavior:?}");
    }
    // The request's own mistake is relayed as the provider worded it.
    a.upstream.set_behavior(Behavior::Normal);
    let res = a.post("/v1/chat/completions", &json!({ "model": "az-chat" })).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"]["param"], "messages");

    // Azure serves the Responses API elsewhere; the adapter refuses it before calling out.
    let before = a.upstream.requests().len();
    let res = a.post("/v1/responses", &json!({ "model": "az-chat", "input": "hi" })).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("/v1/responses"), "{}", res.text());
    assert_eq!(a.upstream.requests().len(), before);

    for sent in a.upstream.requests() {
        assert!(sent.query.as_deref().is_some_and(|q| !q.contains(AZURE_KEY)), "key in the URL: {sent:?}");
    }
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("upstream answered with an error status"), "the server's logs were captured");
    assert!(!logged.contains(AZURE_KEY), "the Azure key was logged");
}

#[tokio::test]
async fn openai_providers_send_organization_project_and_extra_headers() {
    let a = azure_app().await;
    let res = a.post("/v1/chat/completions", &chat("oa-chat")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = &a.upstream.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    let h = &sent.headers;
    assert_eq!(h["openai-organization"], "org-tollgate");
    assert_eq!(h["openai-project"], "proj_gateway");
    assert_eq!(h["x-custom"], "v");
    assert_eq!(h["http-referer"], "https://tollgate.example");
    assert_eq!(h["authorization"], "Bearer sk-oa-upstream");
    assert_eq!(h["content-type"], "application/json");
    assert!(h.get("api-key").is_none());

    // The default provider has none of them.
    let res = a.post("/v1/chat/completions", &chat("gpt-4o-mini")).await;
    assert_eq!(res.status, 200);
    let plain = &a.app.fake.requests()[0].headers;
    assert!(plain.get("openai-organization").is_none() && plain.get("x-custom").is_none());
}

#[tokio::test]
async fn bad_azure_and_header_settings_are_named_at_start() {
    let err = TestApp::start_with(
        r#"
[[providers]]
name = "az"
kind = "azure"
base_url = "https://res.openai.azure.com"
api_key = "k"

[[providers]]
name = "oa"
kind = "openai"
base_url = "https://api.example.com/v1"
headers = { "Authorization" = "Bearer smuggled", "Proxy-Authorization" = "x" }

[[models]]
id = "az-bad"
type = "chat"
channels = [{ provider = "az", model = "deploy/../../admin" }]
"#,
    )
    .await
    .err()
    .expect("the config must be refused");
    for needle in [
        "providers[1].api_version: is required for kind \"azure\"",
        "providers[2].headers: header \"Authorization\" may not be configured",
        "providers[2].headers: header \"Proxy-Authorization\" may not be configured",
        "channels[0].model: \"deploy/../../admin\" is not an Azure deployment name",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("smuggled"), "header values never appear in errors");
}
