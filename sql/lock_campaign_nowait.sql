-- lock_campaign_nowait: take a campaign row's lock unless someone holds it.
--   $1 = campaign id
-- Returns no row when another transaction (an import, or another worker's
-- advance_free_mark) holds it: that one is doing the job already.
SELECT id FROM campaign WHERE id = $1 FOR UPDATE SKIP LOCKED;
