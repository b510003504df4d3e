-- import_conflicts: staged codes that the campaign already has.
--   $1 = campaign id
SELECT s.line, s.code
  FROM import_stage s
  JOIN voucher_item v ON v.campaign_id = $1 AND v.code = s.code
 ORDER BY s.line;
