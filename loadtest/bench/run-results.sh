#!/bin/bash
# Re-runs the measurements of loadtest/RESULTS.md. Every scenario gets a fresh
# server on a loopback port (checked free first, stopped by PID) and starts only
# once the machine is quiet (under 8 % busy over 2 s), because the two cores are
# shared with whatever else runs here.
#
#   loadtest/bench/run-results.sh [talk|qst|comet|nchan|wrk|all]   (default all)
#
# Environment: BIN (default /tmp/lt-target/release: `tidings` and `tidings-load`,
# built with `cargo build --release`), PORT (39417), NGINX_PORT (39480),
# NCHAN_PORT (39470), WORK (/tmp/tidings-bench: nginx prefixes, logs),
# ROUNDS (7: wrk rounds, alternating tidings and nginx).
set -u
BIN=${BIN:-/tmp/lt-target/release}
PORT=${PORT:-39417}
NGINX_PORT=${NGINX_PORT:-39480}
NCHAN_PORT=${NCHAN_PORT:-39470}
WORK=${WORK:-/tmp/tidings-bench}
ROUNDS=${ROUNDS:-7}
L=$BIN/tidings-load
mkdir -p "$WORK"

. "$(dirname "$0")/lib.sh"

section=${1:-all}
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r)"
echo "tree HEAD: $(git -C "$(dirname "$0")/../.." rev-parse --short HEAD 2>/dev/null) (the server binary is whatever $BIN/tidings was built from: $(date -r "$BIN/tidings" '+%F %T'))"

if [[ $section == all || $section == talk ]]; then
    for spec in "1000 1" "10000 2" "19900 2"; do
        set -- $spec
        wait_quiet; start_server
        echo "=== talk-idle $1 (server pid $PID)"
        run "$L" talk-idle --server "127.0.0.1:$PORT" --streams "$1" --procs "$2" --server-pid "$PID" --pushes 10 --channel load
        stop_server
    done
fi

if [[ $section == all || $section == qst ]]; then
    for spec in "4 500 10" "4 5000 10"; do
        set -- $spec
        wait_quiet; start_server
        echo "=== qst $spec (server pid $PID)"
        run "$L" qst --server "127.0.0.1:$PORT" --producers "$1" --batches "$2" --batch-size "$3" --consumer-max 100
        stop_server
    done
fi

if [[ $section == all || $section == comet ]]; then
    for spec in "1000 10 1" "10000 10 1" "10000 10 2" "10000 2 2"; do
        set -- $spec
        wait_quiet; start_server
        echo "=== comet-longpoll $1 clients, $2/s, $3 client procs (server pid $PID)"
        run "$L" comet-longpoll --server "127.0.0.1:$PORT" --clients "$1" --rate "$2" --duration 20 --procs "$3" --server-pid "$PID"
        stop_server
    done
fi

if [[ $section == all || $section == nchan ]]; then
    nginx_conf "$WORK/nchan" "$NCHAN_PORT" nchan
    for spec in "1000 10 1" "10000 10 1" "10000 10 2" "10000 2 2"; do
        set -- $spec
        wait_quiet; start_nginx "$WORK/nchan" "$NCHAN_PORT"
        echo "=== nchan comet-longpoll $1 clients, $2/s, $3 client procs (nginx pids $NPIDS)"
        run "$L" comet-longpoll --dialect nchan --server "127.0.0.1:$NCHAN_PORT" --clients "$1" --rate "$2" --duration 20 --procs "$3" --server-pid "$NPIDS"
        stop_nginx
    done
fi

if [[ $section == all || $section == wrk ]]; then
    nginx_conf "$WORK/nginx" "$NGINX_PORT"
    wrk_line() { # wrk_line LABEL URL
        local out
        out=$(wrk -t2 -c100 -d10s --latency "$2")
        echo "$1: $(echo "$out" | grep Requests/sec) p50 $(echo "$out" | awk '/ 50%/{print $2}') p99 $(echo "$out" | awk '/ 99%/{print $2}')"
    }
    echo "\$ wrk -t2 -c100 -d10s --latency URL   (URL: tidings /health, tidings /comet?method=sync&channel=bench, nginx /health)"
    for r in $(seq 1 "$ROUNDS"); do
        wait_quiet >/dev/null; start_server
        wrk_line "round $r tidings/health" "http://127.0.0.1:$PORT/health"
        wrk_line "round $r tidings/comet-sync" "http://127.0.0.1:$PORT/comet?method=sync&channel=bench"
        stop_server
        wait_quiet >/dev/null
        # a new port each round: a just-stopped nginx's port can refuse bind() for a while
        nginx_conf "$WORK/nginx" $((NGINX_PORT + r))
        start_nginx "$WORK/nginx" $((NGINX_PORT + r))
        wrk_line "round $r nginx/static" "http://127.0.0.1:$((NGINX_PORT + r))/health"
        stop_nginx
    done
fi
