-- queue_listen: subscribes a claimer's connection to the queue's wake-up
-- channel (no parameters). queue_notify sends on it after every enqueue, so an
-- idle worker sleeps on its socket instead of polling the table.
LISTEN voucherd_queue
