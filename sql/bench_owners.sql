-- bench_owners: what the database says at the end of a race-lab run: every
-- claimed voucher of the campaign and its owner, for the audit against what
-- each user was told.
--   $1 = campaign name
SELECT v.id AS voucher_id, v.code, v.user_id
  FROM voucher_item v
  JOIN campaign c ON c.id = v.campaign_id
 WHERE c.name = $1 AND v.user_id IS NOT NULL;
