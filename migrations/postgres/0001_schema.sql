-- StayAfrica schema, PostgreSQL. Money is in cents.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE users (
    id            BIGSERIAL   PRIMARY KEY,
    email         TEXT        NOT NULL UNIQUE,
    password_hash TEXT        NOT NULL,
    full_name     TEXT        NOT NULL,
    role          TEXT        NOT NULL CHECK (role IN ('guest', 'host')),
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE properties (
    id          BIGSERIAL   PRIMARY KEY,
    host_id     BIGINT      NOT NULL REFERENCES users (id),
    title       TEXT        NOT NULL,
    description TEXT        NOT NULL,
    city        TEXT        NOT NULL,
    country     TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL CHECK (price_cents > 0),
    max_guests  INTEGER     NOT NULL CHECK (max_guests BETWEEN 1 AND 50),
    is_featured BOOLEAN     NOT NULL DEFAULT FALSE,
    view_count  BIGINT      NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ
);
CREATE INDEX properties_city ON properties (lower(city)) WHERE deleted_at IS NULL;
CREATE INDEX properties_featured ON properties (id) WHERE is_featured AND deleted_at IS NULL;

CREATE TABLE bookings (
    id          BIGSERIAL   PRIMARY KEY,
    property_id BIGINT      NOT NULL REFERENCES properties (id),
    guest_id    BIGINT      NOT NULL REFERENCES users (id),
    check_in    DATE        NOT NULL,
    check_out   DATE        NOT NULL,
    guests      INTEGER     NOT NULL CHECK (guests >= 1),
    total_cents BIGINT      NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('confirmed', 'cancelled')),
    created_at  TIMESTAMPTZ NOT NULL,
    CHECK (check_out > check_in),
    -- No double booking, enforced by the database under any concurrency.
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (
        property_id WITH =, daterange(check_in, check_out) WITH &&
    ) WHERE (status = 'confirmed')
);
CREATE INDEX bookings_guest ON bookings (guest_id, created_at DESC);

CREATE TABLE sessions (
    id_hash    TEXT   PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE jobs (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_ms   BIGINT  NOT NULL,
    run_at       BIGINT  NOT NULL,
    lease_until  BIGINT,
    worker_id    TEXT,
    last_error   TEXT,
    result       TEXT,
    created_at   BIGINT  NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX jobs_ready ON jobs (status, run_at);

CREATE TABLE periodic_runs (
    name TEXT   NOT NULL,
    slot BIGINT NOT NULL,
    PRIMARY KEY (name, slot)
);

CREATE TABLE view_flushes (
    id         TEXT   PRIMARY KEY,
    applied_at BIGINT NOT NULL
);
