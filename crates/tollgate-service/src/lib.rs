//! Tollgate's service layer: the rules around every mutation, shared by the management
//! API, the CLI and (later) the dashboard, so that each of them behaves the same. It
//! validates input, mints secrets, and calls the store; it knows nothing of HTTP.

mod audit;
mod auth_failures;
mod billing;
mod ephemeral;
mod invites;
mod keys;
mod models;
mod principal;
mod reveal;
mod routing;
mod settings;
mod tenancy;
mod usage;

use tollgate_core::key::{Digester, KeyFormat};
use tollgate_store::{Store, StoreError};

pub use audit::{AuditEntryView, AuditPage, ListAudit};
pub use auth_failures::{AuthFailureView, ListAuthFailures, MAX_AUTH_FAILURE_ROWS};
pub use billing::{BillingSummary, Credit, LedgerView};
pub use ephemeral::{DEFAULT_EPHEMERAL_TTL_SECS, EphemeralRequest, EphemeralToken, MAX_EPHEMERAL_TTL_SECS};
pub use invites::{
    DEFAULT_INVITE_TTL_HOURS, INVITE_PREFIX, InvitePreview, InviteView, MAX_INVITE_TTL_HOURS, NewInvite, SignedUp,
    SignupPolicy, SignupRequest,
};
pub use keys::{CreatedKey, KeyList, KeyPatch, KeyView, ListKeys, MAX_ROTATION_GRACE_SECS, NewKey};
pub use models::{CatalogModel, ModelView, PriceInput};
pub use principal::{Actor, Principal, UserPrincipal};
pub use reveal::Sealer;
pub use routing::{
    ChannelInput, ChannelPatch, ChannelView, ChannelsOfModel, ModelInput, ProviderInput, ProviderPatch, ProviderView,
    RoutingRules, RoutingSetup,
};
pub use settings::SettingsInput;
pub use tenancy::{
    ACCESS_TOKEN_PREFIX, MeView, MemberView, OrganizationView, SESSION_TTL_MS, TeamInput, TeamView, TokenView,
};
pub use usage::{
    BreakdownView, CSV_COLUMNS, DailyUsage, DailyView, ListUsage, MAX_BREAKDOWN, MAX_DAILY_DAYS, UsageBreakdown,
    UsageCsv, UsageFilters, UsagePage, UsageView,
};

/// What a service call can fail with. Each variant maps to one HTTP status in the API and
/// one exit message in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input; names the field.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("not found")]
    NotFound,
    /// Authenticated but not allowed; says what is missing.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A failure with no better name (e.g. a blocking task died); logged, never shown.
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("conflicts with an existing object")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict => Self::Conflict,
            other => Self::Store(other),
        }
    }
}

impl ServiceError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// One page of a listing, with the cursor of the next (`None` on the last page).
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The largest page any listing returns.
pub const MAX_PAGE: i64 = 1000;

/// A caller's `limit`, defaulting to 100, within 1..=[`MAX_PAGE`].
pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64> {
    let limit = limit.unwrap_or(100);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ServiceError::invalid("limit", format!("must be between 1 and {MAX_PAGE}")))
    }
}

/// The services, over one store. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub key_format: KeyFormat,
    pub digester: Digester,
    /// Present when `keys.reveal = true`.
    pub sealer: Option<std::sync::Arc<Sealer>>,
    /// The models the config declares, with their base prices.
    pub catalog: std::sync::Arc<Vec<CatalogModel>>,
    /// Who may create an account (`[auth] signup`); `closed` unless set.
    pub signup_policy: SignupPolicy,
    /// The config's routing and the rules for managed routing (set by the server).
    pub routing: Option<std::sync::Arc<routing::RoutingSetup>>,
}

impl Services {
    pub fn new(store: Store, key_format: KeyFormat, digester: Digester) -> Self {
        Self {
            store,
            key_format,
            digester,
            sealer: None,
            catalog: Default::default(),
            signup_policy: SignupPolicy::Closed,
            routing: None,
        }
    }

    /// Sets the sign-up policy.
    pub fn with_signup_policy(mut self, policy: SignupPolicy) -> Self {
        self.signup_policy = policy;
        self
    }

    /// Turns reveal on: secrets minted from now on are also stored sealed.
    pub fn with_reveal(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(std::sync::Arc::new(sealer));
        self
    }
}
