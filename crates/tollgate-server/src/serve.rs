//! The accept loop: one tracked task per connection, HTTP/1.1 and HTTP/2 (h2c) on the
//! same port, TCP_NODELAY, the peer address handed to handlers, and a graceful drain:
//! stop accepting, let in-flight requests and streams finish within the grace period,
//! then cut what is left: `cut` is cancelled, so metered streams end with an error event
//! and a `shutdown_cut` row; after a short flush ([`CUT_FLUSH`]) the remaining connections
//! are dropped (their bodies too, so their usage is still recorded).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use http::HeaderValue;
use tollgate_proxy::{ClientRequestId, PeerAddr, RequestId};
use tower::ServiceExt;

/// Gives the request its id — always a new one, unique per usage row — as an extension
/// for handlers, with the caller's `x-request-id` beside it when that is a sane id (clients
/// reuse ids, so it cannot name a row). Returns what the response's `x-request-id` says:
/// the caller's id when it sent one, else the gateway's. Done here rather than in a router
/// layer, which boxed every request's future.
fn assign_request_id(req: &mut axum::extract::Request) -> HeaderValue {
    let given = req
        .headers()
        .get("x-request-id")
        .filter(|v| v.to_str().is_ok_and(tollgate_core::ids::is_valid_request_id))
        .cloned();
    let id = tollgate_core::ids::new_id("req");
    let own = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("req_invalid"));
    req.extensions_mut().insert(RequestId(Arc::from(id)));
    match given {
        Some(value) => {
            let client: Arc<str> = Arc::from(value.to_str().unwrap_or_default());
            req.extensions_mut().insert(ClientRequestId(client));
            value
        }
        None => own,
    }
}

/// How long streams cut at the end of the grace period have to send their last event.
const CUT_FLUSH: Duration = Duration::from_secs(1);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
    cut: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let router = router.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(PeerAddr(peer));
                    let id = assign_request_id(&mut req);
                    let router = router.clone();
                    async move {
                        let mut res = router.oneshot(req).await.unwrap_or_else(|e| match e {});
                        res.headers_mut().insert("x-request-id", id);
                        Ok::<_, Infallible>(res)
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop.cancelled() => break,
        }
    }
    drop(listener);
    tracing::info!(connections = connections.len(), "draining connections");
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => tracing::info!("all connections finished"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(remaining = connections.len(), "grace period over; cutting the remaining streams");
            cut.cancel();
            if tokio::time::timeout(CUT_FLUSH, &mut drained).await.is_err() {
                tracing::warn!(remaining = connections.len(), "closing the remaining connections");
            }
        }
    }
    connections.shutdown().await;
}
