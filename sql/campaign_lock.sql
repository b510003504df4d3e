-- campaign_lock: lock a campaign row for an import, waiting for the lock.
--   $1 = campaign name
-- Imports hold it so that advance_free_mark never moves free_from past codes
-- that are being added (see the free_from comment in the schema).
-- FOR NO KEY UPDATE: it excludes advance_free_mark and other imports, but
-- not the FOR KEY SHARE that every claim's outbox insert takes through its
-- foreign key, so an import never holds up the claims of its campaign.
SELECT id FROM campaign WHERE name = $1 FOR NO KEY UPDATE;
