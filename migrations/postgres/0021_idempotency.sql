-- Answers kept for retries with an Idempotency-Key (src/idempotency/sql.rs),
-- when no Redis is configured. `status` is NULL while the first request runs.
CREATE TABLE idempotency_records (
    record TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status INTEGER,
    content_type TEXT,
    body BYTEA
);
CREATE INDEX idempotency_records_expiry ON idempotency_records (expires_at);
