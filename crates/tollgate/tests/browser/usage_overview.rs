//! A key made in the dialog used with the official OpenAI Python SDK; its requests in
//! Usage Logs, filtered by key and team; the CSV export fetched from the page's link with
//! the session cookie and compared with the table; a request's detail page (error content,
//! key metadata); and the Overview's breakdowns by key and model.

use std::path::PathBuf;

use super::*;

/// The Python with the `openai` package: `TOLLGATE_TEST_PYTHON`, or, when the browser
/// tests are required, the venv `scripts/python-venv.sh` makes. `None`: skip the SDK part.
fn sdk_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TOLLGATE_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let required = std::env::var("TOLLGATE_BROWSER_TESTS").is_ok_and(|v| v == "required");
    if !required {
        eprintln!("SKIPPED (SDK part): set TOLLGATE_TEST_PYTHON (scripts/python-venv.sh prints it)");
        return None;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let venv = root.join(target).join("sdk-venv/bin/python");
    assert!(venv.exists(), "TOLLGATE_BROWSER_TESTS=required: set TOLLGATE_TEST_PYTHON or run scripts/python-venv.sh");
    Some(venv)
}

/// One chat completion through the OpenAI SDK; returns the gateway's `x-request-id`.
async fn sdk_chat(python: &PathBuf, base_url: &str, key: &str) -> String {
    const SCRIPT: &str = r#"
import os
from openai import OpenAI
client = OpenAI(base_url=os.environ["TG_BASE_URL"], api_key=os.environ["TG_API_KEY"], max_retries=0)
raw = client.chat.completions.with_raw_response.create(
    model="demo-chat", messages=[{"role": "user", "content": "hello from the SDK"}])
completion = raw.parse()
assert completion.choices[0].message.content, completion
print(raw.headers["x-request-id"])
"#;
    let out = tokio::process::Command::new(python)
        .args(["-c", SCRIPT])
        .env("TG_BASE_URL", base_url)
        .env("TG_API_KEY", key)
        .output()
        .await
        .expect("run python");
    assert!(out.status.success(), "the SDK call failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn client_chat(app: &TestApp, key: &str, model: &str) -> String {
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(key), &chat(model)).await.unwrap();
    res.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned()
}

/// The request ids the usage table shows, top to bottom.
async fn table_request_ids(b: &Browser) -> Vec<String> {
    let v = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('#usage-table tbody tr')).map(r => r.dataset.requestId)",
            Vec::new(),
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn sdk_requests_in_usage_logs_csv_detail_and_overview() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart").await;
    b.goto(&app.url("/dashboard/keys")).await;
    let sdk_secret = b.create_key_in_dialog("sdk-key").await;
    app.key_accepted(&sdk_secret, WAIT).await.unwrap();
    let (_, other_secret) = app
        .api_key(&json!({ "name": "other-key", "metadata": { "env": "staging", "service": "search" } }))
        .await
        .unwrap();

    // The official OpenAI SDK with the key from the one-shot box, then plain requests.
    let mut sdk_ids = Vec::new();
    if let Some(python) = sdk_python() {
        sdk_ids.push(sdk_chat(&python, &app.url("/v1"), &sdk_secret).await);
    }
    while sdk_ids.len() < 3 {
        sdk_ids.push(client_chat(&app, &sdk_secret, "demo-chat").await);
    }
    let other_ok = client_chat(&app, &other_secret, "gpt-4o-mini").await;
    let other_failed = client_chat(&app, &other_secret, "no-such-model").await;
    for id in sdk_ids.iter().chain([&other_ok, &other_failed]) {
        app.usage_row(id).await.unwrap();
    }

    // Filtered by key: exactly the SDK key's requests, newest first.
    b.goto(&app.url("/dashboard/usage")).await;
    b.find("#usage-table").await;
    // The log also holds each key's `/v1/models` checks (from `key_accepted`): the
    // expected rows come from the store, and must include the chat requests.
    let usage = app.all_usage().await.unwrap();
    let sdk_key_id = usage.iter().find(|r| r.request_id == sdk_ids[0]).unwrap().key_id.clone().unwrap();
    let expected: Vec<String> =
        usage.iter().filter(|r| r.key_id.as_deref() == Some(&sdk_key_id)).map(|r| r.request_id.clone()).collect();
    assert!(sdk_ids.iter().all(|id| expected.contains(id)), "{expected:?}");
    b.select("select[name=key_id]", &sdk_key_id).await;
    b.click_reloading("form.filters button[type=submit]").await;
    let count = json!(expected.len());
    b.until("only the SDK key's rows", "return document.querySelectorAll('#usage-table tbody tr').length", |v| {
        v == &count
    })
    .await;
    assert_eq!(table_request_ids(&b).await, expected, "the key's rows, newest first");

    // The CSV link, fetched with the browser's session: the same rows as the table.
    let href = b.find("#export-csv").await.attr("href").await.unwrap().unwrap();
    assert!(href.contains("key_id="), "{href}");
    let csv = b
        .run_async(&format!(
            "const done = arguments[0]; fetch({href:?}, {{credentials: 'same-origin'}}).then(r => r.text().then(t => done([r.status, t])))"
        ))
        .await;
    assert_eq!(csv[0], json!(200), "{csv}");
    let text = csv[1].as_str().unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rid = header.iter().position(|c| *c == "request_id").unwrap();
    let key_name = header.iter().position(|c| *c == "key_name").unwrap();
    let rows: Vec<Vec<&str>> = lines.filter(|l| !l.is_empty()).map(|l| l.split(',').collect()).collect();
    let csv_ids: Vec<String> = rows.iter().map(|r| r[rid].to_owned()).collect();
    assert_eq!(csv_ids, table_request_ids(&b).await, "CSV rows = table rows, in order");
    assert!(rows.iter().all(|r| r[key_name] == "sdk-key"));
    b.shot("usage-filtered").await;

    // The team filter: the default team holds both keys; a new, empty team matches nothing.
    b.goto(&app.url("/dashboard/usage")).await;
    let team_options = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('select[name=team_id] option')).map(o => o.value)",
            Vec::new(),
        )
        .await
        .unwrap();
    let team_id = team_options.as_array().unwrap().iter().filter_map(Value::as_str).find(|v| !v.is_empty()).unwrap();
    b.select("select[name=team_id]", team_id).await;
    b.click_reloading("form.filters button[type=submit]").await;
    let in_team = json!(usage.iter().filter(|r| r.team_id.as_deref() == Some(team_id)).count());
    assert!(in_team.as_u64().unwrap() >= 5, "both keys' requests are the default team's");
    b.until("the team's rows", "return document.querySelectorAll('#usage-table tbody tr').length", |v| v == &in_team)
        .await;
    assert!(b.find("#export-csv").await.attr("href").await.unwrap().unwrap().contains("team_id="));

    // A failed request's detail page: every field, the error, the key's metadata.
    b.goto(&app.url("/dashboard/usage?status=error")).await;
    b.click(&format!("tr[data-request-id='{other_failed}'] td:first-child")).await;
    b.find("#usage-detail").await;
    assert_eq!(b.path().await, format!("/dashboard/usage/{other_failed}"));
    let error = b.text_of("#usage-error").await;
    assert!(error.contains("model"), "the error content: {error}");
    let metadata = b.text_of("#usage-metadata pre").await;
    assert!(metadata.contains("\"service\": \"search\""), "{metadata}");
    let fields = b.text_of("#usage-fields").await;
    assert!(
        fields.contains(&other_failed) && fields.contains("no-such-model") && fields.contains("/v1/chat/completions")
    );
    assert!(b.text_of(".raw-record pre").await.contains("\"billing_reason\""));
    b.shot("usage-detail").await;

    // Overview: requests and spend by key and by model, drawn; the top keys; the balance.
    b.goto(&app.url("/dashboard")).await;
    let by_key = "return Array.from(document.querySelectorAll('#requests-by-key svg.hbars g')).map(g => [g.dataset.label, g.querySelector('text.val').textContent])";
    let bars = b.until("requests by key", by_key, |v| v.as_array().is_some_and(|a| a.len() == 2)).await;
    let daily_requests =
        |key: &str| usage.iter().filter(|r| r.key_name.as_deref() == Some(key) && r.endpoint.contains("chat")).count();
    assert_eq!(bars[0][0], json!("sdk-key"), "{bars}");
    assert_eq!(bars[1][0], json!("other-key"), "{bars}");
    let shown = |i: usize| bars[i][1].as_str().unwrap().parse::<usize>().unwrap();
    assert!(shown(0) >= daily_requests("sdk-key") && shown(1) >= daily_requests("other-key"), "{bars}");
    let by_model =
        "return Array.from(document.querySelectorAll('#requests-by-model svg.hbars g')).map(g => g.dataset.label)";
    let models = b.until("requests by model", by_model, |v| v.as_array().is_some_and(|a| a.len() >= 2)).await;
    assert_eq!(models[0], json!("demo-chat"), "{models}");
    assert!(models.as_array().unwrap().contains(&json!("gpt-4o-mini")), "{models}");
    b.find("#spend-by-key svg.hbars g[data-label='other-key'], #spend-by-key p.muted").await;
    let top = b.text_of("#top-keys tbody").await;
    assert!(top.contains("sdk-key") && top.contains("other-key"), "{top}");
    assert!(b.text_of("#balance").await.contains('$'), "the current balance");
    b.client.execute("document.querySelector('#breakdown-keys').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("overview-breakdown").await;
    b.client.clone().close().await.unwrap();
}
