CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    digest        BYTEA NOT NULL UNIQUE,
    preview       TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    request_count BIGINT NOT NULL DEFAULT 0,
    tokens_used   BIGINT NOT NULL DEFAULT 0,
    spend_micros  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_by_name ON api_keys (name, id);

CREATE TABLE changes (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity    TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    at        BIGINT NOT NULL
);

CREATE TABLE usage_log (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    key_id            TEXT,
    key_name          TEXT,
    model             TEXT,
    provider          TEXT,
    endpoint          TEXT NOT NULL,
    status            BIGINT NOT NULL,
    error             TEXT,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros       BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    ttft_ms           BIGINT,
    stream            BIGINT NOT NULL,
    client_ip         TEXT,
    billing_reason    TEXT NOT NULL
);
CREATE INDEX usage_log_by_time ON usage_log (created_at, id);
CREATE INDEX usage_log_by_request ON usage_log (request_id);
CREATE INDEX usage_log_by_key ON usage_log (key_id, created_at);
