#!/usr/bin/env python3
"""Send N messages with one PDF attachment each; print throughput as JSON.

    attachments.py HOST PORT [--messages 200] [--clients 4] [--size 1000000]

Used by bench/attachments.sh against a trusted-network listener (no AUTH).
Every message is multipart/mixed: a short text/plain + text/html alternative
and one application/pdf attachment (random bytes behind a "%PDF-1.7" header,
base64 with 76-character CRLF lines) sized so the whole message is about
--size bytes (1 MB: ~740 KB of document).  The messages are the same for the
same --seed (message i uses seed + i), so two runs send identical bytes.

Each client is a separate process with one SMTP session; all payloads are
built and the sessions opened before the clock starts.  elapsed_s runs from
the first MAIL FROM to the last "250" after DATA (the gateway has stored the
message durably by then).  start_epoch is time.time() at that first send, for
the caller's end-to-end clock.  Only the standard library is used.
"""

import argparse
import base64
import json
import multiprocessing
import random
import smtplib
import time

BOUNDARY_OUT = "==bench-outer=="
BOUNDARY_ALT = "==bench-alt=="


def head(n: int, sender: str, rcpt: str) -> bytes:
    return (
        f"From: Sachbearbeitung <{sender}>\r\n"
        f"To: Eltern <{rcpt}>\r\n"
        f"Subject: Bescheid {n}\r\n"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n"
        f"Message-ID: <attachments.{n}.{time.time_ns()}@bench.example>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{BOUNDARY_OUT}"\r\n'
        "\r\n"
        "This is a multi-part message in MIME format.\r\n"
        f"--{BOUNDARY_OUT}\r\n"
        f'Content-Type: multipart/alternative; boundary="{BOUNDARY_ALT}"\r\n'
        "\r\n"
        f"--{BOUNDARY_ALT}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Sehr geehrte Eltern,\r\n\r\n"
        "anbei erhalten Sie den Bescheid zur Sch\u00fclerbef\u00f6rderung.\r\n\r\n"
        "Mit freundlichen Gr\u00fc\u00dfen\r\nIhr Landkreis\r\n"
        f"--{BOUNDARY_ALT}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "<html><body><p>Sehr geehrte Eltern,</p>\r\n"
        "<p>anbei erhalten Sie den Bescheid zur Sch&uuml;lerbef&ouml;rderung.</p>\r\n"
        "<p>Mit freundlichen Gr&uuml;&szlig;en<br>Ihr Landkreis</p></body></html>\r\n"
        f"--{BOUNDARY_ALT}--\r\n"
        "\r\n"
        f"--{BOUNDARY_OUT}\r\n"
        f'Content-Type: application/pdf; name="Bescheid-{n}.pdf"\r\n'
        f'Content-Disposition: attachment; filename="Bescheid-{n}.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
    ).encode()


def doc_size(size: int) -> int:
    """Decoded bytes so that the encoded message is about `size` bytes."""
    fixed = len(head(0, "bench@bench.example", "sink@sink.example")) + 64
    # base64: 4 chars per 3 bytes, plus CRLF per 76 chars (57 bytes)
    per_byte = 4 / 3 + 2 / 57
    return max(1, int((size - fixed) / per_byte))


def build_message(n: int, size: int, seed: int, sender: str, rcpt: str) -> bytes:
    pdf = bytearray(random.Random(seed + n).randbytes(doc_size(size)))
    pdf[:9] = b"%PDF-1.7\n"
    body = base64.encodebytes(bytes(pdf)).replace(b"\n", b"\r\n")  # 76-char lines
    return head(n, sender, rcpt) + body + f"--{BOUNDARY_OUT}--\r\n".encode()


def worker(args, count, first, start_barrier, results):
    payloads = [
        build_message(i, args.size, args.seed, args.sender, args.rcpt) + b".\r\n"
        for i in range(first, first + count)
    ]
    sent_bytes = sum(len(p) - 3 for p in payloads)
    errors = []
    try:
        conn = smtplib.SMTP(args.host, args.port, timeout=120)
        conn.ehlo("attachments.bench.example")
    except (OSError, smtplib.SMTPException) as e:
        start_barrier.wait()
        results.put((0, [f"connect: {e}"], time.perf_counter(), sent_bytes))
        return
    start_barrier.wait()
    ok = 0
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
            code, msg = conn.getreply()
            if code != 250:
                raise smtplib.SMTPException(f"end of DATA: {code} {msg!r}")
            ok += 1
        except (OSError, smtplib.SMTPException) as e:
            errors.append(str(e))
            try:
                conn.rset()
            except (OSError, smtplib.SMTPException):
                break
    end = time.perf_counter()
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        pass
    results.put((ok, errors, end, sent_bytes))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4, help="concurrent sessions (processes)")
    ap.add_argument("--size", type=int, default=1_000_000, help="bytes per message")
    ap.add_argument("--seed", type=int, default=4711)
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
    start_epoch = time.time()
    ok, errors, last, sent = 0, [], start, 0
    for _ in procs:
        n, err, end, b = results.get()
        ok += n
        errors.extend(err)
        last = max(last, end)
        sent += b
    for p in procs:
        p.join()
    elapsed = last - start
    print(json.dumps({
        "count": ok,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
        "mb_per_s": round(sent / 1e6 / elapsed, 1) if elapsed > 0 else None,
        "start_epoch": start_epoch,
        "message_bytes": sent // max(1, args.messages),
        "document_bytes": doc_size(args.size),
    }))


if __name__ == "__main__":
    main()
