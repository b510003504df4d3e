-- queue_take_ids: takes the given pending messages for the calling
-- transaction, like queue_take but by id: a batch that failed is split and
-- its messages tried one by one.
--   $1 = message ids (bigint[])
-- Skips messages that are done or that another claimer holds meanwhile.
SELECT id, body,
       extract(epoch FROM clock_timestamp() - enqueued_at)::float8 AS lag_s,
       attempts
  FROM message_queue
 WHERE id = ANY($1::bigint[])
   AND done_at IS NULL
 ORDER BY id
   FOR UPDATE SKIP LOCKED
