-- prune_dead_letters: deletes one batch of dead letters older than the
-- retention, oldest first (voucherd prune).
--   $1 = retention in seconds   $2 = batch size
--   $3 = where the sweep is (the `last` of the batch before; NULL at its start)
-- dead_letter_created_idx (migration 0007) serves the scan, from $3 on.
-- Returns one row: deleted (count), last (the newest created_at deleted, as
-- text; NULL when none).
WITH doomed AS (
    SELECT id, created_at
      FROM dead_letter
     WHERE created_at < now() - $1::bigint * interval '1 second'
       AND created_at >= coalesce($3::timestamptz, '-infinity')
     ORDER BY created_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM dead_letter d
     USING doomed
     WHERE d.id = doomed.id
    RETURNING doomed.created_at
)
SELECT count(*) AS deleted, max(created_at)::text AS last FROM gone;
