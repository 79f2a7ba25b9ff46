"""capture.decode: hand-made frames for each link type and IP variant."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.decode import (
    ACK,
    FIN,
    SMTP_PORTS,
    SYN,
    DecodeStats,
    TcpSegment,
    compact,
    decode_at,
    decode_tcp,
    expand,
)
from tests.capture.craft import ethernet, ipv4, ipv6, tcp_header, v4_tcp

PAYLOAD = b"EHLO client.example\r\n"
EXPECTED = TcpSegment(
    "192.0.2.1", "198.51.100.2", 40000, 25, 1000, 0, 0x18, PAYLOAD, False, 0
)


def decode(linktype: int, frame: bytes) -> tuple[TcpSegment | None, DecodeStats]:
    stats = DecodeStats()
    return decode_tcp(linktype, frame, SMTP_PORTS, stats), stats


def test_ethernet() -> None:
    segment, stats = decode(1, ethernet(v4_tcp(payload=PAYLOAD)))
    assert segment == EXPECTED
    assert stats.tcp == 1


@pytest.mark.parametrize("tpids", [(0x8100,), (0x88A8, 0x8100), (0x9100, 0x8100)])
def test_ethernet_vlan_tags(tpids: tuple[int, ...]) -> None:
    segment, _ = decode(1, ethernet(v4_tcp(payload=PAYLOAD), vlans=tpids))
    assert segment == EXPECTED


def _cooked(ethertype: int, vlans: tuple[int, ...], version: int) -> bytes:
    """A Linux cooked header, v1 or v2, naming ``ethertype`` behind tags."""
    types = [*vlans, ethertype]
    tags = b"".join(struct.pack(">HH", 100, inner) for inner in types[1:])
    if version == 1:
        return struct.pack(">HHH8sH", 0, 1, 6, b"\2" * 8, types[0]) + tags
    return struct.pack(">HHIHBB8s", types[0], 0, 2, 1, 0, 6, b"\2" * 8) + tags


_V6_SEGMENT = ipv6("2001:db8::1", "2001:db8::2", tcp_header(40000, 25, 5, 6, ACK))
_V4_SEGMENT = v4_tcp(payload=PAYLOAD)


@pytest.mark.parametrize("vlans", [(), (0x8100,), (0x88A8, 0x8100)])
@pytest.mark.parametrize(
    ("named", "packet"), [(0x0800, _V6_SEGMENT), (0x86DD, _V4_SEGMENT)]
)
@pytest.mark.parametrize("linktype", [1, 113, 276])
def test_ip_of_another_version_than_its_ethertype_names_is_malformed(
    linktype: int, named: int, packet: bytes, vlans: tuple[int, ...]
) -> None:
    # libpcap's filter reads behind an EtherType only the version it names
    # and drops the frame; the Python reader read the version the packet
    # said (found in review, on Ethernet behind tags, then on Linux cooked
    # captures: a small capture had sessions a large one, read through
    # libpcap, did not).
    if linktype == 1:
        frame = ethernet(packet, named, vlans=vlans)
    else:
        frame = _cooked(named, vlans, 1 if linktype == 113 else 2) + packet
    segment, stats = decode(linktype, frame)
    assert segment is None
    assert stats.malformed == 1 and stats.not_ip == 0
    # The same frame naming the version it carries is read.
    right = 0x86DD if named == 0x0800 else 0x0800
    if linktype == 1:
        frame = ethernet(packet, right, vlans=vlans)
    else:
        frame = _cooked(right, vlans, 1 if linktype == 113 else 2) + packet
    assert decode(linktype, frame)[0] is not None


def test_ethernet_padding_stripped() -> None:
    # A bare SYN is 40 bytes of IP; Ethernet pads the frame to 60.
    frame = ethernet(v4_tcp(flags=SYN)) + b"\0" * 6
    segment, _ = decode(1, frame)
    assert segment is not None
    assert segment.payload == b""
    assert not segment.truncated


def test_truncated_by_snap_length() -> None:
    frame = ethernet(v4_tcp(payload=PAYLOAD))
    segment, stats = decode(1, frame[:-5])
    assert segment is not None
    assert segment.payload == PAYLOAD[:-5]
    assert segment.truncated and segment.missing == 5
    assert stats.truncated == 1


def test_options_cut_by_snap_length() -> None:
    header = tcp_header(40000, 25, 7, 0, ACK, options=b"\x01" * 12)
    frame = ipv4("192.0.2.1", "198.51.100.2", header + PAYLOAD)
    segment, _ = decode(101, frame[: 20 + 24])
    assert segment is not None
    assert segment.payload == b""
    assert segment.missing == len(PAYLOAD)


def test_ipv4_options_honoured() -> None:
    frame = ipv4(
        "192.0.2.1",
        "198.51.100.2",
        tcp_header(40000, 25, 1000, 0, 0x18) + PAYLOAD,
        options=b"\x01\x01\x01\x00",
    )
    segment, _ = decode(101, frame)
    assert segment == EXPECTED


def test_linux_cooked_v1() -> None:
    sll = struct.pack(">HHH8sH", 0, 1, 6, b"\2" * 8, 0x0800)
    segment, _ = decode(113, sll + v4_tcp(payload=PAYLOAD))
    assert segment == EXPECTED


def test_linux_cooked_v2() -> None:
    sll2 = struct.pack(">HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"\2" * 8)
    packet = ipv6("2001:db8::1", "2001:db8::2", tcp_header(40000, 587) + PAYLOAD)
    segment, _ = decode(276, sll2 + packet)
    assert segment is not None
    assert (segment.src_ip, segment.dst_ip) == ("2001:db8::1", "2001:db8::2")
    assert segment.payload == PAYLOAD


@pytest.mark.parametrize("tags", [1, 2])
def test_linux_cooked_behind_vlan_tags(tags: int) -> None:
    # Found in review: v2, whose protocol field comes first, read its tag
    # from the link-layer address. A tag is a TCI, then the next EtherType.
    inner = b"".join(struct.pack(">HH", 100 + n, 0x8100) for n in range(tags - 1))
    inner += struct.pack(">HH", 100, 0x0800)
    sll = struct.pack(">HHH8sH", 0, 1, 6, b"\2" * 8, 0x8100)
    sll2 = struct.pack(">HHIHBB8s", 0x8100, 0, 2, 1, 0, 6, b"\2" * 8)
    for linktype, header in ((113, sll), (276, sll2)):
        segment, _ = decode(linktype, header + inner + v4_tcp(payload=PAYLOAD))
        assert segment == EXPECTED, linktype


@pytest.mark.parametrize("linktype", [101, 12, 14, 228])
def test_raw_ipv4(linktype: int) -> None:
    segment, _ = decode(linktype, v4_tcp(payload=PAYLOAD))
    assert segment == EXPECTED


def test_a_one_version_link_type_reads_no_other() -> None:
    # LINKTYPE_IPV4 (228) promises IPv4: libpcap's filter finds no IPv6 in
    # it, and the decoder, which must agree, reads none either.
    packet = ipv6("2001:db8::1", "2001:db8::2", tcp_header(40000, 25) + PAYLOAD)
    segment, stats = decode(228, packet)
    assert segment is None and stats.not_ip == 1
    segment, stats = decode(229, v4_tcp(payload=PAYLOAD))
    assert segment is None and stats.not_ip == 1


def test_raw_ipv6_link_type() -> None:
    packet = ipv6("2001:db8::1", "2001:db8::2", tcp_header(40000, 25) + PAYLOAD)
    segment, _ = decode(229, packet)
    assert segment is not None and segment.payload == PAYLOAD


@pytest.mark.parametrize(
    ("family", "order"),
    [(2, "<"), (2, ">"), (24, "<"), (28, "<"), (30, "<"), (30, ">")],
)
def test_bsd_null(family: int, order: str) -> None:
    if family == 2:
        packet = v4_tcp(payload=PAYLOAD)
    else:
        packet = ipv6("2001:db8::1", "2001:db8::2", tcp_header(40000, 25) + PAYLOAD)
    segment, _ = decode(0, struct.pack(order + "I", family) + packet)
    assert segment is not None and segment.payload == PAYLOAD


def test_openbsd_loop() -> None:
    segment, _ = decode(108, struct.pack(">I", 2) + v4_tcp(payload=PAYLOAD))
    assert segment == EXPECTED


def test_ipv6_extension_headers() -> None:
    hop_by_hop = b"\0" + b"\x01\x04\0\0\0\0"  # hdr ext len 0, PadN
    routing = b"\0" + b"\0\0\0\0\0\0"  # type 0, segments left 0
    fragment = b"\0" + struct.pack(">HI", 0, 7)  # offset 0, M clear: atomic
    dest_opts = b"\0" + b"\x01\x04\0\0\0\0"
    auth = b"\x04" + b"\0\0" + b"\0" * 4 + b"\0" * 4 + b"\0" * 12  # 24-byte AH
    packet = ipv6(
        "2001:db8::1",
        "2001:db8::2",
        tcp_header(40000, 25, 5, 6, ACK | FIN) + PAYLOAD,
        extensions=[
            (0, hop_by_hop),
            (43, routing),
            (44, fragment),
            (60, dest_opts),
            (51, auth),
        ],
    )
    segment, _ = decode(229, packet)
    assert segment is not None
    assert (segment.seq, segment.ack, segment.flags) == (5, 6, ACK | FIN)
    assert segment.payload == PAYLOAD


def test_ipv6_no_next_header() -> None:
    packet = ipv6("2001:db8::1", "2001:db8::2", b"", next_header=59)
    segment, stats = decode(229, packet)
    assert segment is None and stats.ipv6_no_next_header == 1


def test_ipv6_fragments() -> None:
    first = b"\0" + struct.pack(">HI", 1, 7)  # offset 0, M set
    later = b"\0" + struct.pack(">HI", 8 << 3, 7)
    stats = DecodeStats()
    for frag, payload in ((first, tcp_header(40000, 25) + PAYLOAD), (later, b"x" * 8)):
        packet = ipv6("2001:db8::1", "2001:db8::2", payload, extensions=[(44, frag)])
        assert decode_tcp(229, packet, SMTP_PORTS, stats) is None
    assert (stats.ip_fragment, stats.ip_fragment_later) == (1, 1)


def test_ipv4_fragments() -> None:
    stats = DecodeStats()
    whole = tcp_header(40000, 25) + PAYLOAD
    first = ipv4("192.0.2.1", "198.51.100.2", whole, frag=0x2000)
    later = ipv4("192.0.2.1", "198.51.100.2", b"x" * 8, frag=0x0003)
    other_port = ipv4("192.0.2.1", "198.51.100.2", tcp_header(1, 2), frag=0x2000)
    for packet in (first, later, other_port):
        assert decode_tcp(101, packet, SMTP_PORTS, stats) is None
    assert (stats.ip_fragment, stats.ip_fragment_later, stats.other_port) == (1, 1, 1)


def test_ipv4_total_length_zero_uses_captured_bytes() -> None:
    # Captured on the sender before segmentation offload filled it in.
    packet = ipv4(
        "192.0.2.1", "198.51.100.2", tcp_header(40000, 25, 1000) + PAYLOAD, total=0
    )
    segment, _ = decode(101, packet)
    assert segment == EXPECTED


def test_other_port_returns_none() -> None:
    segment, stats = decode(1, ethernet(v4_tcp(sport=40000, dport=80, payload=PAYLOAD)))
    assert segment is None and stats.other_port == 1


def test_server_side_port_matches() -> None:
    segment, _ = decode(1, ethernet(v4_tcp(sport=465, dport=50000)))
    assert segment is not None and segment.src_port == 465


def test_udp_arp_and_garbage_are_counted() -> None:
    stats = DecodeStats()
    udp = ipv4("192.0.2.1", "198.51.100.2", b"\0" * 8, proto=17)
    frames = [
        (1, ethernet(udp)),
        (1, ethernet(b"\0" * 28, ethertype=0x0806)),
        (1, b"\0" * 10),
        (1, ethernet(b"\x45")),
        (101, b"\x55" * 30),
        (0, struct.pack("<I", 7) + udp),
    ]
    for linktype, frame in frames:
        assert decode_tcp(linktype, frame, SMTP_PORTS, stats) is None
    assert stats.as_dict() == {
        **DecodeStats().as_dict(),
        "not_tcp": 1,
        "not_ip": 2,
        "malformed": 3,
    }


def test_bad_tcp_data_offset() -> None:
    header = bytearray(tcp_header(40000, 25) + PAYLOAD)
    header[12] = 0x30  # 12 bytes: shorter than the fixed header
    segment, stats = decode(101, ipv4("192.0.2.1", "198.51.100.2", bytes(header)))
    assert segment is None and stats.malformed == 1


def test_unknown_link_type_through_scapy() -> None:
    # An 802.11 data frame (LINKTYPE_IEEE802_11) is not decoded here: its
    # 24-byte header, then LLC/SNAP with the IPv4 EtherType. scapy knows it.
    header = b"\x08\x00\x00\x00" + b"\x02" * 6 + b"\x04" * 6 + b"\x06" * 6 + b"\0\0"
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00"
    segment, stats = decode(105, header + snap + v4_tcp(payload=PAYLOAD))
    assert segment == EXPECTED
    assert stats.via_scapy == 1


def test_a_frame_of_a_known_link_type_without_ip_is_not_ip() -> None:
    # A PPP LCP Echo-Request (RFC 1661 5.8): no IP in it, and nothing
    # wrong with the link type, which a capture of it must not be told.
    lcp_echo = b"\xff\x03\xc0\x21" + b"\x09\x01\x00\x08" + b"\x12\x34\x56\x78"
    segment, stats = decode(50, lcp_echo)
    assert segment is None
    assert (stats.not_ip, stats.unknown_linktype, stats.via_scapy) == (1, 0, 0)


IP4 = v4_tcp(payload=PAYLOAD)
PPPOE = b"\x11\x00\x00\x2a" + struct.pack(">H", len(IP4) + 2)


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (9, b"\xff\x03\x00\x21" + IP4),  # RFC 1662 3.1 framing
        (9, b"\x00\x21" + IP4),  # without address and control
        (9, b"\x21" + IP4),  # the protocol compressed (RFC 1661 6.5)
        (50, b"\xff\x03\x00\x21" + IP4),
        (50, b"\x0f\x00\x08\x00" + IP4),  # Cisco's framing
        (104, b"\x8f\x00\x08\x00" + IP4),
        (204, b"\x00\xff\x03\x00\x21" + IP4),  # received, then PPP
        (51, PPPOE + b"\x00\x21" + IP4),
        (1, ethernet(PPPOE + b"\x00\x21" + IP4, 0x8864)),
        (1, ethernet(PPPOE + b"\x00\x21" + IP4, 0x8864, vlans=(0x8100,))),
        (113, struct.pack(">HHH8s", 0, 1, 6, b"\2" * 8) + b"\x88\x64" + PPPOE
         + b"\x00\x21" + IP4),
        (276, struct.pack(">HHIHBB8s", 0x8864, 0, 2, 1, 0, 6, b"\2" * 8) + PPPOE
         + b"\x00\x21" + IP4),
    ],
)  # fmt: skip
def test_ppp_and_pppoe_are_decoded_without_scapy(linktype: int, frame: bytes) -> None:
    segment, stats = decode(linktype, frame)
    assert segment == EXPECTED
    assert (stats.tcp, stats.via_scapy) == (1, 0)


@pytest.mark.parametrize(
    ("linktype", "frame", "counted"),
    [
        (9, b"\xff\x03\x00\x57" + IP4, "not_ip"),  # says IPv6, holds IPv4
        (9, b"\xff\x03\x80\x21" + IP4, "not_ip"),  # IPCP
        (9, b"\xff\x03", "malformed"),
        (9, b"\xff\x03\x00", "malformed"),
        (104, b"\x0f\x00\x86\xdd" + IP4, "not_ip"),
        (51, b"\x11\x00\x00\x2a", "malformed"),
        (51, PPPOE + b"\x21" + IP4, "not_ip"),  # PPPoE never compresses
        (51, b"\x11\x07" + PPPOE[2:] + b"\x00\x21" + IP4, "not_ip"),  # discovery
        (1, ethernet(PPPOE + b"\xc0\x21" + IP4, 0x8864), "not_ip"),  # LCP
    ],
)
def test_ppp_frames_without_the_ip_they_name_are_counted(
    linktype: int, frame: bytes, counted: str
) -> None:
    segment, stats = decode(linktype, frame)
    assert segment is None
    assert getattr(stats, counted) == 1 and stats.via_scapy == 0


def test_unknown_link_type_scapy_cannot_read() -> None:
    segment, stats = decode(147, v4_tcp(payload=PAYLOAD))  # LINKTYPE_USER0
    assert segment is None and stats.unknown_linktype == 1


def test_truncated_headers_never_raise() -> None:
    frame = ethernet(v4_tcp(payload=PAYLOAD), vlans=(0x8100,))
    for cut in range(len(frame)):
        decode(1, frame[:cut])
    packet = ipv6(
        "2001:db8::1",
        "2001:db8::2",
        tcp_header(40000, 25) + PAYLOAD,
        extensions=[(0, b"\0" * 7)],
    )
    for cut in range(len(packet)):
        decode(229, packet[:cut])


# -- decode_at: a frame inside a larger buffer ------------------------------


FRAMES = [
    ethernet(v4_tcp(payload=PAYLOAD)),
    ethernet(v4_tcp(flags=SYN)) + b"\0" * 6,
    ethernet(v4_tcp(payload=PAYLOAD))[:-5],
    ethernet(v4_tcp(payload=PAYLOAD), vlans=(0x8100,)),
    ethernet(v4_tcp(dport=80, payload=PAYLOAD)),
    ethernet(ipv4("192.0.2.1", "198.51.100.2", b"\0" * 28, proto=17)),
    ethernet(
        ipv6("2001:db8::1", "2001:db8::2", tcp_header(40000, 25) + PAYLOAD), 0x86DD
    ),
    ethernet(
        ipv6(
            "2001:db8::1",
            "2001:db8::2",
            tcp_header(40000, 25) + PAYLOAD,
            extensions=[(0, b"\0" * 7)],
        ),
        0x86DD,
    ),
]


@settings(max_examples=300, deadline=None)
@given(
    frame=st.sampled_from(FRAMES),
    before=st.binary(max_size=40),
    after=st.binary(max_size=40),
    flips=st.lists(st.tuples(st.integers(0, 100), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 100),
)
def test_decode_at_is_decode_tcp_in_place(
    frame: bytes,
    before: bytes,
    after: bytes,
    flips: list[tuple[int, int]],
    cut: int,
) -> None:
    damaged = bytearray(frame[: len(frame) - cut % 8])
    for where, mask in flips:
        damaged[where % len(damaged)] ^= mask
    frame = bytes(damaged)
    for linktype in (1, 101):
        expected_stats = DecodeStats()
        expected = decode_tcp(linktype, frame, SMTP_PORTS, expected_stats)
        stats = DecodeStats()
        buf = before + frame + after
        found = decode_at(
            linktype, buf, len(before), len(before) + len(frame), SMTP_PORTS, stats
        )
        assert found == (None if expected is None else compact(expected))
        assert stats == expected_stats
        if found is not None:
            assert expand(found) == expected


def test_flow_keys_of_one_client_share_its_address_text() -> None:
    # Found measuring memory: the reassembler keeps closed connections'
    # keys for the idle timeout, and each key held address strings of its
    # own. Two connections of one client now hold one string, interned.
    one, two = (ethernet(v4_tcp(sport=port)) for port in (40001, 40002))
    first = decode_at(1, one, 0, len(one), SMTP_PORTS, DecodeStats())
    second = decode_at(1, two, 0, len(two), SMTP_PORTS, DecodeStats())
    assert first is not None and second is not None
    assert first[0][:2] == ("192.0.2.1", "198.51.100.2")
    assert first[0][0] is second[0][0] and first[0][1] is second[0][1]
