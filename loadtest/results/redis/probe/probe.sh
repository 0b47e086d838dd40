#!/bin/bash
# probe: one tidings --redis node (or nginx+nchan redis with KIND=nchan) under wrk POST /pub/bench:
# per-thread CPU, strace -c, perf record; redis commandstats. Servers on CPU 0, clients CPU 1.
set -u
here=/work/wt-rload/loadtest/bench
. $here/lib.sh
WORK=/work/rload-out/probe; OUTP=$WORK/${TAG:-}${KIND:-tidings}-${MODE:-plain}
mkdir -p $OUTP
WORKERS=1 NGINX_WORKERS=1 START_WAIT=0.5 STOP_WAIT=0.5 PIN="taskset -c 0"
next_port=33700
take_port RPORT; take_port PORT
taskset -c 0 redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no > $OUTP/redis.log 2>&1 & RPID=$!
sleep 0.5; redis-cli -p $RPORT flushall >/dev/null
printf 'wrk.method = "POST"\nwrk.body = "hello"\nwrk.headers["Content-Type"] = "text/plain"\n' > $WORK/post.lua
if [ "${KIND:-tidings}" = tidings ]; then
  TIDINGS=${TBIN:-/work/bin-redis/tidings} start_server --redis redis://127.0.0.1:$RPORT/0 ${TFLAGS:-}; SP=$PID
else
  NCHAN_REDIS=redis://127.0.0.1:$RPORT nginx_conf $WORK/ngx $PORT nchan; start_nginx $WORK/ngx $PORT; SP=$(pgrep -P $NPID)
fi
threads() { for t in /proc/$SP/task/*; do echo "$(cat $t/comm) $(sed 's/.*) //' $t/stat | awk '{print $12+$13}')"; done; }
threads > $OUTP/threads0; r0=$(cpu_us $RPID)
case ${MODE:-plain} in
  strace) taskset -c 0 strace -c -f -p $SP -o $OUTP/strace.txt & STP=$! ; sleep 0.5;;
  perf) perf record -F 2000 -g -p $SP -o $OUTP/perf.data 2> $OUTP/perf.err & PFP=$! ; sleep 0.5;;
esac
taskset -c 1 wrk -t1 -c50 -d5s -s $WORK/post.lua http://127.0.0.1:$PORT/pub/bench > $OUTP/wrk.txt
threads > $OUTP/threads1; r1=$(cpu_us $RPID)
[ -n "${STP:-}" ] && { kill -INT $STP; wait $STP; }
[ -n "${PFP:-}" ] && { kill -INT $PFP; wait $PFP; }
redis-cli -p $RPORT info commandstats > $OUTP/commandstats.txt; redis-cli -p $RPORT info stats > $OUTP/stats.txt
n=$(awk '/requests in/{print $1}' $OUTP/wrk.txt)
echo "requests $n; redis cpu per publish $(( (r1 - r0) / n )) us" | tee $OUTP/summary.txt
join <(sort $OUTP/threads0) <(sort $OUTP/threads1) | awk -v n=$n -v tck=$(getconf CLK_TCK) '{printf "thread %s: %.2f us per publish\n", $1, ($3-$2)*1e6/tck/n}' | tee -a $OUTP/summary.txt
grep Requests/sec $OUTP/wrk.txt | tee -a $OUTP/summary.txt
if [ "${KIND:-tidings}" = tidings ]; then kill $SP; wait $SP 2>/dev/null; else stop_nginx; fi
kill $RPID; wait $RPID 2>/dev/null
