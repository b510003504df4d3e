-- migration_record: note a migration as applied, in the transaction that applied it.
--   $1 = file name   $2 = checksum (migration_checksum)
INSERT INTO voucherd_migration (name, checksum) VALUES ($1, $2);
