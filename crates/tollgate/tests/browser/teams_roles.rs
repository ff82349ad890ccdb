//! The Teams page beyond create and membership: Edit opens the team dialog prefilled and
//! sends `PATCH /api/v1/teams/{id}` (an API refusal shows next to its field, an emptied
//! field clears the setting); the Members panel lets owners change roles in place (the
//! refusal to demote the last owner shows next to the picker), shows admins the roles
//! read-only, and is not there for members.

use tollgate_testkit::app::ADMIN_TOKEN;

use super::*;

const ADAM_PASSWORD: &str = "adam-password-0123";
const MAX_PASSWORD: &str = "max-password-0123";

async fn admin_post(app: &TestApp, path: &str, body: &Value) -> Value {
    let res = app.client.post_json(&app.url(&format!("/api/v1/{path}")), Some(ADMIN_TOKEN), body).await.unwrap();
    assert_eq!(res.status, 201, "POST {path}: {}", res.text());
    res.json()
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let res = app.client.get(&app.url(&format!("/api/v1/{path}")), Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(res.status, 200, "GET {path}: {}", res.text());
    res.json()
}

/// The role of `email` as `GET /api/v1/users` answers.
async fn role_of(app: &TestApp, email: &str) -> String {
    let users = admin_get(app, "users").await;
    let user = users["data"].as_array().unwrap().iter().find(|u| u["email"] == email).unwrap();
    user["role"].as_str().unwrap().to_owned()
}

fn value_of(css: &str) -> String {
    format!("return document.querySelector({css:?}).value")
}

#[tokio::test]
async fn owners_edit_teams_and_change_roles_admins_see_roles_members_do_not() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    let team = admin_post(
        &app,
        "teams",
        &json!({ "name": "Platform", "allowed_models": ["demo-chat"], "budget_usd": 50, "rpm": 120 }),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    for (email, password, role) in [
        ("adam@test.local", ADAM_PASSWORD, "admin"),
        ("mia@test.local", "mia-password-0123", "member"),
        ("max@test.local", MAX_PASSWORD, "member"),
    ] {
        admin_post(&app, "users", &json!({ "email": email, "password": password, "role": role })).await;
    }
    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart").await;
    b.goto(&app.url("/dashboard/teams")).await;

    // Edit: the create dialog, prefilled with the team's settings.
    let platform = "section.team[data-team-name='Platform']";
    b.click(&format!("{platform} .edit-team")).await;
    b.find("#team-dialog[open]").await;
    b.wait_text("#team-title", "Edit Platform").await;
    assert_eq!(b.text_of("#team-submit").await, "Save changes");
    for (input, expected) in [
        ("#team-name", "Platform"),
        ("#team-models", "demo-chat"),
        ("#team-budget", "50"),
        ("#team-rpm", "120"),
        ("#team-tpm", ""),
    ] {
        let v = b.client.execute(&value_of(input), Vec::new()).await.unwrap();
        assert_eq!(v, json!(expected), "{input} prefilled");
    }
    // A model id longer than the API allows: its refusal shows next to the models field.
    b.fill("#team-models", &format!("demo-chat, {}", "m".repeat(300))).await;
    b.click("#team-submit").await;
    let error = b.text_of("[data-field=team-models] .field-error").await;
    assert!(error.contains("1-256"), "{error}");
    b.shot("teams-edit-error").await;
    b.fill("#team-models", "demo-chat, gpt-4o-mini").await;
    b.fill("#team-name", "Platform Core").await;
    b.fill("#team-budget", "").await;
    b.fill("#team-tpm", "5000").await;
    b.click("#team-submit").await;
    let edited = b.text_of("section.team[data-team-name='Platform Core']").await;
    assert!(
        edited.contains("gpt-4o-mini") && edited.contains("Workspace balance") && edited.contains("5000"),
        "{edited}"
    );
    let saved = admin_get(&app, &format!("teams/{team_id}")).await;
    assert_eq!(saved["allowed_models"], json!(["demo-chat", "gpt-4o-mini"]));
    assert_eq!(
        (saved["budget_usd"].clone(), saved["rpm"].clone(), saved["tpm"].clone()),
        (Value::Null, json!(120), json!(5000))
    );

    // Members: everyone with their role; owners change a role in place.
    let emails =
        "return Array.from(document.querySelectorAll('#members-table tr[data-user-id]')).map(r => r.dataset.email)";
    let listed = b.client.execute(emails, Vec::new()).await.unwrap();
    for email in ["owner@test.local", "adam@test.local", "mia@test.local", "max@test.local"] {
        assert!(listed.as_array().unwrap().iter().any(|e| e == email), "{email} listed: {listed}");
    }
    let mia = "#members-table tr[data-email='mia@test.local']";
    b.select(&format!("{mia} select.role-select"), "admin").await;
    let start = Instant::now();
    while role_of(&app, "mia@test.local").await != "admin" {
        assert!(start.elapsed() < WAIT, "mia became an admin");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The teams' "Add member" pickers name her new role without a reload.
    let picks = "return Array.from(document.querySelectorAll('form.add-member option')).filter(o => o.textContent.startsWith('mia@')).map(o => o.textContent)";
    let named = b
        .until("mia's new role in the pickers", picks, |v| {
            v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|t| t == "mia@test.local (admin)"))
        })
        .await;
    assert!(!named.as_array().unwrap().is_empty());
    // The last owner cannot step down: the API's answer shows next to the picker, which
    // goes back to the role the user still has.
    let me = "#members-table tr[data-email='owner@test.local']";
    b.select(&format!("{me} select.role-select"), "member").await;
    let refusal = b.text_of(&format!("{me} .field-error")).await;
    assert!(refusal.contains("at least one owner"), "{refusal}");
    b.until("the picker back on owner", &value_of(&format!("{me} select")), |v| v == "owner").await;
    assert_eq!(role_of(&app, "owner@test.local").await, "owner");
    b.client.execute("document.querySelector('#org-members').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("teams-members").await;
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&app.url("/dashboard/teams")).await;
    b.find("#members-table").await;
    b.shot("teams-phone").await;
    b.client.execute("document.querySelector('#org-members').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("teams-members-phone").await;
    b.client.set_window_size(1366, 900).await.unwrap();

    // An admin sees the roles, read-only.
    b.client.delete_all_cookies().await.unwrap();
    b.sign_in_as(&app, "adam@test.local", ADAM_PASSWORD).await;
    b.find("svg.chart").await;
    b.goto(&app.url("/dashboard/teams")).await;
    let roles = "return Array.from(document.querySelectorAll('#members-table tr[data-user-id]')).map(r => [r.dataset.email, r.querySelector('.role-badge')?.textContent])";
    let roles = b.client.execute(roles, Vec::new()).await.unwrap();
    assert!(roles.as_array().unwrap().contains(&json!(["mia@test.local", "admin"])), "{roles}");
    assert!(b.client.find(Locator::Css("select.role-select")).await.is_err(), "admins do not change roles");
    assert!(b.client.find(Locator::Css(".edit-team")).await.is_ok(), "admins edit teams");
    b.shot("teams-admin").await;

    // A member sees neither the Members panel nor the team controls.
    b.client.delete_all_cookies().await.unwrap();
    b.sign_in_as(&app, "max@test.local", MAX_PASSWORD).await;
    b.find("svg.chart, .empty").await;
    b.goto(&app.url("/dashboard/teams")).await;
    b.find("main h1").await;
    for css in ["#org-members", ".edit-team", "#team-dialog"] {
        assert!(b.client.find(Locator::Css(css)).await.is_err(), "{css} is not shown to a member");
    }
    b.client.clone().close().await.unwrap();
}
