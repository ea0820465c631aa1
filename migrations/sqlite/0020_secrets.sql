-- Secrets the service makes for itself, shared by every process of one
-- deployment through the database (never through Redis): `otp_seal`, the
-- key that seals one-time codes in the cache so that a live code can be
-- mailed again (src/cache/otp.rs).
CREATE TABLE app_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
