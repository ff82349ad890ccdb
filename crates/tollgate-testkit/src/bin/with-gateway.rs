//! `with-gateway [--tollgate PATH] -- COMMAND [ARGS…]`: runs COMMAND against a real,
//! freshly started `tollgate serve` and exits with COMMAND's exit code.
//!
//! It owns the whole fixture: [`FakeOpenAi`], [`FakeAnthropic`] and [`FakeGemini`]
//! upstreams in process, a temporary data directory and config (demo models, the OpenAI
//! fake's `gpt-4o-mini`, `text-embedding-3-small` and `gpt-image-1`, the Anthropic fake's
//! `claude-fake` — served only by Anthropic, so `/v1/messages` goes natively — the Gemini
//! fake's `gemini-fake`, and `broken-model` on a provider whose port is closed), the server
//! process, and one API key made with `tollgate keys create`. COMMAND sees the fixture
//! through `TOLLGATE_BASE_URL`, `TOLLGATE_API_KEY`, `TOLLGATE_ADMIN_TOKEN`,
//! `TOLLGATE_GATEWAY_URL`, `TOLLGATE_DATA_DIR`, `TOLLGATE_CONFIG_FILE` and `TOLLGATE_BIN`.
//!
//! Invariants: no fixed ports and no start-up sleeps (everything is polled with a
//! deadline); the server is always stopped, with SIGTERM after COMMAND and SIGKILL if the
//! harness fails first; a nonzero server exit turns a passing run into a failing one.

use std::fs::File;
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tollgate_testkit::fake_anthropic::FakeAnthropic;
use tollgate_testkit::fake_gemini::FakeGemini;
use tollgate_testkit::fake_openai::{FakeOpenAi, Options};

const USAGE: &str = "usage: with-gateway [--tollgate PATH] -- COMMAND [ARGS...]";
/// The only API key the fake Gemini accepts.
const GEMINI_KEY: &str = "gm-fake-upstream-key";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const KEY_ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

struct Args {
    tollgate: PathBuf,
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("with-gateway: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("with-gateway: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut tollgate = None;
    loop {
        match args.next().as_deref() {
            Some("--") => break,
            Some("--tollgate") => {
                let path = args.next().ok_or("--tollgate needs a path")?;
                tollgate = Some(PathBuf::from(path));
            }
            Some(other) => return Err(format!("unexpected argument {other:?}")),
            None => return Err("missing `-- COMMAND`".to_owned()),
        }
    }
    let command: Vec<String> = args.collect();
    if command.is_empty() {
        return Err("missing COMMAND after `--`".to_owned());
    }
    Ok(Args { tollgate: tollgate.unwrap_or_else(default_tollgate), command })
}

/// `$CARGO_TARGET_DIR/debug/tollgate`, else the workspace's `target/debug/tollgate`.
fn default_tollgate() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug").join("tollgate")
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let tollgate = std::fs::canonicalize(&args.tollgate).with_context(|| {
        format!("no tollgate binary at {} (run `cargo build -p tollgate` or pass --tollgate)", args.tollgate.display())
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The fake serves on the runtime's workers while this thread drives the processes.
    let fake = runtime.block_on(FakeOpenAi::start_with(Options::default())).context("starting the fake upstream")?;
    let claude = runtime
        .block_on(FakeAnthropic::start_with(tollgate_testkit::fake_anthropic::Options::default()))
        .context("starting the fake Anthropic upstream")?;
    let gemini = runtime.block_on(FakeGemini::start(GEMINI_KEY));
    let dir = tempfile::Builder::new().prefix("with-gateway-").tempdir().context("creating a temporary directory")?;
    let fixture = Fixture::write(dir.path(), &fake, &claude.base_url(), &gemini.base_url())?;

    let mut server = Server::spawn(&tollgate, &fixture)?;
    let outcome = run_command(&runtime, &tollgate, &fixture, &mut server, &args.command);
    let stopped = server.stop();
    if outcome.is_err() || stopped.is_err() {
        server.print_log();
    }
    if let (Err(_), Err(stop_err)) = (&outcome, &stopped) {
        eprintln!("with-gateway: also, stopping the server failed: {stop_err:#}");
    }
    let status = outcome?;
    stopped?;
    drop((fake, claude, gemini));
    Ok(exit_code(status))
}

/// Waits for the server, creates and checks the key, then runs COMMAND to its end.
fn run_command(
    runtime: &Runtime,
    tollgate: &Path,
    fixture: &Fixture,
    server: &mut Server,
    command: &[String],
) -> anyhow::Result<ExitStatus> {
    let gateway_url = server.wait_ready(&fixture.ready_file)?;
    let key = create_key(tollgate, fixture)?;
    runtime.block_on(wait_key_accepted(&gateway_url, &key))?;
    eprintln!("with-gateway: gateway at {gateway_url}, fake upstream at {fake}", fake = fixture.fake_url);

    let (program, rest) = command.split_first().ok_or_else(|| anyhow!("missing COMMAND"))?;
    Command::new(program)
        .args(rest)
        .env("TOLLGATE_BASE_URL", format!("{gateway_url}/v1"))
        .env("TOLLGATE_API_KEY", &key)
        .env("TOLLGATE_ADMIN_TOKEN", &fixture.admin_token)
        .env("TOLLGATE_GATEWAY_URL", &gateway_url)
        .env("TOLLGATE_DATA_DIR", &fixture.data_dir)
        .env("TOLLGATE_CONFIG_FILE", &fixture.config_file)
        .env("TOLLGATE_BIN", tollgate)
        .status()
        .with_context(|| format!("running {program:?}"))
}

/// The files a gateway run needs, all inside the temporary directory.
struct Fixture {
    config_file: PathBuf,
    data_dir: PathBuf,
    ready_file: PathBuf,
    log_file: PathBuf,
    admin_token: String,
    fake_url: String,
}

impl Fixture {
    fn write(dir: &Path, fake: &FakeOpenAi, claude_url: &str, gemini_url: &str) -> anyhow::Result<Fixture> {
        let data_dir = dir.join("data");
        let admin_token = format!("tg-admin-{:016x}{:016x}", random_u64(), random_u64());
        let fake_url = fake.base_url();
        let dead_url = format!("http://127.0.0.1:{}/v1", closed_port()?);
        let config = json!({
            "listen": "127.0.0.1:0",
            "data_dir": path_str(&data_dir)?,
            "admin_token": admin_token,
            "demo": true,
            "max_body_bytes": 65_536,
            // The suites send bad keys on purpose and poll new keys until the server knows
            // them, all from 127.0.0.1: past the default 60 a minute the throttle would answer
            // 429 where a suite checks the SDK's 401. The throttle has its own gateway test.
            "limits": { "auth_failures_per_minute": 0 },
            "providers": [
                { "name": "fake", "kind": "openai", "base_url": fake_url, "api_key": "sk-fake-upstream" },
                { "name": "dead", "kind": "openai", "base_url": dead_url, "api_key": "sk-dead-upstream" },
                { "name": "claude", "kind": "anthropic", "base_url": claude_url, "api_key": "sk-ant-fake-upstream" },
                { "name": "gemini", "kind": "gemini", "base_url": gemini_url, "api_key": GEMINI_KEY },
            ],
            "models": [
                {
                    "id": "gpt-4o-mini", "type": "chat",
                    "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.60,
                    "channels": [{ "provider": "fake", "model": "gpt-4o-mini" }],
                },
                {
                    "id": "text-embedding-3-small", "type": "embedding",
                    "input_price_per_mtok": 0.02,
                    "channels": [{ "provider": "fake", "model": "text-embedding-3-small" }],
                },
                {
                    "id": "gpt-image-1", "type": "image",
                    "price_per_image": 0.04,
                    "channels": [{ "provider": "fake", "model": "gpt-image-1" }],
                },
                {
                    "id": "claude-fake", "type": "chat",
                    "input_price_per_mtok": 3.0, "output_price_per_mtok": 15.0,
                    "channels": [{ "provider": "claude", "model": "claude-fake-1" }],
                },
                {
                    "id": "gemini-fake", "type": "chat",
                    "input_price_per_mtok": 0.30, "output_price_per_mtok": 2.50,
                    "channels": [{ "provider": "gemini", "model": "gemini-2.5-flash" }],
                },
                {
                    "id": "broken-model", "type": "chat",
                    "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0,
                    "channels": [{ "provider": "dead", "model": "broken-model" }],
                },
            ],
        });
        let config = toml::Value::try_from(config).context("converting the config to TOML")?;
        let config = toml::to_string(&config).context("serialising the config")?;
        let config_file = dir.join("tollgate.toml");
        std::fs::write(&config_file, config).with_context(|| format!("writing {}", config_file.display()))?;
        Ok(Fixture {
            config_file,
            data_dir,
            ready_file: dir.join("ready"),
            log_file: dir.join("tollgate.log"),
            admin_token,
            fake_url,
        })
    }

    /// A `tollgate` command on this fixture's config, untouched by the caller's
    /// `TOLLGATE_*` variables (which would override the file).
    fn tollgate(&self, tollgate: &Path) -> Command {
        let mut command = Command::new(tollgate);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TOLLGATE_") {
                command.env_remove(name);
            }
        }
        command.arg("--config").arg(&self.config_file);
        command
    }
}

/// The running `tollgate serve`; killed on drop unless stopped.
struct Server {
    child: Option<Child>,
    log_file: PathBuf,
}

impl Server {
    fn spawn(tollgate: &Path, fixture: &Fixture) -> anyhow::Result<Server> {
        let log =
            File::create(&fixture.log_file).with_context(|| format!("creating {}", fixture.log_file.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let child = fixture
            .tollgate(tollgate)
            .arg("serve")
            .arg("--ready-file")
            .arg(&fixture.ready_file)
            // The log is a file that gets printed on failure: no colour codes in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {}", tollgate.display()))?;
        Ok(Server { child: Some(child), log_file: fixture.log_file.clone() })
    }

    /// Waits for the ready file and returns the base URL written into it.
    fn wait_ready(&mut self, ready_file: &Path) -> anyhow::Result<String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // The server writes a temporary file and renames it, so a read sees all or nothing.
            if let Ok(url) = std::fs::read_to_string(ready_file) {
                let url = url.trim().trim_end_matches('/').to_owned();
                if url.starts_with("http://") {
                    return Ok(url);
                }
                bail!("ready file holds {url:?}, not a base URL");
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("checking the server")?,
                None => None,
            };
            if let Some(status) = exited {
                bail!("tollgate serve exited during start-up with {status}");
            }
            if Instant::now() >= deadline {
                bail!("tollgate serve did not become ready within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGTERM, then waits for a clean exit; an error if it fails or takes too long.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait().context("checking the server")? {
            bail!("tollgate serve had already exited with {status}");
        }
        let term =
            Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().context("running kill -TERM")?;
        if !term.success() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kill -TERM {} failed with {term}", child.id());
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the server")? {
                if status.success() {
                    return Ok(());
                }
                bail!("tollgate serve exited with {status} after SIGTERM");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("tollgate serve did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn print_log(&self) {
        match std::fs::read_to_string(&self.log_file) {
            Ok(log) => eprintln!("with-gateway: tollgate serve log:\n{log}"),
            Err(err) => eprintln!("with-gateway: cannot read {}: {err}", self.log_file.display()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tollgate keys create --json` → the secret.
fn create_key(tollgate: &Path, fixture: &Fixture) -> anyhow::Result<String> {
    let output = fixture
        .tollgate(tollgate)
        .args(["keys", "create", "--name", "with-gateway", "--json"])
        .stdin(Stdio::null())
        .output()
        .context("running tollgate keys create")?;
    if !output.status.success() {
        bail!("tollgate keys create exited with {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let created: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!("tollgate keys create printed no JSON: {:?}", String::from_utf8_lossy(&output.stdout))
    })?;
    created["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("tollgate keys create printed no \"key\": {created}"))
}

/// Polls `GET /v1/models` with the key until it stops answering 401.
async fn wait_key_accepted(gateway_url: &str, key: &str) -> anyhow::Result<()> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("{gateway_url}/v1/models").parse().context("building the models URL")?;
    let deadline = Instant::now() + KEY_ACCEPT_TIMEOUT;
    loop {
        let request = Request::get(uri.clone())
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Empty::new())
            .context("building the models request")?;
        let status = client.request(request).await.context("GET /v1/models")?.status();
        if status != StatusCode::UNAUTHORIZED {
            if status.is_success() {
                return Ok(());
            }
            bail!("GET /v1/models with the new key answered {status}");
        }
        if Instant::now() >= deadline {
            bail!("the new key was still rejected after {KEY_ACCEPT_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A loopback port with nothing listening: bound, read, released.
fn closed_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe port")?;
    Ok(listener.local_addr().context("reading the probe port")?.port())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().ok_or_else(|| anyhow!("{} is not valid UTF-8", path.display()))
}

/// Random bits from the standard library's per-process hasher keys; enough for a
/// throwaway admin token on loopback.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// COMMAND's exit code; a death by signal N becomes 128 + N, as shells report it.
fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
        }
    }
    ExitCode::FAILURE
}
