-- outbox_pending_count: what the outbox holds undelivered, for the
-- voucherd_outbox_pending and voucherd_outbox_oldest_pending_seconds gauges
-- and for the dispatcher's sleep (no parameters). Reads the pending index only.
-- Returns one row: pending (count), oldest_age_s (age of the oldest pending
-- notification, 0 when none), next_due_ms (until the earliest pending one is
-- due, <= 0 when one is due now; NULL when none is pending).
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s,
       (extract(epoch FROM min(next_attempt_at) - now()) * 1000)::bigint AS next_due_ms
  FROM notification_outbox
 WHERE status = 'pending';
