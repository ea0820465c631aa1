-- The view flush records one flush id per chunk of about 1,000 properties
-- (src/views/), so the table grows with what is viewed; ids older than
-- views::FLUSH_ID_KEEP are pruned by the flush, through this index.
CREATE INDEX view_flushes_applied_at ON view_flushes (applied_at);
