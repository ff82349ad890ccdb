//! Model prices set through the management API. They override the config file's prices
//! for their model until deleted; every change reaches the data planes through the
//! change feed (entity `model`) and is audited in the same transaction.

use sqlx::Row;
use tollgate_core::MicroUsd;
use tollgate_core::audit::AuditEntry;
use tollgate_core::money::Pricing;

use crate::changes::{self, Entity};
use crate::{Result, Store, audit};

impl Store {
    /// Every price override, by model id.
    pub async fn model_prices(&self) -> Result<Vec<(String, Pricing)>> {
        let rows = sqlx::query(
            "SELECT model_id, input_micros_per_mtok, output_micros_per_mtok, per_image_micros FROM model_prices \
             ORDER BY model_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    Pricing {
                        input_per_mtok: MicroUsd(r.try_get(1)?),
                        output_per_mtok: MicroUsd(r.try_get(2)?),
                        per_image: MicroUsd(r.try_get(3)?),
                    },
                ))
            })
            .collect()
    }

    /// Sets (`Some`) or removes (`None`) the override of `model_id`.
    pub async fn set_model_price(&self, model_id: &str, pricing: Option<Pricing>, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        match pricing {
            Some(p) => {
                sqlx::query(
                    "INSERT INTO model_prices (model_id, input_micros_per_mtok, output_micros_per_mtok, \
                     per_image_micros, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model_id) DO UPDATE SET \
                     input_micros_per_mtok = excluded.input_micros_per_mtok, \
                     output_micros_per_mtok = excluded.output_micros_per_mtok, \
                     per_image_micros = excluded.per_image_micros, updated_at = excluded.updated_at",
                )
                .bind(model_id)
                .bind(p.input_per_mtok.0)
                .bind(p.output_per_mtok.0)
                .bind(p.per_image.0)
                .bind(tollgate_core::time::now_millis())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM model_prices WHERE model_id = $1").bind(model_id).execute(&mut *tx).await?;
            }
        }
        changes::record(self.backend, &mut tx, Entity::Model, model_id).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}
