-- campaign_stats: the numbers of `voucherd stats`.
--   $1 = campaign name
-- Queue and dead-letter counts are for the whole database: a queued message
-- names its campaign inside its body.
SELECT c.id,
       (SELECT count(*) FROM voucher_item v WHERE v.campaign_id = c.id) AS total,
       (SELECT count(*) FROM voucher_item v WHERE v.campaign_id = c.id AND v.user_id IS NOT NULL) AS claimed,
       (SELECT count(*) FROM notification_outbox n WHERE n.campaign_id = c.id AND n.status = 'pending') AS outbox_pending,
       (SELECT coalesce(extract(epoch FROM now() - min(n.created_at)), 0)::float8
          FROM notification_outbox n WHERE n.campaign_id = c.id AND n.status = 'pending') AS outbox_oldest_pending_s,
       (SELECT count(*) FROM notification_outbox n WHERE n.campaign_id = c.id AND n.status = 'sent') AS outbox_sent,
       (SELECT count(*) FROM notification_outbox n WHERE n.campaign_id = c.id AND n.status = 'failed') AS outbox_failed,
       (SELECT count(*) FROM message_queue q WHERE q.done_at IS NULL) AS queue_pending,
       (SELECT count(*) FROM dead_letter) AS dead_letters,
       c.starts_at, c.ends_at
  FROM campaign c
 WHERE c.name = $1;
