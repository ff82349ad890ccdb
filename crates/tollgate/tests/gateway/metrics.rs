//! `/metrics` end to end: real requests through the gateway, then a scrape that must parse
//! as Prometheus text and hold exact counts; label values a client cannot multiply; the
//! listener of its own; and the JSON request log line.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_server::Server;
use tollgate_testkit::app::{TestApp, UPSTREAM_KEY, config_with, default_config};
use tollgate_testkit::client::TestClient;
use tollgate_testkit::fake_openai::FakeOpenAi;

use super::chat;

const ADMIN: Option<&str> = Some("test-admin-token");

/// A scrape: every sample by its series (`name{labels}`), checked to be well-formed
/// Prometheus text format 0.0.4.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut types: BTreeMap<&str, &str> = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("bad HELP: {line}"));
                assert!(valid_name(name) && !help.is_empty(), "bad HELP: {line}");
                helped.insert(name);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE: {line}"));
                assert!(valid_name(name), "bad TYPE: {line}");
                assert!(matches!(kind, "counter" | "gauge" | "histogram"), "bad TYPE: {line}");
                assert!(types.insert(name, kind).is_none(), "TYPE twice: {line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line: {line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(valid_name(name), "bad name: {line}");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                check_labels(labels).unwrap_or_else(|e| panic!("{e}: {line}"));
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(f) == Some(&"histogram")))
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample without TYPE: {line}");
            assert!(samples.insert(series.to_owned(), value).is_none(), "series twice: {line}");
        }
        Self(samples)
    }

    /// The value of `series`, 0 when absent (series appear at first observation).
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    fn sum(&self, name: &str) -> f64 {
        self.0.iter().filter(|(s, _)| s.split('{').next() == Some(name)).map(|(_, v)| v).sum()
    }

    fn series(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{k="v",…}` with `\\`, `\"` and `\n` the only escapes.
fn check_labels(labels: &str) -> Result<(), String> {
    let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).ok_or("labels not in braces")?;
    let mut rest = inner;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !valid_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return Err("bad escape".into()),
                },
                (i, '"') => break i,
                _ => {}
            }
        };
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return Err("trailing comma".into()),
            None if rest.is_empty() => rest,
            None => return Err("labels not separated by commas".into()),
        };
    }
    Ok(())
}

async fn scrape_at(client: &TestClient, url: &str) -> Scrape {
    let res = client.get(url, None).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    Scrape::parse(&res.text())
}

async fn scrape(app: &TestApp) -> Scrape {
    scrape_at(&app.client, &app.url("/metrics")).await
}

/// Scrapes until `done` holds (the usage event of a response is emitted as its body ends,
/// a moment after the client has read it).
async fn scrape_until(app: &TestApp, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let s = scrape(app).await;
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "metrics never showed {what}: {:#?}", s.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn api_key(app: &TestApp, body: Value) -> (String, String) {
    app.api_key(&body).await.unwrap()
}

fn requests(endpoint: &str, model: &str, status: u16) -> String {
    format!(r#"tollgate_requests_total{{endpoint="{endpoint}",model="{model}",status="{status}"}}"#)
}

const CHAT: &str = "/v1/chat/completions";

#[tokio::test]
async fn requests_are_counted_exactly_and_the_scrape_is_prometheus_text() {
    let app = TestApp::start().await.unwrap();
    let key = app.create_key("metrics").await.unwrap();
    let (_, limited) = api_key(&app, json!({ "name": "x", "rpm": 1 })).await;
    let url = app.url(CHAT);
    let before = scrape(&app).await;

    let ok = app.client.post_json(&url, Some(&key), &chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let mut streamed = chat("gpt-4o-mini");
    streamed["stream"] = true.into();
    let res = app.client.post_json(&url, Some(&key), &streamed).await.unwrap();
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let res = app.client.post_json(&url, None, &chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(res.status, 401);
    let res = app.client.post_json(&url, Some(&key), &chat("no-such-model")).await.unwrap();
    assert_eq!(res.error_code(), "model_not_found");
    let res = app.client.post_json(&url, Some(&limited), &chat("demo-chat")).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let res = app.client.post_json(&url, Some(&limited), &chat("demo-chat")).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (429, "rate_limit_exceeded".into()));

    // The keyless request is counted in tollgate_auth_failures_total; it is a row (and in
    // tollgate_requests_total) only if it was its address's first failure this minute.
    let after = scrape_until(&app, "six more chat requests", |s| {
        s.sum("tollgate_requests_total") - before.sum("tollgate_requests_total") >= 5.0
            && s.get("tollgate_auth_failures_total") - before.get("tollgate_auth_failures_total") >= 1.0
    })
    .await;
    let delta = |series: &str| after.get(series) - before.get(series);
    assert_eq!(delta(&requests(CHAT, "gpt-4o-mini", 200)), 2.0);
    assert_eq!(delta("tollgate_auth_failures_total"), 1.0);
    let sampled = delta(&requests(CHAT, "none", 401));
    assert!(sampled == 0.0 || sampled == 1.0, "no model is known before the key");
    assert_eq!(delta(&requests(CHAT, "other", 404)), 1.0, "an unconfigured model is `other`");
    assert_eq!(delta(&requests(CHAT, "demo-chat", 200)), 1.0);
    assert_eq!(delta(&requests(CHAT, "demo-chat", 429)), 1.0);
    assert_eq!(after.sum("tollgate_requests_total") - before.sum("tollgate_requests_total"), 5.0 + sampled);

    assert_eq!(delta(r#"tollgate_request_errors_total{code="invalid_api_key"}"#), sampled);
    assert_eq!(delta(r#"tollgate_request_errors_total{code="model_not_found"}"#), 1.0);
    assert_eq!(delta(r#"tollgate_request_errors_total{code="rate_limit_exceeded"}"#), 1.0);
    assert_eq!(after.sum("tollgate_request_errors_total") - before.sum("tollgate_request_errors_total"), 2.0 + sampled);
    assert_eq!(delta("tollgate_rate_limited_total"), 1.0);
    assert_eq!(delta("tollgate_budget_rejections_total"), 0.0);

    // The fake bills 3 prompt + 5 completion tokens, 3 micro-USD, per gpt-4o-mini call.
    assert_eq!(delta(r#"tollgate_tokens_total{model="gpt-4o-mini",kind="prompt"}"#), 6.0);
    assert_eq!(delta(r#"tollgate_tokens_total{model="gpt-4o-mini",kind="completion"}"#), 10.0);
    assert_eq!(delta(r#"tollgate_spend_micro_usd_total{model="gpt-4o-mini"}"#), 6.0);
    assert_eq!(delta(r#"tollgate_billing_reason_total{reason="completed"}"#), 3.0);
    assert_eq!(delta(r#"tollgate_billing_reason_total{reason="not_billed"}"#), 2.0 + sampled);

    let chat_count = format!(r#"tollgate_request_duration_seconds_count{{endpoint="{CHAT}"}}"#);
    assert_eq!(delta(&chat_count), 5.0 + sampled);
    let chat_inf = format!(r#"tollgate_request_duration_seconds_bucket{{endpoint="{CHAT}",le="+Inf"}}"#);
    assert_eq!(after.get(&chat_inf), after.get(&chat_count));
    let ttft = r#"tollgate_time_to_first_token_seconds_count{model="gpt-4o-mini"}"#;
    assert_eq!(delta(ttft), 2.0, "the stream and the plain response both have a first byte");

    // Every event recorded is written: the writer's counters catch up with the requests.
    let settled = scrape_until(&app, "every usage row written", |s| {
        s.get("tollgate_usage_rows_written_total") == s.sum("tollgate_requests_total")
            && s.get("tollgate_usage_queue_depth") == 0.0
    })
    .await;
    assert!(settled.get("tollgate_store_write_seconds_count") >= 1.0);
    assert_eq!(settled.get("tollgate_usage_write_failures_total"), 0.0);
    assert_eq!(settled.get("tollgate_usage_spill_bytes"), 0.0);
    assert!(!settled.series().iter().any(|s| s.contains("key_id")), "no key labels by default");
}

/// `tollgate_channel_state` of one channel in one state.
fn channel_state(model: &str, provider: &str, upstream: &str, state: &str) -> String {
    format!(
        r#"tollgate_channel_state{{model="{model}",provider="{provider}",upstream_model="{upstream}",state="{state}"}}"#
    )
}

#[tokio::test]
async fn every_channels_circuit_and_the_failovers_are_in_the_scrape() {
    // A port nothing listens on: the `dead` channel's connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!(
        "[[providers]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
         api_key = \"{UPSTREAM_KEY}\"\n[[models]]\nid = \"routed\"\ntype = \"chat\"\n\
         channels = [{{ provider = \"dead\", model = \"up-dead\", priority = 9 }}, {{ provider = \"fake\" }}]\n"
    );
    let env = [("TOLLGATE_UPSTREAM__BREAKER_FAILURES", "1"), ("TOLLGATE_UPSTREAM__RETRY_BASE_MS", "1")];
    let app = TestApp::start_with_env("", &extra, &env).await.unwrap();
    let before = scrape(&app).await;
    for state in ["closed", "open", "half_open"] {
        let closed = f64::from(state == "closed");
        assert_eq!(before.get(&channel_state("routed", "dead", "up-dead", state)), closed, "{state}");
        assert_eq!(before.get(&channel_state("routed", "fake", "routed", state)), closed, "{state}");
    }
    assert!(
        before.series().contains(&channel_state("gpt-4o-mini", "fake", "fake-mini", "closed")),
        "every configured channel has its series before any traffic"
    );
    assert_eq!(before.get("tollgate_failovers_total"), 0.0);

    let key = app.create_key("routed").await.unwrap();
    let res = app.client.post_json(&app.url(CHAT), Some(&key), &chat("routed")).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let after = scrape_until(&app, "one failover", |s| s.get("tollgate_failovers_total") == 1.0).await;
    assert_eq!(after.get(&channel_state("routed", "dead", "up-dead", "open")), 1.0, "one failure opened it");
    assert_eq!(after.get(&channel_state("routed", "dead", "up-dead", "closed")), 0.0);
    assert_eq!(after.get(&channel_state("routed", "fake", "routed", "closed")), 1.0);
    let attempts = |provider: &str, upstream: &str, outcome: &str| {
        after.get(&format!(
            r#"tollgate_channel_attempts_total{{model="routed",provider="{provider}",upstream_model="{upstream}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!((attempts("dead", "up-dead", "failure"), attempts("dead", "up-dead", "success")), (1.0, 0.0));
    assert_eq!((attempts("fake", "routed", "failure"), attempts("fake", "routed", "success")), (0.0, 1.0));
}

#[tokio::test]
async fn clients_cannot_create_series() {
    let app = TestApp::start().await.unwrap();
    let key = app.create_key("metrics").await.unwrap();
    let k = Some(key.as_str());
    let random = |i: u32| format!("made-up-{i}-{}", tollgate_core::ids::new_id("m"));
    app.client.post_json(&app.url(CHAT), k, &chat(&random(0))).await.unwrap();
    app.client.get(&app.url(&format!("/v1/{}", random(0))), k).await.unwrap();
    app.client.get(&app.url(&format!("/v1/models/{}", random(0))), k).await.unwrap();
    let before = scrape_until(&app, "three requests", |s| s.get(&requests(CHAT, "other", 404)) == 1.0).await;

    for i in 1..=5 {
        let res = app.client.post_json(&app.url(CHAT), k, &chat(&random(i))).await.unwrap();
        assert_eq!(res.error_code(), "model_not_found");
        app.client.get(&app.url(&format!("/v1/{}", random(i))), k).await.unwrap();
        app.client.get(&app.url(&format!("/v1/models/{}", random(i))), k).await.unwrap();
    }
    let after = scrape_until(&app, "more requests", |s| s.get(&requests(CHAT, "other", 404)) == 6.0).await;
    let mut series = after.series();
    series.retain(|s| !before.series().contains(s));
    assert_eq!(series, BTreeSet::new(), "new series appeared");
    assert!(!after.series().iter().any(|s| s.contains("made-up")));
    assert_eq!(after.get(&requests("other", "none", 404)), 6.0, "unknown paths are one `other` endpoint");
}

#[tokio::test]
async fn key_labels_add_per_key_series_and_disabled_metrics_are_not_served() {
    let app = TestApp::start_with("[metrics]\nkey_labels = true").await.unwrap();
    let (id, key) = api_key(&app, json!({ "name": "labelled" })).await;
    let res = app.client.post_json(&app.url(CHAT), Some(&key), &chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(res.status, 200);
    let spend = format!(r#"tollgate_key_spend_micro_usd_total{{key_id="{id}"}}"#);
    let s = scrape_until(&app, "the key's spend", |s| s.get(&spend) == 3.0).await;
    assert_eq!(s.get(&format!(r#"tollgate_key_tokens_total{{key_id="{id}",kind="completion"}}"#)), 5.0);
    assert!(s.get(&format!(r#"tollgate_key_requests_total{{key_id="{id}"}}"#)) >= 2.0, "key_accepted polls too");

    let off = TestApp::start_with("[metrics]\nenabled = false").await.unwrap();
    let res = off.client.get(&off.url("/metrics"), None).await.unwrap();
    assert_eq!((res.status.as_u16(), res.error_code()), (404, "not_found".into()));
}

#[tokio::test]
async fn metrics_on_their_own_listener_are_not_on_the_main_one() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    let text = config_with(dir.path(), &fake.base_url(), "", "[metrics]\nlisten = \"127.0.0.1:0\"");
    std::fs::write(&path, text).unwrap();
    let config =
        tollgate_server::config::load(Some(&path), Vec::new(), tollgate_server::config::Credentials::Required).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(config, listener).await.unwrap();
    let metrics_addr = server.metrics_addr().expect("a metrics listener");
    assert_ne!(metrics_addr, server.addr());
    let client = TestClient::default();

    let main = client.get(&format!("http://{}/metrics", server.addr()), None).await.unwrap();
    assert_eq!((main.status.as_u16(), main.error_code()), (404, "not_found".into()));
    assert_eq!(client.get(&format!("http://{}/v1/models", server.addr()), None).await.unwrap().status, 401);
    let s = scrape_at(&client, &format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(s.get(&requests("/v1/models", "none", 401)), 1.0);
    let other = client.get(&format!("http://{metrics_addr}/v1/models"), None).await.unwrap();
    assert_eq!(other.status, 404, "the metrics listener serves nothing else");

    server.stop();
    tokio::time::timeout(Duration::from_secs(10), server.wait()).await.expect("the server stops");
    assert!(tokio::net::TcpStream::connect(metrics_addr).await.is_err(), "the metrics listener is closed");
}

#[tokio::test]
async fn json_logs_carry_each_request_and_no_secret() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(&config, default_config(dir.path(), &fake.base_url(), "")).unwrap();
    let ready = dir.path().join("ready");
    let log_path = dir.path().join("serve.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&config)
        .args(["serve", "--ready-file"])
        .arg(&ready)
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_LOG", "info,tollgate::request=info")
        .env("TOLLGATE_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = std::fs::read_to_string(&ready).unwrap();
    let client = TestClient::default();
    let created = client.post_json(&format!("{base}/api/v1/keys"), ADMIN, &json!({ "name": "logged" })).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let (key_id, key) =
        (created.json()["id"].as_str().unwrap().to_owned(), created.json()["key"].as_str().unwrap().to_owned());
    let url = format!("{base}/v1/chat/completions");
    let start = Instant::now();
    let res = loop {
        let res = client.post_json(&url, Some(&key), &chat("gpt-4o-mini")).await.unwrap();
        if res.status != 401 {
            break res;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the key never became valid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(res.status, 200, "{}", res.text());
    let request_id = res.header("x-request-id").unwrap().to_owned();

    let start = Instant::now();
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
            .collect();
        if let Some(line) = lines.into_iter().find(|l| l["request_id"] == request_id.as_str()) {
            break line;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no log line for {request_id}:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(line["target"], "tollgate::request");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["key_id"], key_id.as_str());
    assert_eq!(line["model"], "gpt-4o-mini");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].is_u64() && line["timestamp"].is_string(), "{line}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    for secret in [key.as_str(), UPSTREAM_KEY, "test-admin-token"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}
