-- Retention (voucherd prune): sent notifications, done queue rows, outcomes
-- and dead letters are deleted once older than a retention, in small
-- batches ordered by age. Each batch starts where the last one ended
-- (sql/prune_*.sql take the last age they deleted as a lower bound), so these
-- indexes let every batch read only the rows it deletes: no batch scans a
-- table, and none walks the entries the batches before it left behind.
--
-- Cost on the hot paths, all appends at the right edge of a b-tree (the
-- timestamps grow with time): a claim from the pg queue adds one entry to
-- message_queue_done_idx (its mark-done UPDATE is not HOT anyway: done_at is
-- in message_queue_pending_idx's predicate); a claim with a message id adds
-- one to message_outcome_recorded_idx; a delivered notification adds one to
-- notification_outbox_sent_idx. The take of the outbox needs no new index:
-- sql/outbox_take.sql orders by notification_outbox_pending_idx's own key.

-- Only 'sent' rows are pruned; 'failed' ones stay for `notify --requeue-failed`.
CREATE INDEX notification_outbox_sent_idx
    ON notification_outbox (sent_at) WHERE status = 'sent';

CREATE INDEX message_queue_done_idx
    ON message_queue (done_at) WHERE done_at IS NOT NULL;

CREATE INDEX message_outcome_recorded_idx
    ON message_outcome (recorded_at);

CREATE INDEX dead_letter_created_idx
    ON dead_letter (created_at);
