//! The OpenAPI document against the code it describes: the route table (as written in
//! `src/` and as served), the wire shape of keys, organizations, members, teams, tokens,
//! sessions, revealed keys, pages and errors, the session cookie's attributes, and its own
//! `$ref`s. A route, or a field of a view the API answers with, added without documenting
//! it fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_core::Secret;
use tollgate_core::key::{Digester, KeyFormat};
use tollgate_service::{Sealer, Services};
use tollgate_store::Store;
use tollgate_web::openapi::document_json;
use tollgate_web::{WebState, router};

/// Every route the control plane registers, as the document names it: paths of
/// `keys::routes()` are under the `/api/v1` server; `/healthz` and `/readyz` under the root.
const ROUTES: &[(&str, &str)] = &[
    ("/keys", "get"),
    ("/keys", "post"),
    ("/keys/{id}", "get"),
    ("/keys/{id}", "patch"),
    ("/keys/{id}", "delete"),
    ("/keys/{id}/disable", "post"),
    ("/keys/{id}/enable", "post"),
    ("/keys/{id}/revoke", "post"),
    ("/keys/{id}/rotate", "post"),
    ("/keys/{id}/duplicate", "post"),
    ("/keys/{id}/ephemeral", "post"),
    ("/keys/{id}/reveal", "post"),
    ("/audit", "get"),
    ("/usage", "get"),
    ("/usage.csv", "get"),
    ("/usage/daily", "get"),
    ("/usage/{request_id}", "get"),
    ("/auth-failures", "get"),
    ("/billing", "get"),
    ("/billing/credits", "post"),
    ("/billing/ledger", "get"),
    ("/models", "get"),
    ("/models", "post"),
    ("/models/{id}", "patch"),
    ("/models/{id}", "delete"),
    ("/models/{id}/price", "delete"),
    ("/channels", "get"),
    ("/channels", "post"),
    ("/channels/{id}", "patch"),
    ("/channels/{id}", "delete"),
    ("/providers", "get"),
    ("/providers", "post"),
    ("/providers/{name}", "patch"),
    ("/providers/{name}", "delete"),
    ("/openapi.json", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/auth/token", "post"),
    ("/auth/login", "post"),
    ("/auth/logout", "post"),
    ("/me", "get"),
    ("/me/password", "post"),
    ("/organizations", "get"),
    ("/organizations", "post"),
    ("/users", "get"),
    ("/users", "post"),
    ("/users/{id}", "patch"),
    ("/teams", "get"),
    ("/teams", "post"),
    ("/teams/{id}", "get"),
    ("/teams/{id}", "patch"),
    ("/teams/{id}/members", "post"),
    ("/teams/{id}/members/{user_id}", "delete"),
    ("/tokens", "get"),
    ("/tokens", "post"),
    ("/tokens/{id}", "delete"),
    ("/invites", "get"),
    ("/invites", "post"),
    ("/invites/{id}", "delete"),
    ("/auth/signup", "post"),
];

/// Served without credentials; everything else takes a bearer token or the session cookie.
const PUBLIC: &[&str] =
    &["/openapi.json", "/healthz", "/readyz", "/auth/token", "/auth/login", "/auth/logout", "/auth/signup"];
/// The dashboard's HTML pages and assets (`src/dashboard/`): served at the root, outside
/// the API and its document; listed here so that a page route cannot slip in unnoticed
/// and an API route cannot hide among them.
const DASHBOARD: &[(&str, &str)] = &[
    ("/", "get"),
    ("/dashboard", "get"),
    ("/dashboard/login", "get"),
    ("/dashboard/signup", "get"),
    ("/dashboard/keys", "get"),
    ("/dashboard/usage", "get"),
    ("/dashboard/usage/{request_id}", "get"),
    ("/dashboard/account", "get"),
    ("/dashboard/billing", "get"),
    ("/dashboard/playground", "get"),
    ("/dashboard/playground/run", "post"),
    ("/dashboard/teams", "get"),
    ("/dashboard/models", "get"),
    ("/dashboard/audit", "get"),
    ("/dashboard/assets/app.css", "get"),
    ("/dashboard/assets/app.js", "get"),
    ("/dashboard/assets/signup.js", "get"),
    ("/dashboard/assets/keys.js", "get"),
];
/// Outside `/api/v1`: documented with the server root.
const AT_ROOT: &[&str] = &["/healthz", "/readyz"];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const ADMIN: &str = "test-admin-token";
const OWNER_EMAIL: &str = "owner@test.local";
const OWNER_PASSWORD: &str = "a long test password";

fn routes() -> BTreeSet<(String, String)> {
    set(ROUTES)
}

fn set(routes: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    routes.iter().map(|(p, m)| ((*p).to_owned(), (*m).to_owned())).collect()
}

fn documented() -> BTreeSet<(String, String)> {
    let paths = document_json()["paths"].as_object().expect("paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys().filter(|k| METHODS.contains(&k.as_str())) {
            out.insert((path.clone(), method.clone()));
        }
    }
    out
}

#[test]
fn is_an_openapi_3_1_document() {
    let doc = document_json();
    assert!(doc["openapi"].as_str().expect("openapi").starts_with("3.1"), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["servers"], json!([{ "url": "/api/v1", "description": doc["servers"][0]["description"] }]));
}

#[test]
fn documents_exactly_the_route_table() {
    assert_eq!(documented(), routes());
}

/// Reads every `.route("path", get(..).post(..))` in `src/`, so that a route added there
/// without being added to `ROUTES` (and so to the document) fails this test. Routes in
/// `lib.rs` are at the root unless spelled `/api/v1/…`; other modules are nested under
/// `/api/v1`, except the dashboard's (`src/dashboard/`), which must match `DASHBOARD` and
/// stay out of `/api`.
#[test]
fn route_table_mirrors_the_source() {
    let mut found = BTreeSet::new();
    let mut pages = BTreeSet::new();
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in rust_files(&src_dir) {
        let src = std::fs::read_to_string(&file).unwrap();
        let in_lib = file.file_name().is_some_and(|n| n == "lib.rs");
        let in_dashboard = file.starts_with(src_dir.join("dashboard"));
        assert_eq!(
            src.matches(".route(").count(),
            src.matches(".route(\"").count(),
            "{}: every .route( must name its path as a literal for this test to read it",
            file.display()
        );
        for (at, _) in src.match_indices(".route(\"") {
            let rest = &src[at + ".route(\"".len()..];
            let (path, rest) = rest.split_once('"').unwrap();
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find_map(|(i, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    (depth == 0).then_some(i)
                })
                .unwrap();
            let args = &rest[..end];
            let path = if in_lib { path.strip_prefix("/api/v1").unwrap_or(path) } else { path };
            if in_dashboard {
                assert!(
                    !path.starts_with("/api") && !path.starts_with("/v1"),
                    "{path}: a dashboard page in the API space"
                );
            }
            for method in METHODS {
                for (i, _) in args.match_indices(&format!("{method}(")) {
                    if !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                        let into = if in_dashboard { &mut pages } else { &mut found };
                        into.insert((path.to_owned(), (*method).to_owned()));
                    }
                }
            }
        }
    }
    let expected = routes();
    let undocumented: Vec<_> = found.difference(&expected).collect();
    let gone: Vec<_> = expected.difference(&found).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "in src/ but not in ROUTES (document them): {undocumented:?}; in ROUTES but not in src/: {gone:?}"
    );
    assert_eq!(pages, set(DASHBOARD), "the dashboard's routes in src/dashboard/ against DASHBOARD");
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn credentials_everywhere_but_health_sign_in_and_the_document() {
    let doc = document_json();
    assert_eq!(doc["security"], json!([{ "bearerAuth": [] }, { "sessionCookie": [] }]));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(
        (&schemes["sessionCookie"]["type"], &schemes["sessionCookie"]["in"], &schemes["sessionCookie"]["name"]),
        (&json!("apiKey"), &json!("cookie"), &json!("tg_session"))
    );
    assert!(schemes["sessionCookie"]["description"].as_str().unwrap().contains("x-csrf-token"));
    for (path, method) in routes() {
        let item = &doc["paths"][&path];
        let op = &item[&method];
        if PUBLIC.contains(&path.as_str()) {
            assert_eq!(op["security"], json!([]), "{method} {path} is public");
        } else {
            assert!(op.get("security").is_none(), "{method} {path} inherits the global security");
            assert_eq!(op["responses"]["401"]["$ref"], "#/components/responses/Unauthorized", "{method} {path}");
            if method != "get" {
                // The CSRF check of a session-cookie write.
                assert!(op["responses"]["403"]["$ref"].is_string(), "{method} {path}: 403 for a missing CSRF token");
            }
        }
        let root = item["servers"].as_array().is_some_and(|s| s.len() == 1 && s[0]["url"] == "/");
        assert_eq!(root, AT_ROOT.contains(&path.as_str()), "{path}: servers");
    }
}

#[test]
fn every_ref_resolves_and_every_component_is_used() {
    let doc = document_json();
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    for r in &refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: only local refs"));
        assert!(pointer.starts_with("/components/"), "{r}");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for kind in ["schemas", "responses", "parameters"] {
        for name in doc["components"][kind].as_object().unwrap().keys() {
            let r = format!("#/components/{kind}/{name}");
            assert!(refs.contains(&r), "{r} is never used");
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn error_responses_use_the_error_schema() {
    let doc = document_json();
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        let schema = &response["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/Error", "{name}");
    }
    for (path, method) in routes() {
        for (status, response) in doc["paths"][&path][&method]["responses"].as_object().unwrap() {
            if status.starts_with('4') || (status.starts_with('5') && path != "/readyz") {
                let name = response["$ref"].as_str().unwrap_or_else(|| panic!("{method} {path} {status}"));
                assert!(name.starts_with("#/components/responses/"), "{method} {path} {status}");
            }
        }
    }
}

/// A server on port 0 over a fresh, bootstrapped SQLite database, with the admin token set.
async fn serve() -> (SocketAddr, tempfile::TempDir) {
    serve_with(false).await
}

/// As [`serve`], with key reveal on (`keys.reveal = true`) or off.
async fn serve_with(reveal: bool) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&Store::sqlite_url(&dir.path().join("db.sqlite"))).await.unwrap();
    store.migrate().await.unwrap();
    let mut services = Services::new(store, KeyFormat::default(), Digester::new(b"test-pepper"));
    if reveal {
        services = services.with_reveal(Sealer::new(&[7; 32]).unwrap());
    }
    services.bootstrap(OWNER_EMAIL, Some(OWNER_PASSWORD)).await.unwrap();
    let state = Arc::new(WebState {
        services,
        admin_token: Some(Secret::new(ADMIN)),
        ready: Arc::new(AtomicBool::new(true)),
        trusted_proxies: Vec::new(),
        secure_cookies: false,
        login_throttle: Default::default(),
        balance_enforced: false,
        channels: Some(Arc::new(|| {
            vec![tollgate_web::channels::ChannelStatus {
                id: None,
                source: "config",
                model: "m".into(),
                provider: "p".into(),
                upstream_model: "m-up".into(),
                priority: 10,
                weight: 1,
                groups: vec!["default".into()],
                state: "closed",
                consecutive_failures: 0,
                successes: 3,
                failures: 1,
            }]
        })),
        data_plane: None,
        redis_reachable: None,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    (addr, dir)
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    /// The first header of that name.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {e}: {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.0 exchange with a bearer token, if any.
async fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    exchange(addr, method, path, &headers, body).await
}

/// One HTTP/1.0 exchange: the body is delimited by the connection closing, never chunked.
async fn exchange(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    request += body;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
        .collect();
    let content_type = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.clone());
    Answer { status, content_type, headers, body: raw[split + 4..].to_vec() }
}

/// The wire path of a documented path (`{id}` and `{user_id}` filled in).
fn wire(path: &str, id: &str) -> String {
    let path = path.replace("{id}", id).replace("{user_id}", id);
    if AT_ROOT.contains(&path.as_str()) { path } else { format!("/api/v1{path}") }
}

#[tokio::test]
async fn served_without_a_token_as_json() {
    let (addr, _dir) = serve().await;
    let res = call(addr, "GET", "/api/v1/openapi.json", None, "").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.content_type.as_deref(), Some("application/json"));
    assert_eq!(&res.json(), document_json());
    let refused = call(addr, "GET", "/api/v1/keys", None, "").await;
    assert_eq!(refused.status, 401);
    conforms("Error", &refused.json());
}

/// Each documented method is routed; each other method on a documented path is not.
#[tokio::test]
async fn the_served_routes_are_the_documented_ones() {
    let (addr, _dir) = serve().await;
    let routes = routes();
    for path in routes.iter().map(|(p, _)| p).collect::<BTreeSet<_>>() {
        for method in ["get", "post", "put", "patch", "delete"] {
            let res = call(addr, &method.to_uppercase(), &wire(path, "key_missing"), Some(ADMIN), "").await;
            // An unrouted path is axum's bare 404; a missing key is a JSON error.
            let routed = res.status != 405 && !(res.status == 404 && res.body.is_empty());
            let documented = routes.contains(&(path.clone(), method.to_owned()));
            assert_eq!(routed, documented, "{method} {path}: {} {}", res.status, String::from_utf8_lossy(&res.body));
            if res.status >= 400 && routed {
                conforms("Error", &res.json());
            }
        }
    }
}

/// The `Key` schema names exactly the fields of a serialized `KeyView`, and the answers of
/// the API conform to the schemas that describe them.
#[tokio::test]
async fn answers_match_their_schemas() {
    let (addr, _dir) = serve().await;
    let body = json!({
        "name": "drift",
        "expires_in": "30d",
        "budget_usd": 12.5,
        "budget_alert_thresholds": [50, 80],
        "rpm": 60,
        "models": ["demo-chat"],
        "ip_allowlist": ["10.0.0.0/8"],
        "group": "g",
        "metadata": { "team": "x" },
        "mcp": { "enabled": true, "mode": "allow_list", "servers": ["s"], "tools": { "s": ["t"] } },
    });
    conforms("KeyCreate", &body);
    let created = call(addr, "POST", "/api/v1/keys", Some(ADMIN), &body.to_string()).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let created = created.json();
    conforms("KeyWithSecret", &created);

    let mut view = created.clone();
    assert!(view.as_object_mut().unwrap().remove("key").is_some_and(|k| k.is_string()));
    same_fields("Key", &view);

    let id = created["id"].as_str().unwrap();
    let patch = json!({ "rpm": null, "group": null, "budget_usd": null, "expires_at": null });
    conforms("KeyPatch", &patch);
    let patched = call(addr, "PATCH", &wire("/keys/{id}", id), Some(ADMIN), &patch.to_string()).await;
    assert_eq!(patched.status, 200);
    conforms("Key", &patched.json());
    let rotated = call(addr, "POST", &wire("/keys/{id}/rotate", id), Some(ADMIN), r#"{"grace_seconds":60}"#).await;
    assert_eq!(rotated.status, 200);
    conforms("KeyWithSecret", &rotated.json());
    assert!(rotated.json()["previous_secret_expires_at"].is_string());

    let narrow = json!({ "ttl_seconds": 60, "models": ["demo-chat"] });
    conforms("EphemeralCreate", &narrow);
    let token = call(addr, "POST", &wire("/keys/{id}/ephemeral", id), Some(ADMIN), &narrow.to_string()).await;
    assert_eq!(token.status, 201, "{}", String::from_utf8_lossy(&token.body));
    same_fields("EphemeralToken", &token.json());

    let list = call(addr, "GET", "/api/v1/keys?limit=1", Some(ADMIN), "").await;
    assert_eq!(list.status, 200);
    conforms("KeyList", &list.json());
    // Every documented `sort` and `order` is accepted; anything else is a 400 naming it.
    let list_params = document_json()["paths"]["/keys"]["get"]["parameters"].as_array().unwrap();
    let values = |name: &str| -> Vec<String> {
        let param = list_params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}"));
        param["schema"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    for sort in values("sort") {
        for order in values("order") {
            let res = api(addr, "get", &format!("/keys?sort={sort}&order={order}&limit=1"), &[], Some(ADMIN), "").await;
            assert_eq!(res.status, 200, "{sort} {order}");
            conforms("KeyList", &res.json());
        }
    }
    for (query, param) in [("sort=colour", "sort"), ("order=up", "order")] {
        let res = api(addr, "get", &format!("/keys?{query}"), &[], Some(ADMIN), "").await;
        assert_eq!(res.status, 400, "{query}");
        assert_eq!(res.json()["error"]["param"], param);
    }
    let audit = call(addr, "GET", "/api/v1/audit", Some(ADMIN), "").await;
    assert_eq!(audit.status, 200);
    let page = audit.json();
    // `at` appears once, as RFC 3339 (it was once serialized twice, the millis last).
    assert!(page["data"][0]["at"].is_string(), "{page}");
    assert_eq!(String::from_utf8_lossy(&audit.body).matches("\"at\"").count(), page["data"].as_array().unwrap().len());
    conforms("AuditPage", &page);
    same_fields("AuditEntry", &page["data"][0]);

    let bad = call(addr, "POST", "/api/v1/keys", Some(ADMIN), r#"{"name":"x","rpm":0}"#).await;
    assert_eq!(bad.status, 400);
    conforms("Error", &bad.json());
    assert_eq!(bad.json()["error"]["param"], "rpm");
    for (path, schema) in [("/healthz", "Health"), ("/readyz", "Readiness")] {
        let res = call(addr, "GET", path, None, "").await;
        assert_eq!(res.status, 200, "{path}");
        conforms(schema, &res.json());
    }
}

/// The usage log: a page, one row, the daily totals and the CSV export answer as the
/// document says, and every field of a row is documented.
#[tokio::test]
async fn usage_answers_match_their_schemas() {
    let (addr, dir) = serve().await;
    let created =
        call(addr, "POST", "/api/v1/keys", Some(ADMIN), r#"{"name":"metered","metadata":{"env":"prod"}}"#).await.json();
    let store = Store::connect(&Store::sqlite_url(&dir.path().join("db.sqlite"))).await.unwrap();
    let key = store.get_key(created["id"].as_str().unwrap()).await.unwrap();
    let now = tollgate_core::time::now_millis();
    let event = |request_id: &str, status: u16| {
        let mut e = tollgate_core::usage::UsageEvent::new(request_id.into(), now, "/v1/chat/completions".into());
        e.key_id = Some(key.id.clone());
        e.key_name = Some(key.name.clone());
        e.org_id = Some(key.org_id.clone());
        e.team_id = Some(key.team_id.clone());
        e.user_id = Some(key.owner_id.clone());
        e.key_metadata = Some(r#"{"env":"prod"}"#.into());
        e.model = Some("demo-chat".into());
        e.provider = Some("demo".into());
        e.status = status;
        e.prompt_tokens = 3;
        e.completion_tokens = 5;
        e.cost = tollgate_core::MicroUsd(1_500);
        e.ttft_ms = Some(4);
        e.client_ip = Some("127.0.0.1".into());
        e
    };
    let mut failed = event("req_failed", 429);
    failed.error_code = Some("rate_limit_exceeded".into());
    failed.error = Some("Rate limit reached, \"slow down\"".into());
    let mut anonymous = tollgate_core::usage::UsageEvent::new("req_anon".into(), now, "/v1/models".into());
    anonymous.status = 401;
    store.insert_usage(&[event("req_ok", 200), failed, anonymous]).await.unwrap();
    let minute = now.div_euclid(60_000);
    store.add_auth_failures(&[(minute, "203.0.113.9".into(), 7), (minute - 1, "other".into(), 2)]).await.unwrap();
    store.close().await;

    let page = api(addr, "get", "/usage?limit=2", &[], Some(ADMIN), "").await;
    assert_eq!(page.status, 200);
    conforms("UsagePage", &page.json());
    let rows = page.json()["data"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    rows.iter().for_each(|r| same_fields("UsageRow", r));
    assert!(rfc3339(&rows[0]["created_at"]));
    let cursor = page.json()["next_cursor"].as_str().unwrap().to_owned();
    let last = api(addr, "get", &format!("/usage?limit=2&cursor={cursor}"), &[], Some(ADMIN), "").await;
    assert_eq!(
        (last.json()["data"][0]["request_id"].as_str(), &last.json()["next_cursor"]),
        (Some("req_ok"), &json!(null))
    );

    let one = api(addr, "get", "/usage/{request_id}", &["req_ok"], Some(ADMIN), "").await;
    assert_eq!(one.status, 200);
    same_fields("UsageRow", &one.json());
    assert_eq!(one.json()["key_metadata"], json!({ "env": "prod" }));
    assert_eq!((one.json()["cost_usd"].as_f64(), one.json()["cost_micros"].as_i64()), (Some(0.0015), Some(1_500)));
    assert_eq!(api(addr, "get", "/usage/{request_id}", &["req_missing"], Some(ADMIN), "").await.status, 404);
    for (query, param) in [("status=fine", "status"), ("from=yesterday", "from"), ("limit=0", "limit")] {
        let res = api(addr, "get", &format!("/usage?{query}"), &[], Some(ADMIN), "").await;
        assert_eq!((res.status, res.json()["error"]["param"].as_str()), (400, Some(param)), "{query}");
    }

    let days = api(addr, "get", "/usage/daily", &[], Some(ADMIN), "").await;
    assert_eq!(days.status, 200);
    conforms("UsageDayList", &days.json());
    let days = days.json()["data"].as_array().unwrap().clone();
    assert_eq!(days.len(), 30);
    days.iter().for_each(|d| same_fields("UsageDay", d));
    assert_eq!((days[29]["requests"].as_i64(), days[29]["errors"].as_i64()), (Some(2), Some(1)));

    let csv = api(addr, "get", "/usage.csv?status=error", &[], Some(ADMIN), "").await;
    assert_eq!(csv.status, 200);
    assert!(csv.content_type.as_deref().unwrap().starts_with("text/csv"));
    let documented = &document_json()["paths"]["/usage.csv"]["get"]["responses"]["200"]["headers"];
    assert_eq!(csv.header("content-disposition"), documented["Content-Disposition"]["example"].as_str());
    let text = String::from_utf8(csv.body).unwrap();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines[0], tollgate_service::CSV_COLUMNS.join(","));
    assert_eq!(lines.len(), 3, "the header and the two failed requests: {text}");

    let counted = api(addr, "get", "/auth-failures", &[], Some(ADMIN), "").await;
    assert_eq!(counted.status, 200);
    conforms("AuthFailureList", &counted.json());
    let counted = counted.json()["data"].as_array().unwrap().clone();
    counted.iter().for_each(|r| same_fields("AuthFailure", r));
    let seen: Vec<(&str, i64)> =
        counted.iter().map(|r| (r["client_ip"].as_str().unwrap(), r["failures"].as_i64().unwrap())).collect();
    assert_eq!(seen, [("203.0.113.9", 7), ("other", 2)], "newest minute first");
    assert!(rfc3339(&counted[0]["minute"]));
    let later = api(addr, "get", &format!("/auth-failures?from={}", minute * 60_000), &[], Some(ADMIN), "").await;
    assert_eq!(later.json()["data"].as_array().unwrap().len(), 1, "from is inclusive of its minute");
    for (query, param) in [("limit=0", "limit"), ("from=soon", "from"), ("from=2030-01-02&to=2030-01-01", "from")] {
        let res = api(addr, "get", &format!("/auth-failures?{query}"), &[], Some(ADMIN), "").await;
        assert_eq!((res.status, res.json()["error"]["param"].as_str()), (400, Some(param)), "{query}");
    }
}

/// Organizations, members, teams and personal access tokens, as the operator and as a
/// member signed in with a password: every view names exactly the fields its schema does.
#[tokio::test]
async fn tenancy_answers_match_their_schemas() {
    let (addr, _dir) = serve().await;
    let admin = Some(ADMIN);

    let me = api(addr, "get", "/me", &[], admin, "").await;
    assert_eq!(me.status, 200);
    same_fields("Me", &me.json());
    assert_eq!(me.json()["actor"], "admin-token");
    assert!(me.json()["role"].is_null() && me.json()["org_id"].is_null());

    let orgs = api(addr, "get", "/organizations", &[], admin, "").await;
    assert_eq!(orgs.status, 200);
    conforms("OrganizationList", &orgs.json());
    same_fields("Organization", &orgs.json()["data"][0]);
    assert!(rfc3339(&orgs.json()["data"][0]["created_at"]), "{}", orgs.json());
    let new_org = json!({ "name": "Second", "owner_email": "second@test.local" });
    conforms("OrganizationCreate", &new_org);
    let org = api(addr, "post", "/organizations", &[], admin, &new_org.to_string()).await;
    assert_eq!(org.status, 201);
    conforms("OrganizationCreated", &org.json());
    let mut view = org.json();
    assert!(view.as_object_mut().unwrap().remove("owner_password").is_some_and(|p| p.is_string()));
    same_fields("Organization", &view);
    assert!(rfc3339(&view["created_at"]), "{view}");
    let second_org = view["id"].as_str().unwrap().to_owned();
    let taken = api(addr, "post", "/organizations", &[], admin, &new_org.to_string()).await;
    assert_eq!(taken.status, 409);

    let new_team = json!({ "name": "research", "allowed_models": ["demo-chat"] });
    conforms("TeamCreate", &new_team);
    let team = api(addr, "post", "/teams", &[], admin, &new_team.to_string()).await;
    assert_eq!(team.status, 201);
    same_fields("Team", &team.json());
    let team_id = team.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(api(addr, "post", "/teams", &[], admin, &new_team.to_string()).await.status, 409);
    let got = api(addr, "get", "/teams/{id}", &[&team_id], admin, "").await;
    assert_eq!(got.status, 200);
    same_fields("Team", &got.json());
    let team_patch = json!({ "name": null, "allowed_models": [] });
    conforms("TeamPatch", &team_patch);
    let patched = api(addr, "patch", "/teams/{id}", &[&team_id], admin, &team_patch.to_string()).await;
    assert_eq!(patched.status, 200);
    same_fields("Team", &patched.json());
    assert_eq!(patched.json()["allowed_models"], json!([]));
    let teams = api(addr, "get", "/teams", &[], admin, "").await;
    assert_eq!(teams.status, 200);
    conforms("TeamList", &teams.json());
    let teams = teams.json()["data"].as_array().unwrap().clone();
    teams.iter().for_each(|t| same_fields("Team", t));
    assert!(teams.iter().any(|t| t["id"] == team_id.as_str()));
    // The operator sees every organization's `default` team, told apart by `org_id`.
    let default_orgs: BTreeSet<&str> =
        teams.iter().filter(|t| t["name"] == "default").filter_map(|t| t["org_id"].as_str()).collect();
    assert_eq!(default_orgs.len(), 2, "{teams:?}");
    assert!(default_orgs.contains(second_org.as_str()));
    assert_eq!(team.json()["org_id"], orgs.json()["data"][0]["id"], "the operator's team goes to the first org");

    let password = "a long member password";
    let new_user = json!({ "email": "Dev@Test.local", "password": password, "role": "member", "team_ids": [team_id] });
    conforms("UserCreate", &new_user);
    let dev = api(addr, "post", "/users", &[], admin, &new_user.to_string()).await;
    assert_eq!(dev.status, 201);
    same_fields("Member", &dev.json());
    assert_eq!(dev.json()["email"], "dev@test.local");
    let dev_id = dev.json()["id"].as_str().unwrap().to_owned();
    let generated = api(addr, "post", "/users", &[], admin, r#"{"email":"gen@test.local","role":null}"#).await;
    assert_eq!(generated.status, 201);
    conforms("MemberCreated", &generated.json());
    let mut view = generated.json();
    assert!(view.as_object_mut().unwrap().remove("password").is_some_and(|p| p.is_string()));
    same_fields("Member", &view);
    let gen_id = view["id"].as_str().unwrap().to_owned();
    let users = api(addr, "get", "/users", &[], admin, "").await;
    assert_eq!(users.status, 200);
    conforms("MemberList", &users.json());
    let users = users.json()["data"].as_array().unwrap().clone();
    assert_eq!(users.len(), 3);
    users.iter().for_each(|u| same_fields("Member", u));
    let owner_id = users.iter().find(|u| u["role"] == "owner").unwrap()["id"].as_str().unwrap().to_owned();

    let promote = json!({ "role": "admin" });
    conforms("UserPatch", &promote);
    let promoted = api(addr, "patch", "/users/{id}", &[&gen_id], admin, &promote.to_string()).await;
    assert_eq!((promoted.status, promoted.body.len()), (204, 0));
    let last_owner = api(addr, "patch", "/users/{id}", &[&owner_id], admin, r#"{"role":"member"}"#).await;
    assert_eq!((last_owner.status, last_owner.json()["error"]["param"].as_str()), (400, Some("role")));
    let message = last_owner.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("an organization needs at least one owner"), "{message}");
    let member = json!({ "user_id": gen_id });
    conforms("TeamMemberAdd", &member);
    let added = api(addr, "post", "/teams/{id}/members", &[&team_id], admin, &member.to_string()).await;
    assert_eq!(added.status, 204);
    let removed = api(addr, "delete", "/teams/{id}/members/{user_id}", &[&team_id, &gen_id], admin, "").await;
    assert_eq!(removed.status, 204);

    // Signing in: no bearer token, the same 401 for a wrong password.
    let sign_in = json!({ "email": "dev@test.local", "password": password, "name": "laptop", "expires_in": "30d" });
    conforms("SignIn", &sign_in);
    let signed = api(addr, "post", "/auth/token", &[], None, &sign_in.to_string()).await;
    assert_eq!(signed.status, 201);
    conforms("TokenWithSecret", &signed.json());
    let mut view = signed.json();
    let pat = view.as_object_mut().unwrap().remove("token").unwrap().as_str().unwrap().to_owned();
    assert!(pat.starts_with("tgp_"), "{pat}");
    same_fields("Token", &view);
    assert!(view["expires_at"].is_string());
    let wrong = json!({ "email": "dev@test.local", "password": "not the password", "name": "x" });
    assert_eq!(api(addr, "post", "/auth/token", &[], None, &wrong.to_string()).await.status, 401);
    let pat = Some(pat.as_str());

    // As the member.
    let me = api(addr, "get", "/me", &[], pat, "").await;
    assert_eq!(me.status, 200);
    same_fields("Me", &me.json());
    assert_eq!((me.json()["actor"].as_str(), me.json()["role"].as_str()), (Some(dev_id.as_str()), Some("member")));
    assert_eq!(me.json()["team_ids"], json!([team_id]));
    let new_token = json!({ "name": "ci" });
    conforms("TokenCreate", &new_token);
    let ci = api(addr, "post", "/tokens", &[], pat, &new_token.to_string()).await;
    assert_eq!(ci.status, 201);
    conforms("TokenWithSecret", &ci.json());
    let mut view = ci.json();
    let ci_secret = view.as_object_mut().unwrap().remove("token").unwrap().as_str().unwrap().to_owned();
    same_fields("Token", &view);
    assert!(view["expires_at"].is_null());
    let ci_id = view["id"].as_str().unwrap().to_owned();
    let tokens = api(addr, "get", "/tokens", &[], pat, "").await;
    assert_eq!(tokens.status, 200);
    conforms("TokenList", &tokens.json());
    let tokens = tokens.json()["data"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 2);
    tokens.iter().for_each(|t| same_fields("Token", t));
    let own_orgs = api(addr, "get", "/organizations", &[], pat, "").await;
    assert_eq!(own_orgs.json()["data"].as_array().unwrap().len(), 1);
    let own_teams = api(addr, "get", "/teams", &[], pat, "").await;
    assert_eq!(own_teams.json()["data"].as_array().unwrap().len(), 1);
    assert_eq!(api(addr, "get", "/users", &[], pat, "").await.status, 403);
    assert_eq!(api(addr, "get", "/auth-failures", &[], pat, "").await.status, 403, "the operator's only");
    assert_eq!(api(addr, "post", "/teams", &[], pat, r#"{"name":"mine"}"#).await.status, 403);
    assert_eq!(api(addr, "patch", "/teams/{id}", &[&team_id], pat, r#"{"name":"mine"}"#).await.status, 403);
    let deleted = api(addr, "delete", "/tokens/{id}", &[&ci_id], pat, "").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(api(addr, "delete", "/tokens/{id}", &[&ci_id], pat, "").await.status, 404);
    assert_eq!(api(addr, "get", "/me", &[], Some(&ci_secret), "").await.status, 401);

    // The admin token owns no tokens.
    let refused = api(addr, "post", "/tokens", &[], admin, r#"{"name":"x"}"#).await;
    assert_eq!((refused.status, refused.json()["error"]["param"].as_str()), (400, Some("actor")));
    assert_eq!(api(addr, "get", "/tokens", &[], admin, "").await.json(), json!({ "data": [] }));
}

/// Dashboard sessions: signing in sets the cookie the document describes, the cookie
/// authenticates reads, a write without the CSRF token is refused, logout and a password
/// change end the session, and repeated failures are throttled.
#[tokio::test]
async fn sessions_match_their_schemas() {
    let (addr, _dir) = serve().await;
    let log_in = json!({ "email": OWNER_EMAIL, "password": OWNER_PASSWORD });
    conforms("LogIn", &log_in);
    let wrong = json!({ "email": OWNER_EMAIL, "password": "not the password" });
    assert_eq!(api(addr, "post", "/auth/login", &[], None, &wrong.to_string()).await.status, 401);
    let signed = api(addr, "post", "/auth/login", &[], None, &log_in.to_string()).await;
    assert_eq!(signed.status, 200, "{}", String::from_utf8_lossy(&signed.body));
    same_fields("Session", &signed.json());
    assert_eq!(signed.json()["role"], "owner");
    let csrf = signed.json()["csrf_token"].as_str().unwrap().to_owned();
    let (cookie, attributes) = set_cookie(&signed);
    let documented = &document_json()["paths"]["/auth/login"]["post"]["responses"]["200"]["headers"]["Set-Cookie"];
    let (_, documented) = cookie_parts(documented["example"].as_str().unwrap());
    assert_eq!(attributes, documented, "the cookie's attributes (plain HTTP: not Secure)");
    assert_eq!(attributes, ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=43200"]);
    assert!(cookie.starts_with("tg_session=") && cookie.len() > "tg_session=".len(), "{cookie}");

    // Reads need only the cookie; writes need the CSRF token too.
    let with_cookie = [("cookie", cookie.as_str())];
    let with_csrf = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let me = api_with(addr, "get", "/me", &[], &with_cookie, "").await;
    assert_eq!(me.status, 200);
    same_fields("Me", &me.json());
    assert_eq!(me.json()["actor"], signed.json()["user_id"]);
    assert_eq!(me.json()["org_id"], signed.json()["org_id"]);
    let refused = api_with(addr, "post", "/keys", &[], &with_cookie, r#"{"name":"via-session"}"#).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (403, Some("forbidden")));
    let wrong_csrf = [("cookie", cookie.as_str()), ("x-csrf-token", "nope")];
    let refused = api_with(addr, "delete", "/keys/{id}", &["key_missing"], &wrong_csrf, "").await;
    assert_eq!(refused.status, 403, "checked before the route looks for the key");
    let created = api_with(addr, "post", "/keys", &[], &with_csrf, r#"{"name":"via-session"}"#).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));

    // Logout ends the session and clears the cookie; it needs neither credentials nor CSRF.
    let out = api_with(addr, "post", "/auth/logout", &[], &with_cookie, "").await;
    assert_eq!((out.status, out.body.len()), (204, 0));
    assert_cleared(&out, "/auth/logout");
    assert_eq!(api_with(addr, "get", "/me", &[], &with_cookie, "").await.status, 401);
    assert_eq!(api(addr, "post", "/auth/logout", &[], None, "").await.status, 204);

    // A password change: the current password, at least 12 characters, then every session ends.
    let signed = api(addr, "post", "/auth/login", &[], None, &log_in.to_string()).await;
    let (cookie, _) = set_cookie(&signed);
    let csrf = signed.json()["csrf_token"].as_str().unwrap().to_owned();
    let with_csrf = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let change = |current: &str, new: &str| json!({ "current_password": current, "new_password": new });
    let wrong = change("not the password", "a brand new password");
    conforms("PasswordChange", &wrong);
    assert_eq!(api_with(addr, "post", "/me/password", &[], &with_csrf, &wrong.to_string()).await.status, 403);
    let short = change(OWNER_PASSWORD, "too short");
    let res = api_with(addr, "post", "/me/password", &[], &with_csrf, &short.to_string()).await;
    assert_eq!((res.status, res.json()["error"]["param"].as_str()), (400, Some("new_password")));
    let res = api(
        addr,
        "post",
        "/me/password",
        &[],
        Some(ADMIN),
        &change(OWNER_PASSWORD, "x".repeat(12).as_str()).to_string(),
    )
    .await;
    assert_eq!((res.status, res.json()["error"]["param"].as_str()), (400, Some("actor")));
    let right = change(OWNER_PASSWORD, "a brand new password");
    let res = api_with(addr, "post", "/me/password", &[], &with_csrf, &right.to_string()).await;
    assert_eq!((res.status, res.body.len()), (204, 0));
    assert_cleared(&res, "/me/password");
    assert_eq!(api_with(addr, "get", "/me", &[], &[("cookie", cookie.as_str())], "").await.status, 401);

    // Five failures for one email from one address, then 429 with Retry-After.
    let nobody = json!({ "email": "nobody@test.local", "password": "not a password" }).to_string();
    for _ in 0..5 {
        assert_eq!(api(addr, "post", "/auth/login", &[], None, &nobody).await.status, 401);
    }
    let locked = api(addr, "post", "/auth/login", &[], None, &nobody).await;
    assert_eq!(locked.status, 429);
    let wait: u64 = locked.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!(wait >= 1);
}

/// `POST /keys/{id}/reveal`: refused while reveal is off; when on, the secret for the
/// operator, and for a user who gives their password again.
#[tokio::test]
async fn reveal_answers_match_their_schemas() {
    let (addr, _dir) = serve().await;
    let created = api(addr, "post", "/keys", &[], Some(ADMIN), r#"{"name":"secret"}"#).await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    conforms("KeyReveal", &json!({}));
    let off = api(addr, "post", "/keys/{id}/reveal", &[&id], Some(ADMIN), "{}").await;
    assert_eq!((off.status, off.json()["error"]["param"].as_str()), (400, Some("reveal")));

    let (addr, _dir) = serve_with(true).await;
    let created = api(addr, "post", "/keys", &[], Some(ADMIN), r#"{"name":"secret"}"#).await;
    assert_eq!(created.status, 201);
    let (id, secret) = (created.json()["id"].as_str().unwrap().to_owned(), created.json()["key"].clone());
    let revealed = api(addr, "post", "/keys/{id}/reveal", &[&id], Some(ADMIN), "").await;
    assert_eq!(revealed.status, 200, "{}", String::from_utf8_lossy(&revealed.body));
    same_fields("RevealedKey", &revealed.json());
    assert_eq!(revealed.json()["key"], secret);
    assert_eq!(api(addr, "post", "/keys/{id}/reveal", &["key_missing"], Some(ADMIN), "{}").await.status, 404);

    // A user: the password again, or no secret.
    let sign_in = json!({ "email": OWNER_EMAIL, "password": OWNER_PASSWORD, "name": "reveal" });
    let pat = api(addr, "post", "/auth/token", &[], None, &sign_in.to_string()).await.json()["token"].clone();
    let pat = pat.as_str();
    let missing = api(addr, "post", "/keys/{id}/reveal", &[&id], pat, r#"{"password":null}"#).await;
    assert_eq!((missing.status, missing.json()["error"]["param"].as_str()), (400, Some("password")));
    let wrong = json!({ "password": "not the password" });
    conforms("KeyReveal", &wrong);
    assert_eq!(api(addr, "post", "/keys/{id}/reveal", &[&id], pat, &wrong.to_string()).await.status, 403);
    let right = json!({ "password": OWNER_PASSWORD }).to_string();
    let revealed = api(addr, "post", "/keys/{id}/reveal", &[&id], pat, &right).await;
    assert_eq!(revealed.status, 200);
    assert_eq!(revealed.json()["key"], secret);
}

/// `name=value` of the answer's Set-Cookie header, and its attributes in order.
fn set_cookie(res: &Answer) -> (String, Vec<String>) {
    cookie_parts(res.header("set-cookie").expect("a Set-Cookie header"))
}

fn cookie_parts(raw: &str) -> (String, Vec<String>) {
    let mut parts = raw.split(';').map(|p| p.trim().to_owned());
    (parts.next().unwrap_or_default(), parts.collect())
}

/// The answer clears the cookie exactly as the operation's documented header says.
fn assert_cleared(res: &Answer, path: &str) {
    let documented = &document_json()["paths"][path]["post"]["responses"]["204"]["headers"]["Set-Cookie"];
    assert_eq!(set_cookie(res), cookie_parts(documented["example"].as_str().unwrap()), "{path}");
}

/// An RFC 3339 time, as every time in the API is.
/// Invitations and the public sign-up answer as documented: every field of an
/// invitation, the one-time token and link, and the signed-up user with its session.
#[tokio::test]
async fn invite_and_signup_answers_match_their_schemas() {
    let (addr, _dir) = serve().await;
    let admin = Some(ADMIN);
    let create = json!({ "email": "Invited@Test.local", "role": "member", "ttl_hours": 24 });
    conforms("InviteCreate", &create);
    let created = api(addr, "post", "/invites", &[], admin, &create.to_string()).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    conforms("InviteWithToken", &created.json());
    let mut view = created.json();
    let token = view.as_object_mut().unwrap().remove("token").unwrap().as_str().unwrap().to_owned();
    assert_eq!(view.as_object_mut().unwrap().remove("url"), Some(json!(format!("/dashboard/signup?invite={token}"))));
    same_fields("Invite", &view);
    assert!(rfc3339(&view["expires_at"]) && rfc3339(&view["created_at"]), "{view}");
    let list = api(addr, "get", "/invites", &[], admin, "").await;
    conforms("InviteList", &list.json());
    same_fields("Invite", &list.json()["data"][0]);

    let closed = json!({ "email": "stranger@test.local", "password": "a long stranger password" });
    conforms("SignUp", &closed);
    let refused = api(addr, "post", "/auth/signup", &[], None, &closed.to_string()).await;
    assert_eq!(refused.status, 403, "the default policy is closed");
    conforms("Error", &refused.json());
    let body = json!({ "email": "invited@test.local", "password": "a long invited password", "invite": token });
    conforms("SignUp", &body);
    let signed = api(addr, "post", "/auth/signup", &[], None, &body.to_string()).await;
    assert_eq!(signed.status, 201, "{}", String::from_utf8_lossy(&signed.body));
    same_fields("SignedUp", &signed.json());
    assert!(signed.header("set-cookie").is_some_and(|c| c.starts_with("tg_session=")));
    let again = api(addr, "post", "/auth/signup", &[], None, &body.to_string()).await;
    assert_eq!((again.status, again.json()["error"]["param"].clone()), (400, json!("invite")));
}

fn rfc3339(v: &Value) -> bool {
    v.as_str().and_then(tollgate_core::time::parse_rfc3339).is_some()
}

/// Calls a documented operation under `/api/v1` (`path` as the document names it, with an
/// optional `?query`, its `{…}` segments filled from `ids` in order), and checks that the
/// document lists the status it answers with, and that an error is an `Error`.
async fn api(addr: SocketAddr, method: &str, path: &str, ids: &[&str], token: Option<&str>, body: &str) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    api_with(addr, method, path, ids, &headers, body).await
}

/// As [`api`], with any request headers (a session cookie, a CSRF token).
async fn api_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ids: &[&str],
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let (path, query) = path.split_once('?').map_or((path, String::new()), |(p, q)| (p, format!("?{q}")));
    let mut filled = path.to_owned();
    for id in ids {
        let start = filled.find('{').unwrap_or_else(|| panic!("{path}: more ids than segments"));
        let end = start + filled[start..].find('}').unwrap();
        filled.replace_range(start..=end, id);
    }
    assert!(!filled.contains('{'), "{path}: fewer ids than segments");
    let res = exchange(addr, &method.to_uppercase(), &format!("/api/v1{filled}{query}"), headers, body).await;
    let responses = &document_json()["paths"][path][method]["responses"];
    assert!(responses.is_object(), "{method} {path} is not documented");
    assert!(
        responses.get(res.status.to_string()).is_some(),
        "{method} {path}: {} is not a documented answer: {}",
        res.status,
        String::from_utf8_lossy(&res.body)
    );
    if res.status >= 400 {
        conforms("Error", &res.json());
    }
    res
}

/// `value` conforms to the named schema, which names exactly its fields, all required:
/// the schema of a serialized Rust struct cannot drift from it.
fn same_fields(schema: &str, value: &Value) {
    conforms(schema, value);
    let schema = &document_json()["components"]["schemas"][schema];
    let properties: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let fields: BTreeSet<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, properties, "the schema's properties vs the fields on the wire");
    let required: BTreeSet<&str> = schema["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, properties, "every field is always sent");
}

/// Checks `value` against the named component schema, for the keywords the document
/// uses: `$ref`, `allOf`, `anyOf`, `type`, `enum`, `const`, `required`, `properties`,
/// `additionalProperties`, `items`.
fn conforms(schema: &str, value: &Value) {
    let mut errors = Vec::new();
    check(&json!({ "$ref": format!("#/components/schemas/{schema}") }), value, "$", &mut errors);
    assert!(errors.is_empty(), "{schema}: {errors:#?}\n{value:#}");
}

fn check(schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let target = document_json().pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("{r}"));
        return check(target, v, at, errors);
    }
    for s in schema["allOf"].as_array().into_iter().flatten() {
        check(s, v, at, errors);
    }
    if let Some(any) = schema["anyOf"].as_array() {
        let passes = |s: &Value| {
            let mut e = Vec::new();
            check(s, v, at, &mut e);
            e.is_empty()
        };
        if !any.iter().any(passes) {
            errors.push(format!("{at}: {v} matches no branch of anyOf"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let is = |t: &str| match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        errors.push(format!("{at}: {v} is not {}", schema["type"]));
        return;
    }
    if schema["enum"].as_array().is_some_and(|e| !e.contains(v)) {
        errors.push(format!("{at}: {v} is not one of {}", schema["enum"]));
    }
    if schema.get("const").is_some_and(|c| c != v) {
        errors.push(format!("{at}: {v} is not {}", schema["const"]));
    }
    if let Some(object) = v.as_object() {
        for field in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(field) {
                errors.push(format!("{at}: {field} is missing"));
            }
        }
        for (name, value) in object {
            let at = format!("{at}.{name}");
            match (schema["properties"].get(name), &schema["additionalProperties"]) {
                (Some(s), _) => check(s, value, &at, errors),
                (None, Value::Bool(false)) => errors.push(format!("{at} is not allowed")),
                (None, extra @ Value::Object(_)) => check(extra, value, &at, errors),
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(schema)) = (v.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(schema, item, &format!("{at}[{i}]"), errors);
        }
    }
}

#[tokio::test]
async fn billing_and_model_answers_match_their_schemas() {
    let (addr, _dir) = serve().await;
    let summary = api(addr, "get", "/billing", &[], Some(ADMIN), "").await;
    assert_eq!(summary.status, 200, "{}", summary.json());
    same_fields("BillingSummary", &summary.json());
    let credit = api(addr, "post", "/billing/credits", &[], Some(ADMIN), r#"{"amount_usd":2.5,"note":"seed"}"#).await;
    assert_eq!(credit.status, 201, "{}", credit.json());
    same_fields("LedgerEntry", &credit.json());
    let bad = api(addr, "post", "/billing/credits", &[], Some(ADMIN), r#"{"amount_usd":2.5,"color":"red"}"#).await;
    assert_eq!(bad.status, 400);
    let ledger = api(addr, "get", "/billing/ledger", &[], Some(ADMIN), "").await;
    conforms("LedgerPage", &ledger.json());
    ledger.json()["data"].as_array().unwrap().iter().for_each(|e| same_fields("LedgerEntry", e));
    assert_eq!(api(addr, "get", "/billing/ledger?kind=gift", &[], Some(ADMIN), "").await.status, 400);

    let models = api(addr, "get", "/models", &[], Some(ADMIN), "").await;
    assert_eq!(models.status, 200);
    conforms("ModelList", &models.json());
    // This server declares no models: a price for an unknown one is 404.
    let missing = api(addr, "patch", "/models/{id}", &["nope"], Some(ADMIN), r#"{"input_price_per_mtok":1}"#).await;
    assert_eq!(missing.status, 404);
    assert_eq!(api(addr, "delete", "/models/{id}/price", &["nope"], Some(ADMIN), "").await.status, 404);
}

#[tokio::test]
async fn channel_answers_match_their_schema() {
    let (addr, _dir) = serve().await;
    let res = api(addr, "get", "/channels", &[], Some(ADMIN), "").await;
    assert_eq!(res.status, 200);
    conforms("ChannelList", &res.json());
    same_fields("Channel", &res.json()["data"][0]);
}
