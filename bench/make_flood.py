#!/usr/bin/env python3
"""Write a SYN flood on port 25 as a classic pcap: hostile input for smtpscope.

    python bench/make_flood.py --syns 100000 /tmp/smtpscope-bench/flood.pcap
    /usr/bin/time -v smtpscope read /tmp/smtpscope-bench/flood.pcap -q -j 1 \\
        -o /tmp/smtpscope-bench/flood-out

Each SYN comes from its own client address and port, 1,000 a second unless
``--rate`` says otherwise, and no SYN-ACK ever answers: every one opens a
connection, an attempt, that stays open until the attempt timeout (60 s)
closes it or until ``--max-connections`` evicts it. What a run costs then
follows the connections held open at once and the sessions made, not the
bytes read. Nothing is sent anywhere: frames are built in
memory and written to the file. The same ``--syns`` give the same bytes.

With ``--answered`` each SYN is answered with a SYN-ACK a third of the time
between two SYNs later, and the client's ACK completes the handshake as
long after that, so the packets stay in time order; the client then says
nothing: a flood of connections rather than of attempts, each a session
whose client is known to own its address.

With ``--unknown-users N`` the capture holds SMTP sessions instead, one a
second from ``--clients`` clients in turn to ``--servers`` servers in turn,
each sending ``--per-session`` RCPTs pipelined in one transaction, every
one to a domain of its own and refused as an unknown user (550 5.1.1, as
Postfix words it): N distinct domains in all, each of which the relay
detector takes its server to own.

    python bench/make_flood.py --unknown-users 1000000 /tmp/h/unknown.pcap
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path
from random import Random
from typing import BinaryIO

from synth_tcp import TcpConn, Wire

_FILE_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1)
_RECORD = struct.Struct("<IIII")
START_S = 1_709_251_200  # 2024-03-01T00:00:00Z
PER_SECOND = 1000
SERVER = bytes([192, 0, 2, 25])  # TEST-NET-1 (RFC 5737): never a real host
SYN = 0x02
ACK = 0x10
CLIENT_SIDE, SERVER_SIDE = 0, 1  # synth_tcp's senders


def client_of(index: int) -> tuple[bytes, int]:
    """A distinct address in 198.18.0.0/15 (RFC 2544, benchmarking) and port."""
    address = bytes([198, 18 + (index >> 16) % 2, (index >> 8) & 0xFF, index & 0xFF])
    return address, 1024 + index % 60_000


def unknown_user_sessions(
    out: BinaryIO, rcpts: int, per_session: int, clients: int, servers: int
) -> int:
    """Write the sessions of ``--unknown-users``; return how many."""
    rng = Random(5321)
    sessions = -(-rcpts // per_session)
    for index in range(sessions):
        server = index % servers
        name = f"mx{server}.victim{server}.example"
        address = bytes([192, 0, 2, 25 + server % 200])
        wire = Wire(client_of(index % clients), (address, 25), ident=index & 0xFFFF)
        conn = TcpConn(wire, rng, index * 1_000_000, rtt_us=400, pace_us=10)
        first = index * per_session
        domains = range(first, min(first + per_session, rcpts))
        lines = [f"u{n}@d{n}.example" for n in domains]
        talk = [
            (SERVER_SIDE, f"220 {name} ESMTP Postfix\r\n"),
            (CLIENT_SIDE, "EHLO client.example\r\n"),
            (SERVER_SIDE, f"250-{name}\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
            (CLIENT_SIDE, "MAIL FROM:<probe@client.example>\r\n"),
            (SERVER_SIDE, "250 2.1.0 Ok\r\n"),
            (CLIENT_SIDE, "".join(f"RCPT TO:<{a}>\r\n" for a in lines)),
            (
                SERVER_SIDE,
                "".join(
                    f"550 5.1.1 <{a}>: Recipient address rejected: User unknown"
                    " in virtual mailbox table\r\n"
                    for a in lines
                ),
            ),
            (CLIENT_SIDE, "QUIT\r\n"),
            (SERVER_SIDE, "221 2.0.0 Bye\r\n"),
        ]
        frames = list(conn.open())
        for side, text in talk:
            frames += conn.send(side, text.encode(), 300)
        frames += conn.close(CLIENT_SIDE)
        for at_us, headers, payload in frames:
            seconds, micros = divmod(at_us, 1_000_000)
            size = len(headers) + len(payload)
            out.write(_RECORD.pack(START_S + seconds, micros, size, size))
            out.write(headers)
            out.write(payload)
    return sessions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="pcap file to write")
    parser.add_argument("--syns", type=int, default=100_000, help="SYNs to write")
    parser.add_argument(
        "--rate", type=int, default=PER_SECOND, help="SYNs a second (default: 1000)"
    )
    parser.add_argument(
        "--answered",
        action="store_true",
        help="complete each handshake (SYN-ACK, then the client's ACK)",
    )
    parser.add_argument(
        "--unknown-users",
        type=int,
        metavar="N",
        help="write sessions with N RCPTs refused as unknown users, each to a "
        "domain of its own, instead of SYNs",
    )
    parser.add_argument(
        "--per-session", type=int, default=100, help="RCPTs a session (100)"
    )
    parser.add_argument("--clients", type=int, default=10, help="clients (10)")
    parser.add_argument("--servers", type=int, default=1, help="servers (1)")
    args = parser.parse_args(argv)
    if args.syns < 1:
        parser.error("--syns must be at least 1")
    if args.rate < 1:
        parser.error("--rate must be at least 1")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.unknown_users is not None:
        if min(args.unknown_users, args.per_session, args.clients) < 1:
            parser.error("--unknown-users, --per-session and --clients must be >= 1")
        if not 1 <= args.servers <= 200:
            parser.error("--servers must be 1 to 200")
        with args.output.open("wb") as out:
            out.write(_FILE_HEADER)
            sessions = unknown_user_sessions(
                out, args.unknown_users, args.per_session, args.clients, args.servers
            )
        print(
            f"wrote {sessions:,} sessions with {args.unknown_users:,} RCPTs "
            f"refused as unknown users to {args.output}",
            file=sys.stderr,
        )
        return 0
    with args.output.open("wb") as out:
        out.write(_FILE_HEADER)
        for index in range(args.syns):
            wire = Wire(client_of(index), (SERVER, 25), ident=index & 0xFFFF)
            seq = index * 7919 % (1 << 32)
            frames = [
                wire.syn_frame(0, seq=seq, ack=0, flags=SYN, mss=1460, tsval=index)
            ]
            if args.answered:
                server_seq = (seq * 31 + 12345) % (1 << 32)
                frames.append(
                    wire.syn_frame(
                        SERVER_SIDE, server_seq, seq + 1, SYN | ACK, 1460, index
                    )
                )
                frames.append(
                    wire.frame(
                        CLIENT_SIDE, seq + 1, server_seq + 1, ACK, b"", 0, index, index
                    )
                )
            for step, frame in enumerate(frames):
                at_us = (3 * index + step) * 1_000_000 // (3 * args.rate)
                seconds, micros = divmod(at_us, 1_000_000)
                out.write(
                    _RECORD.pack(START_S + seconds, micros, len(frame), len(frame))
                )
                out.write(frame)
    print(f"wrote {args.syns:,} SYNs to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
