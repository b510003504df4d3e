-- claim_batch: claim for many users of one campaign in one statement.
--   $1 = campaign name
--   $2 = user ids, separated by newlines (user ids never contain control characters)
--   $3 = message ids in the same order, newline-separated ('' for none)
--   $4 = whether sold_out answers are final (boolean), as in claim_one
-- The same atomic SKIP LOCKED claim as claim_one, for up to a batch of users
-- at once: the users without a voucher are numbered in input order, as many
-- free vouchers are locked (skipping rows other claimers hold), and the two
-- lists are zipped by number. A user listed twice is claimed once; later
-- occurrences get 'already_claimed' with the same code. If a listed user is
-- being claimed concurrently elsewhere, voucher_item_owner_key aborts the
-- statement and the caller retries the whole batch.
-- Returns no row for an unknown campaign, else one row per input line, in
-- input order: ord, user_id, status, voucher_id, code, campaign_id, free_from.
WITH camp AS MATERIALIZED (
    SELECT id, free_from, active FROM campaign_state WHERE name = $1  -- migration 0005
), input AS MATERIALIZED (
    SELECT x.user_id, nullif(x.message_id, '') AS message_id, x.ord
      FROM unnest(string_to_array($2, E'\n'), string_to_array($3, E'\n'))
           WITH ORDINALITY AS x(user_id, message_id, ord)
     WHERE x.user_id IS NOT NULL
), owned AS MATERIALIZED (
    -- LATERAL: one voucher_item_owner_key probe per input user, rather than
    -- a scan of every owner of the campaign, which grows as the pool drains.
    SELECT f.user_id, v.id, v.code
      FROM (SELECT DISTINCT user_id FROM input) f
     CROSS JOIN LATERAL (SELECT o.id, o.code
                           FROM voucher_item o
                          WHERE o.campaign_id = (SELECT id FROM camp)
                            AND o.user_id = f.user_id
                          LIMIT 1) v  -- at most one (I2); also keeps the probe per user
), first_seen AS MATERIALIZED (
    SELECT user_id, min(ord) AS ord FROM input GROUP BY user_id
), wanting AS MATERIALIZED (
    SELECT f.user_id, row_number() OVER (ORDER BY f.ord) AS rn
      FROM first_seen f
     WHERE NOT EXISTS (SELECT 1 FROM owned o WHERE o.user_id = f.user_id)
), picked AS MATERIALIZED (
    SELECT f.id, row_number() OVER (ORDER BY f.id) AS rn
      FROM (SELECT v.id
              FROM voucher_item v
             WHERE v.campaign_id = (SELECT id FROM camp WHERE active)
               AND v.id >= (SELECT free_from FROM camp)
               AND v.user_id IS NULL
             ORDER BY v.id
             LIMIT (SELECT count(*) FROM wanting)
             FOR UPDATE SKIP LOCKED) f
), claimed AS (
    UPDATE voucher_item v
       SET user_id = w.user_id, claimed_at = now()
      FROM picked p
      JOIN wanting w USING (rn)
     WHERE v.id = p.id
    RETURNING v.id, v.code, v.user_id, v.campaign_id
), notified AS (
    INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
    SELECT notification_key(c.id, c.user_id), c.campaign_id, c.id, c.user_id, c.code
      FROM claimed c
), result AS (
    SELECT i.ord, i.user_id, i.message_id,
           -- a user listed twice: the first line took it, the later ones own it
           claim_status(c.id IS NOT NULL AND i.ord = f.ord, c.id IS NOT NULL OR o.id IS NOT NULL, camp.active)
               AS status,
           coalesce(c.id, o.id) AS voucher_id,
           coalesce(c.code, o.code) AS code,
           camp.id AS campaign_id,
           camp.free_from
      FROM input i
     CROSS JOIN camp
      JOIN first_seen f ON f.user_id = i.user_id
      LEFT JOIN owned o ON o.user_id = i.user_id
      LEFT JOIN claimed c ON c.user_id = i.user_id
), recorded AS (
    INSERT INTO message_outcome (message_id, campaign, user_id, status, voucher_id)
    SELECT r.message_id, $1, r.user_id, r.status, r.voucher_id
      FROM result r
     WHERE r.message_id IS NOT NULL AND r.status <> 'inactive' AND (r.status <> 'sold_out' OR $4::boolean)
    ON CONFLICT (message_id) DO NOTHING
)
SELECT ord, user_id, status, voucher_id, code, campaign_id, free_from
  FROM result
 ORDER BY ord;
