//! What an attacker or a careless upstream sends, and what must not come of it: a
//! provider echoing its credential in an error (never relayed, logged or stored), a
//! caller's request id reused (every row keeps its own id), a JSON array where an object
//! belongs (refused, nothing changed), and the dashboard's security headers.

use std::net::SocketAddr;

use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_testkit::app::{ADMIN_TOKEN, TestApp};

use super::{app_and_key, chat, in_database_files};

const ECHO_KEY: &str = "sk-echo-provider-credential-987654";
const ECHO_HEADER_SECRET: &str = "tenant-header-secret-abcdef";

/// An OpenAI-compatible upstream that answers every request `400` with a message quoting
/// the request's `Authorization` and `X-Tenant-Token` headers (some providers do echo
/// what they were sent).
async fn echoing_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)))
                        .map(|(_, v)| v.trim().to_owned())
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let message = format!(
                    "Invalid model for credentials '{}' (tenant {}).",
                    header("authorization"),
                    header("x-tenant-token")
                );
                let body = json!({ "error": { "message": message, "type": "invalid_request_error",
                    "param": "model", "code": "model_not_found" } })
                .to_string();
                let answer = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_echoing_its_credential_never_gets_it_to_the_client_or_the_rows() {
    let upstream = echoing_upstream().await;
    let extra = format!(
        r#"
[[providers]]
name = "echo"
kind = "openai"
base_url = "http://{upstream}/v1"
api_key = "{ECHO_KEY}"
headers = {{ "X-Tenant-Token" = "{ECHO_HEADER_SECRET}" }}

[[models]]
id = "echo-model"
type = "chat"
input_price_per_mtok = 1.0
output_price_per_mtok = 1.0
channels = [{{ provider = "echo" }}]
"#
    );
    let mut app = TestApp::start_with(&extra).await.unwrap();
    let key = app.create_key("echo").await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("echo-model")).await.unwrap();
    assert_eq!(res.status, 400, "the request's own mistake is relayed: {}", res.text());
    let text = res.text();
    assert!(text.contains("Invalid model for credentials"), "the provider's wording is kept: {text}");
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains(ECHO_KEY) && !text.contains(ECHO_HEADER_SECRET), "relayed: {text}");

    let id = res.header("x-request-id").unwrap().to_owned();
    let row = app.usage_row(&id).await.unwrap();
    let error = row.error.clone().unwrap_or_default();
    assert!(error.contains("[redacted]"), "{error}");
    assert!(!error.contains(ECHO_KEY) && !error.contains(ECHO_HEADER_SECRET), "stored: {error}");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let api = app
        .client
        .call(Method::GET, &app.url(&format!("/api/v1/usage/{id}")), &[("authorization", &auth)], "")
        .await
        .unwrap();
    assert_eq!(api.status, 200);
    assert!(!api.text().contains(ECHO_KEY) && !api.text().contains(ECHO_HEADER_SECRET), "{}", api.text());
    app.stop().await;
    for secret in [ECHO_KEY, ECHO_HEADER_SECRET] {
        assert!(!in_database_files(&app, secret.as_bytes()), "{secret} reached the database");
    }
}

#[tokio::test]
async fn a_reused_client_request_id_makes_rows_with_ids_of_their_own() {
    let (app, key) = app_and_key().await;
    let auth = format!("Bearer {key}");
    let headers =
        [("authorization", auth.as_str()), ("content-type", "application/json"), ("x-request-id", "my-retry-id")];
    for _ in 0..3 {
        let res = app
            .client
            .call(Method::POST, &app.url("/v1/chat/completions"), &headers, chat("demo-chat").to_string())
            .await
            .unwrap();
        assert_eq!(res.status, 200);
        assert_eq!(res.header("x-request-id"), Some("my-retry-id"), "the caller's id is echoed");
    }
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let get = |path: String| {
        let app = &app;
        let admin = admin.clone();
        async move { app.client.call(Method::GET, &app.url(&path), &[("authorization", &admin)], "").await.unwrap() }
    };
    let rows: Vec<Value> = loop {
        let page = get("/api/v1/usage?request_id=my-retry-id".into()).await.json();
        let rows = page["data"].as_array().unwrap().clone();
        if rows.len() == 3 {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "three requests, three ids: {rows:?}");
    assert!(rows.iter().all(|r| r["client_request_id"] == "my-retry-id" && r["status"] == 200));
    // One row by its own id; the caller's id names three, which is said rather than guessed.
    for id in &ids {
        let one = get(format!("/api/v1/usage/{id}")).await;
        assert_eq!((one.status.as_u16(), one.json()["request_id"].as_str()), (200, Some(*id)));
    }
    let ambiguous = get("/api/v1/usage/my-retry-id".into()).await;
    assert_eq!((ambiguous.status.as_u16(), ambiguous.json()["error"]["param"].as_str()), (400, Some("request_id")));
    assert!(ambiguous.text().contains("request_id filter"), "{}", ambiguous.text());
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let app = TestApp::start().await.unwrap();
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("authorization", admin.as_str()), ("content-type", "application/json")];
    let created = app
        .client
        .call(Method::POST, &app.url("/api/v1/keys"), &headers, json!({ "name": "kept" }).to_string())
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    // serde fills a struct from an array of its fields in order: `["renamed"]` was a rename.
    for body in [r#"["renamed"]"#, " [\"renamed\"]", "\"renamed\"", "5", "null"] {
        let res =
            app.client.call(Method::PATCH, &app.url(&format!("/api/v1/keys/{id}")), &headers, body).await.unwrap();
        assert_eq!((res.status.as_u16(), res.error_code()), (400, "invalid_request".into()), "{body}");
        assert!(res.text().contains("must be a JSON object"), "{}", res.text());
    }
    let res = app.client.call(Method::POST, &app.url("/api/v1/keys"), &headers, r#"["x"]"#).await.unwrap();
    assert_eq!(res.status, 400);
    let key = app.client.call(Method::GET, &app.url(&format!("/api/v1/keys/{id}")), &headers, "").await.unwrap();
    assert_eq!(key.json()["name"], "kept");
}

#[tokio::test]
async fn dashboard_responses_carry_security_headers() {
    let app = TestApp::start().await.unwrap();
    for path in ["/dashboard/login", "/dashboard/assets/app.js", "/dashboard/keys"] {
        let res = app.client.get(&app.url(path), None).await.unwrap();
        let csp = res.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(res.header("x-frame-options"), Some("DENY"), "{path}");
    }
}
