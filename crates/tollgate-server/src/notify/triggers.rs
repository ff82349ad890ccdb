//! Which events a key has due at a given time, and the JSON body each one is sent as.
//! Pure functions of the key and the clock: the sweep records what these return, and the
//! store's unique `(kind, key_id, detail)` makes each one fire once.
//!
//! The detail names what the event is about *including* the limit it was measured
//! against (`80@10000000`: 80 % of a 10 USD budget; `7d@<expires_at>`), so that raising a
//! budget or extending a key arms its alerts again, while the same limit never repeats.

use serde_json::{Value, json};
use tollgate_core::MicroUsd;
use tollgate_core::time::{UnixMillis, to_rfc3339};
use tollgate_store::AlertableKey;

pub(crate) const BUDGET_THRESHOLD: &str = "budget.threshold";
pub(crate) const BUDGET_EXHAUSTED: &str = "budget.exhausted";
pub(crate) const QUOTA_EXHAUSTED: &str = "quota.exhausted";
pub(crate) const KEY_EXPIRING: &str = "key.expiring";

const DAY: i64 = 86_400_000;
/// An expiry older than this is not announced (e.g. when notifications are switched on
/// for a deployment with long-dead keys).
const EXPIRED_NOTICE_WINDOW: i64 = 7 * DAY;

/// One due event of one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Due {
    pub kind: &'static str,
    pub detail: String,
    pub data: Value,
}

/// Everything `key` has due at `now`.
pub(crate) fn due(key: &AlertableKey, now: UnixMillis) -> Vec<Due> {
    let mut out = Vec::new();
    if let Some(budget) = key.budget_micros.filter(|b| *b > 0) {
        let spend = key.spend.0;
        for &t in &key.budget_alert_thresholds {
            // spend / budget >= t / 100, without division or overflow.
            if i128::from(spend) * 100 >= i128::from(budget) * i128::from(t) {
                out.push(Due {
                    kind: BUDGET_THRESHOLD,
                    detail: format!("{t}@{budget}"),
                    data: json!({
                        "threshold_percent": t,
                        "budget_usd": MicroUsd(budget),
                        "spend_usd": key.spend,
                    }),
                });
            }
        }
        if spend >= budget {
            out.push(Due {
                kind: BUDGET_EXHAUSTED,
                detail: budget.to_string(),
                data: json!({ "budget_usd": MicroUsd(budget), "spend_usd": key.spend }),
            });
        }
    }
    if let Some(quota) = key.token_quota.filter(|q| *q > 0)
        && key.tokens_used >= quota
    {
        out.push(Due {
            kind: QUOTA_EXHAUSTED,
            detail: quota.to_string(),
            data: json!({ "token_quota": quota, "tokens_used": key.tokens_used }),
        });
    }
    if let Some(expires_at) = key.expires_at
        && let Some(reminder) = expiry_reminder(key.created_at, expires_at, now)
    {
        out.push(Due {
            kind: KEY_EXPIRING,
            detail: format!("{reminder}@{expires_at}"),
            data: json!({ "reminder": reminder, "expires_at": to_rfc3339(expires_at) }),
        });
    }
    out
}

/// `7d`, `1d` or `expired`: only the reminder for the window `now` is in, and a window
/// only if the key already existed when it opened (a key made to last 3 days gets no
/// "7 days left" notice, but does get "1 day left").
fn expiry_reminder(created_at: UnixMillis, expires_at: UnixMillis, now: UnixMillis) -> Option<&'static str> {
    let left = expires_at - now;
    if left <= 0 {
        (-left <= EXPIRED_NOTICE_WINDOW).then_some("expired")
    } else if left <= DAY {
        (created_at <= expires_at - DAY).then_some("1d")
    } else if left <= 7 * DAY {
        (created_at <= expires_at - 7 * DAY).then_some("7d")
    } else {
        None
    }
}

/// The webhook body: `{"id","type","created_at","organization_id","key":{…},"data":{…}}`.
pub(crate) fn payload(id: &str, key: &AlertableKey, due: &Due, now: UnixMillis) -> Value {
    json!({
        "id": id,
        "type": due.kind,
        "created_at": to_rfc3339(now),
        "organization_id": key.org_id,
        "key": { "id": key.id, "name": key.name, "owner_id": key.owner_id },
        "data": due.data,
    })
}

#[cfg(test)]
mod tests {
    use tollgate_core::key::KeyStatus;

    use super::*;

    fn key() -> AlertableKey {
        AlertableKey {
            id: "key_1".into(),
            name: "svc".into(),
            org_id: "org_1".into(),
            owner_id: "usr_1".into(),
            status: KeyStatus::Active,
            created_at: 0,
            expires_at: None,
            spend: MicroUsd::ZERO,
            tokens_used: 0,
            budget_micros: Some(1_000_000),
            budget_alert_thresholds: vec![50, 80, 100],
            token_quota: None,
        }
    }

    fn details(k: &AlertableKey, now: UnixMillis) -> Vec<String> {
        due(k, now).into_iter().map(|d| format!("{} {}", d.kind, d.detail)).collect()
    }

    #[test]
    fn thresholds_fire_at_exactly_their_percentage() {
        let mut k = key();
        k.spend = MicroUsd(499_999);
        assert!(details(&k, 0).is_empty());
        k.spend = MicroUsd(500_000);
        assert_eq!(details(&k, 0), ["budget.threshold 50@1000000"]);
        k.spend = MicroUsd(1_000_000);
        assert_eq!(
            details(&k, 0),
            [
                "budget.threshold 50@1000000",
                "budget.threshold 80@1000000",
                "budget.threshold 100@1000000",
                "budget.exhausted 1000000"
            ]
        );
        let d = &due(&k, 0)[1];
        assert_eq!(d.data, json!({ "threshold_percent": 80, "budget_usd": 1.0, "spend_usd": 1.0 }));
        k.budget_micros = Some(2_000_000);
        assert_eq!(details(&k, 0), ["budget.threshold 50@2000000"], "a raised budget arms its alerts again");
        k.budget_micros = None;
        assert!(details(&k, 0).is_empty());
    }

    #[test]
    fn a_spent_token_quota_fires_once_per_quota() {
        let mut k = key();
        k.budget_micros = None;
        k.token_quota = Some(100);
        k.tokens_used = 99;
        assert!(details(&k, 0).is_empty());
        k.tokens_used = 130;
        assert_eq!(details(&k, 0), ["quota.exhausted 100"]);
        assert_eq!(due(&k, 0)[0].data, json!({ "token_quota": 100, "tokens_used": 130 }));
    }

    #[test]
    fn expiry_reminders_come_at_seven_days_one_day_and_expiry() {
        let exp = 100 * DAY;
        assert_eq!(expiry_reminder(0, exp, exp - 8 * DAY), None);
        assert_eq!(expiry_reminder(0, exp, exp - 7 * DAY), Some("7d"));
        assert_eq!(expiry_reminder(0, exp, exp - DAY - 1), Some("7d"));
        assert_eq!(expiry_reminder(0, exp, exp - DAY), Some("1d"));
        assert_eq!(expiry_reminder(0, exp, exp - 1), Some("1d"));
        assert_eq!(expiry_reminder(0, exp, exp), Some("expired"));
        assert_eq!(expiry_reminder(0, exp, exp + 7 * DAY), Some("expired"));
        assert_eq!(expiry_reminder(0, exp, exp + 7 * DAY + 1), None, "long-dead keys are not announced");
        // Made to last three days: no "7 days left", but "1 day left" and expiry.
        let made = exp - 3 * DAY;
        assert_eq!(expiry_reminder(made, exp, exp - 2 * DAY), None);
        assert_eq!(expiry_reminder(made, exp, exp - DAY / 2), Some("1d"));
        let mut k = key();
        k.budget_micros = None;
        k.expires_at = Some(exp);
        assert_eq!(details(&k, exp - DAY / 2), [format!("key.expiring 1d@{exp}")]);
    }

    #[test]
    fn the_payload_has_the_documented_shape() {
        let mut k = key();
        k.spend = MicroUsd(600_000);
        let d = &due(&k, 0)[0];
        let p = payload("ntf_1", &k, d, 1_000);
        assert_eq!(
            p,
            json!({
                "id": "ntf_1",
                "type": "budget.threshold",
                "created_at": "1970-01-01T00:00:01.000Z",
                "organization_id": "org_1",
                "key": { "id": "key_1", "name": "svc", "owner_id": "usr_1" },
                "data": { "threshold_percent": 50, "budget_usd": 1.0, "spend_usd": 0.6 },
            })
        );
    }
}
