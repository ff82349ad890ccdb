//! The control plane's HTTP surface: `/healthz`, `/readyz`, the management API under
//! `/api/v1` and the dashboard pages under `/dashboard`. Handlers parse and authorize, then
//! call the service layer; they hold no business rules of their own. Errors use the same OpenAI shape as `/v1`.

mod auth;
mod billing;
pub mod channels;
mod dashboard;
mod error;
mod invites;
mod keys;
mod models;
pub mod openapi;
mod providers;
mod session;
mod tenancy;
mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_core::Secret;
use tollgate_service::Services;

/// What the control-plane handlers share.
pub struct WebState {
    pub services: Services,
    /// The management token; `None` disables token authentication.
    pub admin_token: Option<Secret>,
    /// True once the snapshot is loaded, false again while draining.
    pub ready: Arc<AtomicBool>,
    /// Peers whose `X-Forwarded-For` names the real client (for the audit log).
    pub trusted_proxies: Vec<tollgate_core::scope::IpNet>,
    /// Always mark the session cookie `Secure` (TLS terminated in front of Tollgate).
    pub secure_cookies: bool,
    pub login_throttle: session::LoginThrottle,
    /// `billing.enforce_balance`, reported by `GET /billing`.
    pub balance_enforced: bool,
    /// The channels' routing state (`GET /channels`); `None` lists nothing.
    pub channels: Option<channels::ChannelsReport>,
    /// The data plane (`/v1`), called in-process by the dashboard's Playground with a
    /// short-lived ephemeral token; `None`: the Playground cannot run prompts.
    pub data_plane: Option<DataPlaneCall>,
    /// Whether Redis (the shared limits) answered the last call; `None`: no Redis
    /// configured. Reported by `/readyz`.
    pub redis_reachable: Option<RedisReachable>,
}

/// Reads the shared limiter's reachability (kept by the data plane and a periodic probe).
pub type RedisReachable = Arc<dyn Fn() -> bool + Send + Sync>;

/// Calls the data plane's router in-process: no loopback socket, no secret in the browser.
pub type DataPlaneCall = Arc<
    dyn Fn(axum::extract::Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
        + Send
        + Sync,
>;

pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/auth/token", axum::routing::post(tenancy::token_for_password))
        .route("/api/v1/auth/login", axum::routing::post(session::login))
        .route("/api/v1/auth/signup", axum::routing::post(invites::signup))
        .route("/api/v1/auth/logout", axum::routing::post(session::logout))
        .nest(
            "/api/v1",
            keys::routes()
                .merge(tenancy::routes())
                .merge(invites::routes())
                .merge(billing::routes())
                .merge(channels::routes())
                .merge(models::routes())
                .merge(providers::routes())
                .merge(usage::routes())
                .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_actor)),
        )
        .merge(dashboard::routes())
        .with_state(state)
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready (200) when the snapshot is loaded, the server is not draining, and the store
/// answers; otherwise 503 `not_ready`. Redis unreachable is `degraded`, still 200: the
/// instance keeps serving, each instance enforcing its share of the rate limits.
async fn readyz(State(state): State<Arc<WebState>>) -> Response {
    let store_ok =
        matches!(tokio::time::timeout(Duration::from_secs(2), state.services.store.ping()).await, Ok(Ok(())));
    let ready = state.ready.load(Ordering::Acquire);
    let redis = state.redis_reachable.as_ref().map(|reachable| reachable());
    let (status, word) = match (ready && store_ok, redis) {
        (false, _) => (http::StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, Some(false)) => (http::StatusCode::OK, "degraded"),
        (true, Some(true) | None) => (http::StatusCode::OK, "ready"),
    };
    let body = serde_json::json!({
        "status": word,
        "snapshot_loaded_and_serving": ready,
        "store": if store_ok { "ok" } else { "unreachable" },
        "redis": match redis {
            Some(true) => "ok",
            Some(false) => "unreachable",
            None => "not_configured",
        },
    });
    (status, axum::Json(body)).into_response()
}
