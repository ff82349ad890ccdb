//! Deployment settings: facts that every instance on one database must agree on (such as
//! the pepper's fingerprint), one row per name. A setting is written once, by the first
//! instance that needs it; the others read and compare. Nothing here is secret.

use crate::{Result, Store};

impl Store {
    /// The stored value of setting `name`, after storing `value` if none was: the first
    /// writer wins, atomically, however many instances start at once.
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query("INSERT INTO deployment_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let stored: String = sqlx::query_scalar("SELECT value FROM deployment_settings WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The value of setting `name`, if one is stored.
    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM deployment_settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }
}
