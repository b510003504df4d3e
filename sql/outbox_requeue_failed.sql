-- outbox_requeue_failed: give notifications that ended 'failed' a fresh set of
-- attempts, e.g. after the webhook receiver's outage is over
-- (`voucherd notify --requeue-failed`).
--   $1 = campaign name ('' = every campaign)
-- Returns one row per requeued notification.
UPDATE notification_outbox n
   SET status = 'pending',
       attempts = 0,
       next_attempt_at = now(),
       last_error = NULL
  FROM campaign c
 WHERE c.id = n.campaign_id
   AND n.status = 'failed'
   AND ($1 = '' OR c.name = $1)
RETURNING n.id;
