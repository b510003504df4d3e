-- The Postgres queue source and the dead-letter record shared by all sources.

CREATE TABLE message_queue (
    id           bigint GENERATED ALWAYS AS IDENTITY
                 CONSTRAINT message_queue_pkey PRIMARY KEY,
    body         bytea NOT NULL,  -- the message bytes as enqueued (not necessarily UTF-8)
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    status       text
                 CONSTRAINT message_queue_status
                 CHECK (status IN ('claimed', 'already_claimed', 'sold_out', 'rejected')),
    reason       text,
    voucher_id   bigint,
    CONSTRAINT message_queue_done_has_status CHECK ((done_at IS NULL) = (status IS NULL))
);

CREATE INDEX message_queue_pending_idx ON message_queue (id) WHERE done_at IS NULL;

CREATE TABLE dead_letter (
    id          bigint GENERATED ALWAYS AS IDENTITY
                CONSTRAINT dead_letter_pkey PRIMARY KEY,
    source      text NOT NULL,
    message_id  text,
    body        bytea NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
