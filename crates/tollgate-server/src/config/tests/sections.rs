//! Tests of the `[metrics]` and `[notifications]` sections.

use super::*;

#[test]
fn metrics_are_on_the_main_listener_by_default_and_validated() {
    let c = load(None, Vec::new(), Credentials::Required).unwrap();
    assert!(c.metrics.enabled && c.metrics.listen.is_none() && !c.metrics.key_labels);

    let c = from_toml("[metrics]\nlisten = \"127.0.0.1:9090\"\nkey_labels = true", &[]).unwrap();
    assert_eq!(c.metrics.listen.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9090"));
    assert!(c.metrics.key_labels);
    let c = from_toml(
        "[metrics]\nlisten = \"127.0.0.1:9090\"",
        &[("TOLLGATE_METRICS__ENABLED", "false"), ("TOLLGATE_METRICS__LISTEN", "0.0.0.0:9100")],
    )
    .unwrap();
    assert!(!c.metrics.enabled);
    assert_eq!(c.metrics.listen.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:9100"));
    let c = from_toml("", &[("TOLLGATE_METRICS__KEY_LABELS", "true"), ("TOLLGATE_METRICS__LISTEN", "")]).unwrap();
    assert!(c.metrics.key_labels && c.metrics.listen.is_none());

    let e = errors(from_toml("[metrics]\nlisten = \"nowhere\"", &[]));
    assert!(e.contains("metrics.listen: \"nowhere\" is not an address"), "{e}");
    let e = errors(from_toml("listen = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"127.0.0.1:8080\"", &[]));
    assert!(e.contains("metrics.listen: 127.0.0.1:8080 is the main listen address"), "{e}");
    let e = errors(from_toml("[metrics]\nenable = true", &[]));
    assert!(e.contains("metrics") && e.contains("unknown field `enable`"), "{e}");
    let e = errors(from_toml("", &[("TOLLGATE_METRICS__ENABLED", "yes")]));
    assert!(e.contains("TOLLGATE_METRICS__ENABLED: must be true or false"), "{e}");
}

#[test]
fn notifications_are_off_by_default_and_validated_by_field() {
    let c = load(None, Vec::new(), Credentials::Required).unwrap();
    assert!(c.notifications.webhook.is_none() && c.notifications.smtp.is_none());
    assert_eq!(c.notifications.sweep_interval, Duration::from_secs(30));
    assert_eq!((c.notifications.max_attempts, c.notifications.retry_base), (5, Duration::from_secs(1)));

    let e = errors(from_toml(
        r#"
        [notifications]
        sweep_interval_ms = 0
        webhook_url = "ftp://hooks.example.com/x"
        smtp_host = "smtp.example.com"
        smtp_username = "u"
        smtp_from = "not an address"
        max_attempts = 0
        retry_base_ms = 10
        retry_max_ms = 5
        "#,
        &[],
    ));
    for needle in [
        "notifications.sweep_interval_ms",
        "notifications.webhook_url: must start with http:// or https://",
        "notifications.webhook_secret: required when webhook_url is set",
        "notifications.smtp_password: required when smtp_username is set",
        "notifications.smtp_from:",
        "notifications.max_attempts",
        "notifications.retry_max_ms",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    let e = errors(from_toml("[notifications]\nwebhook_secret = \"0123456789abcdef\"", &[]));
    assert!(e.contains("notifications.webhook_secret: set without webhook_url"), "{e}");
    let e = errors(from_toml("[notifications]\nsmtp_from = \"a@b.c\"", &[]));
    assert!(e.contains("notifications.smtp_host: required"), "{e}");
    let e =
        errors(from_toml("[notifications]\nwebhook_url = \"https://h.example/x\"\nwebhook_secret = \"short\"", &[]));
    assert!(e.contains("at least 16 characters") && !e.contains("short"), "{e}");
    let e = errors(from_toml("[notifications]\nsmtp_hots = \"x\"", &[]));
    assert!(e.contains("unknown field `smtp_hots`"), "{e}");
}

#[test]
fn notifications_come_from_the_environment_and_keep_their_secrets() {
    let c = from_toml(
        "[notifications]\nsmtp_from = \"Tollgate <alerts@example.com>\"",
        &[
            ("TOLLGATE_NOTIFICATIONS__WEBHOOK_URL", "https://hooks.example.com/T0KEN-in-path"),
            ("TOLLGATE_NOTIFICATIONS__WEBHOOK_SECRET", "whsec-0123456789abcdef"),
            ("TOLLGATE_NOTIFICATIONS__SMTP_HOST", "smtp.example.com"),
            ("TOLLGATE_NOTIFICATIONS__SMTP_PORT", "2525"),
            ("TOLLGATE_NOTIFICATIONS__SMTP_USERNAME", "mailer"),
            ("TOLLGATE_NOTIFICATIONS__SMTP_PASSWORD", "smtp-pass-xyz"),
            ("TOLLGATE_NOTIFICATIONS__SMTP_STARTTLS", "false"),
            ("TOLLGATE_NOTIFICATIONS__SWEEP_INTERVAL_MS", "200"),
            ("TOLLGATE_NOTIFICATIONS__RETRY_BASE_MS", "50"),
        ],
    )
    .unwrap();
    let n = &c.notifications;
    let webhook = n.webhook.as_ref().unwrap();
    assert_eq!(webhook.url.to_string(), "https://hooks.example.com/T0KEN-in-path");
    assert_eq!(webhook.secret.expose(), "whsec-0123456789abcdef");
    let smtp = n.smtp.as_ref().unwrap();
    assert_eq!((smtp.host.as_str(), smtp.port, smtp.starttls), ("smtp.example.com", 2525, false));
    assert_eq!(smtp.from_address, "alerts@example.com");
    assert_eq!(smtp.from_header, "Tollgate <alerts@example.com>");
    assert_eq!(smtp.credentials.as_ref().map(|(u, p)| (u.as_str(), p.expose())), Some(("mailer", "smtp-pass-xyz")));
    assert_eq!((n.sweep_interval, n.retry_base), (Duration::from_millis(200), Duration::from_millis(50)));
    let shown = format!("{c:?}");
    for secret in ["whsec-0123456789abcdef", "smtp-pass-xyz", "T0KEN-in-path"] {
        assert!(!shown.contains(secret), "{secret} leaked into Debug");
    }
}
