#!/usr/bin/env bash
# Many connections on one in-memory instance (target 100,000 on loopback, idle
# clients from several 127.0.0.x source addresses): server RSS and RSS per connection, CPU
# at idle with heartbeats, and the p99 of a write to 1,000 subscribers while the rest sit
# idle; two rounds. Raises its own file limit and the kernel's connection settings where it
# may, and prints what it could not; with fewer file descriptors it measures as many
# connections as they allow and says so. Loopback only; every step is bounded.
set -u
BIN="$(dirname "$0")/../target/${SYNCKIT_BENCH_PROFILE:-dist}"
L=$BIN/examples/loadgen
WANT=${SYNCKIT_BENCH_CONNECTIONS:-100000}
SUBS=1000         # the fan-out's subscribers (+1 writer) count towards the connections
IDLE_WINDOW=60    # s of pure idle measured: two heartbeat ticks at WS_HEARTBEAT_INTERVAL=30s
PORT=18250

# One fd per connection in the server and in the generator: raise the hard limit (needs
# CAP_SYS_RESOURCE), else take whatever hard limit this shell has.
ulimit -Hn 1100000 2>/dev/null || ulimit -Hn "$(cat /proc/sys/fs/nr_open)" 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)"
nofile=$(ulimit -n)
echo "RLIMIT_NOFILE: $nofile (wanted 1100000)"
# Machine-wide settings changed here are put back on exit, however the script ends.
restore=()
restore_sysctls() {
  local entry
  for entry in "${restore[@]}"; do
    echo "${entry#*=}" >"/proc/sys/${entry%%=*}" 2>/dev/null && echo "sysctl ${entry%%=*} restored to ${entry#*=}"
  done
}
trap restore_sysctls EXIT
setk() { # name value: set a sysctl where writable, print what it is either way
  local f=/proc/sys/${1//./\/}
  local before; before=$(cat "$f" 2>/dev/null)
  if echo "$2" 2>/dev/null >"$f"; then restore+=("${1//./\/}=$before"); echo "sysctl $1 = $(tr '\t' ' ' <"$f")"
  else echo "sysctl $1: could not set $2, stays $(tr '\t' ' ' <"$f")"; fi
}
setk net.core.somaxconn 65535
setk net.ipv4.tcp_max_syn_backlog 65535
# Not widened: that would hand out as client ports the ports other servers on this machine
# listen on; the source addresses below multiply the range instead.
echo "net.ipv4.ip_local_port_range: $(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range) (left as is)"

conns=$WANT
if [ $((nofile - 200)) -lt "$conns" ]; then
  conns=$((nofile - 200))
  echo "connections capped at $conns by RLIMIT_NOFILE $nofile (the server needs one fd each): not $WANT"
fi
idle=$((conns - SUBS - 1))
# Each source address has its own ephemeral-port range; take one per 20,000 connections.
read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
per=$(( (hi - lo) * 7 / 10 )); [ "$per" -gt 20000 ] && per=20000
nsrc=$(( idle / per + 1 ))
src=$(seq -s, -f "127.0.0.%g" 2 $((nsrc + 1)))
echo "profile ${SYNCKIT_BENCH_PROFILE:-dist}; $idle idle connections from $src + $SUBS subscribers + 1 writer from 127.0.0.1"

common="SYNCKIT_AUTH_REQUIRED=false SYNCKIT_MAX_MESSAGES_PER_MINUTE=0 SYNCKIT_ADMIN_LISTEN=off RUST_LOG=warn"
limits="WS_MAX_CONNECTIONS=$((conns + 100)) SYNCKIT_MAX_CONNECTIONS_PER_IP=$((conns + 100))"
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; } # utime+stime, 1/100 s
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
# TcpExt ListenOverflows: SYNs/handshakes dropped because an accept backlog was full.
overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else print $c }' /proc/net/netstat; }
for round in 1 2; do
  echo "r$round start: $(uptime)"
  env $common $limits HOST=127.0.0.1 PORT=$PORT $BIN/synckit serve 2>/tmp/c100k-serve.log & pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
  rss0=$(rss $pid); fd0=$(fds $pid); ov0=$(overflows)
  # Held long enough for: connect, the idle window, the fan-out and its drain.
  $L idle --url ws://127.0.0.1:$PORT/ws --connections $idle --source-addrs "$src" \
    --connect-concurrency 100 --hold 150s --timeout 780s --server-pid $pid \
    >/tmp/c100k-idle-r$round.json 2>/dev/null & lpid=$!
  t0=$(date +%s)
  while [ $(( $(fds $pid) - fd0 )) -lt "$idle" ] && [ $(( $(date +%s) - t0 )) -lt 480 ] && kill -0 $lpid 2>/dev/null; do sleep 1; done
  open=$(( $(fds $pid) - fd0 )); echo "r$round opened $open idle connections in $(( $(date +%s) - t0 )) s; listen overflows $(( $(overflows) - ov0 ))"
  sleep 15 # the generator's settle and its ping round on every connection
  rss1=$(rss $pid); s0=$(ticks $pid); g0=$(ticks $lpid); w0=$(date +%s.%N)
  sleep $IDLE_WINDOW
  s1=$(ticks $pid); g1=$(ticks $lpid); w1=$(date +%s.%N)
  python3 -c "w=$w1-$w0; print('r$round idle: connections', $open, 'server rss KiB', $rss0, '->', $rss1, 'per conn KiB', round(($rss1-$rss0)/max($open,1),2), '| idle cpu over', round(w), 's: server cores', round(($s1-$s0)/100/w,4), 'generator cores', round(($g1-$g0)/100/w,4))"
  echo "r$round idle window load: $(uptime)"
  timeout 120 $L fanout --url ws://127.0.0.1:$PORT/ws --subscribers $SUBS --deltas 3000 --rate 100 --timeout 100s --server-pid $pid 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); l=d['delivery_latency_ms']; c=d['cpu']; print('r$round fanout to $SUBS subscribers @100 writes/s beside', $open, 'idle: p50', l['p50'], 'p99', l['p99'], 'ms; deliveries/s', d['deliveries_per_s'], 'missing', d['deliveries']['missing'], 'srv cores', c['server']['cpu_cores_avg'], 'lg cores', c['loadgen']['cpu_cores_avg'], 'ok', d['ok'])"
  echo "r$round rss after the fan-out (its connections closed, $(( $(fds $pid) - fd0 )) idle open): $(rss $pid) KiB; $(uptime)"
  wait $lpid
  python3 -c "import json; d=json.load(open('/tmp/c100k-idle-r$round.json')); r=d.get('server_rss') or {}; p=d.get('ping_check') or {}; print('r$round idle generator: opened', d.get('opened'), 'connects/s', d.get('connects_per_s'), 'pongs', p.get('pongs'), 'closed by server', d.get('closed_by_server'), 'rss per conn KiB', r.get('per_connection_kib'), 'after close KiB', r.get('after_close_kib'), 'ok', d.get('ok'), 'errors', d.get('errors'))"
  kill -TERM $pid; wait $pid 2>/dev/null
done
