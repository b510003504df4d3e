-- queue_notify: wakes the workers listening on the queue (no parameters).
-- Delivered when the enqueuing transaction commits.
SELECT pg_notify('voucherd_queue', '')
