#!/bin/bash
# Issue 10's load figures on one tidings binary: `xmpp-fanout` (one publish reaching N
# PubSub subscribers over XMPP and N Talk streams of the same channel, p50 / p99 from the
# publish to the last byte read, every event exactly once) and the memory per idle BOSH
# session (`bosh-idle`) beside an idle XMPP TCP session (`xmpp-idle`) and a parked comet
# long-poll (`comet-longpoll`). The server is pinned to CPU 0 (--workers 1), every client
# process to CPU 1, a fresh server for every run, ROUNDS rounds, medians and ratios.
#
#   TIDINGS=/path/tidings [LOAD=/path/tidings-load] loadtest/bench/fanout.sh
#
# Environment: TIDINGS (default: target/release/tidings of this tree), LOAD (default:
# beside it), OUT (raw logs, results.tsv, table.md; default /tmp/tidings-fanout-DATE),
# ROUNDS (3), PUSHES (10 publishes per run), FANOUT ("1000 9900 10000": subscribers per
# transport), IDLE ("1000 10000": sessions of the memory rows), ONLY ("fanout idle"), PORT_BASE (29700), SERVER_CPU (0), CLIENT_CPU (1), QUIET_WAIT (20: at most this
# many seconds of waiting for a machine under 8 % busy before each round).
#
# Up to 9,900 subscribers per transport both fleets are up at once and every publish
# reaches both (2 × 9,900 connections is about what one server process holds under the
# 20,000 open files of this machine). Above that the transports take turns on the same
# server in the same run (`--apart`: one fleet up, its publishes, closed; then the other;
# TURNS (3) times, so that a disturbance from outside lands on both), the first one
# alternating between rounds.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

find_binaries
ROUNDS=${ROUNDS:-3}
PUSHES=${PUSHES:-10}
FANOUT=${FANOUT:-1000 9900 10000}
IDLE=${IDLE:-1000 10000}
TURNS=${TURNS:-3}
ONLY=${ONLY:-fanout idle}
want() { [[ " $ONLY " == *" $1 "* ]]; }
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-/tmp/tidings-fanout-$(date +%Y%m%d-%H%M%S)}
WORK=$OUT/work
mkdir -p "$WORK"
TSV=$OUT/results.tsv
: > "$TSV"
WORKERS=1 START_WAIT=0.5 STOP_WAIT=0.5
PIN="taskset -c $SERVER_CPU"
CL="taskset -c $CLIENT_CPU"
next_port=${PORT_BASE:-29700}
# the most subscribers per transport with both fleets up at once
TOGETHER_MAX=9900

# record ROW ROUND METRIC VALUE
record() { [ -n "$4" ] && [ "$4" != na ] && printf '%s\t%s\t%s\t%s\n' "$@" >> "$TSV"; }
# up: a fresh tidings on new HTTP and XMPP ports (P, XP); sets PID
up() {
    take_port P
    take_port XP
    PORT=$P start_server --xmpp-listen "127.0.0.1:$XP" "$@"
    local i
    for i in $(seq 1 100); do
        port_free "$XP" || break
        sleep 0.1
    done
}

echo "fanout: tidings=$TIDINGS load=$LOAD rounds=$ROUNDS pushes=$PUSHES sizes=$FANOUT out=$OUT"
echo "server on CPU $SERVER_CPU (--workers 1), clients on CPU $CLIENT_CPU"
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); tree HEAD: $(git -C "$here/../.." rev-parse --short HEAD 2>/dev/null)"
t_start=$(date +%s)

for r in $(seq 1 "$ROUNDS"); do
    echo "=== round $r/$ROUNDS ($(wait_quiet "${QUIET_WAIT:-20}"))"
    first=talk
    [ $((r % 2)) = 0 ] && first=xmpp
    for n in $FANOUT; do
        want fanout || break
        mode=() row=fanout-$n
        if [ "$n" -gt "$TOGETHER_MAX" ]; then
            mode=(--apart --turns "$TURNS") row=fanout-$n-apart
        fi
        log=$OUT/r$r-$row.log
        quiet=$(wait_quiet "${QUIET_WAIT:-20}")
        up
        timed_run "$log" "$PID" $CL "$LOAD" xmpp-fanout --server "127.0.0.1:$P" \
            --xmpp-server "127.0.0.1:$XP" --subscribers "$n" "${mode[@]}" --first "$first" \
            --procs 1 --pushes "$PUSHES" --settle-ms 500 --server-pid "$PID"
        stop_server
        record "$row" "$r" others_pct "$OTHERS"
        for k in talk_p50_ms talk_p99_ms talk_median_last_ms xmpp_p50_ms xmpp_p99_ms \
            xmpp_median_last_ms xmpp_talk_p99_ratio xmpp_talk_last_ratio \
            talk_server_cpu_us_per_delivery xmpp_server_cpu_us_per_delivery \
            talk_clients_cpu_ms_per_publish xmpp_clients_cpu_ms_per_publish \
            talk_received talk_lost talk_dups xmpp_received xmpp_lost xmpp_dups; do
            record "$row" "$r" "$k" "$(kv "$log" $k)"
        done
        echo "  $row (first $first; before: $quiet; others' CPU during the run: $OTHERS %): talk p99 $(kv "$log" talk_p99_ms) ms, xmpp p99 $(kv "$log" xmpp_p99_ms) ms, ratio $(kv "$log" xmpp_talk_p99_ratio); lost $(kv "$log" talk_lost)+$(kv "$log" xmpp_lost) dups $(kv "$log" talk_dups)+$(kv "$log" xmpp_dups) $(kv "$log" result)"
    done
    # memory per idle session: BOSH, XMPP over TCP, a parked comet long-poll; a fresh
    # server each, the order turning with the rounds
    kinds=(bosh xmpp comet)
    for n in $IDLE; do
        want idle || break
        for i in 0 1 2; do
            kind=${kinds[$(((i + r - 1) % 3))]}
            log=$OUT/r$r-idle-$kind-$n.log
            up --max-bosh-sessions $((n + 100))
            case $kind in
            bosh) $CL "$LOAD" bosh-idle --server "127.0.0.1:$P" --sessions "$n" --procs 1 \
                --settle-ms 1000 --server-pid "$PID" > "$log" 2>&1 ;;
            xmpp) $CL "$LOAD" xmpp-idle --server "127.0.0.1:$XP" --sessions "$n" --procs 1 \
                --settle-ms 1000 --server-pid "$PID" > "$log" 2>&1 ;;
            comet) $CL "$LOAD" comet-longpoll --server "127.0.0.1:$P" --clients "$n" --procs 1 \
                --rate 1 --duration 1 --settle-ms 1000 --server-pid "$PID" > "$log" 2>&1 ;;
            esac
            stop_server
            per=$(kv "$log" rss_per_session_bytes)
            [ "$kind" = comet ] && per=$(kv "$log" rss_per_parked_client_bytes)
            record "idle-$n" "$r" "${kind}_bytes" "$per"
            echo "  idle-$n $kind: $per B per session $(kv "$log" result)"
        done
    done
done

echo "=== done in $(($(date +%s) - t_start)) s; raw logs and results.tsv in $OUT"
grep -l 'result=FAIL' "$OUT"/*.log 2>/dev/null | sed 's/^/FAILED: /'

python3 - "$TSV" > "$OUT/table.md" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
order = []
for line in open(sys.argv[1]):
    row, rnd, key, val = line.rstrip("\n").split("\t")
    if row not in order:
        order.append(row)
    rows[row][key].append(float(val))
def med(row, key, fmt="{:.1f}"):
    v = rows[row].get(key)
    return fmt.format(statistics.median(v)) if v else "na"
def spread(row, key):
    v = rows[row].get(key)
    return "{:.2f}–{:.2f}".format(min(v), max(v)) if v else "na"
def total(row, key):
    v = rows[row].get(key)
    return "{:.0f}".format(sum(v)) if v else "na"
if any(r.startswith("fanout") for r in order):
  print("| subscribers per transport | Talk p50 / p99 / last (ms) | XMPP p50 / p99 / last (ms) | XMPP/Talk p99 (rounds) | XMPP/Talk last (rounds) | server CPU µs per delivery Talk / XMPP | events received (lost, dups) Talk / XMPP | others' CPU % (rounds) |")
  print("|---|---|---|---|---|---|---|---|")
for row in order:
    if not row.startswith("fanout"):
        continue
    print("| {} | {} / {} / {} | {} / {} / {} | **{}** ({}) | {} ({}) | {} / {} | {} ({}, {}) / {} ({}, {}) | {} |".format(
        row.replace("fanout-", ""),
        med(row, "talk_p50_ms"), med(row, "talk_p99_ms"), med(row, "talk_median_last_ms"),
        med(row, "xmpp_p50_ms"), med(row, "xmpp_p99_ms"), med(row, "xmpp_median_last_ms"),
        med(row, "xmpp_talk_p99_ratio", "{:.2f}"), spread(row, "xmpp_talk_p99_ratio"),
        med(row, "xmpp_talk_last_ratio", "{:.2f}"), spread(row, "xmpp_talk_last_ratio"),
        med(row, "talk_server_cpu_us_per_delivery", "{:.2f}"), med(row, "xmpp_server_cpu_us_per_delivery", "{:.2f}"),
        total(row, "talk_received"), total(row, "talk_lost"), total(row, "talk_dups"),
        total(row, "xmpp_received"), total(row, "xmpp_lost"), total(row, "xmpp_dups"),
        ", ".join("{:.0f}".format(v) for v in rows[row].get("others_pct", []))))
idle = [r for r in order if r.startswith("idle")]
if idle:
    print()
    print("| sessions | idle BOSH session | idle XMPP TCP session | parked comet long-poll | BOSH / XMPP TCP | BOSH / comet |")
    print("|---|---|---|---|---|---|")
    for row in idle:
        b, x, c = (rows[row].get(k + "_bytes") for k in ("bosh", "xmpp", "comet"))
        m = lambda v: statistics.median(v) if v else None
        mb, mx, mc = m(b), m(x), m(c)
        f = lambda v: "{:,.0f} B".format(v) if v is not None else "na"
        q = lambda a, d: "{:.2f}".format(a / d) if a is not None and d else "na"
        print("| {} | **{}** | {} | {} | {} | {} |".format(
            row.replace("idle-", ""), f(mb), f(mx), f(mc), q(mb, mx), q(mb, mc)))
PY
cat "$OUT/table.md"
