//! Tollgate's durable state. One implementation serves SQLite (the embedded default) and
//! PostgreSQL (scale-out) through sqlx's `Any` driver: the SQL is written once in the
//! dialect both accept (`$n` placeholders, `RETURNING`, `ON CONFLICT`), and only the DDL
//! differs, as two embedded migration sets. Money is `i64` micro-USD, time `i64` Unix ms.
//!
//! Everything here is control plane: the data plane never calls the store; it reads a
//! snapshot that the server builds from [`Store::all_keys`] and patches from the change
//! feed ([`Store::changes_since`]).

mod audit;
mod billing;
mod changes;
mod invites;
mod keys;
mod migrate;
mod notifications;
mod prices;
mod routing;
mod settings;
mod tenancy;
mod usage;
mod usage_query;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditQuery, AuditRow};
pub use billing::{Counters, LedgerEntry, LedgerKind, LedgerQuery, OrgMoney};
pub use changes::{Change, Entity};
pub use invites::Invite;
pub use keys::{KeyListQuery, KeySort};
pub use notifications::{
    AlertableKey, DeliveryOutcome, DeliveryRow, DeliveryStatus, DueDelivery, NewNotification, NotificationRow,
};
pub use routing::{ChannelRecord, ModelRecord, ProviderRecord};
pub use tenancy::{Bootstrap, Session};
pub use usage_query::{
    BreakdownBy, BreakdownQuery, BreakdownRank, BreakdownRow, DailyQuery, DailyRow, UsageQuery, UsageRow, UsageScope,
    UsageStatus,
};

/// What can go wrong in the store, as callers need to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or failed; the caller may retry later.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A uniqueness rule was broken (detected by error kind, not constraint name).
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    /// A stored value that this version cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("unsupported database url (use sqlite:// or postgres://)")]
    UnsupportedUrl,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which engine is behind the pool; only migrations and locking differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `sqlite://…` or `postgres://…`. SQLite files are created if missing and
    /// run in WAL mode so that the CLI can write while a server reads.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool_options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(5));
        let pool_options = if backend == Backend::Sqlite {
            pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    let pragmas = format!(
                        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON;"
                    );
                    conn.execute(pragmas.as_str()).await?;
                    wal_mode(conn).await
                })
            })
        } else {
            pool_options
        };
        let pool = pool_options.connect_with(options).await?;
        Ok(Self { pool, backend })
    }

    /// The URL for the embedded database inside `data_dir`.
    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY` at once — `busy_timeout` cannot help — when another connection (the
    /// usage writer, say) committed in between, since a WAL read snapshot cannot be upgraded.
    /// An immediate one waits for the lock like any writer. PostgreSQL needs nothing special.
    pub(crate) async fn begin_write<'c>(
        &self,
        conn: &'c mut sqlx::AnyConnection,
    ) -> Result<sqlx::Transaction<'c, sqlx::Any>> {
        use sqlx::Connection as _;
        let statement = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        Ok(conn.begin_with(statement).await?)
    }

    /// Applies every embedded migration not yet applied. Safe to run from several
    /// processes at once.
    pub async fn migrate(&self) -> Result<()> {
        migrate::run(self).await
    }

    /// A trivial round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How long a SQLite statement waits for another connection's (or process's) write lock.
pub(crate) const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Puts a SQLite database in WAL mode (a no-op once it is). Switching needs an exclusive
/// lock, which `busy_timeout` usually waits for; but SQLite answers "locked" at once,
/// without waiting, when waiting could deadlock (two connections switching a new
/// database together), so a first start beside another process retries for a while.
async fn wal_mode(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    let deadline = std::time::Instant::now() + Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS.into());
    loop {
        let mode: Result<String, sqlx::Error> =
            sqlx::query_scalar("PRAGMA journal_mode = WAL").fetch_one(&mut *conn).await;
        let retry = match &mode {
            Ok(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
            // Not switched (another connection held the database): answered the old mode.
            Ok(_) => true,
            Err(sqlx::Error::Database(e)) => e.message().contains("locked") || e.message().contains("busy"),
            Err(_) => false,
        };
        if !retry || std::time::Instant::now() >= deadline {
            return match mode {
                Ok(m) => Err(sqlx::Error::Protocol(format!("the SQLite database stays in {m} journal mode, not WAL"))),
                Err(e) => Err(e),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Maps a unique-violation to [`StoreError::Conflict`], everything else to `Database`.
fn map_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Database(e),
    }
}

/// Integers leave SQL as `i64`; counts and tokens are never negative.
fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Runs one administrative statement (e.g. `CREATE DATABASE` for test isolation).
    /// Not for application data: every such query lives in its concern's module.
    pub async fn execute_admin(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }
}
