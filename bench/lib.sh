# Shared by the benchmark scripts (bench/run.sh, bench/attachments.sh,
# bench/cluster.sh); sourced, not run:  . "$ROOT/bench/lib.sh"
#
# Tools, logging, process bookkeeping by PID (never by name), free ports,
# the smtp-sink upstream, CPU/memory readings from /proc, the release build
# and the bench account + DKIM key. The scripts keep their own config
# writers, cleanup traps and reports. Every wait here is bounded.

SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi
CLK_TCK=$(getconf CLK_TCK)
JOB_TIMEOUT=${JOB_TIMEOUT:-600}  # seconds a job may take (wait_sink)

die() { echo "bench: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }  # calc FORMAT EXPR

SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody)  # smtp-sink refuses to run as root

# ---------------------------------------------------------------------------
# process bookkeeping: everything a script starts is stopped on exit, by PID

# signal PID only while it is still the process we started (its command line
# contains WORD), so a recycled PID is never hit: signal_if SIG PID WORD
signal_if() {
    if kill -0 "$2" 2>/dev/null && tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -q -- "$3"; then
        kill "-$1" "$2" 2>/dev/null || true
    fi
}

# stop_pid PID WORD: SIGTERM, up to 10 s for it to go, then SIGKILL; reaped
stop_pid() {
    local pid=$1 word=$2
    [ -n "$pid" ] || return 0
    signal_if TERM "$pid" "$word"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    signal_if KILL "$pid" "$word"
    wait "$pid" 2>/dev/null || true
}

SINK_PID=""
SCHLEUSE_PID=""

stop_sink() {
    if [ -n "$SINK_PID" ]; then
        signal_if TERM "$SINK_PID" smtp-sink
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    fi
}

stop_schleuse() {
    stop_pid "$SCHLEUSE_PID" schleuse
    SCHLEUSE_PID=""
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: until something accepts on 127.0.0.1:PORT (PID must
# stay alive); at most 30 s
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

# wait_sink [T0]: until the sink has exited (= got all messages), at most
# JOB_TIMEOUT s; sets SINK_DONE (epoch seconds) and, given T0, SECS (seconds
# since T0). Returns 1 on timeout (the sink is stopped then).
wait_sink() {
    local deadline
    deadline=$(( $(date +%s) + JOB_TIMEOUT ))
    while kill -0 "$SINK_PID" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            stop_sink
            return 1
        fi
        sleep 0.02
    done
    SINK_DONE=$(now)
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
    if [ -n "${1:-}" ]; then SECS=$(calc '%.6f' "$SINK_DONE - $1"); fi
    return 0
}

cpu_ticks() { # utime + stime of PID (all its threads), in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

vm_kb() { # vm_kb PID FIELD -> kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

json_field() { # json_field JSON KEY
    "$PY" -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("n/a" if v is None else v)' "$1" "$2"
}

# ---------------------------------------------------------------------------
# build_schleuse [CARGO ARGS...]: cargo build --release (unless SKIP_BUILD=1
# or SCHLEUSE_BIN is given); sets SCHLEUSE_BIN
# The [upstream], [delivery], [limits] and [admin] tables every benchmark
# config shares: relay to the sink on loopback port $1, delivery and limits
# out of the way. The quotas are still checked and counted, as in
# production, only set out of reach. Metrics are recorded as in
# production, the endpoint on a free port of its own.
relay_tables() { # relay_tables SINK_PORT
    cat <<EOF
[upstream]
mode = "relay"
host = "127.0.0.1"
port = $1
tls = "none"

[delivery]
max_connections = 8
max_messages_per_second = 100000

[limits]
max_message_size = "25MB"
max_recipients_per_message = 50
max_connections = 500
max_connections_per_ip = 500
ip_messages_per_minute = 100000000
account_messages_per_hour = 100000000
account_messages_per_day = 100000000
account_recipients_per_day = 100000000

[admin]
bind = "127.0.0.1:$(free_port)"
EOF
}

build_schleuse() {
    if [ -z "${SCHLEUSE_BIN:-}" ]; then
        if [ "${SKIP_BUILD:-0}" != 1 ]; then
            log "cargo build --release $*"
            (cd "$ROOT" && cargo build --release "$@")
        fi
        SCHLEUSE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/schleuse
    fi
    [ -x "$SCHLEUSE_BIN" ] || die "$SCHLEUSE_BIN not found"
}

# bench_identity DIR KEYGEN: with DIR/schleuse.toml written (its [accounts]
# file and [tls] paths under DIR), the account `bench` (any sender) and, with
# KEYGEN=1, the Ed25519 DKIM key DIR/certs/dkim/bench.example.bench.ed25519.pem
bench_identity() {
    local dir=$1 keygen=$2
    if [ "$keygen" = 1 ] && [ ! -f "$dir/certs/dkim/bench.example.bench.ed25519.pem" ]; then
        (cd "$dir" && "$SCHLEUSE_BIN" --config schleuse.toml \
            dkim keygen --domain bench.example --selector bench >keygen.log 2>&1) ||
            { cat "$dir/keygen.log" >&2; die "schleuse dkim keygen failed"; }
    fi
    "$PY" -c 'import secrets; print(secrets.token_urlsafe(18))' |
        "$SCHLEUSE_BIN" --config "$dir/schleuse.toml" \
            user add bench --allow-sender '*' --password-stdin >"$dir/user-add.log" 2>&1 ||
        { cat "$dir/user-add.log" >&2; die "schleuse user add failed"; }
}
