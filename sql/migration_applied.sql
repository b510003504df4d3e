-- migration_applied: every applied migration and the checksum recorded for it.
SELECT name, checksum FROM voucherd_migration ORDER BY name;
