-- transaction_bounds: the server-side bounds of SPEC I8 for one transaction,
-- behind a transaction pooler (which refuses them as startup options). Local
-- to the transaction (is_local = true): the server connection goes back to
-- the pool with its own settings untouched.
-- $1 = statement_timeout, $2 = lock_timeout,
-- $3 = idle_in_transaction_session_timeout (milliseconds as text; 0 = none)
SELECT set_config('statement_timeout', $1, true),
       set_config('lock_timeout', $2, true),
       set_config('idle_in_transaction_session_timeout', $3, true)
