-- Every claim inserts its notification into the outbox, and the outbox's
-- foreign key to voucher_item (notification_outbox_voucher_fkey) ran a
-- referential check per row: one SPI query per claimed voucher, re-locking
-- FOR KEY SHARE the row the same statement had just updated. Under
-- `wrk -c 64` against POST /v1/claims, `perf record -a` put the claimers'
-- backends' ExecutorFinish (where those checks run) at 20% of their samples;
-- EXPLAIN ANALYZE of a 32-voucher claim showed the check at 0.22-0.32 ms of
-- its 32 calls.
-- The key adds no safety to a claim: the statement copies voucher_id from
-- the voucher row it updates in the same statement. What it did guard, a
-- claimed voucher deleted while its notification was still in the outbox,
-- the trigger below guards for good, at no cost to a claim: a claimed
-- voucher is never deleted, whether its notification is pending, sent or
-- pruned (who owns which code is the record I1-I3 are audited from).
ALTER TABLE notification_outbox DROP CONSTRAINT notification_outbox_voucher_fkey;

CREATE FUNCTION voucher_item_keep_claimed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'voucher % is claimed; a claimed voucher cannot be deleted', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER voucher_item_claimed_kept
    BEFORE DELETE ON voucher_item
    FOR EACH ROW
    WHEN (OLD.user_id IS NOT NULL)
    EXECUTE FUNCTION voucher_item_keep_claimed();
