-- outbox_take: lease a batch of due notifications to one dispatcher.
--   $1 = batch size   $2 = lease in milliseconds
--   $3 = when the pass started (timestamptz; NULL on a pass's first take: now)
-- Oldest due first, in the order of notification_outbox_pending_idx
-- (next_attempt_at, id): the scan reads the due rows it returns and stops,
-- however many sent or failed rows the table holds, and rows leased or
-- backing off (next_attempt_at in the future) lie beyond its range.
-- FOR UPDATE SKIP LOCKED lets any number of dispatchers drain one outbox
-- without waiting on each other. Instead of holding the row locks while a sink
-- is called (a long transaction would hold back vacuum), the rows are leased:
-- next_attempt_at moves past the lease, so no one else takes them until this
-- dispatcher marks them (outbox_mark_sent / outbox_mark_retry) or dies and the
-- lease runs out. A pass takes only what was due when it started
-- (next_attempt_at <= $3): a row it tried and marked for a retry is due later
-- than that, so a pass visits each row at most once.
-- Returns the leased rows (in no particular order) with their campaign's name,
-- and the pass's start for the next take.
WITH due AS (
    SELECT id
      FROM notification_outbox
     WHERE status = 'pending'
       AND next_attempt_at <= coalesce($3::timestamptz, now())
     ORDER BY next_attempt_at, id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE notification_outbox n
   SET next_attempt_at = now() + $2::bigint * interval '1 millisecond'
  FROM due, campaign c
 WHERE n.id = due.id
   AND c.id = n.campaign_id
RETURNING n.id, n.idempotency_key, c.name AS campaign, n.voucher_id, n.user_id, n.code, n.attempts,
          coalesce($3::timestamptz, now())::text AS pass_started;
