"""From a captured frame to the TCP segment inside it, if it is one we watch.

``decode_tcp`` walks link layer, IP and TCP headers over the raw bytes with
precompiled ``struct`` readers and slicing. It runs once per packet of the
capture, so nothing is built for a packet that turns out not to be TCP on a
watched port: such packets only bump a counter in ``DecodeStats``.

What it does not do: reassemble IP fragments (RFC 791 3.2, RFC 8200 4.5).
A fragmented segment on a watched port is counted and skipped, and the
reassembler later sees the hole as a gap.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass, fields
from typing import Any, Final, NamedTuple

SMTP_PORTS: Final = frozenset({25, 465, 587, 2525})

# TCP header flags (RFC 9293 3.1).
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20

# LINKTYPE_* values (tcpdump.org link-layer header types).
LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
LINKTYPE_PPP: Final = 9
LINKTYPE_PPP_HDLC: Final = 50  # PPP in HDLC-like framing, or Cisco HDLC
LINKTYPE_PPP_ETHER: Final = 51  # a PPPoE header first
LINKTYPE_C_HDLC: Final = 104  # Cisco HDLC
LINKTYPE_PPP_WITH_DIR: Final = 204  # a direction byte, then PPP
# DLT_RAW's value before libpcap settled on 101; 12 and 14 both mean raw IP
# on every platform but OpenBSD, whose captures use LINKTYPE_LOOP anyway.
_RAW_IP_TYPES: Final = frozenset({LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6})

# The one IP version each of these link types carries.
_ONE_VERSION: Final = {LINKTYPE_IPV4: 4, LINKTYPE_IPV6: 6}
# 802.1Q, 802.1ad and the pre-standard Q-in-Q tag.
_VLAN_TPIDS: Final = frozenset({0x8100, 0x88A8, 0x9100})
# A PPPoE session frame (RFC 2516 5): a DSL subscriber's traffic as an
# ISP's access router sees it.
PPPOE_SESSION: Final = 0x8864
# PPP protocol numbers (RFC 1661 2, RFC 5072 3) and EtherTypes -> the IP
# version they carry.
_PPP_IP: Final = {0x0021: 4, 0x0057: 6}
_ETHERTYPE_IP: Final = {0x0800: 4, 0x86DD: 6}
_IP_ETHERTYPES: Final = frozenset(_ETHERTYPE_IP)  # IPv4, IPv6

# Address families in the 4-byte header of BSD loopback captures.
# AF_INET6 differs by system: 24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS.
_AF_INET: Final = 2
_AF_INET6: Final = frozenset({24, 28, 30})

_PROTO_TCP: Final = 6
# IPv6 extension headers we step over (RFC 8200 4; RFC 4302 2 for AH).
_V6_HOP_BY_HOP: Final = 0
_V6_ROUTING: Final = 43
_V6_FRAGMENT: Final = 44
_V6_AH: Final = 51
_V6_NO_NEXT: Final = 59
_V6_DEST_OPTS: Final = 60
_V6_EXTENSIONS: Final = frozenset(
    {_V6_HOP_BY_HOP, _V6_ROUTING, _V6_FRAGMENT, _V6_AH, _V6_DEST_OPTS}
)

# Link-layer results that are not an offset.
_NOT_IP: Final = -1
_SHORT: Final = -2  # counted as malformed
_UNKNOWN_LINK: Final = -3
# IP of another version than its EtherType names: malformed too, as the
# untagged Ethernet frame is that goes straight to _ipv4.
_OTHER_VERSION: Final = _SHORT

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_V4_FIELDS = struct.Struct(">H2xH1xB").unpack_from  # total length, frag, protocol
_PORTS = struct.Struct(">HH").unpack_from
_SEQ_ACK = struct.Struct(">IIBB").unpack_from  # seq, ack, data offset, flags
# From the start of an Ethernet frame: EtherType; IPv4 version and header
# length, total length, fragment field, protocol; then TCP ports, sequence
# and acknowledgment numbers, data offset and flags. The addresses are read
# only for watched segments, as bytes (see _flow_keys).
_ETH_IPV4_TCP = struct.Struct(">12xHBxH2xHxB10xHHIIBB").unpack_from
# The same but for the ports, for the loop that finds them in its own cache
# of flow keys instead (capture.source._filtered_capture, see watched_key).
ETH_IPV4_TCP_NO_PORTS = struct.Struct(">12xHBxH2xHxB14xIIBB").unpack_from
# The same for IPv6: version, payload length, next header, then TCP.
_ETH_IPV6_TCP = struct.Struct(">14xB3xHBx32xHHIIBB").unpack_from
ETH_IPV6_TCP_NO_PORTS = struct.Struct(">14xB3xHBx36xIIBB").unpack_from


class TcpSegment(NamedTuple):
    """A TCP segment on a watched port. A NamedTuple for speed."""

    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int  # FIN, SYN, RST, PSH, ACK, URG bits
    payload: bytes  # what the capture holds of the payload
    truncated: bool  # the capture cut the payload short
    missing: int = 0  # payload bytes announced by the IP header but not captured


# Source address, destination address, source port, destination port: the
# first fields of a TcpSegment, and what the reassembler finds flows by.
FlowKey = tuple[str, str, int, int]
# A TcpSegment as decode_at hands it on, a plain tuple: (flow key, seq, ack,
# flags, payload, missing). Cheaper to build than the NamedTuple, and its
# flow key is one cached tuple per direction of a connection rather than
# addresses looked up and packed again for every segment.
Segment = tuple[FlowKey, int, int, int, bytes, int]


def compact(segment: TcpSegment) -> Segment:
    """A TcpSegment as decode_at would have handed it on."""
    return (
        (segment.src_ip, segment.dst_ip, segment.src_port, segment.dst_port),
        segment.seq,
        segment.ack,
        segment.flags,
        segment.payload,
        segment.missing,
    )


def expand(segment: Segment) -> TcpSegment:
    """The TcpSegment that ``segment`` was made from."""
    key, seq, ack, flags, payload, missing = segment
    src_ip, dst_ip, src_port, dst_port = key
    return TcpSegment(
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        payload,
        missing > 0,
        missing,
    )


@dataclass(slots=True)
class DecodeStats:
    """Why packets were not handed on, by reason, plus what was."""

    tcp: int = 0  # segments returned: TCP on a watched port
    truncated: int = 0  # of those, payload cut short by the snap length
    other_port: int = 0  # TCP, neither port watched
    not_tcp: int = 0  # IP carrying something else (UDP, ICMP, ESP...)
    not_ip: int = 0  # link layer carrying something else (ARP, LLC...)
    ip_fragment: int = 0  # first fragment of a watched segment: data lost
    ip_fragment_later: int = 0  # non-first fragment: no TCP header to read
    ipv6_no_next_header: int = 0
    malformed: int = 0  # headers too short or inconsistent
    # Of those, TCP on a watched port whose header the capture cut off (the
    # snap length, tcpdump -s 40): lost whole, as no sequence number is left.
    header_cut: int = 0
    unknown_linktype: int = 0  # link type we cannot decode, even with scapy
    via_scapy: int = 0  # rare link types whose IP layer scapy found

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Address text is built once per distinct address; captures hold few.
_TEXT_CACHE_LIMIT: Final = 1 << 16
_address_text: dict[bytes, str] = {}
# Flow keys of watched segments, by their addresses and ports as they lie
# in the frame: one per direction of each connection. Emptied when full, so
# that it holds about the open connections rather than every connection of
# the capture; a key made again is equal to the one dropped.
_FLOW_KEY_LIMIT: Final = 4096
_flow_keys: dict[bytes, FlowKey] = {}


def _address(raw: bytes) -> str:
    """Text of a 4- or 16-byte address (RFC 5952 form for IPv6), cached.

    Interned, which marshal notes: the detectors' evidence of every session,
    spooled with marshal and loaded again at the end, then shares one string
    per address rather than holding two of its own for as long as a window.
    """
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    text = sys.intern(socket.inet_ntop(family, raw))
    if len(_address_text) < _TEXT_CACHE_LIMIT:
        _address_text[raw] = text
    return text


def decode_tcp(
    linktype: int,
    data: bytes,
    ports: frozenset[int],
    stats: DecodeStats | None = None,
) -> TcpSegment | None:
    """The TCP segment in ``data`` if either of its ports is in ``ports``.

    Returns None for anything else, counting the reason in ``stats``.
    """
    if stats is None:
        stats = DecodeStats()
    segment = decode_at(linktype, data, 0, len(data), ports, stats)
    return None if segment is None else expand(segment)


def decode_at(
    linktype: int,
    buf: bytes,
    begin: int,
    end: int,
    ports: frozenset[int],
    stats: DecodeStats,
) -> Segment | None:
    """``decode_tcp`` of the frame ``buf[begin:end]``, without copying it,
    as a ``Segment``."""
    n = end - begin
    if linktype == LINKTYPE_ETHERNET and n >= 54:
        # Untagged Ethernet, then IPv4 with a 20-byte header and no
        # fragmentation or IPv6 with TCP next, the whole packet captured and
        # a sound TCP header: most frames of any capture, read in one go.
        # Anything else, and whatever this path would have to count, takes
        # the general path.
        (ethertype, ver_ihl, total, frag, proto, src_port, dst_port, seq, ack,
         data_offset, flags) = _ETH_IPV4_TCP(buf, begin)  # fmt: skip
        tcp = wire_end = addresses = 0  # no plain header found
        if ethertype == 0x0800:
            if ver_ihl == 0x45 and proto == _PROTO_TCP and not frag & 0x3FFF:
                tcp = 34
                wire_end = 14 + total
                addresses = 8
        elif ethertype == 0x86DD and n >= 68:
            (version, payload_len, next_header, src_port, dst_port, seq, ack,
             data_offset, flags) = _ETH_IPV6_TCP(buf, begin)  # fmt: skip
            if version >> 4 == 6 and next_header == _PROTO_TCP and payload_len:
                tcp = 54
                wire_end = 54 + payload_len
                addresses = 32
        start = tcp + ((data_offset >> 4) << 2)
        if tcp and tcp + 20 <= start <= wire_end <= n:
            if src_port not in ports and dst_port not in ports:
                stats.other_port += 1
                return None
            stats.tcp += 1
            # Both addresses and both ports lie side by side before the rest
            # of the TCP header.
            where = buf[begin + tcp - addresses : begin + tcp + 4]
            key = _flow_keys.get(where) or _flow_key(where)
            return key, seq, ack, flags, buf[begin + start : begin + wire_end], 0
    frame = buf if begin == 0 and end == len(buf) else buf[begin:end]
    segment = _decode_general(linktype, frame, ports, stats)
    return None if segment is None else compact(segment)


def _flow_key(where: bytes) -> FlowKey:
    """The flow key of two addresses of one family then two ports as they lie
    in a frame, cached."""
    size = (len(where) - 4) // 2
    src_port, dst_port = _PORTS(where, 2 * size)
    # The address texts from their cache: every flow of a client shares one
    # string, and the reassembler keeps closed flows' keys for a while.
    src, dst = where[:size], where[size : 2 * size]
    text = _address_text
    key = (
        text.get(src) or _address(src),
        text.get(dst) or _address(dst),
        src_port,
        dst_port,
    )
    if len(_flow_keys) >= _FLOW_KEY_LIMIT:
        _flow_keys.clear()
    _flow_keys[where] = key
    return key


def watched_key(
    where: bytes, ports: frozenset[int], cache: dict[bytes, FlowKey]
) -> FlowKey | None:
    """The flow key of addresses then ports as they lie in a frame (see
    ``_flow_keys``) if either port is in ``ports``, else None.

    A key found is added to ``cache``, which must only ever hold keys found
    for this same ``ports``: a loop that looks there first knows a key it
    finds is watched without testing the ports again. Emptied when full,
    like ``_flow_keys``.
    """
    src_port, dst_port = _PORTS(where, len(where) - 4)
    if src_port not in ports and dst_port not in ports:
        return None
    key = _flow_keys.get(where) or _flow_key(where)
    if len(cache) >= _FLOW_KEY_LIMIT:
        cache.clear()
    cache[where] = key
    return key


def _decode_general(
    linktype: int, data: bytes, ports: frozenset[int], stats: DecodeStats
) -> TcpSegment | None:
    """``decode_tcp`` for every link type and header shape."""
    # Untagged Ethernet carrying IPv4 is most of any capture: go straight on.
    if linktype == LINKTYPE_ETHERNET and len(data) > 14 and data[12:14] == b"\x08\x00":
        return _ipv4(data, 14, ports, stats)
    off = _ip_offset(linktype, data, stats)
    if off < 0:
        if off != _UNKNOWN_LINK:
            return None
        if _scapy_layer(linktype) is None:
            stats.unknown_linktype += 1
            return None
        ip = _scapy_ip(linktype, data)
        if ip is None:
            # A link type scapy knows, and a frame of it that carries no
            # IP: PPP's LCP echoes, 802.11 beacons.
            stats.not_ip += 1
            return None
        stats.via_scapy += 1
        data, off = ip, 0
    if off >= len(data):
        stats.malformed += 1
        return None
    version = data[off] >> 4
    if version == 4:
        return _ipv4(data, off, ports, stats)
    if version == 6:
        return _ipv6(data, off, ports, stats)
    stats.malformed += 1
    return None


def _ip_offset(linktype: int, data: bytes, stats: DecodeStats) -> int:
    """Where the IP header starts, or a negative code.

    Frames that are not IP are counted here; _UNKNOWN_LINK is left to the
    caller, which may still find IP with scapy.
    """
    if linktype == LINKTYPE_ETHERNET:
        off = _after_tags(data, 12)
    elif linktype in _RAW_IP_TYPES:
        # LINKTYPE_IPV4 and _IPV6 promise one version: the other is not
        # read (as libpcap's filter, which trusts the promise, does not).
        if data and _ONE_VERSION.get(linktype, data[0] >> 4) != data[0] >> 4:
            stats.not_ip += 1
            return _NOT_IP
        return 0
    elif linktype == LINKTYPE_LINUX_SLL:
        off = _after_tags(data, 14)
    elif linktype == LINKTYPE_LINUX_SLL2:
        off = _sll2(data)
    elif linktype == LINKTYPE_NULL:
        off = _bsd_loopback(data, little=data[:2] != b"\0\0")
    elif linktype == LINKTYPE_LOOP:
        off = _bsd_loopback(data, little=False)
    elif linktype == LINKTYPE_PPP:
        off = _ppp(data, 0)
    elif linktype == LINKTYPE_PPP_WITH_DIR:
        off = _ppp(data, 1)
    elif linktype == LINKTYPE_PPP_ETHER:
        off = _pppoe(data, 0)
    elif linktype == LINKTYPE_C_HDLC or (
        # Cisco framing begins 0x0F or 0x8F where PPP's begins 0xFF.
        linktype == LINKTYPE_PPP_HDLC and data[:1] in (b"\x0f", b"\x8f")
    ):
        off = _cisco_hdlc(data)
    elif linktype == LINKTYPE_PPP_HDLC:
        off = _ppp(data, 0)
    else:
        return _UNKNOWN_LINK
    if off == _NOT_IP:
        stats.not_ip += 1
    elif off == _SHORT:
        stats.malformed += 1
    return off


def _after_tags(data: bytes, type_pos: int) -> int:
    """Offset of the IP header after the EtherType at ``type_pos``.

    Any number of VLAN tags may come first (IEEE 802.1Q, 802.1ad): each is
    a TPID in the EtherType slot followed by a TCI and the next EtherType.
    """
    n = len(data)
    while type_pos + 2 <= n:
        ethertype = (data[type_pos] << 8) | data[type_pos + 1]
        if ethertype in _IP_ETHERTYPES:
            return _named_ip(data, type_pos + 2, ethertype)
        if ethertype == PPPOE_SESSION:
            return _pppoe(data, type_pos + 2)
        if ethertype not in _VLAN_TPIDS:
            return _NOT_IP
        type_pos += 4
    return _SHORT


def _named_ip(data: bytes, off: int, ethertype: int) -> int:
    """``off``, where an IP header of the version ``ethertype`` names
    should start; _OTHER_VERSION when another version is there.

    libpcap's filter reads behind an EtherType only the version it names,
    as a host's IP stack does, so the decoder reads no other: a capture too
    small for libpcap kept an IPv6 packet under the IPv4 EtherType that a
    large one dropped (found in review, on Ethernet, then on Linux cooked
    captures).
    """
    if off < len(data) and data[off] >> 4 != _ETHERTYPE_IP[ethertype]:
        return _OTHER_VERSION
    return off


def _sll2(data: bytes) -> int:
    """Linux cooked header v2: protocol first, 20 bytes in all."""
    if len(data) < 20:
        return _SHORT
    protocol = (data[0] << 8) | data[1]
    if protocol in _IP_ETHERTYPES:
        return _named_ip(data, 20, protocol)
    if protocol == PPPOE_SESSION:
        return _pppoe(data, 20)
    if protocol in _VLAN_TPIDS:
        # The tag's TCI (20-21) and inner EtherType (22-23) open the
        # payload; more tags may follow that EtherType.
        return _after_tags(data, 22)
    return _NOT_IP


def _ppp(data: bytes, off: int) -> int:
    """Offset of the IP header after a PPP header at ``off``.

    The header may open with HDLC's address and control bytes, 0xFF 0x03
    (RFC 1662 3.1), and its protocol may be one byte where the peers agreed
    to compress it (RFC 1661 6.5: an odd first byte). Only IP is read, and
    only the version the protocol names, as with EtherTypes behind tags.
    """
    n = len(data)
    if off + 2 <= n and data[off] == 0xFF and data[off + 1] == 0x03:
        off += 2
    if off >= n:
        return _SHORT
    if data[off] & 1:
        protocol = data[off]
        off += 1
    elif off + 2 <= n:
        protocol = (data[off] << 8) | data[off + 1]
        off += 2
    else:
        return _SHORT
    version = _PPP_IP.get(protocol)
    if version is None:
        return _NOT_IP  # LCP, IPCP and the rest of PPP's own traffic
    if off >= n:
        return _SHORT
    return off if data[off] >> 4 == version else _NOT_IP


def _pppoe(data: bytes, off: int) -> int:
    """Offset of the IP header in a PPPoE session frame whose 6-byte header
    (version and type 0x11, code 0, session id, length) is at ``off``.

    The PPP protocol follows in two bytes: PPPoE carries no HDLC bytes, and
    its peers do not compress the protocol (RFC 2516 7); libpcap's filter
    reads it there, as here, so that both readers keep the same frames.
    """
    if off + 9 > len(data):
        return _SHORT
    if data[off] != 0x11 or data[off + 1] != 0:
        return _NOT_IP
    version = _PPP_IP.get((data[off + 6] << 8) | data[off + 7])
    if version is None:
        return _NOT_IP  # LCP, IPCP and the rest of PPP's own traffic
    return off + 8 if data[off + 8] >> 4 == version else _NOT_IP


def _cisco_hdlc(data: bytes) -> int:
    """Cisco HDLC: address, control, then an EtherType, whose IP version
    is the only one read (as with EtherTypes behind tags)."""
    if len(data) < 5:
        return _SHORT
    version = _ETHERTYPE_IP.get((data[2] << 8) | data[3])
    return 4 if version is not None and data[4] >> 4 == version else _NOT_IP


def _bsd_loopback(data: bytes, *, little: bool) -> int:
    """BSD loopback: a 4-byte address family, then the IP header.

    LINKTYPE_NULL stores it in the capturing host's byte order, which the
    file does not record; the family is small, so zeros in the first two
    bytes mean big-endian. LINKTYPE_LOOP is always big-endian.
    """
    if len(data) < 4:
        return _SHORT
    family = data[0] if little else _U32(data, 0)[0]
    if family == _AF_INET or family in _AF_INET6:
        return 4
    return _NOT_IP


# Link type -> scapy layer class, or None when scapy has none for it.
_scapy_layers: dict[int, Any] = {}


def _scapy_layer(linktype: int) -> Any:
    """scapy's layer class for ``linktype``; None when it has none.

    scapy is imported only when a frame of a rare link type first appears:
    it takes about a second to load and is far slower than the code above,
    which is fine for the odd 802.11 or radiotap capture and the reason the
    common link types never come here.
    """
    if linktype not in _scapy_layers:
        _scapy_layers[linktype] = _scapy_layer_class(linktype)
    return _scapy_layers[linktype]


def _scapy_ip(linktype: int, data: bytes) -> bytes | None:
    """The IP packet scapy finds in a frame of a rare link type, if any."""
    layer_class = _scapy_layer(linktype)
    if layer_class is None:
        return None
    try:
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        frame = layer_class(data)
        layer = frame.getlayer(IP) or frame.getlayer(IPv6)
        if layer is None:
            return None
        raw = layer.original or bytes(layer)
    except Exception:  # scapy's dissectors raise anything on odd bytes
        return None
    return bytes(raw)


def _scapy_layer_class(linktype: int) -> Any:
    try:
        import scapy.layers.all  # noqa: F401 - registers the link types
        from scapy.config import conf
    except ImportError:
        return None
    return conf.l2types.num2layer.get(linktype)


def _ipv4(
    data: bytes, off: int, ports: frozenset[int], stats: DecodeStats
) -> TcpSegment | None:
    """IPv4 header (RFC 791 3.1) to the TCP segment it carries."""
    n = len(data)
    if off + 20 > n or data[off] >> 4 != 4:
        stats.malformed += 1
        return None
    total, frag, proto = _V4_FIELDS(data, off + 2)
    if proto != _PROTO_TCP:
        stats.not_tcp += 1
        return None
    if frag & 0x1FFF:
        stats.ip_fragment_later += 1
        return None
    header_len = (data[off] & 0x0F) << 2
    if total == 0:
        # Captured on the sending host before segmentation offload filled
        # the length in: take what was captured.
        total = n - off
    if header_len < 20 or total < header_len:
        stats.malformed += 1
        return None
    tcp = off + header_len
    wire_end = off + total
    end = wire_end if wire_end < n else n
    if tcp + 20 > end:
        stats.malformed += 1
        _header_cut(data, tcp, end, wire_end, ports, stats)
        return None
    src_port, dst_port = _PORTS(data, tcp)
    if src_port not in ports and dst_port not in ports:
        stats.other_port += 1
        return None
    if frag & 0x2000:  # more fragments: the payload is not all here
        stats.ip_fragment += 1
        return None
    return _tcp(data, tcp, wire_end, end, off + 12, 4, src_port, dst_port, stats)


def _ipv6(
    data: bytes, off: int, ports: frozenset[int], stats: DecodeStats
) -> TcpSegment | None:
    """IPv6 header and extension headers (RFC 8200 3, 4) to the TCP segment."""
    n = len(data)
    if off + 40 > n:
        stats.malformed += 1
        return None
    payload_len = _U16(data, off + 4)[0]
    # Zero is a jumbogram (RFC 2675) or offload; either way use what is there.
    wire_end = off + 40 + payload_len if payload_len else n
    end = wire_end if wire_end < n else n
    next_header = data[off + 6]
    pos = off + 40
    fragmented = 0
    while next_header != _PROTO_TCP:
        if next_header == _V6_NO_NEXT:
            stats.ipv6_no_next_header += 1
            return None
        if next_header not in _V6_EXTENSIONS:
            stats.not_tcp += 1
            return None
        if pos + 8 > end:  # every extension header is at least 8 bytes
            stats.malformed += 1
            return None
        if next_header in (_V6_HOP_BY_HOP, _V6_ROUTING, _V6_DEST_OPTS):
            size = (data[pos + 1] + 1) << 3
        elif next_header == _V6_FRAGMENT:
            frag = _U16(data, pos + 2)[0]
            if frag & 0xFFF8:
                stats.ip_fragment_later += 1
                return None
            fragmented |= frag & 1
            size = 8
        else:  # _V6_AH
            size = (data[pos + 1] + 2) << 2
        next_header = data[pos]
        pos += size
    if pos + 20 > end:
        stats.malformed += 1
        _header_cut(data, pos, end, wire_end, ports, stats)
        return None
    src_port, dst_port = _PORTS(data, pos)
    if src_port not in ports and dst_port not in ports:
        stats.other_port += 1
        return None
    if fragmented:
        stats.ip_fragment += 1
        return None
    return _tcp(data, pos, wire_end, end, off + 8, 16, src_port, dst_port, stats)


def _header_cut(
    data: bytes,
    tcp: int,
    end: int,
    wire_end: int,
    ports: frozenset[int],
    stats: DecodeStats,
) -> None:
    """Count a TCP header the capture cut off (``end`` short of
    ``wire_end``) where what is left shows a watched port, or shows too
    little to tell: a snap length that small cuts every packet so."""
    if end >= wire_end:
        return  # the packet itself is too short: damage, not the capture
    if tcp + 4 <= end:
        src_port, dst_port = _PORTS(data, tcp)
        if src_port not in ports and dst_port not in ports:
            return
    stats.header_cut += 1


def _tcp(
    data: bytes,
    off: int,
    wire_end: int,
    end: int,
    addr_off: int,
    addr_len: int,
    src_port: int,
    dst_port: int,
    stats: DecodeStats,
) -> TcpSegment | None:
    """TCP header (RFC 9293 3.1) of a segment on a watched port.

    The IP packet ends at ``wire_end``; ``end`` is where the captured bytes
    of it stop. Bytes past ``wire_end`` are link-layer padding and are
    dropped; a ``wire_end`` past ``end`` means the snap length cut it.
    """
    seq, ack, data_offset, flags = _SEQ_ACK(data, off + 4)
    start = off + ((data_offset >> 4) << 2)
    if start < off + 20 or start > wire_end:
        stats.malformed += 1
        return None
    missing = wire_end - end
    if start > end:
        # Options cut by the snap length: the whole payload is missing.
        missing = wire_end - start
        start = end
    stats.tcp += 1
    if missing:
        stats.truncated += 1
    src = data[addr_off : addr_off + addr_len]
    dst = data[addr_off + addr_len : addr_off + 2 * addr_len]
    text = _address_text
    return tuple.__new__(
        TcpSegment,
        (
            text.get(src) or _address(src),
            text.get(dst) or _address(dst),
            src_port,
            dst_port,
            seq,
            ack,
            flags,
            data[start:end],
            missing > 0,
            missing,
        ),
    )
