-- Usage rows say who (organization, team, key owner) and carry the key's metadata; each
-- event has a unique id so that replaying a spill file cannot write a row twice.
ALTER TABLE usage_log ADD COLUMN event_id TEXT;
ALTER TABLE usage_log ADD COLUMN org_id TEXT;
ALTER TABLE usage_log ADD COLUMN team_id TEXT;
ALTER TABLE usage_log ADD COLUMN user_id TEXT;
ALTER TABLE usage_log ADD COLUMN key_metadata TEXT;
ALTER TABLE usage_log ADD COLUMN error_code TEXT;
CREATE UNIQUE INDEX usage_log_by_event ON usage_log (event_id);
CREATE INDEX usage_log_by_org ON usage_log (org_id, id);
CREATE INDEX usage_log_by_org_time ON usage_log (org_id, created_at);

-- Spend and token counters of teams and organizations (keys have theirs since 0001).
-- An organization's balance is credit_micros - spend_micros, which equals the sum of its
-- ledger entries: credit_micros sums the non-usage entries, spend_micros the usage debits.
ALTER TABLE teams ADD COLUMN spend_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE teams ADD COLUMN tokens_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE organizations ADD COLUMN spend_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE organizations ADD COLUMN credit_micros BIGINT NOT NULL DEFAULT 0;

-- The organization's money: top-ups, usage debits, adjustments, refunds (signed micro-USD).
CREATE TABLE ledger_entries (
    id                   TEXT PRIMARY KEY,
    org_id               TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    amount_micros        BIGINT NOT NULL,
    balance_after_micros BIGINT NOT NULL,
    note                 TEXT,
    actor                TEXT,
    created_at           BIGINT NOT NULL
);
CREATE INDEX ledger_entries_by_org ON ledger_entries (org_id, id);

-- Per day (Unix day number), key and model: what the charts read.
CREATE TABLE usage_daily (
    org_id            TEXT NOT NULL,
    day               BIGINT NOT NULL,
    key_id            TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros       BIGINT NOT NULL,
    PRIMARY KEY (org_id, day, key_id, model)
);
