-- claim_wait_free: make a sold_out true. Runs only after a claim found no
-- free voucher it could take with SKIP LOCKED, right before that claim runs
-- again (with its sold_out final).
--   $1 = campaign name   $2 = how many vouchers the claim still needs
-- SKIP LOCKED skips free vouchers that other transactions hold: a claim in
-- flight that may yet roll back (a crashed worker, an aborted batch, a
-- duplicate delivery that fails on voucher_item_owner_key), or an operator's
-- session. This statement waits for those holders instead (each wait bounded
-- by lock_timeout, so it ends as a transient error, never as a false
-- sold_out). A holder that committed its claim made the row not free: the
-- re-check after the wait drops it and the scan goes on. A holder that rolled
-- back left the row free: it is locked here for the calling transaction,
-- whose next claim (SKIP LOCKED does not skip its own locks) takes it.
-- Returns the ids locked; none when the campaign is truly sold out.
SELECT v.id
  FROM voucher_item v
 WHERE v.campaign_id BETWEEN (SELECT id FROM campaign WHERE name = $1)
                         AND (SELECT id FROM campaign WHERE name = $1)
   AND v.id >= (SELECT free_from FROM campaign WHERE name = $1)
   AND v.user_id IS NULL
 ORDER BY v.campaign_id, v.id  -- voucher_item_free_idx, as in claim_one
 LIMIT $2
   FOR UPDATE
