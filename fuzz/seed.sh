#!/usr/bin/env bash
# Builds the seed corpora in fuzz/corpus/<target>/ from what the repository
# already has: the real-world MIME fixtures and Mailjet payloads in
# ../shared/fixtures (or $SCHLEUSE_FIXTURES), the PII test corpus
# (tests/pii/*.toml), the smuggling payloads of tests/smuggling.rs, the
# sample config, and the small hand-made seeds in fuzz/seeds/<target>/.
# Files are named by content hash, so running it again adds nothing twice
# and keeps what the fuzzer found.
#
#   fuzz/seed.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
FIXTURES=${SCHLEUSE_FIXTURES:-../../shared/fixtures}
[ -d "$FIXTURES" ] || FIXTURES=../../../shared/fixtures
exec python3 - "$FIXTURES" <<'PY'
import hashlib, os, re, struct, sys, tomllib

fixtures = sys.argv[1]
targets = ["session", "mime", "pii", "mailjet", "proxy", "config", "links"]
count = {t: 0 for t in targets}

def add(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    count[target] += 1

def crlf(b):
    return re.sub(rb"\r?\n", b"\r\n", b)

# Hand-made seeds, committed.
for t in targets:
    d = os.path.join("seeds", t)
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                add(t, f.read())

# Messages: the MIME fixtures, as the gateway sees them (CRLF). Large ones
# are cut: libFuzzer mutates small inputs faster, and a cut multipart is a
# malformed message worth having too.
AUTH = b"EHLO app.fuzz.example\r\nAUTH PLAIN AGZ1enoAZnV6eg==\r\n"
ENVELOPE = b"MAIL FROM:<sb@landkreis.example>\r\nRCPT TO:<buerger@example.org>\r\nDATA\r\n"

def dialogue(message):
    # The sender the account may use, and dot-stuffing.
    message = re.sub(rb"(?im)^from:.*$", b"From: Sachbearbeitung <sb@landkreis.example>", message, count=1)
    stuffed = re.sub(rb"(?m)^\.", b"..", message)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return AUTH + ENVELOPE + stuffed + b".\r\nQUIT\r\n"

messages = []
if os.path.isdir(fixtures):
    for name in sorted(os.listdir(fixtures)):
        if name.endswith(".eml"):
            with open(os.path.join(fixtures, name), "rb") as f:
                messages.append(crlf(f.read()))
    mj = os.path.join(fixtures, "mailjet")
    if os.path.isdir(mj):
        for name in sorted(os.listdir(mj)):
            if name.endswith(".json"):
                with open(os.path.join(mj, name), "rb") as f:
                    add("mailjet", f.read())
else:
    print(f"seed.sh: no fixtures at {fixtures}; only the repository's own seeds", file=sys.stderr)

for m in messages:
    add("mime", m[:64 * 1024])
    add("pii", m[:64 * 1024])
    add("session", dialogue(m[:32 * 1024]))

# PII: the labelled test corpus, as text and as a minimal message.
for name in sorted(os.listdir("../tests/pii")):
    if name.endswith(".toml"):
        with open(os.path.join("../tests/pii", name), "rb") as f:
            doc = tomllib.load(f)
        for m in doc.get("message", []):
            body = m.get("body", "")
            add("pii", body)
            if m.get("html"):
                add("pii", m["html"])
            add("pii", "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body.replace("\n", "\r\n"))

# Session: the smuggling payloads of tests/smuggling.rs, after a login.
SENDER, RCPT, VICTIM = "sb@landkreis.example", "buerger@example.org", "opfer@example.org"
carrier = f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: carrier\r\n\r\ncarrier body".encode()
hidden = [f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{VICTIM}>", "DATA", f"From: <{SENDER}>",
          f"To: <{VICTIM}>", "Subject: smuggled", "", "smuggled body"]
for fake_end, eol in [(b"\n.\r\n", "\r\n"), (b"\r\n.\n", "\r\n"), (b"\r.\r\n", "\r\n"),
                      (b"\n.\n", "\r\n"), (b"\r.\r", "\r\n"), (b"\n.\n", "\n")]:
    payload = carrier + fake_end + "".join(l + eol for l in hidden).encode() + b"\r\n.\r\n"
    add("session", AUTH + ENVELOPE + payload + b"QUIT\r\n")
for injected in ["RSET\r\n", f"MAIL FROM:<{SENDER}>\r\n"]:
    add("session", b"EHLO a\r\nSTARTTLS\r\n" + injected.encode())
add("session", AUTH + f"MAIL FROM:<{SENDER}>\nRCPT TO:<{VICTIM}>\r\n".encode())
add("session", b"NOOP\rNOOP\r\n")
add("session", b"EHLO a\nEHLO b\r\n")
add("session", AUTH + ENVELOPE + f"From: {SENDER}\r\n\r\n..\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{VICTIM}>\r\nDATA\r\nFrom: {SENDER}\r\n\r\nsmuggled\r\n.\r\n".encode())
add("session", b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\nQUIT\r\n")

# PROXY v2 headers (first byte: how many bytes each read returns).
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
def v2(cmd, fam, addrs, tlvs=b""):
    body = addrs + tlvs
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body
tcp4 = bytes([192, 0, 2, 7, 10, 0, 0, 1]) + struct.pack(">HH", 40000, 587)
tcp6 = bytes(range(16)) + bytes(range(16, 32)) + struct.pack(">HH", 40000, 587)
unix = b"/run/a".ljust(108, b"\0") + b"/run/b".ljust(108, b"\0")
tlv = lambda t, v: bytes([t]) + struct.pack(">H", len(v)) + v
for chunk in [0, 1, 5, 16]:
    c = bytes([chunk])
    add("proxy", c + v2(1, 0x11, tcp4) + b"EHLO a\r\n")
    add("proxy", c + v2(1, 0x21, tcp6) + b"EHLO a\r\n")
    add("proxy", c + v2(1, 0x12, tcp4))
    add("proxy", c + v2(1, 0x31, unix))
    add("proxy", c + v2(0, 0x00, b""))
    add("proxy", c + v2(1, 0x11, tcp4, tlv(0x01, b"h2") + tlv(0x02, b"mail.example") + tlv(0x04, b"\0" * 4)))
    add("proxy", c + v2(1, 0x11, tcp4, tlv(0x20, b"\x07" + b"\0\0\0\0" + tlv(0x21, b"TLSv1.3"))))
    add("proxy", c + b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 587\r\n")
    add("proxy", c + v2(1, 0x11, tcp4)[:20])

# Config: the sample, and the sample with its commented-out examples on.
with open("../conf/schleuse.toml", encoding="utf-8") as f:
    sample = f.read()
add("config", sample)
add("config", re.sub(r"(?m)^#(\[|[a-z_.\"A-Z-]+ *=)", r"\1", sample))

print("seed.sh: " + ", ".join(f"{t} {n}" for t, n in count.items()) + " seeds in fuzz/corpus/")
PY
