-- prune_sent_notifications: deletes one batch of notifications sent longer
-- ago than the retention, oldest first (voucherd prune).
--   $1 = retention in seconds   $2 = batch size
--   $3 = where the sweep is (the `last` of the batch before; NULL at its start)
-- 'pending' rows (a dispatcher's lease) and 'failed' ones (kept for
-- `notify --requeue-failed`) are never touched; SKIP LOCKED passes over a
-- row anyone holds, and the batch's row locks are all it takes: a claim
-- never needs a sent notification. notification_outbox_sent_idx (migration
-- 0007) serves the scan, from $3 on.
-- Returns one row: deleted (count), last (the newest sent_at deleted, as
-- text; NULL when none).
WITH doomed AS (
    SELECT id, sent_at
      FROM notification_outbox
     WHERE status = 'sent'
       AND sent_at < now() - $1::bigint * interval '1 second'
       AND sent_at >= coalesce($3::timestamptz, '-infinity')
     ORDER BY sent_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM notification_outbox n
     USING doomed
     WHERE n.id = doomed.id
    RETURNING doomed.sent_at
)
SELECT count(*) AS deleted, max(sent_at)::text AS last FROM gone;
