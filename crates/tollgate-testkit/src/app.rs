//! `TestApp`: the real server, in process, on `127.0.0.1:0`, with a temporary data
//! directory and a fake OpenAI upstream on its own random port. The config is written to
//! a file so that the real CLI binary can share the app's database and pepper.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tollgate_server::{Config, Server};
use tollgate_service::{Actor, NewKey};
use tollgate_store::{Store, UsageQuery, UsageRow};

use crate::client::{ClientResult, TestClient};
use crate::fake_openai::FakeOpenAi;

/// The password of the bootstrapped owner (`owner@test.local`) in test configs.
pub const OWNER_PASSWORD: &str = "test-owner-password-0123";

/// The admin token of test configs.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A provider key only the fake upstream knows; tests assert it never leaks.
pub const UPSTREAM_KEY: &str = "sk-upstream-secret-0123456789";

pub struct TestApp {
    server: Option<Server>,
    pub base_url: String,
    pub fake: FakeOpenAi,
    pub client: TestClient,
    pub config: Config,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
}

/// The default test config: the demo models, and the fake upstream serving `gpt-4o-mini`
/// (upstream name `fake-mini`, to see renaming), `text-embedding-3-small` and
/// `gpt-image-1`. `extra` is appended verbatim (TOML).
pub fn default_config(dir: &std::path::Path, fake_url: &str, extra: &str) -> String {
    config_with(dir, fake_url, "", extra)
}

/// As [`default_config`], with `top` inserted among the top-level settings (for
/// `database_url`, `pepper`, `trusted_proxies`, …).
pub fn config_with(dir: &std::path::Path, fake_url: &str, top: &str, extra: &str) -> String {
    format!(
        r#"
{top}
listen = "127.0.0.1:0"
data_dir = "{data}"
admin_token = "test-admin-token"
owner_email = "owner@test.local"
owner_password = "{OWNER_PASSWORD}"
demo = true
max_body_bytes = 65536
shutdown_grace_secs = 10
[usage]
flush_interval_ms = 20
[change_feed]
poll_interval_ms = 50
[upstream]
first_byte_timeout_ms = 3000

[[providers]]
name = "fake"
kind = "openai"
base_url = "{fake_url}"
api_key = "{UPSTREAM_KEY}"

[[models]]
id = "gpt-4o-mini"
type = "chat"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
channels = [{{ provider = "fake", model = "fake-mini" }}]

[[models]]
id = "text-embedding-3-small"
type = "embedding"
input_price_per_mtok = 0.02
channels = [{{ provider = "fake" }}]

[[models]]
id = "gpt-image-1"
type = "image"
price_per_image = 0.04
channels = [{{ provider = "fake" }}]
{extra}
"#,
        data = dir.join("data").display(),
    )
}

impl TestApp {
    pub async fn start() -> ClientResult<Self> {
        Self::start_with("").await
    }

    /// Starts with `extra` TOML appended to the default config.
    pub async fn start_with(extra: &str) -> ClientResult<Self> {
        Self::start_with_top("", extra).await
    }

    /// Starts with `top` among the top-level settings and `extra` appended.
    pub async fn start_with_top(top: &str, extra: &str) -> ClientResult<Self> {
        Self::start_with_env(top, extra, &[]).await
    }

    /// As [`TestApp::start_with_top`], with `TOLLGATE_*` overrides (for settings of the
    /// config's own sections, such as `TOLLGATE_UPSTREAM__RETRY_BASE_MS`).
    pub async fn start_with_env(top: &str, extra: &str, env: &[(&str, &str)]) -> ClientResult<Self> {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config_path = dir.path().join("tollgate.toml");
        std::fs::write(&config_path, config_with(dir.path(), &fake.base_url(), top, extra))
            .map_err(|e| e.to_string())?;
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let config =
            tollgate_server::config::load(Some(&config_path), env, tollgate_server::config::Credentials::Required)
                .map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let server = Server::start(config.clone(), listener).await.map_err(|e| format!("{e:#}"))?;
        let base_url = format!("http://{}", server.addr());
        Ok(Self { server: Some(server), base_url, fake, client: TestClient::default(), config, config_path, dir })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn server(&self) -> ClientResult<&Server> {
        self.server.as_ref().ok_or_else(|| "the server has been stopped".to_owned())
    }

    /// Creates a key through the service layer; returns the secret. The running server
    /// learns of it through the change feed: [`TestApp::key_accepted`] waits for that.
    pub async fn create_key(&self, name: &str) -> ClientResult<String> {
        let created = self
            .server()?
            .services()
            .create_key(&Actor::cli(), NewKey { name: name.into(), ..Default::default() })
            .await
            .map_err(|e| e.to_string())?;
        self.key_accepted(&created.secret, Duration::from_secs(5)).await?;
        Ok(created.secret)
    }

    /// Creates a key through `POST /api/v1/keys` with the admin token (`body` as the API
    /// takes it); returns `(id, secret)` once the running server accepts the secret.
    pub async fn api_key(&self, body: &serde_json::Value) -> ClientResult<(String, String)> {
        let res = self.client.post_json(&self.url("/api/v1/keys"), Some(ADMIN_TOKEN), body).await?;
        if res.status != 201 {
            return Err(format!("creating a key answered {}: {}", res.status, res.text()));
        }
        let v = res.json();
        let field = |name: &str| v[name].as_str().map(str::to_owned).ok_or(format!("no {name} in {v}"));
        let (id, secret) = (field("id")?, field("key")?);
        self.key_accepted(&secret, Duration::from_secs(2)).await?;
        Ok((id, secret))
    }

    /// Polls `GET /v1/models` with `key` until it is accepted; returns how long it took.
    pub async fn key_accepted(&self, key: &str, within: Duration) -> ClientResult<Duration> {
        let start = Instant::now();
        loop {
            let res = self.client.get(&self.url("/v1/models"), Some(key)).await?;
            if res.status.is_success() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(format!("key not accepted within {within:?}: {} {}", res.status, res.text()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The service layer over the app's own store.
    pub fn services(&self) -> ClientResult<&tollgate_service::Services> {
        Ok(self.server()?.services())
    }

    /// A separate handle on the app's database.
    pub async fn store(&self) -> ClientResult<Store> {
        Store::connect(&self.config.database_url).await.map_err(|e| e.to_string())
    }

    /// Waits until the usage row of `request_id` is written, and returns it.
    pub async fn usage_row(&self, request_id: &str) -> ClientResult<UsageRow> {
        let store = self.store().await?;
        let start = Instant::now();
        loop {
            let q = UsageQuery { request_id: Some(request_id.to_owned()), limit: 2, ..Default::default() };
            let mut rows = store.list_usage(&q).await.map_err(|e| e.to_string())?;
            if let Some(row) = rows.pop() {
                if !rows.is_empty() {
                    return Err(format!("more than one usage row for {request_id}"));
                }
                store.close().await;
                return Ok(row);
            }
            if start.elapsed() > Duration::from_secs(5) {
                return Err(format!("no usage row for {request_id} after 5 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every usage row, newest first.
    pub async fn all_usage(&self) -> ClientResult<Vec<UsageRow>> {
        let store = self.store().await?;
        let rows =
            store.list_usage(&UsageQuery { limit: 10_000, ..Default::default() }).await.map_err(|e| e.to_string());
        store.close().await;
        rows
    }

    /// Stops gracefully and waits until every usage row is written.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
            server.wait().await;
        }
    }

    /// Begins the graceful stop without waiting (to test draining).
    pub fn begin_stop(&self) {
        if let Some(s) = &self.server {
            s.stop();
        }
    }

    /// Waits for a stop begun with [`TestApp::begin_stop`].
    pub async fn wait_stopped(&mut self) {
        if let Some(server) = self.server.take() {
            server.wait().await;
        }
    }
}

/// A fresh PostgreSQL database for one test, dropped by [`PgDatabase::drop_now`]. The
/// server comes from `TOLLGATE_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`); `off` skips PostgreSQL tests.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> ClientResult<Option<Self>> {
        let admin_url = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        if admin_url == "off" {
            return Ok(None);
        }
        let name = tollgate_core::ids::new_id("tgtest").to_lowercase();
        let admin = Store::connect(&admin_url).await.map_err(|e| format!("PostgreSQL for tests: {e}"))?;
        admin.execute_admin(&format!("CREATE DATABASE {name}")).await.map_err(|e| e.to_string())?;
        admin.close().await;
        let (base, _) = admin_url.rsplit_once('/').ok_or("the PostgreSQL url names no database")?;
        Ok(Some(Self { url: format!("{base}/{name}"), admin_url, name }))
    }

    pub async fn drop_now(self) -> ClientResult<()> {
        let admin = Store::connect(&self.admin_url).await.map_err(|e| e.to_string())?;
        let r = admin.execute_admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
        admin.close().await;
        r.map_err(|e| e.to_string())
    }
}
