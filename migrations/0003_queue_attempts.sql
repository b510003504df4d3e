-- Poison isolation (SPEC I8): a message whose claim fails with an error about
-- the message (a constraint, a trigger refusing it, or a timeout while other
-- messages go through) is tried alone from then on, and each try alone is
-- counted here before it runs, in its own committed transaction, so the
-- count survives a worker that crashes on the message. After the worker's
-- --max-deliveries tries it is rejected and dead-lettered with last_error.
ALTER TABLE message_queue
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text;
