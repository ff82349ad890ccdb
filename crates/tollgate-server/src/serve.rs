//! The accept loop: one tracked task per connection, HTTP/1.1 and HTTP/2 (h2c) on the
//! same port, TCP_NODELAY, the peer address handed to handlers, and a graceful drain:
//! stop accepting, let in-flight requests and streams finish within the grace period,
//! then cut what is left: `cut` is cancelled, so metered streams end with an error event
//! and a `shutdown_cut` row; after a short flush ([`CUT_FLUSH`]) the remaining connections
//! are dropped (their bodies too, so their usage is still recorded).
//!
//! Slow and idle clients (`[server]`, see [`ServerConfig`]): hyper's header timer bounds
//! a request head once hyper reads one, and it starts that timer when it begins reading a
//! head — on a kept-alive HTTP/1.1 connection right when the previous response ends, so
//! there an idle connection is closed after `header_read_timeout` of silence. Before that,
//! the auto builder reads the protocol preface with no timer at all; a per-connection
//! watchdog covers it: a connection with no request in flight is closed once it has been so
//! for `header_read_timeout` since the accept (no request yet) or `idle_timeout` since its
//! last response ended (HTTP/2 as well). A request or a response still in flight — a long
//! stream — is never cut by these. Request bodies are held to `body_idle_timeout` between
//! chunks and `body_min_bytes_per_sec` on average ([`SlowBody`]). Past `max_connections`
//! a new connection is answered `503` (OpenAI shape, `Connection: close`) and closed: the
//! loop never stops accepting.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use tollgate_core::{ApiError, ErrorCode};
use tollgate_proxy::{ClientRequestId, PeerAddr, RequestId};
use tower::ServiceExt;

use crate::config::ServerConfig;

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

/// Refusals being written at once; past it an over-the-cap connection is closed unanswered.
const MAX_REFUSALS: usize = 256;

/// Serves `listener` until `stop`, holding every connection to `limits`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
    limits: ServerConfig,
    cut: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = connection_builder(&limits);
    let limits = Arc::new(limits);
    let open = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(AtomicUsize::new(0));
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
                if open.load(Ordering::Acquire) >= limits.max_connections {
                    if refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSALS {
                        let refusing = Counted::new(refusing.clone(), false);
                        connections.spawn(async move {
                            refuse(stream).await;
                            drop(refusing);
                        });
                    } else {
                        refusing.fetch_sub(1, Ordering::AcqRel);
                    }
                    continue;
                }
                let counted = Counted::new(open.clone(), true);
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let activity = Arc::new(Activity::new());
                let router = router.clone();
                let service_limits = limits.clone();
                let service_activity = activity.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let started = InFlight::start(service_activity.clone());
                    let mut req = req.map(|b| axum::body::Body::new(SlowBody::new(b, &service_limits)));
                    req.extensions_mut().insert(PeerAddr(peer));
                    let id = assign_request_id(&mut req);
                    let router = router.clone();
                    async move {
                        let res = router.oneshot(req).await.unwrap_or_else(|e| match e {});
                        // In flight until the last byte of the response is sent or dropped.
                        let mut res = res.map(|b| axum::body::Body::new(Tracked { inner: b, _in_flight: started }));
                        res.headers_mut().insert("x-request-id", id);
                        Ok::<_, Infallible>(res)
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                let watch_limits = limits.clone();
                connections.spawn(async move {
                    tokio::select! {
                        ended = conn => {
                            if let Err(e) = ended {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        }
                        () = activity.idle_expired(&watch_limits) => {
                            tracing::debug!("closing a connection with no request in flight");
                        }
                    }
                    drop(counted);
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

/// hyper's builder for both protocols, with the timers and limits of `[server]`.
fn connection_builder(limits: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.http2_max_header_list_size)
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(limits.http2_keep_alive_timeout);
    builder
}

/// Answers a connection over the cap: `503` in the OpenAI shape, `Connection: close`, then
/// a short drain of what the client already sent (closing on unread bytes would reset the
/// connection and could lose the answer).
async fn refuse(mut stream: TcpStream) {
    let err = ApiError::new(ErrorCode::Unavailable, "Too many open connections; retry shortly.");
    let body = err.body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Adds one to a shared count for as long as it lives (`counted`: already added).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: Arc<AtomicUsize>, add: bool) -> Self {
        if add {
            count.fetch_add(1, Ordering::AcqRel);
        }
        Self(count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection's watchdog reads: requests in flight, and when the last one ended.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last response ended; `u64::MAX`: none yet.
    last_ended_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { opened: Instant::now(), in_flight: AtomicUsize::new(0), last_ended_ms: AtomicU64::new(u64::MAX) }
    }

    /// Resolves once the connection has had no request in flight for too long: since the
    /// accept (`header_read_timeout`) or since its last response ended (`idle_timeout`).
    async fn idle_expired(&self, limits: &ServerConfig) {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Checked again later: a request in flight (a stream) is never cut here.
                tokio::time::sleep(limits.idle_timeout.min(limits.header_read_timeout)).await;
                continue;
            }
            let deadline = match self.last_ended_ms.load(Ordering::Acquire) {
                u64::MAX => self.opened + limits.header_read_timeout,
                ms => self.opened + Duration::from_millis(ms) + limits.idle_timeout,
            };
            if Instant::now() >= deadline {
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                continue;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One request in flight on a connection, until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        a.last_ended_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it ends or is dropped.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that arrives too slowly: silent for `body_idle_timeout`, or on average
/// slower than `body_min_bytes_per_sec` once that much time has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct BodyTooSlow;

/// The client's request body, held to `[server]`'s body timeouts. The timer is created
/// only when the body makes the reader wait, so a body that came with its head costs none.
struct SlowBody {
    inner: Incoming,
    idle: Duration,
    min_rate: u64,
    started: Instant,
    last: Instant,
    received: u64,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SlowBody {
    fn new(inner: Incoming, limits: &ServerConfig) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle: limits.body_idle_timeout,
            min_rate: limits.body_min_bytes_per_sec,
            started: now,
            last: now,
            received: 0,
            timer: None,
        }
    }

    /// When waiting longer breaks a limit: the silence, or the average rate.
    fn deadline(&self) -> Instant {
        let silence = self.last + self.idle;
        if self.min_rate == 0 {
            return silence;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        silence.min(self.started + self.idle + earned)
    }
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last = Instant::now();
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline();
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTooSlow)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
