-- race_read_first_free: step 1 of the story's claim, "the first voucher with
-- user_id IS NULL", read on its own, before any lock or write. Only the race
-- lab's lock-based strategies use it: whatever they do next acts on a row that
-- another worker may claim in the meantime (SPEC section 1).
--   $1 = campaign name
-- No row for an unknown campaign; voucher_id and code are NULL when sold out.
SELECT c.id AS campaign_id, v.id AS voucher_id, v.code
  FROM campaign c
  LEFT JOIN LATERAL (SELECT id, code
                       FROM voucher_item
                      WHERE campaign_id = c.id AND user_id IS NULL
                      ORDER BY id
                      LIMIT 1) v ON true
 WHERE c.name = $1;
