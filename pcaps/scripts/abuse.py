#!/usr/bin/env python3
"""Make the abuse captures in pcaps/abuse/: one per detector, plus normal mail.

Run as root from the repository root (tcpdump, Postfix, ports 25/587/2525):

    python3 pcaps/scripts/abuse.py            # all of them
    python3 pcaps/scripts/abuse.py --only flood harvest

Everything stays on loopback: servers listen on 127.0.0.1 only, clients
connect to 127.0.0.1 from source addresses in 127.0.0.0/8, and the Postfix
instance is the capture lab's (no relayhost, every non-local transport
"discard", no DNS) with a few settings added below (rate limit, error
limits). aiosmtpd plays the open relay and the AUTH server. Passwords sent
are throwaway guesses against throwaway test accounts; none is printed.

Every process started is stopped by its PID (Postfix with
``postfix -c DIR stop``), as in make_captures.py.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lab  # noqa: E402
from rawclient import RawSMTP  # noqa: E402

OUT = HERE.parent / "abuse"
V4 = lab.LOOPBACK_V4
HELO = b"client.smtpscope.test"
SENDER = b"sender@client.smtpscope.test"

# Added to the lab's main.cf for these captures. The event-limit exceptions
# default to $mynetworks, which holds loopback: emptied so the limits apply.
ABUSE_CF = """
# Abuse captures (pcaps/scripts/abuse.py): rate limits apply to loopback.
smtpd_client_event_limit_exceptions =
smtpd_client_connection_rate_limit = 20
anvil_rate_time_unit = 60s
# Enough room for the harvest and refusal runs before the session is cut;
# after soft_error_limit errors every reply is delayed (the tarpit).
smtpd_soft_error_limit = 15
smtpd_error_sleep_time = 1s
smtpd_hard_error_limit = 60
"""

# Throwaway test accounts of the AUTH server.
AUTH_USERS = {"alice": "alice-throwaway-pw", "bob": "bob-throwaway-pw"}


class AbusePostfix(lab.Postfix):
    def write_config(self) -> None:
        super().write_config()
        with (self.etc / "main.cf").open("a") as main_cf:
            main_cf.write(ABUSE_CF)


class Client(RawSMTP):
    """The raw client, connecting from a chosen loopback source address."""

    def __init__(self, port: int, source: str = V4, *, greet: bool = True) -> None:
        if not source.startswith("127."):
            raise ValueError("clients use loopback source addresses only")
        self.sock = socket.create_connection((V4, port), 10, (source, 0))
        self.buf = b""
        self.transcript = []
        if greet:
            self.reply()

    def lines(self, *commands: bytes) -> list[int]:
        return [self.cmd(c + b"\r\n") for c in commands]

    def message(self, body: bytes = b"Subject: test\r\n\r\nHello.\r\n") -> None:
        self.cmd(b"DATA\r\n", 354)
        self.cmd(body + b".\r\n", 250)

    def quit(self) -> None:
        self.cmd(b"QUIT\r\n", 221)
        self.close()


def plain(user: str, password: str) -> bytes:
    token = base64.b64encode(f"\0{user}\0{password}".encode())
    return b"AUTH PLAIN " + token


# Scenarios ------------------------------------------------------------------


def normal(port: int) -> None:
    """Ordinary mail: two deliveries, one mistyped recipient, no alert."""
    for rcpts in ([b"alice"], [b"bob", b"carol", b"nosuch"]):
        c = Client(port)
        c.lines(b"EHLO " + HELO, b"MAIL FROM:<" + SENDER + b">")
        for r in rcpts:
            c.cmd(b"RCPT TO:<" + r + b"@smtpscope.test>\r\n")
        c.message()
        c.quit()


def relay_refused(port: int) -> None:
    """Relaying refused: plain, percent-hack, source route, then 22 more."""
    c = Client(port)
    c.lines(b"EHLO " + HELO, b"MAIL FROM:<" + SENDER + b">")
    c.cmd(b"RCPT TO:<victim@example.net>\r\n", 554)
    c.cmd(b"RCPT TO:<victim%example.net@smtpscope.test>\r\n")
    c.cmd(b"RCPT TO:<@mail.smtpscope.test:victim@example.net>\r\n")
    c.quit()
    c = Client(port)
    c.lines(b"EHLO " + HELO, b"MAIL FROM:<" + SENDER + b">")
    for i in range(22):
        c.cmd(b"RCPT TO:<user%d@example.org>\r\n" % i, 554)
    c.quit()


def harvest(port: int) -> None:
    """Guessing local parts: 15 unknown users and one that exists."""
    c = Client(port)
    c.lines(b"EHLO " + HELO, b"MAIL FROM:<" + SENDER + b">")
    for name in [b"admin", b"info", b"sales", b"support", b"webmaster"]:
        for suffix in (b"", b"1", b"2"):
            c.cmd(b"RCPT TO:<" + name + suffix + b"@smtpscope.test>\r\n", 550)
    c.cmd(b"RCPT TO:<alice@smtpscope.test>\r\n", 250)
    c.cmd(b"RSET\r\n", 250)
    c.quit()


def helo(port: int) -> None:
    """Greeting names: a foreign literal, a bare IP, the server's, a change."""
    for names in (
        [b"[1.2.3.4]"],
        [b"1.2.3.4"],
        [b"mail.smtpscope.test"],
        [b"a.client.test", b"b.client.test"],
    ):
        c = Client(port)
        for name in names:
            c.cmd(b"EHLO " + name + b"\r\n", 250)
        c.quit()


def protocol(port: int) -> None:
    """Early talking, unoffered pipelining, bytes after QUIT, smuggling, junk."""
    # Talks before the greeting: the EHLO goes out right after connecting.
    c = Client(port, greet=False)
    c.send(b"EHLO " + HELO + b"\r\n")
    c.reply()
    c.reply()
    c.quit()
    # HELO offers no extensions, so MAIL and RCPT in one segment is
    # pipelining the server never offered (RFC 2920 3.1).
    c = Client(port)
    c.cmd(b"HELO " + HELO + b"\r\n", 250)
    c.send(b"MAIL FROM:<" + SENDER + b">\r\nRCPT TO:<alice@smtpscope.test>\r\n")
    c.reply()
    c.reply()
    c.cmd(b"RSET\r\n", 250)
    # QUIT and a NOOP after it, in one segment.
    c.send(b"QUIT\r\nNOOP\r\n")
    c.reply()
    c.close()
    # A message with "<CR><LF>.<LF>" inside: the SMTP smuggling shape.
    c = Client(port)
    c.lines(b"EHLO " + HELO, b"MAIL FROM:<" + SENDER + b">")
    c.cmd(b"RCPT TO:<alice@smtpscope.test>\r\n", 250)
    c.cmd(b"DATA\r\n", 354)
    # Postfix 3.7 (smtpd_forbid_bare_newline = no) ends the data at the
    # bare-LF dot and reads what follows as commands: replies until 221.
    c.send(
        b"Subject: smuggling shape\r\n\r\nfirst part\r\n.\n"
        b"MAIL FROM:<admin@smtpscope.test>\r\nsecond part\r\n.\r\nQUIT\r\n"
    )
    while c.reply()[0] != 221:
        pass
    c.close()
    # Twelve commands the server does not know or cannot parse.
    c = Client(port)
    c.cmd(b"EHLO " + HELO + b"\r\n", 250)
    for i in range(6):
        c.cmd(b"FOO%d bar\r\n" % i)
        c.cmd(b"MAIL FROM:<broken%d\r\n" % i)
    c.quit()


def flood(port: int) -> None:
    """35 connections in a few seconds, from 127.0.0.9, that send no mail."""
    for _ in range(35):
        c = Client(port, "127.0.0.9")
        if c.transcript[-1][1].startswith(b"220"):
            c.quit()
        else:
            c.close()  # Postfix's rate limit answered 421 and hung up
        time.sleep(0.05)


def open_relay(port: int) -> None:
    """aiosmtpd accepts anything: three foreign domains in one message."""
    c = Client(port)
    c.lines(b"EHLO " + HELO, b"MAIL FROM:<" + SENDER + b">")
    for rcpt in (b"victim@example.net", b"victim@example.org", b"victim@example.com"):
        c.cmd(b"RCPT TO:<" + rcpt + b">\r\n", 250)
    c.message()
    c.quit()


def bulk(port: int) -> None:
    """25 messages in a session, 21 of them from <>; 60 recipients; 10 domains."""
    c = Client(port)
    c.cmd(b"EHLO " + HELO + b"\r\n", 250)
    for i in range(25):
        sender = b"" if i < 21 else b"news@list%d.client.test" % i
        c.cmd(b"MAIL FROM:<" + sender + b">\r\n", 250)
        c.cmd(b"RCPT TO:<alice@smtpscope.test>\r\n", 250)
        c.message()
    c.quit()
    c = Client(port)
    c.lines(b"EHLO " + HELO, b"MAIL FROM:<" + SENDER + b">")
    for i in range(60):
        c.cmd(b"RCPT TO:<user%d@smtpscope.test>\r\n" % i, 250)
    c.message()
    c.quit()
    c = Client(port)
    c.cmd(b"EHLO " + HELO + b"\r\n", 250)
    for i in range(10):
        c.cmd(b"MAIL FROM:<offer@shop%d.client.test>\r\n" % i, 250)
        c.cmd(b"RCPT TO:<bob@smtpscope.test>\r\n", 250)
        c.message()
    c.quit()


def auth_abuse(port: int) -> None:
    """Guessing: 12 refusals and then a success from 127.0.0.1 (six user
    names); one user name refused from six other loopback addresses."""
    users = ["alice", "bob", "admin", "info", "test", "sales"]
    for i in range(12):
        c = Client(port)
        c.cmd(b"EHLO " + HELO + b"\r\n", 250)
        c.cmd(plain(users[i % 6], f"guess-{i}") + b"\r\n", 535)
        c.quit()
    c = Client(port)
    c.cmd(b"EHLO " + HELO + b"\r\n", 250)
    c.cmd(plain("alice", AUTH_USERS["alice"]) + b"\r\n", 235)
    c.quit()
    for n in range(2, 8):
        c = Client(port, f"127.0.0.{n}")
        c.cmd(b"EHLO " + HELO + b"\r\n", 250)
        c.cmd(plain("carol", f"guess-{n}") + b"\r\n", 535)
        c.quit()


# Driver ---------------------------------------------------------------------

Scenario = tuple[str, str, int, Callable[[int], None]]  # name, server, port, run
SCENARIOS: list[Scenario] = [
    ("open-relay", "aiosmtpd", 2525, open_relay),
    ("bulk", "aiosmtpd", 2525, bulk),
    ("auth-abuse", "aiosmtpd-auth", 587, auth_abuse),
    ("normal", "postfix", 25, normal),
    ("relay-refused", "postfix", 25, relay_refused),
    ("harvest", "postfix", 25, harvest),
    ("helo", "postfix", 25, helo),
    ("protocol", "postfix", 25, protocol),
    # Last: Postfix's rate limit remembers the client for a minute.
    ("flood", "postfix", 25, flood),
]


def make(
    name: str, server: str, port: int, run: Callable[[int], None], workdir: Path
) -> None:
    pcap = workdir / f"{name}.pcap"
    if server.startswith("aiosmtpd"):
        kwargs = {}
        if server == "aiosmtpd-auth":
            kwargs = {
                "authenticator": lab.Authenticator(AUTH_USERS),
                "auth_require_tls": False,
            }
        with (
            lab.aiosmtpd_server(V4, port, lab.RecordingHandler(), **kwargs),
            lab.capture("lo", pcap, f"tcp port {port}"),
        ):
            run(port)
    else:
        with lab.capture("lo", pcap, f"tcp port {port}"):
            run(port)
    OUT.mkdir(exist_ok=True)
    shutil.copy(pcap, OUT / pcap.name)
    lab.log(f"wrote {OUT / pcap.name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME")
    args = ap.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s[0] in args.only]
    lab.become_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="smtpscope-abuse-"))
    workdir.chmod(0o755)
    cert, key = lab.make_cert(workdir)
    failed = []
    try:
        for sc in [s for s in chosen if s[1] != "postfix"]:
            try:
                make(*sc, workdir)
            except Exception:
                traceback.print_exc()
                failed.append(sc[0])
        postfix_runs = [s for s in chosen if s[1] == "postfix"]
        if postfix_runs:
            postfix = AbusePostfix(workdir / "postfix", cert, key)
            postfix.start()
            try:
                for sc in postfix_runs:
                    try:
                        make(*sc, workdir)
                    except Exception:
                        traceback.print_exc()
                        failed.append(sc[0])
            finally:
                postfix.stop()
    finally:
        left = lab.reap_children()
        if left:
            lab.log(f"ERROR: processes still running: {left}")
            failed.append("cleanup")
        shutil.rmtree(workdir)
    if failed:
        lab.log(f"FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
