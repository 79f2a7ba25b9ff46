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
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

from synth_tcp import Wire

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
    args = parser.parse_args(argv)
    if args.syns < 1:
        parser.error("--syns must be at least 1")
    if args.rate < 1:
        parser.error("--rate must be at least 1")

    args.output.parent.mkdir(parents=True, exist_ok=True)
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
