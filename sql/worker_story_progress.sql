-- worker_story_progress: how far the story's messages have come through the
-- daemon: queued messages not yet done, and notifications not yet delivered.
--   $1 = campaign name   $2 = the story's queue ids (bigint[])
SELECT (SELECT count(*) FROM message_queue
         WHERE id = ANY($2::bigint[]) AND done_at IS NULL) AS pending,
       (SELECT count(*) FROM notification_outbox n
          JOIN campaign c ON c.id = n.campaign_id
         WHERE c.name = $1 AND n.status = 'pending') AS unsent
