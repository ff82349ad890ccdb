//! Tests of provider and model validation.

use super::*;
use crate::config::providers::normalize_base_url;

#[test]
fn anthropic_providers_default_their_url_and_version() {
    let c = from_toml(
        r#"
        [[providers]]
        name = "claude"
        kind = "anthropic"
        api_key_env = "ANTHROPIC_KEY"
        [[providers]]
        name = "local-claude"
        kind = "anthropic"
        base_url = "http://127.0.0.1:9001/"
        anthropic_version = "2023-01-01"
        "#,
        &[],
    );
    let e = errors(c);
    assert!(e.contains("providers[0].api_key_env: environment variable ANTHROPIC_KEY is not set"), "{e}");
    let c = super::validate(
        toml::from_str(
            "demo = false\n[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\napi_key_env = \"ANTHROPIC_KEY\"\n\
             [[providers]]\nname = \"local\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9001/\"\n\
             anthropic_version = \"2023-01-01\"",
        )
        .unwrap(),
        &|v| (v == "ANTHROPIC_KEY").then(|| "sk-ant-x".to_owned()),
        Credentials::Required,
    )
    .unwrap();
    match (&c.providers[0].kind, &c.providers[1].kind) {
        (
            ProviderConfigKind::Anthropic { base_url, api_key, version },
            ProviderConfigKind::Anthropic { base_url: local_url, api_key: local_key, version: local_version },
        ) => {
            assert_eq!(
                (base_url.as_str(), api_key.expose(), version.as_str()),
                ("https://api.anthropic.com", "sk-ant-x", "2023-06-01")
            );
            assert_eq!(
                (local_url.as_str(), local_key.is_empty(), local_version.as_str()),
                ("http://127.0.0.1:9001", true, "2023-01-01")
            );
        }
        other => panic!("{other:?}"),
    }

    let e = errors(from_toml(
        r#"
        [[providers]]
        name = "a"
        kind = "anthropic"
        anthropic_version = "yesterday, please"
        word_delay_ms = 1
        [[providers]]
        name = "b"
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        anthropic_version = "2023-06-01"
        "#,
        &[],
    ));
    for needle in [
        "providers[0]: api_key or api_key_env is required for api.anthropic.com",
        "providers[0].anthropic_version: must look like",
        "providers[0].word_delay_ms: only for kind \"demo\"",
        "providers[1].anthropic_version: only for kind \"anthropic\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn gemini_providers_default_their_url_and_version_and_take_plain_model_ids() {
    let raw = r#"
        [[providers]]
        name = "g"
        kind = "gemini"
        api_key_env = "GEMINI_KEY"
        [[models]]
        id = "flash"
        type = "chat"
        channels = [{ provider = "g", model = "gemini-2.5-flash" }]
        "#;
    let lookup = |v: &str| (v == "GEMINI_KEY").then(|| "AIza-test".to_owned());
    let c = super::validate(toml::from_str(raw).unwrap(), &lookup, Credentials::Required).unwrap();
    match &c.providers[0].kind {
        ProviderConfigKind::Gemini { base_url, api_version, api_key } => assert_eq!(
            (base_url.as_str(), api_version.as_str(), api_key.expose()),
            ("https://generativelanguage.googleapis.com", "v1beta", "AIza-test")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.models[0].channels, [ChannelConfig::plain("g", "gemini-2.5-flash")]);

    let e = errors(from_toml(
        r#"
        [[providers]]
        name = "g"
        kind = "gemini"
        api_version = "v1/../x"
        [[providers]]
        name = "o"
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        api_version = "v1"
        [[models]]
        id = "m"
        type = "chat"
        channels = [{ provider = "g", model = "models/gemini-2.5-flash" }, { provider = "o", model = "org/any" }]
        "#,
        &[],
    ));
    for needle in [
        "providers[0].api_version: \"v1/../x\" is not an API version",
        "providers[0]: api_key or api_key_env is required for kind \"gemini\"",
        "providers[1].api_version: only for kinds \"gemini\" and \"azure\"",
        "models[0].channels[0].model: \"models/gemini-2.5-flash\" is not a plain Gemini model id",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    assert!(!e.contains("channels[1].model"), "other providers' model names are theirs: {e}");
}

#[test]
fn azure_providers_need_a_version_a_key_and_plain_deployments() {
    let raw = r#"
        [[providers]]
        name = "az"
        kind = "azure"
        base_url = "https://res.openai.azure.com/"
        api_version = "2025-01-01-preview"
        api_key_env = "AZ_KEY"
        headers = { "X-Tenant" = "t1" }
        [[models]]
        id = "gpt-4o"
        type = "chat"
        channels = [{ provider = "az", model = "gpt-4o-deploy.v2" }]
        "#;
    let lookup = |v: &str| (v == "AZ_KEY").then(|| "az-secret".to_owned());
    let c = super::validate(toml::from_str(raw).unwrap(), &lookup, Credentials::Required).unwrap();
    match &c.providers[0].kind {
        ProviderConfigKind::Azure { base_url, api_version, api_key, headers } => {
            assert_eq!(
                (base_url.as_str(), api_version.as_str(), api_key.expose()),
                ("https://res.openai.azure.com", "2025-01-01-preview", "az-secret")
            );
            assert_eq!((headers[0].0.as_str(), headers[0].1.expose()), ("X-Tenant", "t1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.models[0].channels[0].model, "gpt-4o-deploy.v2");

    let e = errors(from_toml(
        r#"
        [[providers]]
        name = "az"
        kind = "azure"
        base_url = "https://key:pw@res.openai.azure.com"
        [[providers]]
        name = "az2"
        kind = "azure"
        base_url = "https://res.openai.azure.com"
        api_version = "latest"
        api_key = "k"
        organization = "org-1"
        [[models]]
        id = "m"
        type = "chat"
        channels = [{ provider = "az2", model = "../admin" }, { provider = "az2" }]
        "#,
        &[],
    ));
    for needle in [
        "providers[0].base_url: must not contain credentials",
        "providers[0].api_version: is required for kind \"azure\"",
        "providers[0]: api_key or api_key_env is required for kind \"azure\"",
        "providers[1].api_version: \"latest\" is not an Azure api-version",
        "providers[1].organization: only for kind \"openai\"",
        "models[0].channels[0].model: \"../admin\" is not an Azure deployment name",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    assert!(!e.contains("channels[1]"), "the public id \"m\" is a fine deployment name:\n{e}");
}

#[test]
fn openai_providers_take_organization_project_and_safe_extra_headers() {
    let c = from_toml(
        r#"
        [[providers]]
        name = "oa"
        kind = "openai"
        base_url = "https://api.openai.com/v1"
        organization = "org-abc"
        project = "proj_123"
        headers = { "X-Custom" = "v", "HTTP-Referer" = "https://example.com" }
        [[models]]
        id = "m"
        type = "chat"
        channels = [{ provider = "oa" }]
        "#,
        &[],
    )
    .unwrap();
    let ProviderConfigKind::OpenAi { headers, .. } = &c.providers[0].kind else {
        panic!("{:?}", c.providers[0].kind);
    };
    let pairs: Vec<_> = headers.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
    assert_eq!(
        pairs,
        [
            ("OpenAI-Organization", "org-abc"),
            ("OpenAI-Project", "proj_123"),
            ("HTTP-Referer", "https://example.com"),
            ("X-Custom", "v")
        ]
    );
    assert!(!format!("{c:?}").contains("https://example.com"), "header values are redacted in Debug");

    for forbidden in
        ["Authorization", "api-key", "X-Api-Key", "Host", "Content-Length", "Connection", "Proxy-Authorization", "TE"]
    {
        let e = errors(from_toml(
            &format!(
                "[[providers]]\nname = \"oa\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
                 headers = {{ \"{forbidden}\" = \"x\" }}\n"
            ),
            &[],
        ));
        let needle = format!("providers[0].headers: header \"{forbidden}\" may not be configured");
        assert!(e.contains(&needle), "missing {needle:?} in:\n{e}");
    }
    let e = errors(from_toml(
        r#"
        [[providers]]
        name = "oa"
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        organization = "org-abc"
        headers = { "openai-organization" = "org-other", "Bad Name" = "x", "X-Newline" = "a\nb" }
        [[providers]]
        name = "g"
        kind = "gemini"
        api_key = "k"
        headers = { "X-Custom" = "v" }
        "#,
        &[],
    ));
    for needle in [
        "providers[0].headers: \"openai-organization\" is given twice",
        "providers[0].headers: \"Bad Name\" is not a header name",
        "providers[0].headers: the value of header \"x-newline\" is not a valid header value",
        "providers[1].headers: only for kinds \"openai\" and \"azure\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn base_urls_never_carry_credentials() {
    assert!(normalize_base_url("https://user:pw@api.example.com/v1").is_err());
    assert!(normalize_base_url("https://api.example.com/v1?x=1").is_err());
    assert_eq!(normalize_base_url("https://api.example.com/v1/").as_deref(), Ok("https://api.example.com/v1"));
}
