-- queue_enqueue: puts one message on the Postgres queue.
--   $1 = the message bytes (bytea; kept as given, even when not UTF-8)
-- Returns the message's queue id.
INSERT INTO message_queue (body) VALUES ($1) RETURNING id
