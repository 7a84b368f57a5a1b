#!/usr/bin/env bash
# schleuse relay benchmark (SPEC §12), side by side with a stock Postfix.
#
#   bash bench/run.sh            (as root, from anywhere)
#
# What it does, all on 127.0.0.1 with free ports, all state under bench/out/:
#   1. cargo build --release
#   2. for each job, an smtp-sink (Debian `postfix` package) is the upstream and
#      stops itself after it has received N messages (`smtp-sink -M N`);
#      smtp-source injects the job; end-to-end time = from the start of
#      smtp-source until the sink has received the N-th message.
#      Jobs: 2,000 x 10 KB and 500 x 200 KB, 10 parallel sessions each.
#   3. the same jobs through schleuse (relay mode, fsync before 250 as always,
#      trusted-network listener without TLS/AUTH, loopback upstream without TLS)
#      and through a private Postfix instance (own config and queue directory
#      under bench/out/postfix, relayhost = the sink; /etc/postfix is not touched).
#   4. latency end-of-DATA -> 250: bench/latency.py, 500 x 10 KB over 10
#      concurrent client processes (one session each), against both.
#   5. peak RSS of schleuse (VmHWM) and idle RSS right after start.
# Results: bench/out/results.md (also printed).  Logs: bench/out/*/.
#
# Knobs (environment): SMALL_N=2000 LARGE_N=500 LAT_N=500 SESSIONS=10
#   REPEAT=3 (throughput jobs are repeated; the median is reported)
#   JOB_TIMEOUT=600 (seconds per job)  SKIP_POSTFIX=1  SKIP_SCHLEUSE=1
#   SKIP_BUILD=1 SCHLEUSE_BIN=path
# Needs: smtp-sink, smtp-source, postfix (apt-get install postfix), python3.
# The Postfix half needs root (Postfix's master runs as root); without root it
# is skipped and said so.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
SMALL_N=${SMALL_N:-2000}
LARGE_N=${LARGE_N:-500}
LAT_N=${LAT_N:-500}
SESSIONS=${SESSIONS:-10}
JOB_TIMEOUT=${JOB_TIMEOUT:-600}
REPEAT=${REPEAT:-3}
SENDER=bench@bench.example
RCPT=sink@sink.example

SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
POSTFIX=$(command -v postfix || echo /usr/sbin/postfix)
POSTSUPER=$(command -v postsuper || echo /usr/sbin/postsuper)
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi

die() { echo "bench: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }  # calc FORMAT EXPR

for tool in "$SMTP_SINK" "$SMTP_SOURCE"; do
    [ -x "$tool" ] || die "$tool not found: apt-get install postfix"
done
command -v "$PY" >/dev/null || die "python3 not found"

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
if [ "$IS_ROOT" = 0 ] && [ "${SKIP_POSTFIX:-0}" != 1 ]; then
    log "not root: skipping the Postfix comparison (its master process needs root)"
    SKIP_POSTFIX=1
fi
if [ "${SKIP_POSTFIX:-0}" != 1 ]; then
    [ -x "$POSTFIX" ] || die "postfix not found: apt-get install postfix"
    id postfix >/dev/null 2>&1 || die "user 'postfix' missing: apt-get install postfix"
fi
SINK_USER=()
[ "$IS_ROOT" = 1 ] && SINK_USER=(-u nobody)  # smtp-sink refuses to run as root

# ---------------------------------------------------------------------------
# process bookkeeping: everything we start is stopped on exit, by PID
SINK_PID=""
SCHLEUSE_PID=""
POSTFIX_PID=""
POSTFIX_ETC=""

# signal PID only while it is still the process we started (its command line
# contains WORD), so a recycled PID is never hit: signal_if SIG PID WORD
signal_if() {
    if kill -0 "$2" 2>/dev/null && tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -q -- "$3"; then
        kill "-$1" "$2" 2>/dev/null || true
    fi
}

stop_sink() {
    if [ -n "$SINK_PID" ]; then
        signal_if TERM "$SINK_PID" smtp-sink
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    fi
}

stop_schleuse() {
    if [ -n "$SCHLEUSE_PID" ]; then
        signal_if TERM "$SCHLEUSE_PID" schleuse
        for _ in $(seq 100); do
            kill -0 "$SCHLEUSE_PID" 2>/dev/null || break
            sleep 0.1
        done
        signal_if KILL "$SCHLEUSE_PID" schleuse
        wait "$SCHLEUSE_PID" 2>/dev/null || true
        SCHLEUSE_PID=""
    fi
}

stop_postfix() {
    if [ -n "$POSTFIX_PID" ]; then
        "$POSTFIX" -c "$POSTFIX_ETC" stop >/dev/null 2>&1 || true
        for _ in $(seq 100); do
            kill -0 "$POSTFIX_PID" 2>/dev/null || break
            sleep 0.1
        done
        signal_if TERM "$POSTFIX_PID" postfix
        wait "$POSTFIX_PID" 2>/dev/null || true
        POSTFIX_PID=""
    fi
}

cleanup() {
    stop_sink
    stop_schleuse
    stop_postfix
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: until something accepts on 127.0.0.1:PORT (PID must stay alive)
wait_port() {
    local port=$1 pid=$2
    for _ in $(seq 300); do
        if "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_sink N LOGFILE: a fresh smtp-sink that exits after N messages; sets SINK_PORT
start_sink() {
    local n=$1 logfile=$2
    SINK_PORT=$(free_port)
    "$SMTP_SINK" "${SINK_USER[@]}" -M "$n" "127.0.0.1:$SINK_PORT" 1024 >"$logfile" 2>&1 &
    SINK_PID=$!
    wait_port "$SINK_PORT" "$SINK_PID" || die "smtp-sink did not start (see $logfile)"
}

# wait_sink T0: wait until the sink has exited (= got all messages); sets SECS
# (seconds since T0), or returns 1 on timeout
wait_sink() {
    local t0=$1 deadline t1
    deadline=$(( $(date +%s) + JOB_TIMEOUT ))
    while kill -0 "$SINK_PID" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            stop_sink
            return 1
        fi
        sleep 0.02
    done
    t1=$(now)
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
    SECS=$(calc '%.6f' "$t1 - $t0")
}

vm_kb() { # vm_kb PID FIELD -> kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------------------
# schleuse
SCHLEUSE_DIR=$OUT/schleuse
SCHLEUSE_PORT=""
SCHLEUSE_IDLE_KB=0
SCHLEUSE_PEAK_KB=0

write_schleuse_config() { # write_schleuse_config JOB SINKPORT
    cat >"$SCHLEUSE_DIR/schleuse.toml" <<EOF
# generated by bench/run.sh -- relay into smtp-sink on 127.0.0.1:$2
[server]
hostname = "schleuse-bench.localdomain"
data_dir = "$SCHLEUSE_DIR/var-$1"
shutdown_grace = "5s"

[[listener]]
bind = "127.0.0.1:$SCHLEUSE_PORT"
tls = "none"
trusted_networks = ["127.0.0.1/32"]
account = "bench"

[tls]
cert = "$SCHLEUSE_DIR/certs/server.crt"
key = "$SCHLEUSE_DIR/certs/server.key"

[accounts]
file = "$SCHLEUSE_DIR/accounts.toml"

[upstream]
mode = "relay"
host = "127.0.0.1"
port = $2
tls = "none"

[delivery]
max_connections = 8
max_messages_per_second = 100000

[limits]
max_message_size = "25MB"
max_recipients_per_message = 50
max_connections = 500
max_connections_per_ip = 500

# Metrics are recorded as in production; the endpoint on its own free port.
[admin]
bind = "127.0.0.1:$(free_port)"

# The transform is on as in production: From rewrite, Reply-To, header privacy.
[sender]
from = "rewrite"
system_address = "bench@bench.example"
reply_to = "account"
EOF
    if [ "${DKIM_ON:-1}" = 1 ]; then
        cat >>"$SCHLEUSE_DIR/schleuse.toml" <<EOF

[[dkim]]
domain = "bench.example"
selector = "bench"
key = "$SCHLEUSE_DIR/certs/dkim/bench.example.bench.ed25519.pem"
EOF
    fi
}

start_schleuse() { # start_schleuse JOB SINKPORT
    SCHLEUSE_PORT=$(free_port)
    write_schleuse_config "$1" "$2"
    "$SCHLEUSE_BIN" --config "$SCHLEUSE_DIR/schleuse.toml" run >"$SCHLEUSE_DIR/$1.log" 2>&1 &
    SCHLEUSE_PID=$!
    wait_port "$SCHLEUSE_PORT" "$SCHLEUSE_PID" || {
        tail -20 "$SCHLEUSE_DIR/$1.log" >&2
        die "schleuse did not start (see $SCHLEUSE_DIR/$1.log)"
    }
    sleep 0.5
    kill -0 "$SCHLEUSE_PID" 2>/dev/null || die "schleuse exited right after start (see $SCHLEUSE_DIR/$1.log)"
    local idle
    idle=$(vm_kb "$SCHLEUSE_PID" VmRSS)
    [ "${idle:-0}" -gt "$SCHLEUSE_IDLE_KB" ] && SCHLEUSE_IDLE_KB=$idle
    return 0
}

note_schleuse_peak() {
    [ -n "$SCHLEUSE_PID" ] || return 0
    local peak
    peak=$(vm_kb "$SCHLEUSE_PID" VmHWM)
    [ "${peak:-0}" -gt "$SCHLEUSE_PEAK_KB" ] && SCHLEUSE_PEAK_KB=$peak
    return 0
}

setup_schleuse() {
    mkdir -p "$SCHLEUSE_DIR/certs"
    SCHLEUSE_PORT=$(free_port)
    DKIM_ON=0 write_schleuse_config setup 9
    if [ ! -f "$SCHLEUSE_DIR/certs/dkim/bench.example.bench.ed25519.pem" ]; then
        (cd "$SCHLEUSE_DIR" && "$SCHLEUSE_BIN" --config schleuse.toml \
            dkim keygen --domain bench.example --selector bench >keygen.log 2>&1) ||
            { cat "$SCHLEUSE_DIR/keygen.log" >&2; die "schleuse dkim keygen failed"; }
    fi
    "$PY" -c 'import secrets; print(secrets.token_urlsafe(18))' |
        "$SCHLEUSE_BIN" --config "$SCHLEUSE_DIR/schleuse.toml" \
            user add bench --allow-sender '*' --password-stdin >"$SCHLEUSE_DIR/user-add.log" 2>&1 ||
        { cat "$SCHLEUSE_DIR/user-add.log" >&2; die "schleuse user add failed"; }
}

# ---------------------------------------------------------------------------
# Postfix: a private instance under bench/out/postfix
PF_DIR=$OUT/postfix
PF_PORT=""

setup_postfix() {
    POSTFIX_ETC=$PF_DIR/etc
    mkdir -p "$POSTFIX_ETC" "$PF_DIR/spool" "$PF_DIR/data"
    chown postfix:postfix "$PF_DIR/data"
    PF_PORT=$(free_port)
    # Stock settings except what a relay-only loopback instance needs.
    cat >"$POSTFIX_ETC/main.cf" <<EOF
# generated by bench/run.sh -- private benchmark instance, not /etc/postfix
compatibility_level = 3.6
queue_directory = $PF_DIR/spool
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $PF_DIR/maillog
maillog_file_prefixes = $PF_DIR
myhostname = postfix-bench.localdomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:9
# no local delivery at all
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
biff = no
EOF
    cat >"$POSTFIX_ETC/master.cf" <<EOF
# generated by bench/run.sh (no chroot: the private queue has no chroot files)
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
    "$POSTFIX" -c "$POSTFIX_ETC" check >"$PF_DIR/check.log" 2>&1 ||
        { cat "$PF_DIR/check.log" "$PF_DIR/maillog" >&2 2>/dev/null; die "postfix check failed"; }
}

start_postfix() { # start_postfix SINKPORT
    # Leftovers of the previous job (the sink leaves as soon as it has the N-th
    # message, so the MTA sees that last transaction fail and keeps a copy).
    "$POSTSUPER" -c "$POSTFIX_ETC" -d ALL >/dev/null 2>&1 || true
    sed -i "s/^relayhost = .*/relayhost = [127.0.0.1]:$1/" "$POSTFIX_ETC/main.cf"
    "$POSTFIX" -c "$POSTFIX_ETC" start-fg >>"$PF_DIR/start.log" 2>&1 &
    POSTFIX_PID=$!
    wait_port "$PF_PORT" "$POSTFIX_PID" || die "postfix did not start (see $PF_DIR/maillog)"
    sleep 0.5
}

# ---------------------------------------------------------------------------
# memory for one large message: BIG_RSS_KB = schleuse's peak RSS (VmHWM) after
# relaying one BIG_MB message, BIG_IDLE_KB = its RSS just before.
BIG_MB=${BIG_MB:-24}
BIG_RSS_KB=0 BIG_IDLE_KB=0
run_big_message() {
    start_sink 1 "$OUT/schleuse/sink-big.log"
    start_schleuse big "$SINK_PORT"
    BIG_IDLE_KB=$(vm_kb "$SCHLEUSE_PID" VmRSS)
    log "schleuse: one ${BIG_MB} MB message"
    local t0
    t0=$(now)
    "$PY" - "$SCHLEUSE_PORT" "$BIG_MB" "$SENDER" "$RCPT" <<'PY' >"$OUT/schleuse/big-client.log" 2>&1 ||
import smtplib, sys
port, mb, sender, rcpt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
line = "x" * 76 + "\r\n"
body = line * (mb * 1024 * 1024 // len(line))
msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: big\r\n\r\n" + body
with smtplib.SMTP("127.0.0.1", port, timeout=300) as s:
    s.sendmail(sender, [rcpt], msg)
PY
        log "schleuse: big message: client failed (see $OUT/schleuse/big-client.log)"
    wait_sink "$t0" || log "schleuse: big message did not reach the sink"
    BIG_RSS_KB=$(vm_kb "$SCHLEUSE_PID" VmHWM)
    note_schleuse_peak
    stop_schleuse
    stop_sink
}

# ---------------------------------------------------------------------------
# one measured job: run_job MTA NAME N SIZE -> prints msgs/s (or FAILED)
run_job() {
    local mta=$1 name=$2 n=$3 size=$4 port t0
    start_sink "$n" "$OUT/$mta/sink-$name.log"
    if [ "$mta" = schleuse ]; then
        start_schleuse "$name" "$SINK_PORT"
        port=$SCHLEUSE_PORT
    else
        start_postfix "$SINK_PORT"
        port=$PF_PORT
    fi
    log "$mta: $name: $n x $size bytes, $SESSIONS sessions"
    t0=$(now)
    if ! "$SMTP_SOURCE" -s "$SESSIONS" -m "$n" -l "$size" -f "$SENDER" -t "$RCPT" \
        -M bench.example "127.0.0.1:$port" >"$OUT/$mta/source-$name.log" 2>&1; then
        log "$mta: $name: smtp-source failed: $(tail -1 "$OUT/$mta/source-$name.log")"
    fi
    log "$mta: $name: injected after $(calc '%.2f' "$(now) - $t0")s"
    if wait_sink "$t0"; then
        log "$mta: $name: sink has all $n after $(printf '%.2f' "$SECS")s"
        RESULT=$(calc '%.0f' "$n / $SECS")
    else
        log "$mta: $name: sink did not get all $n messages within ${JOB_TIMEOUT}s"
        RESULT=FAILED
    fi
    if [ "$mta" = schleuse ]; then
        if ! kill -0 "$SCHLEUSE_PID" 2>/dev/null; then
            local status=0
            wait "$SCHLEUSE_PID" || status=$?
            log "$mta: $name: schleuse exited during the job (status $status, see $OUT/$mta/$name.log)"
            SCHLEUSE_PID=""
            RESULT=FAILED
        fi
        note_schleuse_peak
        stop_schleuse
    else
        stop_postfix
    fi
    stop_sink
}

# latency job: run_latency MTA -> sets LAT_JSON
run_latency() {
    local mta=$1 port
    start_sink "$LAT_N" "$OUT/$mta/sink-latency.log"
    if [ "$mta" = schleuse ]; then
        start_schleuse latency "$SINK_PORT"
        port=$SCHLEUSE_PORT
    else
        start_postfix "$SINK_PORT"
        port=$PF_PORT
    fi
    log "$mta: latency: $LAT_N x 10 KB from $SESSIONS concurrent clients"
    LAT_JSON=$("$PY" "$ROOT/bench/latency.py" 127.0.0.1 "$port" \
        --messages "$LAT_N" --clients "$SESSIONS" --size 10240) || LAT_JSON='{}'
    log "$mta: latency: $LAT_JSON"
    wait_sink "$(now)" || log "$mta: latency: sink did not get all $LAT_N messages"
    if [ "$mta" = schleuse ]; then note_schleuse_peak; stop_schleuse; else stop_postfix; fi
    stop_sink
}

json_field() { # json_field JSON KEY
    "$PY" -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("n/a" if v is None else v)' "$1" "$2"
}

ratio() {
    if [[ "$1" =~ ^[0-9]+$ ]] && [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -gt 0 ]; then
        calc '%.2f' "$1 / $2"
    else
        echo "n/a"
    fi
}

# ---------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT/schleuse" "$OUT/postfix"

if [ "${SKIP_SCHLEUSE:-0}" != 1 ]; then
    if [ -z "${SCHLEUSE_BIN:-}" ]; then
        if [ "${SKIP_BUILD:-0}" != 1 ]; then
            log "cargo build --release"
            (cd "$ROOT" && cargo build --release)
        fi
        SCHLEUSE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/schleuse
    fi
    [ -x "$SCHLEUSE_BIN" ] || die "$SCHLEUSE_BIN not found"
fi

declare -A R      # R[s_small]="612 598 640" (msgs/s of each repetition)
S_LAT='{}' P_LAT='{}'
SMALL="$SMALL_N x 10 KB"
LARGE="$LARGE_N x 200 KB"

# median of the repetitions ("FAILED" if any failed); spread goes to SPREAD[...]
declare -A SPREAD
summarise() { # summarise KEY
    local values=${R[$1]:-} sorted n
    if [ -z "$values" ]; then echo "n/a"; return; fi
    if [[ " $values " == *" FAILED "* ]]; then echo "FAILED"; return; fi
    sorted=$(tr ' ' '\n' <<<"$values" | grep . | sort -n)
    n=$(wc -l <<<"$sorted")
    sed -n "$(( (n + 1) / 2 ))p" <<<"$sorted"
}
spread() { # spread KEY -> "min-max" over the repetitions
    local values=${R[$1]:-}
    [ -n "$values" ] || { echo "n/a"; return; }
    tr ' ' '\n' <<<"$values" | grep . | sort -n | sed -n '1p;$p' | paste -sd- -
}

for mta in schleuse postfix; do
    if [ "$mta" = schleuse ]; then
        [ "${SKIP_SCHLEUSE:-0}" = 1 ] && continue
        setup_schleuse
        k=s
    else
        [ "${SKIP_POSTFIX:-0}" = 1 ] && continue
        setup_postfix
        k=p
    fi
    for r in $(seq "$REPEAT"); do
        run_job "$mta" "small-$r" "$SMALL_N" 10240;  R[${k}_small]="${R[${k}_small]:-} $RESULT"
        run_job "$mta" "large-$r" "$LARGE_N" 204800; R[${k}_large]="${R[${k}_large]:-} $RESULT"
        if [ "$mta" = schleuse ]; then
            # The same small job with DKIM signing off: what signing costs.
            DKIM_ON=0 run_job "$mta" "small-nodkim-$r" "$SMALL_N" 10240
            R[s_small_nodkim]="${R[s_small_nodkim]:-} $RESULT"
        fi
    done
    run_latency "$mta"
    if [ "$mta" = schleuse ]; then S_LAT=$LAT_JSON; else P_LAT=$LAT_JSON; fi
    [ "$mta" = schleuse ] && run_big_message
done

s_small=$(summarise s_small) s_large=$(summarise s_large)
p_small=$(summarise p_small) p_large=$(summarise p_large)
S_P99=$(json_field "$S_LAT" p99_ms)
mb() { calc '%.1f' "$1 / 1024"; }
if [ -n "${SCHLEUSE_BIN:-}" ]; then
    s_version="$("$SCHLEUSE_BIN" --version 2>/dev/null || echo '?') (binary of $(date -u -r "$SCHLEUSE_BIN" '+%Y-%m-%d %H:%M UTC'))"
else
    s_version='schleuse skipped'
fi
git_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit')
if [ -n "$(cd "$ROOT" && git status --porcelain 2>/dev/null | head -1)" ]; then git_rev="$git_rev (dirty)"; fi

{
    echo "# schleuse benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),"
    echo "kernel $(uname -r), bench/out on $(df -T "$OUT" | awk 'NR==2 {print $2}'); $s_version at $git_rev; Postfix $(postconf -h mail_version 2>/dev/null || echo '?')."
    echo
    echo "End-to-end relay throughput: from the start of \`smtp-source -s $SESSIONS\` until"
    echo "\`smtp-sink\` (the upstream) has received the last message. Both MTAs fsync"
    echo "before answering 250 (schleuse always, Postfix by default)."
    echo
    echo "Median of $REPEAT run(s) each; the range of all runs in brackets."
    echo
    echo "| job | schleuse msg/s | Postfix msg/s | schleuse / Postfix |"
    echo "|---|---:|---:|---:|"
    echo "| $SMALL | $s_small ($(spread s_small)) | $p_small ($(spread p_small)) | $(ratio "$s_small" "$p_small") |"
    echo "| $LARGE | $s_large ($(spread s_large)) | $p_large ($(spread p_large)) | $(ratio "$s_large" "$p_large") |"
    if [ "${SKIP_SCHLEUSE:-0}" != 1 ]; then
        s_nodkim=$(summarise s_small_nodkim)
        echo "| $SMALL, DKIM signing off | $s_nodkim ($(spread s_small_nodkim)) | | $(ratio "$s_nodkim" "$p_small") |"
        echo
        echo "schleuse runs as in production: From rewrite, header privacy and DKIM"
        echo "(Ed25519) signing on; the last row is the same small job without signing."
    fi
    echo
    echo "Latency end of DATA -> 250, $LAT_N x 10 KB from $SESSIONS concurrent clients (bench/latency.py):"
    echo
    echo "| | p50 ms | p90 ms | p99 ms | max ms | errors |"
    echo "|---|---:|---:|---:|---:|---:|"
    for pair in "schleuse:$S_LAT" "Postfix:$P_LAT"; do
        name=${pair%%:*} js=${pair#*:}
        echo "| $name | $(json_field "$js" p50_ms) | $(json_field "$js" p90_ms) | $(json_field "$js" p99_ms) | $(json_field "$js" max_ms) | $(json_field "$js" errors) |"
    done
    echo
    if [ "${SKIP_SCHLEUSE:-0}" != 1 ]; then
        echo "schleuse memory: idle RSS after start $(mb "$SCHLEUSE_IDLE_KB") MB, peak RSS (VmHWM, max over all jobs) $(mb "$SCHLEUSE_PEAK_KB") MB."
        echo "One ${BIG_MB} MB message relayed: RSS $(mb "$BIG_IDLE_KB") MB before, peak $(mb "$BIG_RSS_KB") MB"
        echo "($(calc '%.1f' "($BIG_RSS_KB - $BIG_IDLE_KB) / 1024 / $BIG_MB") x the message on top of idle; SPEC §12: about 3 x at most)."
        echo
        echo "Targets (SPEC §12): throughput >= Postfix, aiming for 2x (ratios above);"
        echo "p99 <= 20 ms: $S_P99 ms; idle RSS <= 30 MB: $(mb "$SCHLEUSE_IDLE_KB") MB."
    fi
    [ "${SKIP_POSTFIX:-0}" = 1 ] && echo && echo "Postfix comparison skipped."
    true
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
