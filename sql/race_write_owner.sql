-- race_write_owner: step 2 of the story's claim, "update that id". On purpose
-- there is no `AND user_id IS NULL` re-check: this is the story's code, and
-- the write that overwrites another user's claim is what the race lab counts.
--   $1 = voucher id (from race_read_first_free)   $2 = user id
UPDATE voucher_item SET user_id = $2::text, claimed_at = now() WHERE id = $1::bigint;
