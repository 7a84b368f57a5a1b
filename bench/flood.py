#!/usr/bin/env python3
"""Time to greeting for a new client while idle connections hold the slots.

    flood.py PORT [--addresses 10] [--per-address 50] [--probes 20]

Opens ADDRESSES x PER_ADDRESS connections to 127.0.0.1:PORT, from the
loopback sources 127.0.0.2, 127.0.0.3, ..., reads each greeting and then
never sends a byte (clients that never log in). Then, from 127.0.0.200,
PROBES new clients one after another: connect, read the greeting, EHLO,
QUIT. For each probe the clock runs from connect() to the greeting's last
byte. Prints one JSON object: how the idle connections were greeted, how
many were still open when the probes ran, how many got a 421 since, and
the probes' replies and latencies (p50/p90/max in ms).
Only the standard library is used.
"""

import argparse
import json
import math
import select
import socket
import time


def read_line(sock, timeout):
    """The first reply line (without CRLF), '' on EOF, None on timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(1)
            if not chunk:
                return data.decode("latin-1")
            data += chunk
    except socket.timeout:
        return None
    except OSError:
        return data.decode("latin-1")
    return data[:-2].decode("latin-1")


def connect(source, port, timeout=10):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return round(values[k], 1)


def closed_or_answered(socks):
    """Idle sockets the gateway has written to or closed since."""
    gone = []
    for i in range(0, len(socks), 200):
        batch = socks[i : i + 200]
        readable, _, _ = select.select(batch, [], [], 0)
        gone.extend(readable)
    return gone


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--addresses", type=int, default=10)
    ap.add_argument("--per-address", type=int, default=50)
    ap.add_argument("--probes", type=int, default=20)
    args = ap.parse_args()

    idle, greetings = [], {}
    started = time.monotonic()
    for a in range(args.addresses):
        source = f"127.0.0.{a + 2}"
        for _ in range(args.per_address):
            try:
                sock = connect(source, args.port)
            except OSError as e:
                greetings["connect error"] = greetings.get("connect error", 0) + 1
                continue
            line = read_line(sock, 30)
            key = "timeout" if line is None else (line[:9] if line else "closed")
            greetings[key] = greetings.get(key, 0) + 1
            if line and line.startswith("220"):
                idle.append(sock)
            else:
                sock.close()
    opened_in = time.monotonic() - started
    gone_before = closed_or_answered(idle)
    open_at_probe = len(idle) - len(gone_before)

    probes, replies = [], {}
    for _ in range(args.probes):
        t0 = time.monotonic()
        try:
            sock = connect("127.0.0.200", args.port, timeout=60)
            line = read_line(sock, 60)
        except OSError as e:
            line = f"error {e}"
            sock = None
        elapsed_ms = (time.monotonic() - t0) * 1000
        key = "timeout" if line is None else (line[:9] if line else "closed")
        replies[key] = replies.get(key, 0) + 1
        if line and line.startswith("220"):
            probes.append(elapsed_ms)
            sock.sendall(b"EHLO probe.bench.example\r\n")
            while True:
                ehlo = read_line(sock, 30)
                if not ehlo or not ehlo.startswith("250-"):
                    break
            sock.sendall(b"QUIT\r\n")
            read_line(sock, 10)
        if sock:
            sock.close()

    shed = 0
    for sock in closed_or_answered(idle):
        line = read_line(sock, 1)
        if line and line.startswith("421"):
            shed += 1
    for sock in idle:
        sock.close()

    print(
        json.dumps(
            {
                "idle_attempted": args.addresses * args.per_address,
                "idle_greetings": greetings,
                "idle_opened_in_s": round(opened_in, 2),
                "idle_open_at_probe": open_at_probe,
                "idle_421_total": shed,
                "probe_replies": replies,
                "probe_greeting_ms_p50": percentile(probes, 50),
                "probe_greeting_ms_p90": percentile(probes, 90),
                "probe_greeting_ms_max": percentile(probes, 100),
            }
        )
    )


if __name__ == "__main__":
    main()
