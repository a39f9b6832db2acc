#!/usr/bin/env bash
# synckit cleanup over 1,000,000 expired sessions + 1,000,000 old deltas, while a
# PostgreSQL-backed server takes writes on the same database: cleanup wall time, and
# the writers' ack latency with and without the cleanup running.
set -u
BIN="$(dirname "$0")/../target/${SYNCKIT_BENCH_PROFILE:-dist}"
DB=postgres://postgres@127.0.0.1:5432/bench_cleanup
psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS bench_cleanup" -c "CREATE DATABASE bench_cleanup" >/dev/null
DATABASE_URL=$DB $BIN/synckit migrate >/dev/null
seed() {
psql -q "$DB" <<'SQL'
INSERT INTO documents (id, state) SELECT 'old-' || g, '{}' FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING;
TRUNCATE sessions; INSERT INTO sessions (id, user_id, last_seen) SELECT 's-' || g, 'u', NOW() - INTERVAL '2 days' FROM generate_series(1, 1000000) g;
TRUNCATE deltas; INSERT INTO deltas (document_id, client_id, operation_type, field_path, value, clock_value, timestamp)
  SELECT 'old-' || (g % 1000 + 1), 'w', 'set', 'f', '1', g, NOW() - INTERVAL '40 days' FROM generate_series(1, 1000000) g;
VACUUM ANALYZE sessions; VACUUM ANALYZE deltas;
SQL
}
common="SYNCKIT_AUTH_REQUIRED=false SYNCKIT_MAX_MESSAGES_PER_MINUTE=0 SYNCKIT_MAX_CONNECTIONS_PER_IP=20000 WS_MAX_CONNECTIONS=20000 SYNCKIT_ADMIN_LISTEN=off RUST_LOG=warn SYNCKIT_CLEANUP_ENABLED=false SYNCKIT_COMPACTION_ENABLED=false"
env $common DATABASE_URL=$DB PORT=18220 $BIN/synckit serve 2>/tmp/cleanup-serve.log & pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/18220) 2>/dev/null && break; sleep 0.1; done
load() { $BIN/examples/loadgen many-docs --url ws://127.0.0.1:18220/ws --clients 100 --deltas 200 --rate 20 --window 4 --timeout 60s 2>/dev/null; }
summ() { python3 -c "import json,sys; d=json.load(sys.stdin); a=d['ack_latency_ms']; print('$1', 'writes/s', d['deltas_per_s'], 'ack p50', a['p50'], 'p99', a['p99'], 'max', a['max'], 'ok', d['ok'])"; }
seed
load | summ "baseline (no cleanup):"
seed >/dev/null 2>&1 || true
load > /tmp/cleanup-load.json & lpid=$!
sleep 0.5
start=$(date +%s.%N)
DATABASE_URL=$DB $BIN/synckit cleanup --json
end=$(date +%s.%N)
wait $lpid
summ "during cleanup:" < /tmp/cleanup-load.json
python3 -c "print('cleanup wall s', round($end - $start, 2))"
kill -TERM $pid; wait $pid
