-- The per-message ceiling (SPEC section 8): the least SQL that does the work
-- of one `worker --source pg --batch 1` transaction, as one statement (one
-- round trip, one commit): take the oldest pending queue row, claim one free
-- voucher for it, write the voucher's outbox row, record the outcome on the
-- queue row. pgbench variable :campaign_id = the campaign's id.
-- The voucher comes from voucher_item_free_idx by (campaign_id, id) with no
-- free mark: the partial index holds free rows only, so its first entry is
-- the first free voucher from the first claim to the last (dead entries of
-- claimed rows are skipped by their LP_DEAD hints once seen, and vacuumed).
-- The campaign is a range of one and the order names campaign_id: with
-- `campaign_id = :campaign_id` the planner drops campaign_id from the order,
-- walks voucher_item_pkey in id order and filters past every claimed row
-- (the trap of SPEC section 8); only the free index yields (campaign_id, id).
-- The user id is the queue id (the worker reads it from the body's JSON).
WITH q AS MATERIALIZED (
    SELECT id FROM message_queue
     WHERE done_at IS NULL
     ORDER BY id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE voucher_item
       SET user_id = (SELECT id FROM q)::text, claimed_at = now()
     WHERE id = (SELECT v.id FROM voucher_item v
                  WHERE v.campaign_id BETWEEN :campaign_id AND :campaign_id
                    AND v.user_id IS NULL
                  ORDER BY v.campaign_id, v.id
                  LIMIT 1
                    FOR UPDATE SKIP LOCKED)
       AND EXISTS (SELECT 1 FROM q)
    RETURNING id, code, campaign_id, user_id
), notified AS (
    INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
    SELECT notification_key(c.id, c.user_id), c.campaign_id, c.id, c.user_id, c.code
      FROM claimed c
    RETURNING voucher_id
)
UPDATE message_queue m
   SET done_at = now(), status = 'claimed', voucher_id = n.voucher_id
  FROM q, notified n
 WHERE m.id = q.id;
