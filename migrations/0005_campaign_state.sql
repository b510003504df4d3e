-- What claim_one and claim_batch both need to know about a campaign and to
-- say about a claim, written once. Both are inlined by the planner (a view;
-- an IMMUTABLE one-expression SQL function), so the statements cost what
-- they cost with the expressions spelled out in each.

-- A campaign as a claim sees it now: its free mark and whether its window is open.
CREATE VIEW campaign_state AS
SELECT id, name, free_from,
       (starts_at IS NULL OR starts_at <= now()) AND (ends_at IS NULL OR now() < ends_at) AS active
  FROM campaign;

-- The answer to one claim: it took a voucher, or the user owns one already,
-- or the campaign is outside its window, or no voucher was free.
CREATE FUNCTION claim_status(took boolean, owns boolean, active boolean) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN took THEN 'claimed'
            WHEN owns THEN 'already_claimed'
            WHEN NOT active THEN 'inactive'
            ELSE 'sold_out' END;

-- The notification's idempotency key: stable per (voucher, user).
CREATE FUNCTION notification_key(voucher_id bigint, user_id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN voucher_id::text || '-' || md5(user_id);
