//! Organizations, users, memberships with roles, teams, personal access tokens: who
//! exists and who may manage what. The rules that use them live in the service layer.

use serde::{Deserialize, Serialize};

use crate::key::KeyDigest;
use crate::time::UnixMillis;

/// A member's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "member" => Self::Member,
            "admin" => Self::Admin,
            "owner" => Self::Owner,
            _ => return None,
        })
    }

    /// Owners and admins manage the organization; members manage their own keys.
    pub fn manages_org(self) -> bool {
        self >= Self::Admin
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_at: UnixMillis,
}

/// A user (the password hash stays in the store layer's own type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub created_at: UnixMillis,
}

/// A team's own rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TeamSettings {
    /// Empty: every model the organization serves.
    pub allowed_models: Vec<String>,
    /// Team-wide limits (pools shared by the team's keys, enforced by metering). No key
    /// of the team may be given a larger limit of its own.
    pub budget_micros: Option<i64>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub token_quota: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Team {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub settings: TeamSettings,
    pub created_at: UnixMillis,
}

/// A personal access token for the management API (stored as a digest, like keys).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken {
    pub id: String,
    pub user_id: String,
    pub org_id: String,
    pub name: String,
    pub digest: KeyDigest,
    pub preview: String,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
}
