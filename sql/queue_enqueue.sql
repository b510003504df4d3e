-- queue_enqueue: puts one message on the Postgres queue.
--   $1 = the message bytes (bytea; kept as given, even when not UTF-8)
--   $2 = its user id, $3 = the campaign it names, as parsed (migration 0009;
--        NULL, NULL when it does not parse; $3 NULL when it names none)
-- Returns the message's queue id.
INSERT INTO message_queue (body, user_id, campaign) VALUES ($1, $2, $3) RETURNING id
