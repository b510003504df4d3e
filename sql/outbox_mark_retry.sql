-- outbox_mark_retry: the sink refused the notification (or could not be reached).
--   $1 = outbox id   $2 = attempts the row had when it was taken
--   $3 = the error   $4 = backoff before the next attempt, in milliseconds
--   $5 = max attempts (the row ends 'failed' when this attempt was the last)
-- Same guard as outbox_mark_sent. Returns the new status ('pending' | 'failed').
UPDATE notification_outbox
   SET attempts = attempts + 1,
       last_error = $3,
       status = CASE WHEN attempts + 1 >= $5::integer THEN 'failed' ELSE 'pending' END,
       next_attempt_at = now() + $4::bigint * interval '1 millisecond'
 WHERE id = $1
   AND status = 'pending'
   AND attempts = $2
RETURNING status;
