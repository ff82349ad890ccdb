-- Providers, models and channels managed through the API, beside the config file's.
-- Provider credentials (API key, header values) are stored only sealed (AES-256-GCM).
CREATE TABLE routing_providers (
    name              TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    base_url          TEXT,
    api_version       TEXT,
    anthropic_version TEXT,
    organization      TEXT,
    project           TEXT,
    header_names      TEXT NOT NULL,
    secrets_sealed    BYTEA,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE routing_models (
    id                     TEXT PRIMARY KEY,
    model_type             TEXT NOT NULL,
    input_micros_per_mtok  BIGINT NOT NULL,
    output_micros_per_mtok BIGINT NOT NULL,
    per_image_micros       BIGINT NOT NULL,
    max_output_tokens      BIGINT NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

-- A channel serves a managed model or one of the config file's (`model_id` is either).
CREATE TABLE routing_channels (
    id             TEXT PRIMARY KEY,
    model_id       TEXT NOT NULL,
    provider       TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    priority       BIGINT NOT NULL,
    weight         BIGINT NOT NULL,
    groups         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (model_id, provider, upstream_model)
);
CREATE INDEX routing_channels_provider ON routing_channels (provider);
