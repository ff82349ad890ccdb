//! Who may do what over the management API, with real users and personal access tokens:
//! members manage only their own keys in their own teams; admins manage the
//! organization but grant no ownership; owners change roles; another organization's
//! objects do not exist (404); fields a role may not set answer 403. And a team's
//! allowed models bound every key in it, live.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use tollgate_testkit::app::{OWNER_PASSWORD, TestApp};
use tollgate_testkit::client::Answer;

const ADMIN_TOKEN: &str = "test-admin-token";

pub(super) struct Caller<'a> {
    pub(super) app: &'a TestApp,
    pub(super) token: String,
}

impl Caller<'_> {
    pub(super) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let auth = format!("Bearer {}", self.token);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.app
            .client
            .call(
                method,
                &self.app.url(&format!("/api/v1{path}")),
                &[("authorization", &auth), ("content-type", "application/json")],
                body,
            )
            .await
            .unwrap()
    }

    pub(super) async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }
}

pub(super) async fn login<'a>(app: &'a TestApp, email: &str, password: &str) -> Caller<'a> {
    let body = json!({ "email": email, "password": password, "name": "tests" });
    let res = app.client.post_json(&app.url("/api/v1/auth/token"), None, &body).await.unwrap();
    assert_eq!(res.status, 201, "login {email}: {}", res.text());
    let token = res.json()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tgp_"));
    Caller { app, token }
}

/// Creates a user as the operator; returns their id.
pub(super) async fn user(op: &Caller<'_>, email: &str, role: &str, teams: &[&str]) -> String {
    let res = op
        .post("/users", json!({ "email": email, "password": "a-long-password-123", "role": role, "team_ids": teams }))
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()["id"].as_str().unwrap().to_owned()
}

fn status(a: &Answer) -> u16 {
    a.status.as_u16()
}

#[tokio::test]
async fn the_authorization_matrix_holds() {
    let app = TestApp::start().await.unwrap();
    let op = Caller { app: &app, token: ADMIN_TOKEN.into() };
    let default_team = op.get("/teams").await.json()["data"][0]["id"].as_str().unwrap().to_owned();
    let ml = op.post("/teams", json!({ "name": "ml" })).await.json()["id"].as_str().unwrap().to_owned();
    let m1_id = user(&op, "m1@test.local", "member", &[&default_team]).await;
    let m2_id = user(&op, "m2@test.local", "member", &[&default_team]).await;
    user(&op, "adm@test.local", "admin", &[]).await;
    let m1 = login(&app, "m1@test.local", "a-long-password-123").await;
    let m2 = login(&app, "m2@test.local", "a-long-password-123").await;
    let adm = login(&app, "adm@test.local", "a-long-password-123").await;
    let owner = login(&app, "owner@test.local", OWNER_PASSWORD).await;

    // Members: their own keys, in their own teams.
    let k1 = m1.post("/keys", json!({ "name": "m1-key" })).await;
    assert_eq!(status(&k1), 201, "{}", k1.text());
    assert_eq!((k1.json()["owner_id"].clone(), k1.json()["team_id"].clone()), (json!(m1_id), json!(default_team)));
    let k1 = k1.json()["id"].as_str().unwrap().to_owned();
    let k2 = m2.post("/keys", json!({ "name": "m2-key" })).await.json()["id"].as_str().unwrap().to_owned();
    let listed = m1.get("/keys").await.json();
    let names: Vec<&str> = listed["data"].as_array().unwrap().iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["m1-key"], "a member lists only their own keys");
    for (method, path) in [
        (Method::GET, format!("/keys/{k2}")),
        (Method::PATCH, format!("/keys/{k2}")),
        (Method::DELETE, format!("/keys/{k2}")),
        (Method::POST, format!("/keys/{k2}/disable")),
        (Method::POST, format!("/keys/{k2}/revoke")),
        (Method::POST, format!("/keys/{k2}/rotate")),
        (Method::POST, format!("/keys/{k2}/duplicate")),
    ] {
        let res = m1.call(method.clone(), &path, Some(json!({}))).await;
        assert_eq!(status(&res), 404, "{method} {path} by another member: {}", res.text());
    }
    // Mass assignment and function-level checks.
    assert_eq!(status(&m1.post("/keys", json!({ "name": "x", "owner_id": m2_id })).await), 403);
    assert_eq!(status(&m1.post("/keys", json!({ "name": "x", "team_id": ml })).await), 403);
    assert_eq!(status(&m1.post("/keys", json!({ "name": "x", "team_id": "team_nope" })).await), 404);
    assert_eq!(status(&m1.call(Method::PATCH, &format!("/keys/{k1}"), Some(json!({ "owner_id": m2_id }))).await), 403);
    assert_eq!(status(&m1.call(Method::PATCH, &format!("/keys/{k1}"), Some(json!({ "name": "renamed" }))).await), 200);
    for (method, path, body) in [
        (Method::GET, "/users", None),
        (Method::POST, "/users", Some(json!({ "email": "z@test.local", "role": "owner" }))),
        (Method::PATCH, &*format!("/users/{m2_id}"), Some(json!({ "role": "admin" }))),
        (Method::POST, "/teams", Some(json!({ "name": "mine" }))),
        (Method::PATCH, &*format!("/teams/{default_team}"), Some(json!({ "allowed_models": [] }))),
        (Method::GET, "/audit", None),
        (Method::POST, "/organizations", Some(json!({ "name": "o", "owner_email": "o@o.test" }))),
    ] {
        let res = m1.call(method.clone(), path, body).await;
        assert_eq!(status(&res), 403, "{method} {path} by a member: {}", res.text());
    }
    assert_eq!(status(&m1.get(&format!("/teams/{ml}")).await), 404, "a member sees only their teams");

    // Admins manage the organization and create keys for members, but grant no ownership.
    let for_m2 = adm.post("/keys", json!({ "name": "made-for-m2", "owner_id": m2_id })).await;
    assert_eq!(status(&for_m2), 201);
    assert_eq!(for_m2.json()["owner_id"], json!(m2_id), "the key is theirs");
    let m2_keys = m2.get("/keys").await.json();
    assert_eq!(m2_keys["data"].as_array().unwrap().len(), 2);
    assert_eq!(status(&adm.get(&format!("/keys/{k1}")).await), 200);
    assert_eq!(adm.get("/keys").await.json()["data"].as_array().unwrap().len(), 3);
    assert_eq!(status(&adm.post("/users", json!({ "email": "o2@test.local", "role": "owner" })).await), 403);
    // One rule for every path that grants a role: an admin cannot make another admin by
    // adding a user any more than by inviting one or changing a role.
    let made = adm.post("/users", json!({ "email": "a2@test.local", "role": "admin" })).await;
    assert_eq!(status(&made), 403, "{}", made.text());
    assert!(made.text().contains("only owners may grant the admin role"), "{}", made.text());
    assert_eq!(status(&adm.post("/invites", json!({ "email": "a3@test.local", "role": "admin" })).await), 403);
    assert_eq!(status(&adm.post("/users", json!({ "email": "m3@test.local", "role": "member" })).await), 201);
    assert_eq!(status(&owner.post("/users", json!({ "email": "a4@test.local", "role": "admin" })).await), 201);
    assert_eq!(
        status(&adm.call(Method::PATCH, &format!("/users/{m2_id}"), Some(json!({ "role": "admin" }))).await),
        403
    );
    assert_eq!(status(&adm.get("/audit").await), 200);

    // Owners change roles.
    assert_eq!(
        status(&owner.call(Method::PATCH, &format!("/users/{m2_id}"), Some(json!({ "role": "admin" }))).await),
        204
    );
    assert_eq!(m2.get("/users").await.status, 200, "the new role applies to the existing token at once");

    // Another organization's objects do not exist.
    let org2 = op
        .post(
            "/organizations",
            json!({ "name": "Other", "owner_email": "boss@other.test", "owner_password": "other-org-password" }),
        )
        .await;
    assert_eq!(status(&org2), 201, "{}", org2.text());
    let boss = login(&app, "boss@other.test", "other-org-password").await;
    assert_eq!(status(&boss.get(&format!("/keys/{k1}")).await), 404);
    assert_eq!(status(&boss.post(&format!("/keys/{k1}/revoke"), json!({})).await), 404);
    assert_eq!(status(&boss.post("/keys", json!({ "name": "x", "owner_id": m1_id })).await), 404);
    assert_eq!(status(&boss.post("/keys", json!({ "name": "x", "team_id": default_team })).await), 404);
    assert!(boss.get("/keys").await.json()["data"].as_array().unwrap().is_empty());
    let boss_org = boss.get("/me").await.json()["org_id"].clone();
    let boss_audit = boss.get("/audit").await.json();
    let entries = boss_audit["data"].as_array().unwrap();
    assert!(!entries.is_empty(), "their own token creation is there");
    assert!(entries.iter().all(|e| e["org_id"] == boss_org), "no other organization's audit entries: {boss_audit}");
    let orgs = boss.get("/organizations").await.json();
    assert_eq!(orgs["data"].as_array().unwrap().len(), 1);

    // Tokens: a wrong password gets nothing; a deleted token stops.
    let bad = app
        .client
        .post_json(
            &app.url("/api/v1/auth/token"),
            None,
            &json!({ "email": "m1@test.local", "password": "nope", "name": "x" }),
        )
        .await
        .unwrap();
    assert_eq!(status(&bad), 401);
    let tokens = m1.get("/tokens").await.json();
    let token_id = tokens["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(!tokens.to_string().contains(&m1.token), "token listings carry no secret");
    assert_eq!(
        status(&m2.call(Method::DELETE, &format!("/tokens/{token_id}"), None).await),
        404,
        "not another user's token"
    );
    assert_eq!(status(&m1.call(Method::DELETE, &format!("/tokens/{token_id}"), None).await), 204);
    assert_eq!(status(&m1.get("/me").await), 401);
}

#[tokio::test]
async fn a_team_limits_the_models_of_every_key_in_it() {
    let app = TestApp::start().await.unwrap();
    let op = Caller { app: &app, token: ADMIN_TOKEN.into() };
    let key = app.create_key("svc").await.unwrap();
    let team = op.get("/teams").await.json()["data"][0]["id"].as_str().unwrap().to_owned();
    let chat = |model: &str| json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] });
    assert_eq!(
        app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("gpt-4o-mini")).await.unwrap().status,
        200
    );

    let res = op.call(Method::PATCH, &format!("/teams/{team}"), Some(json!({ "allowed_models": ["demo-chat"] }))).await;
    assert_eq!(status(&res), 200, "{}", res.text());
    let start = Instant::now();
    loop {
        let r = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("gpt-4o-mini")).await.unwrap();
        if r.error_code() == "model_not_found" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "team limit not live within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let models = app.client.get(&app.url("/v1/models"), Some(&key)).await.unwrap().json();
    assert_eq!(
        models["data"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        [json!("demo-chat")]
    );
    assert_eq!(
        app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("demo-chat")).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn no_key_may_have_limits_above_its_team() {
    let app = TestApp::start().await.unwrap();
    let op = Caller { app: &app, token: ADMIN_TOKEN.into() };
    let team = op.get("/teams").await.json()["data"][0]["id"].as_str().unwrap().to_owned();
    let capped = op.call(Method::PATCH, &format!("/teams/{team}"), Some(json!({ "rpm": 100, "budget_usd": 20 }))).await;
    assert_eq!((status(&capped), capped.json()["rpm"].clone()), (200, json!(100)), "{}", capped.text());
    user(&op, "m@test.local", "member", &[&team]).await;
    let member = login(&app, "m@test.local", "a-long-password-123").await;

    for (who, caller) in [("member", &member), ("operator", &op)] {
        let over = caller.post("/keys", json!({ "name": "fast", "rpm": 1000 })).await;
        assert_eq!((status(&over), over.error_code()), (403, "forbidden".to_owned()), "{who}: {}", over.text());
        assert!(over.json()["error"]["message"].as_str().unwrap().contains("rpm"));
        let over = caller.post("/keys", json!({ "name": "rich", "budget_usd": 25 })).await;
        assert_eq!(status(&over), 403, "{who}");
    }
    let within = member.post("/keys", json!({ "name": "ok", "rpm": 100, "budget_usd": 20 })).await;
    assert_eq!(status(&within), 201, "{}", within.text());
    let id = within.json()["id"].as_str().unwrap().to_owned();
    let raise = member.call(Method::PATCH, &format!("/keys/{id}"), Some(json!({ "rpm": 101 }))).await;
    assert_eq!(status(&raise), 403);
    // Without a limit of its own, a key is bounded by the team's pool at run time.
    assert_eq!(status(&member.post("/keys", json!({ "name": "plain" })).await), 201);
    let lift = op.call(Method::PATCH, &format!("/teams/{team}"), Some(json!({ "rpm": null }))).await;
    assert_eq!(lift.json()["rpm"], json!(null));
    assert_eq!(status(&member.call(Method::PATCH, &format!("/keys/{id}"), Some(json!({ "rpm": 101 }))).await), 200);
}
