-- prune_outcomes: deletes one batch of recorded outcomes older than the
-- retention, oldest first (voucherd prune).
--   $1 = retention in seconds   $2 = batch size
--   $3 = where the sweep is (the `last` of the batch before; NULL at its start)
-- The rule that keeps I4 (maintenance/retention.hpp): an outcome is the
-- record that a message was answered; it is pruned only after the retention,
-- which must be longer than any source may hold the message for a
-- redelivery. Rows are addressed by ctid (held by the row lock between the
-- scan and the delete), so the statement does not depend on the table's key.
-- message_outcome_recorded_idx (migration 0007) serves the scan, from $3 on.
-- Returns one row: deleted (count), last (the newest recorded_at deleted, as
-- text; NULL when none).
WITH doomed AS MATERIALIZED (
    SELECT ctid AS row_id, recorded_at
      FROM message_outcome
     WHERE recorded_at < now() - $1::bigint * interval '1 second'
       AND recorded_at >= coalesce($3::timestamptz, '-infinity')
     ORDER BY recorded_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM message_outcome
     WHERE ctid = ANY (ARRAY(SELECT row_id FROM doomed))
    RETURNING recorded_at
)
SELECT count(*) AS deleted, max(recorded_at)::text AS last FROM gone;
