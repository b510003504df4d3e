-- claim_one: give one user one free voucher of a campaign, in one statement.
--   $1 = campaign name   $2 = user id   $3 = message id ('' when none)
--   $4 = whether a sold_out answer is final (boolean): only a final one is
--        recorded in message_outcome (see claim_wait_free.sql)
--   $5 = where the message id lives (message_outcome.source, e.g. 'http',
--        'redis:<stream>'); unused when $3 is ''
-- The claim is the atomic UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
-- LOCKED): concurrent claimers skip each other's locked rows instead of
-- waiting, and Postgres alone serialises ownership. A user who already owns a
-- voucher of the campaign gets it back (redelivery is idempotent); if two
-- deliveries for one user race, voucher_item_owner_key rejects the second and
-- the caller retries, which then finds the first one's code. SKIP LOCKED also
-- skips free vouchers whose holder may yet roll back, so a sold_out from here
-- is only a suspicion until claim_wait_free has waited for those holders. The notification
-- is written to the outbox by the same statement, so it commits with the claim.
-- A message id is used once per source (I4, migration 0006). The first
-- message with it records its outcome under (source, id). A repeat for the
-- same user and campaign is a redelivery: answered as any (already_claimed,
-- the same code), not recorded again. A repeat for another user or campaign
-- claims nothing: it answers 'reused' with the reason and is dead-lettered
-- under the same (source, id), once however often it is delivered; the first
-- message keeps the outcome.
-- Two first uses of one id racing: message_outcome_pkey fails the later
-- one's transaction once the first committed, and the caller retries it,
-- which then sees the first (common/failure.hpp, retry_at_once).
-- The free voucher comes from voucher_item_free_idx, which holds free rows
-- only. The campaign is a range of one and the order names campaign_id so
-- that only that index yields the order: with `campaign_id = x ORDER BY id`
-- a generic plan (a prepared statement after five runs) walked
-- voucher_item_pkey from free_from and filtered past every row claimed since
-- the mark last moved (auto_explain: 40 buffers, 86 rows removed, at 16
-- claimers).
-- Returns no row for an unknown campaign, else one row:
--   status ('claimed' | 'already_claimed' | 'sold_out' | 'inactive' | 'reused'),
--   voucher_id, code, campaign_id, free_from (for advance_free_mark),
--   reason (for 'reused' only).
WITH camp AS MATERIALIZED (
    SELECT id, free_from, active FROM campaign_state WHERE name = $1  -- migration 0005
), prior AS MATERIALIZED (
    SELECT m.campaign, m.user_id
      FROM message_outcome m
     WHERE m.source = $5 AND m.message_id = $3 AND $3 <> ''
), reused AS MATERIALIZED (
    SELECT format('message id %s of source %s was already used for user %s in campaign %s',
                  $3, $5, coalesce(p.user_id, '(none)'), p.campaign) AS reason
      FROM prior p
     WHERE p.campaign <> $1 OR p.user_id IS DISTINCT FROM $2
), owned AS MATERIALIZED (
    SELECT v.id, v.code
      FROM voucher_item v
     WHERE v.campaign_id = (SELECT id FROM camp)
       AND v.user_id = $2
       AND NOT EXISTS (SELECT 1 FROM reused)
), claimed AS (
    UPDATE voucher_item
       SET user_id = $2, claimed_at = now()
     WHERE id = (SELECT v.id
                   FROM voucher_item v
                  WHERE v.campaign_id BETWEEN (SELECT id FROM camp WHERE active)
                                          AND (SELECT id FROM camp WHERE active)
                    AND v.id >= (SELECT free_from FROM camp)
                    AND v.user_id IS NULL
                    AND NOT EXISTS (SELECT 1 FROM owned)
                    AND NOT EXISTS (SELECT 1 FROM reused)
                  ORDER BY v.campaign_id, v.id  -- voucher_item_free_idx, see below
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED)
    RETURNING id, code, campaign_id
), notified AS (
    INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
    SELECT notification_key(claimed.id, $2), claimed.campaign_id, claimed.id, $2, claimed.code
      FROM claimed
), result AS (
    SELECT CASE WHEN r.reason IS NOT NULL THEN 'reused'
                ELSE claim_status(c.id IS NOT NULL, o.id IS NOT NULL, camp.active) END AS status,
           coalesce(c.id, o.id) AS voucher_id,
           coalesce(c.code, o.code) AS code,
           camp.id AS campaign_id,
           camp.free_from,
           r.reason
      FROM camp
      LEFT JOIN owned o ON true
      LEFT JOIN claimed c ON true
      LEFT JOIN reused r ON true
), recorded AS (
    -- No ON CONFLICT: a conflict here is a racing first use (see above).
    INSERT INTO message_outcome (source, message_id, campaign, user_id, status, voucher_id)
    SELECT $5, $3, $1, $2, result.status, result.voucher_id
      FROM result
     WHERE $3 <> '' AND NOT EXISTS (SELECT 1 FROM prior)
       AND result.status NOT IN ('inactive', 'reused') AND (result.status <> 'sold_out' OR $4::boolean)
), rejected AS (
    -- The dead letter's body: the message as the claim saw it. Also what
    -- tells a redelivery of this message (no second dead letter) from
    -- another message reusing the id.
    SELECT result.reason,
           convert_to(json_build_object('user_id', $2::text, 'campaign', $1::text,
                                        'message_id', $3::text)::text, 'UTF8') AS body
      FROM result
     WHERE result.status = 'reused'
), dead AS (
    INSERT INTO dead_letter (source, message_id, body, reason)
    SELECT $5, $3, r.body, r.reason
      FROM rejected r
     WHERE NOT EXISTS (SELECT 1 FROM dead_letter d
                        WHERE d.source = $5 AND d.message_id = $3 AND d.body = r.body)
)
SELECT status, voucher_id, code, campaign_id, free_from, reason FROM result;
