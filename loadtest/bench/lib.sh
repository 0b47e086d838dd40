# Shared by the bench scripts (source it; it runs nothing itself):
# port checks, the quiet-machine wait, starting and stopping tidings and
# nginx (+ nchan) by PID, the nginx configurations, server CPU time.
#
# Prosody (bench/prosody/prosody.cfg.lua) is started and stopped the same way.
#
# Settings (environment, with defaults): TIDINGS (the server binary,
# $BIN/tidings), PORT, WORKERS (2: tidings --workers), NGINX_WORKERS (2:
# worker_processes), PIN ("": a command prefix for the servers, e.g.
# "taskset -c 0"), START_WAIT (1 s after a start), STOP_WAIT (2 s after a stop),
# NCHAN_REDIS ("": a redis://HOST:PORT URL; nginx_conf's nchan then keeps its
# channels in that Redis, shared by every nginx given the same URL).

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# port_free PORT: no TCP socket at all uses PORT locally. A listener cannot bind a
# port that a client connection holds as its own (ports 32768-60999 are handed
# out to outgoing connections here, ours and other engineers' load clients).
port_free() { ! ss -tanH "sport = :$1" | grep -q .; }

# take_port VAR: the next free port from $next_port on (set next_port first)
take_port() {
    while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
    printf -v "$1" '%s' "$next_port"
    next_port=$((next_port + 1))
}

# kv LOGFILE KEY: KEY=value of a tidings-load SUMMARY line
kv() { grep -m1 '^SUMMARY' "$1" | grep -o "\b$2=[^ ]*" | cut -d= -f2; }

# wait_quiet [MAX_SECS]: until the machine is under 8 % busy over 2 s.
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

# start_server [flags…]: starts ${TIDINGS:-$BIN/tidings} on $PORT; sets PID.
# A binary with the XMPP listener gets --xmpp-listen off unless the flags name
# an address: its default, 127.0.0.1:5222, would collide with any other tidings
# running on the machine.
start_server() {
    port_free "$PORT" || { echo "port $PORT busy" >&2; exit 1; }
    local bin=${TIDINGS:-$BIN/tidings} xmpp=()
    if [[ " $* " != *" --xmpp-listen "* ]] && "$bin" --help 2>&1 | grep -q -- --xmpp-listen; then
        xmpp=(--xmpp-listen off)
    fi
    ${PIN:-} "$bin" --listen "127.0.0.1:$PORT" --workers "${WORKERS:-2}" \
        --max-connections 25000 "${xmpp[@]}" "$@" > "$WORK/tidings-$PORT.log" 2>&1 &
    PID=$!
    sleep "${START_WAIT:-1}"
}
stop_server() { kill "$PID"; wait "$PID" 2>/dev/null; sleep "${STOP_WAIT:-2}"; }

nginx_conf() { # nginx_conf DIR PORT [nchan]
    local dir=$1 port=$2 nchan=${3:-}
    mkdir -p "$dir/logs" "$dir/www"
    printf 'ok\n' > "$dir/www/health"
    chmod -R a+rX "$dir"
    {
        [ -n "$nchan" ] && echo "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"
        cat <<EOF
worker_processes ${NGINX_WORKERS:-2};
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections ${NGINX_CONNECTIONS:-19000}; }
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
            # /pub: publish (POST) and channel info (GET); /sub: long-poll (comet-longpoll
            # --dialect nchan); /pull: http-chunked streams (talk-idle --dialect nchan);
            # /pub/C and /sub/C: nchan's API (nchan-sub, every transport);
            # /health: a 3-byte answer from nginx itself (pipeline).
            # with NCHAN_REDIS: nchan's Redis mode (distributed storage) in every location
            # (nchan_redis_pass at server level is not inherited by them: nothing reached Redis)
            local rp=""
            if [ -n "${NCHAN_REDIS:-}" ]; then
                echo "    upstream nchan_redis { nchan_redis_server \"$NCHAN_REDIS\"; }"
                rp=" nchan_redis_pass nchan_redis;"
            fi
            cat <<EOF
    nchan_shared_memory_size 128m;
    server {
        listen 127.0.0.1:$port reuseport;
        location = /pub { nchan_publisher; nchan_channel_id \$arg_channel;$rp
                          nchan_message_buffer_length 1024; nchan_message_timeout 10m; }
        location = /sub { nchan_subscriber longpoll; nchan_channel_id \$arg_channel;$rp
                          nchan_subscriber_first_message newest; nchan_subscriber_timeout 25s; }
        location = /pull { nchan_subscriber http-chunked; nchan_channel_id \$arg_channel;$rp
                           nchan_subscriber_first_message oldest; }
        location = /health { default_type text/plain; return 200 "ok\n"; }
        # nchan's own API, which tidings serves too (NCHAN.md 1): nchan-sub and wrk on /pub/
        location ~ ^/pub/(.+)$ { nchan_publisher; nchan_channel_id \$1;$rp
                                 nchan_message_buffer_length 1024; nchan_message_timeout 10m; }
        location ~ ^/sub/(.+)$ { nchan_subscriber; nchan_channel_id \$1;$rp
                                 nchan_subscriber_first_message oldest; }
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
    ${PIN:-} nginx -c "$1/nginx.conf" -p "$1" &
    NPID=$!
    sleep "${START_WAIT:-1}"
    NPIDS="$NPID,$(pgrep -P "$NPID" | paste -sd,)"
}
stop_nginx() { kill "$NPID"; wait "$NPID" 2>/dev/null; sleep "${STOP_WAIT:-2}"; }

# prosody_setup DIR [USER PASSWORD]: a fresh directory for
# bench/prosody/prosody.cfg.lua (data dir, empty certs dir) holding one account,
# user/secret by default. authentication = "internal_plain" keeps the password in
# clear in data/HOST/accounts/USER.dat, which is all `prosodyctl register` would
# write there; writing it directly saves a prosodyctl run per start.
prosody_setup() {
    local dir=$1 user=${2:-user} pass=${3:-secret}
    rm -rf "$dir"
    mkdir -p "$dir/data/localhost/accounts" "$dir/certs"
    printf 'return {\n\t["password"] = "%s";\n};\n' "$pass" > "$dir/data/localhost/accounts/$user.dat"
}

# start_prosody DIR PORT: Prosody in the foreground (one Lua process, as the
# current user) with bench/prosody/prosody.cfg.lua, its data, log and pidfile
# in DIR, c2s on 127.0.0.1:PORT; sets PRPID once the port listens (at most 10 s).
start_prosody() {
    port_free "$2" || { echo "port $2 busy" >&2; exit 1; }
    PROSODY_DIR=$1 PROSODY_PORT=$2 ${PIN:-} prosody -F --config "$LIB_DIR/prosody/prosody.cfg.lua" \
        > "$1/stdout.log" 2>&1 &
    PRPID=$!
    local i
    for i in $(seq 1 100); do
        port_free "$2" || break
        sleep 0.1
    done
    port_free "$2" && echo "prosody did not listen on $2 within 10 s: $(tail -n 3 "$1/stdout.log" "$1/prosody.log" 2>/dev/null | tr '\n' ' ')" >&2
    sleep "${START_WAIT:-1}"
}
# running PID: the process exists and is not a zombie waiting to be reaped
running() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$st" ] && [ "$st" != Z ]
}
# stop_prosody: SIGTERM once Prosody has let go of the client connections (at most
# 30 s), SIGKILL if it is still there 10 s later. Prosody 0.12.3 aborts its shutdown
# halfway when SIGTERM arrives while it is still tearing sessions down (mod_c2s.lua:469
# "attempt to call a nil value (method 'close')"): listeners closed, the loop left
# waiting in epoll_wait for ever, further SIGTERMs ignored. Seen after xmpp-idle
# closed 10,000 sessions at once.
stop_prosody() {
    local i
    for i in $(seq 1 300); do
        [ "$(ls "/proc/$PRPID/fd" 2>/dev/null | wc -l)" -le 20 ] && break
        sleep 0.1
    done
    kill "$PRPID"
    for i in $(seq 1 100); do
        running "$PRPID" || break
        sleep 0.1
    done
    if running "$PRPID"; then
        echo "prosody $PRPID still there 10 s after SIGTERM: SIGKILL" >&2
        kill -9 "$PRPID"
    fi
    wait "$PRPID" 2>/dev/null
    sleep "${STOP_WAIT:-2}"
}

# busy_us: CPU time the whole machine has spent busy so far (all CPUs, µs; /proc/stat)
busy_us() {
    awk -v tck="$(getconf CLK_TCK)" '/^cpu /{printf "%.0f\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1e6 / tck; exit}' /proc/stat
}

# timed_run LOG SERVER_PIDS CMD…: runs CMD with its output in LOG; sets OTHERS to the % of
# the machine's CPUs that processes other than the server and CMD's own (children
# included, from /usr/bin/time) kept busy meanwhile: another engineer's build, say.
timed_run() {
    local log=$1 spids=$2 b0 s0 t0 b1 s1 t1 cl
    shift 2
    b0=$(busy_us) s0=$(cpu_us "$spids") t0=$(date +%s%N)
    /usr/bin/time -f '%e %U %S' -o "$log.time" "$@" > "$log" 2>&1
    b1=$(busy_us) s1=$(cpu_us "$spids") t1=$(date +%s%N)
    cl=$(awk 'END{printf "%.0f", ($2 + $3) * 1e6}' "$log.time")
    OTHERS=$(awk -v b=$((b1 - b0)) -v s=$((s1 - s0)) -v c="$cl" -v t=$(((t1 - t0) / 1000)) -v n="$(nproc)" \
        'BEGIN{v = (b - s - c) / (t * n) * 100; if (v < 0) v = 0; printf "%.0f", v}')
}


# cpu_us PID[,PID…]: user + system CPU time of the processes, summed, in µs
cpu_us() {
    local user sys
    read -r user sys < <(cpu_us_split "$1")
    echo $((user + sys))
}

# cpu_us_split PID[,PID…]: "USER SYSTEM", the CPU time of the processes in each, in µs
cpu_us_split() {
    local tck user=0 sys=0 p u s
    tck=$(getconf CLK_TCK)
    for p in ${1//,/ }; do
        # fields after the command name, which may hold spaces: utime is the 12th, stime the 13th
        read -r u s < <(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12, $13}')
        user=$((user + ${u:-0}))
        sys=$((sys + ${s:-0}))
    done
    echo $((user * 1000000 / tck)) $((sys * 1000000 / tck))
}

run() { echo "\$ $*"; "$@" 2>&1; }

# TIDINGS (the release build beside this checkout) and LOAD (tidings-load beside it), both
# executables, or exit 2. Call after setting `here` to the bench directory.
find_binaries() {
    TIDINGS=${TIDINGS:-$here/../../target/release/tidings}
    LOAD=${LOAD:-$(dirname "$TIDINGS")/tidings-load}
    for b in "$TIDINGS" "$LOAD"; do
        [ -x "$b" ] || { echo "$b: not an executable" >&2; exit 2; }
    done
}

# For the scripts that collect a results.tsv (nchanapi, backtoback, redis): `put ROW SERVER
# ROUND METRIC VALUE` appends a row to $TSV (a missing or `na` value is left out);
# `summary LOG KEY` reads KEY=… from a tidings-load log's SUMMARY line; `loadavg` is the
# 1-minute load average; `post_lua FILE` writes wrk's script for `POST /pub/…` (a 5-byte
# text/plain body).
put() { [ -n "$5" ] && [ "$5" != na ] && printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$TSV"; }
summary() { grep -m1 '^SUMMARY' "$1" | grep -o "\b$2=[^ ]*" | cut -d= -f2; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
post_lua() {
    printf 'wrk.method = "POST"\nwrk.body = "hello"\nwrk.headers["Content-Type"] = "text/plain"\n' > "$1"
}
