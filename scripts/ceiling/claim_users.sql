-- The ceiling of `claim-batch` (SPEC section 8): the least SQL that does the
-- work of one of its statements, 1,000 users at a time with no queue: lock
-- 1,000 free vouchers, give each to a user, write their outbox rows; one
-- statement, one transaction. pgbench variable :campaign_id = the campaign's
-- id. The user id is made from the voucher id (claim-batch pairs a list of
-- users with the vouchers it locked; the least SQL needs no list). Free
-- vouchers come from voucher_item_free_idx with no free mark, as in
-- claim_one.sql (which says why the campaign is a range and the order names it).
WITH v AS MATERIALIZED (
    SELECT id FROM voucher_item
     WHERE campaign_id BETWEEN :campaign_id AND :campaign_id
       AND user_id IS NULL
     ORDER BY campaign_id, id
     LIMIT 1000
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE voucher_item vi
       SET user_id = 'u' || vi.id, claimed_at = now()
      FROM v
     WHERE vi.id = v.id
    RETURNING vi.id, vi.code, vi.campaign_id, vi.user_id
)
INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
SELECT notification_key(c.id, c.user_id), c.campaign_id, c.id, c.user_id, c.code
  FROM claimed c;
