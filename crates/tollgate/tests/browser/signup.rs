//! Sign-up in the browser: the owner invites someone on the Teams page and gets the link
//! once; the invited person opens it signed out, sees the invitation described and the
//! fields prefilled, gets errors next to the fields (from the page and from the server),
//! and lands in the dashboard signed in. The sign-in page offers "Create an account"
//! only when sign-up is open.

use super::*;

/// Waits until the page's path is `path`.
async fn at_path(b: &Browser, path: &str) {
    b.until(path, "return location.pathname", |v| v.as_str() == Some(path)).await;
}

#[tokio::test]
async fn an_invitation_made_on_the_teams_page_signs_someone_up_into_the_dashboard() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    b.goto(&app.url("/dashboard/login")).await;
    b.find("#login-form").await;
    let offered = b.client.execute("return !!document.querySelector('#signup-link')", Vec::new()).await.unwrap();
    assert_eq!(offered, json!(false), "sign-up is closed by default: no link");

    b.sign_in(&app, OWNER_PASSWORD).await;
    at_path(&b, "/dashboard").await;
    b.goto(&app.url("/dashboard/teams")).await;
    b.fill("#invite-email", "Newbie@Test.local").await;
    b.select("#invite-role", "member").await;
    let team =
        b.client.execute("return document.querySelector('#invite-team option:nth-child(2)').value", vec![]).await;
    let team = team.unwrap().as_str().unwrap().to_owned();
    b.select("#invite-team", &team).await;
    b.click("#invite-submit").await;
    let link = b.text_of("#invite-link").await;
    assert!(link.starts_with(&app.url("/dashboard/signup?invite=tgi_")), "{link}");
    b.shot("teams-invite").await;
    // The pending invitation is listed after a reload, without its link.
    b.goto(&app.url("/dashboard/teams")).await;
    let row = b.text_of("#invite-list tbody tr").await;
    assert!(row.contains("newbie@test.local") && row.contains("member"), "{row}");
    assert!(!b.client.source().await.unwrap().contains(link.split("invite=").nth(1).unwrap()));

    // The invited person, signed out.
    b.client.delete_all_cookies().await.unwrap();
    b.goto(&link).await;
    assert_eq!(b.text_of("#signup-intro").await, "You are invited to join Default as member.");
    let prefilled = b
        .client
        .execute(
            "return [document.querySelector('#signup-email').value, document.querySelector('#signup-invite').value]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(prefilled[0], "newbie@test.local");
    assert!(link.ends_with(prefilled[1].as_str().unwrap()));
    b.fill("#signup-password", "short").await;
    b.click("#signup-submit").await;
    b.wait_text("[data-field=password] .field-error", "Use at least 12 characters.").await;
    // A server-side refusal lands next to its field too.
    b.fill("#signup-email", "someone-else@test.local").await;
    b.fill("#signup-password", "newbie-password-0123").await;
    b.click("#signup-submit").await;
    b.wait_text("[data-field=email] .field-error", "Is not the email this invitation was sent to").await;
    b.shot("signup-errors").await;

    b.fill("#signup-email", "newbie@test.local").await;
    b.click("#signup-submit").await;
    at_path(&b, "/dashboard").await;
    let me = b
        .run_async("const done = arguments[arguments.length - 1]; fetch('/api/v1/me').then(r => r.json()).then(done)")
        .await;
    assert_eq!((me["role"].as_str(), me["team_ids"].clone()), (Some("member"), json!([team])), "{me}");
    b.shot("signup-landed").await;
    // A member of the invited team.
    b.goto(&app.url("/dashboard/teams")).await;
    let teams = b.text_of("#teams").await;
    assert!(teams.contains("default"), "{teams}");
    assert!(b.client.execute("return !!document.querySelector('#invite-form')", vec![]).await.unwrap() == json!(false));
}

#[tokio::test]
async fn open_sign_up_is_offered_on_the_sign_in_page_and_creates_a_workspace() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start_with("[auth]\nsignup = \"open\"\n").await.unwrap();
    b.goto(&app.url("/dashboard/login")).await;
    b.click("#signup-link").await;
    at_path(&b, "/dashboard/signup").await;
    b.fill("#signup-email", "solo@test.local").await;
    b.fill("#signup-password", "solo-password-0123").await;
    b.fill("#signup-name", "Solo Labs").await;
    b.click("#signup-submit").await;
    at_path(&b, "/dashboard").await;
    assert_eq!(b.text_of(".topbar .org").await, "Solo Labs");
}
