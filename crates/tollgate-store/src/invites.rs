//! Invitations to join an organization with a role (and optionally a team). The token is
//! stored only as its digest. Accepting one creates the user, their membership and team
//! membership and marks the invitation used, in one transaction that only one caller can
//! win: an invitation is used at most once, even by two sign-ups racing for it.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_core::audit::AuditEntry;
use tollgate_core::key::KeyDigest;
use tollgate_core::tenancy::{Role, User};

use crate::tenancy::{insert_membership, insert_user};
use crate::{Result, Store, StoreError, audit, map_unique};

/// A stored invitation. Pending while `accepted_at` is `None` and `expires_at` is ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct Invite {
    pub id: String,
    pub org_id: String,
    /// When set, only this (lower-cased) email may accept it.
    pub email: Option<String>,
    pub role: Role,
    pub team_id: Option<String>,
    pub digest: KeyDigest,
    /// The audit id of whoever invited (a user id, `admin-token` or `cli`).
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub accepted_by: Option<String>,
}

const COLUMNS: &str =
    "id, org_id, email, role, team_id, digest, created_by, created_at, expires_at, accepted_at, accepted_by";

impl Store {
    pub async fn insert_invite(&self, invite: &Invite, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query(&format!("INSERT INTO invites ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"))
            .bind(&invite.id)
            .bind(&invite.org_id)
            .bind(&invite.email)
            .bind(invite.role.as_str())
            .bind(&invite.team_id)
            .bind(invite.digest.0.to_vec())
            .bind(&invite.created_by)
            .bind(invite.created_at)
            .bind(invite.expires_at)
            .bind(invite.accepted_at)
            .bind(&invite.accepted_by)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The invitation with this token digest, used or not.
    pub async fn find_invite(&self, digest: &KeyDigest) -> Result<Invite> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM invites WHERE digest = $1"))
            .bind(digest.0.to_vec())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        invite_from_row(&row)
    }

    /// The organization's invitations not yet used and not expired at `now`, newest first.
    pub async fn list_pending_invites(&self, org_id: &str, now: i64) -> Result<Vec<Invite>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invites WHERE org_id = $1 AND accepted_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC, id"
        ))
        .bind(org_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invite_from_row).collect()
    }

    /// Deletes an unused invitation of `org_id` (revocation); a used or unknown one, or
    /// another organization's, is `NotFound`.
    pub async fn delete_invite(&self, org_id: &str, id: &str, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query("DELETE FROM invites WHERE id = $1 AND org_id = $2 AND accepted_at IS NULL")
            .bind(id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses the invitation `invite_id` for a new user, atomically: marks it accepted
    /// (only if still unused and unexpired at `user.created_at`), creates the user, the
    /// membership with the invitation's role and its team membership, and records
    /// `entry`. `NotFound` when the invitation is gone, used or expired; `Conflict` when
    /// the email is taken (the invitation stays unused).
    pub async fn accept_invite(
        &self,
        invite: &Invite,
        user: &User,
        password_hash: &str,
        entry: &AuditEntry,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let claimed = sqlx::query(
            "UPDATE invites SET accepted_at = $1, accepted_by = $2 \
             WHERE id = $3 AND accepted_at IS NULL AND expires_at > $1",
        )
        .bind(user.created_at)
        .bind(&user.id)
        .bind(&invite.id)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_user(&mut tx, user, password_hash).await?;
        insert_membership(&mut tx, &invite.org_id, &user.id, invite.role, user.created_at).await?;
        if let Some(team) = &invite.team_id {
            sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
                .bind(team)
                .bind(&user.id)
                .execute(&mut *tx)
                .await
                .map_err(map_unique)?;
        }
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn invite_from_row(r: &AnyRow) -> Result<Invite> {
    let role: String = r.try_get("role")?;
    let digest: Vec<u8> = r.try_get("digest")?;
    Ok(Invite {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        email: r.try_get("email")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("invite role {role}")))?,
        team_id: r.try_get("team_id")?,
        digest: KeyDigest::from_slice(&digest).ok_or_else(|| StoreError::Corrupt("invite digest length".into()))?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        accepted_at: r.try_get("accepted_at")?,
        accepted_by: r.try_get("accepted_by")?,
    })
}
