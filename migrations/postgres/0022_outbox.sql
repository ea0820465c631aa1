-- The outbox (src/outbox): what a write must cause outside its own
-- transaction, recorded by triggers in that same transaction, so that no
-- write path can forget it and no crash can lose it. The request that made
-- the write applies its rows at once and deletes them; the relay applies
-- whatever is left (a failed bump, a cancelled request, a killed process).
-- The view flush (view_count) records nothing: it changes no cached entry.
-- A bulk load (seed, import) sets `stayafrica.bulk_load` for its
-- transaction: it records nothing (an empty database has no cache to
-- invalidate, and its bookings must not be mailed).
CREATE TABLE outbox (
    id         BIGSERIAL PRIMARY KEY,
    event      TEXT      NOT NULL,
    subject    BIGINT    NOT NULL,
    created_at BIGINT    NOT NULL
);

CREATE FUNCTION outbox_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
BEGIN
    IF current_setting('stayafrica.bulk_load', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'properties' THEN
        INSERT INTO outbox (event, subject, created_at) VALUES ('property_changed', NEW.id, now_ms);
    ELSE
        INSERT INTO outbox (event, subject, created_at) VALUES ('booking_changed', NEW.guest_id, now_ms);
        IF TG_OP = 'INSERT' THEN
            INSERT INTO outbox (event, subject, created_at) VALUES ('booking_created', NEW.id, now_ms);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_property AFTER INSERT OR UPDATE OF
    host_id, title, description, city, country, price_cents, max_guests, is_featured, deleted_at
    ON properties FOR EACH ROW EXECUTE FUNCTION outbox_record();

CREATE TRIGGER outbox_booking AFTER INSERT OR UPDATE OF status
    ON bookings FOR EACH ROW EXECUTE FUNCTION outbox_record();
