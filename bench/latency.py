#!/usr/bin/env python3
"""End-of-DATA -> 250 latency under concurrent load (SPEC section 12).

    latency.py HOST PORT [--messages 500] [--clients 10] [--size 10240]

Each client is a separate process (no GIL between them, so a client's own
scheduling does not inflate the numbers), keeps one SMTP session (no AUTH:
point it at a trusted-network listener) and sends its share of the messages
back to back; all payloads are built before the clock starts.  For every message
the clock starts when the last byte of "<CRLF>.<CRLF>" has been handed to the
kernel and stops when the server's reply has been read, i.e. it measures
exactly the time the server needs to store the message durably and answer.
Prints one JSON object: count, errors, elapsed, p50/p90/p99/max in ms.
Only the standard library is used (smtplib), any python3 will do.
"""

import argparse
import json
import math
import multiprocessing
import smtplib
import time


def build_message(n: int, size: int, sender: str, rcpt: str) -> bytes:
    head = (
        f"From: Bench <{sender}>\r\n"
        f"To: <{rcpt}>\r\n"
        f"Subject: latency probe {n}\r\n"
        f"Message-ID: <latency.{n}.{time.time_ns()}@bench.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, size // len(line))
    return head + body


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    # nearest rank
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def worker(args, count, first, start_barrier, results):
    payloads = [
        build_message(i, args.size, args.sender, args.rcpt) + b".\r\n"
        for i in range(first, first + count)
    ]
    latencies, errors = [], []
    try:
        conn = smtplib.SMTP(args.host, args.port, timeout=60)
        conn.ehlo("latency.bench.example")
    except (OSError, smtplib.SMTPException) as e:
        start_barrier.wait()
        results.put(([], [f"connect: {e}"]))
        return
    start_barrier.wait()
    for payload in payloads:
        try:
            code, msg = conn.mail(args.sender)
            if code != 250:
                raise smtplib.SMTPException(f"MAIL: {code} {msg!r}")
            code, msg = conn.rcpt(args.rcpt)
            if code not in (250, 251):
                raise smtplib.SMTPException(f"RCPT: {code} {msg!r}")
            conn.putcmd("data")
            code, msg = conn.getreply()
            if code != 354:
                raise smtplib.SMTPException(f"DATA: {code} {msg!r}")
            conn.sock.sendall(payload)
            t0 = time.perf_counter()
            code, msg = conn.getreply()
            t1 = time.perf_counter()
            if code != 250:
                raise smtplib.SMTPException(f"end of DATA: {code} {msg!r}")
            latencies.append(t1 - t0)
        except (OSError, smtplib.SMTPException) as e:
            errors.append(str(e))
            try:
                conn.rset()
            except (OSError, smtplib.SMTPException):
                break
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        pass
    results.put((latencies, errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--clients", "--threads", type=int, default=10, help="concurrent clients (processes)")
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--sender", default="bench@bench.example")
    ap.add_argument("--rcpt", default="sink@sink.example")
    args = ap.parse_args()

    results = multiprocessing.Queue()
    start_barrier = multiprocessing.Barrier(args.clients + 1)
    per, extra = divmod(args.messages, args.clients)
    procs, first = [], 0
    for t in range(args.clients):
        n = per + (1 if t < extra else 0)
        procs.append(multiprocessing.Process(
            target=worker, args=(args, n, first, start_barrier, results)))
        first += n
    for p in procs:
        p.start()
    start_barrier.wait()
    start = time.perf_counter()
    latencies, errors = [], []
    for _ in procs:
        lat, err = results.get()
        latencies.extend(lat)
        errors.extend(err)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()

    lat = sorted(x * 1000 for x in latencies)
    ms = lambda v: None if v is None else round(v, 2)  # noqa: E731
    print(json.dumps({
        "count": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "elapsed_s": round(elapsed, 3),
        "p50_ms": ms(percentile(lat, 50)),
        "p90_ms": ms(percentile(lat, 90)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
    }))


if __name__ == "__main__":
    main()
