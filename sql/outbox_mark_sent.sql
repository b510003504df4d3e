-- outbox_mark_sent: the sink accepted the notification.
--   $1 = outbox id   $2 = attempts the row had when it was taken
-- Applies only while the row is still pending with that attempts count: a
-- dispatcher whose lease ran out must not overwrite another one's result.
-- Returns one row when marked, none when the row had moved on.
UPDATE notification_outbox
   SET status = 'sent',
       attempts = attempts + 1,
       sent_at = now(),
       last_error = NULL
 WHERE id = $1
   AND status = 'pending'
   AND attempts = $2
RETURNING status;
