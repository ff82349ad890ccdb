ALTER TABLE api_keys ADD COLUMN secret_sealed BYTEA;

CREATE TABLE sessions (
    digest     BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL,
    org_id     TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
