-- campaign_find: a campaign's id by name, without locking it.
--   $1 = campaign name
SELECT id FROM campaign WHERE name = $1;
