#!/usr/bin/env python3
"""Make the TLS captures in pcaps/ that make_captures.py does not make.

Run as root from the repository root (port 25, tcpdump):

    python3 pcaps/scripts/tls.py            # all five
    python3 pcaps/scripts/tls.py --only starttls-tls12

Every server is aiosmtpd on 127.0.0.1:25 inside this process, with a
throwaway self-signed certificate made for the run; every client is on
127.0.0.1 too, and each capture is ``tcpdump -i lo 'tcp port 25'``.

- starttls-tls12.pcap + .keylog: smtplib limited to TLS 1.2 (so the
  certificate travels in the clear), STARTTLS, AUTH PLAIN and one message
  inside TLS.
- starttls-injection.pcap + .keylog: a raw client sends "STARTTLS\\r\\nNOOP\\r\\n"
  in one segment (the CVE-2011-0411 pattern), then starts TLS.
- stripping.pcap + .keylog: three sessions to one server: STARTTLS offered
  and used; STARTTLS overwritten with XXXXXXXA in the EHLO reply; STARTTLS
  left out. The client sends its message in clear text when it sees no
  STARTTLS, as opportunistic clients do.
- starttls-inside-tls.pcap + .keylog: STARTTLS and a TLS 1.3 handshake,
  then inside TLS a second STARTTLS, which an aiosmtpd subclass answers
  with 220 where RFC 3207 4.2 has it refuse; the raw client does not start
  a second handshake but sends QUIT inside the first TLS session.
- sslv2-hello.pcap: a raw client says STARTTLS, then sends a ClientHello in
  the SSL 2.0 form that clients of OpenSSL before 1.0 sent (RFC 5246 E.2),
  offering TLS 1.2, reads what the server answers and closes. The server's
  OpenSSL 3.0 answers nothing (Python logs "no shared cipher"): aiosmtpd
  closes the connection. No key log: no handshake completes.

tls-captures.json beside the pcaps records what each run did: dialogs,
the certificate's SHA-256 and what the server saw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import smtplib
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

HERE = Path(__file__).resolve().parent
PCAPS = HERE.parent
sys.path.insert(0, str(HERE))

import lab  # noqa: E402
from rawclient import RawSMTP  # noqa: E402

V4 = lab.LOOPBACK_V4
HELO = "client.smtpscope.test"
SENDER = "sender@client.smtpscope.test"
ALICE = "alice@smtpscope.test"
USERS = {"alice": "alice-throwaway-pw"}  # test credential, TLS only


def message(name: str, subject: str) -> bytes:
    return (
        "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
        f"From: Sender <{SENDER}>\r\n"
        f"To: Alice <{ALICE}>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{name}.1@client.smtpscope.test>\r\n"
        "\r\n"
        f"Test message of the {name} capture.\r\n"
    ).encode()


class StrippingSMTP(SMTP):
    """aiosmtpd whose EHLO reply loses STARTTLS the way a middlebox would."""

    mode = "offer"  # offer, mangle (XXXXXXXA) or remove

    async def push(self, status: str) -> None:
        if "STARTTLS" in status and status.startswith("250"):
            if StrippingSMTP.mode == "mangle":
                status = status.replace("STARTTLS", "XXXXXXXA")
            elif StrippingSMTP.mode == "remove":
                return
        await super().push(status)


class StrippingController(Controller):
    def factory(self) -> SMTP:
        return StrippingSMTP(self.handler, **self.SMTP_kwargs)


class NestedStartTlsSMTP(SMTP):
    """aiosmtpd that answers 220 to STARTTLS inside TLS and stays as it is."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:
            await self.push("220 2.0.0 Ready to start TLS")
            return
        await super().smtp_STARTTLS(arg)


class NestedStartTlsController(Controller):
    def factory(self) -> SMTP:
        return NestedStartTlsSMTP(self.handler, **self.SMTP_kwargs)


def client_context(cert: Path, keylog: Path, tls12: bool) -> ssl.SSLContext:
    ctx = lab.client_tls_context(cert, keylog)
    ctx.check_hostname = False  # 127.0.0.1; the chain is still verified
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def starttls_tls12(ctx: ssl.SSLContext, notes: dict[str, Any]) -> None:
    s = smtplib.SMTP(V4, 25, local_hostname=HELO, timeout=10)
    s.ehlo()
    s.starttls(context=ctx)
    s.ehlo()
    s.login("alice", USERS["alice"])
    s.sendmail(SENDER, [ALICE], message("starttls-tls12", "Sent over TLS 1.2"))
    s.quit()
    notes["dialog"] = "EHLO STARTTLS(220) EHLO AUTH PLAIN(235) MAIL RCPT DATA QUIT"


def injection(ctx: ssl.SSLContext, notes: dict[str, Any]) -> None:
    c = RawSMTP(V4, 25)
    c.reply()
    c.cmd(b"EHLO " + HELO.encode() + b"\r\n", 250)
    c.send(b"STARTTLS\r\nNOOP\r\n")  # one segment: NOOP rides before TLS
    code, _ = c.reply()
    notes["starttls_reply"] = code
    try:
        tls = ctx.wrap_socket(c.sock, server_hostname=lab.SERVER_NAME)
        tls.sendall(b"EHLO " + HELO.encode() + b"\r\n")
        notes["after_tls"] = tls.recv(4096).decode(errors="replace")[:200]
        tls.sendall(b"QUIT\r\n")
        notes["quit"] = tls.recv(4096).decode(errors="replace")[:200]
        tls.close()
        notes["handshake"] = "completed"
    except (ssl.SSLError, OSError) as exc:
        notes["handshake"] = f"failed: {exc}"
        c.close()


def inside_tls(ctx: ssl.SSLContext, notes: dict[str, Any]) -> None:
    c = RawSMTP(V4, 25)
    c.reply()
    c.cmd(b"EHLO " + HELO.encode() + b"\r\n", 250)
    c.cmd(b"STARTTLS\r\n", 220)
    tls = ctx.wrap_socket(c.sock, server_hostname=lab.SERVER_NAME)
    c.sock, c.buf = tls, b""
    c.cmd(b"EHLO " + HELO.encode() + b"\r\n", 250)
    notes["second_starttls_reply"] = c.cmd(b"STARTTLS\r\n")
    notes["quit_reply"] = c.cmd(b"QUIT\r\n")
    c.close()
    notes["dialog"] = "EHLO STARTTLS(220) TLS: EHLO STARTTLS(220) QUIT(221)"


# RFC 5246 E.2: an SSL 2.0 CLIENT-HELLO (type 1) offering TLS 1.2, with
# four TLS cipher suites as specs (first byte zero) and one SSL 2.0 kind,
# no session id and a 16-byte challenge.
V2_SPECS = (0x00C02B, 0x00C02F, 0x00009C, 0x00002F, 0x010080)
V2_CHALLENGE = bytes(range(16))


def v2_client_hello() -> bytes:
    specs = b"".join(spec.to_bytes(3, "big") for spec in V2_SPECS)
    body = (
        b"\x01\x03\x03"
        + len(specs).to_bytes(2, "big")
        + (0).to_bytes(2, "big")
        + len(V2_CHALLENGE).to_bytes(2, "big")
        + specs
        + V2_CHALLENGE
    )
    return (0x8000 | len(body)).to_bytes(2, "big") + body


def sslv2_hello(ctx: ssl.SSLContext, notes: dict[str, Any]) -> None:
    c = RawSMTP(V4, 25)
    c.reply()
    c.cmd(b"EHLO " + HELO.encode() + b"\r\n", 250)
    c.cmd(b"STARTTLS\r\n", 220)
    c.send(v2_client_hello())
    answer = b""
    c.sock.settimeout(2)
    try:
        while len(answer) < 65536:
            data = c.sock.recv(65536)
            if not data:
                break
            answer += data
    except TimeoutError:
        pass  # the server waits for the client's next flight
    c.close()
    notes["answer_bytes"] = len(answer)
    notes["answer_starts"] = answer[:6].hex()


def stripping(ctx: ssl.SSLContext, notes: dict[str, Any]) -> None:
    seen = []
    for mode in ("offer", "mangle", "remove"):
        StrippingSMTP.mode = mode
        s = smtplib.SMTP(V4, 25, local_hostname=HELO, timeout=10)
        s.ehlo()
        offered = s.has_extn("starttls")
        if offered:
            s.starttls(context=ctx)
            s.ehlo()
        s.sendmail(SENDER, [ALICE], message("stripping", f"Server mode {mode}"))
        s.quit()
        seen.append({"mode": mode, "starttls_offered": offered})
    notes["sessions"] = seen


SCENARIOS: dict[str, tuple[Callable[[ssl.SSLContext, dict[str, Any]], None], bool]] = {
    "starttls-tls12": (starttls_tls12, True),
    "starttls-injection": (injection, True),
    "stripping": (stripping, False),
    "sslv2-hello": (sslv2_hello, False),
    "starttls-inside-tls": (inside_tls, False),
}


def run(name: str, workdir: Path, cert: Path, key: Path) -> dict[str, Any]:
    run_fn, tls12 = SCENARIOS[name]
    pcap = workdir / f"{name}.pcap"
    keylog = workdir / f"{name}.keylog"
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert, key)
    handler = lab.RecordingHandler()
    kwargs: dict[str, Any] = {
        "tls_context": sctx,
        "authenticator": lab.Authenticator(USERS),
    }
    if name == "stripping":
        kwargs["controller_cls"] = StrippingController
    elif name == "starttls-inside-tls":
        kwargs["controller_cls"] = NestedStartTlsController
    notes: dict[str, Any] = {}
    with (
        lab.aiosmtpd_server(V4, 25, handler, **kwargs),
        lab.capture("lo", pcap, "tcp port 25"),
    ):
        run_fn(client_context(cert, keylog, tls12), notes)
    if lab.DROPS and lab.DROPS[-1] != 0:
        raise lab.PacketsDropped(f"tcpdump kernel drops: {lab.DROPS}")
    shutil.copyfile(pcap, PCAPS / pcap.name)
    # Python writes the key log's header line as soon as it opens it; only
    # a handshake adds secrets.
    secrets = [line for line in keylog.read_text().splitlines() if line[:1] != "#"]
    if secrets:
        shutil.copyfile(keylog, PCAPS / keylog.name)
    pem = cert.read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return {
        "pcap": pcap.name,
        "keylog": keylog.name if secrets else None,
        "sha256": hashlib.sha256(pcap.read_bytes()).hexdigest(),
        "cert_sha256": hashlib.sha256(der).hexdigest(),
        "messages_received": len(handler.envelopes),
        **notes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(SCENARIOS))
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="smtpscope-tls-"))
    cert, key = lab.make_cert(workdir)
    path = PCAPS / "tls-captures.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    try:
        for name in args.only or SCENARIOS:
            doc[name] = run(name, workdir, cert, key)
            lab.log(f"{name}: {doc[name]}")
    finally:
        shutil.rmtree(workdir)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
