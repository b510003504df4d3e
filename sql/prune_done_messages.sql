-- prune_done_messages: deletes one batch of Postgres queue messages done
-- longer ago than the retention, oldest first (voucherd prune).
--   $1 = retention in seconds   $2 = batch size
--   $3 = where the sweep is (the `last` of the batch before; NULL at its start)
-- A message is never taken again once done (queue_take reads done_at IS
-- NULL only), so deleting it cannot make it come back; pending messages are
-- never touched, and SKIP LOCKED passes over a row anyone holds.
-- message_queue_done_idx (migration 0007) serves the scan, from $3 on.
-- Returns one row: deleted (count), last (the newest done_at deleted, as
-- text; NULL when none).
WITH doomed AS (
    SELECT id, done_at
      FROM message_queue
     WHERE done_at IS NOT NULL
       AND done_at < now() - $1::bigint * interval '1 second'
       AND done_at >= coalesce($3::timestamptz, '-infinity')
     ORDER BY done_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM message_queue q
     USING doomed
     WHERE q.id = doomed.id
    RETURNING doomed.done_at
)
SELECT count(*) AS deleted, max(done_at)::text AS last FROM gone;
