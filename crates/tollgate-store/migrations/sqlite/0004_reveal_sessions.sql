ALTER TABLE api_keys ADD COLUMN secret_sealed BLOB;

CREATE TABLE sessions (
    digest     BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL,
    org_id     TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
