-- import_stage_create: the staging table an import COPYs its codes into.
-- Dropped at commit or rollback; an import is one transaction (I6).
CREATE TEMP TABLE import_stage (line bigint NOT NULL, code text NOT NULL) ON COMMIT DROP;
