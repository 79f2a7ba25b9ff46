"""Frames of synthetic TCP connections: Ethernet, IPv4 or IPv6, TCP.

Nothing here opens a socket: frames are built as bytes for a capture file.
A ``TcpConn`` plays both ends of one connection on its own clock and yields
``Frame`` tuples (timestamp in microseconds, headers, payload); the caller
merges the frames of many connections by time and writes them.

Invariants:
- sequence and acknowledgement numbers describe each direction's byte stream
  exactly, so a reassembler rebuilds it byte for byte even where a segment is
  sent twice or overtakes the one before it;
- a connection's frames come with non-decreasing timestamps;
- IPv4 header and TCP checksums are correct. They use the ones'-complement
  identity "sum of 16-bit words = value mod 0xFFFF" (RFC 1071 2), so the
  payload's share is one big-integer remainder, and a ``Chunks`` blob knows
  the share of each of its MSS-sized pieces in advance.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from random import Random

Frame = tuple[int, bytes, bytes | memoryview]  # time (us), headers, payload

CLIENT = 0
SERVER = 1

FIN = 0x01
SYN = 0x02
PSH = 0x08
ACK = 0x10

MTU = 1500
TS_OPTION_LEN = 12  # NOP, NOP, timestamps (RFC 7323 3.2) on every segment
WINDOW = 1024  # with window scale 7 (RFC 7323 2.2): 128 KiB
_U32 = 0xFFFFFFFF

# Ethernet, then IP, then a 32-byte TCP header: 20 bytes and the TS option.
_V4 = struct.Struct("!6s6sHBBHHHBBH4s4sHHIIBBHHHBBBBII")
_V6 = struct.Struct("!6s6sHIHBB16s16sHHIIBBHHHBBBBII")
_ETHERTYPE_V4 = 0x0800
_ETHERTYPE_V6 = 0x86DD
_DATA_OFFSET = 0x80  # 8 words of TCP header, in the high nibble
_OPTION_WORDS = 0x0101 + 0x080A  # NOP NOP, kind 8 length 10
# SYN options: MSS, SACK permitted, timestamps, NOP, window scale 7.
_SYN_OPTIONS = struct.Struct("!BBHBBBBIIBBBB")
_SYN_HEADER = struct.Struct("!HHIIBBHHH")


def mss_for(ipv6: bool) -> int:
    """Payload bytes per full segment on a 1500-byte Ethernet MTU."""
    return MTU - (40 if ipv6 else 20) - 20 - TS_OPTION_LEN


def payload_sum(data: bytes | memoryview) -> int:
    """This payload's share of a TCP checksum, reduced mod 0xFFFF."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # RFC 9293 3.1: an odd last byte is padded with zero
    return value % 0xFFFF


def _words(data: bytes) -> int:
    return int.from_bytes(data, "big") % 0xFFFF


@dataclass(frozen=True, slots=True)
class Chunks:
    """A blob cut into ``mss``-sized pieces, each with its checksum share."""

    view: memoryview
    mss: int
    sums: tuple[int, ...]

    @classmethod
    def of(cls, blob: bytes, mss: int) -> Chunks:
        count = len(blob) // mss
        view = memoryview(blob)[: count * mss]
        sums = tuple(payload_sum(view[i * mss : (i + 1) * mss]) for i in range(count))
        return cls(view, mss, sums)

    def __len__(self) -> int:
        return len(self.sums)

    def piece(self, index: int) -> tuple[memoryview, int]:
        index %= len(self.sums)
        start = index * self.mss
        return self.view[start : start + self.mss], self.sums[index]


@dataclass(slots=True)
class FaultCounts:
    """Segments deliberately sent twice or out of order, for the truth file."""

    retransmitted: int = 0
    reordered: int = 0


class Wire:
    """Builds the headers of one connection's frames, in either direction.

    Everything that does not change from frame to frame (addresses, ports,
    their checksum shares) is worked out once here.
    """

    __slots__ = (
        "_ident",
        "_ips",
        "_ipsum",
        "_macs",
        "_pack",
        "_ports",
        "_pseudo",
        "ipv6",
    )

    def __init__(
        self,
        client: tuple[bytes, int],
        server: tuple[bytes, int],
        ident: int,
    ) -> None:
        (cip, cport), (sip, sport) = client, server
        self.ipv6 = len(cip) == 16
        cmac, smac = b"\x06\x00" + cip[-4:], b"\x0a\x00" + sip[-4:]
        self._macs = ((smac, cmac), (cmac, smac))  # (dst, src) by sender
        self._ports = ((cport, sport), (sport, cport))
        self._pack = _V6.pack if self.ipv6 else _V4.pack
        self._ips = ((cip, sip), (sip, cip))  # (src, dst) by sender
        addresses = (cip + sip, sip + cip)
        self._ipsum = (0, 0)
        if not self.ipv6:
            # RFC 791 3.1: version/IHL, DF, TTL 64 + protocol 6, addresses.
            fixed = 0x4500 + 0x4000 + 0x4006
            self._ipsum = (fixed + _words(cip + sip), fixed + _words(sip + cip))
        self._pseudo = tuple(
            _words(addresses[side]) + 6 + cport + sport + _DATA_OFFSET * 256
            + WINDOW + _OPTION_WORDS
            for side in (CLIENT, SERVER)
        )  # fmt: skip
        self._ident = [ident, ident ^ 0x5A5A]

    def frame(
        self,
        side: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes | memoryview,
        psum: int,
        tsval: int,
        tsecr: int,
    ) -> bytes:
        """Headers of one segment with the timestamps option."""
        tcp_len = 32 + len(payload)
        total = (
            self._pseudo[side] + tcp_len + (seq >> 16) + (seq & 0xFFFF)
            + (ack >> 16) + (ack & 0xFFFF) + flags + (tsval >> 16)
            + (tsval & 0xFFFF) + (tsecr >> 16) + (tsecr & 0xFFFF) + psum
        )  # fmt: skip
        csum = 0xFFFF - total % 0xFFFF
        dst, src = self._macs[side]
        sport, dport = self._ports[side]
        tcp = (sport, dport, seq, ack, _DATA_OFFSET, flags, WINDOW, csum, 0)
        tcp_opts = (1, 1, 8, 10, tsval, tsecr)
        if self.ipv6:
            ips = (0x60000000, tcp_len, 6, 64, *self._ips[side])
            return self._pack(dst, src, _ETHERTYPE_V6, *ips, *tcp, *tcp_opts)
        ident = self._ident[side] = (self._ident[side] + 1) & 0xFFFF
        ip_len = 20 + tcp_len
        ip_csum = 0xFFFF - (self._ipsum[side] + ip_len + ident) % 0xFFFF
        ip4 = (0x45, 0, ip_len, ident, 0x4000, 64, 6, ip_csum)
        return self._pack(
            dst, src, _ETHERTYPE_V4, *ip4, *self._ips[side], *tcp, *tcp_opts
        )

    def syn_frame(
        self, side: int, seq: int, ack: int, flags: int, mss: int, tsval: int
    ) -> bytes:
        """Headers of a SYN or SYN-ACK, with its 20 bytes of options."""
        sport, dport = self._ports[side]
        options = _SYN_OPTIONS.pack(2, 4, mss, 4, 2, 8, 10, tsval, 0, 1, 3, 3, 7)
        blank = _SYN_HEADER.pack(sport, dport, seq, ack, 0xA0, flags, 64240, 0, 0)
        src_ip, dst_ip = self._ips[side]
        tcp_len = len(blank) + len(options)
        total = _words(src_ip + dst_ip) + 6 + tcp_len + _words(blank + options)
        csum = 0xFFFF - total % 0xFFFF
        tcp = _SYN_HEADER.pack(sport, dport, seq, ack, 0xA0, flags, 64240, csum, 0)
        dst, src = self._macs[side]
        eth = dst + src
        if self.ipv6:
            ip = struct.pack("!HIHBB", _ETHERTYPE_V6, 0x60000000, tcp_len, 6, 64)
            return eth + ip + src_ip + dst_ip + tcp + options
        ident = self._ident[side] = (self._ident[side] + 1) & 0xFFFF
        ip_len = 20 + tcp_len
        ip_csum = 0xFFFF - (self._ipsum[side] + ip_len + ident) % 0xFFFF
        ip = struct.pack(
            "!HBBHHHBBH", _ETHERTYPE_V4, 0x45, 0, ip_len, ident, 0x4000, 64, 6, ip_csum
        )
        return eth + ip + src_ip + dst_ip + tcp + options


class TcpConn:
    """Both ends of one TCP connection, on a clock of its own.

    Side 0 is the client (it sends the SYN), side 1 the server. ``send``
    yields the segments of one application write and the receiver's ACKs,
    one for every second full segment (RFC 9293 3.8.6.3, delayed ACK); the
    receiver's next write carries any ACK still due.
    """

    def __init__(
        self,
        wire: Wire,
        rng: Random,
        start_us: int,
        rtt_us: int,
        pace_us: int,
        faults: FaultCounts | None = None,
        fault_rate: float = 0.0,
    ) -> None:
        self.wire = wire
        self.rng = rng
        self.now = start_us
        self.rtt = rtt_us
        self.pace = pace_us
        self.mss = mss_for(wire.ipv6)
        self.next_seq = [rng.getrandbits(32), rng.getrandbits(32)]
        self._ts_base = (rng.getrandbits(31), rng.getrandbits(31))
        self.faults = faults
        self.fault_rate = fault_rate

    def _stamp(self, side: int) -> tuple[int, int]:
        """TSval of the sender and the TSecr it echoes (RFC 7323 3)."""
        ms = self.now // 1000
        tsecr = (self._ts_base[1 - side] + (self.now - self.rtt) // 1000) & _U32
        return (self._ts_base[side] + ms) & _U32, tsecr

    def _segment(
        self,
        side: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes | memoryview = b"",
        psum: int = 0,
    ) -> Frame:
        tsval, tsecr = self._stamp(side)
        headers = self.wire.frame(side, seq, ack, flags, payload, psum, tsval, tsecr)
        return self.now, headers, payload

    def pure_ack(self, side: int) -> Frame:
        """An empty ACK from ``side`` for everything the other side sent."""
        return self._segment(side, self.next_seq[side], self.next_seq[1 - side], ACK)

    def open(self) -> Iterator[Frame]:
        """The three-way handshake (RFC 9293 3.5)."""
        cseq, sseq = self.next_seq
        mss = self.mss
        tsval, _ = self._stamp(CLIENT)
        yield self.now, self.wire.syn_frame(CLIENT, cseq, 0, SYN, mss, tsval), b""
        self.now += self.rtt
        cseq = self.next_seq[CLIENT] = (cseq + 1) & _U32
        tsval, _ = self._stamp(SERVER)
        frame = self.wire.syn_frame(SERVER, sseq, cseq, SYN | ACK, mss, tsval)
        yield self.now, frame, b""
        self.now += 40
        self.next_seq[SERVER] = (sseq + 1) & _U32
        yield self.pure_ack(CLIENT)

    def close(self, first: int) -> Iterator[Frame]:
        """FIN from ``first``, FIN from the other side, last ACK."""
        for side in (first, 1 - first):
            self.now += self.rtt // 2 + 50
            seq = self.next_seq[side]
            yield self._segment(side, seq, self.next_seq[1 - side], FIN | ACK)
            self.next_seq[side] = (seq + 1) & _U32
        self.now += self.rtt // 2 + 50
        yield self.pure_ack(first)

    def send(self, side: int, data: bytes, delay_us: int) -> Iterator[Frame]:
        """One application write from ``side``, cut into MSS-sized segments.

        With ``fault_rate`` set, a segment is now and then sent a second time
        after a retransmission timeout, or swapped with the next one; the
        byte stream the receiver reassembles is the same either way.
        """
        self.now += delay_us
        mss = self.mss
        pieces = [data[i : i + mss] for i in range(0, len(data), mss)]
        starts = []
        seq = self.next_seq[side]
        for piece in pieces:
            starts.append(seq)
            seq = (seq + len(piece)) & _U32
        self.next_seq[side] = seq
        rate = self.fault_rate
        unacked = 0
        index = 0
        while index < len(pieces):
            if rate and index + 1 < len(pieces) and self.rng.random() < rate:
                yield from self._reorder(side, pieces, starts, index)
                index += 2
                unacked = 0
                continue
            yield self._data(side, starts[index], pieces[index], index, pieces)
            if rate and self.rng.random() < rate:
                yield from self._retransmit(side, starts[index], pieces[index])
            index += 1
            unacked += 1
            if unacked == 2:
                self.now += 30
                yield self._ack_up_to(1 - side, starts, pieces, index)
                unacked = 0

    def _data(
        self,
        side: int,
        seq: int,
        piece: bytes,
        index: int,
        pieces: list[bytes],
    ) -> Frame:
        self.now += self.pace
        flags = ACK | PSH if index == len(pieces) - 1 else ACK
        ack = self.next_seq[1 - side]
        return self._segment(side, seq, ack, flags, piece, payload_sum(piece))

    def _ack_up_to(
        self, side: int, starts: list[int], pieces: list[bytes], end: int
    ) -> Frame:
        """ACK from ``side`` covering pieces before index ``end``."""
        ack = (starts[end - 1] + len(pieces[end - 1])) & _U32
        return self._segment(side, self.next_seq[side], ack, ACK)

    def _retransmit(self, side: int, seq: int, piece: bytes) -> Iterator[Frame]:
        # RFC 6298 2.4: the timer is at least a second by the RFC, 200 ms on
        # Linux; the receiver answers the copy with a duplicate ACK.
        if self.faults is not None:
            self.faults.retransmitted += 1
        self.now += 200_000 + self.rtt
        ack = self.next_seq[1 - side]
        yield self._segment(side, seq, ack, ACK | PSH, piece, payload_sum(piece))
        self.now += self.rtt // 2 + 30
        end = (seq + len(piece)) & _U32
        yield self._segment(1 - side, self.next_seq[1 - side], end, ACK)

    def _reorder(
        self, side: int, pieces: list[bytes], starts: list[int], index: int
    ) -> Iterator[Frame]:
        # The later segment overtakes; the receiver repeats its ACK for the
        # hole, then acknowledges both once the earlier one arrives.
        if self.faults is not None:
            self.faults.reordered += 1
        yield self._data(side, starts[index + 1], pieces[index + 1], index + 1, pieces)
        self.now += 30
        yield self._segment(1 - side, self.next_seq[1 - side], starts[index], ACK)
        yield self._data(side, starts[index], pieces[index], index, pieces)
        self.now += 30
        yield self._ack_up_to(1 - side, starts, pieces, index + 2)

    def stream(
        self, side: int, pieces: Iterable[tuple[memoryview, int]]
    ) -> Iterator[Frame]:
        """Bulk data from ``side``: pieces with known checksum shares, no faults."""
        seq = self.next_seq[side]
        other = 1 - side
        unacked = 0
        for piece, psum in pieces:
            self.now += self.pace
            ack = self.next_seq[other]
            yield self._segment(side, seq, ack, ACK, piece, psum)
            seq = (seq + len(piece)) & _U32
            self.next_seq[side] = seq
            unacked += 1
            if unacked == 2:
                self.now += 20
                yield self._segment(other, self.next_seq[other], seq, ACK)
                unacked = 0
