#!/usr/bin/env bash
# A/B of two tidings builds on one tidings-load scenario, on the same machine in the same
# run: a fresh server per run (`--workers 1`, pinned to CPU 0), the client on CPU 1, ROUNDS
# rounds with the order alternating; prints each run's SUMMARY line (or its last lines).
#
#   BEFORE=old/tidings AFTER=new/tidings loadtest/bench/ab.sh nchan-sub --transport longpoll \
#       --streams 10000 --procs 1 --pushes 10 --push-gap-ms 200 --settle-ms 500 --channel lp
#   XMPP=1 BEFORE=… AFTER=… loadtest/bench/ab.sh xmpp-idle --sessions 10000 --procs 1 --settle-ms 1000
#
# The client gets `--server 127.0.0.1:PORT` (the XMPP listener's with XMPP=1) and
# `--server-pid PID`. LOAD (tidings-load beside AFTER), ROUNDS (3), PORT_BASE (30100).
set -u
: "${BEFORE:?set BEFORE to the old tidings}" "${AFTER:?set AFTER to the new tidings}"
LOAD=${LOAD:-$(dirname "$AFTER")/tidings-load}
ROUNDS=${ROUNDS:-3}
port=${PORT_BASE:-30100}
ulimit -n 20000
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="BEFORE AFTER"; else order="AFTER BEFORE"; fi
    for which in $order; do
        bin=${!which}
        port=$((port + 2))
        server=$port
        xmpp=(--xmpp-listen off)
        if [ "${XMPP:-0}" = 1 ]; then
            server=$((port + 1))
            xmpp=(--xmpp-listen "127.0.0.1:$server")
        fi
        taskset -c 0 "$bin" --listen "127.0.0.1:$port" "${xmpp[@]}" --workers 1 \
            --max-connections 25000 >/dev/null 2>&1 &
        pid=$!
        sleep 0.5
        out=$(taskset -c 1 "$LOAD" "$@" --server "127.0.0.1:$server" --server-pid "$pid" 2>&1)
        echo "round $round $which: $(echo "$out" | grep '^SUMMARY' || echo "$out" | tail -3)"
        kill "$pid"
        wait "$pid" 2>/dev/null
    done
done
