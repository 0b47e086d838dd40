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

port_free() { ! ss -ltn "sport = :$1" | grep -q LISTEN; }

wait_quiet() {
    local max=${1:-300} start b
    start=$(date +%s)
    while true; do
        read -r _ a1 b1 c1 d1 e1 f1 g1 h1 _ < /proc/stat
        sleep 2
        read -r _ a2 b2 c2 d2 e2 f2 g2 h2 _ < /proc/stat
        local t=$(((a2 + b2 + c2 + d2 + e2 + f2 + g2 + h2) - (a1 + b1 + c1 + d1 + e1 + f1 + g1 + h1)))
        local i=$(((d2 + e2) - (d1 + e1)))
        b=$((100 * (t - i) / t))
        if [ "$b" -lt 8 ]; then echo "quiet: ${b}% busy"; return 0; fi
        if [ $(($(date +%s) - start)) -gt "$max" ]; then
            echo "NOT QUIET: ${b}% busy: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | tr -s ' ' | tr '\n' ';')"
            return 0
        fi
    done
}

# start_server [flags…]: sets PID
start_server() {
    port_free "$PORT" || { echo "port $PORT busy" >&2; exit 1; }
    "$BIN/tidings" --listen "127.0.0.1:$PORT" --workers 2 --max-connections 25000 "$@" \
        > "$WORK/tidings-$PORT.log" 2>&1 &
    PID=$!
    sleep 1
}
stop_server() { kill "$PID"; wait "$PID" 2>/dev/null; sleep 2; }

nginx_conf() { # nginx_conf DIR PORT [nchan]
    local dir=$1 port=$2 nchan=${3:-}
    mkdir -p "$dir/logs" "$dir/www"
    printf 'ok\n' > "$dir/www/health"
    chmod -R a+rX "$dir"
    {
        [ -n "$nchan" ] && echo "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"
        cat <<EOF
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
EOF
        if [ -n "$nchan" ]; then
            cat <<EOF
    nchan_shared_memory_size 128m;
    server {
        listen 127.0.0.1:$port reuseport;
        location = /pub { nchan_publisher; nchan_channel_id \$arg_channel;
                          nchan_message_buffer_length 1024; nchan_message_timeout 10m; }
        location = /sub { nchan_subscriber longpoll; nchan_channel_id \$arg_channel;
                          nchan_subscriber_first_message newest; nchan_subscriber_timeout 25s; }
    }
}
EOF
        else
            cat <<EOF
    server {
        listen 127.0.0.1:$port reuseport;
        location / { root $dir/www; default_type text/plain; }
    }
}
EOF
        fi
    } > "$dir/nginx.conf"
}

# start_nginx DIR PORT: sets NPID (master) and NPIDS (master,workers)
start_nginx() {
    port_free "$2" || { echo "port $2 busy" >&2; exit 1; }
    nginx -c "$1/nginx.conf" -p "$1" &
    NPID=$!
    sleep 1
    NPIDS="$NPID,$(pgrep -P "$NPID" | paste -sd,)"
}
stop_nginx() { kill "$NPID"; wait "$NPID" 2>/dev/null; sleep 2; }

run() { echo "\$ $*"; "$@" 2>&1; }

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
