#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, one after the other, and exits
# non-zero if any of them crashed (panic, failed check, timeout, OOM),
# printing the path of each crashing input.
#
#   fuzz/run.sh SECONDS                   all targets
#   FUZZ_TARGETS="mime pii" fuzz/run.sh 600
#   FUZZ_FLAGS="-dict=..." fuzz/run.sh 60  extra libFuzzer flags
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --version 0.13.1 --locked`).
# Builds all targets in one cargo invocation (no sanitizer: the code is
# safe Rust; release build, with debug assertions and overflow checks in
# the gateway's code only, see fuzz/Cargo.toml), seeds the corpora
# (fuzz/seed.sh), then runs each binary with one job. The corpora in
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

failed=()
for t in $TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
    log="artifacts/$t.log"
    echo "=== $t: ${SECONDS_PER_TARGET}s (log: fuzz/$log)"
    status=0
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    "$BIN/$t" "corpus/$t" "${dict[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout="$PER_INPUT_TIMEOUT" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 ${FUZZ_FLAGS:-} \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+' "$log" | tail -1 || true)
    echo "    ${runs:-?} executions, ${cov:-no coverage line}, exit $status"
    if [ "$status" != 0 ]; then
        failed+=("$t")
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 | sed 's/^/    /' || true
        for f in $(sed -n 's/^.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "    crashing input: fuzz/$f"
        done
    fi
done

if [ "${#failed[@]}" != 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: no crash in ${SECONDS_PER_TARGET}s per target"
