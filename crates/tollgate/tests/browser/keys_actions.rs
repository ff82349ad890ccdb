//! The key dialogs beyond create/rotate/revoke: the Create dialog's owner, team and
//! provider pickers; Reveal (asks for the password again); Edit (errors next to the field,
//! then the saved values); Duplicate and Ephemeral token (secrets in the one-shot box that
//! the gateway accepts); environment-prefixed names grouped in the table; MCP access in the
//! Advanced tab, stored on create and changed or cleared on edit.

use tollgate_testkit::app::ADMIN_TOKEN;

use super::*;

/// `POST /api/v1/{path}` with the admin token; the answer's JSON, after checking 201.
async fn admin_post(app: &TestApp, path: &str, body: &Value) -> Value {
    let res = app.client.post_json(&app.url(&format!("/api/v1/{path}")), Some(ADMIN_TOKEN), body).await.unwrap();
    assert_eq!(res.status, 201, "POST {path}: {}", res.text());
    res.json()
}

async fn admin_get_key(app: &TestApp, id: &str) -> Value {
    let res = app.client.get(&app.url(&format!("/api/v1/keys/{id}")), Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

async fn key_id_of(b: &Browser, name: &str) -> String {
    b.find(&format!("#keys-table tr[data-key-name={name:?}]")).await.attr("data-key-id").await.unwrap().unwrap()
}

async fn open_detail(b: &Browser, name: &str) {
    b.click(&format!("#keys-table tr[data-key-name={name:?}] .open-detail")).await;
    b.find("#detail-dialog[open]").await;
    b.wait_text("#detail-title", name).await;
}

fn chat_mini() -> Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] })
}

#[tokio::test]
async fn create_for_a_member_then_reveal_edit_duplicate_and_mint_an_ephemeral_token() {
    let Some(b) = browser().await else { return };
    let app =
        TestApp::start_with(&format!("[keys]\nreveal = true\nreveal_key = \"{}\"\n", "ab".repeat(32))).await.unwrap();
    let team = admin_post(&app, "teams", &json!({ "name": "Search" })).await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    let dana = admin_post(
        &app,
        "users",
        &json!({ "email": "dana@test.local", "password": "dana-password-0123", "role": "member", "team_ids": [team_id] }),
    )
    .await;
    let dana_id = dana["id"].as_str().unwrap().to_owned();
    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart").await;
    b.goto(&app.url("/dashboard/keys")).await;

    // Create for Dana, in the Search team, limited to the `fake` provider.
    b.click("#open-create").await;
    b.fill("#key-name", "prod-search").await;
    b.select("#key-owner", &dana_id).await;
    b.select("#key-team", &team_id).await;
    b.click("input[name=allowed_providers][value=fake]").await;
    b.shot("keys-create-for-member").await;
    b.click("#key-submit").await;
    let secret = b.text_of("#secret-value").await;
    b.click_reloading("#secret-done").await;
    let id = key_id_of(&b, "prod-search").await;
    let key = admin_get_key(&app, &id).await;
    assert_eq!((key["owner_id"].as_str(), key["team_id"].as_str()), (Some(dana_id.as_str()), Some(team_id.as_str())));
    assert_eq!(key["allowed_providers"], json!(["fake"]));
    assert!(b.text_of("#keys-table tr[data-key-name='prod-search']").await.contains("dana@test.local"));

    // Reveal asks for the password again; a wrong one is refused next to the field.
    open_detail(&b, "prod-search").await;
    b.click("#act-reveal").await;
    b.find("#reveal-dialog[open]").await;
    b.fill("#reveal-password", "not my password").await;
    b.click("#reveal-form button[type=submit]").await;
    assert_eq!(b.text_of("[data-field=reveal-password] .field-error").await, "That is not your password.");
    b.fill("#reveal-password", OWNER_PASSWORD).await;
    b.click("#reveal-form button[type=submit]").await;
    b.wait_text("#secret-title", "Your API key: prod-search").await;
    assert_eq!(b.text_of("#secret-value").await, secret, "the revealed secret is the created one");
    b.shot("keys-revealed").await;
    b.click_reloading("#secret-done").await;

    // Edit: a bad IP allowlist is refused by the API and shown next to its field.
    b.find("#keys-table").await;
    open_detail(&b, "prod-search").await;
    b.click("#act-edit").await;
    b.find("#key-dialog[open]").await;
    b.wait_text("#key-dialog-title", "Edit prod-search").await;
    let prefilled: Value =
        b.client.execute("return document.querySelector('#key-name').value", Vec::new()).await.unwrap();
    assert_eq!(prefilled, json!("prod-search"));
    b.fill("#key-rpm", "60").await;
    b.click("label.chip:has(input[name=budget][value=custom])").await;
    b.fill("#key-budget-custom", "12.5").await;
    b.fill("#key-thresholds", "90, 50").await;
    b.click("#tab-advanced").await;
    b.click("label.chip:has(input[name=model_scope][value=list])").await;
    b.fill("#key-models", "gpt-4o-mini").await;
    b.fill("#key-ips", "not-an-address").await;
    b.fill("#key-metadata", "{\"env\": \"prod\", \"owner\": \"search\"}").await;
    b.click("#tab-basic").await;
    b.click("#key-submit").await;
    let ip_error = b.text_of("[data-field=key-ips] .field-error").await;
    assert!(!ip_error.is_empty(), "the API's error shows next to the IP allowlist");
    assert_eq!(
        b.client
            .execute("return document.querySelector('#tab-advanced').getAttribute('aria-selected')", Vec::new())
            .await
            .unwrap(),
        json!("true"),
        "the dialog switches to the tab holding the bad field"
    );
    b.shot("keys-edit-error").await;
    b.fill("#key-ips", "127.0.0.1, 10.0.0.0/8").await;
    b.click("#key-submit").await;
    b.until("the saved key", "return document.querySelector('#key-dialog')?.open === false", |v| v == &json!(true))
        .await;
    let start = Instant::now();
    let key = loop {
        let key = admin_get_key(&app, &id).await;
        if key["rpm"] == json!(60) || start.elapsed() > WAIT {
            break key;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(key["rpm"], json!(60), "{key}");
    assert_eq!(key["budget_usd"], json!(12.5));
    assert_eq!(key["budget_alert_thresholds"], json!([50, 90]));
    assert_eq!(key["models"], json!(["gpt-4o-mini"]));
    assert!(key["ip_allowlist"].to_string().contains("10.0.0.0/8"), "{key}");
    assert_eq!(key["metadata"], json!({ "env": "prod", "owner": "search" }));
    assert_eq!(key["owner_id"], json!(dana_id), "Edit leaves the owner alone");
    assert_eq!(key["expires_at"], Value::Null, "Edit leaves an untouched expiry alone");
    assert_eq!(key["allowed_providers"], json!(["fake"]));
    open_detail(&b, "prod-search").await;
    assert_eq!(b.text_of("#detail-body dd[data-label='Requests / min']").await, "60");
    assert_eq!(b.text_of("#detail-body dd[data-label='Budget']").await, "$12.50");
    b.shot("keys-detail-edited").await;

    // Duplicate: a new secret in the one-shot box, for a key with the same settings.
    b.click("#act-duplicate").await;
    b.wait_text("#secret-title", "API Key duplicated! Copy it now").await;
    let copy = b.text_of("#secret-value").await;
    assert!(copy.starts_with("sk-tg-") && copy != secret, "{copy}");
    b.click_reloading("#secret-done").await;
    let copy_id = key_id_of(&b, "prod-search (copy)").await;
    let copied = admin_get_key(&app, &copy_id).await;
    assert_eq!((copied["rpm"].clone(), copied["models"].clone()), (json!(60), json!(["gpt-4o-mini"])));
    app.key_accepted(&copy, WAIT).await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&copy), &chat_mini()).await.unwrap();
    assert_eq!(res.status, 200, "the duplicate works: {}", res.text());

    // Ephemeral token: shown once with its expiry, and it works like the key.
    b.find("#keys-table").await;
    open_detail(&b, "prod-search").await;
    b.select("#ephemeral-ttl", "900").await;
    b.click("#act-ephemeral").await;
    b.wait_text("#secret-title", "Ephemeral token created! Copy it now").await;
    let token = b.text_of("#secret-value").await;
    assert!(b.text_of("#secret-expiry").await.starts_with("Expires at 20"), "the expiry is shown");
    b.shot("keys-ephemeral").await;
    b.click_reloading("#secret-done").await;
    app.key_accepted(&secret, WAIT).await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&token), &chat_mini()).await.unwrap();
    assert_eq!(res.status, 200, "the ephemeral token works: {}", res.text());
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&token), &chat("demo-chat")).await.unwrap();
    assert!(res.status.is_client_error(), "and only for the key's models: {} {}", res.status, res.text());
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn environment_prefixed_names_group_together() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    for name in ["staging-search", "Production API", "prod-billing", "dev-notebook", "prod/search", "devops-bot"] {
        app.api_key(&json!({ "name": name })).await.unwrap();
    }
    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart").await;
    b.goto(&app.url("/dashboard/keys")).await;
    b.find("#keys-table").await;
    let groups = b
        .until(
            "the environment headings",
            "return Array.from(document.querySelectorAll('#keys-table tr.group-row')).map(r => r.dataset.environment)",
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    // Binary order: "Production API" first; "devops-bot" (not an environment) after dev.
    assert_eq!(groups, json!(["other", "dev", "other", "prod", "staging"]));
    // Each heading is followed by exactly its environment's keys.
    let runs = b
        .client
        .execute(
            "const out = {}; let env = null; for (const r of document.querySelectorAll('#keys-table tbody tr')) { \
               if (r.classList.contains('group-row')) { env = r.dataset.environment; continue; } \
               (out[env] = out[env] || []).push(r.dataset.keyName); } \
             return out",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        runs,
        json!({
            "other": ["Production API", "devops-bot"],
            "dev": ["dev-notebook"],
            "prod": ["prod-billing", "prod/search"],
            "staging": ["staging-search"],
        })
    );
    // Sorted otherwise, there are no headings, and a tag marks each environment's keys.
    b.click("#keys-table th a.sort[href*='sort=created']").await;
    b.until(
        "no headings",
        "return location.search.includes('sort=created') && !document.querySelector('tr.group-row')",
        |v| v == &json!(true),
    )
    .await;
    assert_eq!(b.text_of("#keys-table tr[data-key-name='prod/search'] .env-tag").await, "prod");
    assert!(b.text_of(".table-note").await.contains("grouped by environment"));
    b.shot("keys-environments").await;
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn mcp_access_is_set_in_the_advanced_tab_and_edited() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart").await;
    b.goto(&app.url("/dashboard/keys")).await;

    // Create with MCP settings; a tool not written server:tool is refused next to its field.
    b.click("#open-create").await;
    b.fill("#key-name", "mcp-agent").await;
    b.click("#tab-advanced").await;
    b.click("#key-mcp-enabled").await;
    b.select("#key-mcp-mode", "allow_list").await;
    b.fill("#key-mcp-servers", "github, jira").await;
    b.fill("#key-mcp-tools", "github:create_issue\njira").await;
    b.click("#key-submit").await;
    assert!(b.text_of("[data-field=key-mcp-tools] .field-error").await.contains("server:tool"));
    b.fill("#key-mcp-tools", "github:create_issue, github:list_repos\njira:search").await;
    // The API's refusal (here: more than it stores) shows on the MCP fields, not elsewhere.
    let many = "document.querySelector('#key-mcp-servers').value = Array.from({length: 2000}, (_, i) => 'server-' + i).join(', ')";
    b.client.execute(many, Vec::new()).await.unwrap();
    b.click("#tab-basic").await;
    b.click("#key-submit").await;
    let refusal = b.text_of("[data-field=key-mcp] .field-error").await;
    assert!(refusal.contains("16384 bytes"), "{refusal}");
    b.wait_text("#tab-advanced[aria-selected=true]", "Advanced").await;
    b.shot("keys-mcp-error").await;
    b.fill("#key-mcp-servers", "github, jira").await;
    b.click("#key-submit").await;
    b.text_of("#secret-value").await;
    b.click_reloading("#secret-done").await;
    let id = key_id_of(&b, "mcp-agent").await;
    let stored = admin_get_key(&app, &id).await;
    assert_eq!(
        stored["mcp"],
        json!({ "enabled": true, "mode": "allow_list", "servers": ["github", "jira"],
                "tools": { "github": ["create_issue", "list_repos"], "jira": ["search"] } })
    );

    // Edit: prefilled, changed, saved; the detail dialog sums it up.
    open_detail(&b, "mcp-agent").await;
    let summary = b.text_of("#detail-body dd[data-label='MCP']").await;
    assert!(summary.starts_with("Enabled · allow-list") && summary.contains("github:list_repos"), "{summary}");
    b.click("#act-edit").await;
    b.find("#key-dialog[open]").await;
    b.click("#tab-advanced").await;
    let prefilled = b
        .client
        .execute(
            "return ['#key-mcp-enabled', '#key-mcp-mode', '#key-mcp-servers', '#key-mcp-tools'].map(s => { \
               const e = document.querySelector(s); return e.type === 'checkbox' ? e.checked : e.value; })",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        prefilled,
        json!([true, "allow_list", "github, jira", "github:create_issue, github:list_repos, jira:search"])
    );
    b.client.execute("document.querySelector('#key-mcp').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("keys-mcp-edit").await;
    b.select("#key-mcp-mode", "deny_list").await;
    b.fill("#key-mcp-servers", "jira").await;
    b.fill("#key-mcp-tools", "jira:delete_project").await;
    b.click("#key-submit").await;
    b.until("the saved key", "return document.querySelector('#key-dialog')?.open === false", |v| v == &json!(true))
        .await;
    let start = Instant::now();
    let key = loop {
        let key = admin_get_key(&app, &id).await;
        if key["mcp"]["mode"] == "deny_list" || start.elapsed() > WAIT {
            break key;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        key["mcp"],
        json!({ "enabled": true, "mode": "deny_list", "servers": ["jira"], "tools": { "jira": ["delete_project"] } })
    );

    // Emptied, the settings are cleared.
    b.find("#keys-table").await;
    open_detail(&b, "mcp-agent").await;
    b.click("#act-edit").await;
    b.find("#key-dialog[open]").await;
    b.click("#tab-advanced").await;
    b.click("#key-mcp-enabled").await;
    b.select("#key-mcp-mode", "allow_all").await;
    b.fill("#key-mcp-servers", "").await;
    b.fill("#key-mcp-tools", "").await;
    b.click("#key-submit").await;
    let start = Instant::now();
    while admin_get_key(&app, &id).await["mcp"] != json!({}) {
        assert!(start.elapsed() < WAIT, "the MCP settings cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.client.clone().close().await.unwrap();
}
