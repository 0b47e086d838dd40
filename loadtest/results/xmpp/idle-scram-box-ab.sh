#!/bin/bash
L=/work/target-nchanload/release/tidings-load
BEFORE=/tmp/tidings-before-box
AFTER=/work/main/target/release/tidings
ulimit -n 20000
port=30100
for round in 1 2 3; do
  if [ $((round % 2)) = 1 ]; then order="BEFORE AFTER"; else order="AFTER BEFORE"; fi
  for which in $order; do
    bin=${!which}
    port=$((port+2))
    taskset -c 0 $bin --listen 127.0.0.1:$port --xmpp-listen 127.0.0.1:$((port+1)) --workers 1 --max-connections 25000 >/dev/null 2>&1 &
    pid=$!
    sleep 0.5
    out=$(taskset -c 1 $L xmpp-idle --server 127.0.0.1:$((port+1)) --sessions 10000 --procs 1 --settle-ms 1000 --server-pid $pid 2>&1)
    echo "round $round $which: $(echo "$out" | grep -oE "rss_per_session_bytes=[0-9]+|up=[0-9]+|result=[A-Z]+" | tr '\n' ' ')"
    kill $pid; wait $pid 2>/dev/null
  done
done

# output
# round 1 BEFORE: rss_per_session_bytes=759  AFTER: 660
# round 2 AFTER: 662  BEFORE: 765
# round 3 BEFORE: 764  AFTER: 655
