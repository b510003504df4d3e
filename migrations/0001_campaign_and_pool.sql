-- The campaign, its pool of codes, and the rules that make I1 and I2 the
-- database's job rather than a lock's.

CREATE TABLE campaign (
    id          bigint GENERATED ALWAYS AS IDENTITY
                CONSTRAINT campaign_pkey PRIMARY KEY,
    name        text NOT NULL
                CONSTRAINT campaign_name_key UNIQUE
                CONSTRAINT campaign_name_is_slug CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    starts_at   timestamptz,
    ends_at     timestamptz,
    -- Low-water mark of the free pool: every voucher of this campaign with
    -- id < free_from is claimed. Claims start their search here, so they never
    -- walk the dead index entries of codes claimed long ago (SPEC section 8).
    -- Moved forward only by advance_free_mark.sql and back only by imports,
    -- both while holding this row's lock.
    free_from   bigint NOT NULL DEFAULT 0,
    -- The highest voucher id ever added to the pool; kept by imports.
    last_voucher_id bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_window_ordered
        CHECK (starts_at IS NULL OR ends_at IS NULL OR starts_at < ends_at)
);

CREATE TABLE voucher_item (
    id          bigint GENERATED ALWAYS AS IDENTITY
                CONSTRAINT voucher_item_pkey PRIMARY KEY,
    campaign_id bigint NOT NULL
                CONSTRAINT voucher_item_campaign_fkey REFERENCES campaign (id),
    code        text NOT NULL
                CONSTRAINT voucher_item_code_format CHECK (code ~ '^[!-~]{1,64}$'),
    user_id     text
                CONSTRAINT voucher_item_user_id_format
                CHECK (char_length(user_id) BETWEEN 1 AND 128 AND user_id !~ '[[:cntrl:]]'),
    claimed_at  timestamptz,
    CONSTRAINT voucher_item_code_key UNIQUE (campaign_id, code),
    CONSTRAINT voucher_item_claim_complete CHECK ((user_id IS NULL) = (claimed_at IS NULL))
) WITH (
    -- A claim is a non-HOT update (user_id is indexed): keep vacuum close
    -- behind a draining pool so dead index entries do not pile up.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 100000
);

-- I2: one voucher per user and campaign. A concurrent second claim for the
-- same user fails here and is retried, then finds the first claim's code.
CREATE UNIQUE INDEX voucher_item_owner_key
    ON voucher_item (campaign_id, user_id) WHERE user_id IS NOT NULL;

-- The free pool, in claim order. Partial, so it shrinks as the pool drains.
CREATE INDEX voucher_item_free_idx
    ON voucher_item (campaign_id, id) WHERE user_id IS NULL;

-- I1: once claimed, a voucher's owner and code never change. The race lab's
-- lock-based strategies reproduce a schema without this guard by setting
-- voucherd.unguarded = 'on' in their own transactions; nothing else does.
CREATE FUNCTION voucher_item_guard_owner() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('voucherd.unguarded', true), '') = 'on' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'voucher % is already owned; its owner cannot change', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER voucher_item_owner_immutable
    BEFORE UPDATE ON voucher_item
    FOR EACH ROW
    WHEN (OLD.user_id IS NOT NULL
          AND (NEW.user_id IS DISTINCT FROM OLD.user_id OR NEW.code <> OLD.code))
    EXECUTE FUNCTION voucher_item_guard_owner();

-- Step 4 of the story: the notification, written in the claim's transaction.
-- The idempotency key is stable per (voucher, user), so a sink can drop a
-- repeated delivery.
CREATE TABLE notification_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY
                    CONSTRAINT notification_outbox_pkey PRIMARY KEY,
    idempotency_key text NOT NULL CONSTRAINT notification_outbox_idempotency_key UNIQUE,
    campaign_id     bigint NOT NULL
                    CONSTRAINT notification_outbox_campaign_fkey REFERENCES campaign (id),
    voucher_id      bigint NOT NULL
                    CONSTRAINT notification_outbox_voucher_fkey REFERENCES voucher_item (id),
    user_id         text NOT NULL,
    code            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CONSTRAINT notification_outbox_status CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

CREATE INDEX notification_outbox_pending_idx
    ON notification_outbox (next_attempt_at, id) WHERE status = 'pending';

-- I4: the one recorded outcome of each message that carried an id.
CREATE TABLE message_outcome (
    message_id  text NOT NULL CONSTRAINT message_outcome_pkey PRIMARY KEY,
    campaign    text NOT NULL,
    user_id     text,
    status      text NOT NULL
                CONSTRAINT message_outcome_status
                CHECK (status IN ('claimed', 'already_claimed', 'sold_out', 'rejected')),
    voucher_id  bigint,
    reason      text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
