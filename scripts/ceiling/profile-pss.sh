set -euo pipefail
source "$(dirname "$0")/../common.sh"
vd=${VOUCHERD_BIN:-$VOUCHERD_ROOT/build/voucherd}; m=8000; c=16; dir=$(cd "$(dirname "$0")" && pwd)
[ -x "$vd" ] || build_voucherd "$VOUCHERD_ROOT/build" >/dev/null
work=$(mktemp -d /tmp/voucherd-pss.XXXXXX)
"$dir/worker-sql" prepared > "$work/worker_4rt_prepared.sql"
pg_start fsync=on synchronous_commit=on shared_preload_libraries=pg_stat_statements
psql_() { "$PG_BIN/psql" -X -qtA -v ON_ERROR_STOP=1 "$@"; }
prep() { local url="${PG_ADMIN_URL%/*}/$1"
psql_ "$PG_ADMIN_URL" -c "CREATE DATABASE $1"
"$vd" migrate --database-url "$url" >/dev/null; "$vd" campaign create bench --database-url "$url" >/dev/null
"$vd" generate --campaign bench --count $((m+20000)) --database-url "$url" >/dev/null 2>&1
psql_ "$url" -c "INSERT INTO message_queue (body) SELECT convert_to(format('{\"user_id\":\"%s\",\"campaign\":\"bench\"}', g), 'UTF8') FROM generate_series(1, $((m+4000))) g" -c "VACUUM ANALYZE" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null; }
pss() { psql_ "${PG_ADMIN_URL%/*}/$1" -F ' | ' -c "SELECT calls, round(mean_exec_time::numeric*1000) AS mean_us, round(total_exec_time::numeric) AS total_ms, shared_blks_hit/greatest(calls,1) blks, wal_records/greatest(calls,1) walrec, left(regexp_replace(query, '\s+', ' ', 'g'), 60) FROM pg_stat_statements WHERE calls > 100 ORDER BY total_exec_time DESC LIMIT 6"; }
prep w; url="${PG_ADMIN_URL%/*}/w"
"$vd" worker --source pg --concurrency $c --batch 1 --pg-general-path --database-url "$url" 2>/dev/null & pid=$!
sleep 0.7; n0=$(psql_ "$url" -c "SELECT count(*) FROM message_queue WHERE done_at IS NOT NULL")
timeout 2 strace -c -f -p $pid -o /tmp/strace.out || true
n1=$(psql_ "$url" -c "SELECT count(*) FROM message_queue WHERE done_at IS NOT NULL")
echo "strace: messages done during strace: $((n1-n0))"; head -14 /tmp/strace.out
until [ "$(psql_ "$url" -c 'SELECT count(*) FROM message_queue WHERE done_at IS NULL')" -le 4000 ]; do sleep 0.1; done
kill -TERM $pid; wait $pid || true
echo "== worker, pg_stat_statements"; pss w
echo "== worker's claim_one, EXPLAIN after the run"
psql_ "$url" -c "BEGIN" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) $(sed -n '/^WITH camp/,$p' "$VOUCHERD_ROOT/sql/claim_one.sql" | sed "s/\$1/'bench'/g; s/\$2/'999999'::text/g; s/\$3/''::text/g; s/\$4/false/g; s/\$5/'pg'::text/g")" -c ROLLBACK | grep -E 'Buffers|Scan|Execution' | head -30
for file in "$dir/claim_one.sql" "$work/worker_4rt_prepared.sql"; do
  f=$(basename "$file" .sql)
  prep p_$f; u="${PG_ADMIN_URL%/*}/p_$f"; cid=$(psql_ "$u" -c "SELECT id FROM campaign WHERE name='bench'")
  "$PG_BIN/pgbench" -n -M prepared -c $c -j $c -t $((m/c)) -D campaign_id=$cid -f "$file" "$u" 2>&1 | grep 'tps.*without'
  echo "== pgbench $f, pg_stat_statements"; pss p_$f
done
rm -rf "$work"
