//! The HTTP-server scaffolding the fake upstreams share: binding, the accept loop and
//! connection tasks, the switchable behavior, request recording, shutdown on drop, and the
//! response bodies (whole JSON answers and paced or broken event streams).
//!
//! A fake provides only what differs — its `Behavior` type, how that behavior maps to the
//! checks every fake runs first, and its answers — by implementing [`Fake`].

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// One request as a fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// e.g. `"POST"`.
    pub method: String,
    /// The URI path, without the query, e.g. `"/v1/chat/completions"`.
    pub path: String,
    /// The URI query, without `?`, if any (e.g. `"api-version=2024-10-21"`).
    pub query: Option<String>,
    /// Every request header.
    pub headers: HeaderMap,
    /// The parsed JSON body; `Value::Null` if the body was empty or not JSON.
    pub body: Value,
}

/// What the current behavior asks for before a request is routed.
pub(crate) enum Preflight {
    /// Close the connection without answering (new connections are closed at accept).
    Close,
    /// Answer with this status and the fake's error body for it.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer normally.
    Proceed,
}

/// Implements [`Fake::preflight`] for a `Behavior` enum with `CloseConnection`, `Status(u16)`
/// and `Delay(Duration)` variants (every other variant proceeds).
macro_rules! preflight_by_variant {
    ($behavior:ident) => {
        fn preflight(behavior: &$behavior) -> $crate::fake_server::Preflight {
            use $crate::fake_server::Preflight;
            match behavior {
                $behavior::CloseConnection => Preflight::Close,
                $behavior::Status(code) => Preflight::Status(*code),
                $behavior::Delay(delay) => Preflight::Delay(*delay),
                _ => Preflight::Proceed,
            }
        }
    };
}
pub(crate) use preflight_by_variant;

/// One fake upstream: its behavior type and its answers.
pub(crate) trait Fake: Sized + Send + Sync + 'static {
    /// The fake's public `Behavior` enum.
    type Behavior: Clone + Default + std::fmt::Debug + Send + 'static;
    /// Names the fake in the errors that make hyper drop a connection.
    const NAME: &'static str;

    fn preflight(behavior: &Self::Behavior) -> Preflight;

    /// The answer to [`Preflight::Status`].
    fn status_response(shared: &Shared<Self>, code: u16) -> Response<FakeBody>;

    /// The answer to a request that passed the preflight; `body` is the parsed JSON, if any.
    fn answer(
        shared: &Shared<Self>,
        parts: &Parts,
        body: Option<Value>,
        behavior: Self::Behavior,
    ) -> Response<FakeBody>;
}

/// State shared by the server task, its connections and the fake's handle.
#[derive(Debug)]
pub(crate) struct Shared<F: Fake> {
    /// The fake's own configuration.
    pub(crate) fake: F,
    record: bool,
    behavior: Mutex<F::Behavior>,
    requests: Mutex<Vec<RecordedRequest>>,
    next_id: AtomicU64,
}

impl<F: Fake> Shared<F> {
    fn behavior(&self) -> F::Behavior {
        self.behavior.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// 1, 2, 3, … for ids in answers.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running fake server. Serves until dropped; dropping aborts it and every open connection.
#[derive(Debug)]
pub(crate) struct FakeServer<F: Fake> {
    addr: SocketAddr,
    shared: Arc<Shared<F>>,
    server: JoinHandle<()>,
}

impl<F: Fake> FakeServer<F> {
    /// Binds `listen` and serves, keeping every request when `record` is set.
    pub(crate) async fn start(listen: SocketAddr, record: bool, fake: F) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fake,
            record,
            behavior: Mutex::new(F::Behavior::default()),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(FakeServer { addr, shared, server })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_behavior(&self, behavior: F::Behavior) {
        *self.shared.behavior.lock().unwrap_or_else(PoisonError::into_inner) = behavior;
    }
}

impl<F: Fake> Drop for FakeServer<F> {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connections, so this also ends them.
        self.server.abort();
    }
}

async fn serve<F: Fake>(listener: TcpListener, shared: Arc<Shared<F>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        if matches!(F::preflight(&shared.behavior()), Preflight::Close) {
            drop(stream);
            continue;
        }
        // Latency matters more than packet count here.
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&shared), req));
            // A connection error (client gone, stream broken on purpose) ends only this task.
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Returning `Err` makes hyper drop the connection without answering.
async fn handle<F: Fake>(shared: Arc<Shared<F>>, req: Request<Incoming>) -> io::Result<Response<FakeBody>> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let parsed = if bytes.is_empty() { None } else { serde_json::from_slice::<Value>(&bytes).ok() };
    if shared.record {
        let recorded = RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: parsed.clone().unwrap_or(Value::Null),
        };
        shared.requests.lock().unwrap_or_else(PoisonError::into_inner).push(recorded);
    }
    let behavior = shared.behavior();
    match F::preflight(&behavior) {
        Preflight::Close => return Err(io::Error::other(format!("{}: closing on purpose", F::NAME))),
        Preflight::Status(code) => return Ok(F::status_response(&shared, code)),
        Preflight::Delay(delay) => tokio::time::sleep(delay).await,
        Preflight::Proceed => {}
    }
    Ok(F::answer(&shared, &parts, parsed, behavior))
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// A whole body with `status` and `content-type`.
pub(crate) fn json_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<FakeBody> {
    let mut response = Response::new(FakeBody::Full(Some(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A paced event stream with `content-type`: the first `immediate` frames at once, then each
/// after `delay`; after `break_after` frames the body fails, which makes hyper abort the
/// connection.
pub(crate) fn stream_response(
    frames: Vec<Bytes>,
    immediate: usize,
    delay: Option<Duration>,
    break_after: Option<usize>,
    content_type: &'static str,
) -> Response<FakeBody> {
    let body = ScriptedBody {
        frames: frames.into(),
        sent: 0,
        immediate,
        delay,
        break_after,
        flushed_before_break: false,
        stall_after: None,
        sleep: None,
    };
    let mut response = Response::new(FakeBody::Scripted(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Makes a paced event stream fall silent after `frames` frames: the connection stays open
/// and the body neither ends nor fails (an upstream that hangs mid-stream).
pub(crate) fn stall_after(mut response: Response<FakeBody>, frames: usize) -> Response<FakeBody> {
    if let FakeBody::Scripted(body) = response.body_mut() {
        body.stall_after = Some(frames);
    }
    response
}

/// Either a whole body (sent with `content-length`) or a paced event stream (chunked).
pub(crate) enum FakeBody {
    Full(Option<Bytes>),
    Scripted(ScriptedBody),
}

/// Frames sent in order: the first `immediate` at once, then each after `delay`; after
/// `break_after` frames the body fails, which makes hyper abort the connection.
pub(crate) struct ScriptedBody {
    frames: VecDeque<Bytes>,
    sent: usize,
    immediate: usize,
    delay: Option<Duration>,
    break_after: Option<usize>,
    flushed_before_break: bool,
    /// After this many frames nothing more is sent, and the body never ends.
    stall_after: Option<usize>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            FakeBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            FakeBody::Scripted(body) => body.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FakeBody::Full(data) => data.is_none(),
            FakeBody::Scripted(body) => {
                body.frames.is_empty() && body.break_after.is_none() && body.stall_after.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FakeBody::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            FakeBody::Full(None) => SizeHint::with_exact(0),
            FakeBody::Scripted(_) => SizeHint::default(),
        }
    }
}

impl ScriptedBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.break_after == Some(self.sent) {
            if !self.flushed_before_break {
                // hyper writes what it has only when the body stalls; without this the error
                // would discard the frames before they reach the socket.
                self.flushed_before_break = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.break_after = None;
            self.frames.clear();
            return Poll::Ready(Some(Err(io::Error::other("fake upstream: stream broken on purpose"))));
        }
        if self.stall_after == Some(self.sent) {
            // Never woken: silent until the client gives up (hyper has flushed what was sent).
            return Poll::Pending;
        }
        if self.frames.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(delay) = self.delay.filter(|_| self.sent >= self.immediate) {
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        self.sent += 1;
        Poll::Ready(self.frames.pop_front().map(|f| Ok(Frame::data(f))))
    }
}
