//! Who is acting and what they may touch. The operator (the admin token, or the CLI run
//! by whoever holds the database) may do anything; a user acts within one organization
//! with a role. Rules (PRODUCT §1, §9): owners and admins manage the organization;
//! members manage only their own keys in their own teams. Objects the actor may not
//! see answer `NotFound`, never `Forbidden`, so that ids cannot be probed; fields the
//! actor may see but not set answer `Forbidden`.

use tollgate_core::audit::AuditEntry;
use tollgate_core::key::KeyRecord;
use tollgate_core::tenancy::Role;

use crate::{Result, ServiceError};

#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The admin token or the local CLI.
    Operator,
    User(UserPrincipal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserPrincipal {
    pub user_id: String,
    pub org_id: String,
    pub role: Role,
    pub team_ids: Vec<String>,
}

/// Who is acting (authorization) and where from (the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    pub principal: Principal,
    pub source_ip: Option<String>,
    /// As recorded in the audit log: `admin-token`, `cli`, or the user id.
    pub id: String,
}

impl Actor {
    pub fn cli() -> Self {
        Self { principal: Principal::Operator, source_ip: None, id: "cli".into() }
    }

    pub fn admin_token(source_ip: Option<String>) -> Self {
        Self { principal: Principal::Operator, source_ip, id: "admin-token".into() }
    }

    pub fn user(user: UserPrincipal, source_ip: Option<String>) -> Self {
        Self { id: user.user_id.clone(), principal: Principal::User(user), source_ip }
    }

    pub fn user_principal(&self) -> Option<&UserPrincipal> {
        match &self.principal {
            Principal::Operator => None,
            Principal::User(u) => Some(u),
        }
    }

    /// Operator, or an owner/admin of the organization.
    pub fn manages_org(&self, org_id: &str) -> bool {
        match &self.principal {
            Principal::Operator => true,
            Principal::User(u) => u.org_id == org_id && u.role.manages_org(),
        }
    }

    /// Whether the key exists for this actor at all.
    pub fn sees_key(&self, key: &KeyRecord) -> bool {
        match &self.principal {
            Principal::Operator => true,
            Principal::User(u) if u.org_id != key.org_id => false,
            Principal::User(u) => u.role.manages_org() || key.owner_id == u.user_id,
        }
    }

    /// `NotFound` unless the actor sees the key.
    pub fn check_sees_key(&self, key: &KeyRecord) -> Result<()> {
        if self.sees_key(key) { Ok(()) } else { Err(ServiceError::NotFound) }
    }

    /// An audit entry for an action of this actor on `target_id` in `org_id`, stamped now;
    /// add the object's state with `with_before` / `with_after` (never a secret).
    pub fn audit(&self, org_id: &str, action: &str, target_type: &str, target_id: &str) -> AuditEntry {
        AuditEntry {
            at: tollgate_core::time::now_millis(),
            actor: self.id.clone(),
            action: action.to_owned(),
            target_type: target_type.to_owned(),
            target_id: target_id.to_owned(),
            before: None,
            after: None,
            source_ip: self.source_ip.clone(),
            org_id: Some(org_id.to_owned()),
        }
    }

    /// The one rule for every path that grants a role (adding a member, inviting,
    /// changing a role): managers may grant `member`; only owners (and the operator) grant
    /// `admin` or `owner`, so that an admin cannot make another admin.
    pub fn require_may_grant(&self, role: Role) -> Result<()> {
        let owner = self.user_principal().is_none_or(|u| u.role == Role::Owner);
        match role {
            Role::Member => Ok(()),
            Role::Admin | Role::Owner if owner => Ok(()),
            Role::Admin => Err(ServiceError::Forbidden("only owners may grant the admin role")),
            Role::Owner => Err(ServiceError::Forbidden("only owners may grant the owner role")),
        }
    }

    /// Fails with `Forbidden` for anyone who does not manage the organization.
    pub fn require_manager(&self, org_id: &str) -> Result<()> {
        if self.manages_org(org_id) { Ok(()) } else { Err(ServiceError::Forbidden("requires the owner or admin role")) }
    }
}
