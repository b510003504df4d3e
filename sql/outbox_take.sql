-- outbox_take: lease a batch of due notifications to one dispatcher.
--   $1 = batch size   $2 = lease in milliseconds   $3 = id cursor (take ids > $3; 0 at the start of a pass)
-- FOR UPDATE SKIP LOCKED lets any number of dispatchers drain one outbox
-- without waiting on each other. Instead of holding the row locks while a sink
-- is called (a long transaction would hold back vacuum), the rows are leased:
-- next_attempt_at moves past the lease, so no one else takes them until this
-- dispatcher marks them (outbox_mark_sent / outbox_mark_retry) or dies and the
-- lease runs out. The cursor makes a pass visit each row at most once.
-- Returns the leased rows (in no particular order) with their campaign's name.
WITH due AS (
    SELECT id
      FROM notification_outbox
     WHERE status = 'pending'
       AND next_attempt_at <= now()
       AND id > $3
     ORDER BY id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE notification_outbox n
   SET next_attempt_at = now() + $2::bigint * interval '1 millisecond'
  FROM due, campaign c
 WHERE n.id = due.id
   AND c.id = n.campaign_id
RETURNING n.id, n.idempotency_key, c.name AS campaign, n.voucher_id, n.user_id, n.code, n.attempts;
