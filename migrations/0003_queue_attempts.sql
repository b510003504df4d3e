-- Poison isolation (SPEC I8): a message whose claim keeps failing with an
-- error no retry can fix is tried alone, and each try alone is counted here
-- before it runs, in its own committed transaction, so the count survives a
-- worker that crashes on the message. After the worker's --max-deliveries
-- tries the message is rejected and dead-lettered with the database's error.
ALTER TABLE message_queue
    ADD COLUMN attempts integer NOT NULL DEFAULT 0;
