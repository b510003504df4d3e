-- The worker's --batch 1 transaction (sql/queue_take.sql, sql/claim_one.sql,
-- sql/queue_mark_done.sql, its own SQL) in its 4 round trips (BEGIN alone: pgbench cannot \gset in a pipeline), for pgbench
-- -M prepared: (1) take [BEGIN already sent], (2) claim_one, (3) mark_done +
-- COMMIT + the next BEGIN pipelined. Separates round trips and the worker's
-- SQL from its client CPU (issue 10 point 4). The user id is the queue id.
BEGIN;
SELECT id AS qid, body,
       extract(epoch FROM clock_timestamp() - enqueued_at)::float8 AS lag_s, attempts
  FROM message_queue WHERE done_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED \gset
WITH camp AS MATERIALIZED (
    SELECT id, free_from, active FROM campaign_state WHERE name = 'bench'  -- migration 0005
), prior AS MATERIALIZED (
    SELECT m.campaign, m.user_id
      FROM message_outcome m
     WHERE m.source = 'pg'::text AND m.message_id = ''::text AND ''::text <> ''
), reused AS MATERIALIZED (
    SELECT format('message id %s of source %s was already used for user %s in campaign %s',
                  ''::text, 'pg'::text, coalesce(p.user_id, '(none)'), p.campaign) AS reason
      FROM prior p
     WHERE p.campaign <> 'bench' OR p.user_id IS DISTINCT FROM :qid::text
), owned AS MATERIALIZED (
    SELECT v.id, v.code
      FROM voucher_item v
     WHERE v.campaign_id = (SELECT id FROM camp)
       AND v.user_id = :qid::text
       AND NOT EXISTS (SELECT 1 FROM reused)
), claimed AS (
    UPDATE voucher_item
       SET user_id = :qid::text, claimed_at = now()
     WHERE id = (SELECT v.id
                   FROM voucher_item v
                  WHERE v.campaign_id = (SELECT id FROM camp WHERE active)
                    AND v.id >= (SELECT free_from FROM camp)
                    AND v.user_id IS NULL
                    AND NOT EXISTS (SELECT 1 FROM owned)
                    AND NOT EXISTS (SELECT 1 FROM reused)
                  ORDER BY v.id
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED)
    RETURNING id, code, campaign_id
), notified AS (
    INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
    SELECT notification_key(claimed.id, :qid::text), claimed.campaign_id, claimed.id, :qid::text, claimed.code
      FROM claimed
), result AS (
    SELECT CASE WHEN r.reason IS NOT NULL THEN 'reused'
                ELSE claim_status(c.id IS NOT NULL, o.id IS NOT NULL, camp.active) END AS status,
           coalesce(c.id, o.id) AS voucher_id,
           coalesce(c.code, o.code) AS code,
           camp.id AS campaign_id,
           camp.free_from,
           r.reason
      FROM camp
      LEFT JOIN owned o ON true
      LEFT JOIN claimed c ON true
      LEFT JOIN reused r ON true
), recorded AS (
    -- No ON CONFLICT: a conflict here is a racing first use (see above).
    INSERT INTO message_outcome (source, message_id, campaign, user_id, status, voucher_id)
    SELECT 'pg'::text, ''::text, 'bench', :qid::text, result.status, result.voucher_id
      FROM result
     WHERE ''::text <> '' AND NOT EXISTS (SELECT 1 FROM prior)
       AND result.status NOT IN ('inactive', 'reused') AND (result.status <> 'sold_out' OR false::boolean)
), rejected AS (
    -- The dead letter's body: the message as the claim saw it. Also what
    -- tells a redelivery of this message (no second dead letter) from
    -- another message reusing the id.
    SELECT result.reason,
           convert_to(json_build_object('user_id', :qid::text::text, 'campaign', 'bench'::text,
                                        'message_id', ''::text::text)::text, 'UTF8') AS body
      FROM result
     WHERE result.status = 'reused'
), dead AS (
    INSERT INTO dead_letter (source, message_id, body, reason)
    SELECT 'pg'::text, ''::text, r.body, r.reason
      FROM rejected r
     WHERE NOT EXISTS (SELECT 1 FROM dead_letter d
                        WHERE d.source = 'pg'::text AND d.message_id = ''::text AND d.body = r.body)
)
SELECT status, voucher_id, code, campaign_id, free_from, reason FROM result \gset
\startpipeline
UPDATE message_queue q
   SET done_at = now(), status = d.status, reason = d.reason, voucher_id = d.voucher_id
  FROM unnest(ARRAY[:qid]::bigint[], ARRAY[:status]::text[], ARRAY[NULL]::text[], ARRAY[:voucher_id]::bigint[]) AS d(id, status, reason, voucher_id)
 WHERE q.id = d.id AND q.done_at IS NULL;
COMMIT;
\endpipeline
