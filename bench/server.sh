#!/usr/bin/env bash
# Issue 2 figures on one in-memory server per setting; two rounds each.
set -u
BIN="$(dirname "$0")/../target/${SYNCKIT_BENCH_PROFILE:-dist}"
ulimit -n 65536
common="SYNCKIT_AUTH_REQUIRED=false SYNCKIT_MAX_MESSAGES_PER_MINUTE=0 SYNCKIT_MAX_CONNECTIONS_PER_IP=20000 WS_MAX_CONNECTIONS=20000 SYNCKIT_ADMIN_LISTEN=off RUST_LOG=warn"
start() { env $common SYNC_BATCH_DELAY=$1 PORT=18240 $BIN/synckit serve 2>/dev/null & pid=$!; for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/18240) 2>/dev/null && break; sleep 0.1; done; }
stop() { kill -TERM $pid; wait $pid 2>/dev/null; }
fan() { python3 -c "import json,sys; d=json.load(sys.stdin); l=d['delivery_latency_ms']; c=d['cpu']; print('$1', 'deltas/s', d['deltas_per_s'], 'deliveries/s', d['deliveries_per_s'], 'p50', l['p50'], 'p99', l['p99'], 'missing', d['deliveries']['missing'], 'srv cores', c['server']['cpu_cores_avg'], 'lg cores', c['loadgen']['cpu_cores_avg'])"; }
L=$BIN/examples/loadgen
for round in 1 2; do
  start 50
  $L fanout --url ws://127.0.0.1:18240/ws --subscribers 50 --deltas 20000 --rate 0 --window 200 --server-pid $pid 2>/dev/null | fan "r$round fanout 50 flat-out:"
  $L fanout --url ws://127.0.0.1:18240/ws --subscribers 100 --deltas 20000 --rate 0 --window 200 --server-pid $pid 2>/dev/null | fan "r$round fanout 100 flat-out:"
  $L fanout --url ws://127.0.0.1:18240/ws --subscribers 50 --deltas 5000 --rate 1000 --server-pid $pid 2>/dev/null | fan "r$round fanout 50 @1000/s batch 50ms:"
  $L fanout --url ws://127.0.0.1:18240/ws --subscribers 100 --deltas 5000 --rate 1000 --server-pid $pid 2>/dev/null | fan "r$round fanout 100 @1000/s batch 50ms:"
  $L many-docs --url ws://127.0.0.1:18240/ws --clients 1000 --deltas 40 --window 4 --server-pid $pid 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); a=d['ack_latency_ms']; print('r$round many-docs 1000 clients:', 'writes/s', d['deltas_per_s'], 'ack p50', a['p50'], 'p99', a['p99'], 'srv cores', d['cpu']['server']['cpu_cores_avg'])"
  stop
  start 0
  $L fanout --url ws://127.0.0.1:18240/ws --subscribers 50 --deltas 5000 --rate 1000 --server-pid $pid 2>/dev/null | fan "r$round fanout 50 @1000/s batch 0:"
  $L fanout --url ws://127.0.0.1:18240/ws --subscribers 100 --deltas 5000 --rate 1000 --server-pid $pid 2>/dev/null | fan "r$round fanout 100 @1000/s batch 0:"
  stop
  start 50
  $L idle --url ws://127.0.0.1:18240/ws --connections 10000 --server-pid $pid 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); r=d['rss']; print('r$round idle 10000:', 'rss before KiB', r['before_kib'], 'with 10k KiB', r['after_kib'], 'per conn KiB', r['per_connection_kib'])"
  stop
done
