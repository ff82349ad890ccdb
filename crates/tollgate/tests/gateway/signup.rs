//! Sign-up under each policy and invitations, over the management API: `closed` refuses
//! the public but honours invitations; `invite` needs a valid one; `open` gives a stranger
//! a workspace of their own that sees nothing of the first. Invitations are single-use
//! (even when two sign-ups race for one), expire, can be revoked, bind an email when they
//! name one, and only owners invite admins. Bad invitations and taken emails are
//! throttled per address. On SQLite, and on PostgreSQL where the race matters most.

use http::Method;
use serde_json::{Value, json};
use tollgate_core::tenancy::Role;
use tollgate_store::Invite;
use tollgate_testkit::app::{ADMIN_TOKEN, OWNER_PASSWORD, PgDatabase, TestApp};
use tollgate_testkit::client::Answer;

const OWNER: &str = "owner@test.local";
const PASSWORD: &str = "a-long-signup-password";

fn policy(p: &str) -> String {
    format!("[auth]\nsignup = \"{p}\"\n")
}

async fn signup(app: &TestApp, body: Value) -> Answer {
    app.client.post_json(&app.url("/api/v1/auth/signup"), None, &body).await.unwrap()
}

/// Creates an invitation as the bearer of `token`; returns the whole answer.
async fn invite_as(app: &TestApp, token: &str, body: Value) -> Answer {
    app.client.post_json(&app.url("/api/v1/invites"), Some(token), &body).await.unwrap()
}

/// An invitation from the operator; returns `(id, token)`.
async fn invite(app: &TestApp, body: Value) -> (String, String) {
    let res = invite_as(app, ADMIN_TOKEN, body).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let v = res.json();
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tgi_"), "{token}");
    assert_eq!(v["url"], format!("/dashboard/signup?invite={token}"));
    (v["id"].as_str().unwrap().to_owned(), token)
}

/// A request with the session of a sign-up answer (cookie, and its CSRF token on writes).
async fn as_session(app: &TestApp, signed_up: &Answer, method: Method, path: &str, body: Option<Value>) -> Answer {
    let cookie = signed_up.header("set-cookie").expect("a session cookie").split(';').next().unwrap().to_owned();
    let csrf = signed_up.json()["csrf_token"].as_str().unwrap().to_owned();
    let headers = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str()), ("content-type", "application/json")];
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    app.client.call(method, &app.url(&format!("/api/v1{path}")), &headers, body).await.unwrap()
}

/// A personal access token for a password account.
async fn token_for(app: &TestApp, email: &str, password: &str) -> String {
    let body = json!({ "email": email, "password": password, "name": "tests" });
    let res = app.client.post_json(&app.url("/api/v1/auth/token"), None, &body).await.unwrap();
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()["token"].as_str().unwrap().to_owned()
}

async fn first_org(app: &TestApp) -> String {
    let orgs = app.client.get(&app.url("/api/v1/organizations"), Some(ADMIN_TOKEN)).await.unwrap().json();
    orgs["data"][0]["id"].as_str().unwrap().to_owned()
}

async fn audit_actions(app: &TestApp, action: &str) -> Vec<Value> {
    let res = app.client.get(&app.url(&format!("/api/v1/audit?action={action}")), Some(ADMIN_TOKEN)).await.unwrap();
    res.json()["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn closed_refuses_the_public_but_an_invitation_still_signs_up_once() {
    let app = TestApp::start().await.unwrap();
    let res = signup(&app, json!({ "email": "stranger@test.local", "password": PASSWORD })).await;
    assert_eq!((res.status.as_u16(), res.error_code()), (403, "forbidden".to_owned()));
    assert!(res.json()["error"]["message"].as_str().unwrap().contains("sign-up is closed"), "{}", res.text());

    let teams = app.client.get(&app.url("/api/v1/teams"), Some(ADMIN_TOKEN)).await.unwrap().json();
    let team = teams["data"][0]["id"].as_str().unwrap().to_owned();
    let (id, token) = invite(&app, json!({ "role": "member", "team_id": team })).await;
    let listed = app.client.get(&app.url("/api/v1/invites"), Some(ADMIN_TOKEN)).await.unwrap().json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0].get("token").is_none(), "the token is shown only once");

    let res = signup(&app, json!({ "email": " New@Test.local ", "password": PASSWORD, "invite": token })).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let cookie = res.header("set-cookie").unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let user = res.json();
    assert_eq!((user["email"].as_str(), user["role"].as_str()), (Some("new@test.local"), Some("member")));
    assert_eq!(user["org_id"], first_org(&app).await.as_str());
    assert_eq!(user["team_ids"], json!([team]));
    // The session works like a sign-in's: the member creates a key in the invited team.
    let me = as_session(&app, &res, Method::GET, "/me", None).await.json();
    assert_eq!(me["actor"], user["user_id"]);
    let key = as_session(&app, &res, Method::POST, "/keys", Some(json!({ "name": "mine", "team_id": team }))).await;
    assert_eq!(key.status, 201, "{}", key.text());

    // Used once: neither the same person nor anyone else can use it again.
    let again = signup(&app, json!({ "email": "other@test.local", "password": PASSWORD, "invite": token })).await;
    assert_eq!((again.status.as_u16(), again.json()["error"]["param"].clone()), (400, json!("invite")));
    let listed = app.client.get(&app.url("/api/v1/invites"), Some(ADMIN_TOKEN)).await.unwrap().json();
    assert_eq!(listed["data"], json!([]), "a used invitation is not pending");
    // A taken email is 409, and the invitation it carried stays usable.
    let (_, fresh) = invite(&app, json!({})).await;
    let taken = signup(&app, json!({ "email": OWNER, "password": PASSWORD, "invite": fresh })).await;
    assert_eq!((taken.status.as_u16(), taken.error_code()), (409, "conflict".to_owned()));
    let ok = signup(&app, json!({ "email": "third@test.local", "password": PASSWORD, "invite": fresh })).await;
    assert_eq!(ok.status, 201, "{}", ok.text());

    let created = audit_actions(&app, "invite.create").await;
    assert_eq!(created.len(), 2);
    assert!(!created.iter().any(|e| e.to_string().contains(&token)), "no token in the audit log");
    let joined = audit_actions(&app, "user.signup").await;
    assert_eq!(joined.len(), 2);
    assert!(joined.iter().any(|e| e["after"]["invite_id"] == id.as_str() && e["source_ip"] == "127.0.0.1"));
}

#[tokio::test]
async fn invite_policy_needs_an_unexpired_unrevoked_invitation_for_the_right_email() {
    let app = TestApp::start_with(&policy("invite")).await.unwrap();
    let res = signup(&app, json!({ "email": "a@test.local", "password": PASSWORD })).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].clone()), (400, json!("invite")));

    let (_, for_bob) = invite(&app, json!({ "email": "Bob@Test.local" })).await;
    let wrong = signup(&app, json!({ "email": "eve@test.local", "password": PASSWORD, "invite": for_bob })).await;
    assert_eq!((wrong.status.as_u16(), wrong.json()["error"]["param"].clone()), (400, json!("email")));
    let short = signup(&app, json!({ "email": "bob@test.local", "password": "short", "invite": for_bob })).await;
    assert_eq!((short.status.as_u16(), short.json()["error"]["param"].clone()), (400, json!("password")));
    let bob = signup(&app, json!({ "email": "bob@test.local", "password": PASSWORD, "invite": for_bob })).await;
    assert_eq!(bob.status, 201, "{}", bob.text());

    // Revoked: gone from the list, and refused.
    let (id, revoked) = invite(&app, json!({})).await;
    let res = app.client.delete(&app.url(&format!("/api/v1/invites/{id}")), ADMIN_TOKEN).await.unwrap();
    assert_eq!(res.status, 204);
    let res = app.client.delete(&app.url(&format!("/api/v1/invites/{id}")), ADMIN_TOKEN).await.unwrap();
    assert_eq!(res.status, 404, "revoking twice");
    let used = signup(&app, json!({ "email": "c@test.local", "password": PASSWORD, "invite": revoked })).await;
    assert_eq!((used.status.as_u16(), used.json()["error"]["param"].clone()), (400, json!("invite")));
    assert_eq!(audit_actions(&app, "invite.revoke").await.len(), 1);

    // Expired: written straight to the store, a day past its end.
    let services = app.services().unwrap();
    let minted = tollgate_core::key::KeyFormat::new("tgi_").unwrap().generate();
    let now = tollgate_core::time::now_millis();
    let row = Invite {
        id: "inv_expired".into(),
        org_id: first_org(&app).await,
        email: None,
        role: Role::Member,
        team_id: None,
        digest: services.digester.digest(&minted),
        created_by: "cli".into(),
        created_at: now - 8 * 86_400_000,
        expires_at: now - 86_400_000,
        accepted_at: None,
        accepted_by: None,
    };
    let entry = tollgate_service::Actor::cli().audit(&row.org_id, "invite.create", "invite", &row.id);
    services.store.insert_invite(&row, &entry).await.unwrap();
    let late = signup(&app, json!({ "email": "d@test.local", "password": PASSWORD, "invite": minted })).await;
    assert_eq!((late.status.as_u16(), late.json()["error"]["param"].clone()), (400, json!("invite")));
    let listed = app.client.get(&app.url("/api/v1/invites"), Some(ADMIN_TOKEN)).await.unwrap().json();
    assert!(!listed.to_string().contains("inv_expired"), "an expired invitation is not pending: {listed}");
    // Not a token at all: refused the same way, without a lookup.
    let junk = signup(&app, json!({ "email": "e@test.local", "password": PASSWORD, "invite": "hello" })).await;
    assert_eq!(junk.json()["error"]["param"], "invite");
}

#[tokio::test]
async fn members_cannot_invite_and_only_owners_invite_admins() {
    let app = TestApp::start().await.unwrap();
    let make = |email: &str, role: &str| json!({ "email": email, "password": PASSWORD, "role": role });
    for (email, role) in [("admin@test.local", "admin"), ("member@test.local", "member")] {
        let res = app.client.post_json(&app.url("/api/v1/users"), Some(ADMIN_TOKEN), &make(email, role)).await.unwrap();
        assert_eq!(res.status, 201, "{}", res.text());
    }
    let owner = token_for(&app, OWNER, OWNER_PASSWORD).await;
    let admin = token_for(&app, "admin@test.local", PASSWORD).await;
    let member = token_for(&app, "member@test.local", PASSWORD).await;

    let res = invite_as(&app, &member, json!({})).await;
    assert_eq!((res.status.as_u16(), res.error_code()), (403, "forbidden".to_owned()));
    assert_eq!(app.client.get(&app.url("/api/v1/invites"), Some(&member)).await.unwrap().status, 403);
    let res = invite_as(&app, &admin, json!({ "role": "admin" })).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(res.text().contains("only owners may grant the admin role"), "{}", res.text());
    let res = invite_as(&app, &admin, json!({ "role": "member", "email": "m2@test.local" })).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["role"], "member");
    let res = invite_as(&app, &owner, json!({ "role": "admin" })).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let admin_invite = res.json()["token"].as_str().unwrap().to_owned();
    let res = invite_as(&app, &owner, json!({ "role": "owner" })).await;
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].clone()), (400, json!("role")));
    let res = invite_as(&app, &owner, json!({ "ttl_hours": 0 })).await;
    assert_eq!(res.json()["error"]["param"], "ttl_hours");
    let res = invite_as(&app, &owner, json!({ "team_id": "team_nope" })).await;
    assert_eq!(res.status, 404);
    // A member cannot revoke either; the admin's invitation is the admin's organization's.
    let pending = app.client.get(&app.url("/api/v1/invites"), Some(&admin)).await.unwrap().json();
    assert_eq!(pending["data"].as_array().unwrap().len(), 2);
    let id = pending["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.client.delete(&app.url(&format!("/api/v1/invites/{id}")), &member).await.unwrap().status, 403);

    let joined =
        signup(&app, json!({ "email": "boss@test.local", "password": PASSWORD, "invite": admin_invite })).await;
    assert_eq!((joined.status.as_u16(), joined.json()["role"].clone()), (201, json!("admin")));
}

#[tokio::test]
async fn open_sign_up_gets_a_workspace_of_its_own_that_sees_nothing_of_the_first() {
    let app = TestApp::start_with(&policy("open")).await.unwrap();
    let first_key = app.create_key("first-org-key").await.unwrap();
    let first_id = app.client.get(&app.url("/api/v1/keys"), Some(ADMIN_TOKEN)).await.unwrap().json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let res = signup(&app, json!({ "email": "solo@test.local", "password": PASSWORD, "name": "Solo Labs" })).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let me = res.json();
    assert_eq!(me["role"], "owner");
    assert_ne!(me["org_id"], first_org(&app).await.as_str());
    let orgs = as_session(&app, &res, Method::GET, "/organizations", None).await.json();
    assert_eq!((orgs["data"].as_array().unwrap().len(), orgs["data"][0]["name"].as_str()), (1, Some("Solo Labs")));
    let teams = as_session(&app, &res, Method::GET, "/teams", None).await.json();
    assert_eq!(teams["data"].as_array().unwrap().len(), 1);
    assert_eq!((teams["data"][0]["name"].as_str(), &teams["data"][0]["org_id"]), (Some("default"), &me["org_id"]));
    let users = as_session(&app, &res, Method::GET, "/users", None).await.json();
    assert_eq!(users["data"].as_array().unwrap().len(), 1, "only themself: {users}");

    // Their own key works; the first organization's keys, usage and audit do not exist for them.
    let created = as_session(&app, &res, Method::POST, "/keys", Some(json!({ "name": "solo-key" }))).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let mine = created.json()["key"].as_str().unwrap().to_owned();
    app.key_accepted(&mine, std::time::Duration::from_secs(5)).await.unwrap();
    let keys = as_session(&app, &res, Method::GET, "/keys", None).await.json();
    let names: Vec<&str> = keys["data"].as_array().unwrap().iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["solo-key"]);
    assert_eq!(as_session(&app, &res, Method::GET, &format!("/keys/{first_id}"), None).await.status, 404);
    let revoke = as_session(&app, &res, Method::POST, &format!("/keys/{first_id}/revoke"), Some(json!({}))).await;
    assert_eq!(revoke.status, 404);
    let audit = as_session(&app, &res, Method::GET, "/audit", None).await.json();
    assert!(!audit.to_string().contains(&first_id), "the first org's audit leaks: {audit}");
    assert!(app.client.get(&app.url("/v1/models"), Some(&first_key)).await.unwrap().status.is_success());

    // With an invitation, open sign-up joins the inviting organization instead.
    let (_, token) = invite(&app, json!({})).await;
    let joined = signup(&app, json!({ "email": "joiner@test.local", "password": PASSWORD, "invite": token })).await;
    assert_eq!((joined.status.as_u16(), &joined.json()["org_id"]), (201, &json!(first_org(&app).await)));
    // An email already registered: 409 without more detail.
    let taken = signup(&app, json!({ "email": "SOLO@test.local", "password": PASSWORD })).await;
    assert_eq!(taken.status, 409);
    assert!(!taken.text().contains("Solo Labs") && !taken.text().contains("usr_"), "{}", taken.text());
}

#[tokio::test]
async fn bad_invitations_and_taken_emails_are_throttled_per_address() {
    let app = TestApp::start_with(&policy("open")).await.unwrap();
    let (_, good) = invite(&app, json!({})).await;
    for i in 0..3 {
        let guess = tollgate_core::key::KeyFormat::new("tgi_").unwrap().generate();
        let res =
            signup(&app, json!({ "email": format!("g{i}@test.local"), "password": PASSWORD, "invite": guess })).await;
        assert_eq!(res.status, 400);
    }
    for _ in 0..2 {
        assert_eq!(signup(&app, json!({ "email": OWNER, "password": PASSWORD })).await.status, 409);
    }
    let locked = signup(&app, json!({ "email": "late@test.local", "password": PASSWORD, "invite": good })).await;
    assert_eq!((locked.status.as_u16(), locked.error_code()), (429, "rate_limit_exceeded".to_owned()));
    assert!(locked.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s > 0));
    // Sign-in of an existing account is counted separately.
    let body = json!({ "email": OWNER, "password": OWNER_PASSWORD });
    assert_eq!(app.client.post_json(&app.url("/api/v1/auth/login"), None, &body).await.unwrap().status, 200);
}

#[tokio::test]
async fn an_invitation_is_used_once_when_sign_ups_race_for_it_on_postgres() {
    let Some(db) = PgDatabase::create().await.unwrap() else { return };
    let mut app = TestApp::start_with_top(&format!("database_url = \"{}\"", db.url), &policy("invite")).await.unwrap();
    let (_, token) = invite(&app, json!({ "role": "member" })).await;
    let attempts = (0..8).map(|i| {
        let body = json!({ "email": format!("racer{i}@test.local"), "password": PASSWORD, "invite": token });
        let (client, url) = (app.client.clone(), app.url("/api/v1/auth/signup"));
        async move { client.post_json(&url, None, &body).await.unwrap() }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let won: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(won.len(), 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert!(answers.iter().filter(|a| a.status != 201).all(|a| a.json()["error"]["param"] == "invite"));
    let members = app.client.get(&app.url("/api/v1/users"), Some(ADMIN_TOKEN)).await.unwrap().json();
    assert_eq!(members["data"].as_array().unwrap().len(), 2, "the owner and one racer: {members}");
    let joined = audit_actions(&app, "user.signup").await;
    assert_eq!(joined.len(), 1);
    app.stop().await;
    db.drop_now().await.unwrap();
}

#[tokio::test]
async fn an_invitation_is_used_once_when_sign_ups_race_for_it_on_sqlite() {
    let app = TestApp::start().await.unwrap();
    let (_, token) = invite(&app, json!({})).await;
    let attempts = (0..6).map(|i| {
        let body = json!({ "email": format!("racer{i}@test.local"), "password": PASSWORD, "invite": token });
        let (client, url) = (app.client.clone(), app.url("/api/v1/auth/signup"));
        async move { client.post_json(&url, None, &body).await.unwrap() }
    });
    let answers = futures_util::future::join_all(attempts).await;
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 1);
}
