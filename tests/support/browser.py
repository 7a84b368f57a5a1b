#!/usr/bin/python3
"""Drive headless Chromium through a link page of the link service.

Starts Chromium with a fresh profile under --work, speaks the Chrome DevTools
Protocol to it over a websocket (stdlib only: a minimal RFC 6455 client), and
does what a recipient does:

  1. opens the link page, records what it shows, takes a screenshot;
  2. types a wrong password into the field and clicks the button (mouse
     events), records the error page and takes a screenshot of it;
  3. types the right password, clicks, and waits for the download.

Prints one JSON object on stdout with what it saw (the test does the
asserting): "ok", "error", the page facts, HTTP statuses of the document
requests, the download, every request the page made, the cookies and console
messages. Exit code 1 with "error" set when the browser could not be driven.
Every wait is bounded by --timeout overall; Chromium is killed on the way
out, whatever happened (and by the kernel if this script is killed).
"""

import argparse
import base64
import ctypes
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Timeout(Exception):
    pass


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self, cap=None):
        left = self.end - time.monotonic()
        if cap is not None:
            left = min(left, cap)
        if left <= 0:
            raise Timeout("overall time limit reached")
        return left


class WebSocket:
    """Just enough of RFC 6455 for CDP: masked text frames out, any in."""

    def __init__(self, host, port, path, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.parts = []
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        if head.split(" ")[1:2] != ["101"]:
            raise ConnectionError(f"websocket handshake refused: {head!r}")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if f"sec-websocket-accept: {accept}".lower() not in head.lower():
            raise ConnectionError(f"bad Sec-WebSocket-Accept in {head!r}")

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("websocket closed by the browser")
        self.buf += chunk

    def _frame(self, opcode, payload):
        head = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head.append(0x80 | 126)
            head += struct.pack(">H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack(">Q", n)
        key = os.urandom(4)
        mask = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
        self.sock.sendall(bytes(head) + key + masked)

    def send(self, text):
        self._frame(0x1, text.encode())

    def _parse(self):
        """One complete frame from the buffer, or None (nothing consumed)."""
        b = self.buf
        if len(b) < 2:
            return None
        fin, opcode = b[0] & 0x80, b[0] & 0x0F
        masked, n, at = b[1] & 0x80, b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = struct.unpack(">Q", b[2:10])[0], 10
        key = b""
        if masked:
            if len(b) < at + 4:
                return None
            key, at = bytes(b[at : at + 4]), at + 4
        if len(b) < at + n:
            return None
        payload = bytes(b[at : at + n])
        del b[: at + n]
        if key:
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
        return fin, opcode, payload

    def recv(self, timeout):
        """The next text message; raises Timeout after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is None:
                left = end - time.monotonic()
                if left <= 0:
                    raise Timeout("no message from the browser in time")
                self.sock.settimeout(left)
                try:
                    self._fill()
                except socket.timeout:
                    raise Timeout("no message from the browser in time") from None
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x1, 0x2, 0x0):
                self.parts.append(payload)
                if fin:
                    text = b"".join(self.parts).decode()
                    self.parts = []
                    return text

    def close(self):
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class CdpError(Exception):
    pass


class Cdp:
    def __init__(self, ws, deadline):
        self.ws = ws
        self.deadline = deadline
        self.next_id = 0
        self.events = []  # everything, in order (for the report)
        self.seen = 0  # events before this index are consumed by waits

    def _read(self, cap):
        msg = json.loads(self.ws.recv(self.deadline.left(cap)))
        if "id" not in msg:
            self.events.append(msg)
        return msg

    def call(self, method, params=None, session=None, cap=20):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        end = time.monotonic() + cap
        while True:
            reply = self._read(max(0.01, end - time.monotonic()))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def mark(self):
        return len(self.events)

    def wait(self, what, pred, since, cap):
        """The first event at or after index `since` matching `pred`."""
        end = time.monotonic() + cap
        i = since
        while True:
            while i < len(self.events):
                if pred(self.events[i]):
                    return self.events[i]
                i += 1
            left = end - time.monotonic()
            if left <= 0:
                raise Timeout(f"no {what} within {cap}s")
            try:
                self._read(left)
            except Timeout:
                raise Timeout(f"no {what} within {cap}s") from None

    def evaluate(self, session, expression):
        r = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session,
        )
        if "exceptionDetails" in r:
            raise CdpError(f"script failed: {r['exceptionDetails']}")
        return r["result"].get("value")


PAGE_FACTS = r"""
(() => {
  const pw = document.querySelector('input[name=password]');
  const form = document.querySelector('form');
  const btn = document.querySelector('form button');
  const err = document.querySelector('[role=alert]');
  return {
    url: location.href,
    lang: document.documentElement.getAttribute('lang'),
    title: document.title,
    h1: [...document.querySelectorAll('h1')].map(e => e.textContent.trim()),
    text: document.body ? document.body.innerText : '',
    password_type: pw ? pw.type : null,
    password_labels: pw ? [...pw.labels].map(l => l.textContent.trim()) : [],
    password_required: pw ? pw.required : null,
    aria_invalid: pw ? pw.getAttribute('aria-invalid') : null,
    aria_describedby: pw ? pw.getAttribute('aria-describedby') : null,
    form_method: form ? form.method : null,
    form_action: form ? form.action : null,
    button: btn ? btn.textContent.trim() : null,
    button_type: btn ? btn.type : null,
    button_background: btn ? getComputedStyle(btn).backgroundColor : null,
    error: err ? err.textContent.trim() : null,
    error_id: err ? err.id : null,
    cookie: document.cookie,
    scripts: document.scripts.length,
    resources: performance.getEntriesByType('resource').map(e => e.name),
  };
})()
"""


def load_facts(cdp, session, since, url, method, what):
    """Waits for the page load after `since`; facts plus the document's status."""
    cdp.wait(
        f"load event ({what})",
        lambda e: e.get("sessionId") == session and e.get("method") == "Page.loadEventFired",
        since,
        20,
    )
    request_ids = {
        e["params"]["requestId"]
        for e in cdp.events[since:]
        if e.get("method") == "Network.requestWillBeSent"
        and e["params"]["request"]["url"] == url
        and e["params"]["request"]["method"] == method
    }
    status = next(
        (
            e["params"]["response"]["status"]
            for e in cdp.events[since:]
            if e.get("method") == "Network.responseReceived"
            and e["params"]["requestId"] in request_ids
        ),
        None,
    )
    return status, cdp.evaluate(session, PAGE_FACTS)


def screenshot(cdp, session, path):
    data = base64.b64decode(cdp.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return {"path": path, "bytes": len(data)}


def type_and_click(cdp, session, text):
    """Focuses the password field, types `text`, clicks the button."""
    focused = cdp.evaluate(
        session,
        "(() => { const p = document.querySelector('input[name=password]');"
        " p.value = ''; p.focus(); return document.activeElement === p; })()",
    )
    if not focused:
        raise CdpError("the password field cannot be focused")
    cdp.call("Input.insertText", {"text": text}, session)
    typed = cdp.evaluate(session, "document.querySelector('input[name=password]').value")
    if typed != text:
        raise CdpError(f"typing into the password field gave {typed!r}")
    box = cdp.evaluate(
        session,
        "(() => { const b = document.querySelector('form button');"
        " b.scrollIntoView({block: 'center'}); const r = b.getBoundingClientRect();"
        " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()",
    )
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        params = {"type": kind, "x": box["x"], "y": box["y"]}
        if kind != "mouseMoved":
            params.update(button="left", clickCount=1)
        cdp.call("Input.dispatchMouseEvent", params, session)


def pdeathsig():
    """In the child: SIGKILL when this script dies (before exec; kept across it)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def start_chromium(args, profile, log):
    cmd = [
        args.chromium,
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        "--password-store=basic",
        "--use-mock-keychain",
        "--lang=de-DE",
        "--window-size=1024,768",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        preexec_fn=pdeathsig,
    )


def devtools_endpoint(proc, profile, deadline):
    """(port, path) from <profile>/DevToolsActivePort, once Chromium wrote it."""
    path = os.path.join(profile, "DevToolsActivePort")
    end = time.monotonic() + deadline.left(45)
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited early ({proc.returncode})")
        try:
            with open(path) as f:
                lines = f.read().split("\n")
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/"):
                return int(lines[0]), lines[1].strip()
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise Timeout("chromium did not open its DevTools port in time")


def stop_chromium(proc):
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of the group (renderer, zygote, utility processes).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def run(args, out, deadline):
    profile = os.path.join(args.work, "chromium-profile")
    downloads = os.path.join(args.work, "downloads")
    os.makedirs(profile, exist_ok=True)
    os.makedirs(downloads, exist_ok=True)
    log_path = os.path.join(args.work, "chromium.log")
    out["chromium_log"] = log_path
    proc = None
    ws = None
    started = time.monotonic()
    with open(log_path, "ab") as log:
        try:
            proc = start_chromium(args, profile, log)
            port, path = devtools_endpoint(proc, profile, deadline)
            out["timings"]["devtools_ready"] = round(time.monotonic() - started, 2)
            ws = WebSocket("127.0.0.1", port, path, deadline.left(10))
            cdp = Cdp(ws, deadline)
            out["browser"] = cdp.call("Browser.getVersion").get("product")
            cdp.call(
                "Browser.setDownloadBehavior",
                {"behavior": "allow", "downloadPath": downloads, "eventsEnabled": True},
            )
            target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Network", "Runtime", "Log"):
                cdp.call(f"{domain}.enable", {}, session)

            # 1. The link page.
            since = cdp.mark()
            nav = cdp.call("Page.navigate", {"url": args.url}, session)
            if nav.get("errorText"):
                raise RuntimeError(f"navigation failed: {nav['errorText']}")
            status, facts = load_facts(cdp, session, since, args.url, "GET", "link page")
            out["page"] = {"status": status, **facts}
            out["screenshots"].append(screenshot(cdp, session, args.screenshot))
            out["timings"]["page_loaded"] = round(time.monotonic() - started, 2)

            # 2. A wrong password: the form comes back with the error.
            since = cdp.mark()
            type_and_click(cdp, session, args.wrong_password)
            status, facts = load_facts(cdp, session, since, args.url, "POST", "wrong password")
            out["wrong_password"] = {"status": status, **facts}
            stem, ext = os.path.splitext(args.screenshot)
            out["screenshots"].append(screenshot(cdp, session, f"{stem}-wrong-password{ext}"))

            # 3. The right password: a download, the page stays.
            since = cdp.mark()
            type_and_click(cdp, session, args.password)
            begin = cdp.wait(
                "Browser.downloadWillBegin",
                lambda e: e.get("method") == "Browser.downloadWillBegin",
                since,
                20,
            )["params"]
            done = cdp.wait(
                "finished download",
                lambda e: e.get("method") == "Browser.downloadProgress"
                and e["params"].get("guid") == begin["guid"]
                and e["params"].get("state") in ("completed", "canceled"),
                since,
                20,
            )["params"]
            post_ids = {
                e["params"]["requestId"]
                for e in cdp.events[since:]
                if e.get("method") == "Network.requestWillBeSent"
                and e["params"]["request"]["method"] == "POST"
            }
            statuses = [
                e["params"]["response"]["status"]
                for e in cdp.events[since:]
                if e.get("method") == "Network.responseReceived"
                and e["params"]["requestId"] in post_ids
            ]
            out["download"] = {
                "state": done["state"],
                "suggested_filename": begin.get("suggestedFilename"),
                "url": begin.get("url"),
                "path": os.path.join(downloads, begin.get("suggestedFilename") or ""),
                "received_bytes": done.get("receivedBytes"),
                "statuses": statuses,
                "files": sorted(os.listdir(downloads)),
            }
            out["timings"]["downloaded"] = round(time.monotonic() - started, 2)
            out["after_download"] = {
                "url": cdp.evaluate(session, "location.href"),
                "cookie": cdp.evaluate(session, "document.cookie"),
            }

            # What the browser did along the way.
            out["requests"] = [
                {
                    "url": e["params"]["request"]["url"],
                    "method": e["params"]["request"]["method"],
                    "type": e["params"].get("type"),
                }
                for e in cdp.events
                if e.get("method") == "Network.requestWillBeSent"
            ]
            try:
                cookies = cdp.call("Storage.getCookies", {})["cookies"]
            except CdpError:
                cookies = cdp.call("Network.getAllCookies", {}, session)["cookies"]
            out["cookies"] = [{"name": c["name"], "domain": c["domain"]} for c in cookies]
            out["console"] = [
                e["params"]["entry"]
                for e in cdp.events
                if e.get("method") == "Log.entryAdded"
            ] + [
                {"level": e["params"].get("type"), "args": e["params"].get("args")}
                for e in cdp.events
                if e.get("method") == "Runtime.consoleAPICalled"
            ] + [
                {"level": "exception", "details": e["params"].get("exceptionDetails")}
                for e in cdp.events
                if e.get("method") == "Runtime.exceptionThrown"
            ]
            out["ok"] = True
            try:
                cdp.call("Browser.close", {}, cap=3)
            except (Timeout, CdpError, ConnectionError, OSError):
                pass
        finally:
            if ws is not None:
                ws.close()
            stop_chromium(proc)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--url", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--wrong-password", required=True)
    p.add_argument("--work", required=True, help="profile, downloads and log go here")
    p.add_argument("--screenshot", required=True, help="PNG of the link page")
    p.add_argument("--timeout", type=float, default=45)
    args = p.parse_args()

    out = {"ok": False, "error": None, "timings": {}, "screenshots": []}
    deadline = Deadline(args.timeout)
    try:
        run(args, out, deadline)
    except Exception as e:  # reported, not raised: the test prints it
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        try:
            with open(out["chromium_log"], "rb") as f:
                out["chromium_log_tail"] = f.read()[-4000:].decode("utf-8", "replace")
        except (KeyError, OSError):
            pass
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
