-- Indexes that serve each filter of the property list and the search by
-- dates (docs/PERFORMANCE.md names the plan each query takes).
--
-- The list compares lower(city) and lower(country): an index on the bare
-- column cannot serve that, one on the expression can. Each ends in id, so
-- an equality filter reads its matches already in the list's order (no
-- sort, a page reads only its rows) and a cursor (id > last) seeks in it.
DROP INDEX properties_city;
CREATE INDEX properties_city_id ON properties (lower(city), id) WHERE deleted_at IS NULL;
CREATE INDEX properties_country_id ON properties (lower(country), id) WHERE deleted_at IS NULL;
-- Range filters: their capped count reads at most 10,001 entries here.
CREATE INDEX properties_price_id ON properties (price_cents, id) WHERE deleted_at IS NULL;
CREATE INDEX properties_guests_id ON properties (max_guests, id) WHERE deleted_at IS NULL;
-- Availability: the confirmed bookings of one property around a stay,
-- one seek per property the search looks at.
CREATE INDEX bookings_confirmed_stay ON bookings (property_id, check_in, check_out)
    WHERE status = 'confirmed';
