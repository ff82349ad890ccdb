//! Organizations, members, teams and personal access tokens, with their rules. Password
//! hashing (argon2id) runs on the blocking pool, never on the async threads.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Serialize;
use tollgate_core::ids::{new_id, random_base62};
use tollgate_core::key::{KeyFormat, parse_expires_in};
use tollgate_core::tenancy::{AccessToken, Organization, Role, Team, TeamSettings, User};
use tollgate_core::time::{now_millis, to_rfc3339};
use tollgate_store::{Bootstrap, StoreError};

use crate::principal::{Actor, Principal, UserPrincipal};
use crate::{Result, ServiceError, Services};

/// The prefix of personal access tokens: distinct from API keys so neither can be used
/// as the other.
pub const ACCESS_TOKEN_PREFIX: &str = "tgp_";
pub(crate) const MIN_PASSWORD: usize = 12;
/// Dashboard sessions last 12 hours.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub created_at: String,
}

/// An organization as the API shows it: times in RFC 3339, like every other view.
#[derive(Debug, Serialize)]
pub struct OrganizationView {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<&Organization> for OrganizationView {
    fn from(o: &Organization) -> Self {
        Self { id: o.id.clone(), name: o.name.clone(), created_at: to_rfc3339(o.created_at) }
    }
}

#[derive(Debug, Serialize)]
pub struct TeamView {
    pub id: String,
    /// The team's organization: the operator lists the teams of every organization.
    pub org_id: String,
    pub name: String,
    pub allowed_models: Vec<String>,
    pub budget_usd: Option<tollgate_core::MicroUsd>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub token_quota: Option<i64>,
    pub created_at: String,
}

/// Team fields as callers give them: `None` keeps, `Some(None)` clears.
#[derive(Debug, Clone, Default)]
pub struct TeamInput {
    pub name: Option<String>,
    pub allowed_models: Option<Vec<String>>,
    pub budget_usd: Option<Option<f64>>,
    pub rpm: Option<Option<i64>>,
    pub tpm: Option<Option<i64>>,
    pub token_quota: Option<Option<i64>>,
}

impl TeamInput {
    fn apply(self, team: &mut Team) -> Result<()> {
        if let Some(n) = self.name {
            let n = n.trim().to_owned();
            if n.is_empty() || n.len() > 64 {
                return Err(ServiceError::invalid("name", "must be 1-64 characters"));
            }
            team.name = n;
        }
        if let Some(m) = self.allowed_models {
            team.settings.allowed_models = clean_models(m)?;
        }
        if let Some(b) = self.budget_usd {
            team.settings.budget_micros = b
                .map(|usd| {
                    tollgate_core::MicroUsd::from_usd(usd)
                        .map(|m| m.0)
                        .map_err(|m| ServiceError::invalid("budget_usd", m))
                })
                .transpose()?;
        }
        for (field, input, slot) in [
            ("rpm", self.rpm, &mut team.settings.rpm),
            ("tpm", self.tpm, &mut team.settings.tpm),
            ("token_quota", self.token_quota, &mut team.settings.token_quota),
        ] {
            if let Some(v) = input {
                if v.is_some_and(|n| n < 1) {
                    return Err(ServiceError::invalid(field, "must be at least 1, or null for no limit"));
                }
                *slot = v;
            }
        }
        Ok(())
    }
}

impl From<&Team> for TeamView {
    fn from(t: &Team) -> Self {
        Self {
            id: t.id.clone(),
            org_id: t.org_id.clone(),
            name: t.name.clone(),
            allowed_models: t.settings.allowed_models.clone(),
            budget_usd: t.settings.budget_micros.map(tollgate_core::MicroUsd),
            rpm: t.settings.rpm,
            tpm: t.settings.tpm,
            token_quota: t.settings.token_quota,
            created_at: to_rfc3339(t.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub preview: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

impl From<&AccessToken> for TokenView {
    fn from(t: &AccessToken) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            preview: t.preview.clone(),
            created_at: to_rfc3339(t.created_at),
            expires_at: t.expires_at.map(to_rfc3339),
        }
    }
}

/// The caller as `GET /me` shows them.
#[derive(Debug, Serialize)]
pub struct MeView {
    pub actor: String,
    pub org_id: Option<String>,
    pub role: Option<Role>,
    pub team_ids: Vec<String>,
}

pub(crate) async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(|_| ServiceError::Internal("password hashing task failed"))?
    .map_err(|_| ServiceError::Internal("password hashing failed"))
}

pub(crate) async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

pub(crate) fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let valid =
        e.len() <= 254 && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if valid && !e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(e)
    } else {
        Err(ServiceError::invalid("email", "is not an email address"))
    }
}

impl Services {
    /// First start: one organization, a `default` team, and its owner. Returns the
    /// generated password when none was given (to be shown once), `None` otherwise or
    /// when the deployment was already bootstrapped.
    pub async fn bootstrap(&self, owner_email: &str, owner_password: Option<&str>) -> Result<Option<String>> {
        if !self.store.list_organizations().await?.is_empty() {
            return Ok(None);
        }
        let email = normalize_email(owner_email)?;
        let generated = owner_password.is_none().then(|| random_base62(20));
        let password = owner_password.map(str::to_owned).or_else(|| generated.clone()).unwrap_or_default();
        let hash = hash_password(password).await?;
        let now = now_millis();
        let org = Organization { id: new_id("org"), name: "Default".into(), created_at: now };
        let team = Team {
            id: new_id("team"),
            org_id: org.id.clone(),
            name: "default".into(),
            settings: TeamSettings::default(),
            created_at: now,
        };
        let owner = User { id: new_id("usr"), email, created_at: now };
        let ran =
            self.store.bootstrap(&Bootstrap { org: &org, team: &team, owner: &owner, password_hash: &hash }).await?;
        if ran {
            tracing::info!(org_id = %org.id, owner = %owner.email, "bootstrapped the first organization");
        }
        Ok(if ran { generated } else { None })
    }

    /// A new organization with a `default` team and its owner (operator only). Returns
    /// the organization and, when no password was given, the owner's generated one.
    pub async fn create_organization(
        &self,
        actor: &Actor,
        name: &str,
        owner_email: &str,
        owner_password: Option<String>,
    ) -> Result<(OrganizationView, Option<String>)> {
        if actor.user_principal().is_some() {
            return Err(ServiceError::Forbidden("only the operator creates organizations"));
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(ServiceError::invalid("name", "must be 1-128 characters"));
        }
        let email = normalize_email(owner_email)?;
        if let Some(p) = &owner_password
            && p.chars().count() < MIN_PASSWORD
        {
            return Err(ServiceError::invalid("owner_password", format!("must be at least {MIN_PASSWORD} characters")));
        }
        let generated = owner_password.is_none().then(|| random_base62(20));
        let hash = hash_password(owner_password.or_else(|| generated.clone()).unwrap_or_default()).await?;
        let now = now_millis();
        let org = Organization { id: new_id("org"), name: name.to_owned(), created_at: now };
        let team = Team {
            id: new_id("team"),
            org_id: org.id.clone(),
            name: "default".into(),
            settings: TeamSettings::default(),
            created_at: now,
        };
        let owner = User { id: new_id("usr"), email, created_at: now };
        self.store
            .create_organization(&Bootstrap { org: &org, team: &team, owner: &owner, password_hash: &hash }, false)
            .await?;
        Ok((OrganizationView::from(&org), generated))
    }

    /// The organization an actor works in: the user's own, or the first for the operator.
    pub async fn org_of(&self, actor: &Actor) -> Result<String> {
        match &actor.principal {
            Principal::User(u) => Ok(u.org_id.clone()),
            Principal::Operator => Ok(self.store.first_organization().await?.id),
        }
    }

    pub async fn list_organizations(&self, actor: &Actor) -> Result<Vec<OrganizationView>> {
        let all = self.store.list_organizations().await?;
        Ok(all
            .iter()
            .filter(|o| match &actor.principal {
                Principal::Operator => true,
                Principal::User(u) => o.id == u.org_id,
            })
            .map(OrganizationView::from)
            .collect())
    }

    pub async fn me(&self, actor: &Actor) -> MeView {
        match &actor.principal {
            Principal::Operator => MeView { actor: actor.id.clone(), org_id: None, role: None, team_ids: Vec::new() },
            Principal::User(u) => MeView {
                actor: u.user_id.clone(),
                org_id: Some(u.org_id.clone()),
                role: Some(u.role),
                team_ids: u.team_ids.clone(),
            },
        }
    }

    /// Adds a user to the actor's organization. Admins may add members; only owners (and
    /// the operator) may add admins and owners (see [`Actor::require_may_grant`]).
    /// Returns the generated password when none was given.
    pub async fn create_member(
        &self,
        actor: &Actor,
        email: &str,
        password: Option<String>,
        role: Role,
        team_ids: Vec<String>,
    ) -> Result<(MemberView, Option<String>)> {
        let org_id = self.org_of(actor).await?;
        actor.require_manager(&org_id)?;
        actor.require_may_grant(role)?;
        let email = normalize_email(email)?;
        if let Some(p) = &password
            && p.chars().count() < MIN_PASSWORD
        {
            return Err(ServiceError::invalid("password", format!("must be at least {MIN_PASSWORD} characters")));
        }
        for t in &team_ids {
            if self.store.get_team(t).await.map_err(ServiceError::from)?.org_id != org_id {
                return Err(ServiceError::NotFound);
            }
        }
        let generated = password.is_none().then(|| random_base62(20));
        let hash = hash_password(password.or_else(|| generated.clone()).unwrap_or_default()).await?;
        let user = User { id: new_id("usr"), email, created_at: now_millis() };
        let view = MemberView {
            id: user.id.clone(),
            email: user.email.clone(),
            role,
            created_at: to_rfc3339(user.created_at),
        };
        let entry =
            actor.audit(&org_id, "member.create", "user", &user.id).with_after(serde_json::to_value(&view).ok());
        self.store.insert_member(&user, &hash, &org_id, role, &team_ids, &entry).await?;
        Ok((view, generated))
    }

    pub async fn list_members(&self, actor: &Actor) -> Result<Vec<MemberView>> {
        let org_id = self.org_of(actor).await?;
        actor.require_manager(&org_id)?;
        Ok(self
            .store
            .list_members(&org_id)
            .await?
            .into_iter()
            .map(|(u, role)| MemberView { id: u.id, email: u.email, role, created_at: to_rfc3339(u.created_at) })
            .collect())
    }

    /// Changes a member's role: owners (and the operator) only. Demoting the last owner
    /// is refused as invalid input naming `role`.
    pub async fn set_role(&self, actor: &Actor, user_id: &str, role: Role) -> Result<()> {
        let org_id = self.org_of(actor).await?;
        actor.require_manager(&org_id)?;
        if actor.user_principal().is_some_and(|u| u.role != Role::Owner) {
            return Err(ServiceError::Forbidden("only owners may change roles"));
        }
        let members = self.store.list_members(&org_id).await?;
        let current = members.iter().find(|(u, _)| u.id == user_id).map(|(_, r)| *r).ok_or(ServiceError::NotFound)?;
        let owners = members.iter().filter(|(_, r)| *r == Role::Owner).count();
        if current == Role::Owner && role != Role::Owner && owners == 1 {
            return Err(ServiceError::invalid("role", "an organization needs at least one owner"));
        }
        let entry =
            actor.audit(&org_id, "member.role", "user", user_id).with_after(Some(serde_json::json!({ "role": role })));
        Ok(self.store.set_role(&org_id, user_id, role, &entry).await?)
    }

    pub async fn create_team(&self, actor: &Actor, input: TeamInput) -> Result<TeamView> {
        let org_id = self.org_of(actor).await?;
        actor.require_manager(&org_id)?;
        if input.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(ServiceError::invalid("name", "is required"));
        }
        let mut team = Team {
            id: new_id("team"),
            org_id,
            name: String::new(),
            settings: TeamSettings::default(),
            created_at: now_millis(),
        };
        input.apply(&mut team)?;
        let view = TeamView::from(&team);
        self.store
            .insert_team(
                &team,
                &actor
                    .audit(&team.org_id, "team.create", "team", &team.id)
                    .with_after(serde_json::to_value(&view).ok()),
            )
            .await?;
        Ok(view)
    }

    /// Teams the actor may see: all of the organization for managers, their own otherwise.
    pub async fn list_teams(&self, actor: &Actor) -> Result<Vec<TeamView>> {
        let teams = match &actor.principal {
            Principal::Operator => self.store.list_teams(None).await?,
            Principal::User(u) => self.store.list_teams(Some(&u.org_id)).await?,
        };
        Ok(teams.iter().filter(|t| self.sees_team(actor, t)).map(TeamView::from).collect())
    }

    fn sees_team(&self, actor: &Actor, team: &Team) -> bool {
        match &actor.principal {
            Principal::Operator => true,
            Principal::User(u) => u.org_id == team.org_id && (u.role.manages_org() || u.team_ids.contains(&team.id)),
        }
    }

    /// A team the actor may see, else `NotFound`.
    pub(crate) async fn visible_team(&self, actor: &Actor, id: &str) -> Result<Team> {
        let team = self.store.get_team(id).await?;
        if self.sees_team(actor, &team) { Ok(team) } else { Err(ServiceError::NotFound) }
    }

    pub async fn get_team(&self, actor: &Actor, id: &str) -> Result<TeamView> {
        Ok(TeamView::from(&self.visible_team(actor, id).await?))
    }

    pub async fn update_team(&self, actor: &Actor, id: &str, input: TeamInput) -> Result<TeamView> {
        let mut team = self.visible_team(actor, id).await?;
        actor.require_manager(&team.org_id)?;
        input.apply(&mut team)?;
        let view = TeamView::from(&team);
        self.store
            .update_team(
                &team,
                &actor.audit(&team.org_id, "team.update", "team", id).with_after(serde_json::to_value(&view).ok()),
            )
            .await?;
        Ok(view)
    }

    /// Adds or removes a member of a team (managers only; the user must be in the org).
    pub async fn set_team_member(&self, actor: &Actor, team_id: &str, user_id: &str, member: bool) -> Result<()> {
        let team = self.visible_team(actor, team_id).await?;
        actor.require_manager(&team.org_id)?;
        if self.store.role_of(&team.org_id, user_id).await?.is_none() {
            return Err(ServiceError::NotFound);
        }
        let action = if member { "team.member_add" } else { "team.member_remove" };
        let entry = actor
            .audit(&team.org_id, action, "team", team_id)
            .with_after(Some(serde_json::json!({ "user_id": user_id })));
        Ok(self.store.set_team_member(team_id, user_id, member, &entry).await?)
    }

    /// Mints a personal access token for the acting user (shown once).
    pub async fn create_access_token(
        &self,
        actor: &Actor,
        name: &str,
        expires_in: Option<&str>,
    ) -> Result<(TokenView, String)> {
        let Some(u) = actor.user_principal() else {
            return Err(ServiceError::invalid("actor", "the admin token cannot own access tokens; sign in as a user"));
        };
        let name = name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(ServiceError::invalid("name", "must be 1-128 characters"));
        }
        let now = now_millis();
        let expires_at = match expires_in {
            Some(p) => parse_expires_in(p).map_err(|m| ServiceError::invalid("expires_in", m))?.map(|d| now + d),
            None => None,
        };
        let format = token_format();
        let secret = format.generate();
        let token = AccessToken {
            id: new_id("pat"),
            user_id: u.user_id.clone(),
            org_id: u.org_id.clone(),
            name: name.to_owned(),
            digest: self.digester.digest(&secret),
            preview: format.preview(&secret),
            created_at: now,
            expires_at,
            last_used_at: None,
        };
        let view = TokenView::from(&token);
        self.store
            .insert_access_token(
                &token,
                &actor
                    .audit(&token.org_id, "token.create", "token", &token.id)
                    .with_after(serde_json::to_value(&view).ok()),
            )
            .await?;
        Ok((view, secret))
    }

    pub async fn list_access_tokens(&self, actor: &Actor) -> Result<Vec<TokenView>> {
        let Some(u) = actor.user_principal() else { return Ok(Vec::new()) };
        Ok(self.store.list_access_tokens(&u.user_id).await?.iter().map(TokenView::from).collect())
    }

    pub async fn delete_access_token(&self, actor: &Actor, id: &str) -> Result<()> {
        let Some(u) = actor.user_principal() else { return Err(ServiceError::NotFound) };
        let entry = actor.audit(&u.org_id, "token.delete", "token", id);
        Ok(self.store.delete_access_token(&u.user_id, id, &entry).await?)
    }

    /// The user behind a personal access token, with their current role and teams;
    /// `None` for anything that is not a live token.
    pub async fn authenticate_access_token(&self, secret: &str, source_ip: Option<String>) -> Result<Option<Actor>> {
        if !token_format().is_well_formed(secret) {
            return Ok(None);
        }
        let token = match self.store.find_access_token(&self.digester.digest(secret)).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if token.expires_at.is_some_and(|e| e <= now_millis()) {
            return Ok(None);
        }
        self.user_actor(&token.user_id, &token.org_id, source_ip).await
    }

    /// Checks an email and password; the actor for that user in their first organization.
    pub async fn authenticate_password(
        &self,
        email: &str,
        password: &str,
        source_ip: Option<String>,
    ) -> Result<Option<Actor>> {
        let Ok(email) = normalize_email(email) else { return Ok(None) };
        let (user, hash) = match self.store.find_user_by_email(&email).await {
            Ok(found) => found,
            Err(StoreError::NotFound) => {
                // Spend the same work as a real check so timing does not reveal accounts.
                let _ = hash_password(password.to_owned()).await;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if !verify_password(password.to_owned(), hash).await {
            return Ok(None);
        }
        let org = self.store.list_organizations().await?;
        for o in org {
            if let Some(actor) = self.user_actor(&user.id, &o.id, source_ip.clone()).await? {
                return Ok(Some(actor));
            }
        }
        Ok(None)
    }

    /// Signs a user in: a new session secret (for the cookie) and its CSRF token.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        source_ip: Option<String>,
    ) -> Result<Option<(String, String, Actor)>> {
        let Some(actor) = self.authenticate_password(email, password, source_ip).await? else { return Ok(None) };
        let Some(u) = actor.user_principal() else { return Ok(None) };
        let secret = random_base62(43);
        let now = now_millis();
        let session = tollgate_store::Session {
            user_id: u.user_id.clone(),
            org_id: u.org_id.clone(),
            csrf: random_base62(32),
            expires_at: now + SESSION_TTL_MS,
        };
        self.store.insert_session(&self.digester.digest(&secret), &session, now).await?;
        let entry = actor.audit(&u.org_id, "session.login", "user", &u.user_id);
        self.store.record_audit(&entry).await?;
        Ok(Some((secret, session.csrf, actor)))
    }

    /// The actor and CSRF token of a live session.
    pub async fn session_actor(&self, secret: &str, source_ip: Option<String>) -> Result<Option<(Actor, String)>> {
        if secret.is_empty() || secret.len() > 128 {
            return Ok(None);
        }
        let session = match self.store.find_session(&self.digester.digest(secret)).await {
            Ok(s) if s.expires_at > now_millis() => s,
            Ok(_) | Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(self.user_actor(&session.user_id, &session.org_id, source_ip).await?.map(|a| (a, session.csrf)))
    }

    pub async fn logout(&self, secret: &str) -> Result<()> {
        Ok(self.store.delete_session(&self.digester.digest(secret)).await?)
    }

    /// Changes the acting user's password (the current one is required) and ends all
    /// of their sessions.
    pub async fn change_password(&self, actor: &Actor, current: String, new: String) -> Result<()> {
        let Some(u) = actor.user_principal() else {
            return Err(ServiceError::invalid("actor", "only users have passwords"));
        };
        if new.chars().count() < MIN_PASSWORD {
            return Err(ServiceError::invalid("new_password", format!("must be at least {MIN_PASSWORD} characters")));
        }
        if !self.check_password(&u.user_id, current).await? {
            return Err(ServiceError::Forbidden("the current password is wrong"));
        }
        let hash = hash_password(new).await?;
        let entry = actor.audit(&u.org_id, "user.password", "user", &u.user_id);
        Ok(self.store.set_password(&u.user_id, &hash, &entry).await?)
    }

    /// Whether `password` is the signed-in user's own (a dashboard action that asks for it
    /// again, such as a rotation). An actor that is no user has no password to give.
    pub async fn confirms_password(&self, actor: &Actor, password: String) -> Result<bool> {
        match actor.user_principal() {
            Some(u) => self.check_password(&u.user_id, password).await,
            None => Ok(false),
        }
    }

    /// Whether `password` is the user's.
    pub(crate) async fn check_password(&self, user_id: &str, password: String) -> Result<bool> {
        let hash = self.store.password_hash(user_id).await?;
        Ok(verify_password(password, hash).await)
    }

    pub(crate) async fn user_actor(
        &self,
        user_id: &str,
        org_id: &str,
        source_ip: Option<String>,
    ) -> Result<Option<Actor>> {
        let Some(role) = self.store.role_of(org_id, user_id).await? else { return Ok(None) };
        let team_ids = self.store.teams_of(user_id).await?;
        let principal = UserPrincipal { user_id: user_id.to_owned(), org_id: org_id.to_owned(), role, team_ids };
        Ok(Some(Actor::user(principal, source_ip)))
    }
}

fn token_format() -> KeyFormat {
    KeyFormat::new(ACCESS_TOKEN_PREFIX).unwrap_or_default()
}

fn clean_models(models: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for m in models {
        let m = m.trim().to_owned();
        if m.is_empty() || m.len() > 256 {
            return Err(ServiceError::invalid("allowed_models", "entries are 1-256 characters"));
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}
