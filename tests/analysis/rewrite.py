"""Captures rewritten in another format, for tests that compare readers,
or with other TCP ports."""

from __future__ import annotations

import socket
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


# PPP's protocol numbers for IPv4 and IPv6 (RFC 1661 2, RFC 5072 3).
_PPP_PROTOCOL = {b"\x08\x00": b"\x00\x21", b"\x86\xdd": b"\x00\x57"}


def reframed(path: str, target: Path, form: str) -> str:
    """``path``'s Ethernet frames carrying IP, as PPP would carry the same
    packets, in a nanosecond pcap:

    - ``pppoe``: Ethernet, a PPPoE session header, PPP (RFC 2516), as an
      ISP's access router sees a DSL subscriber; ``vlan-pppoe`` behind an
      802.1Q tag, as such routers often see it; ``sll-pppoe`` under a Linux
      cooked header;
    - ``ppp``: LINKTYPE_PPP with HDLC's address and control bytes;
      ``ppp-short`` without them and with the protocol in one byte;
      ``ppp-dir``: LINKTYPE_PPP_WITH_DIR's direction byte first;
    - ``ppp-ether``: LINKTYPE_PPP_ETHER, the PPPoE header first;
    - ``chdlc``: Cisco HDLC, an EtherType behind address and control;
      ``hdlc-cisco`` the same as LINKTYPE_PPP_HDLC, which takes both.

    Frames without IP (ARP) are left out.
    """
    with open_capture(path) as reader:
        packets = list(reader)
    linktype = {
        "pppoe": 1,
        "vlan-pppoe": 1,
        "sll-pppoe": 113,
        "ppp": 9,
        "ppp-short": 9,
        "ppp-dir": 204,
        "ppp-ether": 51,
        "chdlc": 104,
        "hdlc-cisco": 50,
    }[form]
    frames = []
    for packet in packets:
        ethertype, ip = packet.data[12:14], packet.data[14:]
        if ethertype not in _PPP_PROTOCOL:
            continue
        protocol = _PPP_PROTOCOL[ethertype]
        session = struct.pack(">BBHH", 0x11, 0, 0x2A, len(ip) + 2) + protocol + ip
        if form == "pppoe":
            data = packet.data[:12] + b"\x88\x64" + session
        elif form == "vlan-pppoe":
            data = packet.data[:12] + b"\x81\x00\x00\x64" + b"\x88\x64" + session
        elif form == "sll-pppoe":
            data = struct.pack(">HHH8s", 0, 1, 6, b"\2" * 8) + b"\x88\x64" + session
        elif form == "ppp":
            data = b"\xff\x03" + protocol + ip
        elif form == "ppp-short":
            data = protocol[1:] + ip
        elif form == "ppp-dir":
            data = b"\x01\xff\x03" + protocol + ip
        elif form == "ppp-ether":
            data = session
        else:
            data = b"\x0f\x00" + ethertype + ip
        seconds, nanos = divmod(packet.ts, 1_000_000_000)
        frames.append(Frame(seconds, nanos, data))
    target.write_bytes(pcap(frames, linktype=linktype, nano=True))
    return str(target)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_ends(
    path: str, target: Path, ends: dict[tuple[str, int], tuple[str, int]]
) -> str:
    """``path``'s Ethernet frames of TCP over IPv4 with each end (address,
    port) in ``ends``, source or destination, changed to its value there,
    IPv4 and TCP checksums made again (RFC 791 3.1, RFC 9293 3.1), as a
    nanosecond pcap; other frames are kept as they are."""
    with open_capture(path) as reader:
        packets = list(reader)
    frames = []
    for packet in packets:
        data = packet.data
        if data[12:14] == b"\x08\x00" and data[14 + 9] == 6:  # IPv4, TCP
            start = 14 + (data[14] & 0x0F) * 4
            stop = 14 + struct.unpack_from(">H", data, 16)[0]
            data = data[:14] + _moved(data[14:start], data[start:stop], ends)
            data += packet.data[stop:]
        seconds, nanos = divmod(packet.ts, 1_000_000_000)
        frames.append(Frame(seconds, nanos, data))
    target.write_bytes(pcap(frames, nano=True))
    return str(target)


def _moved(
    ip: bytes, tcp: bytes, ends: dict[tuple[str, int], tuple[str, int]]
) -> bytes:
    """An IPv4 header and its TCP segment with their ends moved."""
    src = (socket.inet_ntoa(ip[12:16]), struct.unpack_from(">H", tcp)[0])
    dst = (socket.inet_ntoa(ip[16:20]), struct.unpack_from(">H", tcp, 2)[0])
    (src_ip, sport), (dst_ip, dport) = ends.get(src, src), ends.get(dst, dst)
    addresses = socket.inet_aton(src_ip) + socket.inet_aton(dst_ip)
    ip = ip[:10] + b"\0\0" + addresses + ip[20:]
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    tcp = struct.pack(">HH", sport, dport) + tcp[4:16] + b"\0\0" + tcp[18:]
    pseudo = addresses + struct.pack(">BBH", 0, 6, len(tcp))
    return ip + tcp[:16] + struct.pack(">H", _checksum(pseudo + tcp)) + tcp[18:]
