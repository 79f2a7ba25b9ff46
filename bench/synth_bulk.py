"""Non-SMTP TCP flows for synthetic captures: HTTPS, HTTP and SSH transfers.

They make up most of a capture's packets and nearly all of its bytes, so they
are built for speed: their data comes from ``Chunks`` blobs whose checksum
shares are known in advance, and a flow's frames are produced lazily. A flow
checks ``Budget.closing`` before each segment and ends early, with a normal
FIN exchange, once the capture has reached its size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from random import Random

from synth_tcp import CLIENT, SERVER, Chunks, Frame, TcpConn, mss_for

# Destination port and share of flows.
PORT_WEIGHTS: dict[int, int] = {443: 60, 80: 20, 22: 20}
_RECORD_PIECES = 11  # an HTTPS blob's TLS records are 11 segments long
_PIECES = 2048


@dataclass(slots=True)
class Budget:
    """Set ``closing`` once the capture is big enough."""

    closing: bool = False


@dataclass(frozen=True, slots=True)
class BulkKit:
    """Precomputed payload blobs, per MSS (IPv4 and IPv6)."""

    tls: dict[int, Chunks]
    raw: dict[int, Chunks]

    @classmethod
    def build(cls, rng: Random) -> BulkKit:
        tls: dict[int, Chunks] = {}
        raw: dict[int, Chunks] = {}
        for mss in (mss_for(False), mss_for(True)):
            raw[mss] = Chunks.of(rng.randbytes(_PIECES * mss), mss)
            tls[mss] = Chunks.of(_tls_blob(rng, mss), mss)
        return cls(tls, raw)


def _tls_blob(rng: Random, mss: int) -> bytes:
    """Back-to-back application-data records, one per 11 segments."""
    size = _RECORD_PIECES * mss - 5
    header = bytes((0x17, 3, 3, size >> 8, size & 0xFF))  # RFC 8446 5.2
    records = _PIECES // _RECORD_PIECES + 1
    return b"".join(header + rng.randbytes(size) for _ in range(records))


def bulk_flow(
    conn: TcpConn, rng: Random, kit: BulkKit, budget: Budget, port: int
) -> Iterator[Frame]:
    """One transfer of 30 KB to 8 MB, log-uniformly drawn."""
    size = int(math.exp(rng.uniform(math.log(30e3), math.log(8e6))))
    pieces = max(size // conn.mss, 2)
    yield from conn.open()
    if port == 443:
        yield from _https(conn, rng, kit, budget, pieces)
    elif port == 80:
        yield from _http(conn, rng, kit, budget, pieces)
    else:
        yield from _ssh(conn, rng, kit, budget, pieces)
    yield from conn.close(CLIENT)


def _pieces(
    chunks: Chunks, first: int, count: int, budget: Budget
) -> Iterator[tuple[memoryview, int]]:
    for index in range(first, first + count):
        if budget.closing:
            return
        yield chunks.piece(index)


def _https(
    conn: TcpConn, rng: Random, kit: BulkKit, budget: Budget, pieces: int
) -> Iterator[Frame]:
    noise = kit.raw[conn.mss].view
    hello = bytes((0x16, 3, 1, 2, 0, 1)) + bytes(noise[:511])
    yield from conn.send(CLIENT, hello, conn.rtt)
    flight = bytes((0x16, 3, 3, 11, 184)) + bytes(noise[600:3600])
    yield from conn.send(SERVER, flight, conn.rtt + 500)
    request = bytes((0x17, 3, 3, 1, 144)) + bytes(noise[4000:4400])
    yield from conn.send(CLIENT, request, conn.rtt)
    conn.now += conn.rtt + 2000
    chunks = kit.tls[conn.mss]
    first = rng.randrange(len(chunks) // _RECORD_PIECES) * _RECORD_PIECES
    count = -(-pieces // _RECORD_PIECES) * _RECORD_PIECES  # whole records
    yield from conn.stream(SERVER, _pieces(chunks, first, count, budget))


def _http(
    conn: TcpConn, rng: Random, kit: BulkKit, budget: Budget, pieces: int
) -> Iterator[Frame]:
    chunks = kit.raw[conn.mss]
    length = pieces * conn.mss
    path = f"/files/{rng.randrange(1 << 20):x}.bin"
    request = f"GET {path} HTTP/1.1\r\nHost: www.example.com\r\n\r\n".encode()
    yield from conn.send(CLIENT, request, conn.rtt)
    # The body is cut short when the capture is full; its declared length
    # then exceeds what follows, as in a capture that stopped mid-download.
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    yield from conn.send(SERVER, head, conn.rtt + 3000)
    first = rng.randrange(len(chunks))
    yield from conn.stream(SERVER, _pieces(chunks, first, pieces, budget))


def _ssh(
    conn: TcpConn, rng: Random, kit: BulkKit, budget: Budget, pieces: int
) -> Iterator[Frame]:
    # RFC 4253 4.2: both sides send an identification line first.
    yield from conn.send(SERVER, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", conn.rtt)
    yield from conn.send(CLIENT, b"SSH-2.0-OpenSSH_9.6\r\n", conn.rtt)
    chunks = kit.raw[conn.mss]
    sender = SERVER if rng.random() < 0.5 else CLIENT
    first = rng.randrange(len(chunks))
    conn.now += conn.rtt * 4
    yield from conn.stream(sender, _pieces(chunks, first, pieces, budget))
