-- import_commit_stage: move the staged codes into the pool, in line order, and
-- keep the campaign's free_from / last_voucher_id marks true for them.
--   $1 = campaign id
-- Returns the number of codes added.
WITH added AS (
    INSERT INTO voucher_item (campaign_id, code)
    SELECT $1, code FROM import_stage ORDER BY line
    RETURNING id
), marks AS (
    UPDATE campaign
       SET free_from = least(free_from, (SELECT min(id) FROM added)),
           last_voucher_id = greatest(last_voucher_id, (SELECT max(id) FROM added))
     WHERE id = $1 AND EXISTS (SELECT 1 FROM added)
)
SELECT count(*) FROM added;
