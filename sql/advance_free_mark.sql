-- advance_free_mark: move a campaign's free_from up to its first free voucher.
--   $1 = campaign id
-- Runs as the second statement of a transaction whose first statement
-- (lock_campaign_nowait) took the campaign row's lock, so its snapshot is taken
-- after every import that held the lock has committed, and no import can add
-- codes below the new mark until this transaction ends. Rows locked by
-- in-flight claims are still free in this snapshot, so the mark never passes
-- a voucher that may yet be free. With no free voucher the mark moves past the
-- last one, so sold-out claims stay cheap too.
UPDATE campaign
   SET free_from = coalesce(
         (SELECT min(v.id) FROM voucher_item v
           WHERE v.campaign_id = $1 AND v.user_id IS NULL AND v.id >= campaign.free_from),
         last_voucher_id + 1)
 WHERE id = $1
RETURNING free_from;
