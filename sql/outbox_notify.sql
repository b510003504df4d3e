-- outbox_notify: wakes the dispatchers listening on the outbox (no
-- parameters). Sent by a worker's outbox_bell in a transaction of its own
-- after claims that wrote notifications committed, at most once per
-- interval: a NOTIFY in every claim transaction would queue each committing
-- claimer on Postgres's one global notify lock.
SELECT pg_notify('voucherd_outbox', '')
