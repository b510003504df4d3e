-- Least privilege: the role a worker (and claim, claim-batch, notify,
-- enqueue, stats and prune) runs as, with what those commands need and
-- nothing more. The schema owner keeps DDL, TRUNCATE, trigger control and
-- the pool's administration (migrate, campaign create, import, generate,
-- bench); operators give their login roles this one:
--     CREATE ROLE app LOGIN PASSWORD '...' IN ROLE voucherd_worker;
-- A migration that adds a table, a column a command writes, or a statement
-- touching something new grants it to voucherd_worker in the same file.

-- Roles are cluster-wide: the role may exist already (another database of
-- this cluster was migrated first, or an administrator created it), or be
-- created right now by a migrator of another database, whose CREATE ROLE
-- then makes ours fail with a unique violation once it commits.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'voucherd_worker') THEN
        BEGIN
            CREATE ROLE voucherd_worker NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the role voucherd_worker does not exist and % may not create it', current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'create it once as a superuser (CREATE ROLE voucherd_worker NOLOGIN), '
                                 'or give the schema owner CREATEROLE, then run voucherd migrate again';
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO voucherd_worker', current_schema());
END;
$$;

-- Campaigns are read by every claim; a claim moves the free mark forward
-- (advance_free_mark.sql) under the campaign row's lock. Creating and
-- changing campaigns is the owner's.
GRANT SELECT ON campaign, campaign_state TO voucherd_worker;
GRANT UPDATE (free_from) ON campaign TO voucherd_worker;

-- The pool: a claim sets the owner and the time, nothing else. Codes are
-- added by import/generate (the owner); nothing deletes one.
GRANT SELECT ON voucher_item TO voucherd_worker;
GRANT UPDATE (user_id, claimed_at) ON voucher_item TO voucherd_worker;

-- The outbox: written by the claim, delivered by the dispatcher, pruned.
GRANT SELECT, DELETE ON notification_outbox TO voucherd_worker;
GRANT INSERT (idempotency_key, campaign_id, voucher_id, user_id, code) ON notification_outbox TO voucherd_worker;
GRANT UPDATE (status, attempts, next_attempt_at, last_error, sent_at) ON notification_outbox TO voucherd_worker;

-- The pg queue: enqueued, taken, marked done or attempted, pruned.
GRANT SELECT, DELETE ON message_queue TO voucherd_worker;
GRANT INSERT (body) ON message_queue TO voucherd_worker;
GRANT UPDATE (done_at, status, reason, voucher_id, attempts, last_error) ON message_queue TO voucherd_worker;

-- Outcomes and dead letters: recorded once, read back, pruned; never changed.
GRANT SELECT, INSERT, DELETE ON message_outcome, dead_letter TO voucherd_worker;

-- Which migrations the schema has: read at start-up to refuse a schema older
-- than the binary.
GRANT SELECT ON voucherd_migration TO voucherd_worker;

-- PUBLIC may execute functions by default; granted by name so that a
-- database that revoked that keeps working.
GRANT EXECUTE ON FUNCTION claim_status(boolean, boolean, boolean), notification_key(bigint, text) TO voucherd_worker;

-- I1 against the worker's own role: the race lab's escape hatch
-- (voucherd.unguarded, a setting any session may set) now opens only for a
-- role with the table owner's privileges, so a worker's role cannot change
-- the owner of a claimed voucher by setting it first.
CREATE OR REPLACE FUNCTION voucher_item_guard_owner() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('voucherd.unguarded', true), '') = 'on'
       AND pg_has_role(current_user,
                       (SELECT relowner FROM pg_catalog.pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'voucher % is already owned; its owner cannot change', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
