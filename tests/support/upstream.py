#!/usr/bin/python3
"""A stand-in for the upstream relay (Mailjet) in schleuse's integration tests.

Run with Debian's /usr/bin/python3 (it has aiosmtpd). Listens on 127.0.0.1 only.

- STARTTLS with --cert/--key; AUTH PLAIN/LOGIN with --username/--password is
  then required, and only after TLS. `--no-tls` serves plain text (AUTH, if a
  username is given, is then allowed without TLS).
- Every accepted message is written to --out DIR as <n>.eml (the exact bytes
  received, dot-unstuffed) and <n>.json (mail_from, "" for the null
  sender <>, rcpt_tos, options). The
  .json is written last, via a rename, so a reader that sees <n>.json can
  trust <n>.eml to be complete.
- --fail-first N: the first N DATA transactions get `451 4.3.0`.
- --reject-rcpt SUBSTR: RCPT addresses containing SUBSTR get `550 5.1.1`.
- --control DIR: while DIR/greeting, DIR/auth, DIR/mail or DIR/rcpt exists,
  that step is answered with the file's first line (a whole SMTP reply,
  e.g. `550 5.7.1 sender not validated`) instead of going on; a refused
  greeting closes the connection. Tests create and remove the files to turn
  refusals on and off while both processes run.
- Prints `READY <port>` on stdout once listening; exits 0 on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import json
import time
import logging
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# aiosmtpd warns about its own deprecated Session.login_data on every AUTH.
logging.getLogger("mail.log").setLevel(logging.ERROR)


def log(*args):
    print("upstream:", *args, file=sys.stderr, flush=True)


def controlled(control_dir, step):
    """The reply the test wants for this step right now, if any."""
    if not control_dir:
        return None
    try:
        with open(os.path.join(control_dir, step)) as f:
            reply = f.readline().strip()
    except FileNotFoundError:
        return None
    return reply or None


class Recorder:
    def __init__(self, out_dir, fail_first, reject_rcpt, defer_rcpt=None, control=None):
        self.control = control
        self.out_dir = out_dir
        self.fail_left = fail_first
        self.reject_rcpt = reject_rcpt
        self.defer_rcpt = defer_rcpt
        self.count = 0
        self.data_attempts = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = controlled(self.control, "mail")
        if reply:
            log(f"MAIL FROM <{address}> refused (--control): {reply}")
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = controlled(self.control, "rcpt")
        if reply:
            log(f"RCPT <{address}> refused (--control): {reply}")
            return reply
        if self.reject_rcpt and self.reject_rcpt in address:
            log(f"RCPT {address} rejected (--reject-rcpt)")
            return "550 5.1.1 <%s>: mailbox unavailable (test rejection)" % address
        if self.defer_rcpt and self.defer_rcpt in address:
            return "451 4.2.0 <%s>: try again later (test deferral)" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_attempts += 1
        if self.fail_left > 0:
            self.fail_left -= 1
            log(f"DATA #{self.data_attempts} answered 451 (--fail-first)")
            return "451 4.3.0 temporary failure (test)"
        self.count += 1
        n = self.count
        eml = os.path.join(self.out_dir, f"{n}.eml")
        with open(eml + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(eml + ".tmp", eml)
        # aiosmtpd reports the null reverse-path as "<>"; record it as "".
        mail_from = "" if envelope.mail_from in ("<>", "") else envelope.mail_from
        meta = {
            "mail_from": mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "authenticated": bool(session.authenticated),
            "tls": session.ssl is not None,
            "data_attempt": self.data_attempts,
            # Where the gateway connected from (egress tests) and when.
            "peer": session.peer[0] if session.peer else None,
            "at": time.time(),
        }
        meta_path = os.path.join(self.out_dir, f"{n}.json")
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f)
        os.rename(meta_path + ".tmp", meta_path)
        log(f"message {n} from <{envelope.mail_from}> to {envelope.rcpt_tos}")
        return "250 2.0.0 OK queued as test-%d" % n


class Authenticator:
    def __init__(self, username, password, control=None):
        self.username = username.encode()
        self.password = password.encode()
        self.control = control

    def __call__(self, server, session, envelope, mechanism, auth_data):
        reply = controlled(self.control, "auth")
        if reply:
            log(f"AUTH {mechanism} refused (--control): {reply}")
            return AuthResult(success=False, handled=False, message=reply)
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.username
            and auth_data.password == self.password
        )
        log(f"AUTH {mechanism}: {'ok' if ok else 'refused'}")
        return AuthResult(success=ok)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--no-tls", action="store_true")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--reject-rcpt")
    p.add_argument("--defer-rcpt")
    p.add_argument("--control")
    # aiosmtpd enforces RFC 5321's 1000-octet line limit by default; relays
    # such as Postfix-fronted ESPs accept longer lines.
    p.add_argument("--line-limit", type=int, default=1001)
    args = p.parse_args()

    os.makedirs(args.out, exist_ok=True)
    tls_context = None
    if not args.no_tls:
        if not (args.cert and args.key):
            p.error("--cert and --key are needed unless --no-tls")
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.cert, args.key)
    if (args.username is None) != (args.password is None):
        p.error("--username and --password go together")
    authenticator = None
    if args.username is not None:
        authenticator = Authenticator(args.username, args.password, args.control)

    handler = Recorder(
        args.out, args.fail_first, args.reject_rcpt, args.defer_rcpt, args.control
    )
    loop = asyncio.get_running_loop()

    class Server(SMTP):
        # Read by the constructor (it sizes the stream reader), so it must be
        # a class attribute.
        line_length_limit = args.line_limit

        async def _handle_client(self):
            reply = controlled(args.control, "greeting")
            if reply:
                log(f"greeting refused (--control): {reply}")
                await self.push(reply)
                self.transport.close()
                return
            await super()._handle_client()

    def factory():
        return Server(
            handler,
            hostname="upstream.test",
            tls_context=tls_context,
            require_starttls=tls_context is not None,
            auth_required=authenticator is not None,
            auth_require_tls=tls_context is not None,
            authenticator=authenticator,
            enable_SMTPUTF8=True,
            timeout=60,
            loop=loop,
        )

    server = await loop.create_server(factory, host="127.0.0.1", port=args.port)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    log(f"listening on 127.0.0.1:{port} tls={tls_context is not None} "
        f"auth={authenticator is not None}")
    await stop.wait()
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), 2)
    except asyncio.TimeoutError:
        pass
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
