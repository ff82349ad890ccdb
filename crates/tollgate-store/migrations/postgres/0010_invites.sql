-- Invitations to join an organization (PRODUCT §1, sign-up policy). The token is shown
-- once and stored only as its digest; an invitation is used at most once.
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    email       TEXT,
    role        TEXT NOT NULL,
    team_id     TEXT,
    digest      BYTEA NOT NULL UNIQUE,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT
);
CREATE INDEX invites_by_org ON invites (org_id, created_at);
