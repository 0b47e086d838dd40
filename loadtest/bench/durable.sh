#!/bin/bash
# --data-dir (issue 11): what keeping the hub on disk costs, in one run.
#
#   loadtest/bench/durable.sh                      (TIDINGS=./target/release/tidings by default)
#   QUICK=1 loadtest/bench/durable.sh              (1 round, 2 s runs, 100,000 messages)
#
# 1. QST push throughput with 100 concurrent publishers (wrk -c100, one single-message
#    batch of a 100-byte body per request, ids made by the server): in memory, and with
#    --data-dir under --fsync always, interval and never; the server pinned to CPU 0
#    (one worker; the log's sync thread shares the CPU), wrk on CPU 1; a fresh server and
#    data directory per run, the modes taken in turn within each round, medians of the
#    rounds, each mode's ratio to memory. Also from /metrics: syncs per push (group
#    commit: 100 publishers share one fdatasync) and the mean sync latency.
# 2. Recovery: MESSAGES (1,000,000) queued 100-byte messages, pushed in batches of 1,000
#    and never acknowledged; the log's bytes on disk per message; a clean restart and a
#    kill -9 restart, each timed by the server's own "recovered … in N ms" line, and from
#    the start of the process to the first answer of /health.
#
# Environment: TIDINGS; DATA_ROOT (/tmp: where the data directories go; its disk is
# printed with findmnt); OUT (/tmp/tidings-durable-DATE); ROUNDS (3); SECS (5: per wrk
# run); MESSAGES (1000000); SERVER_CPU (0), CLIENT_CPU (1); PORT (29700).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

TIDINGS=${TIDINGS:-$here/../../target/release/tidings}
[ -x "$TIDINGS" ] || { echo "$TIDINGS: build it first (cargo build --release)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 2; }
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then ROUNDS=1 SECS=2 MESSAGES=${MESSAGES:-100000}; fi
ROUNDS=${ROUNDS:-3} SECS=${SECS:-5} MESSAGES=${MESSAGES:-1000000}
SERVER_CPU=${SERVER_CPU:-0} CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-29700}
DATA_ROOT=${DATA_ROOT:-/tmp}
OUT=${OUT:-/tmp/tidings-durable-$(date +%Y%m%d-%H%M%S)}
WORK=$OUT
mkdir -p "$OUT"
PIN="taskset -c $SERVER_CPU"
CL="taskset -c $CLIENT_CPU"
WORKERS=1
TSV=$OUT/results.tsv
: > "$TSV"
DATA=$DATA_ROOT/tidings-durable-data-$$
trap 'rm -rf "$DATA"' EXIT

# Room for every push of a run: the queue is never consumed.
ROOM=(--queue-capacity 100000000 --queue-bytes 17179869184 --retained-bytes 17179869184)
body=$(head -c 100 /dev/zero | tr '\0' x)
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
    "'[{\"body\":\"$body\"}]'" > "$OUT/push.lua"

metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 == n {print $2}'; }

flags_of() { # the server flags of a mode
    case $1 in
        memory) echo "" ;;
        *) echo "--data-dir $DATA --fsync $1" ;;
    esac
}

echo "durable: $TIDINGS rounds=$ROUNDS secs=$SECS messages=$MESSAGES out=$OUT"
echo "machine: $(nproc) cpus ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)"
echo "data dir on: $(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$DATA_ROOT")"
dev=$(findmnt -no SOURCE -T "$DATA_ROOT" | sed 's|/dev/||; s|[0-9]*$||')
echo "device: $dev rotational=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo ?) \
model=$(cat "/sys/block/$dev/device/model" 2>/dev/null || echo virtual) \
scheduler=$(cat "/sys/block/$dev/queue/scheduler" 2>/dev/null || echo ?)"

modes=(memory always interval never)
for r in $(seq 1 "$ROUNDS"); do
    echo "=== round $r/$ROUNDS ($(wait_quiet 20))"
    for m in "${modes[@]}"; do
        rm -rf "$DATA"
        # shellcheck disable=SC2046
        start_server "${ROOM[@]}" $(flags_of "$m")
        log=$OUT/r$r-push-$m.log
        $CL wrk -t1 -c100 -d"${SECS}s" --latency -s "$OUT/push.lua" "http://127.0.0.1:$PORT/qst/bench" > "$log" 2>&1
        rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' "$log")
        n=$(awk '/requests in/{print $1}' "$log")
        p99=$(awk '$1 == "99%" {print $2}' "$log")
        syncs=$(metric tidings_storage_syncs_total)
        us=$(metric tidings_storage_sync_microseconds_total)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$m" "$r" "${rps:-0}" "${n:-0}" "${syncs:-0}" "${us:-0}" >> "$TSV"
        echo "  $m: ${rps:-?} pushes/s, p99 $p99, $(grep -o 'Non-2xx.*' "$log" || echo 'all 2xx')," \
            "syncs=${syncs:-0} ($(awk -v s="${syncs:-0}" -v n="${n:-1}" 'BEGIN{printf "%.3f", s / n}') per push)," \
            "mean sync $(awk -v s="${syncs:-0}" -v u="${us:-0}" 'BEGIN{if (s > 0) printf "%.0f", u / s; else printf "-"}') µs"
        stop_server
    done
done

echo "=== push throughput, 100 publishers, medians of $ROUNDS"
python3 - "$TSV" <<'EOF'
import sys, statistics
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
by = {}
for m, r, rps, n, syncs, us in rows:
    by.setdefault(m, []).append((int(rps), int(n), float(syncs), float(us)))
mem = statistics.median(x[0] for x in by['memory'])
print("| mode | pushes/s (median) | vs memory | syncs per push | mean sync µs |")
print("|---|---|---|---|---|")
for m in ['memory', 'always', 'interval', 'never']:
    v = by.get(m, [])
    if not v:
        continue
    med = statistics.median(x[0] for x in v)
    spp = statistics.median(x[2] / x[1] for x in v) if v[0][1] else 0
    lat = statistics.median(x[3] / x[2] for x in v if x[2] > 0) if any(x[2] for x in v) else 0
    print(f"| {m} | {med:.0f} | {med / mem:.2f} | {spp:.3f} | {lat:.0f} |")
EOF

echo "=== recovery of $MESSAGES queued 100-byte messages"
rm -rf "$DATA"
start_server "${ROOM[@]}" --data-dir "$DATA" --fsync never
batch="[$(for _ in $(seq 1 999); do printf '{"body":"%s"},' "$body"; done){\"body\":\"$body\"}]"
printf '%s' "$batch" > "$OUT/batch.json"
t0=$(date +%s.%N)
for _ in $(seq 1 $((MESSAGES / 1000))); do
    curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' \
        --data-binary @"$OUT/batch.json" "http://127.0.0.1:$PORT/qst/bench"
done | sort | uniq -c | sed 's/^/  pushes answered: /'
t1=$(date +%s.%N)
sleep 3 # let a compaction begun by the fill finish
disk=$(du -sb "$DATA" | cut -f1)
echo "  filled in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}') s; log on disk: $disk bytes," \
    "$(awk -v d="$disk" -v n="$MESSAGES" 'BEGIN{printf "%.0f", d / n}') bytes per queued message" \
    "(compactions: $(metric tidings_storage_compactions_total)); server RSS $(awk '/VmRSS/{print $2}' /proc/$PID/status) kB"
ls -la "$DATA" | sed 's/^/    /'
recover() { # recover HOW: stop the server that way, start it again, time the replay
    if [ "$1" = kill ]; then kill -9 "$PID"; wait "$PID" 2>/dev/null; else stop_server; fi
    local s0 s1
    s0=$(date +%s%N)
    ${PIN:-} "$TIDINGS" --listen "127.0.0.1:$PORT" --workers 1 --xmpp-listen off "${ROOM[@]}" \
        --data-dir "$DATA" > "$OUT/recover-$1.log" 2>&1 &
    PID=$!
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; do sleep 0.05; done
    s1=$(date +%s%N)
    echo "  after $1: $(grep -o 'recovered.*' "$OUT/recover-$1.log");" \
        "first /health answer $(((s1 - s0) / 1000000)) ms after the start;" \
        "RSS $(awk '/VmRSS/{print $2}' /proc/$PID/status) kB"
    curl -s "http://127.0.0.1:$PORT/qst/bench?format=json&max=1" | head -c 120; echo
}
recover clean
recover kill
stop_server
