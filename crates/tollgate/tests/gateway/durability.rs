//! Usage rows through stops, crashes and a database that goes away: SIGTERM with a
//! hundred streams in flight, `kill -9` in the middle of a load and a restart, PostgreSQL
//! cut off behind a relay while traffic goes on, and a spill file replayed twice. No row
//! is ever written twice; a graceful stop, an absent database and a crash lose none (a
//! crash's events are replayed from the usage journal at the restart). After each, the key's and
//! the organization's counters, the ledger and the daily aggregates equal the rows exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_core::MicroUsd;
use tollgate_core::usage::{BillingReason, UsageEvent};
use tollgate_service::{Actor, Credit, NewKey};
use tollgate_store::{DailyQuery, LedgerKind, LedgerQuery, Store, UsageQuery, UsageRow};
use tollgate_testkit::app::{PgDatabase, TestApp, config_with};
use tollgate_testkit::client::{TestClient, read_to_end, read_until};
use tollgate_testkit::fake_openai::FakeOpenAi;
use tollgate_testkit::relay::Relay;

const CHAT: &str = "/v1/chat/completions";
const SPILL: &str = "usage-spill.jsonl";
/// `shutdown_grace_secs` of the test config.
const GRACE: Duration = Duration::from_secs(10);

fn tollgate(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("--config").arg(config).env_remove("TOLLGATE_CONFIG");
    cmd
}

/// Runs a CLI command that prints JSON.
fn cli_json(config: &Path, args: &[&str]) -> Value {
    let out = tollgate(config).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes the test config into `dir` and returns its path.
fn write_config(dir: &Path, fake: &FakeOpenAi, top: &str, extra: &str) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, config_with(dir, &fake.base_url(), top, extra)).unwrap();
    path
}

/// A key created with the CLI before the server starts (so the server loads it): its
/// id, organization and secret.
struct CliKey {
    id: String,
    org_id: String,
    secret: String,
}

fn create_key(config: &Path, name: &str) -> CliKey {
    let created = cli_json(config, &["keys", "create", "--name", name, "--json"]);
    let id = created["id"].as_str().unwrap().to_owned();
    let view = cli_json(config, &["keys", "get", &id, "--json"]);
    CliKey {
        org_id: view["org_id"].as_str().unwrap().to_owned(),
        secret: created["key"].as_str().unwrap().to_owned(),
        id,
    }
}

/// A `tollgate serve` child process; killed on drop if still running.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    async fn start(config: &Path, name: &str) -> Self {
        Self::start_with_env(config, name, &[]).await
    }

    /// As [`Serve::start`], with `TOLLGATE_*` overrides.
    async fn start_with_env(config: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        let dir = config.parent().unwrap();
        let ready = dir.join(format!("{name}.ready"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = tollgate(config)
            .args(["serve", "--ready-file"])
            .arg(&ready)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(30), "{name} did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, base: std::fs::read_to_string(&ready).unwrap() }
    }

    fn sigterm(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    }

    /// SIGKILL: no drain, no flush, nothing.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits (bounded) for the process to exit.
    async fn exited(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < within, "the server did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sqlite_store_url(dir: &Path) -> String {
    Store::sqlite_url(&dir.join("data/tollgate.db"))
}

async fn usage_rows(store: &Store, q: UsageQuery) -> Vec<UsageRow> {
    store.list_usage(&UsageQuery { limit: 1_000_000, ..q }).await.unwrap()
}

/// Rows, tokens and cost (micro-USD) of a set of usage rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums {
    rows: i64,
    tokens: i64,
    cost: i64,
}

impl Sums {
    fn of<'a>(rows: impl IntoIterator<Item = &'a UsageRow>) -> Self {
        rows.into_iter().fold(Self::default(), |s, r| Self {
            rows: s.rows + 1,
            tokens: s.tokens + i64::try_from(r.prompt_tokens + r.completion_tokens).unwrap(),
            cost: s.cost + r.cost.0,
        })
    }
}

/// What the counters add up to once they agree with the rows.
#[derive(Debug)]
struct Reconciled {
    key_rows: Vec<UsageRow>,
    key: Sums,
    org: Sums,
    /// The organization's balance: credit − spend = the ledger's sum.
    balance: i64,
}

/// Checks that the key's counters, the organization's spend, its ledger and the daily
/// aggregates all equal what the usage rows add up to. `Err` says what differs.
async fn reconcile(store: &Store, key_id: &str, org_id: &str) -> Result<Reconciled, String> {
    let key_rows = usage_rows(store, UsageQuery { key_id: Some(key_id.to_owned()), ..Default::default() }).await;
    let key = Sums::of(&key_rows);
    let record = store.get_key(key_id).await.map_err(|e| e.to_string())?;
    let counters = Sums { rows: record.request_count, tokens: record.tokens_used, cost: record.spend.0 };
    if counters != key {
        return Err(format!("key counters {counters:?} != its rows {key:?}"));
    }
    let org_rows = usage_rows(store, UsageQuery { org_id: Some(org_id.to_owned()), ..Default::default() }).await;
    let org = Sums::of(&org_rows);
    let money = store.org_money(org_id).await.map_err(|e| e.to_string())?;
    if money.spend.0 != org.cost {
        return Err(format!("organization spend {} != its rows' cost {}", money.spend.0, org.cost));
    }
    let entries = ledger_entries_sum(store, org_id).await?;
    if entries != money.balance().0 {
        return Err(format!("ledger entries add up to {entries} != credit − spend {}", money.balance().0));
    }
    let ledger = store.ledger_sum(org_id).await.map_err(|e| e.to_string())?;
    if ledger != money.balance() {
        return Err(format!("ledger sum {} != credit − spend {}", ledger.0, money.balance().0));
    }
    let q = DailyQuery { org_id: Some(org_id.to_owned()), from_day: 0, to_day: i64::MAX, ..Default::default() };
    let daily = store.usage_daily(&q).await.map_err(|e| e.to_string())?.iter().fold(Sums::default(), |s, d| Sums {
        rows: s.rows + d.requests,
        tokens: s.tokens + d.prompt_tokens + d.completion_tokens,
        cost: s.cost + d.cost.0,
    });
    if daily != org {
        return Err(format!("usage_daily {daily:?} != usage_log {org:?}"));
    }
    Ok(Reconciled { key_rows, key, org, balance: money.balance().0 })
}

/// The organization's ledger entries added up, page by page.
async fn ledger_entries_sum(store: &Store, org_id: &str) -> Result<i64, String> {
    let (mut sum, mut before_id) = (0, None);
    loop {
        let q = LedgerQuery { org_id: org_id.to_owned(), kind: None, before_id, limit: 500 };
        let page = store.list_ledger(&q).await.map_err(|e| e.to_string())?;
        sum += page.iter().map(|e| e.amount.0).sum::<i64>();
        match page.last() {
            Some(last) if page.len() == 500 => before_id = Some(last.id.clone()),
            _ => return Ok(sum),
        }
    }
}

/// How many rows each request id has.
fn rows_per_request(rows: &[UsageRow]) -> HashMap<&str, usize> {
    let mut out = HashMap::new();
    for r in rows {
        *out.entry(r.request_id.as_str()).or_default() += 1;
    }
    out
}

fn spill_files(data_dir: &Path) -> [PathBuf; 2] {
    let spill = data_dir.join(SPILL);
    let replaying = spill.with_extension("replaying");
    [spill, replaying]
}

/// Lines in the usage journal's segments (what a restart replays).
fn journal_lines(data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("usage-journal")) else { return 0 };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum()
}

fn spill_exists(data_dir: &Path) -> bool {
    spill_files(data_dir).iter().any(|p| p.exists())
}

#[tokio::test]
async fn sigterm_with_100_streams_in_flight_completes_and_bills_each_exactly_once() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 27 words at 60 ms: each stream lasts about 1.6 s.
    let slow = "[[providers]]\nname = \"slow-demo\"\nkind = \"demo\"\nword_delay_ms = 60\n\
                [[models]]\nid = \"slow-chat\"\ntype = \"chat\"\ninput_price_per_mtok = 1\n\
                output_price_per_mtok = 2\nchannels = [{ provider = \"slow-demo\" }]\n";
    let config = write_config(dir.path(), &fake, "", slow);
    let key = create_key(&config, "drain");
    let mut server = Serve::start(&config, "serve").await;

    let client = TestClient::default();
    let url = format!("{}{CHAT}", server.base);
    let prompt = "one two three four five six seven eight nine ten eleven twelve";
    let req = json!({ "model": "slow-chat", "stream": true, "messages": [{ "role": "user", "content": prompt }] });
    let opened = Instant::now();
    let streams = futures_util::future::join_all((0..100).map(|_| async {
        let mut s = client.open_stream(&url, &key.secret, &req).await.unwrap();
        let first = read_until(&mut s.body, "chat.completion.chunk").await.unwrap();
        (s, first)
    }))
    .await;
    let all_open = opened.elapsed();

    server.sigterm();
    let ends = futures_util::future::join_all(streams.into_iter().map(|(mut s, mut text)| async move {
        let rest = read_to_end(&mut s.body).await.unwrap();
        let mid_reply = rest.contains("\"content\"");
        text.push_str(&rest);
        (s.request_id, text, mid_reply)
    }));
    let ends = tokio::time::timeout(GRACE + Duration::from_secs(5), ends).await.expect("streams ended in the grace");
    for (id, text, _) in &ends {
        assert!(text.ends_with("data: [DONE]\n\n"), "{id} did not complete during the drain: {text}");
    }
    let status = server.exited(GRACE + Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");

    let store = Store::connect(&sqlite_store_url(dir.path())).await.unwrap();
    let done = reconcile(&store, &key.id, &key.org_id).await.unwrap();
    let chat: Vec<&UsageRow> = done.key_rows.iter().filter(|r| r.endpoint == CHAT).collect();
    assert_eq!(chat.len(), 100);
    assert!(chat.iter().all(|r| r.billing_reason == "completed" && r.stream), "{chat:?}");
    let per_request = rows_per_request(&done.key_rows);
    for (id, _, _) in &ends {
        assert_eq!(per_request.get(id.as_str()), Some(&1), "{id}");
    }
    assert_eq!(done.key.rows, 100, "the key made only these requests");
    assert!(done.key.cost > 0);
    println!(
        "SIGTERM drain: 100 streams open in {all_open:?}, {} still mid-reply at SIGTERM; 100 rows completed, \
         key request_count {} spend {} µUSD tokens {}",
        ends.iter().filter(|e| e.2).count(),
        done.key.rows,
        done.key.cost,
        done.key.tokens
    );
    store.close().await;
}

/// One client of a load: chat completions of the fake OpenAI upstream one after another
/// (streamed or not), each with its own `x-request-id` (`load-<tag>-<n>`), until its first
/// transport error — the server was killed — or `until`. Returns the ids whose 200
/// responses arrived complete, and the bodies of any answer that was not a success.
async fn load_client(
    client: TestClient,
    url: String,
    key: String,
    tag: usize,
    until: Instant,
    served_count: Arc<AtomicUsize>,
) -> (Vec<String>, Vec<String>) {
    let stream = tag.is_multiple_of(2);
    let mut req = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "steady load" }] });
    if stream {
        req["stream"] = true.into();
        req["stream_options"] = json!({ "include_usage": true });
    }
    let auth = format!("Bearer {key}");
    let body = req.to_string();
    let (mut served, mut refused) = (Vec::new(), Vec::new());
    for n in 0.. {
        if Instant::now() >= until {
            break;
        }
        let id = format!("load-{tag}-{n}");
        let headers =
            [("authorization", auth.as_str()), ("content-type", "application/json"), ("x-request-id", id.as_str())];
        let Ok(res) = client.send(http::Method::POST, &url, &headers, body.clone()).await else { break };
        let status = res.status();
        let echoed = res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Ok(text) = read_to_end(&mut res.into_body()).await else { break };
        let complete = if stream { text.ends_with("data: [DONE]\n\n") } else { text.ends_with('}') };
        if status != 200 || !complete {
            refused.push(format!("{status} {text}"));
            continue;
        }
        assert_eq!(echoed.as_deref(), Some(id.as_str()), "the caller's id is echoed");
        served.push(id);
        served_count.fetch_add(1, Ordering::Relaxed);
    }
    (served, refused)
}

/// Under load with the balance enforced, `kill -9`, restart with the same config, stop
/// with SIGTERM: every response a client received in full has exactly one row (its event
/// was in the usage journal, replayed at the restart), and every counter agrees with the
/// rows exactly. The first server batches for 2 s, so most of the last events before the
/// kill were only in memory and the journal.
async fn kill_9_mid_load_then_restart(db: Option<&PgDatabase>) {
    let label = if db.is_some() { "postgres" } else { "sqlite" };
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let top = db.map(|d| format!("database_url = \"{}\"", d.url)).unwrap_or_default();
    let config = write_config(dir.path(), &fake, &top, "[billing]\nenforce_balance = true\n");
    let key = create_key(&config, "load");
    let credit = cli_json(&config, &["billing", "credit", "--amount", "5"]);
    assert_eq!(credit["amount_micros"], 5_000_000, "{credit}");

    let mut first = Serve::start_with_env(&config, "first", &[("TOLLGATE_USAGE__FLUSH_INTERVAL_MS", "2000")]).await;
    let client = TestClient::default();
    let url = format!("{}{CHAT}", first.base);
    let served_count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(60);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (client, url, key) = (client.clone(), url.clone(), key.secret.clone());
        clients.spawn(load_client(client, url, key, i, until, served_count.clone()));
    }
    // About a second of load, with some of it served, then the kill in its middle.
    while started.elapsed() < Duration::from_secs(1) || served_count.load(Ordering::Relaxed) < 64 {
        assert!(started.elapsed() < Duration::from_secs(30), "the load made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill9();
    let load_time = started.elapsed();
    let journaled = journal_lines(&dir.path().join("data"));
    let (mut served, mut refused) = (Vec::new(), Vec::new());
    while let Some(done) = clients.join_next().await {
        let (s, r) = done.unwrap();
        served.extend(s);
        refused.extend(r);
    }
    assert!(refused.is_empty(), "requests refused before the kill: {refused:?}");

    // Restart on the same data; the writer settles, a request is served and written.
    let mut second = Serve::start(&config, "second").await;
    let probe = client
        .post_json(
            &format!("{}{CHAT}", second.base),
            Some(&key.secret),
            &json!({ "model": "demo-chat", "messages": [{ "role": "user", "content": "after the restart" }] }),
        )
        .await
        .unwrap();
    assert_eq!(probe.status, 200, "{}", probe.text());
    let probe_id = probe.header("x-request-id").unwrap().to_owned();
    let store_url = db.map_or_else(|| sqlite_store_url(dir.path()), |d| d.url.clone());
    let store = Store::connect(&store_url).await.unwrap();
    let data_dir = dir.path().join("data");
    let settling = Instant::now();
    loop {
        let q = UsageQuery { request_id: Some(probe_id.clone()), ..Default::default() };
        if !usage_rows(&store, q).await.is_empty() && !spill_exists(&data_dir) {
            break;
        }
        assert!(settling.elapsed() < Duration::from_secs(20), "the restarted server did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let billing = client.get(&format!("{}/api/v1/billing", second.base), Some("test-admin-token")).await.unwrap();
    assert_eq!(billing.status, 200, "{}", billing.text());
    let reported = billing.json()["balance_micros"].as_i64().unwrap();
    second.sigterm();
    let status = second.exited(GRACE + Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");

    let done = reconcile(&store, &key.id, &key.org_id).await.unwrap();
    assert_eq!(done.balance, 5_000_000 - done.org.cost, "credit − spend");
    assert_eq!(done.balance, reported, "the restarted server reported the ledger's balance");
    assert_eq!(done.org, done.key, "the organization's only key");
    let per_request = rows_per_request(&done.key_rows);
    assert!(per_request.values().all(|&n| n == 1), "a request written twice");
    assert_eq!(per_request.get(probe_id.as_str()), Some(&1));
    let mut per_client_id: HashMap<&str, usize> = HashMap::new();
    for r in &done.key_rows {
        if let Some(id) = r.client_request_id.as_deref() {
            *per_client_id.entry(id).or_default() += 1;
        }
    }
    // Requests cut by the kill may have a row (billed for what was delivered) or none
    // (the process died before their event); a response received in full has exactly one.
    let lost: Vec<&String> = served.iter().filter(|id| !per_client_id.contains_key(id.as_str())).collect();
    assert!(lost.is_empty(), "{} of {} served responses have no row: {lost:?}", lost.len(), served.len());
    for id in &served {
        assert_eq!(per_client_id.get(id.as_str()), Some(&1), "{id}");
    }
    let lost = lost.len();
    let served_ids: std::collections::HashSet<&str> = served.iter().map(String::as_str).collect();
    let unseen = done.key_rows.iter().filter(|r| {
        r.request_id != probe_id && !r.client_request_id.as_deref().is_some_and(|id| served_ids.contains(id))
    });
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for r in &done.key_rows {
        *reasons.entry(r.billing_reason.as_str()).or_default() += 1;
    }
    println!(
        "kill -9 mid-load ({label}): killed after {load_time:?}; {} responses served before the kill, {} usage rows \
         ({reasons:?}) = {} µUSD, {} tokens; served without a row: {lost}; written but not \
         seen complete by the client: {}; balance {} µUSD = 5 USD − spend = ledger = GET /api/v1/billing {}; \
         events in the journal at the kill: {journaled}",
        served.len(),
        done.key.rows,
        done.key.cost,
        done.key.tokens,
        unseen.count(),
        done.balance,
        reported,
    );
    store.close().await;
}

#[tokio::test]
async fn kill_9_mid_load_then_restart_reconciles_exactly_on_sqlite() {
    kill_9_mid_load_then_restart(None).await;
}

#[tokio::test]
async fn kill_9_mid_load_then_restart_reconciles_exactly_on_postgres() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    kill_9_mid_load_then_restart(Some(&db)).await;
    db.drop_now().await.unwrap();
}

/// `postgres://user@host:port/db?x` → (`postgres://user@`, `host:port`, `/db?x`).
fn split_pg_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:5432") };
    (format!("{scheme}://{user}"), host, path.to_owned())
}

/// Sends `n` demo chat completions; each must succeed. Returns their request ids.
async fn chats(app: &TestApp, key: &str, n: usize) -> Vec<String> {
    let req = json!({ "model": "demo-chat", "messages": [{ "role": "user", "content": "is the database there" }] });
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let res = app.client.post_json(&app.url(CHAT), Some(key), &req).await.unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
        ids.push(res.header("x-request-id").unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn postgres_away_for_a_while_spills_then_every_row_arrives_once() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let (prefix, target, path) = split_pg_url(&db.url);
    let relay = Relay::start(&target).await.unwrap();
    let through_relay = format!("{prefix}{}{path}", relay.addr());
    let mut app = TestApp::start_with_top(&format!("database_url = \"{through_relay}\""), "").await.unwrap();
    let created = app
        .services()
        .unwrap()
        .create_key(&Actor::cli(), NewKey { name: "away".into(), ..Default::default() })
        .await
        .unwrap();
    let key = created.secret;
    app.key_accepted(&key, Duration::from_secs(5)).await.unwrap();
    // The test's own view of the database, not through the relay.
    let store = Store::connect(&db.url).await.unwrap();
    let data_dir = app.config.data_dir.clone();

    let mut ids = chats(&app, &key, 10).await;
    relay.cut();
    let cut = Instant::now();
    // The data plane never touches the database: requests go on being served.
    ids.extend(chats(&app, &key, 10).await);
    while !spill_exists(&data_dir) {
        assert!(cut.elapsed() < Duration::from_secs(30), "the writer never spilled while the database was away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spilled_after = cut.elapsed();
    ids.extend(chats(&app, &key, 10).await);
    let written = usage_rows(&store, UsageQuery { key_id: Some(created.key.id.clone()), ..Default::default() }).await;
    let written = rows_per_request(&written);
    let deferred = ids[10..].iter().filter(|id| !written.contains_key(id.as_str())).count();
    assert_eq!(deferred, 20, "no row served while the database was away was written before it came back");
    relay.restore();
    let away = cut.elapsed();

    let restored = Instant::now();
    loop {
        let done = reconcile(&store, &created.key.id, &created.key.org_id).await;
        let complete = done.as_ref().is_ok_and(|d| {
            let per_request = rows_per_request(&d.key_rows);
            ids.iter().all(|id| per_request.get(id.as_str()) == Some(&1))
        });
        if complete && !spill_exists(&data_dir) {
            break;
        }
        let missing = done.as_ref().map(|d| {
            let per_request = rows_per_request(&d.key_rows);
            ids.iter().filter(|id| per_request.get(id.as_str()) != Some(&1)).count()
        });
        assert!(
            restored.elapsed() < Duration::from_secs(20),
            "not recovered 20 s after the database came back: {:?}, requests without exactly one row: {missing:?}, \
             spill files: {:?}",
            done.as_ref().err(),
            spill_files(&data_dir).iter().filter(|p| p.exists()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = restored.elapsed();
    let done = reconcile(&store, &created.key.id, &created.key.org_id).await.unwrap();
    assert_eq!(done.balance, -done.org.cost, "no credit: the ledger holds only the usage debits");
    println!(
        "database away {away:?} (spilled {spilled_after:?} after the cut); {} requests served, all written once \
         ({} rows for the key, {} µUSD) {recovery:?} after the database came back",
        ids.len(),
        done.key.rows,
        done.key.cost
    );
    app.stop().await;
    store.close().await;
    drop(relay);
    db.drop_now().await.unwrap();
}

/// Starts the server on `config` (replaying the spill at start), waits until the spill
/// files are gone, and stops it.
async fn run_until_replayed(config: &tollgate_server::Config) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tollgate_server::Server::start(config.clone(), listener).await.unwrap();
    let start = Instant::now();
    while spill_exists(&config.data_dir) {
        assert!(start.elapsed() < Duration::from_secs(10), "the spill was not replayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
    server.wait().await;
}

#[tokio::test]
async fn a_spill_file_replayed_twice_writes_each_row_once() {
    let mut app = TestApp::start().await.unwrap();
    let created = app
        .services()
        .unwrap()
        .create_key(&Actor::cli(), NewKey { name: "spilled".into(), ..Default::default() })
        .await
        .unwrap();
    app.stop().await;
    let k = &created.key;
    let now = tollgate_core::time::now_millis();
    let events: Vec<UsageEvent> = (1..=3u64)
        .map(|i| UsageEvent {
            key_id: Some(k.id.clone()),
            key_name: Some(k.name.clone()),
            org_id: Some(k.org_id.clone()),
            team_id: Some(k.team_id.clone()),
            user_id: Some(k.owner_id.clone()),
            model: Some("demo-chat".into()),
            provider: Some("demo".into()),
            prompt_tokens: 10 * i,
            completion_tokens: 20 * i,
            cost: MicroUsd(1_000 * i64::try_from(i).unwrap()),
            billing_reason: BillingReason::Completed,
            ..UsageEvent::new(format!("req_spilled_{i}"), now, CHAT.into())
        })
        .collect();
    let lines: String = events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    let [spill, replaying] = spill_files(&app.config.data_dir);
    let store = app.store().await.unwrap();
    let usage_debits = |store: Store| async move {
        let q =
            LedgerQuery { org_id: k.org_id.clone(), kind: Some(LedgerKind::Usage), limit: 100, ..Default::default() };
        store.list_ledger(&q).await.unwrap().len()
    };

    // A crash while spilling tore the last line: it is reported and the rest is kept.
    std::fs::write(&spill, format!("{lines}{{\"event_id\":\"use_torn")).unwrap();
    run_until_replayed(&app.config).await;
    let once = reconcile(&store, &k.id, &k.org_id).await.unwrap();
    let expected = Sums { rows: 3, tokens: 180, cost: 6_000 };
    assert_eq!(once.key, expected);
    let debits = usage_debits(store.clone()).await;

    // As after a crash between committing a replay and deleting its file: the same rows
    // again, both in a replay in progress and in a new spill file.
    std::fs::write(&replaying, &lines).unwrap();
    std::fs::write(&spill, &lines).unwrap();
    run_until_replayed(&app.config).await;
    let twice = reconcile(&store, &k.id, &k.org_id).await.unwrap();
    assert_eq!(twice.key, expected, "each event once, counted once");
    assert_eq!(twice.balance, -6_000);
    assert_eq!(usage_debits(store.clone()).await, debits, "no ledger debit for rows already written");
    let per_request = rows_per_request(&twice.key_rows);
    assert!((1..=3).all(|i| per_request.get(format!("req_spilled_{i}").as_str()) == Some(&1)), "{per_request:?}");
    println!("spill replayed three times over (3 events): {} rows, {} µUSD", twice.key.rows, twice.key.cost);
    store.close().await;
}

/// PostgreSQL sums a `bigint` column to a NUMERIC the `Any` driver cannot read: the
/// billing sums cast back (a regression test for a 503 on `GET /api/v1/billing`).
#[tokio::test]
async fn billing_sums_on_postgres() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let mut app = TestApp::start_with_top(&format!("database_url = \"{}\"", db.url), "").await.unwrap();
    let credit = Credit { org_id: None, amount_usd: 2.0, kind: None, note: None };
    app.services().unwrap().add_credit(&Actor::cli(), credit).await.unwrap();
    let store = app.store().await.unwrap();
    let org = store.first_organization().await.unwrap().id;
    let ledger = store.ledger_sum(&org).await.map(|m| m.0).map_err(|e| e.to_string());
    let summary = app.client.get(&app.url("/api/v1/billing"), Some("test-admin-token")).await.unwrap();
    app.stop().await;
    store.close().await;
    db.drop_now().await.unwrap();
    assert_eq!(ledger, Ok(2_000_000));
    assert_eq!(summary.status, 200, "{}", summary.text());
    assert_eq!(summary.json()["balance_micros"], 2_000_000);
}

/// A stream still running when the shutdown grace period ends gets an error event in its
/// own format before the connection closes, and its row is `shutdown_cut`, billed for what
/// was delivered; the counters agree with the rows.
#[tokio::test]
async fn a_stream_running_past_the_grace_period_is_cut_with_an_error_event_and_billed_shutdown_cut() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 27 words at 200 ms: about 5.4 s, far past the 1 s grace.
    let slow = "[[providers]]\nname = \"slow-demo\"\nkind = \"demo\"\nword_delay_ms = 200\n\
                [[models]]\nid = \"slow-chat\"\ntype = \"chat\"\ninput_price_per_mtok = 1\n\
                output_price_per_mtok = 2\nchannels = [{ provider = \"slow-demo\" }]\n";
    let config = write_config(dir.path(), &fake, "", slow);
    let key = create_key(&config, "cut");
    let mut server = Serve::start_with_env(&config, "serve", &[("TOLLGATE_SHUTDOWN_GRACE_SECS", "1")]).await;

    let client = TestClient::default();
    let prompt = "one two three four five six seven eight nine ten eleven twelve";
    let req = json!({ "model": "slow-chat", "stream": true, "messages": [{ "role": "user", "content": prompt }] });
    let mut s = client.open_stream(&format!("{}{CHAT}", server.base), &key.secret, &req).await.unwrap();
    let mut text = read_until(&mut s.body, "\"content\"").await.unwrap();
    server.sigterm();
    let rest = tokio::time::timeout(Duration::from_secs(10), read_to_end(&mut s.body)).await.expect("the cut ended it");
    text.push_str(&rest.unwrap());
    assert!(!text.contains("[DONE]"), "the stream was not cut: {text}");
    let last = tollgate_testkit::client::sse_data(&text).pop().unwrap();
    let error: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(error["error"]["code"], "shutting_down", "{text}");
    let status = server.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");

    let store = Store::connect(&sqlite_store_url(dir.path())).await.unwrap();
    let done = reconcile(&store, &key.id, &key.org_id).await.unwrap();
    let row = done.key_rows.iter().find(|r| r.request_id == s.request_id).expect("the cut stream's row");
    assert_eq!(row.billing_reason, "shutdown_cut");
    assert!(row.completion_tokens > 0 && row.cost.0 > 0, "billed for what was delivered: {row:?}");
    assert!(row.error.as_deref().is_some_and(|e| e.contains("shutdown")), "{row:?}");
    println!(
        "shutdown cut after a 1 s grace: {} completion tokens delivered and billed ({} µUSD)",
        row.completion_tokens, row.cost.0
    );
    store.close().await;
}

/// The journal of a process that died (its lock file free, its last line torn by the
/// crash) is replayed by a running server when its writer is idle, then deleted; the
/// server's own live journal is left alone.
#[tokio::test]
async fn a_dead_processs_journal_is_replayed_by_a_running_server_and_deleted() {
    let app = TestApp::start().await.unwrap();
    let created = app
        .services()
        .unwrap()
        .create_key(&Actor::cli(), NewKey { name: "journaled".into(), ..Default::default() })
        .await
        .unwrap();
    let k = &created.key;
    let now = tollgate_core::time::now_millis();
    let lines: String = (1..=3u64)
        .map(|i| UsageEvent {
            key_id: Some(k.id.clone()),
            org_id: Some(k.org_id.clone()),
            team_id: Some(k.team_id.clone()),
            user_id: Some(k.owner_id.clone()),
            model: Some("demo-chat".into()),
            prompt_tokens: 10 * i,
            completion_tokens: 20 * i,
            cost: MicroUsd(1_000 * i64::try_from(i).unwrap()),
            billing_reason: BillingReason::Completed,
            ..UsageEvent::new(format!("req_journaled_{i}"), now, CHAT.into())
        })
        .map(|e| serde_json::to_string(&e).unwrap() + "\n")
        .collect();
    let dir = app.config.data_dir.join("usage-journal");
    let own: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(own.len(), 2, "the server's own segment and lock: {own:?}");
    std::fs::write(dir.join("999999-jdead.00000000.jsonl"), format!("{lines}{{\"event_id\":\"use_to")).unwrap();
    std::fs::write(dir.join("999999-jdead.lock"), "").unwrap();

    let store = app.store().await.unwrap();
    let start = Instant::now();
    loop {
        let done = reconcile(&store, &k.id, &k.org_id).await.unwrap();
        if done.key.rows == 3 && !dir.join("999999-jdead.lock").exists() {
            assert_eq!(done.key, Sums { rows: 3, tokens: 180, cost: 6_000 });
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "not replayed: {:?}", done.key);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    let mut own = own;
    own.sort();
    assert_eq!(left, own, "only the live journal is left");
    store.close().await;
}
