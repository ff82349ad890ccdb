//! Embedded migrations, one ordered list per backend, applied at start and by
//! `tollgate migrate`. A version once released is never edited; changes are new files.

use crate::{Backend, Result, Store};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "key_settings_audit",
        sqlite: include_str!("../migrations/sqlite/0002_key_settings_audit.sql"),
        postgres: include_str!("../migrations/postgres/0002_key_settings_audit.sql"),
    },
    Migration {
        version: 3,
        name: "tenancy",
        sqlite: include_str!("../migrations/sqlite/0003_tenancy.sql"),
        postgres: include_str!("../migrations/postgres/0003_tenancy.sql"),
    },
    Migration {
        version: 4,
        name: "reveal_sessions",
        sqlite: include_str!("../migrations/sqlite/0004_reveal_sessions.sql"),
        postgres: include_str!("../migrations/postgres/0004_reveal_sessions.sql"),
    },
    Migration {
        version: 5,
        name: "metering",
        sqlite: include_str!("../migrations/sqlite/0005_metering.sql"),
        postgres: include_str!("../migrations/postgres/0005_metering.sql"),
    },
    Migration {
        version: 6,
        name: "usage_filters",
        sqlite: include_str!("../migrations/sqlite/0006_usage_filters.sql"),
        postgres: include_str!("../migrations/postgres/0006_usage_filters.sql"),
    },
    Migration {
        version: 7,
        name: "notifications",
        sqlite: include_str!("../migrations/sqlite/0007_notifications.sql"),
        postgres: include_str!("../migrations/postgres/0007_notifications.sql"),
    },
    Migration {
        version: 8,
        name: "model_prices",
        sqlite: include_str!("../migrations/sqlite/0008_model_prices.sql"),
        postgres: include_str!("../migrations/postgres/0008_model_prices.sql"),
    },
    Migration {
        version: 9,
        name: "routing",
        sqlite: include_str!("../migrations/sqlite/0009_routing.sql"),
        postgres: include_str!("../migrations/postgres/0009_routing.sql"),
    },
    Migration {
        version: 10,
        name: "invites",
        sqlite: include_str!("../migrations/sqlite/0010_invites.sql"),
        postgres: include_str!("../migrations/postgres/0010_invites.sql"),
    },
    Migration {
        version: 11,
        name: "usage_attempts",
        sqlite: include_str!("../migrations/sqlite/0011_usage_attempts.sql"),
        postgres: include_str!("../migrations/postgres/0011_usage_attempts.sql"),
    },
    Migration {
        version: 12,
        name: "hostile_traffic",
        sqlite: include_str!("../migrations/sqlite/0012_hostile_traffic.sql"),
        postgres: include_str!("../migrations/postgres/0012_hostile_traffic.sql"),
    },
];

/// An arbitrary constant: the advisory lock that serializes migrations on PostgreSQL.
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// How long a SQLite migration waits for another process's migration (or any writer) to
/// let go of the write lock: long enough for a slow migration of a large database.
const SQLITE_MIGRATION_BUSY_TIMEOUT_MS: u32 = 300_000;

/// Applies the pending migrations, each in its own transaction, safely when several
/// processes (a server and the CLI, replicas) start at once: PostgreSQL serializes them
/// with an advisory lock; SQLite by taking the write lock (`BEGIN IMMEDIATE`) before
/// reading `schema_migrations`, so that no two processes read the same pending version.
pub(crate) async fn run(store: &Store) -> Result<()> {
    let mut conn = store.pool.acquire().await?;
    match store.backend {
        Backend::Postgres => {
            sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
            let result = apply_pending(store, &mut conn).await;
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
            result
        }
        Backend::Sqlite => {
            let wait = format!("PRAGMA busy_timeout = {SQLITE_MIGRATION_BUSY_TIMEOUT_MS}");
            sqlx::raw_sql(&wait).execute(&mut *conn).await?;
            let result = apply_pending(store, &mut conn).await;
            let restore = format!("PRAGMA busy_timeout = {}", crate::SQLITE_BUSY_TIMEOUT_MS);
            sqlx::raw_sql(&restore).execute(&mut *conn).await?;
            result
        }
    }
}

async fn apply_pending(store: &Store, conn: &mut sqlx::AnyConnection) -> Result<()> {
    loop {
        // On SQLite an immediate transaction: the write lock is held before the read below.
        let mut tx = store.begin_write(conn).await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        // Read under the lock: what another process applied meanwhile is seen here.
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *tx).await?;
        let Some(m) = MIGRATIONS.iter().find(|m| !applied.contains(&m.version)) else {
            tx.commit().await?;
            return Ok(());
        };
        let sql = match store.backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(tollgate_core::time::now_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
}
