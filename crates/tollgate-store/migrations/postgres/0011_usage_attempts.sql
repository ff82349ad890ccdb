-- Failover made visible (PRODUCT §4): how many channels a request tried, and which —
-- `provider/upstream_model` of each attempt in order, comma-separated; the last one is
-- the channel that answered (or failed last). Rows written before this have 0 and NULL.
ALTER TABLE usage_log ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN channel TEXT;
