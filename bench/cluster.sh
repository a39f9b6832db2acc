#!/usr/bin/env bash
# Cross-instance delivery: writer on A, 100 subscribers on B (one Redis), against the
# single-instance figure (writer and subscribers on A) in the same run.
set -u
BIN="$(dirname "$0")/../target/${SYNCKIT_BENCH_PROFILE:-dist}"
PREFIX="bench-$(date +%s):"
common="SYNCKIT_AUTH_REQUIRED=false SYNCKIT_MAX_MESSAGES_PER_MINUTE=0 SYNCKIT_MAX_CONNECTIONS_PER_IP=20000 WS_MAX_CONNECTIONS=20000 SYNCKIT_ADMIN_LISTEN=off RUST_LOG=warn REDIS_URL=redis://127.0.0.1:6379 REDIS_CHANNEL_PREFIX=$PREFIX SYNC_BATCH_DELAY=${BATCH:-50}"
env $common PORT=18231 $BIN/synckit serve 2>/tmp/cluster-a.log & a=$!
env $common PORT=18232 $BIN/synckit serve 2>/tmp/cluster-b.log & b=$!
for p in 18231 18232; do for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done
summ() { python3 -c "import json,sys; d=json.load(sys.stdin); l=d['delivery_latency_ms']; print('$1', 'deltas/s', d['deltas_per_s'], 'deliveries/s', d['deliveries_per_s'], 'p50', l['p50'], 'p99', l['p99'], 'missing', d['deliveries']['missing'], 'dup', d['deliveries']['duplicates'], 'ok', d['ok'])"; }
for round in 1 2; do
  $BIN/examples/loadgen fanout --url ws://127.0.0.1:18231/ws --subscribers 100 --deltas 5000 --rate ${RATE:-1000} 2>/dev/null | summ "round $round single (A->A):"
  $BIN/examples/loadgen fanout --url ws://127.0.0.1:18231/ws --subscriber-url ws://127.0.0.1:18232/ws --subscribers 100 --deltas 5000 --rate ${RATE:-1000} 2>/dev/null | summ "round $round cross  (A->B):"
done
kill -TERM $a $b; wait
