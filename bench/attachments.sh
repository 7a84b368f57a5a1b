#!/usr/bin/env bash
# Attachments -> links, end to end (the issue's question): messages/s for
# 1 MB messages with one PDF attachment through schleuse with
# `[attachments] mode = "link"`, against the same messages with
# `mode = "keep"`, in the same run, on the same machine.
#
#   bash bench/attachments.sh        (from anywhere; root or not)
#
# What it does, all on 127.0.0.1 with free ports, all state under
# bench/out/attachments/:
#   1. cargo build --release (the binary and examples/attachments_bench).
#   2. in process: target/release/examples/attachments_bench (one 10 MB PDF:
#      scan, encryption, fsync'd store, rewrite, whole chain; MB/s per core).
#   3. end to end, REPEAT times alternating link / keep: a fresh smtp-sink
#      (Debian `postfix` package) as the upstream that exits after N messages,
#      a fresh schleuse (fresh data dir; relay mode, trusted-network listener
#      without TLS/AUTH, loopback upstream without TLS, DKIM Ed25519 on, as in
#      production), and bench/attachments.py sending N x ~1 MB messages (one
#      ~740 KB PDF each, identical bytes in both modes) over CLIENTS sessions.
#      accepted msg/s: first MAIL FROM -> last 250 (stored, fsync'd);
#      delivered msg/s: first MAIL FROM -> the sink has the N-th message.
#      Gateway CPU per message: utime+stime from /proc/PID/stat over the job
#      (accept + transform + store + delivery), divided by N.
# Results: bench/out/attachments/results.md (also printed). Logs alongside.
#
# Knobs (environment): N=200 CLIENTS=4 SIZE=1000000 REPEAT=3 DKIM_ON=1
#   JOB_TIMEOUT=120 SKIP_BUILD=1 SCHLEUSE_BIN=path SKIP_INPROC=1
# Needs: smtp-sink (apt-get install postfix), /usr/bin/python3, cargo.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out/attachments
N=${N:-200}
CLIENTS=${CLIENTS:-4}
SIZE=${SIZE:-1000000}
REPEAT=${REPEAT:-3}
DKIM_ON=${DKIM_ON:-1}
JOB_TIMEOUT=${JOB_TIMEOUT:-120}
SENDER=bench@bench.example
RCPT=sink@sink.example

SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi

die() { echo "bench: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }  # calc FORMAT EXPR

[ -x "$SMTP_SINK" ] || die "$SMTP_SINK not found: apt-get install postfix"
command -v "$PY" >/dev/null || die "python3 not found"
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody)  # smtp-sink refuses to run as root
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------
# process bookkeeping: everything we start is stopped on exit, by PID
SINK_PID=""
SCHLEUSE_PID=""

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

cleanup() {
    stop_sink
    stop_schleuse
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

# wait_sink: until the sink has exited (= got all messages); sets SINK_DONE
# (epoch seconds), or returns 1 on timeout
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
}

cpu_ticks() { # utime + stime of PID, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

vm_kb() { # vm_kb PID FIELD -> kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

json_field() { # json_field JSON KEY
    "$PY" -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("n/a" if v is None else v)' "$1" "$2"
}

# ---------------------------------------------------------------------------
# schleuse
SCHLEUSE_DIR=$OUT
SCHLEUSE_PORT=""

write_schleuse_config() { # write_schleuse_config JOB MODE SINKPORT
    local link_port
    link_port=$(free_port)
    cat >"$SCHLEUSE_DIR/schleuse.toml" <<EOF
# generated by bench/attachments.sh -- relay into smtp-sink on 127.0.0.1:$3
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
port = $3
tls = "none"

[delivery]
max_connections = 8
max_messages_per_second = 100000

[limits]
max_message_size = "25MB"
max_recipients_per_message = 50
max_connections = 500
max_connections_per_ip = 500

[admin]
bind = "127.0.0.1:$(free_port)"

[sender]
from = "rewrite"
system_address = "bench@bench.example"
reply_to = "account"

[attachments]
mode = "$2"
public_url = "http://127.0.0.1:$link_port"
bind = "127.0.0.1:$link_port"
EOF
    if [ "$DKIM_ON" = 1 ]; then
        cat >>"$SCHLEUSE_DIR/schleuse.toml" <<EOF

[[dkim]]
domain = "bench.example"
selector = "bench"
key = "$SCHLEUSE_DIR/certs/dkim/bench.example.bench.ed25519.pem"
EOF
    fi
}

start_schleuse() { # start_schleuse JOB MODE SINKPORT
    SCHLEUSE_PORT=$(free_port)
    rm -rf "$SCHLEUSE_DIR/var-$1"
    write_schleuse_config "$1" "$2" "$3"
    "$SCHLEUSE_BIN" --config "$SCHLEUSE_DIR/schleuse.toml" run >"$SCHLEUSE_DIR/$1.log" 2>&1 &
    SCHLEUSE_PID=$!
    wait_port "$SCHLEUSE_PORT" "$SCHLEUSE_PID" || {
        tail -20 "$SCHLEUSE_DIR/$1.log" >&2
        die "schleuse did not start (see $SCHLEUSE_DIR/$1.log)"
    }
    sleep 0.5
    kill -0 "$SCHLEUSE_PID" 2>/dev/null || die "schleuse exited right after start (see $SCHLEUSE_DIR/$1.log)"
}

setup_schleuse() {
    mkdir -p "$SCHLEUSE_DIR/certs"
    SCHLEUSE_PORT=$(free_port)
    DKIM_ON=0 write_schleuse_config setup keep 9
    if [ "$DKIM_ON" = 1 ] && [ ! -f "$SCHLEUSE_DIR/certs/dkim/bench.example.bench.ed25519.pem" ]; then
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
# one measured job: run_job MODE REP -> appends to ACC[MODE], DEL[MODE], CPU[MODE]
declare -A ACC DEL CPU RSS
run_job() {
    local mode=$1 job="$1-$2" json count errors ticks0 ticks1 acc del cpu_ms docs
    start_sink "$N" "$OUT/sink-$job.log"
    start_schleuse "$job" "$mode" "$SINK_PORT"
    log "$job: $N x $SIZE bytes, $CLIENTS sessions"
    ticks0=$(cpu_ticks "$SCHLEUSE_PID")
    json=$("$PY" "$ROOT/bench/attachments.py" 127.0.0.1 "$SCHLEUSE_PORT" \
        --messages "$N" --clients "$CLIENTS" --size "$SIZE" \
        --sender "$SENDER" --rcpt "$RCPT" 2>"$OUT/client-$job.log") || json='{}'
    echo "$json" >>"$OUT/client-$job.log"
    count=$(json_field "$json" count) errors=$(json_field "$json" errors)
    acc=$(json_field "$json" msgs_per_s)
    [ "$count" = "$N" ] && [ "$errors" = 0 ] ||
        { log "$job: client: $count sent, $errors errors: $(json_field "$json" first_error)"; acc=FAILED; }
    MSG_BYTES=$(json_field "$json" message_bytes) DOC_BYTES=$(json_field "$json" document_bytes)
    if wait_sink; then
        del=$(calc '%.1f' "$N / ($SINK_DONE - $(json_field "$json" start_epoch))")
    else
        log "$job: the sink did not get all $N messages within ${JOB_TIMEOUT}s"
        del=FAILED
    fi
    ticks1=$(cpu_ticks "$SCHLEUSE_PID")
    cpu_ms=$(calc '%.1f' "($ticks1 - $ticks0) * 1000 / $CLK_TCK / $N")
    local rss=$(( $(vm_kb "$SCHLEUSE_PID" VmHWM) / 1024 ))
    [ "$rss" -gt "${RSS[$mode]:-0}" ] && RSS[$mode]=$rss
    if ! kill -0 "$SCHLEUSE_PID" 2>/dev/null; then
        log "$job: schleuse exited during the job (see $OUT/$job.log)"
        acc=FAILED del=FAILED
    fi
    if [ "$mode" = link ]; then
        docs=$(find "$SCHLEUSE_DIR/var-$job/documents" -type f 2>/dev/null | wc -l)
        [ "$docs" = "$N" ] || { log "$job: $docs documents stored, expected $N"; acc=FAILED; }
    fi
    log "$job: accepted $acc msg/s, delivered $del msg/s, gateway CPU $cpu_ms ms/message"
    ACC[$mode]="${ACC[$mode]:-} $acc" DEL[$mode]="${DEL[$mode]:-} $del" CPU[$mode]="${CPU[$mode]:-} $cpu_ms"
    stop_schleuse
    stop_sink
    rm -rf "$SCHLEUSE_DIR/var-$job"  # ~N x 1 MB
}

median() { # median "v1 v2 ..." -> median, or FAILED if any failed
    local values=$1 sorted n
    [ -n "${values// /}" ] || { echo "n/a"; return; }
    if [[ " $values " == *" FAILED "* ]]; then echo "FAILED"; return; fi
    sorted=$(tr ' ' '\n' <<<"$values" | grep . | sort -g)
    n=$(wc -l <<<"$sorted")
    sed -n "$(( (n + 1) / 2 ))p" <<<"$sorted"
}
range() { tr ' ' '\n' <<<"$1" | grep . | sort -g | sed -n '1p;$p' | paste -sd- -; }
ratio() {
    if [[ "$1" =~ ^[0-9.]+$ ]] && [[ "$2" =~ ^[0-9.]+$ ]]; then calc '%.2f' "$1 / $2"; else echo "n/a"; fi
}

# ---------------------------------------------------------------------------
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$OUT"
mkdir -p "$OUT"

if [ -z "${SCHLEUSE_BIN:-}" ]; then
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "cargo build --release (binary and examples/attachments_bench)"
        (cd "$ROOT" && cargo build --release --bin schleuse --example attachments_bench)
    fi
    SCHLEUSE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/schleuse
fi
[ -x "$SCHLEUSE_BIN" ] || die "$SCHLEUSE_BIN not found"
INPROC_BIN=$(dirname "$SCHLEUSE_BIN")/examples/attachments_bench

INPROC=""
if [ "${SKIP_INPROC:-0}" != 1 ]; then
    [ -x "$INPROC_BIN" ] || die "$INPROC_BIN not found (cargo build --release --example attachments_bench)"
    log "in process: attachments_bench (10 MB PDF)"
    INPROC=$("$INPROC_BIN")
fi

setup_schleuse
for r in $(seq "$REPEAT"); do
    run_job link "$r"
    run_job keep "$r"
done

a_link=$(median "${ACC[link]}") a_keep=$(median "${ACC[keep]}")
d_link=$(median "${DEL[link]}") d_keep=$(median "${DEL[keep]}")
c_link=$(median "${CPU[link]}") c_keep=$(median "${CPU[keep]}")
git_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit')
if [ -n "$(cd "$ROOT" && git status --porcelain 2>/dev/null | head -1)" ]; then git_rev="$git_rev (dirty)"; fi
dkim_note="DKIM Ed25519 signing on"
[ "$DKIM_ON" = 1 ] || dkim_note="DKIM signing off"

{
    echo "# schleuse: attachments -> links"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),"
    echo "kernel $(uname -r), bench/out on $(df -T "$OUT" | awk 'NR==2 {print $2}'), load average before: $LOAD0; schleuse at $git_rev."
    if [ -n "$INPROC" ]; then
        echo
        echo "## In process (examples/attachments_bench)"
        echo
        echo '```'
        echo "$INPROC"
        echo '```'
    fi
    echo
    echo "## End to end"
    echo
    echo "$N messages of $MSG_BYTES bytes, each with one PDF of $DOC_BYTES bytes (base64),"
    echo "from $CLIENTS concurrent sessions (bench/attachments.py) into schleuse (relay to"
    echo "smtp-sink on loopback, fsync before 250, $dkim_note), once with"
    echo "\`[attachments] mode = \"link\"\` and once with \`mode = \"keep\"\`, alternating,"
    echo "$REPEAT time(s) each; median, range in brackets. Accepted: first MAIL FROM -> last 250."
    echo "Delivered: first MAIL FROM -> smtp-sink has the last message. CPU: the gateway's"
    echo "utime+stime (/proc/PID/stat) over the job, per message."
    echo
    echo "| mode | accepted msg/s | delivered msg/s | gateway CPU ms/msg | peak RSS MB |"
    echo "|---|---:|---:|---:|---:|"
    echo "| link | $a_link ($(range "${ACC[link]}")) | $d_link ($(range "${DEL[link]}")) | $c_link ($(range "${CPU[link]}")) | ${RSS[link]:-n/a} |"
    echo "| keep | $a_keep ($(range "${ACC[keep]}")) | $d_keep ($(range "${DEL[keep]}")) | $c_keep ($(range "${CPU[keep]}")) | ${RSS[keep]:-n/a} |"
    echo "| link / keep | $(ratio "$a_link" "$a_keep") | $(ratio "$d_link" "$d_keep") | $(ratio "$c_link" "$c_keep") | |"
    echo
    if [[ "$a_link" =~ ^[0-9.]+$ ]] && [[ "$c_link" =~ ^[0-9.]+$ ]]; then
        echo "link mode: $(calc '%.0f' "$a_link * $MSG_BYTES / 1e6") MB/s of message accepted,"
        echo "$(calc '%.0f' "$DOC_BYTES / 1e6 / ($c_link / 1000)") MB of document per gateway CPU-second (all stages)."
    fi
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
