-- campaign_active: whether a campaign takes claims now (inside its start/end
-- window, migration 0005), for claim-batch to refuse a whole file at once.
--   $1 = campaign name
SELECT active FROM campaign_state WHERE name = $1;
