-- The outbox (src/outbox): what a write must cause outside its own
-- transaction, recorded by triggers in that same transaction, so that no
-- write path can forget it and no crash can lose it. The request that made
-- the write applies its rows at once and deletes them; the relay applies
-- whatever is left (a failed bump, a cancelled request, a killed process).
-- The view flush (view_count) records nothing: it changes no cached entry.
-- A bulk load (seed, import) holds a row in `outbox_paused` for the time of
-- its transaction (SQLite has one writer: nobody else writes meanwhile): it
-- records nothing (an empty database has no cache to invalidate, and its
-- bookings must not be mailed).
CREATE TABLE outbox_paused (paused INTEGER NOT NULL);

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event      TEXT    NOT NULL,
    subject    INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TRIGGER outbox_property_insert AFTER INSERT ON properties
    WHEN NOT EXISTS (SELECT 1 FROM outbox_paused) BEGIN
    INSERT INTO outbox (event, subject, created_at) VALUES
        ('property_changed', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER outbox_property_update AFTER UPDATE OF
    host_id, title, description, city, country, price_cents, max_guests, is_featured, deleted_at
    ON properties
    WHEN NOT EXISTS (SELECT 1 FROM outbox_paused) BEGIN
    INSERT INTO outbox (event, subject, created_at) VALUES
        ('property_changed', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER outbox_booking_insert AFTER INSERT ON bookings
    WHEN NOT EXISTS (SELECT 1 FROM outbox_paused) BEGIN
    INSERT INTO outbox (event, subject, created_at) VALUES
        ('booking_changed', NEW.guest_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
        ('booking_created', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER outbox_booking_update AFTER UPDATE OF status ON bookings
    WHEN NOT EXISTS (SELECT 1 FROM outbox_paused) BEGIN
    INSERT INTO outbox (event, subject, created_at) VALUES
        ('booking_changed', NEW.guest_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
