//! Metering a response while it streams to the client.
//!
//! [`MeteredBody`] wraps the upstream body: frames are passed on as they arrive (SSE is cut
//! at event boundaries so that the usage-only chunk the gateway asked for can be hidden),
//! usage is read on the way, and exactly one usage event is emitted when the body ends,
//! fails, or is dropped because the client went away — `Meter::finish` consumes the meter,
//! so a second emission cannot be written. Dropping the body also drops the upstream
//! connection, which cancels the upstream request.
//!
//! An upstream that goes silent mid-body — no frame for the idle timeout — ends it as an
//! interruption would: the client gets the error event, the row `upstream_interrupted` for
//! what was delivered. Only silence counts: a long stream that keeps sending is never cut.
//!
//! Streams come in two [`Dialect`]s: OpenAI's, and Anthropic's (relayed natively to
//! `/v1/messages` clients). An Anthropic stream is complete only at `message_stop`: one that
//! reports an `error` event, or ends before `message_stop`, is `upstream_interrupted`, and
//! the error event its client gets is Anthropic-shaped.
//!
//! A body still running when the shutdown grace period ends (`Meter::shutdown_cut`
//! cancelled) is ended the same way: the error event in its dialect, the row
//! `shutdown_cut` for what was delivered.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tollgate_core::money::Pricing;
use tollgate_core::usage::{BillingReason, UsageEvent};

use crate::sse::{TokenUsage, event_end, inspect_event, json_usage};
use crate::usage_sink::UsageSink;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// JSON bodies larger than this are passed through without reading their usage.
const MAX_JSON_INSPECT: usize = 8 << 20;
/// A rough bytes-per-token ratio for estimates when no usage arrives.
const BYTES_PER_TOKEN: u64 = 4;

/// Everything needed to bill the request once its response ends.
pub(crate) struct Meter {
    pub sink: UsageSink,
    /// Pre-filled with who/what/where; tokens, cost, status and timing are set at the end.
    pub event: UsageEvent,
    pub started: Instant,
    pub pricing: Pricing,
    pub images: u64,
    pub prompt_estimate: u64,
    pub usage: Option<TokenUsage>,
    pub output_bytes: u64,
    /// Events that carried generated text: each is at least one token.
    pub output_chunks: u64,
    pub first_byte: Option<Instant>,
    /// The request's budget reservation, settled here to the real cost.
    pub hold: Option<crate::admission::Hold>,
    /// The body's usage is the adapter's own estimate (the provider reports none, as
    /// Gemini for embeddings): billed as given, recorded as `estimated`.
    pub usage_is_estimate: bool,
    /// The prompt tokens the provider reported before its final usage (Anthropic's
    /// `message_start`): billed instead of the estimate when the final usage never comes.
    pub reported_prompt: Option<u64>,
    /// Cancelled when the server's shutdown grace period is over.
    pub shutdown_cut: tokio_util::sync::CancellationToken,
}

/// The wire format of a streamed body: what ends it cleanly, how its interruption is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// OpenAI's chunks (and `data: [DONE]`), also what every translating adapter produces.
    OpenAi,
    /// Anthropic's Messages events, relayed as they came.
    Anthropic,
}

/// How the response ended.
enum Outcome {
    Complete,
    UpstreamFailed,
    /// No frame from the upstream within the idle timeout.
    UpstreamIdle,
    ClientGone,
    /// The shutdown grace period ended first.
    ShutdownCut,
}

impl Meter {
    fn finish(mut self, outcome: Outcome) {
        let reported = self.usage;
        let (prompt, completion) = match reported {
            Some(u) => (u.prompt, u.completion),
            None => (
                self.reported_prompt.unwrap_or(self.prompt_estimate),
                self.output_bytes.div_ceil(BYTES_PER_TOKEN).max(self.output_chunks),
            ),
        };
        let e = &mut self.event;
        e.billing_reason = match outcome {
            Outcome::Complete if reported.is_some() && !self.usage_is_estimate => BillingReason::Completed,
            Outcome::Complete => BillingReason::Estimated,
            Outcome::UpstreamFailed | Outcome::UpstreamIdle => BillingReason::UpstreamInterrupted,
            Outcome::ClientGone => BillingReason::ClientDisconnected,
            Outcome::ShutdownCut => BillingReason::ShutdownCut,
        };
        match outcome {
            Outcome::UpstreamFailed => e.error = Some("upstream stream interrupted".to_owned()),
            Outcome::UpstreamIdle => e.error = Some("upstream stream idle past the stream idle timeout".to_owned()),
            Outcome::ShutdownCut => e.error = Some("stream cut at the end of the shutdown grace period".to_owned()),
            Outcome::Complete | Outcome::ClientGone => {}
        }
        e.prompt_tokens = prompt;
        e.completion_tokens = completion;
        e.cost = self.pricing.cost(prompt, completion, self.images);
        e.latency_ms = elapsed_ms(self.started, Instant::now());
        e.ttft_ms = self.first_byte.map(|t| elapsed_ms(self.started, t));
        if let Some(hold) = self.hold.take() {
            // The bill is the truth: charged whole, what passed the reservation recorded.
            e.excess = tollgate_core::MicroUsd(e.cost.0.saturating_sub(hold.reserved().0).max(0));
            hold.settle(e.cost, prompt.saturating_add(completion));
        }
        self.sink.emit(self.event);
    }
}

pub(crate) fn elapsed_ms(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_millis()).unwrap_or(u64::MAX)
}

enum Framing {
    /// Passed through frame by frame; a copy is kept to read `usage` at the end.
    Json { copy: Vec<u8> },
    /// Cut at event boundaries; `pending` holds an incomplete event.
    Sse { pending: BytesMut, hide_usage_only: bool, closing: Option<Bytes>, dialect: Dialect, ends: StreamEnd },
}

/// What an Anthropic stream has said about its own end so far.
#[derive(Debug, Default, Clone, Copy)]
struct StreamEnd {
    /// An `error` event came.
    failed: bool,
    /// `message_stop` came.
    stopped: bool,
}

/// Notices an upstream body that has sent nothing for `limit`. A frame only records when
/// it arrived; the one timer (created the first time the body waits) is moved forward
/// when it fires early — so a stream that keeps sending costs no timer operation per frame.
struct IdleTimer {
    limit: Duration,
    last_frame: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        Self { limit, last_frame: tokio::time::Instant::now(), sleep: None }
    }

    fn frame(&mut self) {
        self.last_frame = tokio::time::Instant::now();
    }

    /// Called while the upstream body is pending: ready once it has been silent too long.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.last_frame + self.limit;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            ready!(sleep.as_mut().poll(cx));
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // Armed for an earlier silence that a frame has since ended.
            sleep.as_mut().reset(deadline);
        }
    }
}

/// Notices the end of the shutdown grace period: a flag checked per poll, and a waker
/// registered (one allocation, the first time the body waits) while the upstream is silent.
struct ShutdownWatch {
    token: tokio_util::sync::CancellationToken,
    wait: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
}

impl ShutdownWatch {
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let token = &self.token;
        self.wait.get_or_insert_with(|| Box::pin(token.clone().cancelled_owned())).as_mut().poll(cx)
    }
}

pub(crate) struct MeteredBody<B> {
    inner: B,
    framing: Framing,
    meter: Option<Meter>,
    idle: IdleTimer,
    cut: ShutdownWatch,
}

impl<B> MeteredBody<B> {
    /// `idle_timeout`: the longest silence of the upstream before the body is ended.
    pub fn json(inner: B, meter: Meter, idle_timeout: Duration) -> Self {
        let framing = Framing::Json { copy: Vec::new() };
        let cut = ShutdownWatch { token: meter.shutdown_cut.clone(), wait: None };
        Self { inner, framing, meter: Some(meter), idle: IdleTimer::new(idle_timeout), cut }
    }

    /// `hide_usage_only`: drop the usage-only chunk (the client did not ask for it).
    pub fn sse(inner: B, meter: Meter, hide_usage_only: bool, dialect: Dialect, idle_timeout: Duration) -> Self {
        let ends = StreamEnd::default();
        let framing = Framing::Sse { pending: BytesMut::new(), hide_usage_only, closing: None, dialect, ends };
        let cut = ShutdownWatch { token: meter.shutdown_cut.clone(), wait: None };
        Self { inner, framing, meter: Some(meter), idle: IdleTimer::new(idle_timeout), cut }
    }

    /// The end of a body whose upstream failed or fell silent: an SSE client gets a proper
    /// error event and a clean end; a JSON body fails (the client sees it cut short).
    fn interrupted(&mut self, outcome: Outcome, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let cut = matches!(outcome, Outcome::ShutdownCut);
        self.finish(outcome);
        match &self.framing {
            Framing::Sse { dialect, .. } if cut => Poll::Ready(Some(Ok(Frame::data(shutdown_event(*dialect))))),
            Framing::Sse { dialect, .. } => Poll::Ready(Some(Ok(Frame::data(interrupted_event(*dialect))))),
            Framing::Json { .. } => Poll::Ready(Some(Err(error))),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(mut meter) = self.meter.take() {
            if let (Framing::Json { copy }, Outcome::Complete) = (&self.framing, &outcome) {
                meter.usage = json_usage(copy);
            }
            // An Anthropic stream that failed, or ended before `message_stop`, is not complete.
            let outcome = match (&self.framing, outcome) {
                (Framing::Sse { dialect: Dialect::Anthropic, ends, .. }, Outcome::Complete)
                    if ends.failed || !ends.stopped =>
                {
                    Outcome::UpstreamFailed
                }
                (_, outcome) => outcome,
            };
            meter.finish(outcome);
        }
    }

    /// The upstream ended the body cleanly: what the client still gets (an unterminated
    /// last event, and for an Anthropic stream cut short without saying so, the error event).
    fn end_of_stream(&mut self) -> Option<Bytes> {
        let Framing::Sse { pending, dialect, ends, .. } = &mut self.framing else {
            return None;
        };
        let cut_short = *dialect == Dialect::Anthropic && !ends.stopped && !ends.failed;
        if pending.is_empty() && !cut_short {
            return None;
        }
        let mut tail = pending.split();
        if cut_short {
            tail.extend_from_slice(&interrupted_event(Dialect::Anthropic));
        }
        Some(tail.freeze())
    }

    /// Takes the complete events out of `pending`, returning what the client should get.
    fn drain_events(pending: &mut BytesMut, hide_usage_only: bool, ends: &mut StreamEnd, meter: &mut Meter) -> Bytes {
        let mut out = BytesMut::new();
        while let Some(end) = event_end(pending) {
            let event = pending.split_to(end);
            let info = inspect_event(&event);
            meter.output_bytes += info.output_bytes;
            meter.output_chunks += u64::from(info.output_bytes > 0);
            if info.prompt_reported.is_some() {
                meter.reported_prompt = info.prompt_reported;
            }
            if let Some(mut usage) = info.usage {
                if info.usage_lacks_prompt
                    && let Some(prompt) = meter.reported_prompt
                {
                    usage.prompt = prompt;
                }
                meter.usage = Some(usage);
            }
            ends.failed |= info.failed;
            ends.stopped |= info.stopped;
            if !(hide_usage_only && info.usage_only) {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }
}

/// The event that ends a stream the upstream interrupted, in the stream's own format.
fn interrupted_event(dialect: Dialect) -> Bytes {
    Bytes::from_static(match dialect {
        Dialect::OpenAi => INTERRUPTED_EVENT,
        Dialect::Anthropic => INTERRUPTED_ANTHROPIC_EVENT,
    })
}

/// The event that ends a stream cut at the end of the shutdown grace period.
fn shutdown_event(dialect: Dialect) -> Bytes {
    Bytes::from_static(match dialect {
        Dialect::OpenAi => SHUTDOWN_EVENT,
        Dialect::Anthropic => SHUTDOWN_ANTHROPIC_EVENT,
    })
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish(Outcome::ClientGone);
    }
}

const INTERRUPTED_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"The upstream provider interrupted the stream.\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_error\"}}\n\n";
const SHUTDOWN_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"The gateway is shutting down; the stream was cut. Retry the request.\",\"type\":\"server_error\",\"param\":null,\"code\":\"shutting_down\"}}\n\n";
const SHUTDOWN_ANTHROPIC_EVENT: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"The gateway is shutting down; the stream was cut. Retry the request.\"}}\n\n";
const INTERRUPTED_ANTHROPIC_EVENT: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The upstream provider interrupted the stream.\"}}\n\n";

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Framing::Sse { closing, .. } = &mut this.framing
                && let Some(last) = closing.take()
            {
                return Poll::Ready(Some(Ok(Frame::data(last))));
            }
            if this.meter.is_none() {
                return Poll::Ready(None);
            }
            if this.cut.token.is_cancelled() {
                return this.interrupted(Outcome::ShutdownCut, "cut at shutdown".into());
            }
            let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(polled) => polled,
                Poll::Pending => {
                    if this.cut.poll_cut(cx).is_ready() {
                        return this.interrupted(Outcome::ShutdownCut, "cut at shutdown".into());
                    }
                    ready!(this.idle.poll_expired(cx));
                    tracing::warn!("upstream stream idle past the stream idle timeout; ending it");
                    return this.interrupted(Outcome::UpstreamIdle, "upstream stream idle".into());
                }
            };
            this.idle.frame();
            let frame = match polled {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return this.interrupted(Outcome::UpstreamFailed, e.into()),
                None => {
                    let tail = this.end_of_stream();
                    if let Framing::Sse { closing, .. } = &mut this.framing {
                        *closing = tail;
                    }
                    this.finish(Outcome::Complete);
                    continue;
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            };
            let Some(meter) = this.meter.as_mut() else {
                continue;
            };
            meter.first_byte.get_or_insert_with(Instant::now);
            // With a Content-Length, hyper stops polling once the last byte is written and
            // drops the body: the end must be recognised here, not only at `None`.
            let ended = this.inner.is_end_stream();
            let out = match &mut this.framing {
                Framing::Json { copy } => {
                    if copy.len() + data.len() <= MAX_JSON_INSPECT {
                        copy.extend_from_slice(&data);
                    }
                    data
                }
                Framing::Sse { pending, hide_usage_only, ends, .. } => {
                    pending.extend_from_slice(&data);
                    Self::drain_events(pending, *hide_usage_only, ends, meter)
                }
            };
            let out = match ended.then(|| this.end_of_stream()).flatten() {
                Some(tail) => {
                    let mut all = BytesMut::from(out);
                    all.extend_from_slice(&tail);
                    all.freeze()
                }
                None => out,
            };
            if ended {
                this.finish(Outcome::Complete);
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.meter.is_none() && matches!(&self.framing, Framing::Json { .. } | Framing::Sse { closing: None, .. })
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Json { .. } => self.inner.size_hint(),
            Framing::Sse { .. } => SizeHint::default(),
        }
    }
}
