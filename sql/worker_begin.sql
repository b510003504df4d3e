-- worker_begin: opens a claimer's transaction (no parameters). The worker
-- takes its messages, claims them and records their outcomes inside it, so a
-- crash anywhere before worker_commit leaves no trace.
BEGIN
