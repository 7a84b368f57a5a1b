#!/usr/bin/env python3
"""Memory under password checks (SPEC section 12: idle RSS <= 30 MB, also
after bursts of logins).  Driven by bench/logins.sh; two sub-commands:

    logins.py sink PORT DIR
        A minimal SMTP server standing in for the upstream: accepts every
        message and writes it to DIR/N.eml (the link token is read from there).

    logins.py measure --pid PID --smtp-port P --trusted-port T --link-port L
                      --user U --password PW --mail-dir DIR [--seq 100]
                      [--par 40] [--idle 60] [--limit-mb 30]
        Phases, each against the running gateway PID:
          smtp-seq: SEQ logins one after another (AUTH PLAIN after STARTTLS),
                    alternately right and wrong passwords;
          smtp-par: PAR logins at once (half right, half wrong);
          link-seq / link-par: the same against the link service, with the
                    password of a protected document (a message with a PDF and
                    X-Schleuse-Link-Password is relayed first to learn the link).
        Before each phase the peak (VmHWM) is reset through
        /proc/PID/clear_refs; after it, RSS is sampled every second for up to
        IDLE seconds (until it is back under LIMIT_MB and stays there for 5 s).
        Prints one JSON object.

Only the standard library is used.
"""

import argparse
import asyncio
import base64
import json
import os
import re
import smtplib
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


# ---------------------------------------------------------------------------
# the upstream stand-in

async def sink_session(reader, writer, out_dir, counter):
    def send(line):
        writer.write(line.encode() + b"\r\n")

    send("220 sink ESMTP")
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            break
        verb = line.decode("latin-1").strip().split(" ")[0].upper()
        if verb in ("EHLO", "HELO"):
            send("250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 100000000")
        elif verb == "DATA":
            send("354 go on")
            await writer.drain()
            lines = []
            while True:
                data = await reader.readline()
                if not data or data == b".\r\n":
                    break
                lines.append(data[1:] if data.startswith(b"..") else data)
            counter[0] += 1
            path = os.path.join(out_dir, f"{counter[0]}.eml")
            with open(path + ".tmp", "wb") as f:
                f.write(b"".join(lines))
            os.rename(path + ".tmp", path)
            send("250 2.0.0 stored")
        elif verb == "QUIT":
            send("221 bye")
            await writer.drain()
            break
        else:
            send("250 ok")
        await writer.drain()
    writer.close()


def run_sink(port, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    counter = [0]

    async def main():
        server = await asyncio.start_server(
            lambda r, w: sink_session(r, w, out_dir, counter), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------------------
# memory readings

def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pid):
    return status_kb(pid, "VmRSS") / 1024


def reset_peak(pid):
    # "5" resets VmHWM to the current RSS (Linux >= 4.0, same user or root).
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


class Sampler:
    """Reads VmRSS every 20 ms during a phase: VmHWM gives the true peak, the
    samples show when it happened and that it is no artefact."""

    def __init__(self, pid):
        self.pid, self.max_mb, self.stop = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.max_mb = max(self.max_mb, rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def idle(pid, seconds, limit_mb):
    """RSS every second until it has been <= limit_mb for 5 s, at most
    `seconds`; returns (seconds until under the limit or None, last RSS)."""
    t0, under_since, last = time.monotonic(), None, rss_mb(pid)
    while time.monotonic() - t0 < seconds:
        last = rss_mb(pid)
        now = time.monotonic() - t0
        if last <= limit_mb:
            if under_since is None:
                under_since = now
            if now - under_since >= 5:
                break
        else:
            under_since = None
        time.sleep(1)
    return (None if under_since is None else round(under_since, 1)), round(last, 1)


# ---------------------------------------------------------------------------
# clients

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


def smtp_login(port, user, password):
    """One session: EHLO, STARTTLS, EHLO, AUTH PLAIN (exactly one attempt),
    QUIT. Returns the AUTH reply code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as c:
        c.ehlo("bench.example")
        c.starttls(context=TLS)
        c.ehlo("bench.example")
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        code, _ = c.docmd("AUTH", "PLAIN " + blob)
        return code


def link_try(port, token, password):
    body = urllib.parse.urlencode({"password": password}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/d/{token}", data=body)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def parallel(n, fn):
    """Runs fn(i) for i in 0..n in n threads released at once."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            results[i] = f"error: {e}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def tally(results):
    out = {}
    for r in results:
        out[str(r)] = out.get(str(r), 0) + 1
    return out


def phase(name, pid, run, idle_s, limit_mb):
    before = rss_mb(pid)
    reset_peak(pid)
    t0 = time.monotonic()
    with Sampler(pid) as s:
        results = run()
    secs = time.monotonic() - t0
    peak = status_kb(pid, "VmHWM") / 1024
    after = rss_mb(pid)
    back_after, idle_rss = idle(pid, idle_s, limit_mb)
    r = {
        "phase": name,
        "seconds": round(secs, 1),
        "replies": tally(results),
        "rss_before_mb": round(before, 1),
        "peak_mb": round(max(peak, s.max_mb), 1),
        "rss_after_mb": round(after, 1),
        "back_under_limit_after_s": back_after,
        "rss_idle_mb": idle_rss,
    }
    print(json.dumps(r), file=sys.stderr)
    return r


PDF = (b"%PDF-1.4\n% schleuse login bench\n1 0 obj << /Type /Catalog >> endobj\n"
       b"trailer << /Root 1 0 R >>\n%%EOF\n") * 50


def protected_link(trusted_port, mail_dir, link_password, link_port):
    pdf_b64 = base64.encodebytes(PDF).decode().replace("\n", "\r\n")
    msg = (
        "From: Bench <bench@bench.example>\r\n"
        "To: <sink@sink.example>\r\n"
        "Subject: login bench document\r\n"
        f"Message-ID: <logins.{time.time_ns()}@bench.example>\r\n"
        f"X-Schleuse-Link-Password: {link_password}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nanbei.\r\n"
        "--b\r\nContent-Type: application/pdf; name=\"bescheid.pdf\"\r\n"
        "Content-Disposition: attachment; filename=\"bescheid.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{pdf_b64}\r\n--b--\r\n"
    )
    before = set(os.listdir(mail_dir))
    with smtplib.SMTP("127.0.0.1", trusted_port, timeout=60) as c:
        c.sendmail("bench@bench.example", ["sink@sink.example"], msg.encode())
    deadline = time.monotonic() + 60
    pattern = re.compile(rf"127\.0\.0\.1:{link_port}/d/([A-Za-z0-9_-]{{20,100}})")
    while time.monotonic() < deadline:
        for name in sorted(set(os.listdir(mail_dir)) - before):
            if name.endswith(".eml"):
                with open(os.path.join(mail_dir, name), "rb") as f:
                    m = pattern.search(f.read().decode("latin-1"))
                if m:
                    return m.group(1)
        time.sleep(0.1)
    raise SystemExit("no relayed message with a link within 60 s")


def measure(a):
    wrong = a.password + "-falsch"
    link_pw = "Sommer-2026-bench"
    pick = lambda i, right: right if i % 2 == 0 else wrong  # noqa: E731
    out = {"pid": a.pid, "rss_start_mb": round(rss_mb(a.pid), 1), "phases": []}

    def smtp_seq():
        return [smtp_login(a.smtp_port, a.user, pick(i, a.password)) for i in range(a.seq)]

    def smtp_par():
        return parallel(a.par, lambda i: smtp_login(a.smtp_port, a.user, pick(i, a.password)))

    out["phases"].append(phase("smtp-seq", a.pid, smtp_seq, a.idle, a.limit_mb))
    out["phases"].append(phase("smtp-par", a.pid, smtp_par, a.idle, a.limit_mb))

    token = protected_link(a.trusted_port, a.mail_dir, link_pw, a.link_port)
    lpick = lambda i: link_pw if i % 2 == 0 else link_pw + "-falsch"  # noqa: E731

    def link_seq():
        return [link_try(a.link_port, token, lpick(i)) for i in range(a.seq)]

    def link_par():
        return parallel(a.par, lambda i: link_try(a.link_port, token, lpick(i)))

    out["phases"].append(phase("link-seq", a.pid, link_seq, a.idle, a.limit_mb))
    out["phases"].append(phase("link-par", a.pid, link_par, a.idle, a.limit_mb))
    out["peak_mb"] = round(status_kb(a.pid, "VmHWM") / 1024, 1)
    out["rss_end_mb"] = round(rss_mb(a.pid), 1)
    out["max_phase_peak_mb"] = max(p["peak_mb"] for p in out["phases"])
    out["max_idle_mb"] = max(p["rss_idle_mb"] for p in out["phases"])
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("port", type=int)
    s.add_argument("dir")
    m = sub.add_parser("measure")
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--smtp-port", type=int, required=True)
    m.add_argument("--trusted-port", type=int, required=True)
    m.add_argument("--link-port", type=int, required=True)
    m.add_argument("--user", required=True)
    m.add_argument("--password", required=True)
    m.add_argument("--mail-dir", required=True)
    m.add_argument("--seq", type=int, default=100)
    m.add_argument("--par", type=int, default=40)
    m.add_argument("--idle", type=float, default=60)
    m.add_argument("--limit-mb", type=float, default=30)
    a = ap.parse_args()
    if a.cmd == "sink":
        run_sink(a.port, a.dir)
    else:
        measure(a)


if __name__ == "__main__":
    main()
