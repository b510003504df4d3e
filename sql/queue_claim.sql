-- queue_claim: the Postgres queue's one-statement path. Takes up to $2
-- pending messages, claims a voucher for each plain one, writes the outbox
-- rows and records the outcomes on the queue rows: one statement, one round
-- trip, one commit (the statement is its own transaction).
--   $1 = the worker's --campaign, for messages that name none ('' for none)
--   $2 = how many messages (the worker's --batch; last, and only a LIMIT, so
--        that the worker can write it in: db/fixed_limit.hpp)
-- A message is plain when the queue row holds its request, parsed where it
-- was enqueued (migration 0009: user_id, and campaign or the worker's), it
-- was never tried alone (attempts = 0: a suspect is only ever tried alone,
-- by the general path), it is the first message of its user here, its
-- campaign exists and is active, and SKIP LOCKED found a free voucher for
-- it (a sold_out is only a suspicion until claim_wait_free). Any other
-- message is left as it was: pending, unlocked once this statement commits,
-- and returned with a NULL status. The worker then takes those by id
-- (queue_take_ids) and runs them through the general path (take, parse,
-- claim_one / claim_batch, queue_mark_done), which answers each of them as
-- it would any message.
-- Plain messages get what the general path gives them: 'claimed' (voucher
-- row, outbox row and queue row written by this statement) or
-- 'already_claimed' with the user's voucher (queue row only). A user being
-- claimed concurrently elsewhere fails voucher_item_owner_key and with it
-- the statement: nothing is written, and the worker runs the general path.
-- Vouchers come from voucher_item_free_idx as in claim_one (a range of one
-- campaign, ordered by campaign_id, id, from the campaign's free mark): the
-- partial index keeps the entries of claimed rows until vacuum, so without
-- the mark each statement would step over every voucher claimed since.
-- It moves no free mark, but returns what the claimer's free-mark policy
-- needs to move it (claim_core::advance_marks).
-- Returns one row per message taken: id, lag_s, status ('claimed',
-- 'already_claimed' or NULL: left for the general path), voucher_id, and
-- for a plain message its campaign_id and the campaign's free_from.
WITH taken AS MATERIALIZED (
    SELECT id, user_id, campaign, attempts,
           extract(epoch FROM clock_timestamp() - enqueued_at)::float8 AS lag_s
      FROM message_queue
     WHERE done_at IS NULL
     ORDER BY id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), plain AS MATERIALIZED (
    -- Holding its request, never tried alone, the first message of its user
    -- here, and in an active campaign (a NULL campaign joins none).
    SELECT p.id, p.user_id, c.id AS campaign_id, c.free_from
      FROM (SELECT r.*, row_number() OVER (PARTITION BY r.campaign, r.user_id ORDER BY r.id) AS nth
              FROM (SELECT t.id, t.user_id, coalesce(t.campaign, nullif($1, '')) AS campaign
                      FROM taken t
                     WHERE t.attempts = 0 AND t.user_id IS NOT NULL) r) p
      JOIN campaign_state c ON c.name = p.campaign AND c.active  -- migration 0005
     WHERE p.nth = 1
), owned AS MATERIALIZED (
    -- One voucher_item_owner_key probe per message.
    SELECT p.id, o.voucher_id
      FROM plain p
     CROSS JOIN LATERAL (SELECT v.id AS voucher_id
                           FROM voucher_item v
                          WHERE v.campaign_id = p.campaign_id AND v.user_id = p.user_id
                          LIMIT 1) o
), wanting AS MATERIALIZED (
    SELECT p.id, p.user_id, p.campaign_id, p.free_from,
           row_number() OVER (PARTITION BY p.campaign_id ORDER BY p.id) AS rn
      FROM plain p
     WHERE NOT EXISTS (SELECT 1 FROM owned o WHERE o.id = p.id)
), picked AS MATERIALIZED (
    SELECT w.campaign_id, f.id, row_number() OVER (PARTITION BY w.campaign_id ORDER BY f.id) AS rn
      FROM (SELECT campaign_id, min(free_from) AS free_from, count(*) AS n FROM wanting GROUP BY campaign_id) w
     CROSS JOIN LATERAL (SELECT v.id
                           FROM voucher_item v
                          WHERE v.campaign_id BETWEEN w.campaign_id AND w.campaign_id
                            AND v.id >= w.free_from
                            AND v.user_id IS NULL
                          ORDER BY v.campaign_id, v.id
                          LIMIT w.n
                            FOR UPDATE SKIP LOCKED) f
), claimed AS (
    UPDATE voucher_item v
       SET user_id = w.user_id, claimed_at = now()
      FROM picked p
      JOIN wanting w ON w.campaign_id = p.campaign_id AND w.rn = p.rn
     WHERE v.id = p.id
    RETURNING w.id AS message_id, v.id, v.code, v.user_id, v.campaign_id
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
       AND q.id = ANY (ARRAY(SELECT id FROM finished))  -- probes, not a scan of the queue
       AND q.done_at IS NULL
)
SELECT t.id, t.lag_s, f.status, f.voucher_id, p.campaign_id, p.free_from
  FROM taken t
  LEFT JOIN finished f ON f.id = t.id
  LEFT JOIN plain p ON p.id = t.id
 ORDER BY t.id;
