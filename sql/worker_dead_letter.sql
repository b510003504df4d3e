-- worker_dead_letter: keeps a rejected message, and why, for an operator.
--   $1 = source ('pg' | 'redis' | 'stdin')   $2 = message id (NULL for none)
--   $3 = the message bytes, possibly cut (bytea)   $4 = reason
INSERT INTO dead_letter (source, message_id, body, reason) VALUES ($1, $2, $3, $4)
