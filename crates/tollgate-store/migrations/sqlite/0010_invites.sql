-- Invitations to join an organization (PRODUCT §1, sign-up policy). The token is shown
-- once and stored only as its digest; an invitation is used at most once.
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    email       TEXT,
    role        TEXT NOT NULL,
    team_id     TEXT,
    digest      BLOB NOT NULL UNIQUE,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    accepted_at INTEGER,
    accepted_by TEXT
);
CREATE INDEX invites_by_org ON invites (org_id, created_at);
