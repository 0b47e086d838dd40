#!/bin/bash
# Issue 13's load figures: several nodes sharing their channels through one
# redis-server, tidings (`--redis`) beside nginx + nchan in its Redis mode
# (`nchan_redis_server` / `nchan_redis_pass`, lib.sh's NCHAN_REDIS), on nchan's API.
#
#   TIDINGS=/path/tidings [LOAD=/path/tidings-load] loadtest/bench/redis.sh
#
# Scenarios (ONLY, default "fanout pub"):
#   fanout  `tidings-load nchan-nodes` per transport (TRANSPORTS): STREAMS subscribers
#           spread evenly over TIDINGS_NODES tidings (--workers 1 each) or NCHAN_NODES
#           nginx (worker_processes 1 each), PUSHES messages PUSH_GAP_MS apart
#           published on node 0; fan-out p50 / p99 over every subscriber and per node,
#           exactly once, CPU per delivery per node, redis-server's CPU per publish
#   pub     wrk POST /pub/bench (5-byte text/plain body), WRK_CONNS connections for
#           WRK_SECS s against one node of each of PUB_SERVERS: tidings-redis (with
#           --redis), tidings-mem (no Redis), nchan-redis, nchan-mem; publishes/s,
#           the node's CPU per publish, redis-server's CPU per publish
#
# Two CPUs cannot give every process its own: every server (all the nodes, and
# redis-server) is pinned to SERVER_CPU, every client (tidings-load and its workers,
# wrk) to CLIENT_CPU. Each run gets fresh servers and a fresh redis-server (FLUSHALL'd
# before the nodes start); each round takes tidings and nchan in turn, the first one
# alternating between rounds; medians of ROUNDS rounds and ratios in table.md. Before
# the first round the script waits up to QUIET_MAX seconds (1200) for the 1-minute load
# average to drop under QUIET_LOAD (1.0), before each run up to QUIET_WAIT seconds (20)
# for a machine under 8 % busy; the load average of each run goes into results.tsv.
# Per run the redis-server's INFO commandstats and SLOWLOG, and the nodes' warnings
# and errors, are kept beside the client's log.
#
# Environment: TIDINGS (default: target/release/tidings of this tree), LOAD (beside it),
# OUT (default /tmp/tidings-redis-DATE), ROUNDS (3), STREAMS (10000), PUSHES (10),
# PUSH_GAP_MS (100), TRANSPORTS ("eventsource websocket"), TIDINGS_NODES (3),
# NCHAN_NODES (2), PUB_SERVERS ("tidings-redis tidings-mem nchan-redis nchan-mem"),
# WRK_SECS (5), WRK_CONNS (50), PORT_BASE (31700), SERVER_CPU (0), CLIENT_CPU (1),
# QUIET_MAX, QUIET_LOAD, QUIET_WAIT.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

find_binaries
for c in wrk nginx redis-server redis-cli; do
    command -v $c >/dev/null || {
        echo "needs wrk, nginx, libnginx-mod-nchan and redis-server (apt-get install -y wrk nginx libnginx-mod-nchan redis-server)" >&2
        exit 2
    }
done
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || { echo "needs libnginx-mod-nchan" >&2; exit 2; }
"$TIDINGS" --help 2>&1 | grep -q -- --redis || { echo "$TIDINGS has no --redis" >&2; exit 2; }
ONLY=${ONLY:-fanout pub}
want() { [[ " $ONLY " == *" $1 "* ]]; }
ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-10000}
PUSHES=${PUSHES:-10}
PUSH_GAP_MS=${PUSH_GAP_MS:-100}
TRANSPORTS=${TRANSPORTS:-eventsource websocket}
TIDINGS_NODES=${TIDINGS_NODES:-3}
NCHAN_NODES=${NCHAN_NODES:-2}
PUB_SERVERS=${PUB_SERVERS:-tidings-redis tidings-mem nchan-redis nchan-mem}
WRK_SECS=${WRK_SECS:-5}
WRK_CONNS=${WRK_CONNS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-/tmp/tidings-redis-$(date +%Y%m%d-%H%M%S)}
WORK=$OUT/work
mkdir -p "$WORK"
TSV=$OUT/results.tsv
: > "$TSV"
# one worker per node; 25,000 nginx connection slots as nchanapi.sh
WORKERS=1 NGINX_WORKERS=1 NGINX_CONNECTIONS=${NGINX_CONNECTIONS:-25000} START_WAIT=0.5 STOP_WAIT=0.5
PIN="taskset -c $SERVER_CPU"
CL="taskset -c $CLIENT_CPU"
next_port=${PORT_BASE:-31700}
post_lua "$WORK/post.lua"


# start_redis: a fresh redis-server (no persistence) on a new port, FLUSHALL'd; sets RPORT, RPID
start_redis() {
    take_port RPORT
    $PIN redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
        --protected-mode no --daemonize no > "$WORK/redis-$RPORT.log" 2>&1 &
    RPID=$!
    local i
    for i in $(seq 1 50); do
        redis-cli -p "$RPORT" ping > /dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$RPORT" flushall > /dev/null
    redis-cli -p "$RPORT" config resetstat > /dev/null
    redis-cli -p "$RPORT" slowlog reset > /dev/null
}
# stop_redis LOG: keeps its command statistics and slow log in LOG.redis, then stops it
stop_redis() {
    { redis-cli -p "$RPORT" info commandstats; redis-cli -p "$RPORT" info cpu
      redis-cli -p "$RPORT" slowlog get 10; redis-cli -p "$RPORT" dbsize; } > "$1.redis" 2>&1
    kill "$RPID"
    wait "$RPID" 2>/dev/null
}

# start_nodes KIND COUNT: COUNT fresh nodes (tidings-redis, tidings-mem, nchan-redis,
# nchan-mem) on new ports; sets ADDRS (comma-separated), NODE_PIDS (`/` between nodes,
# nginx's master and worker comma-separated), LOGS (the nodes' log files); the Redis
# kinds use the redis-server of start_redis
start_nodes() {
    local kind=$1 count=$2 i p
    ADDRS="" NODE_PIDS="" LOGS="" NODE_MASTERS=""
    for i in $(seq 0 $((count - 1))); do
        take_port p
        case $kind in
        tidings-*)
            local flags=()
            [ "$kind" = tidings-redis ] && flags=(--redis "redis://127.0.0.1:$RPORT/0")
            PORT=$p TIDINGS=$TIDINGS start_server "${flags[@]}"
            NODE_PIDS+="${NODE_PIDS:+/}$PID"
            NODE_MASTERS+=" $PID"
            LOGS+=" $WORK/tidings-$p.log"
            ;;
        nchan-*)
            rm -rf "$WORK/nginx-$p"
            if [ "$kind" = nchan-redis ]; then
                NCHAN_REDIS="redis://127.0.0.1:$RPORT" nginx_conf "$WORK/nginx-$p" "$p" nchan
            else
                NCHAN_REDIS="" nginx_conf "$WORK/nginx-$p" "$p" nchan
            fi
            start_nginx "$WORK/nginx-$p" "$p"
            NODE_PIDS+="${NODE_PIDS:+/}$NPIDS"
            NODE_MASTERS+=" $NPID"
            LOGS+=" $WORK/nginx-$p/logs/error.log"
            ;;
        esac
        ADDRS+="${ADDRS:+,}127.0.0.1:$p"
    done
}
stop_nodes() {
    local p
    for p in $NODE_MASTERS; do kill "$p"; done
    for p in $NODE_MASTERS; do wait "$p" 2>/dev/null; done
    sleep "$STOP_WAIT"
}
# node_notes LOG: the nodes' warnings and errors (besides nginx's note that its
# connection slots exceed the open-file limit) into LOG.nodes; prints their count
node_notes() {
    local f
    for f in $LOGS; do
        [ -f "$f" ] && grep -iE '\b(warn|error|crit|alert|emerg|panic)' "$f" \
            | grep -v 'worker_connections exceed open file' | sed "s#^#$(basename "$(dirname "$f")")/$(basename "$f"): #"
    done > "$1.nodes"
    wc -l < "$1.nodes"
}

# fanout_run ROUND TRANSPORT WHO (tidings | nchan)
fanout_run() {
    local r=$1 t=$2 who=$3 log la nodes kind m notes
    log=$OUT/r$r-$t-$who.log
    if [ "$who" = tidings ]; then nodes=$TIDINGS_NODES kind=tidings-redis; else nodes=$NCHAN_NODES kind=nchan-redis; fi
    start_redis
    start_nodes "$kind" "$nodes"
    la=$(loadavg)
    $CL "$LOAD" nchan-nodes --transport "$t" --servers "$ADDRS" --streams "$STREAMS" \
        --server-pids "$NODE_PIDS" --redis-pid "$RPID" --pushes "$PUSHES" \
        --push-gap-ms "$PUSH_GAP_MS" --settle-ms 1000 --channel "load-$t" > "$log" 2>&1
    stop_nodes
    stop_redis "$log"
    notes=$(node_notes "$log")
    put "$t" "$who" "$r" loadavg1 "$la"
    put "$t" "$who" "$r" node_log_warnings "$notes"
    for m in fanout_p50_ms fanout_p99_ms fanout_last_p50_ms fanout_last_max_ms lost dups \
        nodes_cpu_us_per_delivery redis_cpu_us_per_push all_cpu_us_per_delivery \
        node0_p99_ms node1_p99_ms node2_p99_ms \
        node0_cpu_us_per_delivery node1_cpu_us_per_delivery node2_cpu_us_per_delivery \
        node0_rss_per_stream_bytes node1_rss_per_stream_bytes node2_rss_per_stream_bytes; do
        put "$t" "$who" "$r" "$m" "$(kv "$log" $m)"
    done
    printf '  %-12s %-8s p50 %8s p99 %8s last %8s ms  cpu/delivery nodes %6s (%s / %s / %s) +redis %6s us  redis/push %7s us  lost %s dups %s  log notes %s  load %s  %s\n' \
        "$t" "$who" "$(kv "$log" fanout_p50_ms)" "$(kv "$log" fanout_p99_ms)" "$(kv "$log" fanout_last_p50_ms)" \
        "$(kv "$log" nodes_cpu_us_per_delivery)" "$(kv "$log" node0_cpu_us_per_delivery)" \
        "$(kv "$log" node1_cpu_us_per_delivery)" "$(kv "$log" node2_cpu_us_per_delivery)" \
        "$(kv "$log" all_cpu_us_per_delivery)" "$(kv "$log" redis_cpu_us_per_push)" \
        "$(kv "$log" lost)" "$(kv "$log" dups)" "$notes" "$la" "$(kv "$log" result)"
}

# pub_run ROUND KIND: wrk publishing to /pub/bench on one node of KIND
pub_run() {
    local r=$1 kind=$2 log c0 c1 r0 r1 n rps la cpu rcpu notes
    log=$OUT/r$r-pub-$kind.log
    [[ $kind == *-redis ]] && start_redis
    start_nodes "$kind" 1
    la=$(loadavg)
    c0=$(cpu_us "${NODE_PIDS//\//,}")
    [[ $kind == *-redis ]] && r0=$(cpu_us "$RPID")
    $CL wrk -t1 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency -s "$WORK/post.lua" \
        "http://$ADDRS/pub/bench" > "$log" 2>&1
    c1=$(cpu_us "${NODE_PIDS//\//,}")
    [[ $kind == *-redis ]] && r1=$(cpu_us "$RPID")
    stop_nodes
    [[ $kind == *-redis ]] && stop_redis "$log"
    notes=$(node_notes "$log")
    n=$(awk '/requests in/{print $1}' "$log")
    rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$log")
    cpu=na rcpu=na
    if [ "${n:-0}" -gt 0 ]; then
        cpu=$(awk -v c=$((c1 - c0)) -v n="$n" 'BEGIN{printf "%.2f", c / n}')
        [[ $kind == *-redis ]] && rcpu=$(awk -v c=$((r1 - r0)) -v n="$n" 'BEGIN{printf "%.2f", c / n}')
    fi
    put pub "$kind" "$r" loadavg1 "$la"
    put pub "$kind" "$r" publishes_per_s "$rps"
    put pub "$kind" "$r" node_cpu_us_per_publish "$cpu"
    put pub "$kind" "$r" redis_cpu_us_per_publish "$rcpu"
    put pub "$kind" "$r" latency_p99_ms "$(awk '$1 == "99%" {v = $2 + 0; if ($2 ~ /us$/) v /= 1000; else if ($2 ~ /[^m]s$/) v *= 1000; print v}' "$log")"
    put pub "$kind" "$r" non2xx "$(awk '/Non-2xx/{print $5}' "$log")"
    put pub "$kind" "$r" node_log_warnings "$notes"
    echo "  pub $kind: ${rps:-?} publishes/s, node $cpu us + redis $rcpu us of CPU each, load $la, log notes $notes $(grep -o 'Non-2xx.*' "$log")"
}

echo "redis: tidings=$TIDINGS load=$LOAD only=$ONLY rounds=$ROUNDS streams=$STREAMS pushes=$PUSHES transports=$TRANSPORTS nodes tidings=$TIDINGS_NODES nchan=$NCHAN_NODES out=$OUT"
echo "servers (nodes and redis-server) on CPU $SERVER_CPU (tidings --workers 1, nginx worker_processes 1), clients on CPU $CLIENT_CPU"
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); tree HEAD: $(git -C "$here/../.." rev-parse --short HEAD 2>/dev/null); nginx $(nginx -v 2>&1 | cut -d/ -f2), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null), $(redis-server --version | cut -d' ' -f1-3)"
t0=$(date +%s)
while awk -v l="$(loadavg)" -v q="${QUIET_LOAD:-1.0}" 'BEGIN{exit !(l >= q)}' && [ $(($(date +%s) - t0)) -lt "${QUIET_MAX:-1200}" ]; do
    sleep 30
done
echo "start after $(($(date +%s) - t0)) s of waiting; load average $(cut -d' ' -f1-3 /proc/loadavg)"

for r in $(seq 1 "$ROUNDS"); do
    servers=(tidings nchan)
    pubs=($PUB_SERVERS)
    if [ $((r % 2)) = 0 ]; then
        servers=(nchan tidings)
        pubs=($(printf '%s\n' $PUB_SERVERS | tac))
    fi
    echo "=== round $r/$ROUNDS, ${servers[*]} ($(wait_quiet "${QUIET_WAIT:-20}"); load $(cut -d' ' -f1-3 /proc/loadavg))"
    if want fanout; then
        for t in $TRANSPORTS; do
            for who in "${servers[@]}"; do
                wait_quiet "${QUIET_WAIT:-20}" > /dev/null
                fanout_run "$r" "$t" "$who"
            done
        done
    fi
    if want pub; then
        for kind in "${pubs[@]}"; do
            wait_quiet "${QUIET_WAIT:-20}" > /dev/null
            pub_run "$r" "$kind"
        done
    fi
done

echo "=== done in $(($(date +%s) - t0)) s; raw logs and results.tsv in $OUT"
grep -l 'result=FAIL' "$OUT"/*.log 2>/dev/null | sed 's/^/FAILED: /'
python3 - "$TSV" > "$OUT/table.md" <<'PY'
import sys, statistics
rows = {}
order = []
for line in open(sys.argv[1]):
    row, who, _r, metric, v = line.rstrip("\n").split("\t")
    if (row, metric) not in rows:
        order.append((row, metric))
    rows.setdefault((row, metric), {}).setdefault(who, []).append(float(v))
f = lambda x: "–" if x is None else (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}")
med = lambda by, w: statistics.median(by[w]) if by.get(w) else None
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"
def table(kinds, ratios, title, select):
    print(f"\n### {title}\n")
    print("| row | metric | " + " | ".join(kinds) + " | " + " | ".join(f"{a}/{b}" for a, b in ratios) + " | per round | loads (1-min) |")
    print("|---" * (4 + len(kinds) + len(ratios)) + "|")
    for (row, metric) in order:
        if metric == "loadavg1" or not select(row):
            continue
        by = rows[(row, metric)]
        m = {w: med(by, w) for w in kinds}
        per = "; ".join("/".join(f(x) for x in by.get(w, [])) for w in kinds)
        loads = rows.get((row, "loadavg1"), {})
        la = "/".join(f"{x:.1f}" for w in kinds for x in loads.get(w, []))
        print(f"| {row} | {metric} | " + " | ".join(f(m[w]) for w in kinds) + " | "
              + " | ".join(ratio(m[a], m[b]) for a, b in ratios) + f" | {per} | {la} |")
table(["tidings", "nchan"], [("tidings", "nchan")], "Fan-out through Redis (medians)", lambda r: r != "pub")
table(["tidings-redis", "tidings-mem", "nchan-redis", "nchan-mem"],
      [("tidings-redis", "nchan-redis"), ("tidings-redis", "tidings-mem"), ("nchan-redis", "nchan-mem")],
      "Publishing through one node (medians)", lambda r: r == "pub")
PY
cat "$OUT/table.md"
