-- StayAfrica schema, SQLite (the embedded default). Money is in cents.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    full_name     TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('guest', 'host')),
    created_at    TEXT    NOT NULL
);

CREATE TABLE properties (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id     INTEGER NOT NULL REFERENCES users (id),
    title       TEXT    NOT NULL,
    description TEXT    NOT NULL,
    city        TEXT    NOT NULL,
    country     TEXT    NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    max_guests  INTEGER NOT NULL CHECK (max_guests BETWEEN 1 AND 50),
    is_featured BOOLEAN NOT NULL DEFAULT 0,
    view_count  INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    deleted_at  TEXT
);
CREATE INDEX properties_city ON properties (city) WHERE deleted_at IS NULL;
CREATE INDEX properties_featured ON properties (id) WHERE is_featured AND deleted_at IS NULL;

CREATE TABLE bookings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    property_id INTEGER NOT NULL REFERENCES properties (id),
    guest_id    INTEGER NOT NULL REFERENCES users (id),
    check_in    TEXT    NOT NULL,
    check_out   TEXT    NOT NULL,
    guests      INTEGER NOT NULL CHECK (guests >= 1),
    total_cents INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('confirmed', 'cancelled')),
    created_at  TEXT    NOT NULL,
    CHECK (check_out > check_in)
);
CREATE INDEX bookings_property ON bookings (property_id, check_in);
CREATE INDEX bookings_guest ON bookings (guest_id, created_at);

-- No double booking. SQLite runs one writer at a time, so a check made by a
-- trigger inside the writing statement cannot race another writer.
CREATE TRIGGER bookings_no_overlap_insert BEFORE INSERT ON bookings
WHEN NEW.status = 'confirmed' AND EXISTS (
    SELECT 1 FROM bookings
    WHERE property_id = NEW.property_id AND status = 'confirmed'
      AND check_in < NEW.check_out AND NEW.check_in < check_out)
BEGIN
    SELECT RAISE(ABORT, 'bookings_no_overlap');
END;

CREATE TRIGGER bookings_no_overlap_update BEFORE UPDATE OF status, check_in, check_out ON bookings
WHEN NEW.status = 'confirmed' AND EXISTS (
    SELECT 1 FROM bookings
    WHERE property_id = NEW.property_id AND status = 'confirmed' AND id <> NEW.id
      AND check_in < NEW.check_out AND NEW.check_in < check_out)
BEGIN
    SELECT RAISE(ABORT, 'bookings_no_overlap');
END;

-- Server-side sessions of the embedded default (ids stored hashed).
CREATE TABLE sessions (
    id_hash    TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- The embedded job queue. Times are Unix milliseconds.
CREATE TABLE jobs (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_ms   INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    lease_until  INTEGER,
    worker_id    TEXT,
    last_error   TEXT,
    result       TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX jobs_ready ON jobs (status, run_at);

-- One row per (periodic job, period slot): the first worker to insert runs it.
CREATE TABLE periodic_runs (
    name TEXT    NOT NULL,
    slot INTEGER NOT NULL,
    PRIMARY KEY (name, slot)
);

-- View-count flushes already applied, so a replayed flush adds nothing.
CREATE TABLE view_flushes (
    id         TEXT    PRIMARY KEY,
    applied_at INTEGER NOT NULL
);
