"""Hand-built frames and capture files for the capture tests.

Every byte is laid out here with ``struct`` from the format specifications,
so the tests do not depend on the code they test (nor on scapy) to make
their input. Checksums are left zero: nothing in ``capture`` reads them.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from capture.decode import TcpSegment


def tcp_header(
    sport: int,
    dport: int,
    seq: int = 0,
    ack: int = 0,
    flags: int = 0x18,
    options: bytes = b"",
) -> bytes:
    """TCP header (RFC 9293 3.1); ``options`` must be a multiple of 4 bytes."""
    data_offset = (20 + len(options)) // 4
    return (
        struct.pack(
            ">HHIIBBHHH", sport, dport, seq, ack, data_offset << 4, flags, 65535, 0, 0
        )
        + options
    )


def ipv4(
    src: str,
    dst: str,
    payload: bytes,
    *,
    proto: int = 6,
    frag: int = 0,
    options: bytes = b"",
    total: int | None = None,
) -> bytes:
    """IPv4 header (RFC 791 3.1) followed by ``payload``."""
    ihl = (20 + len(options)) // 4
    length = 20 + len(options) + len(payload) if total is None else total
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        length,
        1,
        frag,
        64,
        proto,
        0,
        socket.inet_pton(socket.AF_INET, src),
        socket.inet_pton(socket.AF_INET, dst),
    )
    return header + options + payload


def ipv6(
    src: str,
    dst: str,
    payload: bytes,
    *,
    next_header: int = 6,
    extensions: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """IPv6 header (RFC 8200 3), then (type, body) extension headers, then payload.

    Each extension is given as the protocol number of the header itself and
    its body after the next-header byte; the chain is linked up here.
    """
    chain = b""
    types = [kind for kind, _ in extensions] + [next_header]
    for index, (_, body) in enumerate(extensions):
        chain += bytes([types[index + 1]]) + body
    body_len = len(chain) + len(payload)
    first = types[0]
    return (
        struct.pack(">IHBB", 6 << 28, body_len, first, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + chain
        + payload
    )


def ethernet(
    payload: bytes, ethertype: int = 0x0800, vlans: Sequence[int] = ()
) -> bytes:
    """Ethernet II frame; ``vlans`` are TPIDs of tags from the outside in."""
    frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    for vlan_id, tpid in enumerate(vlans, start=100):
        frame += struct.pack(">HH", tpid, vlan_id)
    return frame + struct.pack(">H", ethertype) + payload


def v4_tcp(
    src: str = "192.0.2.1",
    dst: str = "198.51.100.2",
    sport: int = 40000,
    dport: int = 25,
    payload: bytes = b"",
    *,
    seq: int = 1000,
    ack: int = 0,
    flags: int = 0x18,
) -> bytes:
    """An IPv4 packet carrying a TCP segment."""
    return ipv4(src, dst, tcp_header(sport, dport, seq, ack, flags) + payload)


class TcpPeers:
    """Both ends of one IPv4 TCP connection, with their sequence numbers.

    ``frame`` makes the Ethernet frame of one segment from either end and
    moves that end's sequence number past it (payload, SYN and FIN), so a
    conversation is written line by line. ``cseq`` and ``sseq`` may be set
    between segments, to resend or to leave a hole.
    """

    def __init__(
        self, client: str, sport: int, server: str, dport: int, cseq: int, sseq: int
    ) -> None:
        self.ends = (client, server, sport, dport)
        self.cseq = cseq
        self.sseq = sseq

    def frame(self, by_client: bool, payload: bytes, flags: int) -> bytes:
        client, server, sport, dport = self.ends
        if by_client:
            ends, seq, ack = (client, server, sport, dport), self.cseq, self.sseq
        else:
            ends, seq, ack = (server, client, dport, sport), self.sseq, self.cseq
        segment = v4_tcp(*ends, payload, seq=seq, ack=ack, flags=flags)
        sent = len(payload) + (1 if flags & 0x03 else 0)  # SYN and FIN count one
        if by_client:
            self.cseq += sent
        else:
            self.sseq += sent
        return ethernet(segment)


# -- capture files ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    ts_sec: int
    ts_frac: int  # in the file's unit: microseconds or nanoseconds
    data: bytes
    wire_len: int | None = None


def pcap(
    frames: Iterable[Frame],
    *,
    linktype: int = 1,
    big: bool = False,
    nano: bool = False,
) -> bytes:
    """A classic pcap file (draft-ietf-opsawg-pcap)."""
    order = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    parts = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for frame in frames:
        wire = len(frame.data) if frame.wire_len is None else frame.wire_len
        parts.append(
            struct.pack(
                order + "IIII", frame.ts_sec, frame.ts_frac, len(frame.data), wire
            )
        )
        parts.append(frame.data)
    return b"".join(parts)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def ng_block(block_type: int, body: bytes, order: str = "<") -> bytes:
    body = _pad4(body)
    length = 12 + len(body)
    return (
        struct.pack(order + "II", block_type, length)
        + body
        + struct.pack(order + "I", length)
    )


def ng_option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + _pad4(value)


def ng_shb(order: str = "<") -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return ng_block(0x0A0D0D0A, body, order)


def ng_idb(
    linktype: int, order: str = "<", tsresol: int | None = None, snaplen: int = 0
) -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, snaplen)
    if tsresol is not None:
        body += ng_option(9, bytes([tsresol]), order) + ng_option(0, b"", order)
    return ng_block(1, body, order)


def ng_epb(
    iface: int, ticks: int, data: bytes, order: str = "<", wire: int = 0
) -> bytes:
    body = struct.pack(
        order + "IIIII",
        iface,
        ticks >> 32,
        ticks & 0xFFFFFFFF,
        len(data),
        wire or len(data),
    )
    return ng_block(6, body + data, order)


def ng_spb(data: bytes, order: str = "<") -> bytes:
    return ng_block(3, struct.pack(order + "I", len(data)) + data, order)


def ng_pb(iface: int, ticks: int, data: bytes, order: str = "<") -> bytes:
    body = struct.pack(
        order + "HHIIII",
        iface,
        0,
        ticks >> 32,
        ticks & 0xFFFFFFFF,
        len(data),
        len(data),
    )
    return ng_block(2, body + data, order)


# -- segments for the reassembler ---------------------------------------

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 25)


def seg(
    sender: tuple[str, int],
    seq: int,
    payload: bytes = b"",
    *,
    ack: int = 0,
    flags: int = 0x18,
    missing: int = 0,
) -> TcpSegment:
    """A decoded segment from ``sender`` to the other of CLIENT and SERVER."""
    receiver = SERVER if sender == CLIENT else CLIENT
    return TcpSegment(
        sender[0],
        receiver[0],
        sender[1],
        receiver[1],
        seq % (1 << 32),
        ack % (1 << 32),
        flags,
        payload,
        missing > 0,
        missing,
    )
