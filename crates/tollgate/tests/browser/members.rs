//! A member in the browser: sees only their own keys and requests (not another team's,
//! not the owner's), gets no owner picker, and changes their password from the top bar,
//! which ends the session.

use tollgate_testkit::app::ADMIN_TOKEN;

use super::*;

const ALICE_PASSWORD: &str = "alice-password-0123";

async fn admin_post(app: &TestApp, path: &str, body: &Value) -> Value {
    let res = app.client.post_json(&app.url(&format!("/api/v1/{path}")), Some(ADMIN_TOKEN), body).await.unwrap();
    assert_eq!(res.status, 201, "POST {path}: {}", res.text());
    res.json()
}

/// The `x-request-id` of a chat completion made with `key`.
async fn chat_request_id(app: &TestApp, key: &str) -> String {
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(key), &chat("demo-chat")).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    res.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_member_sees_only_their_own_keys_and_changes_their_password() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    let alpha = admin_post(&app, "teams", &json!({ "name": "Alpha" })).await;
    let beta = admin_post(&app, "teams", &json!({ "name": "Beta" })).await;
    let alpha_id = alpha["id"].as_str().unwrap();
    let beta_id = beta["id"].as_str().unwrap();
    admin_post(
        &app,
        "users",
        &json!({ "email": "alice@test.local", "password": ALICE_PASSWORD, "role": "member", "team_ids": [alpha_id] }),
    )
    .await;
    let bob = admin_post(
        &app,
        "users",
        &json!({ "email": "bob@test.local", "password": "bob-password-0123", "role": "member", "team_ids": [beta_id] }),
    )
    .await;
    let (beta_key_id, beta_secret) =
        app.api_key(&json!({ "name": "beta-only", "owner_id": bob["id"], "team_id": beta_id })).await.unwrap();
    app.api_key(&json!({ "name": "owner-key" })).await.unwrap();
    let beta_request = chat_request_id(&app, &beta_secret).await;
    app.usage_row(&beta_request).await.unwrap();

    b.sign_in_as(&app, "alice@test.local", ALICE_PASSWORD).await;
    b.find("svg.chart, .empty").await;
    b.goto(&app.url("/dashboard/keys")).await;
    assert!(b.text_of(".empty h2").await.contains("No API keys yet"), "another team's keys are not listed");

    // Alice's own key: no owner picker for a member; the team picker offers her team only.
    b.click("#open-create").await;
    assert!(b.client.find(Locator::Css("#key-owner")).await.is_err(), "members create keys for themselves");
    let teams = b
        .client
        .execute("return Array.from(document.querySelectorAll('#key-team option')).map(o => o.textContent)", Vec::new())
        .await
        .unwrap();
    assert_eq!(teams, json!(["Default team", "Alpha"]));
    b.click("#key-dialog [data-close]").await;
    let alice_secret = b.create_key_in_dialog("alpha-key").await;
    let names = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('#keys-table tr[data-key-id]')).map(r => r.dataset.keyName)",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(names, json!(["alpha-key"]));
    let page = b.client.source().await.unwrap();
    assert!(!page.contains("beta-only") && !page.contains("owner-key"), "no other key's name in the page");
    b.shot("keys-member").await;

    // Searching does not find it either, and the API answers "not found" to the browser.
    b.fill("input[name=search]", "beta").await;
    b.click_reloading("form.toolbar button[type=submit]").await;
    assert!(b.text_of(".empty h2").await.contains("No keys match"));
    let script = format!(
        "const done = arguments[0]; fetch('/api/v1/keys/{beta_key_id}', {{credentials: 'same-origin', headers: {{'x-csrf-token': document.querySelector('meta[name=csrf-token]').content}}}}).then(r => done(r.status))"
    );
    assert_eq!(b.run_async(&script).await, json!(404));

    // Usage: Alice's request is listed, Bob's is not, and its detail page is "not found".
    app.key_accepted(&alice_secret, WAIT).await.unwrap();
    let alice_request = chat_request_id(&app, &alice_secret).await;
    app.usage_row(&alice_request).await.unwrap();
    b.goto(&app.url("/dashboard/usage")).await;
    b.find(&format!("tr[data-request-id='{alice_request}']")).await;
    assert!(b.client.find(Locator::Css(&format!("tr[data-request-id='{beta_request}']"))).await.is_err());
    b.goto(&app.url(&format!("/dashboard/usage/{beta_request}"))).await;
    assert_eq!(b.text_of(".empty h2").await, "No such request");

    // Password change from the top bar: errors next to the fields, then sign in again.
    b.goto(&app.url("/dashboard/keys")).await;
    b.click(".usermenu summary").await;
    b.click("#account-link").await;
    b.find("#password-form").await;
    b.fill("#current-password", "wrong password!").await;
    b.fill("#new-password", "alice-new-password-0123").await;
    b.fill("#confirm-password", "alice-new-password-0123").await;
    b.click("#password-submit").await;
    assert_eq!(b.text_of("[data-field=current-password] .field-error").await, "That is not your current password.");
    b.fill("#current-password", ALICE_PASSWORD).await;
    b.fill("#confirm-password", "something else entirely").await;
    b.click("#password-submit").await;
    assert_eq!(b.text_of("[data-field=confirm-password] .field-error").await, "The two new passwords differ.");
    b.shot("account-password").await;
    b.fill("#confirm-password", "alice-new-password-0123").await;
    b.click("#password-submit").await;
    b.until("the sign-in page", "return location.pathname", |v| v == "/dashboard/login").await;
    assert!(b.text_of("#login-note").await.contains("password was changed"));
    b.shot("login-password-changed").await;
    b.goto(&app.url("/dashboard/keys")).await;
    assert_eq!(b.path().await, "/dashboard/login", "the session ended with the change");
    b.sign_in_as(&app, "alice@test.local", ALICE_PASSWORD).await;
    b.wait_text("#login-error", "Wrong email or password.").await;
    b.sign_in_as(&app, "alice@test.local", "alice-new-password-0123").await;
    b.find("svg.chart").await;
    b.client.clone().close().await.unwrap();
}
