#!/usr/bin/env python3
"""Re-make the lab captures in pcaps/ from real SMTP software on loopback.

Run as root (ports 25/465/587, tcpdump, Postfix):

    python3 pcaps/make_captures.py            # all captures + expected.json
    python3 pcaps/make_captures.py --only auth bdat
    python3 pcaps/make_captures.py --list

Servers: aiosmtpd (in-process threads) and a private Postfix instance whose
configuration is generated under a temporary directory (loopback listeners
only, relayhost empty, every non-local transport "discard", no DNS).  Clients:
Python's smtplib, swaks, and a raw-socket client (scripts/rawclient.py).  Each
capture is taken with

    tcpdump -i lo -w FILE -s 0 -Z root --immediate-mode -B 8192 'tcp port N'

(``-i any`` for sll2-any.pcap).  After capturing, every pcap is read back with
tshark (scripts/truth.py), checked against the dialog this script drove, and
its ground truth is written to pcaps/expected.json.

Every process started here is stopped by its PID (Postfix with
``postfix -c DIR stop``); the script is a child subreaper, so Postfix's
daemons are reaped too, and it fails if any child is left at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scripts"))

import lab  # noqa: E402
import truth  # noqa: E402
from rawclient import RawSMTP  # noqa: E402

V4, V6 = lab.LOOPBACK_V4, lab.LOOPBACK_V6
HELO = "client.smtpscope.test"
SENDER = "sender@client.smtpscope.test"
ALICE = "alice@smtpscope.test"
BOB = "bob@smtpscope.test"
CAROL = "carol@smtpscope.test"
NOSUCH = "nosuch@smtpscope.test"
FOREIGN = "victim@example.net"
DATE = "Mon, 01 Jan 2024 12:00:00 +0000"
NAMES = {
    ALICE: "Alice",
    BOB: "Bob",
    CAROL: "Carol",
    NOSUCH: "Nobody",
    FOREIGN: "Victim",
}

# Throwaway test credentials for the aiosmtpd AUTH server.
AUTH_USERS = {"alice": "alice-throwaway-pw", "bob": "bob-throwaway-pw"}
WRONG_PASSWORD = "not-bobs-password"


def message(
    capture: str,
    n: int,
    subject: str,
    to: list[str],
    cc: list[str] | None = None,
    body: list[str] | None = None,
    eol: bytes = b"\r\n",
) -> bytes:
    """A fixed message: Date, From, To, [Cc], Subject, Message-ID, body."""

    def fmt(addrs: list[str]) -> str:
        return ", ".join(f"{NAMES[a]} <{a}>" for a in addrs)

    lines = [
        f"Date: {DATE}",
        f"From: Sender <{SENDER}>",
        f"To: {fmt(to)}",
        *([f"Cc: {fmt(cc)}"] if cc else []),
        f"Subject: {subject}",
        f"Message-ID: <{capture}.{n}@client.smtpscope.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        *(
            body
            or [
                f"Test message {n} of the {capture} capture.",
                "This line is plain ASCII text.",
            ]
        ),
    ]
    return b"".join(line.encode() + eol for line in lines)


@dataclass
class Ctx:
    workdir: Path
    cert: Path
    key: Path
    postfix: lab.Postfix | None = None


@dataclass
class Scenario:
    name: str
    pcap: str
    server: str  # "aiosmtpd" or "postfix"
    client: str
    port: int
    summary: str
    expect: list[list[tuple[Any, ...]]]
    run: Callable[[Ctx, Scenario], None]
    iface: str = "lo"
    keylog: str | None = None
    messages: list[bytes] = field(default_factory=list)
    deliveries: dict[str, int] = field(default_factory=dict)
    checks: list[Callable[[Path, dict[str, Any]], None]] = field(default_factory=list)

    @property
    def bpf(self) -> str:
        return f"tcp port {self.port}"


SCENARIOS: list[Scenario] = []


def scenario(
    **kw: Any,
) -> Callable[[Callable[[Ctx, Scenario], None]], Callable[[Ctx, Scenario], None]]:
    def deco(fn: Callable[[Ctx, Scenario], None]) -> Callable[[Ctx, Scenario], None]:
        SCENARIOS.append(Scenario(run=fn, **kw))
        return fn

    return deco


def smtp(host: str, port: int) -> smtplib.SMTP:
    return smtplib.SMTP(host, port, local_hostname=HELO, timeout=10)


def check_aiosmtpd(
    handler: lab.RecordingHandler, want: list[tuple[str, list[str]]]
) -> None:
    got = [(e.mail_from, list(e.rcpt_tos)) for e in handler.envelopes]
    if got != want:
        raise RuntimeError(f"aiosmtpd received {got}, wanted {want}")


# --------------------------------------------------------------------------
# 1. plain delivery: smtplib -> aiosmtpd, 127.0.0.1:25
# --------------------------------------------------------------------------

PLAIN = [("EHLO", 250), ("MAIL", 250), ("RCPT", 250), ("DATA", 354, 250), ("QUIT", 221)]


@scenario(
    name="plain-delivery",
    pcap="plain-delivery.pcap",
    server="aiosmtpd",
    client="smtplib",
    port=25,
    summary="One message, EHLO/MAIL/RCPT/DATA/QUIT, smtplib to aiosmtpd on "
    "127.0.0.1:25. The body has a line starting with '.', so the "
    "wire shows dot-stuffing ('..').",
    expect=[PLAIN],
    messages=[
        message(
            "plain-delivery",
            1,
            "Plain delivery test",
            [ALICE],
            body=["Hello Alice,", ".this line starts with a dot", "Regards."],
        )
    ],
)
def plain_delivery(ctx: Ctx, sc: Scenario) -> None:
    s = smtp(V4, 25)
    s.sendmail(SENDER, [ALICE], sc.messages[0])
    s.quit()


# --------------------------------------------------------------------------
# 2. several messages with RSET, one transaction abandoned: smtplib -> Postfix
# --------------------------------------------------------------------------


@scenario(
    name="rset-multi",
    pcap="rset-multi.pcap",
    server="postfix",
    client="smtplib",
    port=25,
    summary="One session, three delivered messages with RSET between them, "
    "and one transaction abandoned with RSET after RCPT "
    "(smtplib to Postfix on 127.0.0.1:25).",
    expect=[
        [
            ("EHLO", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("RSET", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("RSET", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("RSET", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("QUIT", 221),
        ]
    ],
    messages=[
        message("rset-multi", 1, "First of three", [ALICE]),
        message("rset-multi", 2, "Second of three", [BOB], cc=[CAROL]),
        message("rset-multi", 3, "Third of three", [CAROL]),
    ],
    deliveries={"alice": 1, "bob": 1, "carol": 2},
)
def rset_multi(ctx: Ctx, sc: Scenario) -> None:
    s = smtp(V4, 25)
    s.ehlo()
    s.sendmail(SENDER, [ALICE], sc.messages[0])
    s.rset()
    s.sendmail(SENDER, [BOB, CAROL], sc.messages[1])
    s.rset()
    s.mail(SENDER)  # abandoned transaction
    s.rcpt(ALICE)
    s.rset()
    s.sendmail(SENDER, [CAROL], sc.messages[2])
    s.quit()


# --------------------------------------------------------------------------
# 3. rejected recipients: smtplib -> Postfix
# --------------------------------------------------------------------------


@scenario(
    name="rejected-rcpt",
    pcap="rejected-rcpt.pcap",
    server="postfix",
    client="smtplib",
    port=25,
    summary="Postfix refuses an unknown local user (550 5.1.1) and relaying "
    "to a foreign domain (554 5.7.1 Relay access denied), accepts "
    "alice; DATA is delivered to alice only (250 ... queued as ID). "
    "A second transaction has its only recipient refused, so smtplib "
    "sends RSET instead of DATA.",
    expect=[
        [
            ("EHLO", 250),
            ("MAIL", 250),
            ("RCPT", 550),
            ("RCPT", 250),
            ("RCPT", 554),
            ("DATA", 354, 250),
            ("MAIL", 250),
            ("RCPT", 550),
            ("RSET", 250),
            ("QUIT", 221),
        ]
    ],
    messages=[
        message("rejected-rcpt", 1, "Mixed recipients", [NOSUCH, ALICE], cc=[FOREIGN])
    ],
    deliveries={"alice": 1},
)
def rejected_rcpt(ctx: Ctx, sc: Scenario) -> None:
    s = smtp(V4, 25)
    refused = s.sendmail(SENDER, [NOSUCH, ALICE, FOREIGN], sc.messages[0])
    assert set(refused) == {NOSUCH, FOREIGN}, refused
    try:
        s.sendmail(
            SENDER, [NOSUCH], message("rejected-rcpt", 2, "Never sent", [NOSUCH])
        )
        raise AssertionError("all-refused transaction was accepted")
    except smtplib.SMTPRecipientsRefused:
        pass
    s.quit()


# --------------------------------------------------------------------------
# 4. pipelining: swaks --pipeline -> Postfix
# --------------------------------------------------------------------------


def swaks(ctx: Ctx, msg: bytes, *args: str) -> str:
    data = ctx.workdir / "swaks-data.eml"
    # swaks turns LF into CRLF and always appends CRLF "." CRLF, so the file
    # leaves out the message's final line break.
    data.write_bytes(msg.replace(b"\r\n", b"\n").removesuffix(b"\n"))
    argv = [
        "swaks",
        "--ehlo",
        HELO,
        "--from",
        SENDER,
        "--data",
        f"@{data}",
        "--timeout",
        "10",
        *args,
    ]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    lab.log(f"swaks rc {p.returncode}: {' '.join(argv)}")
    if p.returncode != 0:
        raise RuntimeError(f"swaks failed rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def check_pipelined(pcap: Path, exp: dict[str, Any]) -> None:
    """The client's MAIL, RCPTs and DATA travel in a single TCP segment."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-Y",
            "smtp.req",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
            "-e",
            "smtp.req.command",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    batches = [ln.split("|") for ln in out.splitlines() if "|" in ln]
    want = ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]
    if want not in batches:
        raise RuntimeError(f"no pipelined segment {want}; got {batches}")
    exp["pipelined_segments"] = batches


@scenario(
    name="pipelining",
    pcap="pipelining.pcap",
    server="postfix",
    client="swaks --pipeline",
    port=25,
    summary="swaks --pipeline against Postfix (advertises PIPELINING): MAIL, "
    "three RCPTs and DATA in one TCP segment, the five replies back "
    "in one segment; the middle RCPT (unknown user) gets 550.",
    expect=[
        [
            ("EHLO", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("RCPT", 550),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("QUIT", 221),
        ]
    ],
    messages=[
        message("pipelining", 1, "Pipelined delivery", [ALICE, NOSUCH], cc=[BOB])
    ],
    deliveries={"alice": 1, "bob": 1},
    checks=[check_pipelined],
)
def pipelining(ctx: Ctx, sc: Scenario) -> None:
    swaks(
        ctx,
        sc.messages[0],
        "--server",
        V4,
        "--port",
        "25",
        "--pipeline",
        "--to",
        f"{ALICE},{NOSUCH},{BOB}",
    )


# --------------------------------------------------------------------------
# 5. BDAT / CHUNKING: raw client -> Postfix
# --------------------------------------------------------------------------


def check_bdat(pcap: Path, exp: dict[str, Any]) -> None:
    txs = exp["sessions"][0]["transactions"]
    sizes = [[c["size"] for c in t["bdat_chunks"]] for t in txs]
    lasts = [[c["last"] for c in t["bdat_chunks"]] for t in txs]
    assert lasts == [[False, False, True], [False, True]], lasts
    assert sizes[1][1] == 0, sizes


@scenario(
    name="bdat",
    pcap="bdat.pcap",
    server="postfix",
    client="raw socket client",
    port=25,
    summary="BDAT/CHUNKING against Postfix (advertises CHUNKING). Transaction "
    "1: three chunks sent one at a time (chunk borders fall inside "
    "header lines), the last 'BDAT n LAST'. Transaction 2: the whole "
    "message in one chunk, then 'BDAT 0 LAST', both pipelined in one "
    "segment.",
    expect=[
        [
            ("EHLO", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("BDAT", 250),
            ("BDAT", 250),
            ("BDAT", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("BDAT", 250),
            ("BDAT", 250),
            ("QUIT", 221),
        ]
    ],
    messages=[
        message(
            "bdat",
            1,
            "Chunked in three",
            [ALICE],
            body=[
                "Sent with BDAT in three chunks.",
                ".a leading dot is not stuffed in BDAT",
            ],
        ),
        message("bdat", 2, "Chunk then BDAT 0 LAST", [BOB], cc=[ALICE]),
    ],
    deliveries={"alice": 1, "bob": 1},
    checks=[check_bdat],
)
def bdat(ctx: Ctx, sc: Scenario) -> None:
    m1, m2 = sc.messages
    r = RawSMTP(V4, 25)
    assert r.reply()[0] == 220
    r.cmd(f"EHLO {HELO}\r\n".encode(), 250)
    r.cmd(f"MAIL FROM:<{SENDER}>\r\n".encode(), 250)
    r.cmd(f"RCPT TO:<{ALICE}>\r\n".encode(), 250)
    chunks = [m1[:100], m1[100:230], m1[230:]]
    for i, chunk in enumerate(chunks):
        last = " LAST" if i == len(chunks) - 1 else ""
        r.cmd(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk, 250)
    r.cmd(f"MAIL FROM:<{SENDER}>\r\n".encode(), 250)
    r.cmd(f"RCPT TO:<{BOB}>\r\n".encode(), 250)
    r.send(f"BDAT {len(m2)}\r\n".encode() + m2 + b"BDAT 0 LAST\r\n")
    assert r.reply()[0] == 250
    assert r.reply()[0] == 250
    r.cmd(b"QUIT\r\n", 221)
    r.close()


# --------------------------------------------------------------------------
# 6. AUTH: smtplib / raw -> aiosmtpd with an authenticator, 127.0.0.1:587
# --------------------------------------------------------------------------


@scenario(
    name="auth",
    pcap="auth.pcap",
    server="aiosmtpd",
    client="smtplib + raw",
    port=587,
    summary="Four sessions to aiosmtpd on 127.0.0.1:587 (AUTH without TLS): "
    "1) AUTH PLAIN with initial response, user alice, 235, then a "
    "message; 2) AUTH LOGIN challenge/response, user bob, wrong "
    "password, 535; 3) AUTH LOGIN challenge/response, bob, 235, then "
    "a message; 4) AUTH LOGIN cancelled with '*' (501), then AUTH "
    "PLAIN without initial response (334 empty challenge), alice, 235.",
    expect=[
        [
            ("EHLO", 250),
            ("AUTH", 235),
            ("MAIL", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("QUIT", 221),
        ],
        [("EHLO", 250), ("AUTH", 535), ("QUIT", 221)],
        [
            ("EHLO", 250),
            ("AUTH", 235),
            ("MAIL", 250),
            ("RCPT", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("QUIT", 221),
        ],
        [("EHLO", 250), ("AUTH", 501), ("AUTH", 235), ("QUIT", 221)],
    ],
    messages=[
        message("auth", 1, "Sent after AUTH PLAIN", [BOB]),
        message("auth", 2, "Sent after AUTH LOGIN", [ALICE], cc=[CAROL]),
    ],
)
def auth(ctx: Ctx, sc: Scenario) -> None:
    handler = lab.RecordingHandler()
    authenticator = lab.Authenticator(AUTH_USERS)
    with (
        lab.aiosmtpd_server(
            V4, 587, handler, authenticator=authenticator, auth_require_tls=False
        ),
        lab.capture(sc.iface, ctx.workdir / sc.pcap, sc.bpf),
    ):
        # 1: AUTH PLAIN with initial response (smtplib's choice for PLAIN)
        s = smtp(V4, 587)
        s.ehlo()
        s.login("alice", AUTH_USERS["alice"])
        s.sendmail(SENDER, [BOB], sc.messages[0])
        s.quit()
        # 2: AUTH LOGIN, challenge/response, wrong password
        s = smtp(V4, 587)
        s.ehlo()
        s.user, s.password = "bob", WRONG_PASSWORD
        try:
            s.auth("LOGIN", s.auth_login, initial_response_ok=False)
            raise AssertionError("wrong password accepted")
        except smtplib.SMTPAuthenticationError as e:
            assert e.smtp_code == 535
        s.quit()
        # 3: AUTH LOGIN, challenge/response, right password
        s = smtp(V4, 587)
        s.ehlo()
        s.user, s.password = "bob", AUTH_USERS["bob"]
        s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        s.sendmail(SENDER, [ALICE, CAROL], sc.messages[1])
        s.quit()
        # 4: AUTH LOGIN cancelled with "*", then AUTH PLAIN without
        #    initial response
        import base64

        r = RawSMTP(V4, 587)
        assert r.reply()[0] == 220
        r.cmd(f"EHLO {HELO}\r\n".encode(), 250)
        r.cmd(b"AUTH LOGIN\r\n", 334)
        r.cmd(b"*\r\n", 501)
        r.cmd(b"AUTH PLAIN\r\n", 334)
        cred = base64.b64encode(b"\0alice\0" + AUTH_USERS["alice"].encode())
        r.cmd(cred + b"\r\n", 235)
        r.cmd(b"QUIT\r\n", 221)
        r.close()
    check_aiosmtpd(handler, [(SENDER, [BOB]), (SENDER, [ALICE, CAROL])])
    want = [
        ("PLAIN", "alice", True),
        ("LOGIN", "bob", False),
        ("LOGIN", "bob", True),
        ("PLAIN", "alice", True),
    ]
    if authenticator.attempts != want:
        raise RuntimeError(f"auth attempts {authenticator.attempts} != {want}")


# --------------------------------------------------------------------------
# 7. STARTTLS: smtplib (key log) -> Postfix submission 127.0.0.1:587
# --------------------------------------------------------------------------

TLS_PLAIN = [
    ("EHLO", 250),
    ("STARTTLS", 220),
    ("EHLO", 250),
    ("MAIL", 250),
    ("RCPT", 250),
    ("DATA", 354, 250),
    ("QUIT", 221),
]


def tls_ctx(ctx: Ctx, sc: Scenario) -> ssl.SSLContext:
    assert sc.keylog
    c = lab.client_tls_context(ctx.cert, ctx.workdir / sc.keylog)
    c.check_hostname = False  # we connect to 127.0.0.1; chain is still verified
    return c


def tls_quit(s: smtplib.SMTP) -> None:
    """QUIT, then wait for Postfix to close first (its TLS close_notify and
    FIN) before closing our end, so the TCP close is a clean FIN exchange.

    smtplib.quit() closes the socket right after 221; Postfix's close_notify
    then reaches a closed socket and the client's kernel answers with RST.
    Sending our own close_notify (SSLSocket.unwrap) instead races with
    Postfix's close, which does not wait for it, and gets an RST from the
    server side.  Neither is wrong SMTP, but these captures are meant to end
    cleanly."""
    code, _ = s.docmd("quit")
    assert code == 221, code
    assert s.sock is not None
    s.sock.settimeout(5)
    while s.sock.recv(4096):
        pass
    s.close()


def check_tls(pcap: Path, exp: dict[str, Any]) -> None:
    for s in exp["sessions"]:
        assert s["tls"] in ("starttls", "implicit"), s["tls"]


@scenario(
    name="starttls",
    pcap="starttls.pcap",
    keylog="starttls.keylog",
    server="postfix",
    client="smtplib",
    port=587,
    summary="STARTTLS on Postfix's submission port 127.0.0.1:587 with a "
    "self-signed certificate (TLS 1.3); EHLO again inside TLS, then "
    "one message. starttls.keylog (NSS key log written by the client) "
    "decrypts it: tshark -o tls.keylog_file:starttls.keylog.",
    expect=[TLS_PLAIN],
    messages=[message("starttls", 1, "Sent over STARTTLS", [ALICE])],
    deliveries={"alice": 1},
    checks=[check_tls],
)
def starttls(ctx: Ctx, sc: Scenario) -> None:
    s = smtp(V4, 587)
    s.ehlo()
    s.starttls(context=tls_ctx(ctx, sc))
    s.ehlo()
    s.sendmail(SENDER, [ALICE], sc.messages[0])
    tls_quit(s)


# --------------------------------------------------------------------------
# 8. implicit TLS: smtplib.SMTP_SSL (key log) -> Postfix smtps 127.0.0.1:465
# --------------------------------------------------------------------------


@scenario(
    name="implicit-tls-465",
    pcap="implicit-tls-465.pcap",
    keylog="implicit-tls-465.keylog",
    server="postfix",
    client="smtplib.SMTP_SSL",
    port=465,
    summary="SMTP inside TLS from the first byte (Postfix smtps wrapper mode "
    "on 127.0.0.1:465, TLS 1.3, self-signed certificate), one message. "
    "Decrypt with tshark -o tls.keylog_file:implicit-tls-465.keylog.",
    expect=[PLAIN],
    messages=[message("implicit-tls-465", 1, "Sent over implicit TLS", [BOB])],
    deliveries={"bob": 1},
    checks=[check_tls],
)
def implicit_tls(ctx: Ctx, sc: Scenario) -> None:
    s = smtplib.SMTP_SSL(
        V4, 465, local_hostname=HELO, timeout=10, context=tls_ctx(ctx, sc)
    )
    s.sendmail(SENDER, [BOB], sc.messages[0])
    tls_quit(s)


# --------------------------------------------------------------------------
# 9. IPv6: swaks -> Postfix [::1]:25
# --------------------------------------------------------------------------


@scenario(
    name="ipv6",
    pcap="ipv6.pcap",
    server="postfix",
    client="swaks",
    port=25,
    summary="Plain delivery over IPv6 loopback: swaks to Postfix on [::1]:25.",
    expect=[PLAIN],
    messages=[message("ipv6", 1, "Delivered over IPv6", [CAROL])],
    deliveries={"carol": 1},
)
def ipv6(ctx: Ctx, sc: Scenario) -> None:
    swaks(ctx, sc.messages[0], "-6", "--server", V6, "--port", "25", "--to", CAROL)


# --------------------------------------------------------------------------
# 10. tcpdump -i any (Linux cooked capture v2): smtplib -> aiosmtpd
# --------------------------------------------------------------------------


@scenario(
    name="sll2-any",
    pcap="sll2-any.pcap",
    server="aiosmtpd",
    client="smtplib",
    port=25,
    iface="any",
    summary="One plain delivery (smtplib to aiosmtpd on 127.0.0.1:25) "
    "captured with tcpdump -i any: link type LINUX_SLL2.",
    expect=[
        [
            ("EHLO", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("QUIT", 221),
        ]
    ],
    messages=[message("sll2-any", 1, "Captured on any", [ALICE], cc=[BOB])],
)
def sll2_any(ctx: Ctx, sc: Scenario) -> None:
    s = smtp(V4, 25)
    s.sendmail(SENDER, [ALICE, BOB], sc.messages[0])
    s.quit()


# --------------------------------------------------------------------------
# 11. STARTTLS refused with 454: smtplib -> aiosmtpd subclass
# --------------------------------------------------------------------------


@scenario(
    name="starttls-454",
    pcap="starttls-454.pcap",
    server="aiosmtpd (subclass)",
    client="smtplib",
    port=25,
    summary="aiosmtpd advertises STARTTLS but answers it with '454 4.7.0 TLS "
    "not available due to temporary reason'; smtplib then goes on in "
    "plaintext and delivers one message.",
    expect=[
        [
            ("EHLO", 250),
            ("STARTTLS", 454),
            ("MAIL", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("QUIT", 221),
        ]
    ],
    messages=[message("starttls-454", 1, "Sent in clear after 454", [ALICE])],
)
def starttls_454(ctx: Ctx, sc: Scenario) -> None:
    s = smtp(V4, 25)
    s.ehlo()
    try:
        s.starttls(context=ssl.create_default_context(cafile=str(ctx.cert)))
        raise AssertionError("STARTTLS unexpectedly accepted")
    except smtplib.SMTPResponseException as e:
        assert e.smtp_code == 454, e
    s.sendmail(SENDER, [ALICE], sc.messages[0])
    s.quit()


# --------------------------------------------------------------------------
# 12. LF-only line endings and lowercase verbs: raw client -> Postfix
# --------------------------------------------------------------------------


@scenario(
    name="lf-only",
    pcap="lf-only.pcap",
    server="postfix",
    client="raw socket client",
    port=25,
    summary="An odd client: bare LF line endings everywhere (commands, "
    "message, the '.' terminator) and lowercase verbs (helo, noop, "
    "mail from:, rcpt to:, data, quit). Postfix 3.7 "
    "(smtpd_forbid_bare_newline = no) accepts and delivers it.",
    expect=[
        [
            ("HELO", 250),
            ("NOOP", 250),
            ("MAIL", 250),
            ("RCPT", 250),
            ("DATA", 354, 250),
            ("QUIT", 221),
        ]
    ],
    messages=[message("lf-only", 1, "LF-only line endings", [ALICE], eol=b"\n")],
    deliveries={"alice": 1},
)
def lf_only(ctx: Ctx, sc: Scenario) -> None:
    r = RawSMTP(V4, 25)
    assert r.reply()[0] == 220
    r.cmd(f"helo {HELO}\n".encode(), 250)
    r.cmd(b"noop\n", 250)
    r.cmd(f"mail from:<{SENDER}>\n".encode(), 250)
    r.cmd(f"rcpt to:<{ALICE}>\n".encode(), 250)
    r.cmd(b"data\n", 354)
    r.cmd(sc.messages[0] + b".\n", 250)
    r.cmd(b"quit\n", 221)
    r.close()


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def run_scenario(ctx: Ctx, sc: Scenario, outdir: Path) -> dict[str, Any]:
    """Make one capture; try again (up to 3 times) if tcpdump lost packets."""
    for attempt in range(1, 4):
        try:
            return run_once(ctx, sc, outdir)
        except lab.PacketsDropped as e:
            lab.log(f"{sc.name}: attempt {attempt}: {e}")
    raise RuntimeError(f"{sc.name}: tcpdump dropped packets three times")


def run_once(ctx: Ctx, sc: Scenario, outdir: Path) -> dict[str, Any]:
    lab.log(f"=== {sc.name}")
    lab.DROPS.clear()
    pcap_tmp = ctx.workdir / sc.pcap
    for p in (pcap_tmp, *([ctx.workdir / sc.keylog] if sc.keylog else [])):
        p.unlink(missing_ok=True)
    before = (
        {u: ctx.postfix.maildir_count(u) for u in lab.POSTFIX_USERS}
        if ctx.postfix
        else {}
    )
    if sc.name == "auth":
        sc.run(ctx, sc)  # manages its own server and capture
    elif sc.server.startswith("aiosmtpd"):
        handler = lab.RecordingHandler()
        kwargs: dict[str, Any] = {}
        if sc.name == "starttls-454":
            sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            sctx.load_cert_chain(ctx.cert, ctx.key)
            kwargs = {"controller_cls": lab.Refuse454Controller, "tls_context": sctx}
        with (
            lab.aiosmtpd_server(V4, sc.port, handler, **kwargs),
            lab.capture(sc.iface, pcap_tmp, sc.bpf),
        ):
            sc.run(ctx, sc)
        if len(handler.envelopes) != len(sc.messages):
            raise RuntimeError(f"aiosmtpd got {len(handler.envelopes)} messages")
    else:
        with lab.capture(sc.iface, pcap_tmp, sc.bpf):
            sc.run(ctx, sc)
    if ctx.postfix and sc.server == "postfix":
        want = {u: before[u] + sc.deliveries.get(u, 0) for u in lab.POSTFIX_USERS}
        ctx.postfix.wait_delivered(want)
        lab.log(f"delivered to maildirs: {sc.deliveries}")
    if lab.DROPS != [0]:
        raise lab.PacketsDropped(f"tcpdump kernel drops: {lab.DROPS}")
    return verify_and_describe(ctx, sc, outdir)


def verify_and_describe(ctx: Ctx, sc: Scenario, outdir: Path) -> dict[str, Any]:
    pcap_tmp = ctx.workdir / sc.pcap
    keylog_tmp = ctx.workdir / sc.keylog if sc.keylog else None
    sessions = truth.sessions(pcap_tmp, keylog_tmp)
    got = [truth.dialog(s) for s in sessions]
    problems = []
    if got != sc.expect:
        problems.append(f"dialog mismatch:\n got  {got}\n want {sc.expect}")
    for s in sessions:
        if not {s["client_ip"], s["server_ip"]} <= {"127.0.0.1", "::1"}:
            problems.append(f"non-loopback address in {s['tcp_stream']}")
        t = s["tcp"]
        if not (t["handshake"] and t["fin_client"] and t["fin_server"]) or t["rst"]:
            problems.append(f"stream {s['tcp_stream']}: incomplete TCP: {t}")
        if (
            s["unpaired_client_bytes"]
            or s["unpaired_replies"]
            or s["partial_reply_bytes"]
        ):
            problems.append(f"stream {s['tcp_stream']}: leftovers in pairing")
    delivered = [
        t for s in sessions for t in s["transactions"] if t.get("final_code") == 250
    ]
    got_hashes = [t["message_sha256"] for t in delivered]
    want_hashes = [hashlib.sha256(m).hexdigest() for m in sc.messages]
    if got_hashes != want_hashes:
        problems.append(f"message hashes differ: {got_hashes} vs {want_hashes}")
    net, ltname = truth.link_type(pcap_tmp)
    exp: dict[str, Any] = {
        "file": sc.pcap,
        "keylog": sc.keylog,
        "link_type": ltname,
        "dlt": net,
        "capture_command": f"tcpdump -i {sc.iface} -w {sc.pcap} -s 0 '{sc.bpf}'",
        "server": sc.server,
        "client": sc.client,
        "server_port": sc.port,
        "summary": sc.summary,
        "sha256": hashlib.sha256(pcap_tmp.read_bytes()).hexdigest(),
        "size_bytes": pcap_tmp.stat().st_size,
        "dialogs": [[list(x) for x in d] for d in got],
        "sessions": sessions,
    }
    for check in sc.checks:
        try:
            check(pcap_tmp, exp)
        except Exception as e:  # report, do not hide
            problems.append(f"check {check.__name__}: {e!r}")
    if problems:
        raise RuntimeError(f"{sc.name}: " + "\n".join(problems))
    shutil.copyfile(pcap_tmp, outdir / sc.pcap)
    if keylog_tmp and sc.keylog:
        shutil.copyfile(keylog_tmp, outdir / sc.keylog)
    lab.log(
        f"{sc.pcap}: {exp['size_bytes']} bytes, {ltname}, "
        f"{len(sessions)} session(s), ok"
    )
    return exp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="re-make only these captures (see --list)",
    )
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args()
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name:18} {sc.pcap:24} {sc.server} <- {sc.client}")
        return 0
    if os.geteuid() != 0:
        print("run as root (ports 25/465/587, tcpdump, postfix)", file=sys.stderr)
        return 2
    chosen = [sc for sc in SCENARIOS if not args.only or sc.name in args.only]
    unknown = set(args.only or []) - {sc.name for sc in SCENARIOS}
    if unknown:
        print(f"unknown capture(s): {sorted(unknown)}", file=sys.stderr)
        return 2

    lab.become_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="smtpscope-captures-"))
    workdir.chmod(0o755)  # Postfix daemons (postfix, nobody) must traverse it
    lab.log(f"workdir {workdir}")
    cert, key = lab.make_cert(workdir)
    ctx = Ctx(workdir, cert, key)
    results: dict[str, Any] = {}
    failed: list[str] = []
    try:
        for sc in [s for s in chosen if not s.server.startswith("postfix")]:
            try:
                results[sc.pcap] = run_scenario(ctx, sc, args.out)
            except Exception:
                traceback.print_exc()
                failed.append(sc.name)
        pf_scenarios = [s for s in chosen if s.server == "postfix"]
        if pf_scenarios:
            ctx.postfix = lab.Postfix(workdir / "postfix", cert, key)
            try:
                ctx.postfix.start()
                for sc in pf_scenarios:
                    try:
                        results[sc.pcap] = run_scenario(ctx, sc, args.out)
                    except Exception:
                        traceback.print_exc()
                        failed.append(sc.name)
            finally:
                ctx.postfix.stop()
                if failed:
                    print(ctx.postfix.maillog()[-4000:], file=sys.stderr)
    finally:
        left = lab.reap_children()
        if left:
            lab.log(f"ERROR: processes still running: {left}")
            failed.append("cleanup")
        if args.keep_workdir or failed:
            lab.log(f"kept workdir {workdir}")
        else:
            shutil.rmtree(workdir)

    write_expected(args.out / "expected.json", results)
    if failed:
        lab.log(f"FAILED: {failed}")
        return 1
    lab.log("all captures made and verified")
    return 0


def write_expected(path: Path, results: dict[str, Any]) -> None:
    doc: dict[str, Any] = {}
    if path.exists():
        doc = json.loads(path.read_text())
    doc["_about"] = (
        "Ground truth for the captures in this directory, written by "
        "make_captures.py from tshark's reading of each pcap (follow "
        "tcp/tls streams), checked against the dialog the script drove. "
        "Passwords are not recorded: AUTH lines are summarised and "
        "'password' says whether the one sent was right or wrong."
    )
    doc["tools"] = lab.tool_versions()
    caps = doc.setdefault("captures", {})
    caps.update(results)
    doc["captures"] = {k: caps[k] for k in sorted(caps)}
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
