//! The usage log over the management API and the CLI: every filter narrows to exactly the
//! rows it names (checked against the store), keyset pages walk every row once, members
//! see only the rows of their own keys (list, detail, CSV), the CSV holds exactly the
//! filtered rows and escapes them, the CLI exports the same bytes, and a 1,000,000-row
//! export streams through the server in flat memory.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use tollgate_core::MicroUsd;
use tollgate_core::time::{now_millis, to_rfc3339};
use tollgate_core::usage::{BillingReason, UsageEvent};
use tollgate_service::{Actor, NewKey};
use tollgate_store::UsageRow;
use tollgate_testkit::app::TestApp;
use tollgate_testkit::client::{Answer, next_data};

const ADMIN: &str = "test-admin-token";
const PASSWORD: &str = "a-long-password-123";

async fn get(app: &TestApp, token: &str, path: &str) -> Answer {
    app.client.get(&app.url(&format!("/api/v1{path}")), Some(token)).await.unwrap()
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let res = app.client.post_json(&app.url(&format!("/api/v1{path}")), Some(token), &body).await.unwrap();
    assert!(res.status.is_success(), "POST {path}: {} {}", res.status, res.text());
    res.json()
}

/// A member of the bootstrapped organization in `team`; returns their id and a personal
/// access token.
async fn member(app: &TestApp, email: &str, team: &str) -> (String, String) {
    let body = json!({ "email": email, "password": PASSWORD, "role": "member", "team_ids": [team] });
    let id = post(app, ADMIN, "/users", body).await["id"].as_str().unwrap().to_owned();
    let login = json!({ "email": email, "password": PASSWORD, "name": "tests" });
    let token = post(app, "", "/auth/token", login).await["token"].as_str().unwrap().to_owned();
    (id, token)
}

/// Every row a query selects, walking the pages; the ids must come newest first, once.
async fn all_pages(app: &TestApp, token: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut rows: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let res = get(app, token, &format!("/usage?limit={limit}{query}{after}")).await;
        assert_eq!(res.status, 200, "{query}: {}", res.text());
        let page = res.json();
        rows.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{query}: newest first, no row twice");
    rows
}

fn request_ids(rows: &[Value]) -> BTreeSet<String> {
    rows.iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect()
}

fn expected(rows: &[UsageRow], keep: impl Fn(&UsageRow) -> bool) -> BTreeSet<String> {
    rows.iter().filter(|r| keep(r)).map(|r| r.request_id.clone()).collect()
}

/// A chat request with a chosen request id; returns the status.
async fn chat(app: &TestApp, key: &str, model: &str, request_id: &str) -> u16 {
    let body = json!({ "model": model, "messages": [{ "role": "user", "content": "hello there" }] }).to_string();
    let auth = format!("Bearer {key}");
    let headers =
        [("authorization", auth.as_str()), ("content-type", "application/json"), ("x-request-id", request_id)];
    app.client.call(Method::POST, &app.url("/v1/chat/completions"), &headers, body).await.unwrap().status.as_u16()
}

/// Synthetic rows of a key, as the usage writer would store them.
fn rows_of(key: &tollgate_core::key::KeyRecord, prefix: &str, n: usize, start: i64) -> Vec<UsageEvent> {
    (0..n)
        .map(|i| {
            let mut e =
                UsageEvent::new(format!("{prefix}-{i}"), start + 1_000 * i as i64, "/v1/chat/completions".into());
            e.key_id = Some(key.id.clone());
            e.key_name = Some(key.name.clone());
            e.org_id = Some(key.org_id.clone());
            e.team_id = Some(key.team_id.clone());
            e.user_id = Some(key.owner_id.clone());
            e.model = Some("bulk-model".into());
            e.provider = Some("fake".into());
            e.prompt_tokens = 10;
            e.completion_tokens = i as u64;
            e.cost = MicroUsd(i as i64);
            e.billing_reason = BillingReason::Completed;
            e
        })
        .collect()
}

/// Two members in two teams with a key each; real traffic (successes, an unknown model)
/// and 250 older synthetic rows on the first member's key. Then each filter, alone and
/// combined, against the store's own rows; pages of 37; and what each caller sees.
#[tokio::test]
async fn filters_narrow_pages_walk_every_row_and_members_see_only_their_own_keys() {
    let app = TestApp::start().await.unwrap();
    let default_team = get(&app, ADMIN, "/teams").await.json()["data"][0]["id"].as_str().unwrap().to_owned();
    let ml = post(&app, ADMIN, "/teams", json!({ "name": "ml" })).await["id"].as_str().unwrap().to_owned();
    let (m1_id, m1) = member(&app, "m1@test.local", &default_team).await;
    let (_, m2) = member(&app, "m2@test.local", &ml).await;
    let k1 = post(&app, &m1, "/keys", json!({ "name": "m1-key", "metadata": { "env": "test" } })).await;
    let k2 = post(&app, &m2, "/keys", json!({ "name": "m2-key" })).await;
    let (k1_id, k2_id) = (k1["id"].as_str().unwrap().to_owned(), k2["id"].as_str().unwrap().to_owned());
    for secret in [&k1["key"], &k2["key"]] {
        app.key_accepted(secret.as_str().unwrap(), Duration::from_secs(5)).await.unwrap();
    }
    let (s1, s2) = (k1["key"].as_str().unwrap(), k2["key"].as_str().unwrap());
    for i in 0..3 {
        assert_eq!(chat(&app, s1, "gpt-4o-mini", &format!("m1-ok-{i}")).await, 200);
    }
    assert_eq!(chat(&app, s1, "no-such-model", "m1-failed").await, 404);
    for i in 0..2 {
        assert_eq!(chat(&app, s2, "demo-chat", &format!("m2-ok-{i}")).await, 200);
    }
    let store = app.store().await.unwrap();
    let key1 = store.get_key(&k1_id).await.unwrap();
    store.insert_usage(&rows_of(&key1, "m1-old", 250, 1_600_000_000_000)).await.unwrap();
    store.close().await;
    // The usage writer keeps order: once the last row is in, so is every earlier one.
    assert_eq!(chat(&app, s2, "demo-chat", "last").await, 200);
    app.usage_row("last").await.unwrap();
    let truth = app.all_usage().await.unwrap();

    // The detail of a failed request.
    let failed = get(&app, ADMIN, "/usage/m1-failed").await;
    assert_eq!(failed.status, 200, "{}", failed.text());
    let failed = failed.json();
    assert_eq!((failed["status"].as_u64(), failed["error_code"].as_str()), (Some(404), Some("model_not_found")));
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("no-such-model")), "{failed}");
    assert_eq!(failed["key_metadata"], json!({ "env": "test" }));
    assert_eq!(
        (failed["billing_reason"].as_str(), failed["client_ip"].as_str()),
        (Some("not_billed"), Some("127.0.0.1"))
    );
    assert_eq!((failed["key_id"].as_str(), failed["user_id"].as_str()), (Some(k1_id.as_str()), Some(m1_id.as_str())));
    let ok = get(&app, ADMIN, "/usage/m1-ok-0").await.json();
    assert_eq!(
        (ok["prompt_tokens"].as_u64(), ok["completion_tokens"].as_u64(), ok["cost_micros"].as_i64()),
        (Some(3), Some(5), Some(3))
    );
    assert_eq!(ok["cost_usd"].as_f64(), Some(0.000003));
    assert!(ok["created_at"].as_str().and_then(tollgate_core::time::parse_rfc3339).is_some());
    assert_eq!(get(&app, ADMIN, "/usage/no-such-request").await.status, 404);

    // Each filter, against the store's rows.
    let text = |v: &Option<String>, want: &str| v.as_deref() == Some(want);
    let window = (1_600_000_000_000 + 100_000, 1_600_000_000_000 + 200_000);
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (String::new(), expected(&truth, |_| true)),
        (
            "&request_id=m1-failed".into(),
            expected(&truth, |r| r.request_id == "m1-failed" || text(&r.client_request_id, "m1-failed")),
        ),
        ("&model=demo-chat".into(), expected(&truth, |r| text(&r.model, "demo-chat"))),
        (format!("&key_id={k1_id}"), expected(&truth, |r| text(&r.key_id, &k1_id))),
        (format!("&team_id={ml}"), expected(&truth, |r| text(&r.team_id, &ml))),
        (format!("&user_id={m1_id}"), expected(&truth, |r| text(&r.user_id, &m1_id))),
        ("&status=error".into(), expected(&truth, |r| r.status >= 400)),
        ("&status=success".into(), expected(&truth, |r| r.status < 400)),
        (
            format!("&from={}&to={}", window.0, to_rfc3339(window.1)),
            expected(&truth, |r| (window.0..window.1).contains(&r.created_at)),
        ),
        (
            format!("&key_id={k1_id}&model=gpt-4o-mini&status=success"),
            expected(&truth, |r| text(&r.key_id, &k1_id) && text(&r.model, "gpt-4o-mini") && r.status < 400),
        ),
    ];
    for (query, want) in &cases {
        assert!(!want.is_empty(), "{query} selects nothing: the case proves nothing");
        assert_eq!(&request_ids(&all_pages(&app, ADMIN, query, 1000).await), want, "{query}");
    }
    assert_eq!(cases[6].1.len() + cases[7].1.len(), truth.len());
    assert_eq!(cases[8].1.len(), 100);

    // Pages of 37 walk every row of m1's key once.
    let walked = all_pages(&app, ADMIN, &format!("&key_id={k1_id}"), 37).await;
    assert!(walked.len() > 254, "250 synthetic rows, 4 chats and the /v1/models calls that saw the key accepted");
    assert_eq!(request_ids(&walked), expected(&truth, |r| text(&r.key_id, &k1_id)));

    // Bad filters name themselves.
    for (query, param) in [("status=ok", "status"), ("from=5&to=4", "from"), ("to=soon", "to"), ("limit=1001", "limit")]
    {
        let res = get(&app, ADMIN, &format!("/usage?{query}")).await;
        assert_eq!((res.status.as_u16(), res.json()["error"]["param"].as_str()), (400, Some(param)), "{query}");
    }

    // Members: the rows of their own keys, nothing of the other team's.
    let mine = all_pages(&app, &m1, "", 1000).await;
    assert_eq!(request_ids(&mine), expected(&truth, |r| text(&r.key_id, &k1_id)));
    let theirs = all_pages(&app, &m2, "", 1000).await;
    assert_eq!(request_ids(&theirs), expected(&truth, |r| text(&r.key_id, &k2_id)));
    assert!(all_pages(&app, &m1, &format!("&key_id={k2_id}"), 1000).await.is_empty());
    assert!(all_pages(&app, &m1, &format!("&team_id={ml}"), 1000).await.is_empty());
    assert_eq!(get(&app, &m1, "/usage/m2-ok-0").await.status, 404, "another team's row does not exist");
    assert_eq!(get(&app, &m2, "/usage/m1-failed").await.status, 404);
    assert_eq!(get(&app, &m1, "/usage/m1-failed").await.status, 200);
    let csv = get(&app, &m1, "/usage.csv").await;
    assert_eq!(csv.status, 200);
    let records = parse_csv(&csv.text());
    assert_eq!(records.len(), 1 + mine.len());
    assert!(records[1..].iter().all(|r| r[6] == k1_id), "the key_id column: only m1's key");
    assert!(!csv.text().contains(&k2_id) && !csv.text().contains("m2-ok"));
    let csv = get(&app, &m2, "/usage.csv").await.text();
    assert!(!csv.contains(&k1_id) && csv.contains("m2-ok-1"));

    // Daily totals: a member's cover only their keys; the owner's the organization.
    let owner = post(
        &app,
        "",
        "/auth/token",
        json!({ "email": "owner@test.local",
        "password": tollgate_testkit::app::OWNER_PASSWORD, "name": "t" }),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let day = now_millis().div_euclid(86_400_000);
    let today =
        |key: &str| truth.iter().filter(|r| text(&r.key_id, key) && r.created_at.div_euclid(86_400_000) == day).count();
    assert_eq!(requests_today(&app, &m2).await, today(&k2_id));
    assert_eq!(requests_today(&app, &owner).await, today(&k1_id) + today(&k2_id));
    let old = get(&app, &m1, "/usage/daily?from=2020-09-13&to=2020-09-16").await.json();
    let old: i64 = old["data"].as_array().unwrap().iter().map(|d| d["requests"].as_i64().unwrap()).sum();
    assert_eq!(old, 250, "the synthetic rows' days");
}

/// The last day's `requests` of `GET /usage/daily` (default range: ending today).
async fn requests_today(app: &TestApp, token: &str) -> usize {
    let days = get(app, token, "/usage/daily").await.json();
    let last = days["data"].as_array().unwrap().last().unwrap()["requests"].as_i64().unwrap();
    usize::try_from(last).unwrap()
}

/// A minimal RFC 4180 reader: records of fields, each record ended by CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => {
                assert!(field.is_empty(), "a quote inside an unquoted field");
                quoted = true;
            }
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "records end with CRLF");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, '\n') => panic!("a bare LF outside quotes"),
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && record.is_empty(), "the last record ends with CRLF");
    records
}

/// What the CSV holds for one column of a row as the JSON API shows it.
fn csv_cell(column: &str, row: &Value) -> String {
    let v = &row[column];
    match (column, v) {
        ("cost_usd", _) => {
            let micros = row["cost_micros"].as_i64().unwrap();
            format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
        }
        ("key_metadata", Value::Null) | (_, Value::Null) => String::new(),
        ("key_metadata", m) => m.to_string(),
        (_, Value::String(s)) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

fn tollgate(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("--config").arg(config).env_remove("TOLLGATE_CONFIG");
    cmd
}

/// Rows whose texts need quoting or defusing: the CSV holds exactly the filtered rows,
/// each cell equal to the JSON API's value; the CLI exports the same bytes, to stdout and
/// to a file; `usage list --json` and `usage get` show the API's JSON.
#[tokio::test]
async fn csv_holds_exactly_the_filtered_rows_escaped_and_the_cli_exports_the_same() {
    let app = TestApp::start().await.unwrap();
    let services = app.services().unwrap();
    let created = services
        .create_key(&Actor::cli(), NewKey { name: "ops, \"prod\"".into(), ..Default::default() })
        .await
        .unwrap();
    let store = app.store().await.unwrap();
    let key = store.get_key(&created.key.id).await.unwrap();
    let mut events = rows_of(&key, "csv", 40, now_millis() - 100_000);
    let tricky = [
        ("=HYPERLINK(\"http://evil.test\",\"click\")", "upstream said:\r\n\"no\", twice"),
        ("+1+2", "line one\nline two"),
        ("-cmd", "tab\there"),
        ("@SUM(A1:A9)", "=1+1"),
    ];
    for (i, (model, error)) in tricky.iter().enumerate() {
        let e = &mut events[i * 3];
        e.model = Some((*model).into());
        e.status = 502;
        e.error_code = Some("upstream_error".into());
        e.error = Some((*error).into());
        e.key_metadata = Some(r#"{"env":"prod","note":"a,b \"c\""}"#.into());
    }
    events[1].request_id = "-1+2,\"x\"".into();
    store.insert_usage(&events).await.unwrap();
    store.close().await;

    for query in ["status=error", format!("key_id={}", key.id).as_str(), "model=bulk-model&status=success", ""] {
        let listed = all_pages(&app, ADMIN, &format!("&{query}"), 1000).await;
        let csv = get(&app, ADMIN, &format!("/usage.csv?{query}")).await;
        assert_eq!(csv.status, 200, "{query}: {}", csv.text());
        assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
        assert_eq!(csv.header("content-disposition"), Some("attachment; filename=\"usage.csv\""));
        let records = parse_csv(&csv.text());
        assert_eq!(records[0], tollgate_service::CSV_COLUMNS, "the header row");
        assert_eq!(records.len() - 1, listed.len(), "{query}: exactly the filtered rows");
        for (record, row) in records[1..].iter().zip(&listed) {
            let want: Vec<String> = records[0].iter().map(|c| csv_cell(c, row)).collect();
            assert_eq!(record, &want, "{query}");
        }
    }
    let errors = parse_csv(&get(&app, ADMIN, "/usage.csv?status=error").await.text());
    assert_eq!(errors.len(), 1 + tricky.len());
    assert!(errors[1..].iter().all(|r| r[8].starts_with('\'')), "every formula-like model is defused");
    let bad = get(&app, ADMIN, "/usage.csv?status=maybe").await;
    assert_eq!((bad.status.as_u16(), bad.json()["error"]["param"].as_str()), (400, Some("status")));
    let bad = get(&app, ADMIN, "/usage.csv?limit=5").await;
    assert_eq!(bad.status, 400, "a CSV export has no pages");

    // The CLI: the same bytes as the API, to stdout and to a file.
    let config = app.config_path.clone();
    let dir = app.dir.path().to_owned();
    let key_id = key.id.clone();
    let api_all = get(&app, ADMIN, "/usage.csv").await.body;
    let api_errors = get(&app, ADMIN, "/usage.csv?status=error").await.body;
    let api_page = get(&app, ADMIN, &format!("/usage?key_id={key_id}&limit=5")).await.json();
    let api_one = get(&app, ADMIN, "/usage/csv-3").await.json();
    tokio::task::spawn_blocking(move || {
        let out = tollgate(&config).args(["usage", "export"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, api_all, "stdout export = GET /usage.csv");
        let file = dir.join("errors.csv");
        let out =
            tollgate(&config).args(["usage", "export", "--status", "error", "--output"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(&file).unwrap(), api_errors, "file export = GET /usage.csv?status=error");
        let out = tollgate(&config).args(["usage", "export", "--status", "nope"]).output().unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("status"));

        let out =
            tollgate(&config).args(["usage", "list", "--key", &key_id, "--limit", "5", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), api_page);
        let out = tollgate(&config).args(["usage", "list", "--key", &key_id, "--limit", "5"]).output().unwrap();
        let table = String::from_utf8(out.stdout).unwrap();
        assert_eq!(table.lines().count(), 6, "a header and five rows: {table}");
        let out = tollgate(&config).args(["usage", "get", "csv-3"]).output().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), api_one);
        let out = tollgate(&config).args(["usage", "get", "no-such-request"]).output().unwrap();
        assert!(!out.status.success());
    })
    .await
    .unwrap();
}

/// `VmRSS` or `VmHWM` of this process, in KiB. The server runs in this process (TestApp),
/// and nextest runs each test in a process of its own.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One million rows of one key, seeded in SQL, then `GET /usage.csv` for that key read
/// through the server: 1,000,001 lines, and the process's peak memory during the export
/// within 64 MiB of what it was before (the body is ~250 MB).
#[tokio::test]
async fn a_million_row_csv_export_streams_in_flat_memory() {
    const ROWS: u64 = 1_000_000;
    const BATCH: u64 = 100_000;
    let app = TestApp::start().await.unwrap();
    let created = app
        .services()
        .unwrap()
        .create_key(&Actor::cli(), NewKey { name: "bulk".into(), ..Default::default() })
        .await
        .unwrap();
    let key = app.store().await.unwrap().get_key(&created.key.id).await.unwrap();
    let store = app.store().await.unwrap();
    let seeding = Instant::now();
    for start in (0..ROWS).step_by(BATCH as usize) {
        // One statement per 100,000 rows: fast, and the WAL stays small between checkpoints.
        let sql = format!(
            "INSERT INTO usage_log (event_id, request_id, created_at, key_id, key_name, org_id, team_id, user_id, \
             key_metadata, model, provider, endpoint, status, error_code, error, prompt_tokens, completion_tokens, \
             cost_micros, latency_ms, ttft_ms, stream, client_ip, billing_reason) \
             WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             SELECT 'bulk_' || i, 'req-bulk-' || i, 1700000000000 + i, '{key}', 'bulk', '{org}', '{team}', '{user}', \
             '{{\"env\":\"bulk\"}}', 'gpt-4o-mini', 'fake', '/v1/chat/completions', 200, NULL, NULL, 12, i % 1000, \
             i % 5000, 40, 7, 1, '127.0.0.1', 'completed' FROM n",
            first = start + 1,
            last = start + BATCH,
            key = key.id,
            org = key.org_id,
            team = key.team_id,
            user = key.owner_id,
        );
        store.execute_admin(&sql).await.unwrap();
    }
    store.close().await;
    eprintln!("seeded {ROWS} rows in {:.1?}", seeding.elapsed());

    // Reset the peak to now (Linux: "5" clears VmHWM), so that it measures the export only.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = memory_kib("VmRSS:");
    let exporting = Instant::now();
    let auth = format!("Bearer {ADMIN}");
    let url = app.url(&format!("/api/v1/usage.csv?key_id={}", key.id));
    let res = app.client.send(Method::GET, &url, &[("authorization", &auth)], "").await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let (mut lines, mut bytes, mut chunks, mut sampled_peak) = (0u64, 0u64, 0u64, before);
    let mut samples: Vec<String> = Vec::new();
    let mut last_line = Vec::new();
    while let Some(chunk) = next_data(&mut body).await.unwrap() {
        lines += memchr_count(&chunk);
        bytes += chunk.len() as u64;
        if let Some(end) = chunk.iter().rposition(|b| *b == b'\n') {
            last_line = chunk[..end].rsplit(|b| *b == b'\n').next().unwrap_or_default().to_vec();
        }
        chunks += 1;
        if chunks % 64 == 0 {
            let rss = memory_kib("VmRSS:");
            sampled_peak = sampled_peak.max(rss);
            // RSS every ~100,000 rows: flat, not climbing with the rows.
            if lines / 100_000 > samples.len() as u64 {
                samples.push(format!("{}k: {:.1}", lines / 1000, rss as f64 / 1024.0));
            }
        }
    }
    let after = memory_kib("VmRSS:");
    let peak = if reset { memory_kib("VmHWM:").max(sampled_peak) } else { sampled_peak };
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "exported {lines} lines ({:.0} MB) in {:.1?}; RSS before {:.1} MiB, peak {:.1} MiB (VmHWM reset: {reset}), \
         after {:.1} MiB; growth {growth_mib:.1} MiB",
        bytes as f64 / 1e6,
        exporting.elapsed(),
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    eprintln!("RSS (MiB) by lines read: {}", samples.join(", "));
    assert_eq!(lines, ROWS + 1, "the header and every row");
    assert!(String::from_utf8_lossy(&last_line).contains(",req-bulk-1,"), "oldest last");
    assert!(growth_mib < 64.0, "memory grew by {growth_mib:.1} MiB while exporting");
}

fn memchr_count(chunk: &[u8]) -> u64 {
    chunk.iter().filter(|b| **b == b'\n').count() as u64
}
