//! The real `tollgate` binary: the CLI writing beside a running server, `config check`,
//! and `serve` stopping on SIGTERM with nothing lost and no secret in its log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::app::{TestApp, UPSTREAM_KEY, default_config};
use tollgate_testkit::client::{OpenStream, TestClient, read_to_end, read_until};
use tollgate_testkit::fake_openai::FakeOpenAi;

pub(crate) fn tollgate(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("--config").arg(config).env_remove("TOLLGATE_CONFIG");
    cmd
}

fn create_key_with_cli(config: &Path, name: &str) -> String {
    let out = tollgate(config).args(["keys", "create", "--name", name, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("key_"));
    v["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_key_created_by_the_cli_works_on_the_running_server_within_a_second() {
    let app = TestApp::start().await.unwrap();
    let key = tokio::task::spawn_blocking({
        let path = app.config_path.clone();
        move || create_key_with_cli(&path, "from-cli")
    })
    .await
    .unwrap();
    let took = app.key_accepted(&key, Duration::from_secs(1)).await.unwrap();
    assert!(took <= Duration::from_secs(1));
}

#[test]
fn config_check_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\n[upstream]\nconect_timeout_ms = 5\n").unwrap();
    let out = tollgate(&path).args(["config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstream") && err.contains("conect_timeout_ms"), "{err}");

    std::fs::write(&path, default_config(dir.path(), "http://127.0.0.1:9/v1", "")).unwrap();
    let out = tollgate(&path).args(["config", "check"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tollgate(&path).args(["config", "check"]).env("TOLLGATE_LISTEN", "not-an-address").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

#[tokio::test]
async fn sigterm_drains_the_stream_flushes_usage_and_logs_no_secret() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    // A slow demo provider so that the stream is still running when SIGTERM arrives.
    let extra = "[[providers]]\nname = \"slow-demo\"\nkind = \"demo\"\nword_delay_ms = 40\n\
                 [[models]]\nid = \"slow-chat\"\ntype = \"chat\"\ninput_price_per_mtok = 1\n\
                 output_price_per_mtok = 2\nchannels = [{ provider = \"slow-demo\" }]\n";
    std::fs::write(&config, default_config(dir.path(), &fake.base_url(), extra)).unwrap();
    let ready = dir.path().join("ready");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = tollgate(&config)
        .args(["serve", "--ready-file"])
        .arg(&ready)
        .env("TOLLGATE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = std::fs::read_to_string(&ready).unwrap();
    let key = create_key_with_cli(&config, "sigterm");
    let client = TestClient::default();
    let start = Instant::now();
    while !client.get(&format!("{base}/v1/models"), Some(&key)).await.unwrap().status.is_success() {
        assert!(start.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Failures too must not leak: an upstream 401 and a bad key.
    fake.set_behavior(tollgate_testkit::fake_openai::Behavior::Status(401));
    let failed = client
        .post_json(
            &format!("{base}/v1/chat/completions"),
            Some(&key),
            &json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "x" }] }),
        )
        .await
        .unwrap();
    assert_eq!(failed.status, 502);
    let _ = client.get(&format!("{base}/v1/models"), Some(&format!("{key}x"))).await.unwrap();

    let req =
        json!({ "model": "slow-chat", "stream": true, "messages": [{ "role": "user", "content": "one two three" }] });
    let OpenStream { request_id, mut body } =
        client.open_stream(&format!("{base}/v1/chat/completions"), &key, &req).await.unwrap();
    let mut text = read_until(&mut body, "chat.completion.chunk").await.unwrap();

    let killed = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(killed.success());
    text.push_str(&read_to_end(&mut body).await.unwrap());
    assert!(text.ends_with("data: [DONE]\n\n"), "stream completed during the drain");
    let status = tokio::task::spawn_blocking(move || server.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");

    let store =
        tollgate_store::Store::connect(&tollgate_store::Store::sqlite_url(&dir.path().join("data/tollgate.db")))
            .await
            .unwrap();
    let q = tollgate_store::UsageQuery { request_id: Some(request_id), limit: 5, ..Default::default() };
    let rows = store.list_usage(&q).await.unwrap();
    assert_eq!(rows.len(), 1, "the usage row was flushed before exit");
    assert_eq!(rows[0].billing_reason, "completed");

    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("usage writer drained"), "{log}");
    for secret in [key.as_str(), UPSTREAM_KEY, "test-admin-token"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    // Even a fragment of the key body must not appear.
    assert!(!log.contains(&key[6..20]));
}

#[test]
fn database_commands_do_not_need_provider_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    let text = format!(
        "data_dir = \"{}\"\n[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         api_key_env = \"TOLLGATE_TEST_UNSET_UPSTREAM_KEY\"\n[[models]]\nid = \"m\"\ntype = \"chat\"\nchannels = [{{ provider = \"p\" }}]\n",
        dir.path().join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    create_key_with_cli(&path, "ops");
    let out = tollgate(&path).args(["config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("providers[0].api_key_env"));
}

#[tokio::test]
async fn revoking_and_disabling_from_the_cli_take_effect_within_a_second() {
    let app = TestApp::start().await.unwrap();
    let created = app
        .services()
        .unwrap()
        .create_key(
            &tollgate_service::Actor::cli(),
            tollgate_service::NewKey { name: "ops".into(), ..Default::default() },
        )
        .await
        .unwrap();
    app.key_accepted(&created.secret, Duration::from_secs(2)).await.unwrap();
    for (command, code) in [("disable", "key_disabled"), ("enable", ""), ("revoke", "invalid_api_key")] {
        let path = app.config_path.clone();
        let id = created.key.id.clone();
        let out = tokio::task::spawn_blocking(move || tollgate(&path).args(["keys", command, &id]).output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        let start = Instant::now();
        loop {
            let res = app.client.get(&app.url("/v1/models"), Some(&created.secret)).await.unwrap();
            if res.error_code() == code {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(1), "{command} not live within 1 s: {}", res.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let out = tollgate(&app.config_path).args(["keys", "delete", &created.key.id]).output().unwrap();
    assert!(!out.status.success(), "delete without --yes must refuse");
    let out = tollgate(&app.config_path).args(["audit", "--target", &created.key.id]).output().unwrap();
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    let actors: Vec<&str> = audit["data"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    assert_eq!(actors, ["cli", "cli", "cli", "cli"]);
}

/// A `tollgate serve` child process; killed on drop.
struct ServeProcess {
    child: std::process::Child,
    base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_process(config: &Path, name: &str) -> ServeProcess {
    let dir = config.parent().unwrap();
    let ready = dir.join(format!("{name}.ready"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child =
        tollgate(config).args(["serve", "--ready-file"]).arg(&ready).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "{name} did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ServeProcess { child, base: std::fs::read_to_string(&ready).unwrap() }
}

/// Polls `base` until `key` gets `code` (empty: success); returns how long that took.
pub(crate) async fn until_code(client: &TestClient, base: &str, key: &str, code: &str) -> Duration {
    let start = Instant::now();
    loop {
        let res = client.get(&format!("{base}/v1/models"), Some(key)).await.unwrap();
        if res.error_code() == code {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(3), "still {} after 3 s", res.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn two_serve_processes_on_one_postgres_see_each_others_changes_within_a_second() {
    let Some(db) = tollgate_testkit::app::PgDatabase::create().await.unwrap() else { return };
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    let top = format!("database_url = \"{}\"\npepper = \"a-pepper-both-processes-share-0123456789\"", db.url);
    std::fs::write(&config, tollgate_testkit::app::config_with(dir.path(), &fake.base_url(), &top, "")).unwrap();
    let one = serve_process(&config, "one").await;
    let two = serve_process(&config, "two").await;
    let client = TestClient::default();

    let key = create_key_with_cli(&config, "shared");
    for p in [&one, &two] {
        until_code(&client, &p.base, &key, "").await;
    }
    let id =
        client.get(&format!("{}/api/v1/keys?search=shared", two.base), Some("test-admin-token")).await.unwrap().json()
            ["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();

    // Disable from the CLI: both processes refuse within a second.
    let out = tollgate(&config).args(["keys", "disable", &id]).output().unwrap();
    assert!(out.status.success());
    for p in [&one, &two] {
        assert!(until_code(&client, &p.base, &key, "key_disabled").await < Duration::from_secs(1));
    }
    assert!(tollgate(&config).args(["keys", "enable", &id]).output().unwrap().status.success());
    until_code(&client, &one.base, &key, "").await;

    // Rotate through process two: process one drops the old secret and takes the new.
    let rotated = client
        .post_json(&format!("{}/api/v1/keys/{id}/rotate", two.base), Some("test-admin-token"), &json!({}))
        .await
        .unwrap();
    let new_key = rotated.json()["key"].as_str().unwrap().to_owned();
    assert!(until_code(&client, &one.base, &key, "invalid_api_key").await < Duration::from_secs(1));
    assert!(until_code(&client, &one.base, &new_key, "").await < Duration::from_secs(1));

    // Revoke through process two: process one refuses within a second.
    client
        .post_json(&format!("{}/api/v1/keys/{id}/revoke", two.base), Some("test-admin-token"), &json!({}))
        .await
        .unwrap();
    assert!(until_code(&client, &one.base, &new_key, "invalid_api_key").await < Duration::from_secs(1));
    drop((one, two));
    db.drop_now().await.unwrap();
}

/// Runs the CLI with `args` (and `env`) off the async runtime; returns (success, stdout, stderr).
pub(crate) async fn cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tollgate(config);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn providers_models_and_channels_added_by_the_cli_serve_on_the_running_server() {
    let app = TestApp::start().await.unwrap();
    let managed = FakeOpenAi::start().await;
    let config = app.config_path.as_path();
    let secret = "sk-cli-managed-secret-4321";
    let url = managed.base_url();
    let add = ["providers", "add", "--name", "cli-prov", "--kind", "openai", "--base-url", &url];
    let args = [&add[..], &["--api-key-env", "CLI_PROVIDER_KEY", "--header", "X-Lab=one"]].concat();
    let (ok, out, err) = cli(config, &args, &[("CLI_PROVIDER_KEY", secret)]).await;
    assert!(ok, "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((view["api_key_set"].as_bool(), view["header_names"].clone()), (Some(true), json!(["X-Lab"])));
    assert!(!out.contains(secret) && !err.contains(secret));

    let (ok, _, err) =
        cli(config, &["providers", "add", "--name", "x", "--kind", "openai", "--base-url", "ftp://h"], &[]).await;
    assert!(!ok && err.contains("base_url"), "{err}");
    let (ok, _, err) =
        cli(config, &["providers", "add", "--name", "x", "--kind", "openai", "--api-key", "k"], &[]).await;
    assert!(!ok && err.contains("--api-key"), "no key on the command line: {err}");

    let model = ["models", "add", "--id", "cli-chat", "--type", "chat", "--input", "1", "--output", "2"];
    let (ok, _, err) = cli(config, &[&model[..], &["--channel", "cli-prov:up-chat"]].concat(), &[]).await;
    assert!(ok, "{err}");
    let key = app.create_key("cli").await.unwrap();
    let body = json!({ "model": "cli-chat", "messages": [{ "role": "user", "content": "hi" }] });
    let started = Instant::now();
    loop {
        let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &body).await.unwrap();
        if res.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{}", res.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = managed.requests().pop().unwrap();
    assert_eq!(sent.body["model"], "up-chat");
    assert_eq!(sent.headers["authorization"], format!("Bearer {secret}").as_str());
    assert_eq!(sent.headers["x-lab"], "one");

    let (ok, out, err) = cli(config, &["channels", "list"], &[]).await;
    assert!(ok, "{err}");
    let channels: Value = serde_json::from_str(&out).unwrap();
    let id = channels.as_array().unwrap().iter().find(|c| c["model"] == "cli-chat").unwrap()["id"].clone();
    let id = id.as_str().unwrap();
    let (ok, out, err) = cli(config, &["channels", "set", id, "--priority", "-3", "--group", "eu"], &[]).await;
    assert!(ok, "{err}");
    let changed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((changed["priority"].as_i64(), changed["groups"].clone()), (Some(-3), json!(["eu"])));

    let (ok, _, err) = cli(config, &["providers", "remove", "cli-prov"], &[]).await;
    assert!(!ok && err.contains("channels still use"), "{err}");
    assert!(cli(config, &["models", "remove", "cli-chat"], &[]).await.0);
    assert!(cli(config, &["providers", "remove", "cli-prov"], &[]).await.0);
    let audit = app.client.get(&app.url("/api/v1/audit?action=provider.create"), Some("test-admin-token")).await;
    assert_eq!(audit.unwrap().json()["data"][0]["actor"], "cli");
}
