#!/usr/bin/env bash
# DKIM signing cost (the issue's question): µs per message through the
# gateway's signer (schleuse::dkim::Signer: From: lookup, relaxed/relaxed
# canonicalization, SHA-256 body and header hashes, one private-key operation
# per signature) for Ed25519 and RSA-2048 on 10 KB and 1 MB messages, next to
# the bare private-key operation as `openssl speed` measures it.
#
#   bash bench/dkim.sh              (from anywhere)
#
# Knobs (environment): SECONDS_PER_CASE=2   SKIP_BUILD=1
# Needs: cargo, openssl.  Results: bench/out/dkim.md (also printed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/bench/out
SECS=${SECONDS_PER_CASE:-2}
mkdir -p "$OUT"
cd "$ROOT"

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --example dkim_bench >&2
fi

SIGNER=$(target/release/examples/dkim_bench --seconds "$SECS")
SPEED=$(openssl speed -seconds "$SECS" ed25519 rsa2048 2>/dev/null)

# "rsa 2048 bits 0.000736s 0.000022s   1358.4  45678.9"   -> sign/s is field 6
# " 253 bits EdDSA (Ed25519)   0.0000s   0.0001s  23456.0   8765.4" -> NF-1
RSA_SIGN=$(awk '/^rsa 2048 bits/ && $4 ~ /s$/ {print $6; exit}' <<<"$SPEED")
ED_SIGN=$(awk '/\(Ed25519\)/ && $(NF-2) ~ /s$/ {print $(NF-1); exit}' <<<"$SPEED")
us() { awk -v r="$1" 'BEGIN { if (r > 0) printf "%.1f", 1e6 / r; else print "?" }'; }

{
    echo "# DKIM signing cost ($(date -u +%F), $(nproc) cores, $(uname -m))"
    echo
    echo "## schleuse::dkim::Signer (release build, one thread, ${SECS} s per case)"
    echo
    echo "$SIGNER"
    echo
    echo "## openssl speed -seconds $SECS ed25519 rsa2048 ($(openssl version | cut -d' ' -f1-2))"
    echo
    echo "| operation | signs/s | µs/sign |"
    echo "|---|---:|---:|"
    echo "| Ed25519 sign | ${ED_SIGN:-?} | $(us "${ED_SIGN:-0}") |"
    echo "| RSA-2048 sign | ${RSA_SIGN:-?} | $(us "${RSA_SIGN:-0}") |"
    echo
    echo "The difference between a row above and the bare signature below it is"
    echo "the per-message work: parsing From:, canonicalizing and hashing the body"
    echo "(grows with the size) and the signed header fields."
} | tee "$OUT/dkim.md"
