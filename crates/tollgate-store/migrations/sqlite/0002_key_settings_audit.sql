ALTER TABLE api_keys ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN previous_digest BLOB;
ALTER TABLE api_keys ADD COLUMN previous_expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN rotation_key TEXT;

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    before      TEXT,
    after       TEXT,
    source_ip   TEXT
);
CREATE INDEX audit_log_by_time ON audit_log (at, id);
CREATE INDEX audit_log_by_target ON audit_log (target_type, target_id, id);
