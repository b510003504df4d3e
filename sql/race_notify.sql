-- race_notify: step 4 of the story, the notification of the code the worker
-- read, written in the same transaction as race_write_owner (as claim_one.sql
-- does), with the same idempotency key shape (voucher id, md5 of the user).
--   $1 = campaign id   $2 = voucher id   $3 = user id   $4 = code
INSERT INTO notification_outbox (idempotency_key, campaign_id, voucher_id, user_id, code)
VALUES (notification_key($2::bigint, $3::text), $1::bigint, $2::bigint, $3::text, $4::text)
ON CONFLICT (idempotency_key) DO NOTHING;
