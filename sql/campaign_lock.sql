-- campaign_lock: lock a campaign row for an import, waiting for the lock.
--   $1 = campaign name
-- Imports hold it so that advance_free_mark never moves free_from past codes
-- that are being added (see the free_from comment in the schema).
SELECT id FROM campaign WHERE name = $1 FOR UPDATE;
