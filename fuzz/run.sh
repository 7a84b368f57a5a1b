#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (one after the other unless
# FUZZ_PARALLEL says otherwise), and exits
# non-zero if any of them crashed (panic, failed check, timeout, OOM),
# printing the path of each crashing input.
#
#   fuzz/run.sh SECONDS                   all targets
#   FUZZ_TARGETS="mime pii" fuzz/run.sh 600
#   FUZZ_FLAGS="-dict=..." fuzz/run.sh 60  extra libFuzzer flags
#   FUZZ_PARALLEL=2 fuzz/run.sh 30        two targets at a time (CI)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --version 0.13.1 --locked`).
# Builds all targets in one cargo invocation (no sanitizer: the code is
# safe Rust; release build, with debug assertions and overflow checks in
# the gateway's code only, see fuzz/Cargo.toml), seeds the corpora
# (fuzz/seed.sh), then runs each target as one libFuzzer process (one job,
# one worker), by default one target after the other. The corpora in
# fuzz/corpus/ keep what the fuzzer finds; crashes go to fuzz/artifacts/.
# Reproduce one: fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE
set -euo pipefail
SECONDS_PER_TARGET=${1:?usage: fuzz/run.sh SECONDS}
cd "$(dirname "${BASH_SOURCE[0]}")"

ALL="session mime pii mailjet proxy config links"
TARGETS=${FUZZ_TARGETS:-$ALL}
# Timeout per input: the slowest honest input (a login with argon2, a
# 64 KiB message) takes well under a second even on a loaded machine.
PER_INPUT_TIMEOUT=${FUZZ_TIMEOUT:-30}

command -v cargo-fuzz >/dev/null || {
    echo "fuzz/run.sh: cargo-fuzz missing (cargo install cargo-fuzz --version 0.13.1 --locked)" >&2
    exit 2
}

# 16 codegen units instead of cargo-fuzz's 1: builds in a fraction of the
# time for a few per cent fewer executions per second.
BUILD=(cargo fuzz build -O -s none --codegen-units 16)
echo "fuzz/run.sh: ${BUILD[*]}"
(cd .. && "${BUILD[@]}")
BIN=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release

./seed.sh

# One target; prints its summary and leaves its exit status in
# artifacts/TARGET.status.
run_target() {
    local t=$1 log="artifacts/$1.log" status=0 dict=() runs cov f
    mkdir -p "corpus/$t" "artifacts/$t"
    [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    "$BIN/$t" "corpus/$t" "${dict[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout="$PER_INPUT_TIMEOUT" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 ${FUZZ_FLAGS:-} \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+' "$log" | tail -1 || true)
    # One write, so parallel targets do not interleave their lines.
    local summary="=== $t: ${SECONDS_PER_TARGET}s, ${runs:-?} executions, ${cov:-no coverage line}, exit $status (log: fuzz/$log)"
    if [ "$status" != 0 ]; then
        summary+=$'\n'$(grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 | sed 's/^/    /' || true)
        for f in $(sed -n 's/^.*Test unit written to \(.*\)$/\1/p' "$log"); do
            summary+=$'\n'"    crashing input: fuzz/$f"
        done
    fi
    printf '%s\n' "$summary"
    echo "$status" >"artifacts/$t.status"
}

PARALLEL=${FUZZ_PARALLEL:-1}
running=0
for t in $TARGETS; do
    if [ "$running" -ge "$PARALLEL" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    rm -f "artifacts/$t.status"
    run_target "$t" &
    running=$((running + 1))
done
wait

failed=()
for t in $TARGETS; do
    [ "$(cat "artifacts/$t.status" 2>/dev/null)" = 0 ] || failed+=("$t")
done
if [ "${#failed[@]}" != 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: no crash in ${SECONDS_PER_TARGET}s per target"
