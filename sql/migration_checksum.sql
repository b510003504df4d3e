-- migration_checksum: the checksum recorded for a migration file's text.
--   $1 = the file's text
SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex');
