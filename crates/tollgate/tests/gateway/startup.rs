//! Start-up and scale-out footguns: processes started together on a fresh database (the
//! server and the CLI, replicas) all succeed with one organization; an instance whose
//! pepper differs from the one the database's keys were issued under refuses to start;
//! Redis away shows in `/readyz` (degraded, still 200) and in `/metrics`, with or
//! without traffic.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_store::Store;
use tollgate_testkit::app::{PgDatabase, TestApp, config_with};
use tollgate_testkit::client::TestClient;

use crate::cli::{tollgate, until_code};

/// `tollgate serve` and three `tollgate keys create` started at the same instant on a
/// database nobody has opened yet: every process succeeds, the schema and the first
/// organization are created once, and every key works on the server.
async fn serve_and_the_cli_start_together(config: &Path, database_url: &str) {
    let dir = config.parent().unwrap();
    let ready = dir.join("serve.ready");
    let log_path = dir.join("serve.log");
    let mut serve = tollgate(config)
        .args(["serve", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let creates: Vec<Child> = (0..3)
        .map(|i| {
            tollgate(config)
                .args(["keys", "create", "--name", &format!("racer-{i}"), "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        creates.into_iter().map(|c| c.wait_with_output().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let mut keys = Vec::new();
    for out in outputs {
        assert!(out.status.success(), "keys create failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        keys.push(v["key"].as_str().unwrap().to_owned());
    }
    let start = Instant::now();
    while !ready.exists() {
        if let Some(status) = serve.try_wait().unwrap() {
            panic!("serve exited with {status}: {}", std::fs::read_to_string(&log_path).unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(30), "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = std::fs::read_to_string(&ready).unwrap();
    let client = TestClient::default();
    for key in &keys {
        until_code(&client, &base, key, "").await;
    }
    let store = Store::connect(database_url).await.unwrap();
    assert_eq!(store.list_organizations().await.unwrap().len(), 1, "one organization, bootstrapped once");
    assert_eq!(store.all_keys().await.unwrap().len(), 3);
    store.close().await;
    let _ = serve.kill();
    let _ = tokio::task::spawn_blocking(move || serve.wait()).await;
}

#[tokio::test]
async fn serve_and_the_cli_started_together_on_a_new_data_directory_all_succeed() {
    // Several rounds: the race is between a handful of statements at start.
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tollgate.toml");
        std::fs::write(&config, config_with(dir.path(), "http://127.0.0.1:9/v1", "", "")).unwrap();
        let url = Store::sqlite_url(&dir.path().join("data/tollgate.db"));
        serve_and_the_cli_start_together(&config, &url).await;
        let pepper = std::fs::read_to_string(dir.path().join("data/pepper")).unwrap();
        assert_eq!(pepper.len(), 64, "one whole pepper");
    }
}

#[tokio::test]
async fn serve_and_the_cli_started_together_on_a_new_postgres_database_all_succeed() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    let top = format!("database_url = \"{}\"\npepper = \"a-pepper-every-process-shares-0123456789\"", db.url);
    std::fs::write(&config, config_with(dir.path(), "http://127.0.0.1:9/v1", &top, "")).unwrap();
    serve_and_the_cli_start_together(&config, &db.url).await;
    db.drop_now().await.unwrap();
}

/// What a refusal names: the setting that disagrees and the three places a pepper comes from.
fn assert_names_the_pepper_settings(err: &str) {
    for needle in
        ["pepper_fingerprint", "`pepper`", "TOLLGATE_PEPPER", "<data_dir>/pepper", "every key would be refused"]
    {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

#[tokio::test]
async fn a_database_remembers_its_pepper_and_the_cli_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(&config, config_with(dir.path(), "http://127.0.0.1:9/v1", "", "")).unwrap();
    // A database from before fingerprints: migrated, nothing recorded.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let store = Store::connect(&Store::sqlite_url(&dir.path().join("data/tollgate.db"))).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.setting("pepper_fingerprint").await.unwrap(), None);

    let (ok, _, err) = crate::cli::cli(&config, &["keys", "create", "--name", "first", "--json"], &[]).await;
    assert!(ok, "{err}");
    let pepper = std::fs::read_to_string(dir.path().join("data/pepper")).unwrap();
    let fingerprint = store.setting("pepper_fingerprint").await.unwrap().expect("written on the next start");
    assert_eq!(fingerprint.len(), 64);
    assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!fingerprint.contains(&pepper) && !pepper.contains(&fingerprint));

    let other = [("TOLLGATE_PEPPER", "another-pepper-entirely-0123456789abcdef")];
    let (ok, _, err) = crate::cli::cli(&config, &["keys", "list"], &other).await;
    assert!(!ok, "a CLI command with another pepper must refuse");
    assert_names_the_pepper_settings(&err);
    assert_eq!(store.setting("pepper_fingerprint").await.unwrap().as_deref(), Some(fingerprint.as_str()));
    // The same pepper given through the environment instead of the file is the same pepper.
    let (ok, _, err) = crate::cli::cli(&config, &["keys", "list"], &[("TOLLGATE_PEPPER", pepper.as_str())]).await;
    assert!(ok, "{err}");
    store.close().await;
}

#[tokio::test]
async fn a_second_server_with_another_pepper_refuses_to_start_on_sqlite() {
    let app = TestApp::start().await.unwrap();
    let key = app.create_key("before").await.unwrap();
    let start = |pepper: String| {
        let path = app.config_path.clone();
        async move {
            let env = vec![("TOLLGATE_PEPPER".to_owned(), pepper)];
            let config =
                tollgate_server::config::load(Some(&path), env, tollgate_server::config::Credentials::Required)
                    .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tollgate_server::Server::start(config, listener).await
        }
    };
    let err = start("another-pepper-entirely-0123456789abcdef".into()).await.err().expect("refused");
    assert_names_the_pepper_settings(&format!("{err:#}"));

    let pepper = std::fs::read_to_string(app.dir.path().join("data/pepper")).unwrap();
    let second = start(pepper).await.unwrap();
    let client = TestClient::default();
    until_code(&client, &format!("http://{}", second.addr()), &key, "").await;
    second.stop();
    second.wait().await;
}

#[tokio::test]
async fn a_second_server_with_another_pepper_refuses_to_start_on_postgres() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let top = format!("database_url = \"{}\"", db.url);
    let mut first = TestApp::start_with_top(&top, "").await.unwrap();
    let key = first.create_key("before").await.unwrap();
    // Its own data directory, so its own new pepper file: the footgun.
    let err = TestApp::start_with_top(&top, "").await.err().expect("refused");
    assert_names_the_pepper_settings(&err);
    assert!(err.contains("/data/pepper"), "names this instance's pepper file: {err}");

    let pepper = std::fs::read_to_string(first.dir.path().join("data/pepper")).unwrap();
    let mut second = TestApp::start_with_top(&format!("{top}\npepper = \"{pepper}\""), "").await.unwrap();
    second.key_accepted(&key, Duration::from_secs(5)).await.unwrap();
    second.stop().await;
    first.stop().await;
    db.drop_now().await.unwrap();
}

/// The value of an unlabelled series in a `/metrics` scrape, if present.
async fn scrape(app: &TestApp, name: &str) -> Option<String> {
    let text = app.client.get(&app.url("/metrics"), None).await.unwrap().text();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(str::to_owned))
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let res = app.client.get(&app.url("/readyz"), None).await.unwrap();
    (res.status.as_u16(), res.json())
}

/// A chat request of a key with a rate limit (so that admission asks the shared limiter).
async fn limited_request(app: &TestApp, key: &str) -> u16 {
    let body = serde_json::json!({ "model": "demo-chat", "messages": [{ "role": "user", "content": "hi" }] });
    app.client.post_json(&app.url("/v1/chat/completions"), Some(key), &body).await.unwrap().status.as_u16()
}

async fn rpm_key(app: &TestApp) -> String {
    app.api_key(&serde_json::json!({ "name": "limited", "rpm": 1000 })).await.unwrap().1
}

#[tokio::test]
async fn redis_unreachable_is_degraded_in_readyz_and_metrics_and_requests_still_serve() {
    // Nothing listens on port 1: the start-up probe already finds Redis away, no traffic needed.
    let top = "redis_url = \"redis://127.0.0.1:1\"";
    let app = TestApp::start_with_top(top, "[limits]\nredis_timeout_ms = 100").await.unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "still serving: {body}");
    assert_eq!((body["status"].as_str(), body["redis"].as_str()), (Some("degraded"), Some("unreachable")), "{body}");
    assert_eq!(body["store"], "ok");
    assert_eq!(scrape(&app, "tollgate_redis_up").await.as_deref(), Some("0"));
    assert_eq!(scrape(&app, "tollgate_redis_fallback_admissions_total").await.as_deref(), Some("0"));

    let key = rpm_key(&app).await;
    for _ in 0..3 {
        assert_eq!(limited_request(&app, &key).await, 200);
    }
    assert_eq!(scrape(&app, "tollgate_redis_fallback_admissions_total").await.as_deref(), Some("3"));
    assert_eq!(readyz(&app).await.1["status"], "degraded");
}

#[tokio::test]
async fn redis_reachable_is_ready_and_without_redis_readyz_says_not_configured() {
    let Some(redis) = tollgate_testkit::redis_prefix::RedisPrefix::new() else { return };
    let top = format!("redis_url = \"{}\"", redis.url);
    let app = TestApp::start_with_top(&top, &redis.limits_toml()).await.unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!((status, body["status"].as_str(), body["redis"].as_str()), (200, Some("ready"), Some("ok")), "{body}");
    let key = rpm_key(&app).await;
    assert_eq!(limited_request(&app, &key).await, 200);
    assert_eq!(scrape(&app, "tollgate_redis_up").await.as_deref(), Some("1"));
    assert_eq!(scrape(&app, "tollgate_redis_fallback_admissions_total").await.as_deref(), Some("0"));

    let plain = TestApp::start().await.unwrap();
    let (status, body) = readyz(&plain).await;
    assert_eq!((status, body["status"].as_str(), body["redis"].as_str()), (200, Some("ready"), Some("not_configured")));
    assert_eq!(scrape(&plain, "tollgate_redis_up").await, None, "no Redis series without Redis");
}

/// Polls `/readyz` until its `status` is `want`; returns how long that took.
async fn until_ready_status(app: &TestApp, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        let (_, body) = readyz(app).await;
        if body["status"] == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "/readyz still {body}, not {want}, after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_follows_redis_going_away_and_coming_back_without_traffic() {
    let Some(redis) = tollgate_testkit::redis_prefix::RedisPrefix::new() else { return };
    let target = redis.url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let relay = tollgate_testkit::relay::Relay::start(&target).await.unwrap();
    let top = format!("redis_url = \"redis://{}\"", relay.addr());
    let extra = format!("{}redis_timeout_ms = 200\n", redis.limits_toml());
    let app = TestApp::start_with_top(&top, &extra).await.unwrap();
    assert_eq!(readyz(&app).await.1["status"], "ready");
    relay.cut();
    // The periodic probe (every 5 s) notices; no request is made meanwhile.
    until_ready_status(&app, "degraded").await;
    assert_eq!(readyz(&app).await.0, 200);
    assert_eq!(scrape(&app, "tollgate_redis_up").await.as_deref(), Some("0"));
    relay.restore();
    until_ready_status(&app, "ready").await;
    assert_eq!(scrape(&app, "tollgate_redis_up").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn readyz_is_503_not_ready_while_the_store_is_away_even_when_degraded() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    // postgres://user@host:port/db → the same through a relay that can be cut.
    let (prefix, rest) = db.url.split_once('@').unwrap();
    let (target, path) = rest.split_once('/').unwrap();
    let relay = tollgate_testkit::relay::Relay::start(target).await.unwrap();
    let top = format!("database_url = \"{prefix}@{}/{path}\"\nredis_url = \"redis://127.0.0.1:1\"", relay.addr());
    let mut app = TestApp::start_with_top(&top, "[limits]\nredis_timeout_ms = 100").await.unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")));
    relay.cut();
    let (status, body) = readyz(&app).await;
    assert_eq!(
        (status, body["status"].as_str(), body["store"].as_str()),
        (503, Some("not_ready"), Some("unreachable"))
    );
    assert_eq!(body["redis"], "unreachable");
    relay.restore();
    until_ready_status(&app, "degraded").await;
    app.stop().await;
    db.drop_now().await.unwrap();
}
