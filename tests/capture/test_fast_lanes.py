"""The packet path's fast lanes against the general code they shortcut.

Every fast lane (decode_at's fast path run inline in the libpcap loop of
capture.source with its cache of watched flow keys, the steady lane of
Reassembler.feed) must hand on exactly
what the general path would: checked here on captures with the odd shapes
the lanes step aside for.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from capture import decode, libpcap, reassembly, source
from capture.decode import ACK, FIN, RST, SYN, FlowKey, Segment, compact, watched_key
from capture.reassembly import Reassembler
from capture.source import SourceStats, iter_stream_events
from capture.stream import (
    CloseReason,
    StreamClosed,
    StreamData,
    StreamEvent,
    StreamGap,
)
from tests.capture.craft import (
    Frame,
    ethernet,
    ipv4,
    ipv6,
    pcap,
    seg,
    tcp_header,
)

PSH_ACK = 0x18
# NOP, NOP, then a timestamp option (RFC 7323 3): 12 bytes of options.
TIMESTAMPS = b"\x01\x01\x08\x0a" + b"\x00\x00\x00\x01\x00\x00\x00\x02"

Address = tuple[str, int]
# Wraps a TCP segment (header and payload) between two addresses in a frame.
Wrap = Callable[[str, str, bytes], bytes]


def _v4(src: str, dst: str, segment: bytes) -> bytes:
    return ethernet(ipv4(src, dst, segment))


def _v4_padded(src: str, dst: str, segment: bytes) -> bytes:
    # Ethernet pads short frames to 60 bytes: bytes past the IP packet.
    frame = ethernet(ipv4(src, dst, segment))
    return frame + b"\0" * max(0, 60 - len(frame))


def _v4_ip_options(src: str, dst: str, segment: bytes) -> bytes:
    return ethernet(ipv4(src, dst, segment, options=b"\x01\x01\x01\x00"))


def _v4_vlan(src: str, dst: str, segment: bytes) -> bytes:
    return ethernet(ipv4(src, dst, segment), vlans=(0x8100,))


def _v6(src: str, dst: str, segment: bytes) -> bytes:
    return ethernet(ipv6(src, dst, segment), ethertype=0x86DD)


def _v6_options(src: str, dst: str, segment: bytes) -> bytes:
    # A destination-options header before TCP: the general path's case.
    packet = ipv6(src, dst, segment, extensions=[(60, b"\0" * 7)])
    return ethernet(packet, ethertype=0x86DD)


def _conversation(
    wrap: Wrap,
    client_ip: str,
    server_ip: str,
    sport: int,
    *,
    options: bytes = b"",
    rng: random.Random,
    end: int = FIN,
) -> list[bytes]:
    """Frames of one SMTP-like connection, reordered, repeated and holed.

    A handshake, then turns of data both ways, the client's message in
    many segments; some segments swapped, repeated or dropped (a drop the
    peer's acknowledgment later proves sent); closed by FINs or a RST.
    """
    seqs = {sport: 1000 + sport, 25: 7000 + sport}
    frames: list[bytes] = []

    def send(src_port: int, flags: int, data: bytes = b"") -> None:
        dst_port = 25 if src_port == sport else sport
        header = tcp_header(
            src_port, dst_port, seqs[src_port], seqs[dst_port], flags, options
        )
        src, dst = (
            (client_ip, server_ip) if src_port == sport else (server_ip, client_ip)
        )
        frames.append(wrap(src, dst, header + data))
        seqs[src_port] = (seqs[src_port] + len(data) + bool(flags & (SYN | FIN))) % (
            1 << 32
        )

    send(sport, SYN)
    send(25, SYN | ACK)
    send(sport, ACK)
    send(25, PSH_ACK, b"220 mx ESMTP\r\n")
    send(sport, PSH_ACK, b"EHLO client\r\n")
    send(25, PSH_ACK, b"250 mx\r\n")
    send(sport, PSH_ACK, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    send(25, PSH_ACK, b"250 ok\r\n250 ok\r\n354 go\r\n")
    for line in range(40):
        send(sport, PSH_ACK, f"line {line} ".encode() * rng.randrange(1, 30) + b"\r\n")
        if line % 3 == 2:
            send(25, ACK)  # a pure ACK of what came so far
    last_line = frames[-1]
    send(sport, PSH_ACK, b".\r\n")
    send(25, PSH_ACK, b"250 queued\r\n")
    if end == RST:
        send(sport, RST | ACK)
    else:
        send(sport, PSH_ACK, b"QUIT\r\n")
        send(25, PSH_ACK, b"221 bye\r\n")
        send(sport, FIN | ACK)
        send(25, FIN | ACK)
        send(sport, ACK)

    # Disorder in the message's middle, away from the handshake and close.
    middle = range(10, len(frames) - 8)
    for _ in range(4):
        i = rng.choice(middle)
        frames[i], frames[i + 1] = frames[i + 1], frames[i]
    for _ in range(3):
        i = rng.choice(middle)
        frames.insert(i + 2, frames[i])  # a retransmission
    # A copy of the message's last line whose last byte differs: the
    # reassembler compares it with the unacknowledged bytes it kept.
    i = frames.index(last_line)
    frames.insert(i + 1, last_line[:-1] + b"?")
    del frames[rng.choice(middle)]  # lost by the capture
    return frames


def _odd_capture(path: Path, seed: int) -> None:
    """Conversations of every shape the fast lanes step aside for, interleaved."""
    rng = random.Random(seed)
    conversations = [
        _conversation(_v4, "192.0.2.1", "198.51.100.25", 40001, rng=rng),
        _conversation(_v4_padded, "192.0.2.2", "198.51.100.25", 40002, rng=rng),
        _conversation(_v4_ip_options, "192.0.2.3", "198.51.100.25", 40003, rng=rng),
        _conversation(_v4_vlan, "192.0.2.4", "198.51.100.25", 40004, rng=rng),
        _conversation(_v6, "2001:db8::5", "2001:db8:1::25", 40005, rng=rng),
        _conversation(_v6_options, "2001:db8::8", "2001:db8:1::25", 40008, rng=rng),
        _conversation(
            _v4, "192.0.2.6", "198.51.100.25", 40006, options=TIMESTAMPS, rng=rng
        ),
        _conversation(_v4, "192.0.2.7", "198.51.100.25", 40007, rng=rng, end=RST),
    ]
    frames: list[bytes] = []
    while any(conversations):
        # One frame of a random unfinished conversation at a time.
        frames.append(rng.choice([c for c in conversations if c]).pop(0))
    path.write_bytes(
        pcap(
            Frame(1_700_000_000 + i // 50, i % 50 * 1000, f)
            for i, f in enumerate(frames)
        )
    )


def _read(path: Path) -> tuple[list[StreamEvent], SourceStats]:
    stats = SourceStats()
    events = list(iter_stream_events([str(path)], stats=stats))
    return events, stats


def _general_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every segment take Reassembler._segment, never the steady lane."""

    def never_steady(flow: reassembly._Flow) -> None:
        flow.steady = False

    monkeypatch.setattr(reassembly._Flow, "settle", never_steady)


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_libpcap_loop_hands_on_what_the_python_reader_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    path = tmp_path / "odd.pcap"
    _odd_capture(path, seed)
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    fast, fast_stats = _read(path)
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    slow, slow_stats = _read(path)

    assert fast_stats.filtered and not slow_stats.filtered
    assert fast == slow
    assert fast_stats.decode == slow_stats.decode
    assert fast_stats.reassembly == slow_stats.reassembly
    assert fast_stats.smtp_packets == slow_stats.smtp_packets > 8 * 60


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_steady_lane_hands_on_what_the_general_path_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    path = tmp_path / "odd.pcap"
    _odd_capture(path, seed)
    fast, fast_stats = _read(path)
    _general_lane(monkeypatch)
    slow, slow_stats = _read(path)

    assert fast == slow
    assert fast_stats.reassembly == slow_stats.reassembly
    # The capture does exercise gaps and retransmissions.
    assert any(isinstance(event, StreamGap) for event in fast)
    assert fast_stats.reassembly.retransmissions > 0
    assert fast_stats.reassembly.overlap_mismatches > 0


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
def test_libpcap_loop_decodes_a_plain_ipv4_segment_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No handshake: the first bytes start the client's stream.
    path = tmp_path / "one.pcap"
    header = tcp_header(40000, 25, 1000, 5000, PSH_ACK, TIMESTAMPS)
    frame = _v4_padded("192.0.2.1", "198.51.100.25", header + b"EHLO x\r\n")
    path.write_bytes(pcap([Frame(1_700_000_000, 250, frame)]))
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    events, stats = _read(path)

    assert stats.filtered
    data = [event for event in events if isinstance(event, StreamData)]
    assert [(d.data, d.ts, int(d.direction)) for d in data] == [
        (b"EHLO x\r\n", 1_700_000_000_000_250_000, 0)
    ]
    conn = data[0].conn
    assert (conn.client_ip, conn.client_port, conn.server_ip, conn.server_port) == (
        "192.0.2.1",
        40000,
        "198.51.100.25",
        25,
    )
    assert stats.decode.tcp == 1 and stats.packets == 1


def _quiet_spells() -> list[tuple[int, Segment]]:
    """Two connections; the first falls quiet for just under, then just
    over, the 10 s idle timeout while the second keeps the clock (and the
    idle sweeps, every 1.25 s at most) going. Each quiet spell ends between
    two sweeps, where only feed's own idle test can tell."""
    ms = 1_000_000
    a = (("10.0.0.1", 40000), ("10.0.0.2", 25))
    b = (("10.0.0.3", 40001), ("10.0.0.2", 25))
    sent = {a[0]: 100, a[1]: 900, b[0]: 2000, b[1]: 7000}
    out: list[tuple[int, Segment]] = []

    def send(ms_at: int, pair: tuple[Address, Address], data: bytes) -> None:
        src, dst = pair
        segment = seg(src, sent[src], data, ack=sent[dst], flags=PSH_ACK)
        segment = segment._replace(dst_ip=dst[0], dst_port=dst[1])
        out.append((ms_at * ms, compact(segment)))
        sent[src] += len(data)

    for at in (0, 1000, 2000, 2700):
        send(at, a, b"a\r\n")
    # b every half second: sweeps at 2.0, 4.0, 5.5, ... 11.5, 13.0, ...
    for at in range(0, 30_000, 500):
        send(at, b, b"b\r\n")
        if at == 12_500:
            send(12_600, a, b"under\r\n")  # 9.9 s after a's last
        if at == 23_000:
            send(22_700, a, b"over\r\n")  # 10.1 s after a's last
    return sorted(out, key=lambda item: item[0])


def test_steady_lane_after_quiet_spells_matches_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def run() -> list[StreamEvent]:
        reassembler = Reassembler(frozenset({25}), idle_timeout_s=10.0)
        events: list[StreamEvent] = []
        for ts, segment in _quiet_spells():
            events += reassembler.feed(ts, segment)
        return events + reassembler.finish()

    fast = run()
    _general_lane(monkeypatch)
    slow = run()

    assert fast == slow
    # The first connection survived 9.9 s of quiet, then after 10.1 s was
    # closed as idle and "over" opened another.
    closed = [(e.conn.conn_id, e.reason) for e in fast if isinstance(e, StreamClosed)]
    assert closed[0] == (0, CloseReason.IDLE)
    data = [(e.conn.conn_id, e.data) for e in fast if isinstance(e, StreamData)]
    assert (0, b"under\r\n") in data and (2, b"over\r\n") in data


def test_watched_key_keeps_only_watched_flows_in_its_cache() -> None:
    # 192.0.2.1 -> 198.51.100.25, ports 40000 -> 25, as they lie in a frame.
    where = bytes([192, 0, 2, 1, 198, 51, 100, 25]) + struct.pack(">HH", 40000, 25)
    cache: dict[bytes, FlowKey] = {}

    assert watched_key(where, frozenset({587}), cache) is None
    assert cache == {}
    key = watched_key(where, frozenset({25}), cache)
    assert key == ("192.0.2.1", "198.51.100.25", 40000, 25)
    assert cache == {where: key}

    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(
        socket.AF_INET6, "2001:db8::25"
    )
    assert watched_key(v6 + struct.pack(">HH", 25, 50000), frozenset({25}), {}) == (
        "2001:db8::1",
        "2001:db8::25",
        25,
        50000,
    )


def test_watched_key_cache_is_emptied_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decode, "_FLOW_KEY_LIMIT", 2)
    cache: dict[bytes, FlowKey] = {}
    for port in (40000, 40001, 40002):
        where = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack(">HH", port, 25)
        watched_key(where, frozenset({25}), cache)
    assert [struct.unpack(">H", where[8:10])[0] for where in cache] == [40002]
