#!/usr/bin/env bash
# One instance on PostgreSQL vs the embedded store, and two instances vs one
# (issue 8): end-to-end relay throughput and where the CPU goes.
#
#   bash bench/cluster.sh        (as root or not; from anywhere)
#
# What it does, all on 127.0.0.1 with free ports, all state under
# bench/out/cluster/:
#   1. cargo build --release
#   2. a throwaway PostgreSQL (Debian's postgresql, the newest under
#      /usr/lib/postgresql/*/bin; as root run as `postgres` via runuser):
#      initdb into bench/out/cluster/pg, stock settings, fsync ON (unlike the
#      tests' servers: the gateway's durability is what is measured, and the
#      gateway forces synchronous_commit on); a fresh database per job,
#      a CHECKPOINT before each job so no earlier job's WAL is flushed in it.
#   3. per job a fresh smtp-sink (Debian `postfix` package) as the upstream
#      that exits after N messages, fresh gateway(s) (fresh data_dir; relay
#      mode, trusted-network listener without TLS/AUTH, loopback upstream
#      without TLS, DKIM Ed25519 on, From rewrite: as bench/run.sh; the
#      quotas are checked and counted but set out of reach), and
#      `smtp-source -s SESSIONS -m N -l SIZE` (one connection per message).
#      Scenarios:
#        embedded      one instance, the embedded store (SQLite)
#        pg            one instance, [store] backend = "postgres"
#        pg-haproxy    one instance on PostgreSQL behind HAProxy (the
#                      baseline for the next: same path, one instance)
#        pg-2-haproxy  two instances on the same database behind HAProxy
#                      (mode tcp, roundrobin, send-proxy-v2; the listeners
#                      have proxy_protocol = true; no health checks)
#      Each runs REPEAT times, the order reversed every round; median and
#      range are reported.
#   4. delivered msg/s: start of smtp-source -> the sink has the N-th message;
#      accepted msg/s: start -> smtp-source done (every 250 received).
#      CPU per message: utime+stime (/proc/PID/stat) over that window of the
#      gateway process(es), of PostgreSQL (the postmaster with its exited
#      children, cutime+cstime, plus every live backend and worker) and of
#      HAProxy; machine busy %: /proc/stat over the window (smtp-source,
#      smtp-sink and anything else running count there too).
# Results: bench/out/cluster/results.md (also printed). Logs alongside.
#
# Knobs (environment): N=2000 SESSIONS=20 SIZE=5120 REPEAT=3 DKIM_ON=1
#   JOB_TIMEOUT=180 POOL_SIZE=10 SCENARIOS="embedded pg pg-haproxy pg-2-haproxy"
#   SKIP_BUILD=1 SCHLEUSE_BIN=path
# Needs: smtp-sink, smtp-source (apt-get install postfix), postgresql,
# haproxy, /usr/bin/python3, cargo.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out/cluster
N=${N:-2000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-5120}
REPEAT=${REPEAT:-3}
DKIM_ON=${DKIM_ON:-1}
JOB_TIMEOUT=${JOB_TIMEOUT:-180}
POOL_SIZE=${POOL_SIZE:-10}
SCENARIOS=${SCENARIOS:-embedded pg pg-haproxy pg-2-haproxy}
SENDER=bench@bench.example
RCPT=sink@sink.example

. "$ROOT/bench/lib.sh"

HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
for tool in "$SMTP_SINK" "$SMTP_SOURCE"; do
    [ -x "$tool" ] || die "$tool not found: apt-get install postfix"
done
[ -x "$HAPROXY" ] || die "haproxy not found: apt-get install haproxy"
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || die "no /usr/lib/postgresql/*/bin: apt-get install postgresql"
command -v "$PY" >/dev/null || die "python3 not found"
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

# ---------------------------------------------------------------------------
# process bookkeeping (see bench/lib.sh): everything we start is stopped on
# exit, by PID
GW_PIDS=()
HAPROXY_PID=""
WATCH_PID=""
PG_DIR=$OUT/pg
PG_PORT=""
PG_STARTED=0

# PostgreSQL's server programs refuse root: as root they run as `postgres`
PG_AS=()
[ "$IS_ROOT" = 1 ] && PG_AS=(runuser -u postgres --)

pg_pid() { head -1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true; }

stop_gateways() {
    local pid
    for pid in "${GW_PIDS[@]}"; do stop_pid "$pid" schleuse; done
    GW_PIDS=()
}

stop_haproxy() {
    stop_pid "$HAPROXY_PID" haproxy
    HAPROXY_PID=""
}

stop_postgres() {
    [ "$PG_STARTED" = 1 ] || return 0
    local pid
    pid=$(pg_pid)
    timeout 60 "${PG_AS[@]}" "$PG_BIN/pg_ctl" stop -m fast -w -t 30 -D "$PG_DIR/data" \
        >>"$PG_DIR/ctl.log" 2>&1 || {
        # pg_ctl did not manage: immediate shutdown of the postmaster we started
        [ -n "$pid" ] && signal_if QUIT "$pid" postgres
    }
    PG_STARTED=0
}

stop_waits() {
    stop_pid "$WATCH_PID" psql
    WATCH_PID=""
}

cleanup() {
    stop_waits
    stop_sink
    stop_haproxy
    stop_gateways
    stop_postgres
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# PostgreSQL
start_postgres() {
    rm -rf "$PG_DIR"
    mkdir -p "$PG_DIR"
    [ "$IS_ROOT" = 1 ] && chown postgres:postgres "$PG_DIR"
    PG_PORT=$(free_port)
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'): initdb, port $PG_PORT, fsync on"
    # --no-sync: initdb's own files only; the server runs with fsync on.
    timeout 120 "${PG_AS[@]}" "$PG_BIN/initdb" -A trust -U postgres -E UTF8 --no-sync \
        -D "$PG_DIR/data" >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    mkdir -p "$PG_DIR/sock"
    [ "$IS_ROOT" = 1 ] && chown postgres:postgres "$PG_DIR/sock"
    PG_STARTED=1
    timeout 90 "${PG_AS[@]}" "$PG_BIN/pg_ctl" start -w -t 60 -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR/sock" \
        >"$PG_DIR/ctl.log" 2>&1 || { cat "$PG_DIR/ctl.log" "$PG_DIR/server.log" >&2; die "pg_ctl start failed"; }
    [ -n "$(pg_pid)" ] || die "PostgreSQL started but $PG_DIR/data/postmaster.pid is missing"
    PG_SETTINGS=$(psql_c postgres "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
        WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers', 'max_wal_size')")
    log "PostgreSQL: $PG_SETTINGS"
}

psql_c() { # psql_c DB SQL
    timeout 60 "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -qAtX -v ON_ERROR_STOP=1 -c "$2"
}

# pg_ticks: CPU ticks of the whole server so far: the postmaster (with its
# exited children) and every live child (backends, checkpointer, WAL writer...)
pg_ticks() {
    local pm
    pm=$(pg_pid)
    [ -n "$pm" ] || { echo 0; return; }
    {
        awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$pm/stat" 2>/dev/null
        for child in $(ps -o pid= --ppid "$pm" 2>/dev/null); do cpu_ticks "$child"; done
    } | awk '{ s += $1 } END { print s + 0 }'
}

# start_waits DB FILE: what the database's busy sessions wait for, sampled
# every 0.5 s by one psql session (\watch) until stop_waits: one line per
# non-idle client backend, "WAIT|QUERY" (WAIT "CPU" when it waits for nothing
# PostgreSQL knows of). Its own queries cost PostgreSQL well under 1 % of a core.
start_waits() {
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -qAtX -F '|' >"$2" 2>&1 <<EOF &
SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), left(regexp_replace(query, '\s+', ' ', 'g'), 48)
FROM pg_stat_activity WHERE backend_type = 'client backend' AND state <> 'idle'
AND pid <> pg_backend_pid() AND datname = current_database()
\watch 0.5
EOF
    WATCH_PID=$!
}

# busy and total jiffies of the machine (/proc/stat), "BUSY TOTAL"
machine_ticks() {
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# ---------------------------------------------------------------------------
# gateways
write_config() { # write_config FILE DATA_DIR PORT PROXY SINKPORT STORE_URL
    local file=$1 data=$2 port=$3 proxy=$4 sink=$5 url=$6 link
    link=$(free_port)
    cat >"$file" <<EOF
# generated by bench/cluster.sh -- relay into smtp-sink on 127.0.0.1:$sink
[server]
hostname = "schleuse-bench.localdomain"
data_dir = "$data"
shutdown_grace = "5s"

[[listener]]
bind = "127.0.0.1:$port"
tls = "none"
trusted_networks = ["127.0.0.1/32"]
account = "bench"
EOF
    if [ "$proxy" = 1 ]; then
        cat >>"$file" <<EOF
proxy_protocol = true
proxy_trusted = ["127.0.0.1/32"]
EOF
    fi
    cat >>"$file" <<EOF

[tls]
cert = "$OUT/certs/server.crt"
key = "$OUT/certs/server.key"

[accounts]
file = "$OUT/accounts.toml"

$(relay_tables $sink)

# the link service (default mode; no attachments here) on a port of its own
[attachments]
public_url = "http://127.0.0.1:$link"
bind = "127.0.0.1:$link"

[sender]
from = "rewrite"
system_address = "bench@bench.example"
reply_to = "account"
EOF
    if [ -n "$url" ]; then
        cat >>"$file" <<EOF

[store]
backend = "postgres"
url = "$url"
pool_size = $POOL_SIZE
EOF
    fi
    if [ "$DKIM_ON" = 1 ]; then
        cat >>"$file" <<EOF

[[dkim]]
domain = "bench.example"
selector = "bench"
key = "$OUT/certs/dkim/bench.example.bench.ed25519.pem"
EOF
    fi
}

# start_gateway JOB NAME PROXY SINKPORT STORE_URL: appends to GW_PIDS, GW_PORTS
GW_PORTS=()
start_gateway() {
    local job=$1 name=$2 port pid
    port=$(free_port)
    write_config "$OUT/$job-$name.toml" "$OUT/var-$job-$name" "$port" "$3" "$4" "$5"
    "$SCHLEUSE_BIN" --config "$OUT/$job-$name.toml" run >"$OUT/$job-$name.log" 2>&1 &
    pid=$!
    GW_PIDS+=("$pid")
    wait_port "$port" "$pid" || { tail -20 "$OUT/$job-$name.log" >&2; die "schleuse did not start (see $OUT/$job-$name.log)"; }
    sleep 0.5
    kill -0 "$pid" 2>/dev/null || die "schleuse exited right after start (see $OUT/$job-$name.log)"
    GW_PORTS+=("$port")
}

start_haproxy() { # start_haproxy JOB PORT...: sets HAPROXY_PORT
    local job=$1 cfg=$OUT/$1-haproxy.cfg i=0 p
    shift
    HAPROXY_PORT=$(free_port)
    {
        echo "# generated by bench/cluster.sh"
        echo "global"
        echo "    maxconn 2000"
        echo "defaults"
        echo "    mode tcp"
        echo "    timeout connect 2s"
        echo "    timeout client 60s"
        echo "    timeout server 60s"
        echo "frontend submission"
        echo "    bind 127.0.0.1:$HAPROXY_PORT"
        echo "    default_backend gateways"
        echo "backend gateways"
        echo "    balance roundrobin"
        for p in "$@"; do
            i=$((i + 1))
            echo "    server gw$i 127.0.0.1:$p send-proxy-v2"
        done
    } >"$cfg"
    "$HAPROXY" -c -f "$cfg" >"$OUT/$job-haproxy-check.log" 2>&1 ||
        { cat "$OUT/$job-haproxy-check.log" >&2; die "haproxy -c failed"; }
    "$HAPROXY" -f "$cfg" -db >"$OUT/$job-haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    wait_port "$HAPROXY_PORT" "$HAPROXY_PID" || die "haproxy did not start (see $OUT/$job-haproxy.log)"
}

setup() {
    rm -rf "$OUT"
    mkdir -p "$OUT/certs"
    write_config "$OUT/schleuse.toml" "$OUT/var-setup" "$(free_port)" 0 9 ""
    bench_identity "$OUT" "$DKIM_ON"
}

ms() { calc '%.2f' "($2 - $1) * 1000 / $CLK_TCK / $N"; }  # ms TICKS0 TICKS1 -> ms per message

# ---------------------------------------------------------------------------
# one measured job: run_job SCENARIO REP -> appends to DEL, ACC, GW, PG, HA, BUSY
declare -A DEL ACC GW PG HA BUSY
run_job() {
    local sc=$1 job="$1-$2" url="" db target proxy=0 instances=1 pid
    local t0 t_inj g0 g1 p0 p1 h0 h1 m0 m1 del acc status=ok
    case "$sc" in
        embedded) ;;
        pg) url=x ;;
        pg-haproxy) url=x proxy=1 ;;
        pg-2-haproxy) url=x proxy=1 instances=2 ;;
        *) die "unknown scenario $sc" ;;
    esac
    if [ -n "$url" ]; then
        db="bench_${job//-/_}"
        psql_c postgres "CREATE DATABASE $db" >/dev/null
        url="postgresql://postgres@127.0.0.1:$PG_PORT/$db?sslmode=disable"
    fi
    start_sink "$N" "$OUT/sink-$job.log"
    GW_PORTS=()
    # one after the other: the first creates the schema
    start_gateway "$job" a "$proxy" "$SINK_PORT" "$url"
    [ "$instances" = 2 ] && start_gateway "$job" b "$proxy" "$SINK_PORT" "$url"
    target=${GW_PORTS[0]}
    if [ "$proxy" = 1 ]; then
        start_haproxy "$job" "${GW_PORTS[@]}"
        target=$HAPROXY_PORT
    fi
    [ -n "$url" ] && psql_c postgres CHECKPOINT >/dev/null
    log "$job: $N x $SIZE bytes, $SESSIONS sessions -> 127.0.0.1:$target"

    g0=0; for pid in "${GW_PIDS[@]}"; do g0=$((g0 + $(cpu_ticks "$pid"))); done
    p0=$(pg_ticks) h0=0
    [ -n "$HAPROXY_PID" ] && h0=$(cpu_ticks "$HAPROXY_PID")
    [ -n "$url" ] && start_waits "$db" "$OUT/waits-$job.txt"
    m0=$(machine_ticks)
    t0=$(now)
    if ! timeout "$JOB_TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m "$N" -l "$SIZE" -f "$SENDER" -t "$RCPT" \
        -M bench.example "127.0.0.1:$target" >"$OUT/source-$job.log" 2>&1; then
        log "$job: smtp-source failed: $(tail -1 "$OUT/source-$job.log")"
        status=FAILED
    fi
    t_inj=$(now)
    if wait_sink "$t0"; then
        del=$(calc '%.0f' "$N / $SECS")
    else
        log "$job: the sink did not get all $N messages within ${JOB_TIMEOUT}s"
        status=FAILED
    fi
    g1=0; for pid in "${GW_PIDS[@]}"; do g1=$((g1 + $(cpu_ticks "$pid"))); done
    p1=$(pg_ticks) h1=0
    [ -n "$HAPROXY_PID" ] && h1=$(cpu_ticks "$HAPROXY_PID")
    m1=$(machine_ticks)
    stop_waits
    for pid in "${GW_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { log "$job: a gateway exited during the job (see $OUT/$job-*.log)"; status=FAILED; }
    done
    acc=$(calc '%.0f' "$N / ($t_inj - $t0)")
    [ "$status" = ok ] || { del=FAILED acc=FAILED; }
    local gw_ms pg_ms ha_ms busy
    gw_ms=$(ms "$g0" "$g1") pg_ms=$(ms "$p0" "$p1") ha_ms=$(ms "$h0" "$h1")
    busy=$(awk -v a="$m0" -v b="$m1" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.0f", (y[2] > x[2]) ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0 }')
    log "$job: delivered $del msg/s, accepted $acc msg/s; CPU ms/msg: gateway $gw_ms, PostgreSQL $pg_ms, HAProxy $ha_ms; machine busy $busy %"
    DEL[$sc]="${DEL[$sc]:-} $del" ACC[$sc]="${ACC[$sc]:-} $acc"
    GW[$sc]="${GW[$sc]:-} $gw_ms" PG[$sc]="${PG[$sc]:-} $pg_ms" HA[$sc]="${HA[$sc]:-} $ha_ms"
    BUSY[$sc]="${BUSY[$sc]:-} $busy"
    stop_haproxy
    stop_gateways
    stop_sink
    [ -n "$url" ] && { psql_c postgres "DROP DATABASE $db" >/dev/null || true; }
    rm -rf "$OUT"/var-"$job"-*
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
    if [[ "$1" =~ ^[0-9.]+$ ]] && [[ "$2" =~ ^[0-9.]*[1-9][0-9.]*$ ]]; then
        calc '%.2f' "$1 / $2"
    else
        echo "n/a"
    fi
}
sum3() { # sum3 A B C -> A+B+C (n/a if any is not a number)
    if [[ "$1" =~ ^[0-9.]+$ ]] && [[ "$2" =~ ^[0-9.]+$ ]] && [[ "$3" =~ ^[0-9.]+$ ]]; then
        calc '%.2f' "$1 + $2 + $3"
    else
        echo "n/a"
    fi
}

# ---------------------------------------------------------------------------
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
build_schleuse
setup
start_postgres

read -r -a ORDER <<<"$SCENARIOS"
for r in $(seq "$REPEAT"); do
    if [ $((r % 2)) = 1 ]; then list=("${ORDER[@]}"); else
        list=(); for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do list+=("${ORDER[$i]}"); done
    fi
    for sc in "${list[@]}"; do run_job "$sc" "$r"; done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

git_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit')
if [ -n "$(cd "$ROOT" && git status --porcelain 2>/dev/null | head -1)" ]; then git_rev="$git_rev (dirty)"; fi
declare -A M
for sc in $SCENARIOS; do
    for k in DEL ACC GW PG HA BUSY; do
        declare -n arr=$k
        M[$k,$sc]=$(median "${arr[$sc]:-}")
        unset -n arr
    done
    M[TOT,$sc]=$(sum3 "${M[GW,$sc]}" "${M[PG,$sc]}" "${M[HA,$sc]}")
done
label() {
    case "$1" in
        embedded) echo "1 instance, embedded (SQLite)" ;;
        pg) echo "1 instance, PostgreSQL" ;;
        pg-haproxy) echo "1 instance, PostgreSQL, via HAProxy" ;;
        pg-2-haproxy) echo "2 instances, PostgreSQL, via HAProxy" ;;
    esac
}
dkim_note="DKIM Ed25519 signing on"
[ "$DKIM_ON" = 1 ] || dkim_note="DKIM signing off"

{
    echo "# schleuse: PostgreSQL vs embedded, two instances vs one"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)),"
    echo "kernel $(uname -r), bench/out on $(df -T "$OUT" | awk 'NR==2 {print $2}'), load average before: $LOAD0, after: $LOAD1;"
    echo "schleuse at $git_rev; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') ($PG_SETTINGS); $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3)."
    echo
    echo "\`smtp-source -s $SESSIONS -m $N -l $SIZE\` (one connection per message) into schleuse"
    echo "(relay to smtp-sink on loopback, fsync'd before 250, $dkim_note, From rewrite);"
    echo "$REPEAT run(s) per scenario, order reversed every round; median, range in brackets."
    echo "Delivered: start of smtp-source -> smtp-sink has the last message. Accepted: start ->"
    echo "smtp-source has every 250. CPU: utime+stime over that window per message, in ms,"
    echo "of the gateway(s), of all PostgreSQL processes and of HAProxy; machine busy: all"
    echo "processes (smtp-source and smtp-sink too), % of $(nproc) cores."
    echo
    echo "| scenario | delivered msg/s | accepted msg/s | gateway CPU ms/msg | PostgreSQL ms/msg | HAProxy ms/msg | sum ms/msg | machine busy % |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for sc in $SCENARIOS; do
        echo "| $(label "$sc") | ${M[DEL,$sc]} ($(range "${DEL[$sc]:-}")) | ${M[ACC,$sc]} ($(range "${ACC[$sc]:-}")) | ${M[GW,$sc]} | ${M[PG,$sc]} | ${M[HA,$sc]} | ${M[TOT,$sc]} | ${M[BUSY,$sc]} |"
    done
    echo
    has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
    if has embedded && has pg; then
        echo "- PostgreSQL / embedded, one instance: delivered $(ratio "${M[DEL,pg]}" "${M[DEL,embedded]}"),"
        echo "  accepted $(ratio "${M[ACC,pg]}" "${M[ACC,embedded]}"); CPU per message (gateway + PostgreSQL) $(ratio "${M[TOT,pg]}" "${M[TOT,embedded]}"),"
        echo "  the gateway's own $(ratio "${M[GW,pg]}" "${M[GW,embedded]}")."
    fi
    if has pg-haproxy && has pg-2-haproxy; then
        echo "- two instances / one, both via HAProxy: delivered $(ratio "${M[DEL,pg-2-haproxy]}" "${M[DEL,pg-haproxy]}"),"
        echo "  accepted $(ratio "${M[ACC,pg-2-haproxy]}" "${M[ACC,pg-haproxy]}"); CPU per message (all) $(ratio "${M[TOT,pg-2-haproxy]}" "${M[TOT,pg-haproxy]}")."
    fi
    if has pg && has pg-2-haproxy; then
        echo "- two instances via HAProxy / one direct: delivered $(ratio "${M[DEL,pg-2-haproxy]}" "${M[DEL,pg]}")."
    fi
    if has pg && has pg-haproxy; then
        echo "- HAProxy's cost, one instance: delivered $(ratio "${M[DEL,pg-haproxy]}" "${M[DEL,pg]}") of direct."
    fi
    waits=""
    for sc in $SCENARIOS; do
        files=("$OUT"/waits-"$sc"-[0-9]*.txt)
        [ -f "${files[0]}" ] || continue
        # Lock waits with the statement they hold up; others by event only
        top=$(cat "${files[@]}" | grep '|' | awk -F'|' '
            { k = ($1 ~ /^Lock:/) ? $1 " in " substr($2, 1, 40) "..." : $1; n[k]++; t++ }
            END { for (k in n) printf "%d\t%s\n", n[k], k; print t "\tTOTAL" }' | sort -rn)
        total=$(awk -F'\t' '$2 == "TOTAL" { print $1 }' <<<"$top")
        [ "${total:-0}" -gt 0 ] || continue
        waits+="| $(label "$sc") | $(grep -v 'TOTAL$' <<<"$top" | head -4 |
            awk -F'\t' -v t="$total" '{ printf "%s%s %.0f %%", (NR > 1 ? "; " : ""), $2, 100 * $1 / t }') |"$'\n'
    done
    if [ -n "$waits" ]; then
        echo
        echo "What PostgreSQL's busy sessions were doing (pg_stat_activity every 0.5 s; share of"
        echo "samples; ClientRead = waiting inside a transaction for the gateway's next statement;"
        echo "CPU = no wait event):"
        echo
        echo "| scenario | top wait events |"
        echo "|---|---|"
        printf '%s' "$waits"
    fi
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
