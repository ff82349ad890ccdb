-- Every row gets a request id of the gateway's own, unique per row; the caller's
-- `x-request-id` (a client may send one id many times) is kept beside it.
ALTER TABLE usage_log ADD COLUMN client_request_id TEXT;
CREATE INDEX usage_log_by_client_request ON usage_log (client_request_id) WHERE client_request_id IS NOT NULL;
-- What the provider billed above the request's reservation (micro-USD; 0 within it):
-- charged all the same (the bill is the truth), and counted here.
ALTER TABLE usage_log ADD COLUMN excess_micros BIGINT NOT NULL DEFAULT 0;
-- Requests that named no known key: counted per source address and minute (Unix
-- minutes) instead of one usage row each.
CREATE TABLE auth_failures (
    minute    BIGINT NOT NULL,
    client_ip TEXT NOT NULL,
    failures  BIGINT NOT NULL,
    PRIMARY KEY (minute, client_ip)
);
-- Facts every instance on this database must agree on (the pepper's fingerprint).
CREATE TABLE deployment_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
