-- retention_backlog: what is waiting, for `voucherd stats` and the worker's
-- gauges: undelivered notifications, queued messages, and the rows
-- `voucherd prune` would delete with the given retentions.
--   $1..$4 = retention in seconds of sent notifications, done messages,
--            outcomes, dead letters
-- Every count reads one partial or time index (0001, 0002, 0007), never a
-- table scan; the prunable counts read only the index range they count.
-- Returns one row.
SELECT (SELECT count(*) FROM notification_outbox WHERE status = 'pending') AS outbox_pending,
       (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
          FROM notification_outbox WHERE status = 'pending') AS outbox_oldest_pending_s,
       (SELECT count(*) FROM message_queue WHERE done_at IS NULL) AS queue_pending,
       (SELECT count(*) FROM notification_outbox
         WHERE status = 'sent' AND sent_at < now() - $1::bigint * interval '1 second') AS prunable_sent_notifications,
       (SELECT count(*) FROM message_queue
         WHERE done_at IS NOT NULL AND done_at < now() - $2::bigint * interval '1 second') AS prunable_done_messages,
       (SELECT count(*) FROM message_outcome
         WHERE recorded_at < now() - $3::bigint * interval '1 second') AS prunable_outcomes,
       (SELECT count(*) FROM dead_letter
         WHERE created_at < now() - $4::bigint * interval '1 second') AS prunable_dead_letters;
