-- migration_lock: serialise migrators. Held for the session, so two
-- `voucherd migrate` runs at once apply each file exactly once.
--   $1 = advisory lock key
SELECT pg_advisory_lock($1);
