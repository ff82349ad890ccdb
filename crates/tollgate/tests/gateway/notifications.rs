//! Notifications end to end: budget thresholds, quota exhaustion and expiry reminders
//! found by the real server's sweep, delivered to a real HTTP receiver on its own port
//! (signed, retried after a 500) and to a real SMTP server (aiosmtpd, started from
//! `tests/support/smtp_sink.py`), each exactly once — also with two servers on one
//! database.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tollgate_core::MicroUsd;
use tollgate_core::audit::AuditEntry;
use tollgate_core::key::{KeyDigest, KeyRecord, KeySettings, KeyStatus};
use tollgate_core::time::now_millis;
use tollgate_core::usage::{BillingReason, UsageEvent};
use tollgate_service::{Actor, KeyView, NewKey, SettingsInput};
use tollgate_store::{DeliveryStatus, Store};
use tollgate_testkit::app::{PgDatabase, TestApp};

const SECRET: &str = "whsec-test-0123456789abcdef";
const SMTP_PASSWORD: &str = "smtp-secret-pw-42";
const DAY: i64 = 86_400_000;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    event: String,
    signature: String,
    body: String,
    /// What the receiver answered.
    status: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every request and answers 200 —
/// or 500 to the very first one when `fail_first`.
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(fail_first: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/tollgate", listener.local_addr().unwrap());
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let recorded = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let header =
                                |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                            let (event, signature) = (header("x-tollgate-event"), header("x-tollgate-signature"));
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let mut hits = recorded.lock().unwrap();
                            let status = if fail_first && hits.is_empty() { 500 } else { 200 };
                            let body = String::from_utf8_lossy(&body).into_owned();
                            hits.push(Hit { event, signature, body, status });
                            Ok::<_, Infallible>(
                                hyper::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, hits, task }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Successful deliveries as `type detail` (threshold or reminder), in arrival order.
    fn delivered(&self) -> Vec<String> {
        self.hits().iter().filter(|h| h.status == 200).map(|h| label(&h.json())).collect()
    }
}

fn label(event: &Value) -> String {
    let d = &event["data"];
    let detail = match event["type"].as_str().unwrap() {
        "budget.threshold" => d["threshold_percent"].to_string(),
        "key.expiring" => d["reminder"].as_str().unwrap().to_owned(),
        _ => String::new(),
    };
    format!("{} {detail}", event["type"].as_str().unwrap()).trim_end().to_owned()
}

/// Whether `header` (`t=…,v1=…`) signs `body` under `secret`, made at most 5 minutes ago.
fn verifies(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if (now_millis() / 1000 - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

/// Polls `check` every 20 ms until it holds; fails the test after `within`.
async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn notifications_toml(extra: &str) -> String {
    format!(
        "\n[notifications]\nsweep_interval_ms = 200\nretry_base_ms = 100\nretry_max_ms = 1000\n\
         timeout_ms = 2000\n{extra}\n"
    )
}

fn webhook_toml(receiver: &Receiver) -> String {
    notifications_toml(&format!("webhook_url = \"{}\"\nwebhook_secret = \"{SECRET}\"", receiver.url))
}

async fn budget_key(app: &TestApp, name: &str, settings: SettingsInput) -> KeyView {
    app.services()
        .unwrap()
        .create_key(&Actor::cli(), NewKey { name: name.into(), settings, ..Default::default() })
        .await
        .unwrap()
        .key
}

fn budget_of_one_usd() -> SettingsInput {
    SettingsInput {
        budget_usd: Some(Some(1.0)),
        budget_alert_thresholds: Some(Some(vec![50, 80, 100])),
        ..Default::default()
    }
}

/// Bills `key` like the usage writer does: one usage row, key counters rolled.
async fn bill(store: &Store, key: &KeyView, cost_micros: i64, tokens: u64) {
    let mut e = UsageEvent::new(tollgate_core::ids::new_id("req"), now_millis(), "/v1/chat/completions".into());
    e.key_id = Some(key.id.clone());
    e.key_name = Some(key.name.clone());
    e.org_id = Some(key.org_id.clone());
    e.team_id = Some(key.team_id.clone());
    e.user_id = Some(key.owner_id.clone());
    e.model = Some("gpt-4o-mini".into());
    e.prompt_tokens = tokens;
    e.cost = MicroUsd(cost_micros);
    e.billing_reason = BillingReason::Completed;
    assert_eq!(store.insert_usage(&[e]).await.unwrap(), 1);
}

/// Lets `n` more sweeps of every running notifier pass (for "nothing more arrives").
async fn a_few_sweeps() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[tokio::test]
async fn budget_thresholds_are_signed_retried_and_sent_once_each_as_spend_crosses_them() {
    let receiver = Receiver::start(true).await;
    let shared = tempfile::tempdir().unwrap();
    let top = format!(
        "database_url = \"{}\"\npepper = \"shared-pepper-for-both-instances-0123456789\"",
        Store::sqlite_url(&shared.path().join("shared.db"))
    );
    let mut app = TestApp::start_with_top(&top, &webhook_toml(&receiver)).await.unwrap();
    let key = budget_key(&app, "metered", budget_of_one_usd()).await;
    let store = app.store().await.unwrap();

    bill(&store, &key, 400_000, 10).await;
    a_few_sweeps().await;
    assert!(receiver.hits().is_empty(), "nothing is due at 40%: {:?}", receiver.hits());

    bill(&store, &key, 100_000, 10).await; // 50 %
    wait_for("the 50% alert", Duration::from_secs(10), || receiver.delivered().len() == 1).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2, "a 500 first, then the retry: {hits:?}");
    assert_eq!((hits[0].status, hits[1].status), (500, 200));
    assert_eq!(hits[0].body, hits[1].body, "the retry sends the same event");

    bill(&store, &key, 350_000, 10).await; // 85 %
    wait_for("the 80% alert", Duration::from_secs(10), || receiver.delivered().len() == 2).await;
    bill(&store, &key, 150_000, 10).await; // 100 %
    wait_for("the 100% alert", Duration::from_secs(10), || receiver.delivered().len() == 4).await;

    // A second server on the same database: its first sweep finds every alert recorded.
    let mut second = TestApp::start_with_top(&top, &webhook_toml(&receiver)).await.unwrap();
    a_few_sweeps().await;
    let delivered = receiver.delivered();
    assert_eq!(delivered[..2], ["budget.threshold 50", "budget.threshold 80"], "in the order spend crossed them");
    let mut last = delivered[2..].to_vec();
    last.sort();
    assert_eq!(last, ["budget.exhausted", "budget.threshold 100"], "each alert once, across sweeps and servers");

    let hit = receiver.hits().pop().unwrap();
    let event = hit.json();
    assert_eq!(hit.event, event["type"].as_str().unwrap());
    assert!(event["id"].as_str().unwrap().starts_with("ntf_"));
    assert!(tollgate_core::time::parse_rfc3339(event["created_at"].as_str().unwrap()).is_some());
    assert_eq!(event["organization_id"], key.org_id.as_str());
    assert_eq!(event["key"], serde_json::json!({ "id": key.id, "name": "metered", "owner_id": key.owner_id }));
    let threshold = receiver.hits().iter().map(Hit::json).find(|e| label(e) == "budget.threshold 80").unwrap();
    assert_eq!(threshold["data"], serde_json::json!({ "threshold_percent": 80, "budget_usd": 1.0, "spend_usd": 0.85 }));
    for h in receiver.hits() {
        assert!(verifies(SECRET, &h.signature, &h.body), "signature of {}", h.body);
        assert!(!verifies("whsec-some-other-secret-000", &h.signature, &h.body), "a wrong secret must not verify");
        assert!(
            !verifies(SECRET, &h.signature, &h.body.replace("metered", "metereD")),
            "a changed body must not verify"
        );
        assert!(!h.body.contains(SECRET));
    }

    let rows = store.list_notifications(Some(&key.id), 10).await.unwrap();
    assert_eq!(rows.len(), 4);
    let fifty = rows.iter().find(|n| n.detail.starts_with("50@")).unwrap();
    assert_eq!(fifty.deliveries.len(), 1);
    let d = &fifty.deliveries[0];
    assert_eq!(
        (d.channel.as_str(), d.status, d.attempts, d.last_error.as_deref()),
        ("webhook", DeliveryStatus::Sent, 2, None)
    );
    store.close().await;
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn two_servers_on_one_postgres_send_each_alert_once() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let receiver = Receiver::start(false).await;
    let top = format!("database_url = \"{}\"\npepper = \"shared-pepper-for-both-instances-0123456789\"", db.url);
    let mut one = TestApp::start_with_top(&top, &webhook_toml(&receiver)).await.unwrap();
    let mut two = TestApp::start_with_top(&top, &webhook_toml(&receiver)).await.unwrap();
    let mut settings = budget_of_one_usd();
    settings.token_quota = Some(Some(100));
    let key = budget_key(&one, "shared", settings).await;
    let store = one.store().await.unwrap();
    bill(&store, &key, 1_200_000, 150).await;
    wait_for("every alert", Duration::from_secs(10), || receiver.delivered().len() >= 5).await;
    a_few_sweeps().await;
    let mut got = receiver.delivered();
    got.sort();
    assert_eq!(
        got,
        ["budget.exhausted", "budget.threshold 100", "budget.threshold 50", "budget.threshold 80", "quota.exhausted"]
    );
    let quota = receiver.hits().iter().map(Hit::json).find(|e| e["type"] == "quota.exhausted").unwrap();
    assert_eq!(quota["data"], serde_json::json!({ "token_quota": 100, "tokens_used": 150 }));
    store.close().await;
    one.stop().await;
    two.stop().await;
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn expiry_reminders_come_seven_days_before_one_day_before_and_at_expiry() {
    let receiver = Receiver::start(false).await;
    let mut app = TestApp::start_with(&webhook_toml(&receiver)).await.unwrap();
    let store = app.store().await.unwrap();
    let owner = store.find_user_by_email("owner@test.local").await.unwrap().0;
    let org = store.first_organization().await.unwrap();
    let team = store.list_teams(Some(&org.id)).await.unwrap().remove(0);
    let now = now_millis();
    // (name, created, expires): made long ago unless said otherwise.
    for (i, (name, created_at, expires_at)) in [
        ("in-6-days", now - 30 * DAY, now + 6 * DAY),
        ("in-12-hours", now - 30 * DAY, now + DAY / 2),
        ("expired-an-hour-ago", now - 30 * DAY, now - DAY / 24),
        ("in-10-days", now - 30 * DAY, now + 10 * DAY),
        ("made-for-3-days", now - DAY / 24, now + 3 * DAY),
        ("expired-last-month", now - 90 * DAY, now - 30 * DAY),
    ]
    .into_iter()
    .enumerate()
    {
        let mut digest = [0u8; 32];
        tollgate_core::ids::fill_random(&mut digest);
        let key = KeyRecord {
            id: format!("key_expiry_{i}"),
            name: name.into(),
            org_id: org.id.clone(),
            team_id: team.id.clone(),
            owner_id: owner.id.clone(),
            digest: KeyDigest(digest),
            preview: "sk-tg-…test".into(),
            status: KeyStatus::Active,
            created_at,
            updated_at: created_at,
            expires_at: Some(expires_at),
            last_used_at: None,
            request_count: 0,
            tokens_used: 0,
            spend: MicroUsd::ZERO,
            settings: KeySettings::default(),
            previous_digest: None,
            rotation_key: None,
            secret_sealed: None,
        };
        let audit = AuditEntry {
            at: now,
            actor: "test".into(),
            action: "key.create".into(),
            target_type: "key".into(),
            target_id: key.id.clone(),
            before: None,
            after: None,
            source_ip: None,
            org_id: Some(org.id.clone()),
        };
        store.insert_key(&key, &audit).await.unwrap();
    }
    wait_for("three reminders", Duration::from_secs(10), || receiver.delivered().len() >= 3).await;
    a_few_sweeps().await;
    let mut got: Vec<(String, String)> = receiver
        .hits()
        .iter()
        .map(Hit::json)
        .map(|e| (e["key"]["name"].as_str().unwrap().to_owned(), e["data"]["reminder"].as_str().unwrap().to_owned()))
        .collect();
    got.sort();
    let expected = [("expired-an-hour-ago", "expired"), ("in-12-hours", "1d"), ("in-6-days", "7d")];
    assert_eq!(got, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    for h in receiver.hits() {
        assert_eq!(h.event, "key.expiring");
        assert!(verifies(SECRET, &h.signature, &h.body));
        assert!(tollgate_core::time::parse_rfc3339(h.json()["data"]["expires_at"].as_str().unwrap()).is_some());
    }
    store.close().await;
    app.stop().await;
}

fn smtp_toml(port: u16, starttls: bool) -> String {
    notifications_toml(&format!(
        "smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_username = \"mailer\"\n\
         smtp_password = \"{SMTP_PASSWORD}\"\n\
         smtp_from = \"Tollgate Alerts <alerts@tollgate.test>\"\nsmtp_starttls = {starttls}\nmax_attempts = 2"
    ))
}

/// Runs an app against the SMTP server on `port` with `smtp_starttls = true`, spends a
/// key's quota, and returns the error its email delivery failed with.
async fn failed_email(port: u16) -> String {
    let mut app = TestApp::start_with(&smtp_toml(port, true)).await.unwrap();
    let key = budget_key(&app, "strict", SettingsInput { token_quota: Some(Some(1)), ..Default::default() }).await;
    let store = app.store().await.unwrap();
    bill(&store, &key, 0, 5).await;
    let start = Instant::now();
    let error = loop {
        let rows = store.list_notifications(Some(&key.id), 10).await.unwrap();
        if let Some(d) = rows.first().and_then(|n| n.deliveries.first()).filter(|d| d.status == DeliveryStatus::Failed)
        {
            break d.last_error.clone().unwrap_or_default();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no failed delivery: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    store.close().await;
    app.stop().await;
    assert!(!error.contains(SMTP_PASSWORD));
    error
}

/// A Python with aiosmtpd: `TOLLGATE_TEST_PYTHON`, else the venv that
/// `scripts/sdk-tests.sh` makes (`target/sdk-venv`), else `python3`.
async fn python_with_aiosmtpd() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let candidates = [
        std::env::var_os("TOLLGATE_TEST_PYTHON").map(PathBuf::from),
        Some(root.join(&target).join("sdk-venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    for python in candidates.into_iter().flatten() {
        let ok = tokio::process::Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
        // A Python named on purpose (scripts/test.sh does) must be usable: fail, not skip.
        assert!(
            std::env::var_os("TOLLGATE_TEST_PYTHON").is_none_or(|p| p != python.as_os_str()),
            "TOLLGATE_TEST_PYTHON={} cannot import aiosmtpd",
            python.display()
        );
    }
    None
}

/// `tests/support/smtp_sink.py`: a real SMTP server on a free loopback port.
struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl SmtpSink {
    async fn start(python: &PathBuf, args: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/smtp_sink.py");
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .arg(dir.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).await.unwrap();
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("the sink's port");
        Self { port, dir, _child: child }
    }

    fn messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "json") {
                out.push(serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap());
            }
        }
        out
    }
}

#[tokio::test]
async fn email_reaches_the_key_owner_through_a_real_smtp_server() {
    let Some(python) = python_with_aiosmtpd().await else {
        eprintln!(
            "SKIPPED email_reaches_the_key_owner_through_a_real_smtp_server: no Python with aiosmtpd \
             (run scripts/sdk-tests.sh once, or set TOLLGATE_TEST_PYTHON)"
        );
        return;
    };
    let sink = SmtpSink::start(&python, &["--auth", &format!("mailer:{SMTP_PASSWORD}")]).await;
    let mut app = TestApp::start_with(&smtp_toml(sink.port, false)).await.unwrap();
    let quota = SettingsInput { token_quota: Some(Some(100)), ..Default::default() };
    let key = budget_key(&app, "batch-jobs", quota).await;
    let store = app.store().await.unwrap();
    bill(&store, &key, 10, 120).await;
    wait_for("the email", Duration::from_secs(10), || !sink.messages().is_empty()).await;

    let mail = sink.messages().remove(0);
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["owner@test.local"]));
    assert_eq!(mail["mail_from"], "alerts@tollgate.test");
    assert_eq!(mail["login"], "mailer", "AUTH PLAIN with the configured user");
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("\r\nSubject: [Tollgate] Key \"batch-jobs\" has used its token quota\r\n"), "{data}");
    assert!(
        data.contains("\r\nTo: <owner@test.local>\r\n")
            && data.contains("From: Tollgate Alerts <alerts@tollgate.test>")
    );
    assert!(data.contains("has used 120 of its 100 tokens"), "{data}");
    assert!(data.contains(&key.id));
    assert!(!data.contains(SMTP_PASSWORD));
    let rows = store.list_notifications(Some(&key.id), 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, "quota.exhausted");

    // Recorded as sent (the SMTP server had the message before the notifier heard 250).
    let start = Instant::now();
    loop {
        let sent = store.list_notifications(Some(&key.id), 10).await.unwrap().remove(0).deliveries.remove(0);
        if sent.status == DeliveryStatus::Sent {
            assert_eq!((sent.channel.as_str(), sent.attempts), ("email", 1));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "not recorded as sent: {sent:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
    app.stop().await;
}

#[tokio::test]
async fn with_starttls_on_nothing_is_sent_without_a_trusted_tls_connection() {
    let Some(python) = python_with_aiosmtpd().await else {
        eprintln!("SKIPPED with_starttls_on_nothing_is_sent_without_a_trusted_tls_connection: no Python with aiosmtpd");
        return;
    };
    // A server that does not offer STARTTLS gets nothing, not even the envelope.
    let plain = SmtpSink::start(&python, &["--auth", &format!("mailer:{SMTP_PASSWORD}")]).await;
    let error = failed_email(plain.port).await;
    assert!(error.contains("does not offer STARTTLS"), "{error}");
    assert!(plain.messages().is_empty());

    // One that does, with a certificate no public CA signed: the handshake is refused.
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = tokio::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("SKIPPED the untrusted-certificate half: no openssl to make a certificate");
        return;
    }
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let tls = SmtpSink::start(&python, &["--tls-cert", cert, "--tls-key", key]).await;
    let error = failed_email(tls.port).await;
    assert!(error.contains("TLS handshake failed") && error.contains("certificate"), "{error}");
    assert!(tls.messages().is_empty());
}
