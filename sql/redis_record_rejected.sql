-- redis_record_rejected: records a rejected stream message as its one outcome
-- and dead-letters it, unless the message already has an outcome (a
-- redelivery of a message whose first delivery committed but was not acked).
--   $1 = source ('redis:<stream>')   $2 = stream entry id
--   $3 = campaign ('' when unknown)   $4 = user id (NULL when none)
--   $5 = reason   $6 = the message bytes, possibly cut (bytea)
-- Returns one row (dead_lettered = true) when this call recorded it.
WITH recorded AS (
    INSERT INTO message_outcome (source, message_id, campaign, user_id, status, reason)
    VALUES ($1, $2, $3, $4, 'rejected', $5)
    ON CONFLICT (source, message_id) DO NOTHING
    RETURNING source, message_id
), dead AS (
    INSERT INTO dead_letter (source, message_id, body, reason)
    SELECT source, message_id, $6, $5 FROM recorded
    RETURNING id
)
SELECT count(*) > 0 AS dead_lettered FROM dead
