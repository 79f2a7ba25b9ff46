"""SMTP sessions for synthetic captures, and the ground truth they add up to.

A session is played over a ``TcpConn`` and yields its frames; everything it
does is counted in a ``Truth``, which is what an analyzer reading the capture
should find. Dialogs follow RFC 5321 (reply codes as Postfix words them),
RFC 3030 (BDAT), RFC 3207 (STARTTLS), RFC 4954 (AUTH PLAIN) and RFC 2920
(PIPELINING). Counting rules:

- every connection to port 25, 465 or 587 is a session;
- a transaction is a MAIL command seen in clear text; its message counts as
  accepted when the server answered the end of data (or the BDAT LAST chunk)
  with 250. ``message_bytes`` adds up those messages' sizes after
  dot-unstuffing, final CRLF included, without the terminating ".CRLF";
- what follows TLS (STARTTLS or port 465) is random bytes in TLS record
  framing: a mail transfer of that size happened, but none of it is counted
  as a transaction.
"""

from __future__ import annotations

import base64
import bisect
import enum
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from random import Random
from typing import Any

from synth_tcp import CLIENT, SERVER, Frame, TcpConn


@dataclass(slots=True)
class Truth:
    """What the generator put in the capture."""

    sessions: int = 0
    sessions_by_kind: dict[str, int] = field(default_factory=dict)
    sessions_ipv6: int = 0
    transactions: int = 0
    transactions_pipelined: int = 0
    messages_accepted: int = 0
    messages_bdat: int = 0
    message_bytes: int = 0
    transactions_no_recipient: int = 0  # every RCPT refused: RSET or 554
    recipients: int = 0
    recipients_accepted: int = 0
    recipients_refused: int = 0
    tls_sessions: int = 0
    tls_messages_hidden: int = 0
    retransmitted_segments: int = 0
    reordered_segments: int = 0
    smtp_packets: int = 0
    other_flows: int = 0
    packets: int = 0
    bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Kind(enum.StrEnum):
    PLAIN = "plain"  # port 25, no TLS
    AUTH = "auth"  # port 587, AUTH PLAIN in clear text
    STARTTLS = "starttls"  # port 25 or 587, TLS after EHLO
    IMPLICIT_TLS = "implicit_tls"  # port 465, TLS from the first byte


# Share of sessions of each kind; the port follows from the kind.
KIND_WEIGHTS: dict[Kind, int] = {
    Kind.PLAIN: 45,
    Kind.AUTH: 15,
    Kind.STARTTLS: 30,
    Kind.IMPLICIT_TLS: 10,
}


def port_for(kind: Kind, rng: Random) -> int:
    if kind is Kind.PLAIN:
        return 25
    if kind is Kind.STARTTLS:
        return rng.choice((25, 25, 587))
    return 587 if kind is Kind.AUTH else 465


_VOCABULARY = (
    "the quarterly report is attached please find invoice meeting agenda for "
    "next week project status update server migration schedule backup window "
    "network maintenance customer feedback summary draft contract review "
    "thanks regards best team notes action items deadline budget forecast"
)
_WORDS = _VOCABULARY.split()


@dataclass(frozen=True, slots=True)
class Corpus:
    """Message text with its dot-stuffed twin and both line start offsets."""

    raw: bytes
    stuffed: bytes
    raw_starts: list[int]
    stuffed_starts: list[int]

    @classmethod
    def build(cls, rng: Random, lines: int = 4000) -> Corpus:
        raw_lines = [_text_line(rng) for _ in range(lines)]
        # RFC 5321 4.5.2: a line that starts with "." gets one more.
        stuffed_lines = [b"." + ln if ln[:1] == b"." else ln for ln in raw_lines]
        return cls(
            b"".join(raw_lines),
            b"".join(stuffed_lines),
            _starts(raw_lines),
            _starts(stuffed_lines),
        )

    def body(self, rng: Random, size: int) -> tuple[bytes, bytes]:
        """About ``size`` bytes of whole lines: (raw, dot-stuffed)."""
        last = bisect.bisect_left(self.raw_starts, len(self.raw) - size) - 1
        first = rng.randrange(max(last, 1))
        want = self.raw_starts[first] + size
        end = min(bisect.bisect_left(self.raw_starts, want), len(self.raw_starts) - 1)
        raw = self.raw[self.raw_starts[first] : self.raw_starts[end]]
        stuffed = self.stuffed[self.stuffed_starts[first] : self.stuffed_starts[end]]
        return raw, stuffed


def _text_line(rng: Random) -> bytes:
    roll = rng.random()
    if roll < 0.06:
        return b"\r\n"
    words = " ".join(rng.choices(_WORDS, k=rng.randint(2, 12)))
    if roll < 0.10:
        words = rng.choice((".", "..", ". ", ".sig ")) + words
    return words.encode() + b"\r\n"


def _starts(lines: list[bytes]) -> list[int]:
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


@dataclass(frozen=True, slots=True)
class Kit:
    """Read-only material shared by all sessions."""

    corpus: Corpus
    noise: bytes  # random bytes for TLS record bodies

    @classmethod
    def build(cls, rng: Random) -> Kit:
        return cls(Corpus.build(rng), rng.randbytes(1 << 20))

    def noise_bytes(self, rng: Random, size: int) -> bytes:
        start = rng.randrange(len(self.noise) - size)
        return self.noise[start : start + size]


SERVER_NAME = "mx.example.net"
EHLO_REPLY = (
    f"250-{SERVER_NAME}\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n"
    "250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n250 CHUNKING\r\n"
).encode()
GREETING = f"220 {SERVER_NAME} ESMTP ready\r\n".encode()
OK_MAIL = b"250 2.1.0 Ok\r\n"
OK_RCPT = b"250 2.1.5 Ok\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
NO_RECIPIENT = b"554 5.5.1 Error: no valid recipients\r\n"
OK_RSET = b"250 2.0.0 Ok\r\n"
BYE = b"221 2.0.0 Bye\r\n"
TLS_READY = b"220 2.0.0 Ready to start TLS\r\n"
AUTH_OK = b"235 2.7.0 Authentication successful\r\n"


def _refused(address: str) -> bytes:
    return (
        f"550 5.1.1 <{address}>: Recipient address rejected: "
        "User unknown in local recipient table\r\n"
    ).encode()


def _tls_record(kit: Kit, rng: Random, content_type: int, size: int) -> bytes:
    # RFC 8446 5.1: type, legacy version 3.3, length, then opaque bytes.
    return bytes((content_type, 3, 3, size >> 8, size & 0xFF)) + kit.noise_bytes(
        rng, size
    )


class SmtpSession:
    """One SMTP connection: its plan is drawn from ``rng`` as it is played."""

    def __init__(
        self, conn: TcpConn, rng: Random, kit: Kit, truth: Truth, kind: Kind
    ) -> None:
        self.conn = conn
        self.rng = rng
        self.kit = kit
        self.truth = truth
        self.kind = kind
        self.client_name = f"host{rng.randrange(10_000)}.example.org"
        self.pipelining = rng.random() < 0.5

    def frames(self) -> Iterator[Frame]:
        truth = self.truth
        truth.sessions += 1
        by_kind = truth.sessions_by_kind
        by_kind[self.kind.value] = by_kind.get(self.kind.value, 0) + 1
        truth.sessions_ipv6 += self.conn.wire.ipv6
        yield from self.conn.open()
        if self.kind is Kind.IMPLICIT_TLS:
            yield from self._tls()
            yield from self.conn.close(CLIENT)
            return

        yield from self._server(GREETING)
        yield from self._client(f"EHLO {self.client_name}\r\n".encode())
        yield from self._server(EHLO_REPLY)
        if self.kind is Kind.STARTTLS:
            yield from self._client(b"STARTTLS\r\n")
            yield from self._server(TLS_READY)
            yield from self._tls()
            yield from self.conn.close(CLIENT)
            return
        if self.kind is Kind.AUTH:
            yield from self._auth()
        count = self.rng.choices((1, 2, 3), (75, 18, 7))[0]
        for _ in range(count):
            yield from self._transaction()
        yield from self._client(b"QUIT\r\n")
        yield from self._server(BYE)
        yield from self.conn.close(CLIENT)

    # -- one write each way ---------------------------------------------------

    def _client(self, data: bytes) -> Iterator[Frame]:
        delay = self.conn.rtt // 2 + self.rng.randrange(200, 3000)
        yield from self.conn.send(CLIENT, data, delay)

    def _server(self, data: bytes, think_us: int = 0) -> Iterator[Frame]:
        delay = self.conn.rtt // 2 + think_us + self.rng.randrange(100, 2000)
        yield from self.conn.send(SERVER, data, delay)

    # -- dialog steps ---------------------------------------------------------

    def _auth(self) -> Iterator[Frame]:
        # RFC 4954 4 with the PLAIN mechanism of RFC 4616 2.
        user = f"user{self.rng.randrange(1000)}"
        token = base64.b64encode(f"\0{user}\0secret-{user}".encode()).decode()
        yield from self._client(f"AUTH PLAIN {token}\r\n".encode())
        yield from self._server(AUTH_OK, think_us=5000)

    def _transaction(self) -> Iterator[Frame]:
        rng, truth = self.rng, self.truth
        sender = f"user{rng.randrange(1000)}@example.org"
        rcpts = [
            f"rcpt{rng.randrange(5000)}@example.com"
            for _ in range(rng.choices((1, 2, 3, 4, 5), (50, 25, 12, 8, 5))[0])
        ]
        accepted = [rng.random() >= 0.1 for _ in rcpts]
        bdat = rng.random() < 0.15
        raw, stuffed = self._message(sender, rcpts)
        mail = f"MAIL FROM:<{sender}> SIZE={len(raw)}\r\n".encode()
        rcpt_cmds = [f"RCPT TO:<{a}>\r\n".encode() for a in rcpts]
        replies = [
            OK_RCPT if ok else _refused(a)
            for a, ok in zip(rcpts, accepted, strict=True)
        ]

        truth.transactions += 1
        truth.recipients += len(rcpts)
        truth.recipients_accepted += sum(accepted)
        truth.recipients_refused += len(rcpts) - sum(accepted)
        if self.pipelining:
            # RFC 2920 3.1: MAIL, RCPT and DATA go in one write; the server
            # answers them in one write too.
            truth.transactions_pipelined += 1
            tail = [] if bdat else [b"DATA\r\n"]
            yield from self._client(b"".join([mail, *rcpt_cmds, *tail]))
            last = [] if bdat else [GO_AHEAD if any(accepted) else NO_RECIPIENT]
            yield from self._server(b"".join([OK_MAIL, *replies, *last]))
        else:
            yield from self._client(mail)
            yield from self._server(OK_MAIL)
            for command, reply in zip(rcpt_cmds, replies, strict=True):
                yield from self._client(command)
                yield from self._server(reply)

        if not any(accepted):
            truth.transactions_no_recipient += 1
            if not self.pipelining or bdat:
                yield from self._client(b"RSET\r\n")
                yield from self._server(OK_RSET)
            return
        if bdat:
            yield from self._bdat(raw)
        else:
            if not self.pipelining:
                yield from self._client(b"DATA\r\n")
                yield from self._server(GO_AHEAD)
            # RFC 5321 4.1.1.4: the message ends with CRLF "." CRLF.
            yield from self._client(stuffed + b".\r\n")
            yield from self._server(self._queued(), think_us=20_000)
        truth.messages_accepted += 1
        truth.message_bytes += len(raw)

    def _bdat(self, raw: bytes) -> Iterator[Frame]:
        # RFC 3030 2: chunks of exact sizes, the last one marked LAST.
        cuts = sorted(self.rng.sample(range(1, len(raw)), self.rng.randrange(3)))
        bounds = [0, *cuts, len(raw)]
        for start, end in itertools.pairwise(bounds):
            last = end == len(raw)
            command = f"BDAT {end - start}{' LAST' if last else ''}\r\n".encode()
            yield from self._client(command + raw[start:end])
            if last:
                yield from self._server(self._queued(), think_us=20_000)
            else:
                reply = f"250 2.0.0 {end - start} octets received\r\n".encode()
                yield from self._server(reply)
        self.truth.messages_bdat += 1

    def _queued(self) -> bytes:
        queue_id = f"{self.rng.getrandbits(40):010X}"
        return f"250 2.0.0 Ok: queued as {queue_id}\r\n".encode()

    def _message(self, sender: str, rcpts: list[str]) -> tuple[bytes, bytes]:
        """A message of 2 to 50 KB: (raw, dot-stuffed), each ending in CRLF."""
        rng = self.rng
        headers = (
            f"Date: Fri, 01 Mar 2024 10:{rng.randrange(60):02d}:00 +0000\r\n"
            f"From: <{sender}>\r\nTo: {', '.join(rcpts)}\r\n"
            f"Subject: report {rng.randrange(100_000)}\r\n"
            f"Message-ID: <{rng.getrandbits(48):x}@{self.client_name}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        size = rng.randint(2 * 1024, 50 * 1024) - len(headers)
        raw, stuffed = self.kit.corpus.body(rng, size)
        return headers + raw, headers + stuffed

    def _tls(self) -> Iterator[Frame]:
        """A TLS 1.3-looking handshake, then one mail transfer in records."""
        self.truth.tls_sessions += 1
        self.truth.tls_messages_hidden += 1
        rng, kit = self.rng, self.kit

        def records(content_type: int, *sizes: int) -> bytes:
            return b"".join(_tls_record(kit, rng, content_type, n) for n in sizes)

        ccs = b"\x14\x03\x03\x00\x01\x01"  # change_cipher_spec, RFC 8446 D.4
        hello = bytes((0x16, 3, 1, 2, 0, 1)) + kit.noise_bytes(rng, 511)
        yield from self._client(hello)
        server_hello = records(0x16, 122) + ccs
        yield from self._server(server_hello + records(0x17, rng.randint(2000, 4500)))
        yield from self._client(ccs + records(0x17, 53))

        # The encrypted dialog: greeting, EHLO, envelope, message, QUIT.
        for side, size in ((SERVER, 45), (CLIENT, 35), (SERVER, 190), (CLIENT, 140)):
            send = self._server if side == SERVER else self._client
            yield from send(records(0x17, size))
        body = rng.randint(2 * 1024, 50 * 1024)
        sizes = [16_384] * (body // 16_384) + [body % 16_384 or 1]
        yield from self._client(records(0x17, *[n + 17 for n in sizes]))
        yield from self._server(records(0x17, 60), think_us=20_000)
        yield from self._client(records(0x17, 23))
        yield from self._server(records(0x17, 32))
