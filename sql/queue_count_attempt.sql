-- queue_count_attempt: counts one try alone of a suspected poison message,
-- before the try, in a transaction of its own (see migration 0003).
--   $1 = message id
-- SKIP LOCKED: when another claimer holds the row it is trying the message
-- itself; no row is returned and this claimer leaves it alone.
-- Returns the attempts so far, this one included.
UPDATE message_queue
   SET attempts = attempts + 1
 WHERE id = (SELECT id FROM message_queue
              WHERE id = $1::bigint AND done_at IS NULL
                FOR UPDATE SKIP LOCKED)
RETURNING attempts
