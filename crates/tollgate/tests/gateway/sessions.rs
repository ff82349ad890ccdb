//! Dashboard sessions and key reveal through the management API: the cookie's
//! attributes, CSRF on writes, logout and password change ending sessions, throttled
//! sign-ins; reveal only when enabled, sealed at rest, and with the password again for
//! users.

use http::Method;
use serde_json::{Value, json};
use tollgate_testkit::app::{OWNER_PASSWORD, TestApp};
use tollgate_testkit::client::Answer;

const OWNER: &str = "owner@test.local";

async fn login(app: &TestApp, password: &str, extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(extra);
    let body = json!({ "email": OWNER, "password": password }).to_string();
    app.client.call(Method::POST, &app.url("/api/v1/auth/login"), &headers, body).await.unwrap()
}

/// `name=value` of the Set-Cookie header, plus its attributes.
fn set_cookie(res: &Answer) -> (String, String) {
    let raw = res.header("set-cookie").expect("a Set-Cookie header").to_owned();
    let pair = raw.split(';').next().unwrap_or_default().to_owned();
    (pair, raw)
}

async fn with_session(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Value,
) -> Answer {
    let mut headers = vec![("cookie", cookie), ("content-type", "application/json")];
    if let Some(c) = csrf {
        headers.push(("x-csrf-token", c));
    }
    app.client.call(method, &app.url(path), &headers, body.to_string()).await.unwrap()
}

#[tokio::test]
async fn sessions_are_cookies_with_csrf_and_end_at_logout_and_password_change() {
    let app = TestApp::start().await.unwrap();
    let res = login(&app, OWNER_PASSWORD, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let (cookie, raw) = set_cookie(&res);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(raw.contains(attr), "{attr} missing: {raw}");
    }
    assert!(!raw.contains("Secure"), "plain HTTP: not Secure");
    let csrf = res.json()["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(res.json()["role"], "owner");

    assert_eq!(with_session(&app, Method::GET, "/api/v1/keys", &cookie, None, json!(null)).await.status, 200);
    let no_csrf = with_session(&app, Method::POST, "/api/v1/keys", &cookie, None, json!({ "name": "x" })).await;
    assert_eq!((no_csrf.status.as_u16(), no_csrf.error_code()), (403, "forbidden".to_owned()));
    let wrong = with_session(&app, Method::POST, "/api/v1/keys", &cookie, Some("nope"), json!({ "name": "x" })).await;
    assert_eq!(wrong.status, 403);
    let ok = with_session(&app, Method::POST, "/api/v1/keys", &cookie, Some(&csrf), json!({ "name": "x" })).await;
    assert_eq!(ok.status, 201, "{}", ok.text());

    // Logout ends the session and clears the cookie.
    let out = with_session(&app, Method::POST, "/api/v1/auth/logout", &cookie, Some(&csrf), json!(null)).await;
    assert_eq!(out.status, 204);
    assert!(set_cookie(&out).1.contains("Max-Age=0"));
    assert_eq!(with_session(&app, Method::GET, "/api/v1/keys", &cookie, None, json!(null)).await.status, 401);

    // A password change ends every session, and the new password is the one that works.
    let res = login(&app, OWNER_PASSWORD, &[]).await;
    let (cookie, _) = set_cookie(&res);
    let csrf = res.json()["csrf_token"].as_str().unwrap().to_owned();
    let other = set_cookie(&login(&app, OWNER_PASSWORD, &[]).await).0;
    let body = json!({ "current_password": "wrong-password-123", "new_password": "a-brand-new-password" });
    assert_eq!(with_session(&app, Method::POST, "/api/v1/me/password", &cookie, Some(&csrf), body).await.status, 403);
    let body = json!({ "current_password": OWNER_PASSWORD, "new_password": "a-brand-new-password" });
    assert_eq!(with_session(&app, Method::POST, "/api/v1/me/password", &cookie, Some(&csrf), body).await.status, 204);
    for c in [&cookie, &other] {
        assert_eq!(with_session(&app, Method::GET, "/api/v1/keys", c, None, json!(null)).await.status, 401);
    }
    assert_eq!(login(&app, OWNER_PASSWORD, &[]).await.status, 401);
    assert_eq!(login(&app, "a-brand-new-password", &[]).await.status, 200);
}

#[tokio::test]
async fn failed_sign_ins_are_throttled() {
    let app = TestApp::start().await.unwrap();
    for _ in 0..5 {
        assert_eq!(login(&app, "wrong-password-000", &[]).await.status, 401);
    }
    let locked = login(&app, OWNER_PASSWORD, &[]).await;
    assert_eq!((locked.status.as_u16(), locked.error_code()), (429, "rate_limit_exceeded".to_owned()));
    assert!(locked.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s > 0));
    // The same lock covers the token endpoint.
    let body = json!({ "email": OWNER, "password": OWNER_PASSWORD, "name": "x" });
    let res = app.client.post_json(&app.url("/api/v1/auth/token"), None, &body).await.unwrap();
    assert_eq!(res.status, 429);
}

#[tokio::test]
async fn the_cookie_is_secure_behind_a_trusted_tls_proxy() {
    let app = TestApp::start_with_top("trusted_proxies = [\"127.0.0.1/32\"]", "").await.unwrap();
    let res = login(&app, OWNER_PASSWORD, &[("x-forwarded-proto", "https")]).await;
    assert!(set_cookie(&res).1.contains("Secure"));
}

const REVEAL: &str =
    "[keys]\nreveal = true\nreveal_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n";

#[tokio::test]
async fn reveal_works_only_when_enabled_and_asks_users_for_their_password() {
    let off = TestApp::start().await.unwrap();
    let id = off
        .client
        .post_json(&off.url("/api/v1/keys"), Some("test-admin-token"), &json!({ "name": "k" }))
        .await
        .unwrap()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = off
        .client
        .post_json(&off.url(&format!("/api/v1/keys/{id}/reveal")), Some("test-admin-token"), &json!({}))
        .await
        .unwrap();
    assert_eq!((res.status.as_u16(), res.json()["error"]["param"].clone()), (400, json!("reveal")));

    let mut app = TestApp::start_with(REVEAL).await.unwrap();
    let created = app
        .client
        .post_json(&app.url("/api/v1/keys"), Some("test-admin-token"), &json!({ "name": "k" }))
        .await
        .unwrap()
        .json();
    let (id, secret) = (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned());
    let reveal = |token: String, body: Value| {
        let url = app.url(&format!("/api/v1/keys/{id}/reveal"));
        let client = app.client.clone();
        async move { client.post_json(&url, Some(&token), &body).await.unwrap() }
    };
    let res = reveal("test-admin-token".into(), json!({})).await;
    assert_eq!(res.json()["key"], json!(secret), "the operator reveals without a password");

    let pat = app
        .client
        .post_json(
            &app.url("/api/v1/auth/token"),
            None,
            &json!({ "email": OWNER, "password": OWNER_PASSWORD, "name": "t" }),
        )
        .await
        .unwrap()
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reveal(pat.clone(), json!({})).await.json()["error"]["param"], "password");
    assert_eq!(reveal(pat.clone(), json!({ "password": "not-my-password" })).await.status, 403);
    assert_eq!(reveal(pat.clone(), json!({ "password": OWNER_PASSWORD })).await.json()["key"], json!(secret));

    // A rotation seals the new secret.
    let rotated = app
        .client
        .post_json(&app.url(&format!("/api/v1/keys/{id}/rotate")), Some("test-admin-token"), &json!({}))
        .await
        .unwrap()
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reveal("test-admin-token".into(), json!({})).await.json()["key"], json!(rotated));

    let audit =
        app.client.get(&app.url("/api/v1/audit?action=key.reveal"), Some("test-admin-token")).await.unwrap().json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 3);
    app.stop().await;
    let data = app.dir.path().join("data");
    let mut dump = std::fs::read(data.join("tollgate.db")).unwrap();
    dump.extend(std::fs::read(data.join("tollgate.db-wal")).unwrap_or_default());
    for s in [&secret, &rotated] {
        let body = s.trim_start_matches("sk-tg-").as_bytes();
        assert!(!dump.windows(body.len()).any(|w| w == body), "only ciphertext at rest");
    }
}

/// Rotating from the dashboard asks the person for their password again (missing: 400,
/// wrong: 403, both naming `password`, and wrong ones throttled like sign-ins); bearer
/// tokens — the operator's, a personal access token — rotate without one.
#[tokio::test]
async fn a_session_rotates_a_key_only_with_the_password_again() {
    let app = TestApp::start().await.unwrap();
    let (id, _) = app.api_key(&json!({ "name": "svc" })).await.unwrap();
    let res = login(&app, OWNER_PASSWORD, &[]).await;
    let (cookie, _) = set_cookie(&res);
    let csrf = res.json()["csrf_token"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/keys/{id}/rotate");
    let rotate = |body: Value| with_session(&app, Method::POST, &path, &cookie, Some(&csrf), body);

    let missing = rotate(json!({ "grace_seconds": 0 })).await;
    assert_eq!((missing.status.as_u16(), missing.json()["error"]["param"].as_str()), (400, Some("password")));
    let wrong = rotate(json!({ "password": "not-the-password" })).await;
    assert_eq!((wrong.status.as_u16(), wrong.json()["error"]["param"].as_str()), (403, Some("password")));
    let ok = rotate(json!({ "password": OWNER_PASSWORD })).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.json()["key"].as_str().unwrap().starts_with("sk-tg-"));

    let by_operator = app.client.post_json(&app.url(&path), Some("test-admin-token"), &json!({})).await.unwrap();
    assert_eq!(by_operator.status, 200, "{}", by_operator.text());

    // Wrong passwords count against the sign-in throttle: enough of them lock rotation out.
    let mut last = 0;
    for _ in 0..20 {
        last = rotate(json!({ "password": "still-wrong" })).await.status.as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "wrong passwords are throttled");
    let audit = app.client.get(&app.url("/api/v1/audit?action=key.rotate"), Some("test-admin-token")).await;
    assert_eq!(audit.unwrap().json()["data"].as_array().unwrap().len(), 2, "only the two rotations that were allowed");
}
