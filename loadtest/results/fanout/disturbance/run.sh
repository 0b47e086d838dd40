#!/bin/bash
# controlled disturbance: a busy loop pinned to the client's CPU (1) or the server's (0)
. /work/wt-fanout/loadtest/bench/lib.sh
B=/work/target-fanout/bench; OUT=/tmp/fo-hog; WORK=$OUT; WORKERS=1; TIDINGS=$B/tidings; PIN="taskset -c 0"; START_WAIT=0.5
next_port=29900
for r in 1 2; do
  first=talk; [ $r = 2 ] && first=xmpp
  for where in none cpu1 cpu0; do
    take_port P; take_port XP
    PORT=$P start_server --xmpp-listen 127.0.0.1:$XP
    HOG=
    case $where in cpu1) taskset -c 1 sh -c 'while :; do :; done' & HOG=$! ;; cpu0) taskset -c 0 sh -c 'while :; do :; done' & HOG=$! ;; esac
    log=$OUT/r$r-$where.log
    timed_run "$log" "$PID" taskset -c 1 $B/tidings-load xmpp-fanout --server 127.0.0.1:$P --xmpp-server 127.0.0.1:$XP --subscribers 10000 --apart --turns 2 --first $first --procs 1 --pushes 10 --settle-ms 500 --server-pid $PID
    [ -n "$HOG" ] && kill $HOG
    stop_server
    echo "r$r $where (first $first, others incl. hog $OTHERS %): $(kv $log talk_p99_ms) $(kv $log xmpp_p99_ms) ratio $(kv $log xmpp_talk_p99_ratio) last $(kv $log talk_median_last_ms) $(kv $log xmpp_median_last_ms) ratio $(kv $log xmpp_talk_last_ratio) srvcpu $(kv $log talk_server_cpu_ms_per_publish) $(kv $log xmpp_server_cpu_ms_per_publish) clcpu $(kv $log talk_clients_cpu_ms_per_publish) $(kv $log xmpp_clients_cpu_ms_per_publish) $(kv $log result)"
  done
done
