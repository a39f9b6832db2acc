#!/usr/bin/env bash
# Fan-out, many-writer and idle-connection figures: every figure on synckit (in memory) and on examples/minimal_server.rs
# in the same run, alternating (synckit first in round 1, the minimal server first in
# round 2), two rounds. Prints one line per server and figure, the synckit/minimal ratio, and
# `uptime` before each round.
# Build: cargo build --release --bin synckit --example loadgen --example minimal_server
# then SYNCKIT_BENCH_PROFILE=release bench/server.sh (default profile: dist).
# ONLY=fanout|rate|docs|idle runs one group of figures (default: all).
set -u
PROFILE="${SYNCKIT_BENCH_PROFILE:-dist}"
BIN="${SYNCKIT_BENCH_BIN:-$(dirname "$0")/../target/$PROFILE}"
ONLY="${ONLY:-all}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
common="SYNCKIT_AUTH_REQUIRED=false SYNCKIT_MAX_MESSAGES_PER_MINUTE=0 SYNCKIT_MAX_CONNECTIONS_PER_IP=20000 WS_MAX_CONNECTIONS=20000 SYNCKIT_ADMIN_LISTEN=off RUST_LOG=warn"
SK_PORT=18240
MIN_PORT=18241
L=$BIN/examples/loadgen
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; }
# start_<server> <batch ms>: sets pid_synckit / pid_minimal.
# With batching off every delta is one broadcast, and flat out the generator's own
# subscribers (on the same two cores) fall hundreds of deltas behind: at the default
# budget (256) synckit may close one as too slow, which the minimal server never does
# (since writers are paced to their subscribers, none was in 12 figures; 2 of 12 before:
# BENCHMARKS.md), so the budget is raised for the comparison (SYNCKIT_BENCH_BROADCASTS;
# 256 to see it).
BROADCASTS="${SYNCKIT_BENCH_BROADCASTS:-8192}"
start_synckit() { env $common SYNC_BATCH_DELAY=$1 SYNCKIT_MAX_QUEUED_BROADCASTS=$BROADCASTS PORT=$SK_PORT $BIN/synckit serve 2>/dev/null & pid_synckit=$!; wait_port $SK_PORT; }
start_minimal() { $BIN/examples/minimal_server --port $MIN_PORT --window-ms $1 2>/dev/null & pid_minimal=$!; wait_port $MIN_PORT; }
stop_all() { kill -TERM $pid_synckit $pid_minimal 2>/dev/null; wait $pid_synckit $pid_minimal 2>/dev/null; }
url() { if [ "$1" = synckit ]; then echo ws://127.0.0.1:$SK_PORT/ws; else echo ws://127.0.0.1:$MIN_PORT/ws; fi; }
pid_of() { if [ "$1" = synckit ]; then echo $pid_synckit; else echo $pid_minimal; fi; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Summaries of one loadgen report (stdin) as "key value" pairs on one line.
fan() { python3 -c "
import json,sys
d=json.load(sys.stdin); l=d.get('delivery_latency_ms',{}); c=d['cpu']; s=c['server']
cpu=s['user_s']+s['sys_s']; n=d['deliveries']['received']
print('deltas/s', d['deltas_per_s'], 'deliveries/s', d['deliveries_per_s'], 'p50', l.get('p50'), 'p99', l.get('p99'), 'missing', d['deliveries']['missing'],
      'srv_cores', s['cpu_cores_avg'], 'lg_cores', c['loadgen']['cpu_cores_avg'], 'srv_us_per_delivery', round(cpu*1e6/max(n,1),3), 'ok', d['ok'])"; }
docs() { python3 -c "
import json,sys
d=json.load(sys.stdin); a=d['ack_latency_ms']; s=d['cpu']['server']
print('writes/s', d['deltas_per_s'], 'ack_p50', a.get('p50'), 'ack_p99', a.get('p99'), 'srv_cores', s['cpu_cores_avg'], 'lg_cores', d['cpu']['loadgen']['cpu_cores_avg'], 'ok', d['ok'])"; }
idle() { python3 -c "
import json,sys
d=json.load(sys.stdin); r=d['server_rss']
print('idle_rss_kib', r['before_kib'], 'with_conns_kib', r['after_kib'], 'per_conn_kib', r['per_connection_kib'], 'ok', d['ok'])"; }
# ratio <key> <file a> <file b>: a/b of one key.
ratio() { python3 -c "
import sys
def get(p):
    t=open(p).read().split()
    try: return float(t[t.index('$1')+1])
    except (ValueError, IndexError): return None
a,b=get('$2'),get('$3')
print('%.2f (difference %.3f)' % (a/b, a-b) if a and b else 'n/a')"; }

# fig <round> <label> <summary fn> <ratio keys> <loadgen args...>: runs the figure on both
# servers (order by round), prints both lines and the ratio of each key (comma-separated).
fig() {
  local round=$1 label=$2 summary=$3 key=$4; shift 4
  local order="synckit minimal"; [ "$round" = 2 ] && order="minimal synckit"
  for s in $order; do
    $L "$@" --url "$(url $s)" --server-pid "$(pid_of $s)" 2>/dev/null | $summary > "$TMP/$s"
    echo "r$round $label [$s]: $(cat "$TMP/$s")"
  done
  for k in ${key//,/ }; do
    echo "r$round $label: synckit/minimal $k = $(ratio "$k" "$TMP/synckit" "$TMP/minimal")"
  done
}

echo "profile $PROFILE; $(nproc) cores; $(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null)"
for round in 1 2; do
  echo "r$round uptime: $(uptime)"
  if [ "$ONLY" = all ] || [ "$ONLY" = fanout ]; then
    for batch in 50 0; do
      start_synckit $batch; start_minimal $batch
      for subs in 50 100; do
        fig $round "fanout $subs flat-out batch ${batch}ms" fan srv_us_per_delivery fanout --subscribers $subs --deltas 20000 --rate 0 --window 200
      done
      stop_all
    done
  fi
  if [ "$ONLY" = all ] || [ "$ONLY" = rate ]; then
    for batch in 50 0; do
      start_synckit $batch; start_minimal $batch
      for subs in 50 100; do
        fig $round "fanout $subs @1000/s batch ${batch}ms" fan p99,srv_us_per_delivery fanout --subscribers $subs --deltas 5000 --rate 1000
      done
      stop_all
    done
  fi
  if [ "$ONLY" = all ] || [ "$ONLY" = docs ]; then
    start_synckit 50; start_minimal 50
    fig $round "many-docs 1000 clients window 4" docs writes/s many-docs --clients 1000 --deltas 40 --window 4
    stop_all
  fi
  if [ "$ONLY" = all ] || [ "$ONLY" = idle ]; then
    start_synckit 50; start_minimal 50
    sleep 1.5
    fig $round "idle 10000" idle per_conn_kib idle --connections 10000
    stop_all
  fi
  echo "r$round uptime after: $(uptime)"
done
