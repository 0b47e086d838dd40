#!/bin/bash
# Issue 12's load figures: tidings and nginx + nchan side by side on nchan's own API
# (`/pub/{channel}`, `/sub/{channel}`), the same client driving both.
#
#   TIDINGS=/path/tidings [LOAD=/path/tidings-load] loadtest/bench/nchanapi.sh
#
# Scenarios (ONLY, default "sub mem19 pub"):
#   sub    nchan-sub per transport (TRANSPORTS) at SIZES subscribers: memory per idle
#          subscriber, PUSHES fan-out messages (p50 / p99 over every subscriber, the
#          last subscriber's median), server CPU per delivery, exactly once
#   mem19  nchan-sub per transport at BIG subscribers, memory only (--pushes 0)
#   pub    wrk POST /pub/bench (a 5-byte text/plain body), WRK_CONNS connections for
#          WRK_SECS s: publishes/s and server CPU per publish
#
# Every server is fresh per run and pinned to SERVER_CPU (tidings --workers 1, nginx
# worker_processes 1), every client to CLIENT_CPU; each round takes tidings and nchan in
# turn, the first one alternating between rounds; medians of ROUNDS rounds and the
# ratio tidings/nchan in table.md. Before the first round the script waits up to
# QUIET_MAX seconds (2400) for the 1-minute load average to drop under QUIET_LOAD (1.0),
# and before each run up to QUIET_WAIT seconds (20) for a machine under 8 % busy; the
# load average at each run goes into results.tsv (metric loadavg1).
#
# Environment: TIDINGS (default: target/release/tidings of this tree), LOAD (beside it),
# OUT (default /tmp/tidings-nchanapi-DATE), ROUNDS (3), PUSHES (10), SIZES ("1000 10000"),
# BIG (19000), TRANSPORTS ("eventsource websocket longpoll"), WRK_SECS (5), WRK_CONNS (50),
# PORT_BASE (29600), SERVER_CPU (0), CLIENT_CPU (1), QUIET_MAX, QUIET_LOAD, QUIET_WAIT.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

find_binaries
command -v wrk >/dev/null && command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || {
    echo "needs wrk, nginx and libnginx-mod-nchan (apt-get install -y wrk nginx libnginx-mod-nchan)" >&2
    exit 2
}
ONLY=${ONLY:-sub mem19 pub}
want() { [[ " $ONLY " == *" $1 "* ]]; }
ROUNDS=${ROUNDS:-3}
PUSHES=${PUSHES:-10}
SIZES=${SIZES:-1000 10000}
BIG=${BIG:-19000}
TRANSPORTS=${TRANSPORTS:-eventsource websocket longpoll}
WRK_SECS=${WRK_SECS:-5}
WRK_CONNS=${WRK_CONNS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-/tmp/tidings-nchanapi-$(date +%Y%m%d-%H%M%S)}
WORK=$OUT/work
mkdir -p "$WORK"
TSV=$OUT/results.tsv
: > "$TSV"
# nginx with nchan needs more connection slots than subscribers: at 19,500 it brought up
# only ~18,365 of 19,000 ("worker_connections are not enough, reusing connections");
# 25,000 (above the 20,000 open files: nginx warns) brings them all up
WORKERS=1 NGINX_WORKERS=1 NGINX_CONNECTIONS=${NGINX_CONNECTIONS:-25000} START_WAIT=0.5 STOP_WAIT=0.5
PIN="taskset -c $SERVER_CPU"
CL="taskset -c $CLIENT_CPU"
next_port=${PORT_BASE:-29600}
post_lua "$WORK/post.lua"


# start SERVER: a fresh tidings or nginx + nchan on a new port; sets P and SPIDS
start() {
    while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
    P=$next_port
    next_port=$((next_port + 1))
    if [ "$1" = nchan ]; then
        nginx_conf "$WORK/nchan" "$P" nchan
        start_nginx "$WORK/nchan" "$P"
        SPIDS=$NPIDS
    else
        PORT=$P TIDINGS=$TIDINGS start_server
        SPIDS=$PID
    fi
}
stop() { if [ "$1" = nchan ]; then stop_nginx; else stop_server; fi; }

# sub_run ROW SERVER ROUND TRANSPORT N PUSHES
sub_run() {
    local row=$1 who=$2 r=$3 t=$4 n=$5 k=$6 log la
    log=$OUT/r$r-$row-$who.log
    start "$who"
    la=$(loadavg)
    $CL "$LOAD" nchan-sub --transport "$t" --server "127.0.0.1:$P" --streams "$n" --procs 1 \
        --pushes "$k" --push-gap-ms 100 --settle-ms 1000 --channel "load-$t" \
        --server-pid "$SPIDS" > "$log" 2>&1
    stop "$who"
    put "$row" "$who" "$r" loadavg1 "$la"
    for m in rss_per_stream_bytes fanout_p50_ms fanout_p99_ms fanout_last_p50_ms fanout_last_max_ms server_cpu_us_per_delivery lost dups; do
        put "$row" "$who" "$r" "$m" "$(summary "$log" $m)"
    done
    printf '  %-22s %-7s %6s B/sub  p50 %8s  p99 %8s  last %8s ms  %6s us/delivery  lost %s dups %s  load %s  %s\n' \
        "$row" "$who" "$(summary "$log" rss_per_stream_bytes)" "$(summary "$log" fanout_p50_ms)" \
        "$(summary "$log" fanout_p99_ms)" "$(summary "$log" fanout_last_p50_ms)" \
        "$(summary "$log" server_cpu_us_per_delivery)" "$(summary "$log" lost)" \
        "$(summary "$log" dups)" "$la" "$(summary "$log" result)"
}

# pub_run SERVER ROUND: wrk publishing to /pub/bench
pub_run() {
    local who=$1 r=$2 log u0 s0 u1 s1 n rps la cpu=na
    log=$OUT/r$r-pub-$who.log
    start "$who"
    la=$(loadavg)
    read -r u0 s0 < <(cpu_us_split "$SPIDS")
    $CL wrk -t1 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency -s "$WORK/post.lua" \
        "http://127.0.0.1:$P/pub/bench" > "$log" 2>&1
    read -r u1 s1 < <(cpu_us_split "$SPIDS")
    stop "$who"
    n=$(awk '/requests in/{print $1}' "$log")
    rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$log")
    put pub "$who" "$r" loadavg1 "$la"
    put pub "$who" "$r" publishes_per_s "$rps"
    if [ "${n:-0}" -gt 0 ]; then
        per() { awk -v c="$1" -v n="$n" 'BEGIN{printf "%.2f", c / n}'; }
        cpu=$(per $((u1 - u0 + s1 - s0)))
        # user space (the server's own code) and kernel (mostly loopback TCP) apart
        put pub "$who" "$r" cpu_user_us_per_publish "$(per $((u1 - u0)))"
        put pub "$who" "$r" cpu_system_us_per_publish "$(per $((s1 - s0)))"
    fi
    put pub "$who" "$r" cpu_us_per_publish "$cpu"
    put pub "$who" "$r" latency_p99_ms "$(awk '$1 == "99%" {v = $2 + 0; if ($2 ~ /us$/) v /= 1000; else if ($2 ~ /[^m]s$/) v *= 1000; print v}' "$log")"
    put pub "$who" "$r" non2xx "$(awk '/Non-2xx/{print $5}' "$log")"
    echo "  pub $who: ${rps:-?} publishes/s, $cpu us of server CPU each, load $la $(grep -o 'Non-2xx.*' "$log")"
}

echo "nchanapi: tidings=$TIDINGS load=$LOAD only=$ONLY rounds=$ROUNDS pushes=$PUSHES sizes=$SIZES big=$BIG transports=$TRANSPORTS out=$OUT"
echo "servers on CPU $SERVER_CPU (tidings --workers 1, nginx worker_processes 1), clients on CPU $CLIENT_CPU"
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); tree HEAD: $(git -C "$here/../.." rev-parse --short HEAD 2>/dev/null); nginx $(nginx -v 2>&1 | cut -d/ -f2), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
t0=$(date +%s)
while awk -v l="$(loadavg)" -v q="${QUIET_LOAD:-1.0}" 'BEGIN{exit !(l >= q)}' && [ $(($(date +%s) - t0)) -lt "${QUIET_MAX:-2400}" ]; do
    sleep 30
done
echo "start after $(($(date +%s) - t0)) s of waiting; load average $(cut -d' ' -f1-3 /proc/loadavg)"

for r in $(seq 1 "$ROUNDS"); do
    servers=(tidings nchan)
    [ $((r % 2)) = 0 ] && servers=(nchan tidings)
    echo "=== round $r/$ROUNDS, ${servers[*]} ($(wait_quiet "${QUIET_WAIT:-20}"); load $(cut -d' ' -f1-3 /proc/loadavg))"
    for t in $TRANSPORTS; do
        for n in $SIZES; do
            want sub || break
            for who in "${servers[@]}"; do
                wait_quiet "${QUIET_WAIT:-20}" > /dev/null
                sub_run "$t-$n" "$who" "$r" "$t" "$n" "$PUSHES"
            done
        done
        if want mem19; then
            for who in "${servers[@]}"; do
                wait_quiet "${QUIET_WAIT:-20}" > /dev/null
                sub_run "$t-$BIG" "$who" "$r" "$t" "$BIG" 0
            done
        fi
    done
    if want pub; then
        for who in "${servers[@]}"; do
            wait_quiet "${QUIET_WAIT:-20}" > /dev/null
            pub_run "$who" "$r"
        done
    fi
done

echo "=== done in $(($(date +%s) - t0)) s; raw logs and results.tsv in $OUT"
grep -l 'result=FAIL' "$OUT"/*.log 2>/dev/null | sed 's/^/FAILED: /'
python3 - "$TSV" > "$OUT/table.md" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    row, who, _r, metric, v = line.rstrip("\n").split("\t")
    rows.setdefault((row, metric), {}).setdefault(who, []).append(float(v))
print("| row | metric | tidings | nchan | tidings/nchan | rounds | loads (1-min) |")
print("|---|---|---|---|---|---|---|")
for (row, metric), by in rows.items():
    if metric == "loadavg1":
        continue
    t, n = (statistics.median(by[w]) if by.get(w) else None for w in ("tidings", "nchan"))
    f = lambda x: "–" if x is None else (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}")
    ratio = f"{t / n:.2f}" if t is not None and n else "–"
    loads = rows.get((row, "loadavg1"), {})
    la = "/".join(f"{x:.1f}" for w in ("tidings", "nchan") for x in loads.get(w, []))
    print(f"| {row} | {metric} | {f(t)} | {f(n)} | {ratio} | {len(by.get('tidings', []))} | {la} |")
PY
cat "$OUT/table.md"
