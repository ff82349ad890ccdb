-- Notifications (budget alerts, quota/budget exhaustion, expiry reminders). One row per
-- (kind, key_id, detail) ever: the unique index is what makes an event fire once, even
-- with several servers on one database (the insert that wins owns the event).
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    org_id     TEXT,
    owner_id   TEXT,
    -- The webhook body, built once when the event is recorded (never a secret).
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (kind, key_id, detail)
);
CREATE INDEX notifications_by_key ON notifications (key_id, created_at);

-- The outbox: one row per notification and channel (webhook, email). A sender claims a
-- row by moving next_attempt_at past now (a lease), so each attempt has one owner.
CREATE TABLE notification_deliveries (
    notification_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (notification_id, channel)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (status, next_attempt_at);
