CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    digest        BLOB NOT NULL UNIQUE,
    preview       TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    request_count INTEGER NOT NULL DEFAULT 0,
    tokens_used   INTEGER NOT NULL DEFAULT 0,
    spend_micros  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_by_name ON api_keys (name, id);

CREATE TABLE changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    entity    TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    at        INTEGER NOT NULL
);

CREATE TABLE usage_log (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    key_id            TEXT,
    key_name          TEXT,
    model             TEXT,
    provider          TEXT,
    endpoint          TEXT NOT NULL,
    status            INTEGER NOT NULL,
    error             TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_micros       INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    stream            INTEGER NOT NULL,
    client_ip         TEXT,
    billing_reason    TEXT NOT NULL
);
CREATE INDEX usage_log_by_time ON usage_log (created_at, id);
CREATE INDEX usage_log_by_request ON usage_log (request_id);
CREATE INDEX usage_log_by_key ON usage_log (key_id, created_at);
