#!/bin/bash
# Two or more tidings binaries side by side with nginx + nchan, in one run:
# servers pinned to CPU 0 (one worker each: tidings --workers 1, nginx
# worker_processes 1), clients pinned to CPU 1, a fresh server per scenario,
# the servers taken in turn within each round, medians of the rounds, ratios.
#
#   BASE=/old/tidings NEW=/new/tidings loadtest/bench/compare.sh
#   TIDINGS_BINS="a=/x/tidings b=/y/tidings c=/z/tidings" loadtest/bench/compare.sh
#   QUICK=1 BASE=… NEW=… loadtest/bench/compare.sh          (1 round, shorter: a smoke check)
#
# Ratios compare the LAST binary with the FIRST (NEW/BASE) and with nchan.
# Scenarios (each reusing tidings-load or wrk):
#   wrk     requests/s and server CPU µs per request: Talk push, comet put, QST push
#           (vs nchan publish), comet sync, QST empty pull (vs nchan channel info GET)
#   talk    talk-idle 1,000 and 10,000 (vs nchan http-chunked subscribers):
#           memory per stream, fan-out p50/p99, server CPU per delivery
#   comet   comet-longpoll 1,000 and 10,000 (vs nchan long-poll): the same
#   qstlp   memory per parked QST long-poll at 10,000 (comet-longpoll --dialect qst)
#   mem19   memory per idle Talk stream / nchan subscriber at 18,500 (full run only)
#   pipe    tidings-load pipeline (and nginx answering /health itself, for reference)
#   xmpp    XMPP against Prosody (bench/prosody/prosody.cfg.lua, one Lua process):
#           xmpp-idle at 1,000 and 10,000 sessions (XMPP_SESSIONS): memory per idle
#           session, logins/s; xmpp-ping with 100 clients: round trips/s, p50/p99,
#           server CPU per round trip. Not in the default set; ONLY=xmpp runs it alone
#           and then needs only one tidings binary (NEW=… or TIDINGS_BINS="label=path").
#
# Environment: BASE, NEW or TIDINGS_BINS (label=path …); LOAD (tidings-load;
# default: beside the last binary); OUT (raw logs, results.tsv, table.md;
# default /tmp/tidings-compare-DATE); ROUNDS (3); QUICK (1: one round, short runs);
# ONLY (space-separated scenario names above); SERVER_CPU (0), CLIENT_CPU (1);
# PORT_BASE (29500: one new port per server started; below the ephemeral range
# 32768-60999, where a listener can collide with any client's connection); XMPP_SESSIONS ("1000 10000");
# XMPP_PING_SECS (10); XMPP_PING (0: no xmpp-ping, e.g. for XMPP_SESSIONS=19500 alone).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

ONLY=${ONLY:-wrk talk comet qstlp mem19 pipe}
want() { [[ " $ONLY " == *" $1 "* ]]; }
# every scenario but xmpp compares binaries with each other and with nchan
http_scenarios=0
for s in $ONLY; do [ "$s" != xmpp ] && http_scenarios=1; done
if [ -z "${TIDINGS_BINS:-}" ]; then
    if [ -n "${BASE:-}" ] && [ -n "${NEW:-}" ]; then
        TIDINGS_BINS="base=$BASE new=$NEW"
    elif [ "$http_scenarios" = 0 ] && [ -n "${NEW:-}" ]; then
        TIDINGS_BINS="new=$NEW"
    else
        echo "usage: BASE=/path/tidings NEW=/path/tidings $0   (or TIDINGS_BINS=\"label=path …\"; ONLY=xmpp: NEW alone)" >&2
        exit 2
    fi
fi
labels=()
declare -A binof
for lb in $TIDINGS_BINS; do
    l=${lb%%=*} b=${lb#*=}
    [ -x "$b" ] || { echo "$b: not an executable" >&2; exit 2; }
    labels+=("$l")
    binof[$l]=$b
done
[ ${#labels[@]} -ge 2 ] || [ "$http_scenarios" = 0 ] || { echo "need two or more tidings binaries" >&2; exit 2; }
last=${labels[-1]}
LOAD=${LOAD:-$(dirname "${binof[$last]}")/tidings-load}
[ -x "$LOAD" ] || { echo "$LOAD: no tidings-load (set LOAD)" >&2; exit 2; }
if [ "$http_scenarios" = 1 ]; then
    command -v wrk >/dev/null && command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || {
        echo "needs wrk, nginx and libnginx-mod-nchan (apt-get install -y wrk nginx libnginx-mod-nchan)" >&2
        exit 2
    }
fi
if want xmpp && ! command -v prosody >/dev/null; then
    echo "ONLY=xmpp needs Prosody (apt-get install -y prosody)" >&2
    exit 2
fi

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    ROUNDS=1 WRK_SECS=2 PUSHES=2 COMET_SECS=2 PIPE_REQ=20000 MEM19=0 XMPP_PING_SECS=${XMPP_PING_SECS:-3}
else
    ROUNDS=${ROUNDS:-3} WRK_SECS=5 PUSHES=5 COMET_SECS=5 PIPE_REQ=100000 MEM19=1 XMPP_PING_SECS=${XMPP_PING_SECS:-10}
fi
XMPP_SESSIONS=${XMPP_SESSIONS:-1000 10000}
XMPP_PING=${XMPP_PING:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-/tmp/tidings-compare-$(date +%Y%m%d-%H%M%S)}
WORK=$OUT/work
mkdir -p "$WORK"
TSV=$OUT/results.tsv
: > "$TSV"
WORKERS=1 NGINX_WORKERS=1 START_WAIT=0.5 STOP_WAIT=0.3
PIN="taskset -c $SERVER_CPU"
CL="taskset -c $CLIENT_CPU"
next_port=${PORT_BASE:-29500}
servers=("${labels[@]}" nchan)
xservers=("${labels[@]}" prosody)

# record SCENARIO SERVER ROUND METRIC VALUE
record() { [ -n "$5" ] && [ "$5" != na ] && printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$TSV"; }

# up SERVER [tidings flags…]: a fresh server of that label on a new port; sets
# P (port), SPIDS (pid list for CPU and memory)
up() {
    local who=$1
    shift
    take_port P
    if [ "$who" = nchan ]; then
        nginx_conf "$WORK/nchan" "$P" nchan
        start_nginx "$WORK/nchan" "$P"
        SPIDS=$NPIDS
    else
        PORT=$P TIDINGS=${binof[$who]} start_server "$@"
        SPIDS=$PID
    fi
}
down() {
    case $1 in
    nchan) stop_nginx ;;
    prosody) stop_prosody ;;
    *) stop_server ;;
    esac
}
# xup SERVER: a fresh tidings of that label with its XMPP listener on a new
# port, or a fresh Prosody; sets XP (the XMPP port) and SPIDS
xup() {
    take_port XP
    if [ "$1" = prosody ]; then
        prosody_setup "$WORK/prosody-$XP"
        start_prosody "$WORK/prosody-$XP" "$XP"
        SPIDS=$PRPID
    else
        up "$1" --xmpp-listen "127.0.0.1:$XP"
    fi
    # the baseline RSS is read first thing: only once the server is up (a slow
    # start once gave a baseline of 4 KiB and refused connects)
    local i
    for i in $(seq 1 100); do
        port_free "$XP" || break
        sleep 0.1
    done
}

# wrk_row SCENARIO SERVER ROUND URL [LUA]: requests/s and server CPU µs per request
wrk_row() {
    local sc=$1 who=$2 r=$3 url=$4 lua=${5:-} log c0 c1 n rps
    log=$OUT/r$r-$sc-$who.log
    c0=$(cpu_us "$SPIDS")
    # shellcheck disable=SC2086
    $CL wrk -t1 -c100 -d"${WRK_SECS}s" --latency ${lua:+-s "$lua"} "$url" > "$log" 2>&1
    c1=$(cpu_us "$SPIDS")
    n=$(awk '/requests in/{print $1}' "$log")
    rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$log")
    record "$sc" "$who" "$r" rps "$rps"
    [ -n "$n" ] && [ "$n" -gt 0 ] && record "$sc" "$who" "$r" cpu_us_per_req "$(awk -v c=$((c1 - c0)) -v n="$n" 'BEGIN{printf "%.2f", c / n}')"
    record "$sc" "$who" "$r" non2xx "$(awk '/Non-2xx/{print $5}' "$log")"
    echo "  $sc $who: ${rps:-?} req/s $(grep -o 'Non-2xx.*' "$log")"
}

lua() { # lua NAME METHOD BODY [CONTENT-TYPE]
    printf 'wrk.method = "%s"\nwrk.body = %s\nwrk.headers["Content-Type"] = "%s"\n' \
        "$2" "$3" "${4:-text/plain}" > "$WORK/$1.lua"
    echo "$WORK/$1.lua"
}
L_TALK=$(lua talk POST '"name=wrk&channel=bench&message=hello"' application/x-www-form-urlencoded)
L_QST=$(lua qst POST "'[{\"from\":\"sms://1\",\"to\":\"sms://2\",\"body\":\"hello\"}]'" application/json)
L_PUB=$(lua pub POST '"hello"')

echo "compare: ${TIDINGS_BINS}$([ "$http_scenarios" = 1 ] && echo ' + nginx/nchan')$(want xmpp && echo ' + Prosody'); only=$ONLY load=$LOAD rounds=$ROUNDS quick=$QUICK out=$OUT"
echo "servers on CPU $SERVER_CPU (tidings --workers 1, nginx worker_processes 1, Prosody: one process), clients on CPU $CLIENT_CPU"
echo "machine: $(nproc) cpus, kernel $(uname -r); tree HEAD: $(git -C "$here/../.." rev-parse --short HEAD 2>/dev/null)"
t_start=$(date +%s)

for r in $(seq 1 "$ROUNDS"); do
    echo "=== round $r/$ROUNDS ($(wait_quiet 20))"
    if want wrk; then
        for who in "${servers[@]}"; do
            if [ "$who" = nchan ]; then
                up nchan
                wrk_row publish nchan "$r" "http://127.0.0.1:$P/pub?channel=bench" "$L_PUB"
                down nchan
                up nchan
                curl -s -o /dev/null -X POST --data hello "http://127.0.0.1:$P/pub?channel=bench"
                wrk_row pull nchan "$r" "http://127.0.0.1:$P/pub?channel=bench"
                down nchan
                continue
            fi
            up "$who"; wrk_row talk-push "$who" "$r" "http://127.0.0.1:$P/push" "$L_TALK"; down "$who"
            up "$who"; wrk_row comet-put "$who" "$r" "http://127.0.0.1:$P/comet?method=put&channel=bench&message=hello"; down "$who"
            # the queue is never consumed: room for every push of the run
            up "$who" --queue-capacity 100000000 --queue-bytes 4294967296
            wrk_row qst-push "$who" "$r" "http://127.0.0.1:$P/qst/bench" "$L_QST"; down "$who"
            up "$who"; wrk_row comet-sync "$who" "$r" "http://127.0.0.1:$P/comet?method=sync&channel=bench"; down "$who"
            up "$who"; wrk_row qst-pull "$who" "$r" "http://127.0.0.1:$P/qst/bench?format=json"; down "$who"
        done
    fi
    for n in 1000 10000; do
        want talk || break
        for who in "${servers[@]}"; do
            log=$OUT/r$r-talk-$n-$who.log
            up "$who"
            # shellcheck disable=SC2046
            $CL "$LOAD" talk-idle --server "127.0.0.1:$P" --streams "$n" --procs 1 --pushes "$PUSHES" \
                --push-gap-ms 100 --settle-ms 500 --channel load --server-pid "$SPIDS" \
                $([ "$who" = nchan ] && echo --dialect nchan) > "$log" 2>&1
            down "$who"
            for k in rss_per_stream_bytes fanout_p50_ms fanout_p99_ms server_cpu_us_per_delivery; do
                record "talk-$n" "$who" "$r" "$k" "$(kv "$log" $k)"
            done
            echo "  talk-$n $who: $(kv "$log" rss_per_stream_bytes) B/stream p99 $(kv "$log" fanout_p99_ms) ms $(kv "$log" result)"
        done
    done
    for n in 1000 10000; do
        want comet || break
        for who in "${servers[@]}"; do
            log=$OUT/r$r-comet-$n-$who.log
            up "$who"
            # shellcheck disable=SC2046
            $CL "$LOAD" comet-longpoll --server "127.0.0.1:$P" --clients "$n" --procs 1 --rate 10 \
                --duration "$COMET_SECS" --settle-ms 500 --server-pid "$SPIDS" \
                $([ "$who" = nchan ] && echo --dialect nchan) > "$log" 2>&1
            down "$who"
            for k in rss_per_parked_client_bytes latency_p50_ms latency_p99_ms server_cpu_us_per_delivery; do
                record "comet-$n" "$who" "$r" "$k" "$(kv "$log" $k)"
            done
            echo "  comet-$n $who: $(kv "$log" rss_per_parked_client_bytes) B/client p99 $(kv "$log" latency_p99_ms) ms $(kv "$log" result)"
        done
    done
    if want qstlp; then
        for who in "${labels[@]}"; do
            log=$OUT/r$r-qstlp-10000-$who.log
            up "$who"
            $CL "$LOAD" comet-longpoll --dialect qst --server "127.0.0.1:$P" --clients 10000 --procs 1 \
                --settle-ms 500 --server-pid "$SPIDS" > "$log" 2>&1
            down "$who"
            record qst-longpoll-10000 "$who" "$r" rss_per_parked_client_bytes "$(kv "$log" rss_per_parked_client_bytes)"
            echo "  qst-longpoll-10000 $who: $(kv "$log" rss_per_parked_client_bytes) B/pull $(kv "$log" result)"
        done
    fi
    if want mem19 && [ "$MEM19" = 1 ]; then
        for who in "${servers[@]}"; do
            log=$OUT/r$r-talk-18500-$who.log
            up "$who"
            # shellcheck disable=SC2046
            $CL "$LOAD" talk-idle --server "127.0.0.1:$P" --streams 18500 --procs 1 --pushes 0 \
                --settle-ms 500 --channel load --server-pid "$SPIDS" \
                $([ "$who" = nchan ] && echo --dialect nchan) > "$log" 2>&1
            down "$who"
            record talk-18500 "$who" "$r" rss_per_stream_bytes "$(kv "$log" rss_per_stream_bytes)"
            echo "  talk-18500 $who: $(kv "$log" rss_per_stream_bytes) B/stream $(kv "$log" result)"
        done
    fi
    if want pipe; then
        for who in "${servers[@]}"; do
            log=$OUT/r$r-pipeline-$who.log
            up "$who"
            $CL "$LOAD" pipeline --server "127.0.0.1:$P" --requests "$PIPE_REQ" --path /health \
                --server-pid "$SPIDS" --timeout 120 > "$log" 2>&1
            down "$who"
            for k in pipelined_cpu_us_per_req sequential_cpu_us_per_req pipelined_s sequential_s cpu_ratio; do
                record pipeline "$who" "$r" "$k" "$(kv "$log" $k)"
            done
            echo "  pipeline $who: pipelined $(kv "$log" pipelined_cpu_us_per_req) µs/req, sequential $(kv "$log" sequential_cpu_us_per_req) µs/req $(kv "$log" result)"
        done
    fi
    if want xmpp; then
        for n in $XMPP_SESSIONS; do
            for who in "${xservers[@]}"; do
                log=$OUT/r$r-xmpp-$n-$who.log
                xup "$who"
                $CL "$LOAD" xmpp-idle --server "127.0.0.1:$XP" --sessions "$n" --procs 1 \
                    --settle-ms 1000 --server-pid "$SPIDS" > "$log" 2>&1
                down "$who"
                for k in rss_per_session_bytes logins_per_s login_p50_ms login_p99_ms; do
                    record "xmpp-$n" "$who" "$r" "$k" "$(kv "$log" $k)"
                done
                echo "  xmpp-$n $who: $(kv "$log" rss_per_session_bytes) B/session, $(kv "$log" logins_per_s) logins/s $(kv "$log" result)"
            done
        done
        for who in "${xservers[@]}"; do
            [ "$XMPP_PING" = 1 ] || break
            log=$OUT/r$r-xmpp-ping-$who.log
            xup "$who"
            $CL "$LOAD" xmpp-ping --server "127.0.0.1:$XP" --clients 100 --secs "$XMPP_PING_SECS" \
                --server-pid "$SPIDS" > "$log" 2>&1
            down "$who"
            for k in rt_per_s rt_p50_ms rt_p99_ms server_cpu_us_per_rt server_cpu_pct; do
                record xmpp-ping "$who" "$r" "$k" "$(kv "$log" $k)"
            done
            echo "  xmpp-ping $who: $(kv "$log" rt_per_s) round trips/s, $(kv "$log" server_cpu_us_per_rt) µs CPU each $(kv "$log" result)"
        done
    fi
done

echo "=== done in $(($(date +%s) - t_start)) s; raw logs and results.tsv in $OUT"
grep -l 'result=FAIL' "$OUT"/*.log 2>/dev/null | sed 's/^/FAILED: /'

# The tables: medians over the rounds; ratios LAST/FIRST and LAST/reference.
# The reference is nginx + nchan for the HTTP rows (its column holds the
# equivalent scenario: publish rows: nchan publish; pull rows: nchan channel info
# GET; pipeline: nginx answering /health itself) and Prosody for the xmpp rows.
python3 - "$TSV" "${labels[@]}" > "$OUT/table.md" <<'PY'
import sys, statistics, collections
tsv, labels = sys.argv[1], sys.argv[2:]
first, last = labels[0], labels[-1]
vals = collections.defaultdict(list)
for line in open(tsv):
    sc, who, r, metric, v = line.rstrip("\n").split("\t")
    try:
        vals[(sc, metric, who)].append(float(v))
    except ValueError:
        pass
twin = {"talk-push": "publish", "comet-put": "publish", "qst-push": "publish",
        "comet-sync": "pull", "qst-pull": "pull"}
order = ["talk-push", "comet-put", "qst-push", "comet-sync", "qst-pull",
         "talk-1000", "talk-10000", "comet-1000", "comet-10000",
         "qst-longpoll-10000", "talk-18500", "pipeline"]
metrics = collections.OrderedDict()
for (sc, m, _w) in vals:
    metrics.setdefault((sc, m), None)
def med(k):
    v = vals.get(k)
    return statistics.median(v) if v else None
def fmt(x):
    if x is None: return "–"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b not in (None, 0) else "–"
def table(ref, scenarios):
    cols = labels + [ref]
    pair = len(labels) > 1
    head = "| scenario | metric | " + " | ".join(cols) + (f" | {last}/{first}" if pair else "") + f" | {last}/{ref} | rounds |"
    lines = []
    for sc in scenarios:
        for (s2, m) in metrics:
            if s2 != sc or m == "non2xx":
                continue
            row = {w: med((sc, m, w)) for w in labels}
            row[ref] = med((twin.get(sc, sc), m, ref))
            if all(v is None for v in row.values()):
                continue
            n = len(vals.get((sc, m, last), []))
            lines.append(f"| {sc} | {m} | " + " | ".join(fmt(row[w]) for w in cols)
                         + (f" | {ratio(row[last], row[first])}" if pair else "")
                         + f" | {ratio(row[last], row[ref])} | {n} |")
    if lines:
        print(head)
        print("|---|---|" + "---|" * (len(cols) + 2 + pair))
        print("\n".join(lines))
        print()
scs = {s for s, _ in metrics}
xmpp = sorted((s for s in scs if s.startswith("xmpp-")),
              key=lambda s: (s == "xmpp-ping", int(s[5:]) if s[5:].isdigit() else 0))
table("nchan", order + sorted(scs - set(order) - set(xmpp)))
table("prosody", xmpp)
errs = [(k, v) for k, v in vals.items() if k[1] == "non2xx" and sum(v) > 0]
for (sc, _m, w), v in errs:
    print(f"non-2xx answers: {sc} {w}: {', '.join(str(int(x)) for x in v)}")
PY
cat "$OUT/table.md"
