-- story_table: who owns which code of a campaign and who was told which code
-- (from the outbox), for the given users.
--   $1 = campaign name   $2 = user ids, newline-separated
SELECT u.user_id,
       v.code AS owns,
       (SELECT string_agg(n.code, ', ' ORDER BY n.id)
          FROM notification_outbox n
         WHERE n.campaign_id = c.id AND n.user_id = u.user_id) AS told
  FROM unnest(string_to_array($2, E'\n')) WITH ORDINALITY AS u(user_id, ord)
  LEFT JOIN campaign c ON c.name = $1
  LEFT JOIN voucher_item v ON v.campaign_id = c.id AND v.user_id = u.user_id
 ORDER BY u.ord;
