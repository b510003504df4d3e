-- outbox_listen: subscribes a dispatcher's listening connection to the
-- outbox's wake-up channel (no parameters). Workers send on it through
-- outbox_notify, at most every few milliseconds and never inside a claim
-- transaction, so an idle `voucherd notify` sleeps on its socket instead of
-- polling the table.
LISTEN voucherd_outbox
