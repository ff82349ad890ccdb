//! Tollgate's wiring: from a validated [`Config`] and a bound listener to a running
//! server — store and migrations, pepper, the data plane's snapshot and its change feed,
//! the usage writer, the route table, the accept loop — and the orderly stop: stop
//! accepting → `/readyz` false → drain connections → flush the auth-failure counts → stop
//! the notifier → stop the feed → drain the usage writer → close the store. Every task
//! started here is awaited by [`Server::wait`].

mod auth_failures;
pub mod config;
mod feed;
mod metrics_http;
mod notify;
mod pepper;
mod serve;
mod settler;
mod usage_writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_core::key::Digester;
use tollgate_core::{ApiError, ErrorCode};
use tollgate_proxy::shared_limits::{SharedLimits, SharedLimitsConfig};
use tollgate_proxy::{DataPlane, Limits, Policy, Shared, SharedHealth, UpstreamClient};
use tollgate_service::{CatalogModel, Services};
use tollgate_store::Store;
use tollgate_web::WebState;

pub use config::Config;

/// Opens the store named by the config, applies migrations, and builds the services
/// (what the CLI needs without a server).
pub async fn open_services(config: &Config) -> anyhow::Result<Services> {
    if config.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    }
    let store = Store::connect(&config.database_url).await.context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    let pepper = pepper::load_or_create(config.pepper.as_ref(), &config.data_dir)?;
    let catalog = config
        .models
        .iter()
        .map(|m| CatalogModel {
            id: m.id.clone(),
            model_type: m.model_type,
            pricing: m.pricing,
            max_output_tokens: m.max_output_tokens,
        })
        .collect();
    let digester = Digester::new(&pepper);
    pepper::check_fingerprint(&store, &digester, config.pepper.is_some(), &config.data_dir).await?;
    let routing = config::routing_setup(config, &digester)?;
    let mut services = Services::new(store, config.key_format.clone(), digester)
        .with_catalog(catalog)
        .with_signup_policy(config.signup_policy)
        .with_routing(routing);
    if let Some(k) = &config.reveal_key {
        services = services.with_reveal(tollgate_service::Sealer::new(&k.0).map_err(anyhow::Error::msg)?);
    }
    let password = config.owner_password.as_ref().map(|p| p.expose());
    if let Some(generated) = services.bootstrap(&config.owner_email, password).await.context("first-start bootstrap")? {
        // Shown once, on the terminal of whoever started Tollgate first; never logged.
        eprintln!(
            "\nCreated the owner account {}. Its password, shown only now: {generated}\n\
             (set TOLLGATE_OWNER_PASSWORD before the first start to choose it instead)\n",
            config.owner_email
        );
    }
    Ok(services)
}

/// A started server.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    services: Services,
}

impl Server {
    /// Starts serving on `listener` (bind `127.0.0.1:0` in tests).
    pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let services = open_services(&config).await?;
        let store = services.store.clone();

        // Models by id in the metrics: the config file's now, those managed through the API
        // as the routes learn of them (see `RouteSource`).
        let metrics = Arc::new(tollgate_proxy::metrics::Metrics::new(
            tollgate_proxy::metrics::MetricsOptions {
                disabled: !config.metrics.enabled,
                key_labels: config.metrics.key_labels,
            },
            config.models.iter().map(|m| m.id.as_str()),
        ));
        let routing = services.routing.clone().context("the services carry the routing setup")?;
        let source = Arc::new(feed::RouteSource {
            config: config.clone(),
            setup: routing,
            health: tollgate_proxy::routing::Health::default(),
            metrics: metrics.clone(),
        });
        let journal_dir = config.data_dir.join(tollgate_proxy::journal::DIR_NAME);
        let journal = tollgate_proxy::journal::Journal::open(&journal_dir)
            .with_context(|| format!("opening the usage journal in {}", journal_dir.display()))?;
        let (usage, usage_rx) =
            tollgate_proxy::usage_channel_with_metrics(config.usage_queue_capacity, metrics, Some(Arc::new(journal)));
        let writer = usage_writer::UsageWriter {
            store: store.clone(),
            rx: usage_rx,
            batch_size: config.usage_batch_size,
            flush_interval: config.usage_flush_interval,
            data_dir: config.data_dir.clone(),
        };
        writer.replay_journals().await;
        writer.replay_spill().await;
        // Loaded after the replay: the replayed rows are in the counters it reads.
        let (snapshot, seq) = feed::load(&store, &source).await.context("loading the snapshot")?;
        tracing::info!(keys = snapshot.keys.len(), models = snapshot.models.len(), "snapshot loaded");

        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let failures = Arc::new(tollgate_proxy::auth_failures::AuthFailures::new(
            config.auth_failures_per_minute,
            config.auth_failure_addresses,
        ));
        let (shared, settler) = match &config.redis_url {
            Some(url) => {
                let instance = tollgate_core::ids::new_id("inst");
                let mut c = SharedLimitsConfig::new(config.redis_prefix.clone(), instance);
                c.timeout = config.redis_timeout;
                let limits =
                    Arc::new(SharedLimits::new(url.expose(), c).map_err(|e| anyhow::anyhow!("redis_url: {e}"))?);
                let health = Arc::new(SharedHealth::default());
                match limits.heartbeat().await {
                    Ok(()) => health.mark_reachable(),
                    Err(e) => health.mark_unreachable(&e, config.fallback_share),
                }
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let shared = Shared { limits: limits.clone(), settlements: tx, health: health.clone() };
                (Some(shared), Some((limits, health, rx)))
            }
            None => (None, None),
        };
        let shared_health = shared.as_ref().map(|s| s.health.clone());
        let metrics_endpoint =
            metrics_http::setup(&config.metrics, &usage, &snapshot, shared_health.clone(), &failures).await?;
        let shutdown_cut = CancellationToken::new();
        let data_plane = Arc::new(DataPlane {
            snapshot: snapshot.clone(),
            key_format: config.key_format.clone(),
            ephemeral_prefix: tollgate_core::ephemeral::token_prefix(config.key_format.prefix()),
            digester: services.digester.clone(),
            client: UpstreamClient::new(config.connect_timeout),
            usage,
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                first_byte_timeout: config.first_byte_timeout,
                stream_idle_timeout: config.stream_idle_timeout,
                failover_deadline: config.failover_deadline,
                retry_base: config.retry_base,
                breaker: tollgate_proxy::routing::BreakerPolicy {
                    failure_threshold: config.breaker_failures,
                    open_for: config.breaker_open,
                },
            },
            trusted_proxies: config.trusted_proxies.clone(),
            policy: Policy { enforce_balance: config.enforce_balance, fallback_share: config.fallback_share },
            shared,
            shutdown_cut: shutdown_cut.clone(),
            auth_failures: failures.clone(),
        });
        let ready = Arc::new(AtomicBool::new(true));
        let web = Arc::new(WebState {
            services: services.clone(),
            admin_token: config.admin_token.clone(),
            ready: ready.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            secure_cookies: config.secure_cookies,
            login_throttle: Default::default(),
            balance_enforced: config.enforce_balance,
            channels: Some(channel_report(snapshot.clone())),
            data_plane: Some(in_process(tollgate_proxy::router(data_plane.clone()))),
            redis_reachable: shared_health.map(|h| -> tollgate_web::RedisReachable { Arc::new(move || h.reachable()) }),
        });
        let router = Router::new()
            .merge(tollgate_proxy::router(data_plane))
            .merge(tollgate_web::router(web))
            .merge(metrics_endpoint.main_routes)
            .fallback(not_found);

        let stop = CancellationToken::new();
        let feed_stop = CancellationToken::new();
        let writer_stop = CancellationToken::new();
        // One instance on SQLite settles everything itself; on PostgreSQL other instances
        // may share the counters.
        let counter_refresh = (store.backend() == tollgate_store::Backend::Postgres).then_some(config.counter_refresh);
        let feed_task = tokio::spawn(feed::follow(
            store.clone(),
            snapshot,
            source,
            seq,
            config.change_poll_interval,
            counter_refresh,
            feed_stop.clone(),
        ));
        let writer_task = tokio::spawn(writer.run(writer_stop.clone()));
        let failures_stop = CancellationToken::new();
        let failures_task = tokio::spawn(auth_failures::run(store.clone(), failures, failures_stop.clone()));
        let settler_stop = CancellationToken::new();
        let settler_task = settler.map(|(limits, health, rx)| {
            tokio::spawn(settler::run(limits, health, config.fallback_share, rx, settler_stop.clone()))
        });
        let notifier_stop = CancellationToken::new();
        let notifier_task = notify::Notifier::new(store.clone(), &config.notifications)
            .context("starting the notifier")?
            .map(|n| tokio::spawn(n.run(notifier_stop.clone())));
        let serve_task = tokio::spawn(serve::serve(
            listener,
            router,
            stop.clone(),
            config.shutdown_grace,
            config.server.clone(),
            shutdown_cut,
        ));
        let metrics_addr = metrics_endpoint.own.as_ref().map(|(_, _, addr)| *addr);
        let metrics_task = metrics_endpoint.own.map(|(l, routes, _)| {
            let limits = config.server.clone();
            tokio::spawn(serve::serve(l, routes, stop.clone(), config.shutdown_grace, limits, CancellationToken::new()))
        });

        let stop_signal = stop.clone();
        let task = tokio::spawn(async move {
            stop_signal.cancelled().await;
            ready.store(false, Ordering::Release);
            let _ = serve_task.await;
            if let Some(t) = metrics_task {
                let _ = t.await;
            }
            // Connections have drained: no failure is counted after this last flush.
            failures_stop.cancel();
            let _ = failures_task.await;
            settler_stop.cancel();
            if let Some(t) = settler_task {
                let _ = t.await;
            }
            notifier_stop.cancel();
            if let Some(t) = notifier_task {
                let _ = t.await;
            }
            feed_stop.cancel();
            let _ = feed_task.await;
            writer_stop.cancel();
            let _ = writer_task.await;
            store.close().await;
            tracing::info!("stopped");
        });
        tracing::info!(%addr, "listening");
        Ok(Self { addr, metrics_addr, stop, task, services })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when `[metrics] listen` gives it a listener of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The service layer over the server's own store (tests and embedding).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Begins the graceful stop; [`Server::wait`] returns when it is complete.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the server has stopped and every usage row is written.
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "shutdown task failed");
        }
    }
}

/// The data plane as the dashboard's Playground calls it: in-process, with a fresh
/// request id (the id `serve` would have assigned on a socket) echoed in `x-request-id`.
fn in_process(proxy: Router) -> tollgate_web::DataPlaneCall {
    use tower::ServiceExt;
    Arc::new(move |mut req| {
        let proxy = proxy.clone();
        Box::pin(async move {
            let id = tollgate_core::ids::new_id("req");
            req.extensions_mut().insert(tollgate_proxy::RequestId(Arc::from(id.as_str())));
            let mut res = proxy.oneshot(req).await.unwrap_or_else(|e| match e {});
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                res.headers_mut().insert("x-request-id", v);
            }
            res
        })
    })
}

/// `GET /api/v1/channels`: every model's channels and their circuits, from the snapshot.
fn channel_report(snapshot: Arc<ArcSwap<tollgate_proxy::Snapshot>>) -> tollgate_web::channels::ChannelsReport {
    use tollgate_proxy::routing::CircuitState;
    Arc::new(move || {
        let snapshot = snapshot.load();
        let mut models: Vec<_> = snapshot.models.values().collect();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        models
            .iter()
            .flat_map(|m| {
                m.channels.iter().map(|c| {
                    let h = c.health.report();
                    tollgate_web::channels::ChannelStatus {
                        id: None,
                        source: "config",
                        model: m.id.clone(),
                        provider: c.provider.name.clone(),
                        upstream_model: c.upstream_model.clone(),
                        priority: c.priority,
                        weight: c.weight,
                        groups: c.groups.clone(),
                        state: match h.state {
                            CircuitState::Closed => "closed",
                            CircuitState::Open => "open",
                            CircuitState::HalfOpen => "half_open",
                        },
                        consecutive_failures: h.consecutive_failures,
                        successes: h.successes,
                        failures: h.failures,
                    }
                })
            })
            .collect()
    })
}

async fn not_found(req: Request) -> Response {
    let path: String = req.uri().path().chars().take(128).collect();
    ApiError::new(ErrorCode::NotFound, format!("Unknown endpoint: {} {path}", req.method())).into_response()
}
