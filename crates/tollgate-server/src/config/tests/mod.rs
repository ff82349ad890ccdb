//! Tests of the whole pipeline: loading, environment overrides, general validation.

mod providers;
mod sections;

use tollgate_core::money::MicroUsd;

use super::*;

fn from_toml(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).unwrap();
    load(Some(&path), env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())), Credentials::Required)
}

fn errors(r: Result<Config, ConfigErrors>) -> String {
    r.map(|_| String::new()).unwrap_or_else(|e| e.to_string())
}

#[test]
fn zero_config_serves_the_demo() {
    let c = load(None, Vec::new(), Credentials::Required).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert!(c.database_url.starts_with("sqlite://./tollgate-data/tollgate.db"));
    let ids: Vec<_> = c.models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["demo-chat", "demo-embed"]);
}

#[test]
fn the_issue_example_loads_with_prices_in_micro_usd() {
    let c = from_toml(
        r#"
        listen = "127.0.0.1:9999"
        [[providers]]
        name = "local"
        kind = "openai"
        base_url = "http://127.0.0.1:9000/v1/"
        api_key = "sk-up"
        [[models]]
        id = "gpt-4o-mini"
        type = "chat"
        input_price_per_mtok = 0.15
        output_price_per_mtok = 0.60
        channels = [{ provider = "local", model = "gpt-4o-mini" }]
        "#,
        &[],
    )
    .unwrap();
    assert_eq!(c.models.len(), 1, "demo is off when models are configured");
    assert_eq!(c.models[0].pricing.input_per_mtok, MicroUsd(150_000));
    assert_eq!(c.models[0].pricing.output_per_mtok, MicroUsd(600_000));
    match &c.providers[0].kind {
        ProviderConfigKind::OpenAi { base_url, api_key, headers } => {
            assert!(headers.is_empty());
            assert_eq!(base_url, "http://127.0.0.1:9000/v1");
            assert_eq!(api_key.expose(), "sk-up");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_fields_are_named() {
    assert!(errors(from_toml("lissen = \"x\"", &[])).contains("unknown field `lissen`"));
    let e = errors(from_toml("[[models]]\nid = \"m\"\ntype = \"chat\"\nchannels = []\nprice = 1", &[]));
    assert!(e.contains("models[0]") && e.contains("unknown field `price`"), "{e}");
    let e = errors(from_toml("[upstream]\nconnect_timeout_ms = \"soon\"", &[]));
    assert!(e.contains("upstream.connect_timeout_ms"), "{e}");
}

#[test]
fn bad_values_are_all_reported_by_field() {
    let e = errors(from_toml(
        r#"
        listen = "nowhere"
        [[providers]]
        name = "p"
        kind = "openai"
        base_url = "ftp://x"
        api_key_env = "TOLLGATE_TEST_SURELY_UNSET_VAR"
        [[providers]]
        name = "q"
        kind = "magic"
        [[models]]
        id = "m"
        type = "chat"
        input_price_per_mtok = -1
        channels = [{ provider = "nope" }]
        "#,
        &[],
    ));
    for needle in [
        "listen:",
        "providers[0].base_url",
        "providers[0].api_key_env: environment variable TOLLGATE_TEST_SURELY_UNSET_VAR is not set",
        "providers[1].kind",
        "models[0].input_price_per_mtok",
        "models[0].channels[0].provider",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn environment_overrides_the_file_with_types() {
    let c = from_toml(
        "listen = \"127.0.0.1:1\"\n[usage]\nbatch_size = 5",
        &[
            ("TOLLGATE_LISTEN", "127.0.0.1:2"),
            ("TOLLGATE_USAGE__BATCH_SIZE", "7"),
            ("TOLLGATE_ADMIN_TOKEN", "12345"),
            ("TOLLGATE_DEMO", "false"),
            ("TOLLGATE_NOT_A_FIELD", "x"),
            ("UNRELATED", "y"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:2");
    assert_eq!(c.usage_batch_size, 7);
    assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("12345"));
    assert!(c.models.is_empty());
    let e = errors(from_toml("", &[("TOLLGATE_MAX_BODY_BYTES", "lots")]));
    assert!(e.contains("TOLLGATE_MAX_BODY_BYTES: must be an integer"), "{e}");
}

#[test]
fn reveal_needs_a_32_byte_key() {
    let e = errors(from_toml("[keys]\nreveal = true", &[]));
    assert!(e.contains("keys.reveal_key: required"), "{e}");
    let e = errors(from_toml("[keys]\nreveal = true\nreveal_key = \"c2hvcnQ=\"", &[]));
    assert!(e.contains("must be 32 bytes"), "{e}");
    let hex = "ab".repeat(32);
    let c = from_toml("", &[("TOLLGATE_KEYS__REVEAL", "true"), ("TOLLGATE_KEYS__REVEAL_KEY", &hex)]).unwrap();
    assert_eq!(c.reveal_key.map(|k| k.0), Some([0xab; 32]));
    assert!(
        !format!(
            "{:?}",
            from_toml("", &[("TOLLGATE_KEYS__REVEAL", "true"), ("TOLLGATE_KEYS__REVEAL_KEY", &hex)]).unwrap()
        )
        .contains("ab, ab")
    );
}
