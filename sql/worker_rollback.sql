-- worker_rollback: abandons a claimer's transaction (no parameters); the
-- messages it took become available again.
ROLLBACK
