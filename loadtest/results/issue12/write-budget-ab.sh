#!/bin/bash
# A/B: nchan long-poll fan-out to 10,000, tidings before vs after the wake cache.
L=/work/target-nchanload/release/tidings-load
BEFORE=/tmp/tidings-before-budget
AFTER=/work/main/target/release/tidings
ulimit -n 20000
port=29900
for round in 1 2 3; do
  if [ $((round % 2)) = 1 ]; then order="BEFORE AFTER"; else order="AFTER BEFORE"; fi
  for which in $order; do
    bin=${!which}
    port=$((port+1))
    taskset -c 0 $bin --listen 127.0.0.1:$port --workers 1 --max-connections 25000 --xmpp-listen off >/dev/null 2>&1 &
    pid=$!
    sleep 0.5
    out=$(taskset -c 1 $L nchan-sub --transport eventsource --server 127.0.0.1:$port --streams 10000 --procs 1 --pushes 10 --push-gap-ms 200 --settle-ms 500 --channel es --server-pid $pid 2>&1)
    echo "round $round $which:"; echo "$out" | tail -6
    kill $pid; wait $pid 2>/dev/null
  done
done
