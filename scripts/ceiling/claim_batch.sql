-- The batched ceiling (SPEC section 8): the least SQL that does the work of
-- one `worker --source pg --batch 100` transaction, as one statement: take
-- up to 100 pending queue rows, lock as many free vouchers, pair them by
-- rank, claim, write the outbox rows, record the outcomes on the queue rows.
-- pgbench variable :campaign_id = the campaign's id. Free vouchers come from
-- voucher_item_free_idx with no free mark, as in claim_one.sql (which says
-- why the campaign is a range and the order names it). The user id
-- is the queue id.
WITH q AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY id) AS rn
      FROM (SELECT id FROM message_queue
             WHERE done_at IS NULL
             ORDER BY id
             LIMIT 100
               FOR UPDATE SKIP LOCKED) t
), v AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY id) AS rn
      FROM (SELECT id FROM voucher_item
             WHERE campaign_id BETWEEN :campaign_id AND :campaign_id
               AND user_id IS NULL
             ORDER BY campaign_id, id
             LIMIT (SELECT count(*) FROM q)
               FOR UPDATE SKIP LOCKED) t
), claimed AS (
    UPDATE voucher_item vi
       SET user_id = q.id::text, claimed_at = now()
      FROM v JOIN q USING (rn)
     WHERE vi.id = v.id
    RETURNING vi.id, vi.code, vi.campaign_id, vi.user_id
), notified AS (
    INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
    SELECT notification_key(c.id, c.user_id), c.campaign_id, c.id, c.user_id, c.code
      FROM claimed c
    RETURNING voucher_id, user_id
)
UPDATE message_queue m
   SET done_at = now(), status = 'claimed', voucher_id = n.voucher_id
  FROM notified n
 WHERE m.id = n.user_id::bigint;
