//! Organizations, users, memberships, teams and personal access tokens. Team changes
//! go through the change feed (the data plane enforces a team's allowed models).

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_core::audit::AuditEntry;
use tollgate_core::key::KeyDigest;
use tollgate_core::tenancy::{AccessToken, Organization, Role, Team, TeamSettings, User};

use crate::changes::{self, Entity};
use crate::{Backend, Result, Store, StoreError, audit, map_unique};

/// What the first start creates: one organization, its default team, its owner.
pub struct Bootstrap<'a> {
    pub org: &'a Organization,
    pub team: &'a Team,
    pub owner: &'a User,
    pub password_hash: &'a str,
}

const BOOTSTRAP_LOCK: i64 = 0x0074_676f_7267_0001;

impl Store {
    /// Creates the first organization, team and owner if no organization exists, and
    /// gives every key without one the default team and owner. Returns whether it ran.
    pub async fn bootstrap(&self, b: &Bootstrap<'_>) -> Result<bool> {
        self.create_organization(b, true).await
    }

    /// Creates an organization with its default team and owner, atomically. With
    /// `only_if_first`, does nothing (and returns false) if any organization exists.
    pub async fn create_organization(&self, b: &Bootstrap<'_>, only_if_first: bool) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(BOOTSTRAP_LOCK).execute(&mut *tx).await?;
        }
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations").fetch_one(&mut *tx).await?;
        if only_if_first && existing > 0 {
            return Ok(false);
        }
        insert_org(&mut tx, b.org).await?;
        insert_user(&mut tx, b.owner, b.password_hash).await?;
        insert_membership(&mut tx, &b.org.id, &b.owner.id, Role::Owner, b.org.created_at).await?;
        insert_team(&mut tx, b.team).await?;
        sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
            .bind(&b.team.id)
            .bind(&b.owner.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE api_keys SET org_id = $1, team_id = $2, owner_id = $3 WHERE org_id IS NULL")
            .bind(&b.org.id)
            .bind(&b.team.id)
            .bind(&b.owner.id)
            .execute(&mut *tx)
            .await?;
        changes::record(self.backend, &mut tx, Entity::Team, &b.team.id).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn insert_organization(&self, org: &Organization, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        insert_org(&mut tx, org).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM organizations ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(org_from_row).collect()
    }

    /// The first organization (the default for the admin token and the CLI).
    pub async fn first_organization(&self) -> Result<Organization> {
        self.list_organizations().await?.into_iter().next().ok_or(StoreError::NotFound)
    }

    /// Creates a user with a membership (and team memberships), atomically.
    pub async fn insert_member(
        &self,
        user: &User,
        password_hash: &str,
        org_id: &str,
        role: Role,
        team_ids: &[String],
        entry: &AuditEntry,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        insert_user(&mut tx, user, password_hash).await?;
        insert_membership(&mut tx, org_id, &user.id, role, user.created_at).await?;
        for t in team_ids {
            sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
                .bind(t)
                .bind(&user.id)
                .execute(&mut *tx)
                .await
                .map_err(map_unique)?;
        }
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_user(&self, id: &str) -> Result<User> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    /// The password hash of a user.
    pub async fn password_hash(&self, user_id: &str) -> Result<String> {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// The user with this (lower-cased) email and their password hash.
    pub async fn find_user_by_email(&self, email: &str) -> Result<(User, String)> {
        let row = sqlx::query("SELECT id, email, created_at, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok((user_from_row(&row)?, row.try_get("password_hash")?))
    }

    /// The role of `user_id` in `org_id`, if a member.
    pub async fn role_of(&self, org_id: &str, user_id: &str) -> Result<Option<Role>> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        role.map(|r| Role::parse(&r).ok_or_else(|| StoreError::Corrupt(format!("role {r}")))).transpose()
    }

    /// Members of an organization with their roles, by email.
    pub async fn list_members(&self, org_id: &str) -> Result<Vec<(User, Role)>> {
        let rows = sqlx::query(
            "SELECT u.id, u.email, u.created_at, m.role FROM users u JOIN memberships m ON m.user_id = u.id \
             WHERE m.org_id = $1 ORDER BY u.email",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok((user_from_row(r)?, Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?))
            })
            .collect()
    }

    pub async fn set_role(&self, org_id: &str, user_id: &str, role: Role, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
            .bind(role.as_str())
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_team(&self, team: &Team, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        insert_team(&mut tx, team).await?;
        changes::record(self.backend, &mut tx, Entity::Team, &team.id).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_team(&self, team: &Team, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query("UPDATE teams SET name = $1, settings = $2 WHERE id = $3")
            .bind(&team.name)
            .bind(team_settings_json(&team.settings)?)
            .bind(&team.id)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        changes::record(self.backend, &mut tx, Entity::Team, &team.id).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_team(&self, id: &str) -> Result<Team> {
        let row = sqlx::query("SELECT id, org_id, name, settings, created_at FROM teams WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        team_from_row(&row)
    }

    pub async fn list_teams(&self, org_id: Option<&str>) -> Result<Vec<Team>> {
        let rows = match org_id {
            Some(org) => {
                sqlx::query("SELECT id, org_id, name, settings, created_at FROM teams WHERE org_id = $1 ORDER BY name")
                    .bind(org)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT id, org_id, name, settings, created_at FROM teams ORDER BY org_id, name")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(team_from_row).collect()
    }

    /// Adds (`true`) or removes (`false`) a team member.
    pub async fn set_team_member(&self, team_id: &str, user_id: &str, member: bool, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        if member {
            sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(team_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ids of the teams `user_id` belongs to.
    pub async fn teams_of(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT team_id FROM team_members WHERE user_id = $1 ORDER BY team_id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn insert_access_token(&self, t: &AccessToken, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query(
            "INSERT INTO access_tokens (id, user_id, org_id, name, digest, preview, created_at, expires_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.org_id)
        .bind(&t.name)
        .bind(t.digest.0.to_vec())
        .bind(&t.preview)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.last_used_at)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn find_access_token(&self, digest: &KeyDigest) -> Result<AccessToken> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE digest = $1"))
            .bind(digest.0.to_vec())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        token_from_row(&row)
    }

    pub async fn list_access_tokens(&self, user_id: &str) -> Result<Vec<AccessToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Deletes `user_id`'s token `id` (another user's token is `NotFound`).
    pub async fn delete_access_token(&self, user_id: &str, id: &str, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let done = sqlx::query("DELETE FROM access_tokens WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A signed-in dashboard session (stored by digest, like every secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user_id: String,
    pub org_id: String,
    pub csrf: String,
    pub expires_at: i64,
}

impl Store {
    pub async fn insert_session(&self, digest: &KeyDigest, s: &Session, created_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (digest, user_id, org_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(digest.0.to_vec())
        .bind(&s.user_id)
        .bind(&s.org_id)
        .bind(&s.csrf)
        .bind(created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn find_session(&self, digest: &KeyDigest) -> Result<Session> {
        let row = sqlx::query("SELECT user_id, org_id, csrf, expires_at FROM sessions WHERE digest = $1")
            .bind(digest.0.to_vec())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Session {
            user_id: row.try_get("user_id")?,
            org_id: row.try_get("org_id")?,
            csrf: row.try_get("csrf")?,
            expires_at: row.try_get("expires_at")?,
        })
    }

    pub async fn delete_session(&self, digest: &KeyDigest) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE digest = $1").bind(digest.0.to_vec()).execute(&self.pool).await?;
        Ok(())
    }

    /// Sets a new password hash and ends every session of the user, atomically.
    pub async fn set_password(&self, user_id: &str, hash: &str, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

const TOKEN_COLUMNS: &str = "id, user_id, org_id, name, digest, preview, created_at, expires_at, last_used_at";

async fn insert_org(tx: &mut sqlx::AnyConnection, org: &Organization) -> Result<()> {
    sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
    Ok(())
}

pub(crate) async fn insert_user(tx: &mut sqlx::AnyConnection, user: &User, password_hash: &str) -> Result<()> {
    sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&user.id)
        .bind(&user.email)
        .bind(password_hash)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
    Ok(())
}

pub(crate) async fn insert_membership(
    tx: &mut sqlx::AnyConnection,
    org: &str,
    user: &str,
    role: Role,
    at: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(org)
        .bind(user)
        .bind(role.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
    Ok(())
}

async fn insert_team(tx: &mut sqlx::AnyConnection, team: &Team) -> Result<()> {
    sqlx::query("INSERT INTO teams (id, org_id, name, settings, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&team.id)
        .bind(&team.org_id)
        .bind(&team.name)
        .bind(team_settings_json(&team.settings)?)
        .bind(team.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
    Ok(())
}

fn team_settings_json(s: &TeamSettings) -> Result<String> {
    serde_json::to_string(s).map_err(|e| StoreError::Corrupt(format!("team settings: {e}")))
}

fn org_from_row(r: &AnyRow) -> Result<Organization> {
    Ok(Organization { id: r.try_get("id")?, name: r.try_get("name")?, created_at: r.try_get("created_at")? })
}

fn user_from_row(r: &AnyRow) -> Result<User> {
    Ok(User { id: r.try_get("id")?, email: r.try_get("email")?, created_at: r.try_get("created_at")? })
}

fn team_from_row(r: &AnyRow) -> Result<Team> {
    let settings: String = r.try_get("settings")?;
    Ok(Team {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        settings: serde_json::from_str(&settings).map_err(|e| StoreError::Corrupt(format!("team settings: {e}")))?,
        created_at: r.try_get("created_at")?,
    })
}

fn token_from_row(r: &AnyRow) -> Result<AccessToken> {
    let digest: Vec<u8> = r.try_get("digest")?;
    Ok(AccessToken {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        digest: KeyDigest::from_slice(&digest).ok_or_else(|| StoreError::Corrupt("token digest length".into()))?,
        preview: r.try_get("preview")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}
