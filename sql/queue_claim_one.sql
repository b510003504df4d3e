-- queue_claim_one: sql/queue_claim.sql for one message (the worker at
-- --batch 1). It does the same thing to the same message and answers the
-- same row; what one message does not need is left out: pairing users with
-- vouchers by row_number, grouping by campaign, and finding a user's second
-- message in the batch. Its plan is a line of index probes where the batch
-- statement's has sorts, window aggregates and a group aggregate, and the
-- difference grows with concurrency: pgbench -M prepared on each (the
-- worker's campaign written in), durable Postgres, 8,000 queued messages on
-- a fresh database per run, means of two: 4,578 against 3,924 messages/s at
-- 4 clients, 5,024 against 4,153 at 16, where the ceiling
-- (scripts/ceiling/claim_one.sql) made 5,193 and 6,204.
--   $1 = the worker's --campaign, for messages that name none ('' for none)
-- A message is plain as in queue_claim: it holds its request, was never
-- tried alone, and names an active campaign. A plain message whose user
-- owns a voucher gets 'already_claimed' with it; another gets the first free
-- voucher at or after the campaign's free mark that SKIP LOCKED finds, with
-- its outbox row, and 'claimed'. A message that is not plain, or for which
-- no voucher was found, is left pending and returned with a NULL status for
-- the general path. A user being claimed concurrently elsewhere fails
-- voucher_item_owner_key and with it the statement, as in queue_claim.
-- Returns one row if a message was taken (none when the queue is empty): id,
-- lag_s, status, voucher_id, and for a plain message its campaign_id and the
-- campaign's free_from.
WITH taken AS MATERIALIZED (
    SELECT id, user_id, campaign, attempts,
           extract(epoch FROM clock_timestamp() - enqueued_at)::float8 AS lag_s
      FROM message_queue
     WHERE done_at IS NULL
     ORDER BY id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), plain AS MATERIALIZED (
    SELECT t.id, t.user_id, c.id AS campaign_id, c.free_from
      FROM taken t
      JOIN campaign_state c ON c.name = coalesce(t.campaign, nullif($1, '')) AND c.active  -- migration 0005
     WHERE t.attempts = 0 AND t.user_id IS NOT NULL
), owned AS MATERIALIZED (
    -- The voucher_item_owner_key probe.
    SELECT p.id, o.voucher_id
      FROM plain p
     CROSS JOIN LATERAL (SELECT v.id AS voucher_id
                           FROM voucher_item v
                          WHERE v.campaign_id = p.campaign_id AND v.user_id = p.user_id
                          LIMIT 1) o
), claimed AS (
    -- The free voucher comes from voucher_item_free_idx as in queue_claim:
    -- a range of one campaign, ordered by (campaign_id, id), from the mark.
    -- The subquery is a parameter of the voucher_item_pkey probe, run once.
    -- Were a plan ever to test it against each row of a scan of voucher_item
    -- instead (a table the planner thinks tiny), it would lock the next free
    -- voucher at each try, and a second one updated for the user fails
    -- voucher_item_owner_key: the statement writes nothing and the general
    -- path answers. Picking the voucher in a CTE of its own (as queue_claim
    -- does) rules that plan out but cost 9% at 4 clients (pgbench, fsync
    -- off, three rounds: 5,960 against 6,551 statements/s).
    UPDATE voucher_item v
       SET user_id = p.user_id, claimed_at = now()
      FROM plain p
     WHERE v.id = (SELECT f.id
                     FROM voucher_item f
                    WHERE f.campaign_id BETWEEN p.campaign_id AND p.campaign_id
                      AND f.id >= p.free_from
                      AND f.user_id IS NULL
                    ORDER BY f.campaign_id, f.id
                    LIMIT 1
                      FOR UPDATE SKIP LOCKED)
       AND NOT EXISTS (SELECT 1 FROM owned)
    RETURNING p.id AS message_id, v.id, v.code, v.user_id, v.campaign_id
), notified AS (
    INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
    SELECT notification_key(c.id, c.user_id), c.campaign_id, c.id, c.user_id, c.code
      FROM claimed c
), finished AS (
    SELECT message_id AS id, 'claimed' AS status, id AS voucher_id FROM claimed
    UNION ALL
    SELECT id, 'already_claimed', voucher_id FROM owned
), marked AS (
    UPDATE message_queue q
       SET done_at = now(), status = f.status, voucher_id = f.voucher_id
      FROM finished f
     WHERE q.id = f.id
       AND q.done_at IS NULL
)
SELECT t.id, t.lag_s, f.status, f.voucher_id, p.campaign_id, p.free_from
  FROM taken t
  LEFT JOIN finished f ON f.id = t.id
  LEFT JOIN plain p ON p.id = t.id;
