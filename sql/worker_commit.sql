-- worker_commit: commits a claimer's transaction (no parameters). Only after
-- this returns may a source acknowledge the messages (XACK, stdout line).
COMMIT
