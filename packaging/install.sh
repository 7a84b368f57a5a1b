#!/usr/bin/env bash
# Installs schleuse on a Debian host (see README.md, "Running under systemd").
#
#   sudo packaging/install.sh             # build, install, create the user, daemon-reload
#   sudo packaging/install.sh --no-build  # install target/release/schleuse as it is
#
# Environment:
#   DESTDIR       stage everything under this directory instead of / (packaging,
#                 tests): no user is created and systemctl is not called.
#   SCHLEUSE_BIN  the binary to install (default: target/release/schleuse).
#
# The binary and the unit are always replaced; an existing
# /etc/schleuse/schleuse.toml or schleuse.env is never touched.
set -euo pipefail

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument '$arg' (usage: install.sh [--no-build])" ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
destdir="${DESTDIR:-}"
if [[ -n "$destdir" ]]; then
    [[ "$destdir" == /* ]] || die "DESTDIR must be an absolute path (got '$destdir')"
    destdir="${destdir%/}"
fi
bin="${SCHLEUSE_BIN:-$repo/target/release/schleuse}"
user=schleuse

if [[ -z "$destdir" && "$(id -u)" -ne 0 ]]; then
    die "run as root (or set DESTDIR to stage the files somewhere else)"
fi
[[ -f "$repo/conf/schleuse.toml" ]] || die "missing $repo/conf/schleuse.toml"
[[ -f "$repo/systemd/schleuse.service" ]] || die "missing $repo/systemd/schleuse.service"

if [[ "$build" -eq 1 ]]; then
    [[ -z "${SCHLEUSE_BIN:-}" ]] || die "SCHLEUSE_BIN is set: add --no-build to install that binary"
    command -v cargo >/dev/null || die "cargo not found (install Rust, or build elsewhere and use --no-build)"
    echo "building the release binary (cargo build --release)"
    (cd "$repo" && cargo build --release) || die "cargo build --release failed"
fi
[[ -f "$bin" && -x "$bin" ]] || die "no executable at $bin (build it first, or drop --no-build)"

# The system user (its home /var/lib/schleuse is the unit's StateDirectory).
if [[ -n "$destdir" ]]; then
    echo "DESTDIR set: would create the system user '$user' (useradd --system --home-dir /var/lib/schleuse --shell /usr/sbin/nologin $user)"
elif getent passwd "$user" >/dev/null; then
    echo "system user '$user' exists"
else
    useradd --system --home-dir /var/lib/schleuse --shell /usr/sbin/nologin "$user" ||
        die "useradd $user failed"
    echo "created the system user '$user'"
fi

install -d -m 0755 "$destdir/usr/local/bin" "$destdir/etc/schleuse" "$destdir/etc/systemd/system"
install -m 0755 "$bin" "$destdir/usr/local/bin/schleuse"
echo "installed $destdir/usr/local/bin/schleuse"

conf="$destdir/etc/schleuse/schleuse.toml"
if [[ -e "$conf" ]]; then
    echo "kept the existing $conf (compare with conf/schleuse.toml for new keys)"
else
    install -m 0640 "$repo/conf/schleuse.toml" "$conf"
    # The service reads it as group schleuse; under DESTDIR the group may not exist.
    [[ -n "$destdir" ]] || chgrp "$user" "$conf"
    echo "installed $conf"
fi

envfile="$destdir/etc/schleuse/schleuse.env"
if [[ -e "$envfile" ]]; then
    echo "kept the existing $envfile"
else
    install -m 0600 /dev/null "$envfile"
    echo "created $envfile (empty, mode 0600)"
fi

install -m 0644 "$repo/systemd/schleuse.service" "$destdir/etc/systemd/system/schleuse.service"
echo "installed $destdir/etc/systemd/system/schleuse.service"

if [[ -n "$destdir" ]]; then
    echo "DESTDIR set: skipping systemctl daemon-reload"
elif [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload || die "systemctl daemon-reload failed"
    echo "systemctl daemon-reload done"
else
    echo "systemd is not running: skipping systemctl daemon-reload"
fi

cat <<NEXT

Next steps:
  1. Edit /etc/schleuse/schleuse.toml: [server] hostname, and for Mailjet
     [upstream] mode = "relay" with the username/password lines uncommented.
  2. Put MJ_APIKEY_PUBLIC=... and MJ_APIKEY_PRIVATE=... into /etc/schleuse/schleuse.env.
  3. Start it (the unit runs check-config first):
       systemctl enable --now schleuse && journalctl -u schleuse -f
  4. Add accounts and a DKIM key, and publish the DNS records (SPF, DKIM,
     DMARC): see README.md, "Going live with Mailjet" and "Production".
NEXT
