-- queue_take: takes up to $1 pending messages, oldest first, for the calling
-- transaction.
--   $1 = how many (the worker's --batch; only a LIMIT, so that the worker
--        can write it in: db/fixed_limit.hpp)
-- FOR UPDATE SKIP LOCKED: concurrent claimers take disjoint messages without
-- waiting; the row lock lasts until the transaction that also claims and
-- marks them done commits, or is dropped with it on a crash, when the
-- message becomes pending again (exactly-once effect). lag_s feeds the
-- queue-lag metric; attempts counts its tries alone (queue_note_attempt).
SELECT id, body,
       extract(epoch FROM clock_timestamp() - enqueued_at)::float8 AS lag_s,
       attempts
  FROM message_queue
 WHERE done_at IS NULL
 ORDER BY id
 LIMIT $1
   FOR UPDATE SKIP LOCKED
