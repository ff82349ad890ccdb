-- Prices set through the management API; they override the config file's for that model
-- until deleted. Micro-USD per million tokens, and per image.
CREATE TABLE model_prices (
    model_id              TEXT PRIMARY KEY,
    input_micros_per_mtok  BIGINT NOT NULL,
    output_micros_per_mtok BIGINT NOT NULL,
    per_image_micros       BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
