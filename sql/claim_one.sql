-- claim_one: give one user one free voucher of a campaign, in one statement.
--   $1 = campaign name   $2 = user id   $3 = message id ('' when none)
--   $4 = whether a sold_out answer is final (boolean): only a final one is
--        recorded in message_outcome (see claim_wait_free.sql)
-- The claim is the atomic UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
-- LOCKED): concurrent claimers skip each other's locked rows instead of
-- waiting, and Postgres alone serialises ownership. A user who already owns a
-- voucher of the campaign gets it back (redelivery is idempotent); if two
-- deliveries for one user race, voucher_item_owner_key rejects the second and
-- the caller retries, which then finds the first one's code. SKIP LOCKED also
-- skips free vouchers whose holder may yet roll back, so a sold_out from here
-- is only a suspicion until claim_wait_free has waited for those holders. The notification
-- is written to the outbox by the same statement, so it commits with the claim.
-- Returns no row for an unknown campaign, else one row:
--   status ('claimed' | 'already_claimed' | 'sold_out' | 'inactive'),
--   voucher_id, code, campaign_id, free_from (for advance_free_mark).
WITH camp AS MATERIALIZED (
    SELECT id, free_from, active FROM campaign_state WHERE name = $1  -- migration 0005
), owned AS MATERIALIZED (
    SELECT v.id, v.code
      FROM voucher_item v
     WHERE v.campaign_id = (SELECT id FROM camp)
       AND v.user_id = $2
), claimed AS (
    UPDATE voucher_item
       SET user_id = $2, claimed_at = now()
     WHERE id = (SELECT v.id
                   FROM voucher_item v
                  WHERE v.campaign_id = (SELECT id FROM camp WHERE active)
                    AND v.id >= (SELECT free_from FROM camp)
                    AND v.user_id IS NULL
                    AND NOT EXISTS (SELECT 1 FROM owned)
                  ORDER BY v.id
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED)
    RETURNING id, code, campaign_id
), notified AS (
    INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
    SELECT notification_key(claimed.id, $2), claimed.campaign_id, claimed.id, $2, claimed.code
      FROM claimed
), result AS (
    SELECT claim_status(c.id IS NOT NULL, o.id IS NOT NULL, camp.active) AS status,
           coalesce(c.id, o.id) AS voucher_id,
           coalesce(c.code, o.code) AS code,
           camp.id AS campaign_id,
           camp.free_from
      FROM camp
      LEFT JOIN owned o ON true
      LEFT JOIN claimed c ON true
), recorded AS (
    INSERT INTO message_outcome (message_id, campaign, user_id, status, voucher_id)
    SELECT $3, $1, $2, result.status, result.voucher_id
      FROM result
     WHERE $3 <> '' AND result.status <> 'inactive' AND (result.status <> 'sold_out' OR $4::boolean)
    ON CONFLICT (message_id) DO NOTHING
)
SELECT status, voucher_id, code, campaign_id, free_from FROM result;
