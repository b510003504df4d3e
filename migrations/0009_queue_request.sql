-- A queue message's claim request, parsed once where it is enqueued
-- (enqueue_messages in source/pg_queue_source.cpp, with the worker's own
-- parser): its user id and the campaign it names (campaign NULL: the
-- worker's --campaign). Both NULL for a message put on the queue as bytes
-- alone (INSERT (body)) and for one the parser rejects: the worker parses
-- those itself, on its general path. With them, the worker takes, claims
-- and records a message in one statement (sql/queue_claim.sql), parsing
-- nothing: the body stays the message of record, for the general path and
-- for dead letters.
ALTER TABLE message_queue ADD COLUMN user_id text, ADD COLUMN campaign text;
GRANT INSERT (user_id, campaign) ON message_queue TO voucherd_worker;
