#!/usr/bin/env python3
"""Make pcaps/implicit-tls-10465.pcap: implicit TLS on a port of its own.

Run as root from the repository root (tcpdump), inside a network namespace
of its own so that nothing else on its loopback is captured:

    ip netns add smtpscope-tlsport
    ip netns exec smtpscope-tlsport ip link set lo up
    ip netns exec smtpscope-tlsport python3 pcaps/scripts/tlsport.py
    ip netns del smtpscope-tlsport

aiosmtpd listens on 127.0.0.1:10465 inside this process and speaks TLS
from the first byte (its ``ssl_context``), as a submission server on 465
does, with a throwaway self-signed P-256 certificate for
mail.smtpscope.test made for the run. ``smtplib.SMTP_SSL``, limited to TLS
1.2 so that the certificate travels in the clear, sends the SNI
mail.smtpscope.test, then inside TLS ``ehlo``, one message to alice and
``quit``. ``tcpdump -i lo 'tcp port 10465'`` captures it. No port smtpscope
knows as SMTP is involved: it reads the session only with ``--port 10465``
(as clear text, wrongly) or ``--tls-port 10465``.

The key log (``SSLContext.keylog_filename``) is kept beside the pcap, and
what the run did (the pcap's and the certificate's SHA-256, the dialog,
the message aiosmtpd received) goes into tls-captures.json.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import smtplib
import socket
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PCAPS = HERE.parent
sys.path.insert(0, str(HERE))

import lab  # noqa: E402

V4 = lab.LOOPBACK_V4
PORT = 10465
NAME = "implicit-tls-10465"
HELO = "client.smtpscope.test"
SENDER = "sender@client.smtpscope.test"
ALICE = "alice@smtpscope.test"
MESSAGE = (
    "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    f"From: Sender <{SENDER}>\r\n"
    f"To: Alice <{ALICE}>\r\n"
    "Subject: Sent over implicit TLS on port 10465\r\n"
    f"Message-ID: <{NAME}.1@client.smtpscope.test>\r\n"
    "\r\n"
    f"Test message of the {NAME} capture.\r\n"
).encode()


class NamedSMTP_SSL(smtplib.SMTP_SSL):
    """SMTP_SSL that sends the server's name as SNI: smtplib would send the
    host it connects to, and sends none for an address."""

    def _get_socket(self, host: str, port: int, timeout: float) -> ssl.SSLSocket:
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=lab.SERVER_NAME)


def session(ctx: ssl.SSLContext) -> list[Any]:
    s = NamedSMTP_SSL(V4, PORT, local_hostname=HELO, timeout=10, context=ctx)
    dialog: list[Any] = [["EHLO", s.ehlo()[0]]]
    refused = s.sendmail(SENDER, [ALICE], MESSAGE)
    dialog.append(["MAIL RCPT DATA", "refused" if refused else "accepted"])
    dialog.append(["QUIT", s.quit()[0]])
    return dialog


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="smtpscope-tlsport-"))
    try:
        cert, key = lab.make_cert(workdir)
        pcap = workdir / f"{NAME}.pcap"
        keylog = workdir / f"{NAME}.keylog"
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert, key)
        client = lab.client_tls_context(cert, keylog)
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        handler = lab.RecordingHandler()
        with (
            lab.aiosmtpd_server(V4, PORT, handler, ssl_context=server),
            lab.capture("lo", pcap, f"tcp port {PORT}"),
        ):
            dialog = session(client)
        if lab.DROPS and lab.DROPS[-1] != 0:
            raise lab.PacketsDropped(f"tcpdump kernel drops: {lab.DROPS}")
        if len(handler.envelopes) != 1:
            raise RuntimeError(f"aiosmtpd got {len(handler.envelopes)} messages")
        shutil.copyfile(pcap, PCAPS / pcap.name)
        shutil.copyfile(keylog, PCAPS / keylog.name)
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        path = PCAPS / "tls-captures.json"
        doc = json.loads(path.read_text()) if path.exists() else {}
        doc[NAME] = {
            "pcap": pcap.name,
            "keylog": keylog.name,
            "server_port": PORT,
            "sha256": hashlib.sha256(pcap.read_bytes()).hexdigest(),
            "cert_sha256": hashlib.sha256(der).hexdigest(),
            "messages_received": len(handler.envelopes),
            "dialog": dialog,
        }
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        lab.log(f"{NAME}: {doc[NAME]}")
    finally:
        shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
