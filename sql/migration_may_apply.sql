-- migration_may_apply: whether this session's role may apply migrations
-- here, asked before anything is locked or created. Migrations run as the
-- schema owner: once voucherd_migration exists, a role with its owner's
-- privileges; before that, a role that may create in the current schema.
-- A voucherd_worker role is neither.
--   (no parameters)
SELECT current_user AS role,
       coalesce(current_schema(), '') AS schema,
       coalesce(pg_get_userbyid(t.relowner), '') AS owner,
       coalesce(CASE WHEN t.oid IS NOT NULL THEN pg_has_role(t.relowner, 'USAGE')
                     ELSE has_schema_privilege(current_schema(), 'CREATE') END,
                false) AS may_apply
  FROM (SELECT) AS one
  LEFT JOIN pg_catalog.pg_class t ON t.oid = to_regclass('voucherd_migration');
