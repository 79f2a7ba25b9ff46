#!/usr/bin/env python3
"""Make pcaps/client-side-only.pcap: a slow session seen from its client's side.

Run as root from the repository root (tcpdump), inside a network namespace
of its own so that nothing else on its loopback is captured:

    ip netns add smtpscope-oneside
    ip netns exec smtpscope-oneside ip link set lo up
    ip netns exec smtpscope-oneside python3 pcaps/scripts/oneside.py
    ip netns del smtpscope-oneside

aiosmtpd listens on 127.0.0.1:2525 inside this process; smtplib sends EHLO,
MAIL, RCPT, DATA with one message, and QUIT, waiting PAUSE seconds before
each command after the first, as a slow client or a busy network would.
``tcpdump -i lo 'tcp port 2525'`` captures both sides into a work directory;
then ``tcpdump -r`` keeps only the packets sent to port 2525, as a span port
that mirrors one direction (or asymmetric routing) shows them: the client's
SYN, its ACKs, commands and message, no SYN-ACK and no reply. The whole
session is under 4 KiB, so smtpscope holds all of it until the close
(analysis/holding.py) and reads it then; each command must still keep the
time of its own segment. ``--both-sides FILE`` also keeps the capture of
both sides, to compare with (it is not one of the project's captures).
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PCAPS = HERE.parent
sys.path.insert(0, str(HERE))

import lab  # noqa: E402

V4 = lab.LOOPBACK_V4
PORT = 2525
PAUSE = 1.5  # seconds before each command after EHLO
NAME = "client-side-only"
HELO = "client.smtpscope.test"
SENDER = "sender@client.smtpscope.test"
ALICE = "alice@smtpscope.test"
MESSAGE = (
    "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    f"From: Sender <{SENDER}>\r\n"
    f"To: Alice <{ALICE}>\r\n"
    "Subject: Seen from the client's side only\r\n"
    f"Message-ID: <{NAME}.1@client.smtpscope.test>\r\n"
    "\r\n"
    f"Test message of the {NAME} capture.\r\n"
).encode()


def slow_session() -> None:
    s = smtplib.SMTP(V4, PORT, local_hostname=HELO, timeout=10)
    s.ehlo()
    time.sleep(PAUSE)
    s.mail(SENDER)
    time.sleep(PAUSE)
    s.rcpt(ALICE)
    time.sleep(PAUSE)
    s.data(MESSAGE)
    time.sleep(PAUSE)
    s.quit()


def client_side(full: Path, out: Path) -> None:
    """The packets of ``full`` sent to the server's port, into ``out``."""
    argv = ["tcpdump", "-r", str(full), "-w", str(out), f"tcp dst port {PORT}"]
    subprocess.run(argv, check=True, capture_output=True)
    lab.log(" ".join(argv))


def packets(path: Path, bpf: str) -> int:
    done = subprocess.run(
        ["tcpdump", "-nr", str(path), bpf], check=True, capture_output=True, text=True
    )
    return len(done.stdout.splitlines())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--both-sides", type=Path, metavar="FILE")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="smtpscope-oneside-"))
    try:
        full = workdir / "both-sides.pcap"
        handler = lab.RecordingHandler()
        with (
            lab.aiosmtpd_server(V4, PORT, handler),
            lab.capture("lo", full, f"tcp port {PORT}"),
        ):
            slow_session()
        if lab.DROPS and lab.DROPS[-1] != 0:
            raise lab.PacketsDropped(f"tcpdump kernel drops: {lab.DROPS}")
        if len(handler.envelopes) != 1:
            raise RuntimeError(f"aiosmtpd got {len(handler.envelopes)} messages")
        out = workdir / f"{NAME}.pcap"
        client_side(full, out)
        # What a capture of one side must be: the SYN, and nothing the
        # server sent.
        if packets(out, f"tcp src port {PORT}") != 0:
            raise RuntimeError("the server's packets were kept")
        if packets(out, "tcp[tcpflags] & tcp-syn != 0") != 1:
            raise RuntimeError("not one SYN in the client's side")
        lab.log(f"{packets(full, 'tcp')} packets, {packets(out, 'tcp')} kept")
        shutil.copyfile(out, PCAPS / out.name)
        if args.both_sides is not None:
            shutil.copyfile(full, args.both_sides)
    finally:
        shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
