-- migration_table: the record of applied migrations, created on first use.
CREATE TABLE IF NOT EXISTS voucherd_migration (
    name       text NOT NULL CONSTRAINT voucherd_migration_pkey PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
