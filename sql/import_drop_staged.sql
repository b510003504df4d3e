-- import_drop_staged: remove staged codes by line (generate replaces collisions).
--   $1 = line numbers, comma-separated
DELETE FROM import_stage WHERE line = ANY (string_to_array($1, ',')::bigint[]);
