//! `[auth]`: who may create an account. `signup = "closed"` (the default: no public
//! sign-up, invitations still work), `"invite"` (only with an invitation) or `"open"`
//! (anyone; without an invitation they get a workspace of their own).
//! `TOLLGATE_AUTH__SIGNUP` overrides it.

use serde::{Deserialize, Serialize};
use tollgate_service::SignupPolicy;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// `closed`, `invite` or `open`.
    pub signup: String,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self { signup: SignupPolicy::Closed.as_str().into() }
    }
}

/// The validated sign-up policy; an unknown value is an error naming the field.
pub(super) fn signup_policy(raw: &RawAuth, errors: &mut Vec<String>) -> SignupPolicy {
    SignupPolicy::parse(raw.signup.trim()).unwrap_or_else(|| {
        errors.push(format!("auth.signup: must be \"closed\", \"invite\" or \"open\", got {:?}", raw.signup));
        SignupPolicy::Closed
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Credentials, load};
    use tollgate_service::SignupPolicy;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn signup_is_closed_by_default_and_set_by_file_or_environment() {
        let config = load(None, env(&[]), Credentials::Optional).unwrap();
        assert_eq!(config.signup_policy, SignupPolicy::Closed);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[auth]\nsignup = \"invite\"\n").unwrap();
        assert_eq!(load(Some(&path), env(&[]), Credentials::Optional).unwrap().signup_policy, SignupPolicy::Invite);
        let over = load(Some(&path), env(&[("TOLLGATE_AUTH__SIGNUP", "open")]), Credentials::Optional).unwrap();
        assert_eq!(over.signup_policy, SignupPolicy::Open);
    }

    #[test]
    fn an_unknown_signup_policy_is_an_error_naming_the_field() {
        let err = load(None, env(&[("TOLLGATE_AUTH__SIGNUP", "public")]), Credentials::Optional).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("auth.signup") && text.contains("\"public\""), "{text}");
    }
}
