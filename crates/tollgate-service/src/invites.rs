//! The sign-up policy and invitations (PRODUCT §1). Owners and admins invite by email
//! with a role (`admin` or `member`; only owners invite admins) and optionally a team;
//! the token is shown once, stored as its digest, used at most once, and expires.
//!
//! Sign-up under each policy:
//! - `closed` (the default): no public sign-up, but invitations still work — an admin
//!   chose that person.
//! - `invite`: only with a valid invitation.
//! - `open`: without an invitation, the new user gets a workspace of their own (an
//!   organization with a `default` team) as its owner; with one, as under `invite`.
//!
//! Joining through an invitation puts the user in the invitation's organization with its
//! role and team. A sign-up ends in a session, exactly like a password sign-in.

use serde::Serialize;
use tollgate_core::ids::{new_id, random_base62};
use tollgate_core::key::KeyFormat;
use tollgate_core::tenancy::{Organization, Role, Team, TeamSettings, User};
use tollgate_core::time::{now_millis, to_rfc3339};
use tollgate_store::{Bootstrap, Invite, StoreError};

use crate::principal::{Actor, UserPrincipal};
use crate::tenancy::{MIN_PASSWORD, SESSION_TTL_MS, hash_password, normalize_email};
use crate::{Result, ServiceError, Services};

/// The prefix of invitation tokens: distinct from keys and access tokens.
pub const INVITE_PREFIX: &str = "tgi_";
/// Invitations last 7 days unless asked otherwise.
pub const DEFAULT_INVITE_TTL_HOURS: u32 = 7 * 24;
/// And at most 30 days.
pub const MAX_INVITE_TTL_HOURS: u32 = 30 * 24;

/// Who may create an account (`[auth] signup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignupPolicy {
    /// No public sign-up; invitations still work.
    #[default]
    Closed,
    /// Sign-up only with an invitation.
    Invite,
    /// Anyone may sign up and gets their own workspace; invitations work too.
    Open,
}

impl SignupPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "closed" => Self::Closed,
            "invite" => Self::Invite,
            "open" => Self::Open,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Invite => "invite",
            Self::Open => "open",
        }
    }

    /// Whether someone without an invitation may sign up.
    pub fn is_open(self) -> bool {
        self == Self::Open
    }
}

/// An invitation as the API shows it (never its token).
#[derive(Debug, Serialize)]
pub struct InviteView {
    pub id: String,
    pub org_id: String,
    pub email: Option<String>,
    pub role: Role,
    pub team_id: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<&Invite> for InviteView {
    fn from(i: &Invite) -> Self {
        Self {
            id: i.id.clone(),
            org_id: i.org_id.clone(),
            email: i.email.clone(),
            role: i.role,
            team_id: i.team_id.clone(),
            created_by: i.created_by.clone(),
            created_at: to_rfc3339(i.created_at),
            expires_at: to_rfc3339(i.expires_at),
        }
    }
}

/// What an inviter asks for.
#[derive(Debug, Clone)]
pub struct NewInvite {
    pub email: Option<String>,
    /// `admin` or `member`.
    pub role: Role,
    pub team_id: Option<String>,
    /// Default [`DEFAULT_INVITE_TTL_HOURS`], at most [`MAX_INVITE_TTL_HOURS`].
    pub ttl_hours: Option<u32>,
}

/// What someone signing up gives.
#[derive(Debug, Clone, Default)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    /// The new workspace's name (open sign-up without an invitation).
    pub name: Option<String>,
    /// An invitation token (`tgi_…`).
    pub invite: Option<String>,
}

/// What the sign-up page may show about an invitation to whoever holds its token.
#[derive(Debug, Clone, Serialize)]
pub struct InvitePreview {
    pub organization: String,
    pub email: Option<String>,
    pub role: Role,
}

/// A new account and its first session: the session secret (for the cookie), its CSRF
/// token, and the user acting in their organization.
pub struct SignedUp {
    pub session_secret: String,
    pub csrf: String,
    pub actor: Actor,
    pub email: String,
}

fn invite_format() -> KeyFormat {
    KeyFormat::new(INVITE_PREFIX).unwrap_or_default()
}

fn bad_invite() -> ServiceError {
    ServiceError::invalid("invite", "is not a valid invitation (unknown, expired, revoked or already used)")
}

impl Services {
    /// Creates an invitation in the actor's organization; returns it and its token
    /// (shown this once).
    pub async fn create_invite(&self, actor: &Actor, req: NewInvite) -> Result<(InviteView, String)> {
        let org_id = self.org_of(actor).await?;
        actor.require_manager(&org_id)?;
        if req.role == Role::Owner {
            return Err(ServiceError::invalid("role", "an invitation grants admin or member"));
        }
        actor.require_may_grant(req.role)?;
        let email = req.email.as_deref().map(str::trim).filter(|e| !e.is_empty()).map(normalize_email).transpose()?;
        if let Some(team_id) = &req.team_id
            && self.store.get_team(team_id).await?.org_id != org_id
        {
            return Err(ServiceError::NotFound);
        }
        let ttl = req.ttl_hours.unwrap_or(DEFAULT_INVITE_TTL_HOURS);
        if !(1..=MAX_INVITE_TTL_HOURS).contains(&ttl) {
            return Err(ServiceError::invalid("ttl_hours", format!("must be from 1 to {MAX_INVITE_TTL_HOURS}")));
        }
        let token = invite_format().generate();
        let now = now_millis();
        let invite = Invite {
            id: new_id("inv"),
            org_id,
            email,
            role: req.role,
            team_id: req.team_id,
            digest: self.digester.digest(&token),
            created_by: actor.id.clone(),
            created_at: now,
            expires_at: now + i64::from(ttl) * 3_600_000,
            accepted_at: None,
            accepted_by: None,
        };
        let view = InviteView::from(&invite);
        let entry = actor
            .audit(&invite.org_id, "invite.create", "invite", &invite.id)
            .with_after(serde_json::to_value(&view).ok());
        self.store.insert_invite(&invite, &entry).await?;
        Ok((view, token))
    }

    /// The organization's invitations not yet used nor expired, newest first.
    pub async fn list_invites(&self, actor: &Actor) -> Result<Vec<InviteView>> {
        let org_id = self.org_of(actor).await?;
        actor.require_manager(&org_id)?;
        Ok(self.store.list_pending_invites(&org_id, now_millis()).await?.iter().map(InviteView::from).collect())
    }

    /// Revokes (deletes) an unused invitation of the actor's organization.
    pub async fn revoke_invite(&self, actor: &Actor, id: &str) -> Result<()> {
        let org_id = self.org_of(actor).await?;
        actor.require_manager(&org_id)?;
        let entry = actor.audit(&org_id, "invite.revoke", "invite", id);
        Ok(self.store.delete_invite(&org_id, id, &entry).await?)
    }

    /// Creates an account under the sign-up policy and signs it in (see the module docs).
    /// An email already registered is `Conflict`; a bad invitation is invalid `invite`.
    pub async fn signup(&self, req: SignupRequest, source_ip: Option<String>) -> Result<SignedUp> {
        let email = normalize_email(&req.email)?;
        if req.password.chars().count() < MIN_PASSWORD {
            return Err(ServiceError::invalid("password", format!("must be at least {MIN_PASSWORD} characters")));
        }
        let token = req.invite.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let invite = match token {
            Some(t) => Some(self.live_invite(t).await?),
            None => None,
        };
        if invite.is_none() {
            match self.signup_policy {
                SignupPolicy::Closed => {
                    return Err(ServiceError::Forbidden(
                        "public sign-up is closed on this server; ask an administrator for an invitation",
                    ));
                }
                SignupPolicy::Invite => {
                    return Err(ServiceError::invalid(
                        "invite",
                        "is required: sign-up on this server is by invitation",
                    ));
                }
                SignupPolicy::Open => {}
            }
        }
        if let Some(wanted) = invite.as_ref().and_then(|i| i.email.as_deref())
            && wanted != email
        {
            return Err(ServiceError::invalid("email", "is not the email this invitation was sent to"));
        }
        let hash = hash_password(req.password).await?;
        let now = now_millis();
        let user = User { id: new_id("usr"), email, created_at: now };
        let org_id = match invite {
            Some(invite) => {
                let principal = UserPrincipal {
                    user_id: user.id.clone(),
                    org_id: invite.org_id.clone(),
                    role: invite.role,
                    team_ids: invite.team_id.iter().cloned().collect(),
                };
                let entry = Actor::user(principal, source_ip.clone())
                    .audit(&invite.org_id, "user.signup", "user", &user.id)
                    .with_after(Some(serde_json::json!({
                        "email": user.email, "role": invite.role, "team_id": invite.team_id, "invite_id": invite.id,
                    })));
                self.store.accept_invite(&invite, &user, &hash, &entry).await.map_err(|e| match e {
                    StoreError::NotFound => bad_invite(),
                    other => other.into(),
                })?;
                invite.org_id
            }
            None => self.create_own_workspace(&user, &hash, req.name.as_deref(), source_ip.clone()).await?,
        };
        let actor = self
            .user_actor(&user.id, &org_id, source_ip)
            .await?
            .ok_or(ServiceError::Internal("the new user has no membership"))?;
        let (session_secret, csrf) = self.start_session(&actor).await?;
        Ok(SignedUp { session_secret, csrf, actor, email: user.email })
    }

    /// The organization and role a live invitation offers; `None` for any other token.
    pub async fn describe_invite(&self, token: &str) -> Result<Option<InvitePreview>> {
        let invite = match self.live_invite(token.trim()).await {
            Ok(i) => i,
            Err(ServiceError::Invalid { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let orgs = self.store.list_organizations().await?;
        let organization = orgs.into_iter().find(|o| o.id == invite.org_id).map(|o| o.name).unwrap_or_default();
        Ok(Some(InvitePreview { organization, email: invite.email, role: invite.role }))
    }

    /// The unused, unexpired invitation with this token, else invalid `invite`.
    async fn live_invite(&self, token: &str) -> Result<Invite> {
        if !invite_format().is_well_formed(token) {
            return Err(bad_invite());
        }
        match self.store.find_invite(&self.digester.digest(token)).await {
            Ok(i) if i.accepted_at.is_none() && i.expires_at > now_millis() => Ok(i),
            Ok(_) | Err(StoreError::NotFound) => Err(bad_invite()),
            Err(e) => Err(e.into()),
        }
    }

    /// Open sign-up: a new organization with a `default` team, the user its owner.
    async fn create_own_workspace(
        &self,
        user: &User,
        hash: &str,
        name: Option<&str>,
        source_ip: Option<String>,
    ) -> Result<String> {
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) if n.chars().count() > 128 => {
                return Err(ServiceError::invalid("name", "must be 1-128 characters"));
            }
            Some(n) => n.to_owned(),
            None => format!("{}'s workspace", user.email.split('@').next().unwrap_or("My")),
        };
        let org = Organization { id: new_id("org"), name, created_at: user.created_at };
        let team = Team {
            id: new_id("team"),
            org_id: org.id.clone(),
            name: "default".into(),
            settings: TeamSettings::default(),
            created_at: user.created_at,
        };
        self.store
            .create_organization(&Bootstrap { org: &org, team: &team, owner: user, password_hash: hash }, false)
            .await?;
        let principal = UserPrincipal {
            user_id: user.id.clone(),
            org_id: org.id.clone(),
            role: Role::Owner,
            team_ids: vec![team.id.clone()],
        };
        let entry = Actor::user(principal, source_ip).audit(&org.id, "user.signup", "user", &user.id).with_after(Some(
            serde_json::json!({ "email": user.email, "role": Role::Owner, "organization": org.name, "team_id": team.id }),
        ));
        self.store.record_audit(&entry).await?;
        Ok(org.id)
    }

    /// A new dashboard session for a user actor: its secret (for the cookie) and CSRF token.
    async fn start_session(&self, actor: &Actor) -> Result<(String, String)> {
        let Some(u) = actor.user_principal() else { return Err(ServiceError::Internal("sessions are for users")) };
        let secret = random_base62(43);
        let now = now_millis();
        let session = tollgate_store::Session {
            user_id: u.user_id.clone(),
            org_id: u.org_id.clone(),
            csrf: random_base62(32),
            expires_at: now + SESSION_TTL_MS,
        };
        self.store.insert_session(&self.digester.digest(&secret), &session, now).await?;
        Ok((secret, session.csrf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_from_their_names_only() {
        for p in [SignupPolicy::Closed, SignupPolicy::Invite, SignupPolicy::Open] {
            assert_eq!(SignupPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(SignupPolicy::parse("Open"), None);
        assert_eq!(SignupPolicy::default(), SignupPolicy::Closed);
        assert!(SignupPolicy::Open.is_open() && !SignupPolicy::Invite.is_open());
    }

    #[test]
    fn invite_tokens_are_checked_before_any_lookup() {
        let token = invite_format().generate();
        assert!(token.starts_with(INVITE_PREFIX));
        assert!(invite_format().is_well_formed(&token));
        assert!(!invite_format().is_well_formed("tgi_nope"));
        assert!(!invite_format().is_well_formed(&token.replace(INVITE_PREFIX, "tgp_")));
    }
}
