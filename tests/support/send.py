#!/usr/bin/python3
"""Submit one message (or --count copies) with smtplib, as an application would.

Prints one JSON object on stdout:
  {"results": [{"code": 250, "reply": "...", "queue_id": "..."}], "error": null}
A reply other than 250 to MAIL/RCPT/DATA is reported in "results" (with the
"stage" it happened at) rather than raised; an exception ends the run with
"error" set and exit code 1.
"""

import argparse
import json
import smtplib
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--cafile", help="verify the gateway against this CA (else no verification)")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--mail-from", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--message", required=True, help="file with the raw message (CRLF line ends)")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()

    with open(args.message, "rb") as f:
        message = f.read()

    out = {"results": [], "error": None}
    try:
        with smtplib.SMTP(args.host, args.port, local_hostname="client.test", timeout=args.timeout) as s:
            s.ehlo()
            if args.starttls:
                if args.cafile:
                    ctx = ssl.create_default_context(cafile=args.cafile)
                else:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                s.starttls(context=ctx)
                s.ehlo()
            if args.user is not None:
                s.login(args.user, args.password)
            for _ in range(args.count):
                out["results"].append(send_one(s, args.mail_from, args.to, message))
    except Exception as e:  # reported to the test, which decides
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
    sys.exit(1 if out["error"] else 0)


def send_one(s, mail_from, rcpts, message):
    code, resp = s.mail(mail_from, ["BODY=8BITMIME"])
    if code != 250:
        s.rset()
        return {"stage": "MAIL", "code": code, "reply": resp.decode(errors="replace")}
    accepted = 0
    for r in rcpts:
        code, resp = s.rcpt(r)
        if code == 250:
            accepted += 1
        else:
            last = {"stage": "RCPT", "code": code, "reply": resp.decode(errors="replace")}
    if accepted == 0:
        s.rset()
        return last
    code, resp = s.data(message)
    text = resp.decode(errors="replace")
    result = {"stage": "DATA", "code": code, "reply": text}
    if code == 250:
        result["queue_id"] = text.split()[-1] if text.split() else ""
    return result


if __name__ == "__main__":
    main()
