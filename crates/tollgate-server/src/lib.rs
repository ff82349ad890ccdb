//! Tollgate's wiring: from a validated [`Config`] and a bound listener to a running
//! server — store and migrations, pepper, the data plane's snapshot and its change feed,
//! the usage writer, the route table, the accept loop — and the orderly stop:
//! stop accepting → `/readyz` false → drain connections → stop the feed → drain the usage
//! writer → close the store. Every task started here is awaited by [`Server::wait`].

pub mod config;
mod feed;
mod pepper;
mod serve;
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
use tollgate_proxy::{DataPlane, Limits, UpstreamClient};
use tollgate_service::Services;
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
    let mut services = Services::new(store, config.key_format.clone(), Digester::new(&pepper));
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

        let (usage, usage_rx) = tollgate_proxy::usage_channel(config.usage_queue_capacity);
        let writer = usage_writer::UsageWriter {
            store: store.clone(),
            rx: usage_rx,
            batch_size: config.usage_batch_size,
            flush_interval: config.usage_flush_interval,
            data_dir: config.data_dir.clone(),
        };
        writer.replay_spill().await;

        let (snapshot, seq) = feed::load(&store, feed::model_routes(&config)?).await.context("loading the snapshot")?;
        tracing::info!(keys = snapshot.keys.len(), models = snapshot.models.len(), "snapshot loaded");
        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));

        let data_plane = Arc::new(DataPlane {
            snapshot: snapshot.clone(),
            key_format: config.key_format.clone(),
            ephemeral_prefix: tollgate_core::ephemeral::token_prefix(config.key_format.prefix()),
            digester: services.digester.clone(),
            client: UpstreamClient::new(config.connect_timeout),
            usage,
            limits: Limits { max_body_bytes: config.max_body_bytes, first_byte_timeout: config.first_byte_timeout },
            trusted_proxies: config.trusted_proxies.clone(),
        });
        let ready = Arc::new(AtomicBool::new(true));
        let web = Arc::new(WebState {
            services: services.clone(),
            admin_token: config.admin_token.clone(),
            ready: ready.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            secure_cookies: config.secure_cookies,
            login_throttle: Default::default(),
        });
        let router = Router::new()
            .merge(tollgate_proxy::router(data_plane))
            .merge(tollgate_web::router(web))
            .fallback(not_found);

        let stop = CancellationToken::new();
        let feed_stop = CancellationToken::new();
        let writer_stop = CancellationToken::new();
        let feed_task =
            tokio::spawn(feed::follow(store.clone(), snapshot, seq, config.change_poll_interval, feed_stop.clone()));
        let writer_task = tokio::spawn(writer.run(writer_stop.clone()));
        let serve_task = tokio::spawn(serve::serve(listener, router, stop.clone(), config.shutdown_grace));

        let stop_signal = stop.clone();
        let task = tokio::spawn(async move {
            stop_signal.cancelled().await;
            ready.store(false, Ordering::Release);
            let _ = serve_task.await;
            feed_stop.cancel();
            let _ = feed_task.await;
            writer_stop.cancel();
            let _ = writer_task.await;
            store.close().await;
            tracing::info!("stopped");
        });
        tracing::info!(%addr, "listening");
        Ok(Self { addr, stop, task, services })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
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

async fn not_found(req: Request) -> Response {
    let path: String = req.uri().path().chars().take(128).collect();
    ApiError::new(ErrorCode::NotFound, format!("Unknown endpoint: {} {path}", req.method())).into_response()
}
