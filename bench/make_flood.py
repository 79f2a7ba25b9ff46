#!/usr/bin/env python3
"""Write a SYN flood on port 25 as a classic pcap: hostile input for smtpscope.

    python3 bench/make_flood.py --syns 100000 /tmp/smtpscope-bench/flood.pcap
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

    python3 bench/make_flood.py --unknown-users 1000000 \\
        /tmp/smtpscope-bench/unknown.pcap

With ``--relay-clients N`` the sessions come from N clients in turn, each
naming ``--relay-attempts`` recipients (1 unless said), every one at a
domain of its own that the server refuses to relay to (554 5.7.1); with
``--auth-clients N`` each session sends ``--auth-refusals`` AUTH PLAIN (5
unless said) for a user name of its client's, every one refused for its
credentials (535 5.7.8). Both write ``--sessions`` sessions (one per client
unless said), spread evenly over ``--span`` seconds (one a second unless
said), to one server: the shapes that make the detectors hold something
per distinct client for their windows.

    python3 bench/make_flood.py --relay-clients 20000 --relay-attempts 20 \\
        --span 1800 /tmp/h/relay.pcap
    python3 bench/make_flood.py --auth-clients 2000 --sessions 20000 \\
        --span 1800 /tmp/h/auth.pcap

With ``--plain-servers N`` the capture holds N short sessions one a second,
each from a client of its own to a server of its own whose EHLO reply lacks
STARTTLS, then QUIT: what the check for STARTTLS stripping keeps of each
session and each distinct server, with nothing to flag.

    python3 bench/make_flood.py --plain-servers 150000 /tmp/h/plain.pcap
"""

from __future__ import annotations

import argparse
import base64
import functools
import struct
import sys
from collections.abc import Callable
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


Talk = list[tuple[int, str]]  # (side, text) in the order sent
TalkOf = Callable[[int, int], Talk]


def write_session(out: BinaryIO, conn: TcpConn, talk: Talk) -> None:
    """Write one connection: handshake, ``talk``, and the client's close."""
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
        write_session(out, conn, talk)
    return sessions


VICTIM = "mx.victim.example"


def relay_talk(index: int, client: int, attempts: int) -> Talk:
    """A session whose every RCPT, to a domain of its own, is refused as
    relaying, pipelined as the server offers."""
    lines = [f"u{k}@r{index}-{k}.example" for k in range(attempts)]
    return [
        (SERVER_SIDE, f"220 {VICTIM} ESMTP Postfix\r\n"),
        (CLIENT_SIDE, "EHLO client.example\r\n"),
        (SERVER_SIDE, f"250-{VICTIM}\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
        (CLIENT_SIDE, "MAIL FROM:<probe@client.example>\r\n"),
        (SERVER_SIDE, "250 2.1.0 Ok\r\n"),
        (CLIENT_SIDE, "".join(f"RCPT TO:<{a}>\r\n" for a in lines)),
        (
            SERVER_SIDE,
            "".join(f"554 5.7.1 <{a}>: Relay access denied\r\n" for a in lines),
        ),
        (CLIENT_SIDE, "QUIT\r\n"),
        (SERVER_SIDE, "221 2.0.0 Bye\r\n"),
    ]


def auth_talk(index: int, client: int, refusals: int) -> Talk:
    """A session whose every AUTH PLAIN, for its client's one user name, is
    refused for its credentials."""
    talk = [
        (SERVER_SIDE, f"220 {VICTIM} ESMTP Postfix\r\n"),
        (CLIENT_SIDE, "EHLO client.example\r\n"),
        (SERVER_SIDE, f"250-{VICTIM}\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"),
    ]
    for attempt in range(refusals):
        token = f"\0user{client}\0guess{attempt}".encode()
        talk.append((CLIENT_SIDE, f"AUTH PLAIN {base64.b64encode(token).decode()}\r\n"))
        talk.append(
            (SERVER_SIDE, "535 5.7.8 Error: authentication failed: bad password\r\n")
        )
    talk += [(CLIENT_SIDE, "QUIT\r\n"), (SERVER_SIDE, "221 2.0.0 Bye\r\n")]
    return talk


def server_of(index: int) -> bytes:
    """A distinct address in 100.64.0.0/10 (RFC 6598, shared address space)."""
    return bytes([100, 64 + (index >> 16) % 64, (index >> 8) & 0xFF, index & 0xFF])


def plain_talk(index: int) -> Talk:
    """A session whose server offers no STARTTLS, then QUIT."""
    name = f"mx{index}.plain.example"
    return [
        (SERVER_SIDE, f"220 {name} ESMTP\r\n"),
        (CLIENT_SIDE, "EHLO client.example\r\n"),
        (SERVER_SIDE, f"250-{name}\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
        (CLIENT_SIDE, "QUIT\r\n"),
        (SERVER_SIDE, "221 2.0.0 Bye\r\n"),
    ]


def plain_server_sessions(out: BinaryIO, sessions: int) -> None:
    """Write ``--plain-servers``: one session a second, client ``i`` to
    server ``i``."""
    rng = Random(5323)
    for index in range(sessions):
        address, port = client_of(index)
        wire = Wire((address, port), (server_of(index), 25), ident=index & 0xFFFF)
        conn = TcpConn(wire, rng, index * 1_000_000, rtt_us=400, pace_us=10)
        write_session(out, conn, plain_talk(index))


def per_client_sessions(
    out: BinaryIO, sessions: int, clients: int, span_s: float, talk_of: TalkOf
) -> None:
    """Write ``sessions`` sessions from ``clients`` clients in turn, spread
    evenly over ``span_s`` seconds, each saying what ``talk_of`` gives for
    (session index, client index)."""
    rng = Random(5322)
    for index in range(sessions):
        client = index % clients
        address, _ = client_of(client)
        # A port per session: a client's next session is a connection of
        # its own, never one that reuses a closed 4-tuple.
        wire = Wire(
            (address, 1024 + index % 60_000), (SERVER, 25), ident=index & 0xFFFF
        )
        start_us = round(index * span_s * 1_000_000 / sessions)
        conn = TcpConn(wire, rng, start_us, rtt_us=400, pace_us=10)
        write_session(out, conn, talk_of(index, client))


def write_per_client(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--relay-clients`` or ``--auth-clients``: check, write, say what."""
    if args.relay_clients is not None and args.auth_clients is not None:
        parser.error("--relay-clients and --auth-clients go one at a time")
    talk_of: TalkOf
    if args.relay_clients is not None:
        clients, each, what = args.relay_clients, args.relay_attempts, "RCPTs"
        talk_of = functools.partial(relay_talk, attempts=each)
    else:
        clients, each, what = args.auth_clients, args.auth_refusals, "AUTHs"
        talk_of = functools.partial(auth_talk, refusals=each)
    sessions = clients if args.sessions is None else args.sessions
    span = float(sessions) if args.span is None else args.span
    if min(clients, each, sessions) < 1 or span <= 0:
        parser.error("clients, attempts a session and --sessions must be >= 1")
    with args.output.open("wb") as out:
        out.write(_FILE_HEADER)
        per_client_sessions(out, sessions, clients, span, talk_of)
    print(
        f"wrote {sessions:,} sessions from {clients:,} clients, {each} refused "
        f"{what} each, over {span:g} s to {args.output}",
        file=sys.stderr,
    )
    return 0


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
    parser.add_argument(
        "--relay-clients",
        type=int,
        metavar="N",
        help="write sessions from N clients whose RCPTs are refused as relaying",
    )
    parser.add_argument(
        "--relay-attempts", type=int, default=1, help="RCPTs a relay session (1)"
    )
    parser.add_argument(
        "--auth-clients",
        type=int,
        metavar="N",
        help="write sessions from N clients whose AUTHs are refused",
    )
    parser.add_argument(
        "--auth-refusals", type=int, default=5, help="AUTHs an AUTH session (5)"
    )
    parser.add_argument(
        "--sessions",
        type=int,
        help="sessions of --relay-clients or --auth-clients (one per client)",
    )
    parser.add_argument(
        "--span",
        type=float,
        help="seconds the sessions of --relay-clients or --auth-clients are "
        "spread over (one a second)",
    )
    parser.add_argument("--servers", type=int, default=1, help="servers (1)")
    parser.add_argument(
        "--plain-servers",
        type=int,
        metavar="N",
        help="write N sessions, each from a client of its own to a server of "
        "its own that offers no STARTTLS",
    )
    args = parser.parse_args(argv)
    if args.syns < 1:
        parser.error("--syns must be at least 1")
    if args.rate < 1:
        parser.error("--rate must be at least 1")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.plain_servers is not None:
        if not 1 <= args.plain_servers <= 1 << 22:
            parser.error("--plain-servers must be 1 to 4,194,304")
        with args.output.open("wb") as out:
            out.write(_FILE_HEADER)
            plain_server_sessions(out, args.plain_servers)
        print(
            f"wrote {args.plain_servers:,} sessions to as many servers without "
            f"STARTTLS to {args.output}",
            file=sys.stderr,
        )
        return 0
    if args.relay_clients is not None or args.auth_clients is not None:
        return write_per_client(parser, args)
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
