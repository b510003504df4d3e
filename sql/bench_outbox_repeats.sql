-- bench_outbox_repeats: users of a campaign with more than one notification in
-- the outbox (a user notified twice, possibly of different codes).
--   $1 = campaign name
SELECT n.user_id, count(*) AS notifications
  FROM notification_outbox n
  JOIN campaign c ON c.id = n.campaign_id
 WHERE c.name = $1
 GROUP BY n.user_id
HAVING count(*) > 1;
