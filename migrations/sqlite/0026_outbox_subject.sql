-- The request that wrote reads its own outbox rows by (event, subject)
-- before it applies them (src/outbox): an index, so that a backlog left
-- while Redis was away does not turn every write into a scan.
CREATE INDEX outbox_event_subject ON outbox (event, subject);
