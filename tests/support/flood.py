#!/usr/bin/python3
"""Submit --count messages with distinct Message-IDs, surviving gateway restarts.

Every message is retried (new connection, STARTTLS, AUTH) until the gateway
answers 250 to its DATA, or until --deadline seconds have passed. Each 250 is
appended at once to --acked as a line `<message-id> <queue-id>` (flushed), so
the test can watch progress and kill the gateway mid-run.

A message whose connection broke before its 250 may or may not have been
stored; it is sent again, which is how duplicates can arise (they are allowed
but counted by the test).

Exit 0 when every message was acknowledged; 2 on deadline; 3 on a 5xx reply.
"""

import argparse
import os
import smtplib
import ssl
import sys
import time


def log(*args):
    print("flood:", *args, file=sys.stderr, flush=True)


def connect(args):
    s = smtplib.SMTP(args.host, args.port, local_hostname="flood.test", timeout=10)
    try:
        s.ehlo()
        ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
        if ctx is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.ehlo()
        s.login(args.user, args.password)
    except BaseException:
        s.close()
        raise
    return s


def message(i, run, mail_from, rcpt):
    msgid = f"<flood-{run}-{i:04d}@example.com>"
    body = (
        f"From: {mail_from}\r\n"
        f"To: {rcpt}\r\n"
        f"Subject: flood {i}\r\n"
        f"Message-ID: {msgid}\r\n"
        "\r\n"
        f"message number {i}\r\n"
    ).encode()
    return msgid, body


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--mail-from", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--acked", required=True)
    p.add_argument("--deadline", type=float, default=180)
    args = p.parse_args()

    run = os.getpid()
    deadline = time.monotonic() + args.deadline
    s = None
    failures = 0
    with open(args.acked, "a") as acked:
        for i in range(args.count):
            msgid, body = message(i, run, args.mail_from, args.to)
            while True:
                if time.monotonic() > deadline:
                    log(f"deadline passed at message {i} after {failures} failed attempts")
                    sys.exit(2)
                try:
                    if s is None:
                        s = connect(args)
                    code, resp = s.mail(args.mail_from)
                    if code == 250:
                        code, resp = s.rcpt(args.to)
                    if code == 250:
                        code, resp = s.data(body)
                    if code == 250:
                        qid = resp.decode(errors="replace").split()[-1]
                        acked.write(f"{msgid} {qid}\n")
                        acked.flush()
                        break
                    if 500 <= code < 600:
                        log(f"message {i}: permanent failure {code} {resp!r}")
                        sys.exit(3)
                    log(f"message {i}: temporary failure {code} {resp!r}; retrying")
                    s.rset()
                except (OSError, smtplib.SMTPException) as e:
                    failures += 1
                    log(f"message {i}: {type(e).__name__}: {e}; reconnecting")
                    if s is not None:
                        try:
                            s.close()
                        except OSError:
                            pass
                    s = None
                    time.sleep(0.1)
    if s is not None:
        try:
            s.quit()
        except (OSError, smtplib.SMTPException):
            pass
    log(f"all {args.count} messages acknowledged ({failures} failed attempts)")


if __name__ == "__main__":
    main()
