"""Captures rewritten in another format, for tests that compare readers."""

from __future__ import annotations

import struct
from pathlib import Path

from capture.pcapfile import open_capture
from tests.capture.craft import Frame, ng_epb, ng_idb, ng_shb, ng_spb, pcap


def as_pcapng(path: str, target: Path, *, simple_at: int = -1) -> str:
    """``path`` rewritten as pcapng (nanosecond times), packet ``simple_at``
    in a Simple Packet Block, which has no time of its own."""
    with open_capture(path) as reader:
        packets = list(reader)
    content = ng_shb() + ng_idb(packets[0].linktype if packets else 1, tsresol=9)
    for n, packet in enumerate(packets):
        if n == simple_at:
            content += ng_spb(packet.data)
        else:
            content += ng_epb(0, packet.ts, packet.data)
    target.write_bytes(content)
    return str(target)


def retagged(path: str, target: Path, form: str) -> str:
    """``path``'s Ethernet frames behind VLAN tags, as nanosecond pcap:
    ``three`` tags on Ethernet, or one tag under a Linux cooked header,
    ``sll`` (v1) or ``sll2``, as ``tcpdump -i any`` writes tagged traffic."""
    with open_capture(path) as reader:
        packets = list(reader)
    frames, linktype = [], 1
    for packet in packets:
        ethertype, ip = packet.data[12:14], packet.data[14:]
        tag = b"\x81\x00\x00\x64"  # TPID 802.1Q, VLAN 100
        if form == "three":
            data = packet.data[:12] + tag + tag + tag + ethertype + ip
        elif form == "sll":
            linktype = 113
            head = struct.pack(">HHH8s", 0, 1, 6, b"\2" * 8)
            data = head + b"\x81\x00" + b"\x00\x64" + ethertype + ip
        else:
            linktype = 276
            head = struct.pack(">HHIHBB8s", 0x8100, 0, 2, 1, 0, 6, b"\2" * 8)
            data = head + b"\x00\x64" + ethertype + ip
        seconds, nanos = divmod(packet.ts, 1_000_000_000)
        frames.append(Frame(seconds, nanos, data))
    target.write_bytes(pcap(frames, linktype=linktype, nano=True))
    return str(target)
