#!/usr/bin/env python3
"""The issue's yardstick: a bare pure-Python loop that splits SMTP lines.

    tcpdump -r CAPTURE -w - 'tcp port 25 or tcp port 465 or tcp port 587' \\
        | python3 bench/bare_loop.py

Reads a classic pcap of Ethernet frames from standard input (tcpdump has
already kept only the SMTP ports), finds each TCP payload and splits it into
lines, and prints how many packets and lines it saw. No reassembly, no
parsing, no tables: the least any Python analyzer of this traffic must do
per packet, so its time says how fast Python is on the machine at hand.
``bench/run.py`` runs it as the tool "bare-loop", beside smtpscope.
"""

from __future__ import annotations

import struct
import sys
from typing import BinaryIO

_RECORD = struct.Struct("<IIII")
_MAGIC = struct.pack("<I", 0xA1B2C3D4)  # microseconds, little-endian
_ETHERNET = struct.pack("<I", 1)
_CHUNK = 1 << 20


def count_lines(source: BinaryIO) -> tuple[int, int]:
    """(packets, lines) of a little-endian classic pcap of Ethernet frames."""
    header = source.read(24)
    if len(header) < 24 or header[:4] != _MAGIC or header[20:24] != _ETHERNET:
        raise SystemExit("bare_loop: expected a little-endian pcap of Ethernet frames")
    packets = lines = 0
    unpack = _RECORD.unpack_from
    stream = b""
    while chunk := source.read(_CHUNK):
        stream = stream + chunk  # the unfinished record, then the new bytes
        at = 0
        end = len(stream)
        while at + 16 <= end:
            caplen = unpack(stream, at)[2]
            frame = at + 16
            if frame + caplen > end:
                break  # the rest of this record is in the next chunk
            at = frame + caplen
            packets += 1
            ethertype = stream[frame + 12] << 8 | stream[frame + 13]
            if ethertype == 0x0800:
                ip = frame + 14
                ip_end = ip + (stream[ip + 2] << 8 | stream[ip + 3])
                tcp = ip + (stream[ip] & 0x0F) * 4
            elif ethertype == 0x86DD:
                ip = frame + 14
                ip_end = ip + 40 + (stream[ip + 4] << 8 | stream[ip + 5])
                tcp = ip + 40
            else:
                continue
            payload = stream[tcp + (stream[tcp + 12] >> 4) * 4 : min(ip_end, at)]
            if payload:
                lines += len(payload.split(b"\r\n"))
        stream = stream[at:]
    return packets, lines


def main() -> int:
    packets, lines = count_lines(sys.stdin.buffer)
    print(f"{packets} packets, {lines} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
