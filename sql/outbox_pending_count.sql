-- outbox_pending_count: notifications not yet delivered, for the
-- voucherd_outbox_pending gauge. No parameters.
SELECT count(*) FROM notification_outbox WHERE status = 'pending';
