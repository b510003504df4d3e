-- claim_one.sql's work (the one-statement ceiling) split as the worker splits
-- its transaction, for pgbench -M prepared: BEGIN; take the queue row;
-- claim a voucher from the free index + its outbox row; mark the queue row
-- done and COMMIT pipelined. 4 round trips (pgbench cannot \gset in a
-- pipeline, so BEGIN goes alone), least SQL: isolates the cost of round trips
-- from that of the worker's heavier claim_one (issue 10 point 4).
BEGIN;
SELECT id AS qid FROM message_queue
 WHERE done_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED \gset
WITH claimed AS (
    UPDATE voucher_item
       SET user_id = :qid::text, claimed_at = now()
     WHERE id = (SELECT v.id FROM voucher_item v
                  WHERE v.campaign_id BETWEEN :campaign_id AND :campaign_id
                    AND v.user_id IS NULL
                  ORDER BY v.campaign_id, v.id
                  LIMIT 1
                    FOR UPDATE SKIP LOCKED)
    RETURNING id, code, campaign_id, user_id
)
INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
SELECT notification_key(c.id, c.user_id), c.campaign_id, c.id, c.user_id, c.code
  FROM claimed c
RETURNING voucher_id \gset
\startpipeline
UPDATE message_queue SET done_at = now(), status = 'claimed', voucher_id = :voucher_id WHERE id = :qid;
COMMIT;
\endpipeline
