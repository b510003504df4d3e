-- migration_unlock: release migration_lock.
--   $1 = advisory lock key
SELECT pg_advisory_unlock($1);
