-- I4 per source: a message's one recorded outcome is keyed by where its id
-- lives, not by the id alone. Ids of different sources are unrelated: two
-- Redis streams hand out the same entry ids (they are timestamps), two HTTP
-- clients can pick the same id. Keyed by message_id alone, the second such
-- message's outcome (and its dead letter) was dropped by ON CONFLICT DO
-- NOTHING, in silence.
--
-- source names where message_id lives (claim_request.hpp, outcome_source):
--   'redis:<stream>'            a stream entry id
--   'http' | 'http:<name>'      the client's message_id (<name>: the message's
--                               own message_source field, a namespace the client picks)
--   'stdin' | 'stdin:<name>'    the same for `worker --source stdin`
--   'cli' | 'cli:<name>'        `voucherd claim --message-id` (--message-source <name>)
-- The pg queue's messages are their message_queue rows: each row holds its
-- own outcome (status, reason, voucher_id), keyed by the queue id, and
-- dead_letter rows of source 'pg' name that id.
--
-- Rows recorded before this migration get source 'legacy': the source was
-- not recorded then and cannot be told from the id. Their ids were unique,
-- so they stay unique under ('legacy', message_id), and nothing new is ever
-- recorded under 'legacy'. A message in flight across the upgrade (taken
-- but not yet acknowledged) records its outcome again under its real source
-- (already_claimed, the same voucher): drain the workers before migrating.
-- Workers of an older binary fail every claim from here on (their INSERT
-- names no source, and ON CONFLICT (message_id) matches no key): their
-- transactions roll back and their messages are claimed by the new ones.
ALTER TABLE message_outcome ADD COLUMN source text NOT NULL DEFAULT 'legacy';
ALTER TABLE message_outcome ALTER COLUMN source DROP DEFAULT;
ALTER TABLE message_outcome
    DROP CONSTRAINT message_outcome_pkey,
    ADD CONSTRAINT message_outcome_pkey PRIMARY KEY (source, message_id),
    ADD CONSTRAINT message_outcome_source_format
        CHECK (char_length(source) BETWEEN 1 AND 200 AND source !~ '[[:cntrl:]]');

-- dead_letter.source now names the same source as message_outcome.source
-- (rows written before keep 'redis' for any stream). A rejected repeat of an
-- id (same source and id, another user or campaign) has no outcome row of
-- its own, since the id's first message holds it: its dead letter is its
-- record, written once, looked up by (source, message_id).
CREATE INDEX dead_letter_source_message_idx ON dead_letter (source, message_id);
