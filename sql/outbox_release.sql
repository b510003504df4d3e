-- outbox_release: give back a leased notification that was not attempted
-- (the dispatcher is stopping), so the next dispatcher need not wait for the lease.
--   $1 = outbox id   $2 = attempts the row had when it was taken
UPDATE notification_outbox
   SET next_attempt_at = now()
 WHERE id = $1
   AND status = 'pending'
   AND attempts = $2;
