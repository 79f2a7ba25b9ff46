"""Captures rewritten in another format, for tests that compare readers."""

from __future__ import annotations

from pathlib import Path

from capture.pcapfile import open_capture
from tests.capture.craft import ng_epb, ng_idb, ng_shb, ng_spb


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
