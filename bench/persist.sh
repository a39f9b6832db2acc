#!/usr/bin/env bash
# Persisted field writes/s: the same many-docs load against an in-memory server and a
# PostgreSQL-backed one (acks only after commit), alternating, in one run.
set -u
BIN="$(dirname "$0")/../target/${SYNCKIT_BENCH_PROFILE:-dist}"
common="SYNCKIT_AUTH_REQUIRED=false SYNCKIT_MAX_MESSAGES_PER_MINUTE=0 SYNCKIT_MAX_CONNECTIONS_PER_IP=20000 WS_MAX_CONNECTIONS=20000 SYNCKIT_ADMIN_LISTEN=off RUST_LOG=warn"
for round in 1 2; do
  for mode in memory postgres; do
    if [ $mode = postgres ]; then db="DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_persist"; else db=""; fi
    env $common $db PORT=18210 $BIN/synckit serve 2>/tmp/persist-$mode.log & pid=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/18210) 2>/dev/null && break; sleep 0.1; done
    out=$($BIN/examples/loadgen many-docs --url ws://127.0.0.1:18210/ws --clients 1000 --deltas 40 --window 4 --server-pid $pid 2>/dev/null)
    kill -TERM $pid; wait $pid
    echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $mode', 'writes/s', d.get('deltas_per_s'), 'ack p50/p99', d['ack_latency_ms']['p50'], d['ack_latency_ms']['p99'], 'server cores', d['cpu']['server']['cpu_cores_avg'], 'ok', d['ok'])"
  done
done
