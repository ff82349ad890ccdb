//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of
//! [`tollgate_proxy::metrics::Metrics`], served on the main listener, or — when
//! `[metrics] listen` is set — only on a listener of its own (keep it off the public
//! port), or not at all when `[metrics] enabled = false`.
//!
//! A scrape renders from atomics and the live snapshot (the channels' circuits) and never
//! touches the store, so it answers while the database is away.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};
use tokio::net::TcpListener;
use tollgate_proxy::auth_failures::AuthFailures;
use tollgate_proxy::{SharedHealth, Snapshot, UsageSink};

use crate::config::MetricsConfig;

/// Where `/metrics` is served, decided (and its own listener bound) at start.
pub struct MetricsEndpoint {
    /// Routes to merge into the main router: empty unless metrics are on and have no
    /// listener of their own.
    pub main_routes: Router,
    /// The own listener with its routes, and its bound address.
    pub own: Option<(TcpListener, Router, SocketAddr)>,
}

/// Binds `[metrics] listen` now, so that a bad or busy address fails the start.
/// `snapshot`: the data plane's, read at each scrape for the channel series; `shared`:
/// the shared limiter's health when Redis is configured (its series appear only then).
pub async fn setup(
    config: &MetricsConfig,
    sink: &UsageSink,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    shared: Option<Arc<SharedHealth>>,
    failures: &Arc<AuthFailures>,
) -> anyhow::Result<MetricsEndpoint> {
    if !config.enabled {
        return Ok(MetricsEndpoint { main_routes: Router::new(), own: None });
    }
    let state = Scrape { sink: sink.clone(), snapshot: snapshot.clone(), shared, failures: failures.clone() };
    let Some(addr) = config.listen else {
        return Ok(MetricsEndpoint { main_routes: router(state), own: None });
    };
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the metrics listener {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics on its own listener");
    let routes = router(state).fallback(crate::not_found);
    Ok(MetricsEndpoint { main_routes: Router::new(), own: Some((listener, routes, bound)) })
}

/// What a scrape reads.
#[derive(Clone)]
struct Scrape {
    sink: UsageSink,
    snapshot: Arc<ArcSwap<Snapshot>>,
    shared: Option<Arc<SharedHealth>>,
    failures: Arc<AuthFailures>,
}

fn router(state: Scrape) -> Router {
    Router::new().route("/metrics", get(render)).with_state(state)
}

async fn render(State(scrape): State<Scrape>) -> Response {
    let mut text = scrape.sink.render_metrics();
    tollgate_proxy::metrics::render_channels(&mut text, &scrape.snapshot.load());
    if let Some(health) = &scrape.shared {
        tollgate_proxy::metrics::render_shared(&mut text, health);
    }
    scrape.failures.render(&mut text);
    let mut res = text.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(tollgate_proxy::metrics::CONTENT_TYPE));
    res
}
