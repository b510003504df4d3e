-- claim_batch: claim for many users of one campaign in one statement.
--   $1 = campaign name
--   $2 = user ids, separated by newlines (user ids never contain control characters)
--   $3 = message ids in the same order, newline-separated ('' for none)
--   $4 = whether sold_out answers are final (boolean), as in claim_one
--   $5 = the sources of the message ids (message_outcome.source), in the same
--        order, newline-separated (sources never contain control characters)
-- The same atomic SKIP LOCKED claim as claim_one, for up to a batch of users
-- at once: the users without a voucher are numbered in input order, as many
-- free vouchers are locked (skipping rows other claimers hold), and the two
-- lists are zipped by number. A user listed twice is claimed once; later
-- occurrences get 'already_claimed' with the same code. If a listed user is
-- being claimed concurrently elsewhere, voucher_item_owner_key aborts the
-- statement and the caller retries the whole batch.
-- Message ids are used once per source, as in claim_one: an id belongs to the
-- user and campaign of its recorded outcome, else to those of its first line
-- here; a line whose id belongs to another user or campaign claims nothing,
-- answers 'reused' with the reason and is dead-lettered once (per message,
-- however often delivered), as in claim_one. Only the first
-- line of an id records its outcome, and only if none is recorded yet.
-- Returns no row for an unknown campaign, else one row per input line, in
-- input order: ord, user_id, status, voucher_id, code, campaign_id,
-- free_from, reason ('reused' only).
WITH camp AS MATERIALIZED (
    SELECT id, free_from, active FROM campaign_state WHERE name = $1  -- migration 0005
), input AS MATERIALIZED (
    SELECT x.user_id, nullif(x.message_id, '') AS message_id, x.source, x.ord
      FROM unnest(string_to_array($2, E'\n'), string_to_array($3, E'\n'), string_to_array($5, E'\n'))
           WITH ORDINALITY AS x(user_id, message_id, source, ord)
     WHERE x.user_id IS NOT NULL
), id_use AS MATERIALIZED (
    -- Each message id of the batch, whom it belongs to, and whether its
    -- outcome is recorded already (one message_outcome_pkey probe per line).
    SELECT DISTINCT ON (i.source, i.message_id)
           i.source, i.message_id, i.ord AS first_ord,
           coalesce(p.campaign, $1) AS campaign,
           CASE WHEN p.found THEN p.user_id ELSE i.user_id END AS user_id,
           coalesce(p.found, false) AS recorded
      FROM input i
      LEFT JOIN LATERAL (SELECT true AS found, m.campaign, m.user_id
                           FROM message_outcome m
                          WHERE m.source = i.source AND m.message_id = i.message_id) p ON true
     WHERE i.message_id IS NOT NULL
     ORDER BY i.source, i.message_id, i.ord
), reused AS MATERIALIZED (
    SELECT i.ord,
           format('message id %s of source %s was already used for user %s in campaign %s',
                  i.message_id, i.source, coalesce(u.user_id, '(none)'), u.campaign) AS reason
      FROM input i
      JOIN id_use u ON u.source = i.source AND u.message_id = i.message_id
     WHERE u.campaign <> $1 OR u.user_id IS DISTINCT FROM i.user_id
), claimable AS MATERIALIZED (
    SELECT i.user_id, i.ord FROM input i WHERE NOT EXISTS (SELECT 1 FROM reused r WHERE r.ord = i.ord)
), owned AS MATERIALIZED (
    -- LATERAL: one voucher_item_owner_key probe per input user, rather than
    -- a scan of every owner of the campaign, which grows as the pool drains.
    SELECT f.user_id, v.id, v.code
      FROM (SELECT DISTINCT user_id FROM claimable) f
     CROSS JOIN LATERAL (SELECT o.id, o.code
                           FROM voucher_item o
                          WHERE o.campaign_id = (SELECT id FROM camp)
                            AND o.user_id = f.user_id
                          LIMIT 1) v  -- at most one (I2); also keeps the probe per user
), first_seen AS MATERIALIZED (
    SELECT user_id, min(ord) AS ord FROM claimable GROUP BY user_id
), wanting AS MATERIALIZED (
    SELECT f.user_id, row_number() OVER (ORDER BY f.ord) AS rn
      FROM first_seen f
     WHERE NOT EXISTS (SELECT 1 FROM owned o WHERE o.user_id = f.user_id)
), picked AS MATERIALIZED (
    SELECT f.id, row_number() OVER (ORDER BY f.id) AS rn
      FROM (SELECT v.id
              FROM voucher_item v
             WHERE v.campaign_id BETWEEN (SELECT id FROM camp WHERE active)
                                     AND (SELECT id FROM camp WHERE active)
               AND v.id >= (SELECT free_from FROM camp)
               AND v.user_id IS NULL
             ORDER BY v.campaign_id, v.id  -- voucher_item_free_idx, as in claim_one
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
    SELECT i.ord, i.user_id, i.message_id, i.source,
           -- a user listed twice: the first line took it, the later ones own it
           CASE WHEN r.ord IS NOT NULL THEN 'reused'
                ELSE claim_status(c.id IS NOT NULL AND i.ord = f.ord, c.id IS NOT NULL OR o.id IS NOT NULL,
                                  camp.active) END AS status,
           CASE WHEN r.ord IS NULL THEN coalesce(c.id, o.id) END AS voucher_id,
           CASE WHEN r.ord IS NULL THEN coalesce(c.code, o.code) END AS code,
           camp.id AS campaign_id,
           camp.free_from,
           r.reason
      FROM input i
     CROSS JOIN camp
      LEFT JOIN reused r ON r.ord = i.ord
      LEFT JOIN first_seen f ON f.user_id = i.user_id
      LEFT JOIN owned o ON o.user_id = i.user_id
      LEFT JOIN claimed c ON c.user_id = i.user_id
), recorded AS (
    -- No ON CONFLICT: a conflict here is a racing first use (see claim_one).
    INSERT INTO message_outcome (source, message_id, campaign, user_id, status, voucher_id)
    SELECT r.source, r.message_id, $1, r.user_id, r.status, r.voucher_id
      FROM result r
      JOIN id_use u ON u.source = r.source AND u.message_id = r.message_id AND u.first_ord = r.ord
     WHERE NOT u.recorded
       AND r.status NOT IN ('inactive', 'reused') AND (r.status <> 'sold_out' OR $4::boolean)
), rejected AS (
    -- One dead letter per reused message (a line repeated here, or a
    -- redelivery, adds none), its body the message as the claim saw it.
    SELECT DISTINCT ON (r.source, r.message_id, r.user_id)
           r.source, r.message_id, r.reason,
           convert_to(json_build_object('user_id', r.user_id, 'campaign', $1::text,
                                        'message_id', r.message_id)::text, 'UTF8') AS body
      FROM result r
     WHERE r.status = 'reused'
     ORDER BY r.source, r.message_id, r.user_id, r.ord
), dead AS (
    INSERT INTO dead_letter (source, message_id, body, reason)
    SELECT r.source, r.message_id, r.body, r.reason
      FROM rejected r
     WHERE NOT EXISTS (SELECT 1 FROM dead_letter d
                        WHERE d.source = r.source AND d.message_id = r.message_id AND d.body = r.body)
)
SELECT ord, user_id, status, voucher_id, code, campaign_id, free_from, reason
  FROM result
 ORDER BY ord;
