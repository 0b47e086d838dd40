#!/bin/bash
# Issue 12's back-to-back rows: tidings and nginx + nchan on nchan's own API, SUBS
# subscribers of `/sub/{channel}` per transport while publishers POST to `/pub/{channel}`
# back to back, each POST written as soon as the previous one is answered
# (`tidings-load nchan-sub --back-to-back M --publishers P`).
#
#   TIDINGS=/path/tidings [LOAD=/path/tidings-load] loadtest/bench/backtoback.sh
#
# Scenarios (ONLY, default "one four"):
#   one   one publisher, ONE_MSGS messages (LP_ONE_MSGS for long-poll): p50 / p99 of arrival − the time the message's
#         POST was written, over every delivery; deliveries/s; lost, duplicated; server
#         CPU per delivery
#   four  FOUR_PUBS (4) publishers, FOUR_MSGS messages each (LP_FOUR_MSGS for long-poll), on
#         the same channel: the same figures, deliveries/s first
#
# A long-poll subscriber makes one round trip per message, so it falls seconds behind a
# back-to-back publisher: its rows take fewer messages to stay short (and within the
# channels' retention of 1,024).
#
# Every server is fresh per run and pinned to SERVER_CPU (tidings --workers 1, nginx
# worker_processes 1), the client (its subscriber process and the publishers) to
# CLIENT_CPU; each round takes tidings and nchan in turn, the first one alternating
# between rounds; medians of ROUNDS rounds and the ratio tidings/nchan in table.md.
# Before each run the script waits up to QUIET_WAIT seconds (20) for a machine under 8 %
# busy (lib.sh wait_quiet); the 1-minute load average at each run, the client's CPU
# (user + system, % of one CPU over the run) and the CPU that other processes used meanwhile
# (% of the machine, lib.sh timed_run) go into results.tsv.
#
# Environment: TIDINGS (default: target/release/tidings of this tree), LOAD (beside it),
# OUT (default /tmp/tidings-backtoback-DATE), ROUNDS (3), SUBS (10000), ONE_MSGS (100),
# LP_ONE_MSGS (50), FOUR_PUBS (4), FOUR_MSGS (40), LP_FOUR_MSGS (12), LOSS_TIMEOUT (60 s after
# the last POST is answered), TRANSPORTS ("eventsource websocket longpoll"),
# PORT_BASE (29700), SERVER_CPU (0), CLIENT_CPU (1), QUIET_WAIT.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

find_binaries
command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || {
    echo "needs nginx and libnginx-mod-nchan (apt-get install -y nginx libnginx-mod-nchan)" >&2
    exit 2
}
ONLY=${ONLY:-one four}
ROUNDS=${ROUNDS:-3}
SUBS=${SUBS:-10000}
ONE_MSGS=${ONE_MSGS:-100}
LP_ONE_MSGS=${LP_ONE_MSGS:-50}
FOUR_PUBS=${FOUR_PUBS:-4}
FOUR_MSGS=${FOUR_MSGS:-40}
LP_FOUR_MSGS=${LP_FOUR_MSGS:-12}
TRANSPORTS=${TRANSPORTS:-eventsource websocket longpoll}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-/tmp/tidings-backtoback-$(date +%Y%m%d-%H%M%S)}
WORK=$OUT/work
mkdir -p "$WORK"
TSV=$OUT/results.tsv
: > "$TSV"
WORKERS=1 NGINX_WORKERS=1 NGINX_CONNECTIONS=${NGINX_CONNECTIONS:-25000} START_WAIT=0.5 STOP_WAIT=0.5
PIN="taskset -c $SERVER_CPU"
CL="taskset -c $CLIENT_CPU"
next_port=${PORT_BASE:-29700}


# start SERVER: a fresh tidings or nginx + nchan on a new port; sets P and SPIDS
start() {
    take_port P
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

# b2b_run ROW SERVER ROUND TRANSPORT PUBLISHERS MESSAGES
b2b_run() {
    local row=$1 who=$2 r=$3 t=$4 pubs=$5 msgs=$6 log la client
    log=$OUT/r$r-$row-$who.log
    start "$who"
    la=$(loadavg)
    timed_run "$log" "$SPIDS" $CL "$LOAD" nchan-sub --transport "$t" --server "127.0.0.1:$P" \
        --streams "$SUBS" --procs 1 --pushes 0 --settle-ms 500 --channel "b2b-$t" \
        --back-to-back "$msgs" --publishers "$pubs" --loss-timeout "${LOSS_TIMEOUT:-60}" --server-pid "$SPIDS"
    stop "$who"
    # the client's CPU over the whole run (connecting included), % of one CPU
    client=$(tail -n 1 "$log.time" | awk '{if ($1 > 0) printf "%.0f", ($2 + $3) / $1 * 100}')
    put "$row" "$who" "$r" loadavg1 "$la"
    put "$row" "$who" "$r" others_pct "$OTHERS"
    put "$row" "$who" "$r" client_cpu_pct "$client"
    for m in b2b_p50_ms b2b_p99_ms b2b_max_ms b2b_deliveries_per_s b2b_server_cpu_us_per_delivery \
        b2b_lost b2b_dups b2b_span_s b2b_post_p50_ms; do
        put "$row" "$who" "$r" "$m" "$(kv "$log" "$m")"
    done
    printf '  %-16s %-7s p50 %9s  p99 %9s ms  %8s deliveries/s  %6s us/delivery  lost %s dups %s  post p50 %s ms  client %s%%  others %s%%  load %s  %s\n' \
        "$row" "$who" "$(kv "$log" b2b_p50_ms)" "$(kv "$log" b2b_p99_ms)" \
        "$(kv "$log" b2b_deliveries_per_s)" "$(kv "$log" b2b_server_cpu_us_per_delivery)" \
        "$(kv "$log" b2b_lost)" "$(kv "$log" b2b_dups)" "$(kv "$log" b2b_post_p50_ms)" \
        "$client" "$OTHERS" "$la" "$(kv "$log" result)"
}

echo "backtoback: tidings=$TIDINGS load=$LOAD only=$ONLY rounds=$ROUNDS subs=$SUBS one=$ONE_MSGS (long-poll $LP_ONE_MSGS) four=${FOUR_PUBS}x$FOUR_MSGS (long-poll ${FOUR_PUBS}x$LP_FOUR_MSGS) transports=$TRANSPORTS out=$OUT"
echo "servers on CPU $SERVER_CPU (tidings --workers 1, nginx worker_processes 1), clients on CPU $CLIENT_CPU"
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); tree HEAD: $(git -C "$here/../.." rev-parse --short HEAD 2>/dev/null); nginx $(nginx -v 2>&1 | cut -d/ -f2), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
t0=$(date +%s)
for r in $(seq 1 "$ROUNDS"); do
    servers=(tidings nchan)
    [ $((r % 2)) = 0 ] && servers=(nchan tidings)
    echo "=== round $r/$ROUNDS, ${servers[*]} (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for t in $TRANSPORTS; do
        for sc in $ONLY; do
            for who in "${servers[@]}"; do
                wait_quiet "${QUIET_WAIT:-20}" > /dev/null
                one=$ONE_MSGS four=$FOUR_MSGS
                [ "$t" = longpoll ] && one=$LP_ONE_MSGS four=$LP_FOUR_MSGS
                case $sc in
                    one) b2b_run "$t-one" "$who" "$r" "$t" 1 "$one" ;;
                    four) b2b_run "$t-four" "$who" "$r" "$t" "$FOUR_PUBS" "$four" ;;
                esac
            done
        done
    done
done

echo "=== done in $(($(date +%s) - t0)) s; raw logs and results.tsv in $OUT"
grep -l 'result=FAIL' "$OUT"/*.log 2>/dev/null | sed 's/^/FAILED: /'
python3 - "$TSV" > "$OUT/table.md" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    row, who, _r, metric, v = line.rstrip("\n").split("\t")
    rows.setdefault((row, metric), {}).setdefault(who, []).append(float(v))
print("| row | metric | tidings | nchan | tidings/nchan | per round (t / n) |")
print("|---|---|---|---|---|---|")
for (row, metric), by in rows.items():
    t, n = (statistics.median(by[w]) if by.get(w) else None for w in ("tidings", "nchan"))
    f = lambda x: "–" if x is None else (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}")
    ratio = f"{t / n:.2f}" if t is not None and n else "–"
    per = "; ".join(f"{f(a)} / {f(b)}" for a, b in zip(by.get("tidings", []), by.get("nchan", [])))
    print(f"| {row} | {metric} | {f(t)} | {f(n)} | {ratio} | {per} |")
PY
cat "$OUT/table.md"
