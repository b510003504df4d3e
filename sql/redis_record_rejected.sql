-- redis_record_rejected: records a rejected stream message as its one outcome
-- and dead-letters it, unless the message already has an outcome (a
-- redelivery of a message whose first delivery committed but was not acked).
--   $1 = stream message id   $2 = campaign ('' when unknown)   $3 = user id (NULL when none)
--   $4 = reason   $5 = the message bytes, possibly cut (bytea)
-- Returns one row (dead_lettered = true) when this call recorded it.
WITH recorded AS (
    INSERT INTO message_outcome (message_id, campaign, user_id, status, reason)
    VALUES ($1, $2, $3, 'rejected', $4)
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), dead AS (
    INSERT INTO dead_letter (source, message_id, body, reason)
    SELECT 'redis', message_id, $5, $4 FROM recorded
    RETURNING id
)
SELECT count(*) > 0 AS dead_lettered FROM dead
