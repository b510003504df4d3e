-- queue_mark_done: records the outcomes of taken messages on their queue rows,
-- in the transaction that took and claimed them.
--   $1 = message ids (bigint[])   $2 = statuses (text[])
--   $3 = reasons (text[], NULL for none)   $4 = voucher ids (bigint[], NULL for none)
-- The arrays are parallel: element k of each describes one message.
UPDATE message_queue q
   SET done_at = now(), status = d.status, reason = d.reason, voucher_id = d.voucher_id
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS d(id, status, reason, voucher_id)
 WHERE q.id = d.id
   AND q.done_at IS NULL
