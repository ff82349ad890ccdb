//! Channels and failover: the highest priority first, the next channel when one refuses
//! connections or answers 429/5xx before any byte reached the client, circuits that open
//! after consecutive failures and close after a good probe, groups that pin keys to their
//! channels — and never a retry once a stream has begun. Every attempt shows in the usage
//! row (`attempts`, `channel`). Streams: an upstream silent past the idle timeout is cut and
//! billed as interrupted; one that keeps sending is never cut, however long it runs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::app::{ADMIN_TOKEN, TestApp, UPSTREAM_KEY};
use tollgate_testkit::fake_openai::{Behavior, FakeOpenAi};

fn chat(stream: bool) -> Value {
    json!({ "model": "routed", "stream": stream, "messages": [{ "role": "user", "content": "hello there" }] })
}

/// A port nothing listens on: connections are refused.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

fn provider(name: &str, url: &str) -> String {
    format!("[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{url}\"\napi_key = \"{UPSTREAM_KEY}\"\n")
}

/// Model `routed` on three channels: `dead` (refuses connections, priority 30), `flaky`
/// (priority 20) and `steady` (the app's own fake, priority 10).
async fn three_channels(flaky: &FakeOpenAi, env: &[(&str, &str)]) -> TestApp {
    let config = format!(
        "{}{}[[models]]\nid = \"routed\"\ntype = \"chat\"\ninput_price_per_mtok = 1\noutput_price_per_mtok = 2\n\
         channels = [{{ provider = \"dead\", priority = 30 }}, {{ provider = \"flaky\", priority = 20 }}, \
         {{ provider = \"fake\", priority = 10 }}]\n",
        provider("dead", &refused_url()),
        provider("flaky", &flaky.base_url()),
    );
    TestApp::start_with_env("", &config, env).await.unwrap()
}

/// Every channel of [`three_channels`], in priority order, as a usage row names them.
const ALL_THREE: &str = "dead/routed,flaky/routed,fake/routed";

fn chats(fake: &FakeOpenAi) -> usize {
    fake.requests().iter().filter(|r| r.path.ends_with("/chat/completions")).count()
}

#[tokio::test]
async fn a_request_fails_over_past_a_refused_and_a_failing_channel() {
    let flaky = FakeOpenAi::start().await;
    flaky.set_behavior(Behavior::Status(503));
    let app = three_channels(&flaky, &[]).await;
    let key = app.create_key("routed").await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat(false)).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!((chats(&flaky), chats(&app.fake)), (1, 1), "tried flaky once, answered by steady");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.provider.as_deref(), Some("fake"), "the row names the channel that answered");
    assert_eq!((row.attempts, row.channel.as_deref()), (3, Some(ALL_THREE)), "and every channel tried, in order");
    assert_eq!(row.billing_reason, "completed");
    assert!(row.cost.0 > 0, "billed once, for the attempt that answered");
}

/// The scenario: the first channel refuses connections, the second answers 503 and
/// then recovers, the third is slow. Attempts go in priority order; both failing circuits
/// open, then the second closes again after its probe succeeds.
#[tokio::test]
async fn refused_then_failing_then_slow_channels_fail_over_and_circuits_open_and_close() {
    let flaky = FakeOpenAi::start().await;
    flaky.set_behavior(Behavior::Status(503));
    let app = three_channels(
        &flaky,
        &[
            ("TOLLGATE_UPSTREAM__BREAKER_FAILURES", "2"),
            // Long enough that the requests while the circuits are open (each waits for the
            // slow channel, and for its usage row) all fit in it on a loaded 2-core machine.
            ("TOLLGATE_UPSTREAM__BREAKER_OPEN_MS", "1500"),
            ("TOLLGATE_UPSTREAM__RETRY_BASE_MS", "1"),
        ],
    )
    .await;
    let slow = Duration::from_millis(150);
    app.fake.set_behavior(Behavior::Delay(slow));
    let key = app.create_key("routed").await.unwrap();
    let url = app.url("/v1/chat/completions");
    let row_of = |res: tollgate_testkit::client::Answer| {
        assert_eq!(res.status, 200, "{}", res.text());
        res.header("x-request-id").unwrap().to_owned()
    };
    for n in 1..=2 {
        let started = Instant::now();
        let id = row_of(app.client.post_json(&url, Some(&key), &chat(false)).await.unwrap());
        assert!(started.elapsed() >= slow, "answered by the slow channel");
        let row = app.usage_row(&id).await.unwrap();
        assert_eq!((row.attempts, row.channel.as_deref()), (3, Some(ALL_THREE)), "request {n}: tried in order");
        assert_eq!((row.provider.as_deref(), row.billing_reason.as_str()), (Some("fake"), "completed"));
        assert_eq!((chats(&flaky), chats(&app.fake)), (n, n), "flaky tried before the slow channel");
    }
    // Two consecutive failures each: dead and flaky are open, the slow channel serves alone.
    let opened = tokio::time::Instant::now();
    let state = |channels: &Value, provider: &str| {
        let c =
            channels["data"].as_array().unwrap().iter().find(|c| c["model"] == "routed" && c["provider"] == provider);
        c.unwrap()["state"].as_str().unwrap().to_owned()
    };
    let channels = app.client.get(&app.url("/api/v1/channels"), Some(ADMIN_TOKEN)).await.unwrap().json();
    let states = (state(&channels, "dead"), state(&channels, "flaky"), state(&channels, "fake"));
    assert_eq!(states, ("open".into(), "open".into(), "closed".into()));
    for _ in 0..2 {
        let id = row_of(app.client.post_json(&url, Some(&key), &chat(false)).await.unwrap());
        let row = app.usage_row(&id).await.unwrap();
        assert_eq!((row.attempts, row.channel.as_deref()), (1, Some("fake/routed")), "open circuits are skipped");
    }
    assert_eq!((chats(&flaky), chats(&app.fake)), (2, 4));

    // flaky recovers; after the open period one probe each: dead's fails (open again),
    // flaky's succeeds (closed), and flaky answers before the slow channel is tried.
    flaky.set_behavior(Behavior::Normal);
    tokio::time::sleep_until(opened + Duration::from_millis(1600)).await;
    let id = row_of(app.client.post_json(&url, Some(&key), &chat(false)).await.unwrap());
    let row = app.usage_row(&id).await.unwrap();
    assert_eq!((row.attempts, row.channel.as_deref()), (2, Some("dead/routed,flaky/routed")));
    assert_eq!(row.provider.as_deref(), Some("flaky"));
    let channels = app.client.get(&app.url("/api/v1/channels"), Some(ADMIN_TOKEN)).await.unwrap().json();
    let states = (state(&channels, "dead"), state(&channels, "flaky"), state(&channels, "fake"));
    assert_eq!(states, ("open".into(), "closed".into(), "closed".into()));
    for _ in 0..2 {
        let id = row_of(app.client.post_json(&url, Some(&key), &chat(false)).await.unwrap());
        let row = app.usage_row(&id).await.unwrap();
        assert_eq!((row.attempts, row.channel.as_deref()), (1, Some("flaky/routed")), "closed again: flaky serves");
    }
    assert_eq!((chats(&flaky), chats(&app.fake)), (5, 4));
}

#[tokio::test]
async fn a_stream_that_breaks_mid_way_is_not_retried_and_is_billed_as_delivered() {
    let flaky = FakeOpenAi::start().await;
    flaky.set_behavior(Behavior::BreakStreamAfter(2));
    let app = three_channels(&flaky, &[]).await;
    let key = app.create_key("routed").await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat(true)).await.unwrap();
    assert_eq!(res.status, 200);
    assert!(res.text().contains("upstream_error"), "the client is told: {}", res.text());
    assert_eq!(chats(&app.fake), 0, "nothing retried once the stream had begun");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.billing_reason.as_str(), row.provider.as_deref()), ("upstream_interrupted", Some("flaky")));
    assert_eq!((row.attempts, row.channel.as_deref()), (2, Some("dead/routed,flaky/routed")));
    assert!(row.completion_tokens >= 2);
}

#[tokio::test]
async fn when_every_channel_fails_the_last_error_is_answered() {
    let flaky = FakeOpenAi::start().await;
    flaky.set_behavior(Behavior::Status(429));
    let app = three_channels(&flaky, &[]).await;
    app.fake.set_behavior(Behavior::Status(503));
    let key = app.create_key("routed").await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat(false)).await.unwrap();
    assert_eq!(res.status, 502, "{}", res.text());
    assert!(!res.text().contains(UPSTREAM_KEY));
    assert_eq!((chats(&flaky), chats(&app.fake)), (1, 1));
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.cost.0, row.billing_reason.as_str()), (0, "not_billed"));
    assert_eq!((row.attempts, row.channel.as_deref()), (3, Some(ALL_THREE)));
}

#[tokio::test]
async fn a_key_pinned_to_a_group_uses_only_that_groups_channels() {
    let vip = FakeOpenAi::start().await;
    let config = format!(
        "{}[[models]]\nid = \"routed\"\ntype = \"chat\"\n\
         channels = [{{ provider = \"vip\", priority = 50, groups = [\"vip\"] }}, {{ provider = \"fake\" }}]\n",
        provider("vip", &vip.base_url()),
    );
    let app = TestApp::start_with(&config).await.unwrap();
    let (_, plain) = app.api_key(&json!({ "name": "plain" })).await.unwrap();
    let (_, pinned) = app.api_key(&json!({ "name": "pinned", "group": "vip" })).await.unwrap();
    let url = app.url("/v1/chat/completions");
    assert_eq!(app.client.post_json(&url, Some(&plain), &chat(false)).await.unwrap().status, 200);
    assert_eq!((chats(&vip), chats(&app.fake)), (0, 1), "the default group never reaches the vip channel");
    assert_eq!(app.client.post_json(&url, Some(&pinned), &chat(false)).await.unwrap().status, 200);
    assert_eq!((chats(&vip), chats(&app.fake)), (1, 1), "the vip key uses only its group's channel");
    // A group without a channel for the model: the model is not served to that key.
    let (_, lost) = app.api_key(&json!({ "name": "lost", "group": "nowhere" })).await.unwrap();
    let res = app.client.post_json(&url, Some(&lost), &chat(false)).await.unwrap();
    assert_eq!(res.status, 404, "{}", res.text());
}

/// Model `routed` on the app's fake alone, with a short stream idle timeout.
async fn one_channel_idle_after(idle_ms: &str) -> TestApp {
    let config = "[[models]]\nid = \"routed\"\ntype = \"chat\"\ninput_price_per_mtok = 1\n\
                  output_price_per_mtok = 2\nchannels = [{ provider = \"fake\" }]\n";
    TestApp::start_with_env("", config, &[("TOLLGATE_UPSTREAM__STREAM_IDLE_TIMEOUT_MS", idle_ms)]).await.unwrap()
}

#[tokio::test]
async fn a_stream_silent_past_the_idle_timeout_is_cut_and_billed_as_interrupted() {
    let app = one_channel_idle_after("300").await;
    app.fake.set_behavior(Behavior::StallStreamAfter(2));
    let key = app.create_key("routed").await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat(true)).await.unwrap();
    assert_eq!(res.status, 200);
    let text = res.text();
    assert!(text.contains("\"Hello\"") && text.contains("\" from\""), "what was sent is delivered: {text}");
    assert!(text.contains("upstream_error") && !text.contains("[DONE]"), "ended with the error event: {text}");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!(row.billing_reason, "upstream_interrupted");
    assert!(row.completion_tokens >= 2 && row.cost.0 > 0, "billed for what was delivered: {row:?}");
    assert!(row.error.as_deref().unwrap_or("").contains("idle"), "{:?}", row.error);
    assert_eq!((row.attempts, row.channel.as_deref()), (1, Some("fake/routed")), "not retried elsewhere");
}

#[tokio::test]
async fn a_slow_stream_that_keeps_sending_outlives_the_idle_timeout() {
    let app = one_channel_idle_after("500").await;
    // Six paced frames after the first word: at least 600 ms in all, gaps of 100 ms.
    app.fake.set_behavior(Behavior::SlowStream { chunk_delay: Duration::from_millis(100) });
    let key = app.create_key("routed").await.unwrap();
    let started = Instant::now();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat(true)).await.unwrap();
    assert!(started.elapsed() > Duration::from_millis(500), "the stream ran longer than the idle timeout");
    assert_eq!(res.status, 200);
    let text = res.text();
    assert!(text.contains("[DONE]") && !text.contains("upstream_error"), "complete: {text}");
    let row = app.usage_row(res.header("x-request-id").unwrap()).await.unwrap();
    assert_eq!((row.billing_reason.as_str(), row.completion_tokens), ("completed", 5));
}

/// Only the operator decides where requests go: an upstream's redirect is not followed,
/// and nothing a client sends — body fields or headers naming another host — moves them.
#[tokio::test]
async fn redirects_are_not_followed_and_requests_never_choose_the_upstream_host() {
    let app = TestApp::start().await.unwrap();
    let elsewhere = FakeOpenAi::start().await;
    let key = app.create_key("gpt-4o-mini").await.unwrap();
    let url = app.url("/v1/chat/completions");
    let mut body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] });
    app.fake.set_behavior(Behavior::Redirect(format!("{}/chat/completions", elsewhere.base_url())));
    let res = app.client.post_json(&url, Some(&key), &body).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code().as_str()), (502, "upstream_error"), "{}", res.text());
    assert!(!res.text().contains(&elsewhere.addr().to_string()), "the redirect target is not shown");
    assert!(elsewhere.requests().is_empty(), "the redirect was not followed");

    app.fake.set_behavior(Behavior::Normal);
    for field in ["base_url", "api_base", "url", "endpoint"] {
        body[field] = elsewhere.base_url().into();
    }
    let elsewhere_host = elsewhere.addr().to_string();
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("x-forwarded-host", elsewhere_host.as_str()),
        ("x-upstream-url", elsewhere_host.as_str()),
    ];
    let res = app.client.call(http::Method::POST, &url, &headers, body.to_string()).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(elsewhere.requests().is_empty(), "no request field or header chose the host");
    assert_eq!(chats(&app.fake), 2, "both went to the configured provider");
}
