-- lock_campaign_nowait: take a campaign row's lock unless someone holds it.
--   $1 = campaign id
-- Returns no row when another transaction (an import, or another worker's
-- advance_free_mark) holds it: that one is doing the job already.
-- FOR NO KEY UPDATE, not FOR UPDATE: every claim in flight holds FOR KEY
-- SHARE on its campaign row through the outbox's foreign key, which conflicts
-- with FOR UPDATE (the mark would hardly ever move under load) but not with
-- this. Imports take the same mode, so marks and imports still exclude each
-- other.
SELECT id FROM campaign WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED;
