-- campaign_create: a new campaign with an optional claim window.
--   $1 = name   $2 = starts_at ('' for none)   $3 = ends_at ('' for none)
-- Timestamps are parsed by Postgres (ISO 8601; without a zone, the session's).
INSERT INTO campaign (name, starts_at, ends_at)
VALUES ($1, nullif($2, '')::timestamptz, nullif($3, '')::timestamptz)
RETURNING id, name, starts_at, ends_at;
