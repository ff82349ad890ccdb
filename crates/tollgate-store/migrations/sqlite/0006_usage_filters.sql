-- The usage log's filters (PRODUCT §6). Each index ends with the row id, the keyset
-- cursor, so that a filtered page is one index range walked newest first: team, user and
-- model within an organization (what owners and admins filter by), and a key on its own.
CREATE INDEX usage_log_by_org_team ON usage_log (org_id, team_id, id);
CREATE INDEX usage_log_by_org_user ON usage_log (org_id, user_id, id);
CREATE INDEX usage_log_by_org_model ON usage_log (org_id, model, id);
CREATE INDEX usage_log_by_key_id ON usage_log (key_id, id);
