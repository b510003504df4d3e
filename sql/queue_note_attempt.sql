-- queue_note_attempt: counts a try alone of a suspected poison message (before
-- the try, in a transaction of its own, so the count survives a worker that
-- crashes on the message; see migration 0003) and keeps its last error.
--   $1 = message id   $2 = tries to add (0 or 1)   $3 = the error of a try that failed (NULL for none)
-- SKIP LOCKED: when another claimer holds the row it is trying the message
-- itself; no row is returned and this claimer leaves it alone.
-- Returns the tries so far and the last error.
UPDATE message_queue
   SET attempts = attempts + $2::integer,
       last_error = coalesce($3, last_error)
 WHERE id = (SELECT id FROM message_queue
              WHERE id = $1::bigint AND done_at IS NULL
                FOR UPDATE SKIP LOCKED)
RETURNING attempts, last_error
