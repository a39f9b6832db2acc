#!/usr/bin/env bash
# Persisted field writes/s: the same many-docs load against an in-memory server and a
# PostgreSQL-backed one (acks only after commit), and the database's own bulk-insert
# ceiling (1,000 rows of the `deltas` shape per commit, pgbench), alternating, in one
# run, twice. Each line names what was busy: loadgen, server and PostgreSQL CPU (cores),
# commits and WAL syncs per second, the load average and (PostgreSQL) the server's commit
# groups: how many, their mean size and mean commit time.
#
#   SYNCKIT_BENCH_PROFILE=release bench/persist.sh       # target/release instead of dist
#   WRITERS="1 4" bench/persist.sh                        # SYNCKIT_PERSIST_WRITERS values
#   DELTAS=200 bench/persist.sh                           # larger documents (past TOAST's ~2 KB)
set -u
BIN="$(dirname "$0")/../target/${SYNCKIT_BENCH_PROFILE:-dist}"
ADMIN=postgres://postgres@127.0.0.1:5432/postgres
DB=postgres://postgres@127.0.0.1:5432/bench_persist
WRITERS=${WRITERS:-4}
CEILING_CONNS=${CEILING_CONNS:-4}
DELTAS=${DELTAS:-40}  # per client: each to its own field, so a document ends with this many
ulimit -n 65536 2>/dev/null
common="SYNCKIT_AUTH_REQUIRED=false SYNCKIT_MAX_MESSAGES_PER_MINUTE=0 SYNCKIT_MAX_CONNECTIONS_PER_IP=20000 WS_MAX_CONNECTIONS=20000 SYNCKIT_ADMIN_LISTEN=off RUST_LOG=warn"

psql -q "$ADMIN" -Atc "SELECT 1 FROM pg_database WHERE datname = 'bench_persist'" | grep -q 1 \
  || psql -q "$ADMIN" -c 'CREATE DATABASE bench_persist' >/dev/null
env DATABASE_URL=$DB $BIN/synckit migrate >/dev/null 2>&1 || { echo "synckit migrate failed" >&2; exit 1; }
# The ceiling table: the deltas row shape with its defaults and all four indexes, but
# no foreign key, so it is what PostgreSQL can insert at most. Its ids ascend, as the
# server's UUIDv7 ids do (docs/storage.md §3.6): random ones would lower the ceiling.
psql -q "$DB" -c 'CREATE TABLE IF NOT EXISTS ceiling_deltas (LIKE deltas INCLUDING DEFAULTS INCLUDING INDEXES)' >/dev/null
psql -q "$DB" -c 'CREATE SEQUENCE IF NOT EXISTS ceiling_ids' >/dev/null
ceiling_sql=$(mktemp); snap0=$(mktemp); snap1=$(mktemp)
trap 'rm -f "$ceiling_sql" "$snap0" "$snap1"' EXIT
cat >"$ceiling_sql" <<'SQL'
INSERT INTO ceiling_deltas (id, document_id, client_id, operation_type, field_path, value, clock_value, max_clock_value, timestamp)
SELECT lpad(to_hex(nextval('ceiling_ids')), 32, '0')::uuid, 'bench-docs-' || (g % 1000), 'c-' || (g % 1000), 'set', 'f' || (g % 40), to_jsonb(g), g, g, clock_timestamp()
FROM generate_series(1, 1000) AS g;
SQL

# PostgreSQL CPU of this benchmark: `pg_snap FILE` records "pid ticks" of every
# postgres process and the time; `pg_cores BEFORE AFTER` sums, over the backends
# connected to bench_persist when AFTER was taken (the other builders' test databases
# share the server), the ticks spent between the two (all of them for a backend that
# started in between), in cores.
pg_snap() {
  local pid f
  date +%s.%N >"$1"
  for pid in $(pgrep -x postgres); do
    f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
    echo "$pid $f" >>"$1"
  done
  psql -q "$ADMIN" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = 'bench_persist' AND pid <> pg_backend_pid()" | sed 's/^/mine /' >>"$1"
}
pg_cores() {
  awk -v hz="$(getconf CLK_TCK)" '
    FNR == 1 { t[FILENAME == ARGV[1]] = $1; next }
    FILENAME == ARGV[1] { b[$1] = $2 + $3; next }
    $1 == "mine" { mine[$2] = 1; next }
    { a[$1] = $2 + $3 }
    END { for (p in mine) if (p in a) s += a[p] - (p in b ? b[p] : 0); printf "%.2f", s / hz / (t[0] - t[1]) }' "$1" "$2"
}
# Busy CPU seconds of the whole machine (every process, the other builders included).
busy_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu /{printf "%.3f", ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat; }
# Commits and WAL syncs of the whole cluster so far.
pg_counts() { psql -q "$ADMIN" -Atc "SELECT (SELECT sum(xact_commit) FROM pg_stat_database), wal_sync FROM pg_stat_wal" | tr '|' ' '; }
load() { uptime | sed 's/.*load average: /load /'; }

server_run() { # $1 = memory|postgres, $2 = writers
  local db="" out pid c0 c1 t0 t1 m0 m1 pg
  if [ "$1" = postgres ]; then
    db="DATABASE_URL=$DB"
    psql -q "$DB" -c 'SET client_min_messages = warning; TRUNCATE documents, vector_clocks, deltas, sessions, snapshots' >/dev/null
  fi
  env $common $db SYNCKIT_ADMIN_LISTEN=127.0.0.1:18211 SYNCKIT_PERSIST_WRITERS=$2 PORT=18210 $BIN/synckit serve 2>/tmp/persist-$1.log & pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/18210) 2>/dev/null && break; sleep 0.1; done
  pg_snap "$snap0"; c0=$(pg_counts); m0=$(busy_cpu); t0=$(date +%s.%N)
  out=$($BIN/examples/loadgen many-docs --url ws://127.0.0.1:18210/ws --clients 1000 --deltas $DELTAS --window 4 --server-pid $pid 2>/dev/null)
  t1=$(date +%s.%N); m1=$(busy_cpu); pg_snap "$snap1"; c1=$(pg_counts); pg=$(pg_cores "$snap0" "$snap1")
  # The server's own count of commit groups and their mean time (PostgreSQL only):
  # pg_stat_database lags by up to a second, which is most of a run.
  groups=$(curl -s 127.0.0.1:18211/metrics | awk '
    /^synckit_persist_committed_writes_total / {w = $2}
    /^synckit_postgres_query_seconds_(sum|count)\{operation="write_batch"\}/ {v[$1 ~ /_sum/ ? "s" : "c"] = $2}
    END {if (v["c"] > 0) printf "groups %d, %.0f writes each, commit %.1f ms mean", v["c"], w / v["c"], v["s"] * 1000 / v["c"]}')
  kill -TERM $pid; wait $pid
  echo "$out" | python3 -c "
import json, sys
d = json.load(sys.stdin); c = d['cpu']; a = d['ack_latency_ms']
wall = $t1 - $t0; pg = $pg
c0 = '$c0'.split(); c1 = '$c1'.split()
rate = lambda i: round((int(c1[i]) - int(c0[i])) / wall)
print('round $round $1 writers $2:', 'writes/s', d['deltas_per_s'], '| ack p50/p99', a['p50'], a['p99'], 'ms',
      '| cores loadgen', c['loadgen']['cpu_cores_avg'], 'server', c['server']['cpu_cores_avg'], 'postgres', round(pg, 2), 'machine', round(($m1 - $m0) / wall, 2),
      '| commits/s', rate(0), 'wal syncs/s', rate(1), '| ok', d['ok'], '| $(load)', ('| $groups' if '$groups' else ''))
print(d['deltas_per_s'], file=open('/tmp/persist-last', 'w'))"
}

ceiling_run() { # rows/s of 1,000-row inserts per commit over $CEILING_CONNS connections for 5 s
  # pgbench's backends exit with it, so their CPU is sampled while they run (0.5 s to
  # ~3.6 s); the machine's busy cores cover the whole 5 s.
  local out m0 m1 pg tps lat res
  res=$(mktemp)
  psql -q "$DB" -c 'TRUNCATE ceiling_deltas' >/dev/null
  m0=$(busy_cpu)
  pgbench -n -c "$CEILING_CONNS" -j "$CEILING_CONNS" -T 5 -f "$ceiling_sql" "$DB" >"$res" 2>&1 &
  sleep 0.5; pg_snap "$snap0"; sleep 3; pg_snap "$snap1"; pg=$(pg_cores "$snap0" "$snap1")
  wait $!
  m1=$(busy_cpu)
  out=$(cat "$res"); rm -f "$res"
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\).*/\1/p')
  [ -n "$tps" ] || { echo "pgbench failed: $out" >&2; tps=0; }
  echo "$tps $m0 $m1 $pg" | awk -v r="$round" -v c="$CEILING_CONNS" -v lat="$lat" -v l="$(load)" \
    '{printf "round %s ceiling (1,000-row INSERT per commit, %s connections): rows/s %d | commit latency %s ms | cores postgres %.2f machine %.2f | %s\n", r, c, $1 * 1000, lat, $4, ($3 - $2) / 5, l}'
  echo "$tps" | awk '{print $1 * 1000}' >/tmp/persist-ceiling
}

for round in 1 2; do
  server_run memory 4
  for w in $WRITERS; do
    server_run postgres "$w"
    ceiling_run
    awk -v r="$round" -v w="$w" 'NR == FNR {s = $1; next} $1 > 0 {printf "round %s ratio (writers %s): persisted writes/s / ceiling rows/s = %.3f\n", r, w, s / $1}' \
      /tmp/persist-last /tmp/persist-ceiling
  done
done
