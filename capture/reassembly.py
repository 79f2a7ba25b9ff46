"""TCP stream reassembly: segments in, the events of ``capture.stream`` out.

``Reassembler.feed`` takes one decoded segment at a time, in capture order,
and returns what that segment made known: a connection opened, bytes that
are now in order, holes given up on, oddities, a connection closed. It owns
no clock but the capture timestamps it is fed.

Invariants, per direction of a connection:
- stream offsets are absolute (Python ints, so past 2**32 without wrapping);
  a sequence number is mapped to the offset nearest the next expected one
  (RFC 9293 3.4: sequence space is modulo 2**32);
- ``StreamData`` and ``StreamGap`` cover the stream once, in order; a byte
  is never delivered twice and a hole is never filled with invented bytes;
- out-of-order bytes held back are at most ``max_buffered_bytes`` in at
  most ``max_buffered_segments`` pieces; delivered bytes kept to check
  retransmissions against are at most ``overlap_window`` and only until
  the peer acknowledges them.

Overlapping copies of the same bytes: the copy seen first wins (what a
receiver that got the first copy keeps, RFC 9293 3.10.7.4), and copies that
differ are reported as ``tcp_overlap_mismatch``.

Connections tracked at once cost about 1.4 KB each here, with their
``Connection``, before any bytes are buffered; a client's SYN alone, the
first packet of every connection and all of a SYN flood's, about 1 KB, as
its stream state waits for the next packet (``_Flow.syn_seq``). Idle ones
are closed after ``idle_timeout_s``; those that showed nothing yet (a
handshake begun and never completed, or a stray ACK or RST, with nothing
sent: a SYN, ACK or RST flood, a scan) after the much shorter
``attempt_timeout_s``; and past ``max_connections`` open at once
the longest silent are evicted, those not shown to be real first: a flood
of spoofed packets must not take all the memory.

A 4-tuple may be used again (RFC 9293 3.4.1). After a close, or on an
attempt, a new SYN starts a new connection. On an established connection a
SYN or SYN-ACK of another connection is kept aside (``_syn_in_session``,
``_hold_synack``) until the server's first byte in the new sequence space
shows the server dropped the old one: packets anyone can send must not end
a session and hide what follows it.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from dataclasses import dataclass, fields
from typing import Final

from capture.decode import ACK, FIN, RST, SYN, FlowKey, Segment
from capture.stream import (
    CloseReason,
    Connection,
    Direction,
    StreamAnomaly,
    StreamClosed,
    StreamData,
    StreamEvent,
    StreamGap,
    StreamOpened,
)

_SEQ_MOD: Final = 1 << 32
# How far a client's acknowledgment may move forward, with no SYN-ACK
# captured, to show a server that sends (Connection.client_ack_moved).
_ACK_MOVE_MAX: Final = 1 << 20
# What a connection that has shown nothing of a conversation yet (an
# attempt: ``_unproven``) may keep of its bytes, held back out of order or
# delivered for checking retransmissions: a SYN carries one segment, and a
# flood of attempts that send data behind their SYNs must not hold the
# megabyte and the 64 KiB that a real connection may (found in review:
# 300 attempts with a hole took 371 MB).
_UNPROVEN_BYTES: Final = 4096
_UNPROVEN_PIECES: Final = 16
_SEQ_HALF: Final = 1 << 31
_NS_PER_S: Final = 1_000_000_000
_DIRECTIONS: Final = (Direction.CLIENT, Direction.SERVER)
_NEVER_SWEPT: Final = -(1 << 63)
_NEVER_DUE: Final = 1 << 63

# A held-back piece of stream: (start, end, bytes), or bytes None for a
# range the capture is known to lack (a segment the snap length cut short).
_Piece = tuple[int, int, bytes | None]


@dataclass(slots=True)
class ReassemblyStats:
    connections: int = 0
    retransmissions: int = 0  # segments whose bytes had all been delivered
    packets_after_close: int = 0  # late packets of a closed connection
    bytes_after_close: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    overlap_mismatches: int = 0
    buffer_limit_hits: int = 0
    evicted: int = 0  # connections closed early: max_connections were open
    # Captures that began before the ones read before them had reached:
    # another recording (see Reassembler.start_capture).
    rewinds: int = 0
    # Connections whose handshake put the client on an SMTP port and the
    # server on another: followed, no SMTP session (see Reassembler._start).
    handshakes_from_smtp_ports: int = 0
    # Packets stamped a sweep interval or more ahead of the capture's clock
    # whose next packet was not: read as outliers, at their connection's
    # time (see Reassembler._hold_ahead).
    clock_outliers: int = 0
    # Segments whose payload the capture's snap length cut short, and the
    # bytes it left out: their stream shows a gap there (see _missing).
    snap_cut: int = 0
    snap_cut_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_NOTHING_COVERED = (0, 0)
# How many held pieces a segment must span to be kept as _Half.same.
_SAME_PIECES = 4


# Closes the capture decides for a connection whose end it did not see.
_ENDS_UNSEEN = frozenset({CloseReason.IDLE, CloseReason.END_OF_CAPTURE})


class _Half:
    """One direction of a connection: where its byte stream stands."""

    __slots__ = (
        "ack_seen",
        "ack_seen_at",
        "acked",
        "base",
        "covered",
        "fin_lost",
        "fin_off",
        "isn",
        "next_off",
        "pending",
        "pending_bytes",
        "same",
        "tail",
    )

    def __init__(self) -> None:
        self.base: int | None = None  # sequence number of stream offset 0
        self.isn: int | None = None  # the SYN's sequence number, if seen
        self.next_off = 0  # offset of the next byte to deliver
        # Sorted, non-overlapping, >= next_off. An empty tuple until a piece
        # is held: most connections never hold one, and a flood of them
        # would pay for an empty list each (see _pieces).
        self.pending: list[_Piece] | tuple[()] = ()
        self.pending_bytes = 0
        # A range of offsets the pieces hold or mark missing throughout, as
        # _missing last found: pieces are only added, or taken from the
        # front, so it stays so. A segment cut short by the snap length
        # within it has nothing to mark, and need not walk the pieces again
        # (found in review: 4,000 one-byte pieces behind a hole, then
        # packets each claiming 4,000 bytes, read at 0.12 MB/s).
        self.covered = _NOTHING_COVERED
        # Bytes a segment over several held pieces was found equal to, at
        # their offset: what the pieces hold there, until the front ones
        # are taken. A full copy of that segment sent again is compared
        # with it at once instead of piece by piece (found in review: 4,000
        # one-byte pieces behind a hole, then 4,000-byte segments over
        # them, read at 1.8 MB/s).
        self.same: tuple[int, bytes] | None = None
        self.fin_off: int | None = None  # offset the FIN occupies
        # When fin_off was inferred from the peer's acknowledgment of a FIN
        # the capture lost (Reassembler._fin_lost); None when it was seen.
        self.fin_lost: int | None = None
        self.acked = 0  # highest offset the peer has acknowledged
        # The last acknowledgment number the fast lane of Reassembler.feed
        # applied here, and next_off then: the same number at the same
        # next_off maps to the same offset, already taken into ``acked``.
        # A sender's data segments mostly repeat their acknowledgment.
        self.ack_seen = -1
        self.ack_seen_at = 0
        # Delivered bytes not yet acknowledged, ending at next_off, kept to
        # compare retransmissions with: empty bytes until the first are
        # delivered (see _keep), then a bytearray that grows in place.
        self.tail: bytearray | bytes = b""

    def offset(self, seq: int) -> int:
        """The stream offset of ``seq``: the one nearest ``next_off``."""
        assert self.base is not None
        expected = self.base + self.next_off
        delta = ((seq - expected + _SEQ_HALF) % _SEQ_MOD) - _SEQ_HALF
        return self.next_off + delta


# The flags that make a segment part of a handshake or an end: a SYN with
# none of the others set is a client's first packet.
_HANDSHAKE_FLAGS: Final = SYN | ACK | FIN | RST

# Flags that take a segment off the fast lane of Reassembler.feed, as one
# constant: the expression would be computed per segment.
_SYN_FIN_RST: Final = SYN | FIN | RST
# A plain acknowledgment: ACK without SYN or RST (see Connection.client_acked
# and server_acked).
_ACK_ONLY: Final = ACK | SYN | RST

# How far from the next expected byte a RST may be and still be believed.
# Endpoints take only an exact match (RFC 5961 3.2); a capture that lost
# some segments sees the stream a little behind, hence some slack.
_RST_WINDOW = 1 << 16

# How long a connection whose FINs are both in waits for the last ACK.
_FIN_LINGER_NS = 5 * 1_000_000_000

# How far a capture may begin before the last packet already read and
# still go on from it: 10 ms. Timestamps taken on several CPUs are not
# quite in order, so the first packet of a file rotated by tcpdump can be
# a little older than the last of the file before (found in review).
# Another recording overlaps by more (a second tap, a copy).
_REWIND_SLACK_NS = 10_000_000

# Evicting frees this share of max_connections at once, so that a flood
# past the cap pays for the sort in evict once per many connections.
_EVICT_SHARE = 10


def _pieces(half: _Half) -> list[_Piece]:
    """``half.pending`` as a list that pieces can be added to."""
    pending = half.pending
    if isinstance(pending, tuple):
        pending = half.pending = []
    return pending


def _trimmed(half: _Half, drop: int) -> None:
    """Drop the first ``drop`` bytes of ``half.tail`` (acknowledged now); all
    of them gives back the buffer, as most acknowledgments take the whole."""
    tail = half.tail
    if drop >= len(tail):
        half.tail = b""
    elif isinstance(tail, bytearray):
        del tail[:drop]
    else:
        half.tail = tail[drop:]


def _kept_tail(half: _Half, data: bytes) -> bytearray:
    """``half.tail`` with ``data`` added, made a bytearray on its first bytes
    (it is empty bytes until then, see _Half)."""
    tail = half.tail
    if isinstance(tail, bytearray):
        tail += data
    else:
        tail = half.tail = bytearray(tail + data)
    return tail


def _same_syn(half: _Half, seq: int, carried: int = 0) -> bool:
    """Whether a SYN is this connection's own, retransmitted.

    When the capture missed the first SYN, its ISN is known only from the
    SYN-ACK's acknowledgment (ISN + 1), which set ``base``; up to past the
    ``carried`` bytes of a SYN with data (TCP Fast Open), of which the
    SYN-ACK acknowledges what the server took (RFC 7413 3).
    """
    if half.isn is not None:
        return half.isn == seq
    if half.base is None:
        return False
    return (half.base - seq - 1) % _SEQ_MOD <= carried


def _answered(
    pending: dict[int, tuple[int, Segment]] | None, ack: int
) -> tuple[int, Segment] | None:
    """The pending client SYN (time and segment) that a SYN-ACK
    acknowledging ``ack`` answers, if any: it acknowledges the SYN, and
    perhaps the bytes the SYN carried (RFC 7413 3)."""
    for entry in (pending or {}).values():
        if _acknowledges_syn(ack, entry[1]):
            return entry
    return None


def _acknowledges_syn(ack: int, syn: Segment) -> bool:
    """Whether ``ack`` acknowledges the SYN ``syn``, and perhaps the bytes it
    carried (RFC 7413 3)."""
    carried = len(syn[4]) + syn[5]
    return (ack - syn[1] - 1) % _SEQ_MOD <= carried


def _own_synack(flow: _Flow, seq: int, ack: int) -> bool:
    """Whether a SYN-ACK on an established connection is its own, resent
    (its ACK, or the client's first bytes, lost on the way to the server):
    the server's ISN again, or, where its SYN-ACK was not captured, an
    acknowledgment of the client's SYN and what that could carry; where the
    SYN was not captured either, of a point at or just before the first
    byte of the client's that was (found in review: a capture begun after
    the handshake split a connection whose SYN-ACK the server resent)."""
    client, server = flow.halves
    if server.isn is not None:
        return seq == server.isn
    if client.isn is not None:
        return (ack - client.isn - 1) % _SEQ_MOD <= _SYN_DATA_MAX
    if client.base is not None:
        return -_SYN_DATA_MAX <= client.offset(ack) <= 0
    return False


# A held SYN-ACK: its time and segment, the client SYN it answers (time and
# segment) where one was seen, and the client's segments in its sequence
# space since (its ACK, a TLS ClientHello on port 465), a few at most.
_Held = tuple[int, Segment, "tuple[int, Segment] | None", list[tuple[int, Segment]]]
# Client segments kept per held SYN-ACK: found in review, a flood of empty
# ACKs in a held space, each kept, took minutes.
_HELD_CLIENT_SEGMENTS = 64
# What the client may send in a held SYN-ACK's sequence space before
# the server shows one real (its ACK, a ClientHello of a few segments, an
# early talker's commands: found in review, 16 KiB cut a 20 KB ClientHello).
# Within what an established connection may hold out of order (1 MB).
_HELD_CLIENT_BYTES = 64 * 1024


def _within(seq: int, point: int) -> bool:
    """Whether sequence number ``seq`` lies within a RST's window
    (_RST_WINDOW) of ``point``, either side of it (modulo 2**32)."""
    return abs((seq - point + _SEQ_HALF) % _SEQ_MOD - _SEQ_HALF) <= _RST_WINDOW


def _near(half: _Half, seq: int) -> bool:
    """Whether ``seq`` lies near where ``half``'s stream goes on."""
    return half.base is not None and _within(seq, half.base + half.next_off)


def _held_for(flow: _Flow, direction: Direction, seq: int, ack: int) -> _Held | None:
    """The held SYN-ACK in whose sequence space a segment sent from
    ``direction`` lies (``_in_space``), if its own stream does not go on
    from the old connection's (found in review: a client sent its AUTH
    attempts with the acknowledgment of a SYN-ACK it had forged, and they
    were kept from the old session; the server's replies grew into a held
    SYN-ACK's space and ended the old session)."""
    assert flow.synacks is not None
    if _near(flow.halves[direction], seq):
        return None
    return _in_space(flow.synacks, direction, seq, ack)


def _held_after_close(flow: _Flow, seg: Segment) -> _Held | None:
    """The held SYN-ACK whose server a segment after the close comes from,
    in its sequence space, and not going on from the old server stream."""
    assert flow.synacks is not None
    key, seq, ack = seg[0], seg[1], seg[2]
    if flow.server_next is not None and _within(seq, flow.server_next):
        return None  # found in review: the old server's FIN sent again
    return _in_space(flow.synacks, Direction.SERVER, seq, ack, sender=key)


def _in_space(
    synacks: dict[int, _Held],
    direction: Direction,
    seq: int,
    ack: int,
    sender: FlowKey | None = None,
) -> _Held | None:
    """The held SYN-ACK in whose sequence space a segment sent from
    ``direction`` (and from ``sender``, where given) lies: its numbers
    within what a SYN and a first flight could span from the SYN-ACK's."""
    for following, held in synacks.items():
        synack = held[1]
        if sender is not None and sender != synack[0]:
            continue
        if direction == Direction.SERVER:
            mine, theirs = following, synack[2]
        else:
            mine, theirs = synack[2], following
        if (seq - mine) % _SEQ_MOD <= _SYN_DATA_MAX and (
            ack - theirs
        ) % _SEQ_MOD <= _SYN_DATA_MAX:
            return held
    return None


def _held_bytes(kept: list[tuple[int, Segment]]) -> int:
    """The client bytes kept with one held SYN-ACK."""
    return sum(len(seg[4]) for _, seg in kept)


def _first_held(held: dict[int, _Held]) -> int:
    """When the earliest of the held SYN-ACKs came."""
    return min(entry[0] for entry in held.values())


def _let_go(flow: _Flow, before: int) -> None:
    """Forget the held SYN-ACKs that came before ``before``."""
    assert flow.synacks is not None
    kept = {key: held for key, held in flow.synacks.items() if held[0] >= before}
    flow.synacks = kept or None


def _kept(seg: Segment) -> Segment:
    """``seg`` as kept while it waits: what it carries up to an attempt's
    limit, the rest as bytes missing (eight SYNs or SYN-ACKs of 64 KB on
    each of many connections would otherwise hold half a megabyte each)."""
    key, seq, ack, flags, payload, missing = seg
    kept = payload[:_UNPROVEN_BYTES]
    return (key, seq, ack, flags, kept, missing + len(payload) - len(kept))


# What a SYN may carry (TCP Fast Open): one segment, well within this.
_SYN_DATA_MAX = 1 << 16
# Client SYNs with other ISNs kept per open connection (see _syn_in_session).
_PENDING_SYNS = 8


def _synack_from(server: tuple[str, int] | None, seg: Segment) -> bool:
    """Whether ``seg`` is a SYN-ACK sent from ``server`` (address, port)."""
    if server is None or seg[3] & (SYN | ACK | RST) != SYN | ACK:
        return False
    src_ip, _, src_port, _ = seg[0]
    return (src_ip, src_port) == server


def _acknowledges_synack(server: _Half, ack: int) -> bool:
    """Whether the client's acknowledgment number ``ack`` acknowledges the
    server's SYN-ACK.

    RFC 9293 3.10.7.3 asks SND.UNA < SEG.ACK =< SND.NXT: past the ISN, and
    not past what the server sent. What it sent is known here only as far
    as the capture shows, so a little more is allowed, as for a RST (a
    greeting the capture lost, acknowledged with the client's first
    command); a guess at the ISN still has one chance in 65,536. A SYN-ACK
    captured has given the server's stream its start (``base``).
    """
    offset = server.offset(ack)
    sent = server.next_off
    if server.pending:
        sent = max(sent, server.pending[-1][1])
    if server.fin_off is not None:
        sent = max(sent, server.fin_off + 1)
    return 0 <= offset <= sent + _RST_WINDOW


class _Flow:
    __slots__ = (
        "closed",
        "conn",
        "early_ack",
        "fin_done",
        "first_ack",
        "forget_at",
        "halves",
        "keys",
        "reuse",
        "server",
        "server_next",
        "silent",
        "steady",
        "syn_seq",
        "synacks",
    )

    def __init__(
        self,
        conn: Connection,
        keys: tuple[FlowKey, FlowKey],
        syn_seq: int | None = None,
    ) -> None:
        self.conn = conn
        self.keys = keys
        # A connection that is a client's SYN alone so far (what a SYN flood
        # opens, by the ten thousand) holds no stream state: its halves are
        # _SYN_ONLY, and the SYN's sequence number is all they would say
        # (the client's ISN). Its next packet makes them (Reassembler._grow).
        self.syn_seq = syn_seq
        self.halves = (_Half(), _Half()) if syn_seq is None else _SYN_ONLY
        self.closed = False
        # Once closed, when its 4-tuple is forgotten: until then a packet of
        # it is a late one of this connection, not the start of another.
        self.forget_at = 0
        # Both FINs are in, but the ACK of the last one may still come: the
        # connection stays open for it so its packet counts and times it.
        self.fin_done = False
        # See settle(): False until the first segment has been placed.
        self.steady = False
        # Closed while unproven (see _unproven): a byte of its 4-tuple
        # after that is no late packet of it, as it sent none.
        self.silent = False
        # The acknowledgment number of the client's last plain ACK before
        # anything of the server was captured: checked against the SYN-ACK
        # if one comes (see Reassembler._handshake).
        self.early_ack: int | None = None
        # The client's first acknowledgment number, while no SYN-ACK was
        # captured: to see it move (Connection.client_ack_moved).
        self.first_ack: int | None = None
        # Client SYNs with another ISN while this connection was open, by
        # ISN, with their times: a new connection on the same ports only
        # once the server answers one with a SYN-ACK (see
        # Reassembler._syn_in_session). Kept after the close, for a SYN-ACK
        # that comes after it.
        self.reuse: dict[int, tuple[int, Segment]] | None = None
        # The server's address and port, kept at the close (the connection
        # itself is let go): a SYN-ACK from there after it starts another.
        self.server: tuple[str, int] | None = None
        # The old server stream's next sequence number at the close, kept
        # only while SYN-ACKs are held (see _held_after_close).
        self.server_next: int | None = None
        # Server SYN-ACKs of other connections on these ports, by the
        # sequence number of the server's first byte after each (_Held): a
        # new connection once that byte comes (see Reassembler._hold_synack).
        # Kept after the close, as reuse is.
        self.synacks: dict[int, _Held] | None = None

    def settle(self) -> None:
        """Note whether plain segments may take the fast lane of ``feed``.

        They may while the connection is open, past its handshake (or
        caught after it) and neither side has sent a FIN: then placing
        bytes, counting and acknowledging is all ``_segment`` would do.
        Only ``_segment`` and ``_close`` change any of this, and both
        settle the flow again.
        """
        conn = self.conn
        client, server = self.halves
        self.steady = (
            not self.closed
            and not self.synacks  # the client's segments are looked at
            and (conn.ack_ts is not None or conn.synack_ts is None)
            and client.fin_off is None
            and server.fin_off is None
            and not _unproven(self)  # its timeout is not the fast lane's
            # Without the SYN-ACK, the client's acknowledgments are watched
            # until they move (Connection.client_ack_moved), and with no
            # SYN either, the server's ACKs and the client's segments until
            # they show the handshake (server_acked, client_continued).
            and (
                conn.synack_ts is not None
                or conn.client_ack_moved
                or (conn.syn_ts is None and conn.handshake_completed)
            )
        )


def _unproven(flow: _Flow) -> bool:
    """Whether a connection has shown nothing of a conversation yet: no byte
    either way, and no completed handshake.

    Either an attempt, whose handshake began (a SYN or SYN-ACK was
    captured) and was never completed, neither seen nor shown by a plain
    ACK from the client: what a SYN flood, a scan or an unreachable server
    leaves. Bytes in its SYNs (TCP Fast Open) do not change that: the
    server has not spoken, and a flood may carry them. Or traceless
    (``Connection.traceless``): its start was not captured and it has said
    nothing, a stray ACK or RST, or an ACK flood. The session table says
    the same (``handshake_completed``), and syn_flood counts from it.
    """
    conn = flow.conn
    if conn.syn_ts is None and conn.synack_ts is None and conn.wire_bytes[0]:
        # Caught after its start, the client speaking: its bytes wait for
        # proof (see Connection.handshake_completed), but the connection is
        # no attempt (found in review: a client-only capture through a 90 s
        # tarpit split in two at the attempt timeout).
        return False
    return not conn.handshake_completed


# tuple.__new__ in one global lookup: it builds an event NamedTuple without
# the Python-level __new__ the NamedTuple adds.
_new_tuple: Final = tuple.__new__

# What Reassembler._flows holds per direction of a connection: see there.
_Lane = tuple[_Flow, Direction, int, _Half, _Half]

# What every closed flow points to instead of its own halves and connection:
# a closed flow's packets are only counted (see Reassembler.feed), so only
# its 4-tuples and closing time are kept, and these are never written to.
_RELEASED = (_Half(), _Half())
# What a flow that is a SYN alone points to instead of its own halves (see
# _Flow.syn_seq): nothing is ever written to these either.
_SYN_ONLY = (_Half(), _Half())
_RELEASED_CONN = Connection(-1, "", 0, "", 0, 0)


class Reassembler:
    """Turns the TCP segments of many connections into ``StreamEvent``s.

    ``smtp_ports`` decides which side is the server when the handshake was
    not captured, and marks a connection whose handshake puts the client on
    one of them and the server on another (``Connection.from_smtp_port``,
    see ``_start``). Connections idle
    for longer than ``idle_timeout_s`` of capture time are closed with
    ``CloseReason.IDLE``; a closed connection's 4-tuple is remembered as
    long again, so that its late ACKs and retransmissions are recognised
    (and counted) rather than taken for a new connection. Connections that
    showed nothing yet (attempts and traceless ones, see ``_unproven``) are
    closed as IDLE after ``attempt_timeout_s``; attempts are remembered as
    long, traceless ones not at all, and a byte on the 4-tuple of either
    starts a connection. With more than ``max_connections`` open, some are
    closed as ``CloseReason.EVICTED`` and forgotten at once, the unproven
    first (see ``_evict``), until a tenth of the room is free again.

    Every ``StreamClosed`` carries the connection's last packet time, for
    every reason (``finish`` given a time excepted): an idle close is
    decided a timeout later, and a reuse at the new SYN, but neither saw
    anything of the connection after its last packet.

    Capture time is not taken on one packet's word: one stamped in the past
    does not take the clock back unless the traffic behind goes on (see
    ``_tick``), and one stamped a sweep interval or more ahead is held back
    until the packet after it shows whether time jumped (``_hold_ahead``).
    ``feed`` then returns nothing for it, and its events come with the next
    call that returns any (``feed``, ``finish``, ``expire``, the start of a
    capture).
    """

    def __init__(
        self,
        smtp_ports: frozenset[int],
        idle_timeout_s: float = 600.0,
        max_buffered_bytes: int = 1 << 20,
        *,
        max_buffered_segments: int = 4096,
        overlap_window: int = 1 << 16,
        attempt_timeout_s: float = 60.0,
        max_connections: int | None = None,
    ) -> None:
        self.stats = ReassemblyStats()
        self._ports = smtp_ports
        self._idle_ns = int(idle_timeout_s * _NS_PER_S)
        # An attempt is over well within a minute: stacks retransmit a SYN
        # or SYN-ACK after 1, 2, 4... seconds, Linux's longest default gap
        # being 32 s. Held as long as the idle timeout, a flood of them
        # from spoofed addresses would hold memory for ten minutes of it.
        self._attempt_ns = min(int(attempt_timeout_s * _NS_PER_S), self._idle_ns)
        self._max_open = max_connections
        self._max_bytes = max_buffered_bytes
        self._max_pieces = max_buffered_segments
        self._window = overlap_window
        # Checking for idle connections scans them all, so it is done only
        # when the capture clock has moved on by a fraction of the timeout.
        self._sweep_every = max(1, min(self._attempt_ns // 8, 30 * _NS_PER_S))
        self._next_sweep = _NEVER_SWEPT  # the first packet sweeps (nothing)
        # A packet past the sweep check comes before _next_sweep: a flow last
        # seen since this cannot be idle then. See _sweep.
        self._fresh_since = _NEVER_SWEPT
        self._swept_to = _NEVER_SWEPT  # see clock
        # An idle timeout before the last sweep: a packet before it takes the
        # clock back (_clock_back).
        self._behind = _NEVER_SWEPT
        # The first packet that came so far behind since the last sweep.
        self._behind_since = _NEVER_SWEPT
        # A packet a sweep interval or more past the next sweep, held back
        # until the packet after it shows whether time jumped or only its
        # stamp did (see _hold_ahead): its time and segment. While one is held,
        # _next_sweep makes the next packet tick, and _due keeps the sweep
        # due before it came.
        self._ahead: int | None = None
        self._ahead_seg: Segment | None = None
        self._due = _NEVER_SWEPT
        # A -j worker's first segment of a capture, stamped ahead, with the
        # time of the packet after it, which shows it an outlier: judged so
        # as soon as it is held back (see new_capture).
        self._judged: tuple[int, int] | None = None
        self._capture_start = False  # see start_capture
        self._next_id = 0
        # Both orientations of each 4-tuple, to the flow and the direction
        # a segment sent from its source travels in, as a Direction (for
        # the events) and as a plain int (to index with: an IntEnum index
        # takes the slow path of every list and tuple read), then that
        # direction's half and its peer's, for the fast lane of feed.
        self._flows: dict[FlowKey, _Lane] = {}
        self._open: dict[int, _Flow] = {}  # by conn_id, so in opening order
        # Closed flows whose 4-tuples are still remembered, in closing order:
        # attempts apart, as they are forgotten sooner (see _sweep).
        self._closed: deque[_Flow] = deque()
        self._closed_attempts: deque[_Flow] = deque()
        # The last packet of the connection closed latest: with the open
        # ones', how far the captures read so far reached (``reached``).
        self._last_closed = _NEVER_SWEPT

    # -- public ---------------------------------------------------------

    def feed(self, ts: int, seg: Segment) -> list[StreamEvent]:
        """Take one segment captured at ``ts``; return the events it causes.

        ``capture.decode.compact`` turns a TcpSegment into a Segment.
        """
        events: list[StreamEvent] = []
        if (ts >= self._next_sweep or ts < self._behind) and self._tick(
            ts, seg, events
        ):
            return events  # held back, the time it is stamped with in doubt

        key, seq, ack, flags, payload, missing = seg
        found = self._flows.get(key)
        if found is not None and not flags & _SYN_FIN_RST and not missing:
            flow, direction, side, half, peer = found
            conn = flow.conn
            # The idle test below, first as a comparison only (no subtraction
            # of nanosecond counts): see _fresh_since.
            if flow.steady and (
                conn.last_ts >= self._fresh_since or ts - conn.last_ts <= self._idle_ns
            ):
                # An established connection, no FIN about and nothing cut by
                # the snap length: what most segments are, and all that
                # _segment would do for them.
                conn.last_ts = ts
                conn.packets[side] += 1
                sent = peer.next_off
                if (
                    (ack != peer.ack_seen or sent != peer.ack_seen_at)
                    and flags & ACK
                    and peer.base is not None
                ):
                    # _Half.offset and _acknowledged, inline.
                    peer.ack_seen = ack
                    peer.ack_seen_at = sent
                    ack_off = (
                        sent
                        + ((ack - peer.base - sent + _SEQ_HALF) % _SEQ_MOD)
                        - _SEQ_HALF
                    )
                    if ack_off > peer.acked:
                        peer.acked = ack_off
                        tail = peer.tail
                        drop = len(tail) - (sent - ack_off if sent > ack_off else 0)
                        if drop > 0:
                            # _trimmed, inline.
                            if drop >= len(tail):
                                peer.tail = b""
                            elif isinstance(tail, bytearray):
                                del tail[:drop]
                            else:
                                peer.tail = tail[drop:]
                        if ack_off > sent and peer.pending:
                            self._gaps_proven(flow, 1 - side, ts, events)
                if payload:
                    size = len(payload)
                    conn.wire_bytes[side] += size
                    if (
                        not half.pending
                        and half.base is not None
                        and (half.base + half.next_off) % _SEQ_MOD == seq
                    ):
                        # _deliver, inline.
                        events.append(
                            _new_tuple(StreamData, (conn, direction, ts, payload))
                        )
                        half.next_off += size
                        # _kept_tail, inline.
                        tail = half.tail
                        if isinstance(tail, bytearray):
                            tail += payload
                        else:
                            tail = half.tail = bytearray(tail + payload)
                        if len(tail) > self._window:
                            del tail[: len(tail) - self._window]
                    else:
                        self._data(flow, direction, ts, seg, events)
                return events

        if missing:
            # Counted here, past the fast path, which takes no such segment.
            self.stats.snap_cut += 1
            self.stats.snap_cut_bytes += missing
        new_syn = flags & (SYN | ACK) == SYN
        if found is None:
            # A SYN alone, nothing with it, on a 4-tuple not in use: the first
            # packet of most connections, and all of a SYN flood's.
            lone = flags & _HANDSHAKE_FLAGS == SYN and not payload and not missing
            flow, direction = self._start(key, ts, flags, events, seq if lone else None)
        else:
            flow, direction = found[0], found[1]
            if flow.halves is _SYN_ONLY:
                self._grow(flow)
            if flow.synacks and ts - _first_held(flow.synacks) > self._idle_ns:
                # Those the server sent nothing after for as long as a
                # connection may stay silent go, each on its own (found in
                # review: letting all go with the first also let go a real
                # one a second old; and a server may greet 90 s late); with
                # none left the connection goes back onto the fast lane.
                _let_go(flow, ts - self._idle_ns)
            if flow.closed:
                # Judged by this packet's time alone: _sweep forgets in
                # closing order, which is not that of the close times, and
                # stops early.
                forgotten = ts > flow.forget_at
                # A byte on the 4-tuple of one that sent none starts a
                # connection, caught after its start (a slow greeting seen
                # from one side, say).
                spoke = flow.silent and (payload or missing)
                if not flow.silent and _synack_from(flow.server, seg):
                    # The server answers a new SYN after a conversation (a
                    # late SYN-ACK to an attempt is still one of its own): a
                    # connection of its own, from that SYN if it was
                    # captured before the close (found in review: a client
                    # reset the old connection between its new SYN and the
                    # SYN-ACK, and the whole new session was dropped).
                    held_for = flow.synacks and flow.synacks.get((seq + 1) % _SEQ_MOD)
                    if held_for:
                        # Sent again: what was held for it goes with it
                        # (found in review: a ClientHello held was lost).
                        flow, direction = self._reused(
                            flow, ts, seg, *held_for[2:], events
                        )
                    else:
                        syn = _answered(flow.reuse, ack)
                        flow, direction = self._reused(flow, ts, seg, syn, [], events)
                elif (
                    flow.synacks
                    and payload
                    and not flags & (SYN | RST)
                    and (held := _held_after_close(flow, seg)) is not None
                ):
                    # The first bytes after a SYN-ACK held while the old
                    # connection was open (see _hold_synack): bytes only, a
                    # greeting (a FIN with it: a 554 that ends it, found in
                    # review), away from where the old server stream stood.
                    flow, direction = self._reused(flow, *held, events)
                elif not new_syn and not forgotten and not spoke:
                    self.stats.packets_after_close += 1
                    self.stats.bytes_after_close += len(payload)
                    return events
                else:
                    flow, direction = self._start(key, ts, flags, events)
            elif ts - flow.conn.last_ts > (timeout := self._timeout(flow)):
                last = flow.conn.last_ts
                decided = last + timeout
                self._close(flow, last, CloseReason.IDLE, events, decided=decided)
                held = (
                    _held_after_close(flow, seg)
                    if flow.synacks and payload and not flags & (SYN | RST)
                    else None
                )
                if held is not None:
                    # The greeting of a held connection, come after the old
                    # one's idle timeout (found in review: started as a
                    # connection caught after its start, its ClientHello lost).
                    flow, direction = self._reused(flow, *held, events)
                else:
                    flow, direction = self._start(key, ts, flags, events)
            elif new_syn and (
                not _same_syn(flow.halves[direction], seq, len(payload))
                # A SYN from the side a connection opened from an SMTP port
                # took for its server: a connection to that port, whatever
                # the SYN-ACK before it said (found in review: a SYN-ACK
                # sent ahead with the SYN's own ISN hid a whole session).
                or (flow.conn.from_smtp_port and direction == Direction.SERVER)
            ):
                if self._syn_in_session(flow, direction, ts, seg, events):
                    return events
                # A SYN that is not a retransmission of this one's: the
                # 4-tuple is being used again (RFC 9293 3.4.1 lets an old
                # connection's pair be reused). The SYN is the new
                # connection's first packet, not the old one's last.
                self._close(
                    flow, flow.conn.last_ts, CloseReason.REUSED, events, decided=ts
                )
                flow, direction = self._start(key, ts, flags, events)
            elif (
                direction == Direction.SERVER
                and flags & (SYN | ACK | RST) == SYN | ACK
                and flow.conn.handshake_completed
                and (
                    _answered(flow.reuse, ack) is not None
                    or not _own_synack(flow, seq, ack)
                )
            ):
                # A SYN-ACK of another connection on these ports: the server
                # dropped the old one (the capture missed its close, or it
                # came in IP fragments, which are not read), or a forgery.
                self._hold_synack(flow, ts, seg, events)
                return events
            elif (
                flow.synacks
                and not flags & SYN
                and (held := _held_for(flow, direction, seq, ack)) is not None
            ):
                if direction == Direction.SERVER:
                    # The server in a held SYN-ACK's sequence space, its
                    # greeting or what follows it: the new connection is real.
                    flow, direction = self._reused(flow, *held, events)
                else:
                    # The client there (its ACK of it, a ClientHello on port
                    # 465): kept for the new connection, if the server shows
                    # it; the old one goes on without it.
                    kept = held[3]
                    if (
                        len(kept) < _HELD_CLIENT_SEGMENTS
                        and (payload or not kept)  # its ACK once, then bytes
                        and _held_bytes(kept) + len(payload) <= _HELD_CLIENT_BYTES
                    ):
                        kept.append((ts, _kept(seg)))
                    return events
        if flow.halves is _SYN_ONLY:
            # What _segment does with the SYN of a new connection, but for
            # the stream state (the client's ISN), kept in syn_seq. Nothing
            # unsettles it: an attempt never takes the fast lane.
            conn = flow.conn
            conn.last_ts = conn.syn_ts = ts
            conn.packets[0] += 1  # Direction.CLIENT, as a plain int
        else:
            self._segment(flow, direction, ts, seg, events)
            flow.settle()
        if self._max_open is not None and len(self._open) > self._max_open:
            self._evict(self._max_open, ts, events)
        return events

    def start_capture(self) -> None:
        """The next segment comes from another capture file.

        A file that goes on where the last ended (rotated by size or time)
        continues its connections. One whose clock starts before the files
        read so far reached (``reached``), by more than a little
        (``_REWIND_SLACK_NS``), is another recording, and its
        packets must not join their connections: the open ones are closed
        first, and the closed ones forgotten, so that a packet of the same
        4-tuple is not taken for a late one of theirs and dropped. The check
        is made at the next segment fed, unless the caller makes it first
        (``new_capture``).
        """
        self._capture_start = True
        self._judged = None
        self._next_sweep = _NEVER_SWEPT  # the check runs on the next packet

    @property
    def latest_open(self) -> int | None:
        """When the open connection seen last was seen; None if none is open."""
        return max((f.conn.last_ts for f in self._open.values()), default=None)

    @property
    def earliest_open(self) -> int | None:
        """When the oldest open connection was first seen (a session's
        start); None if none is open."""
        return min((f.conn.first_ts for f in self._open.values()), default=None)

    @property
    def reached(self) -> int | None:
        """The last packet of any connection read so far, open or closed;
        None before any."""
        latest = self.latest_open
        if self._last_closed == _NEVER_SWEPT:
            return latest
        return self._last_closed if latest is None else max(latest, self._last_closed)

    def new_capture(
        self,
        first: int,
        latest: int | None,
        *,
        after: int | None = None,
        holds_first: bool = False,
    ) -> list[StreamEvent]:
        """Make ``start_capture``'s check for a capture whose first segment
        is at ``first``, against ``latest``: the ``reached`` of a reader of
        all connections.

        A reader given only some of them (a -j worker) learns ``first`` and
        ``latest`` from the others, so that it judges as a reader of all
        would; ``feed`` then makes no check of its own.

        A packet held back as the last one read (see ``_hold_ahead``) is judged by
        ``first``, the packet after it (``next_segment_at``), before
        ``latest`` is. A first segment a sweep interval or more past the next
        sweep is held back as any other: the clock does not count from it
        before the packet after it shows that time did jump.

        A reader of some learns that packet after it too, ``after`` (the
        capture's second segment; None: none, or not looked for), and
        whether the first segment is its own (``holds_first``): it judges
        the first segment by ``after`` as a reader of all does, not by the
        next packet of its own share, which may come long after (see
        ``capture.source._capture_boundary``). A pause is swept at here, in
        every reader; an outlier closes nothing, and its reader feeds it as
        one when it comes (``_tick``).
        """
        events: list[StreamEvent] = []
        self._capture_start = False
        self._judged = None
        if self._ahead is not None:
            self._release_ahead(first, events)
        every = self._sweep_every
        if latest is not None and first < latest - _REWIND_SLACK_NS:
            events += self.finish()
            self.stats.rewinds += 1
        elif self._past_the_sweeps(first) and (after is None or after < first - every):
            # Found in review: one segment stamped an hour ahead, the first
            # of a rotated file, swept there, and every connection of the
            # files before it closed as idle. The sweeps go on from the
            # clock (all readers', for a -j worker: see clock), and the
            # segment is held back when it is fed: judged by the packet
            # after it, or, known to be an outlier, fed as one at once.
            self._next_sweep = self._swept_to + every
            self._fresh_since = self._next_sweep - self._idle_ns
            if after is not None and holds_first:
                self._judged = (first, after)
            return events
        # The segment at ``first`` sweeps at its point of the grid, in a
        # reader of all connections: readers of some count their clock from
        # there too, so the latest of theirs is that one's (see clock). The
        # sweep is made here, not left to the next packet fed: a reader of
        # some may hold not that segment but one stamped far past it, which
        # must then be held back as in a reader of all (found in review: an
        # ACK stamped 20 minutes ahead, the first packet of its -j worker in
        # a rotated file, swept there and closed its connection as idle,
        # where one process took it for an outlier).
        self._swept_to = first - first % every
        self._sweep(self._swept_to, events)
        return events

    def holds_back(self, first: int, latest: int | None) -> bool:
        """Whether ``new_capture(first, latest)`` would hold the capture's
        first segment back as stamped ahead (a packet held back as the last
        one read being judged by ``first`` already: ``next_segment_at``)."""
        return (
            latest is None or first >= latest - _REWIND_SLACK_NS
        ) and self._past_the_sweeps(first)

    def _past_the_sweeps(self, first: int) -> bool:
        """Whether a capture's first segment at ``first`` is a sweep
        interval or more past the next sweep: held back as stamped ahead."""
        swept = self._swept_to
        return swept != _NEVER_SWEPT and first >= swept + 2 * self._sweep_every

    def _new_capture(self, ts: int, events: list[StreamEvent]) -> None:
        events.extend(self.next_segment_at(ts))  # before reached is read
        events.extend(self.new_capture(ts, self.reached))

    def next_segment_at(self, ts: int) -> list[StreamEvent]:
        """The next segment a reader of all connections feeds comes at
        ``ts``: a packet held back (see ``_hold_ahead``) is judged by it, as that
        segment would judge it.

        At the start of a capture: the last packet of the captures before,
        stamped ahead, is an outlier if the next capture goes on from well
        before it (found in review: one such packet, the last of a rotated
        file, was the latest packet read, and every file after it was
        read as another recording). A -j worker learns ``ts`` from the
        capture (capture.source._capture_boundary) and judges its own held
        packet so before the workers agree on the clock.
        """
        events: list[StreamEvent] = []
        if self._ahead is not None:
            self._release_ahead(ts, events)
        return events

    def finish(
        self,
        ts: int | None = None,
        *,
        clock: int | None = None,
        reason: CloseReason = CloseReason.END_OF_CAPTURE,
    ) -> list[StreamEvent]:
        """Close every open connection with ``reason``, in opening order,
        each after the bytes it still holds back.

        ``ts`` is the time to stamp on the closes; by default each
        connection's last packet time. ``clock``: the ``clock`` of the whole
        run, when other readers shared its connections out (``-j N``). Where
        it is ahead of this one's, the connections a reader of all of them
        would have found idle by then are closed as IDLE first.

        A packet held back as the last one read (see ``_hold_ahead``), with none
        after it to judge it by, is taken for the time first, as it was
        before packets were held back: connections idle by a pause before it
        close as IDLE, not at the end of the capture.
        """
        events: list[StreamEvent] = []
        if self._ahead is not None:
            self._settle_ahead(events)
        if clock is not None and clock >= self._next_sweep:
            self._sweep(clock, events)
        for flow in list(self._open.values()):
            at = flow.conn.last_ts if ts is None else ts
            self._close(flow, at, reason, events)
        self._flows.clear()
        self._closed.clear()
        self._closed_attempts.clear()
        self._next_sweep = _NEVER_SWEPT
        return events

    @property
    def clock(self) -> int:
        """The latest time connections were checked for idleness at, or
        a time before any packet: a point of the sweep grid, so the same in
        every reader of the same packets.

        Counted from the first segment of the latest capture that had one
        (``new_capture``), not over the whole run: the captures read after
        one of another, earlier recording would otherwise be judged by the
        other recording's time. Likewise from a packet more than an idle
        timeout before it, within a capture (see feed).

        With a packet held back as the last one read (see ``_hold_ahead``), its
        point of the grid: ``finish`` takes it for the time and sweeps
        there, and readers of the other connections must sweep there too.
        (At the start of a capture it is judged first: ``next_segment_at``.)
        """
        ahead = self._ahead
        if ahead is not None:
            return max(self._swept_to, ahead - ahead % self._sweep_every)
        return self._swept_to

    def expire(self, now: int) -> list[StreamEvent]:
        """Close the connections idle at ``now``, though no packet came.

        Live capture calls this on a timer: without it an idle connection
        would wait for the next packet of any connection to be closed. A
        -j worker calls it with the clock of all workers, for what a reader
        of all connections had closed by then.

        A packet held back (see ``_hold_ahead``) is judged by ``now`` first, as by
        a packet at that time.
        """
        events: list[StreamEvent] = []
        if self._ahead is not None:
            self._release_ahead(now, events)
        self._sweep(now, events)
        return events

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # -- connections ----------------------------------------------------

    def _start(
        self,
        key: FlowKey,
        ts: int,
        flags: int,
        events: list[StreamEvent],
        syn_seq: int | None = None,
    ) -> tuple[_Flow, Direction]:
        """Open a connection for a segment's 4-tuple and say who is client.

        ``syn_seq``: the segment is a client's SYN alone, of that sequence
        number; the flow is made without stream state (_Flow.syn_seq).
        """
        src_ip, dst_ip, src_port, dst_port = key
        outbound = False
        if flags & SYN and not flags & (FIN | RST):
            # The SYN's sender is the client; a SYN-ACK's, the server. With
            # FIN or RST as well it is no handshake (a scanner's probe, all
            # flags set): the ports say who serves, as below.
            client_sent = not flags & ACK
            client_port, server_port = (
                (src_port, dst_port) if client_sent else (dst_port, src_port)
            )
            # A connection opened from an SMTP port to another port, which no
            # mail program does: mostly the backscatter of SYNs someone sent
            # with an SMTP server's address, SYN-ACKs from all over the place
            # that the server resets. Its host is no client here and the
            # other end no SMTP server: it is followed, so that its later
            # packets are not taken for a session caught after its start
            # with the roles the ports suggest, but marked, and makes no
            # session (see Connection.from_smtp_port).
            outbound = client_port in self._ports and server_port not in self._ports
        else:
            src_smtp = src_port in self._ports
            dst_smtp = dst_port in self._ports
            # The side on a watched port serves; failing that, the lower port.
            client_sent = dst_smtp if src_smtp != dst_smtp else src_port >= dst_port
        if client_sent:
            conn = Connection(self._next_id, src_ip, src_port, dst_ip, dst_port, ts)
        else:
            conn = Connection(self._next_id, dst_ip, dst_port, src_ip, src_port, ts)
        if outbound:
            conn.from_smtp_port = True
            self.stats.handshakes_from_smtp_ports += 1
        self._next_id += 1
        self.stats.connections += 1
        reverse = (dst_ip, src_ip, dst_port, src_port)
        flow = _Flow(conn, (key, reverse), syn_seq)
        sent, received = (
            (Direction.CLIENT, Direction.SERVER)
            if client_sent
            else (Direction.SERVER, Direction.CLIENT)
        )
        mine, theirs = flow.halves[sent], flow.halves[received]
        self._flows[key] = (flow, sent, int(sent), mine, theirs)
        self._flows[reverse] = (flow, received, int(received), theirs, mine)
        self._open[conn.conn_id] = flow
        events.append(StreamOpened(conn))
        return flow, sent

    def _grow(self, flow: _Flow) -> None:
        """Give a flow that was a SYN alone (_Flow.syn_seq) its stream
        state, as _segment would have left it after that SYN: the client's
        ISN, and nothing else. Its next packet has come."""
        assert flow.syn_seq is not None
        client, server = flow.halves = (_Half(), _Half())
        client.isn = flow.syn_seq
        client.base = (flow.syn_seq + 1) % _SEQ_MOD
        flow.syn_seq = None
        # The lanes as _start makes them, the SYN's sender being the client.
        key, reverse = flow.keys
        self._flows[key] = (flow, Direction.CLIENT, 0, client, server)
        self._flows[reverse] = (flow, Direction.SERVER, 1, server, client)

    def _close(
        self,
        flow: _Flow,
        ts: int,
        reason: CloseReason,
        events: list[StreamEvent],
        *,
        decided: int | None = None,
    ) -> None:
        """Hand over what is held back (gaps, then bytes) and close.

        ``ts`` is stamped on the events: the connection's last packet,
        unless ``finish`` was given another time. ``decided`` is when the
        close was decided, where that is later: the end of an idle timeout,
        a new SYN on the 4-tuple. The 4-tuple is remembered from then, so
        that a late packet of an idle connection is still counted as one
        after its close, not taken for a new connection; an evicted one's is
        forgotten at once, as its room was wanted, and a later packet of it
        starts a connection caught after its start.
        """
        if flow.fin_done and reason is not CloseReason.INTERRUPTED:
            reason = CloseReason.FIN  # only the final ACK was missing
        if flow.halves is not _SYN_ONLY:  # a SYN alone holds nothing back
            for direction in _DIRECTIONS:
                self._flush(flow, direction, ts, events)
        if (
            reason in _ENDS_UNSEEN
            and any(half.fin_lost is not None for half in flow.halves)
            and all(
                half.fin_off is not None and half.next_off >= half.fin_off
                for half in flow.halves
            )
        ):
            # Each side's FIN reached, one of them lost by the capture (the
            # flush placed it): the connection ended by its FINs all the same.
            reason = CloseReason.FIN
        conn = flow.conn
        events.append(StreamClosed(conn, ts, reason))
        if ts > self._last_closed:
            self._last_closed = ts
        evicted = reason is CloseReason.EVICTED
        if evicted:
            self.stats.evicted += 1
        # A connection that said nothing is remembered as long as an attempt
        # lasts (a late SYN-ACK or RST), one whose start the capture missed
        # not at all (a RST flood would fill memory with them).
        silent = flow.silent = _unproven(flow)
        forget = evicted or conn.traceless  # nothing to be late for
        closed_at = ts if decided is None else decided
        flow.forget_at = closed_at + (self._attempt_ns if silent else self._idle_ns)
        flow.closed = True
        flow.steady = False
        # The 4-tuple is remembered for a while (see _sweep), the stream
        # state not: a busy capture closes thousands of connections a minute,
        # and a closed flow's packets are only counted (see feed). Both
        # directions share one lane then, which holds no halves of its own.
        flow.server = (conn.server_ip, conn.server_port)
        server = flow.halves[Direction.SERVER]
        if flow.synacks and server.base is not None:
            # Where the old server stream stood, so that its own late
            # segments are not taken for a held connection's (_held_after_close).
            flow.server_next = (server.base + server.next_off) % _SEQ_MOD
        flow.halves = _RELEASED
        flow.conn = _RELEASED_CONN  # the StreamClosed event keeps the real one
        del self._open[conn.conn_id]
        closed_lane = (flow, Direction.CLIENT, 0, *_RELEASED)
        for key in flow.keys:
            lane = self._flows.get(key)
            if lane is not None and lane[0] is flow:
                if forget:
                    del self._flows[key]
                else:
                    self._flows[key] = closed_lane
        if not forget:
            (self._closed_attempts if silent else self._closed).append(flow)

    def _tick(self, ts: int, seg: Segment, events: list[StreamEvent]) -> bool:
        """A packet at or past the next sweep, or before the last one by more
        than an idle timeout (see _clock_back), or the one after a packet
        held back (see _hold_ahead). True when it is held back itself."""
        every = self._sweep_every
        if self._capture_start:
            self._new_capture(ts, events)
        elif self._ahead is not None:
            self._release_ahead(ts, events)
        next_sweep = self._next_sweep
        if ts < next_sweep:
            if ts >= self._behind:
                return False  # the packet after one held back: nothing due
            # Only once the traffic behind has gone on for a sweep interval,
            # with no sweep between: one packet stamped in the past, in
            # traffic that goes on as before, took the clock back, and the
            # next packet's sweep forgot the recently closed 4-tuples early
            # (found in review: a late copy of a QUIT then made a session).
            # Two interleaved clocks (a crafted capture) take it back at
            # most once a sweep interval, not at every packet, each time
            # sweeping every open connection (found in review: 40,000
            # packets over 5,000 connections took 11.9 s, not 1.0).
            first = self._behind_since
            if first == _NEVER_SWEPT:
                self._behind_since = ts
                return False
            if ts < first + every:
                return False
            self._clock_back(ts)
        elif next_sweep != _NEVER_SWEPT and ts >= next_sweep + every:
            self._hold_ahead(ts, seg)
            judged = self._judged
            if judged is not None:
                self._judged = None
                if judged[0] == ts:  # the first segment, judged by the next
                    self._release_ahead(judged[1], events)
            return True
        # At a point of a fixed grid, not at this packet's time: a reader
        # given only some of the connections (a -j worker) then sweeps at
        # the same times as one given all, only later.
        self._sweep(ts - ts % every, events)
        return False

    def _hold_ahead(self, ts: int, seg: Segment) -> None:
        """Hold back a packet a sweep interval or more past the next sweep
        until the packet after it shows whether time jumped (a pause in the
        traffic) or only this packet's stamp did (an outlier: a damaged
        timestamp, a clock that stepped and stepped back).

        Found in review: one packet stamped 600 s or more ahead swept there
        and closed every open connection as idle; their next packets made
        sessions caught mid-stream, message lines read as commands, and a
        -j worker that did not see it kept its connections. Judged by the
        packet after it (``_release_ahead``): that one at or past this one's time,
        less a sweep interval, shows the traffic going on after a pause,
        and this one is swept at and fed exactly as before it was held;
        well before it, this one is an outlier, fed at its connection's time
        and counted (``stats.clock_outliers``). Two outliers in a row look
        like a pause and are taken for one. The next capture's first segment
        judges it as the packet after it (``next_segment_at``), a timer by
        its own clock (``expire``); at the end ``finish`` takes it for the
        time, as before packets were held back.

        Its events come with the next packet's: consumers go by the times
        the events carry, not by the call that returns them.
        """
        self._ahead = ts
        self._ahead_seg = seg
        self._due = self._next_sweep
        self._next_sweep = _NEVER_SWEPT  # the next packet ticks

    def _release_ahead(self, now: int, events: list[StreamEvent]) -> None:
        """Judge and feed the packet held back (see _hold_ahead) by ``now``: the
        time of the packet after it (the next capture's first, for
        next_segment_at), or of a timer (expire)."""
        ahead, seg = self._ahead, self._ahead_seg
        assert ahead is not None and seg is not None
        self._next_sweep = self._due
        if now >= ahead - self._sweep_every:
            # Time did jump: swept at and fed as before it was held, so that
            # a pause in the traffic closes exactly what it closed. Held on
            # through the sweep, which may close many connections: a stop
            # (KeyboardInterrupt) there leaves it to ``finish``, which
            # judges and feeds it again (found in review: taken out first,
            # the packet was lost, and its bytes with it).
            self._sweep(ahead - ahead % self._sweep_every, events)
            self._ahead = self._ahead_seg = None
            events += self.feed(ahead, seg)
            return
        self._ahead = self._ahead_seg = None
        self.stats.clock_outliers += 1
        # At its connection's time: its last packet, or, closed, when it
        # was closed (its 4-tuple is remembered from then), so that the
        # packet joins it as at its real time, in every reader of it.
        # Otherwise (its connection's first) at its own: nothing to go by.
        found = self._flows.get(seg[0])
        at = ahead
        if found is not None:
            flow = found[0]
            if flow.closed:
                wait = self._attempt_ns if flow.silent else self._idle_ns
                at = min(ahead, flow.forget_at - wait)
            else:
                at = min(ahead, flow.conn.last_ts)
        closed = (len(self._closed), len(self._closed_attempts))
        # Fed without a tick: the sweeps stay due where they were.
        next_sweep, behind = self._next_sweep, self._behind
        self._next_sweep, self._behind = _NEVER_DUE, _NEVER_SWEPT
        try:
            events += self.feed(at, seg)
        finally:
            self._next_sweep, self._behind = next_sweep, behind
        # A connection it opened and closed at its own time would be
        # remembered from then, and keep _sweep from forgetting the ones
        # closed after it.
        self._remember_from(now, closed)

    def _settle_ahead(self, events: list[StreamEvent]) -> None:
        """Take the packet held back (see _hold_ahead) for the time, with no packet
        after it to judge it by."""
        ahead = self._ahead
        assert ahead is not None
        self._release_ahead(ahead, events)

    def _clock_back(self, ts: int) -> None:
        """Traffic more than an idle timeout before the last sweep, for a
        sweep interval: one packet far ahead of the traffic around it (a
        clock that jumped) moved the sweeps on, and no later packet would
        reach the next one, so closed 4-tuples would never be forgotten nor
        idle connections closed (found in review: one packet 50 years
        ahead, then 200,000 short sessions, took 3 times the memory). The
        sweeps and the clock go on from ``ts``. A clock that steps back by
        less only delays the sweeps by as much.
        """
        self._swept_to = _NEVER_SWEPT  # the sweep about to be made sets it
        self._remember_from(ts)

    def _remember_from(self, ts: int, since: tuple[int, int] = (0, 0)) -> None:
        """Closed 4-tuples remembered past an idle timeout from ``ts``, as only
        a close while the clock was ahead leaves them, are remembered as long
        from ``ts`` instead: remembered until then, each would stop _sweep's
        forgetting, in closing order, for good. ``since``: how many flows of
        ``_closed`` and ``_closed_attempts`` to pass over, the first."""
        for closed, wait, start in (
            (self._closed, self._idle_ns, since[0]),
            (self._closed_attempts, self._attempt_ns, since[1]),
        ):
            for flow in itertools.islice(reversed(closed), max(len(closed) - start, 0)):
                if flow.forget_at > ts + self._idle_ns + wait:
                    flow.forget_at = ts + wait

    def _timeout(self, flow: _Flow) -> int:
        """How long ``flow`` may stay silent before it is closed as idle."""
        return self._attempt_ns if _unproven(flow) else self._idle_ns

    def _evict(self, cap: int, now: int, events: list[StreamEvent]) -> None:
        """Close connections until a tenth of ``cap`` is free: those that
        showed nothing yet (``_unproven``) first, the oldest first, then the
        others that were silent longest.

        Those go first as they have nothing to lose but their handshake
        times; taken in opening order, which is nearly that of their last
        packets, they need no sort. Which connections go depends on what
        else is open, so when a -j worker evicts, the tables can differ from
        a single process's: the caller warns (``stats.evicted``).
        """
        excess = len(self._open) - (cap - cap // _EVICT_SHARE)
        # Doubtful first: attempts, and connections caught after their
        # start whose client is not shown to be real (found in review: a
        # flood of spoofed segments pushed a real session out).
        attempts = (f for f in self._open.values() if not f.conn.handshake_completed)
        victims = list(itertools.islice(attempts, excess))
        if len(victims) < excess:
            others = [f for f in self._open.values() if f.conn.handshake_completed]
            others.sort(key=lambda f: (f.conn.last_ts, f.conn.conn_id))
            victims += others[: excess - len(victims)]
        for flow in victims:
            last = flow.conn.last_ts
            self._close(flow, last, CloseReason.EVICTED, events, decided=now)

    def _sweep(self, now: int, events: list[StreamEvent]) -> None:
        """Close connections idle too long; forget long-closed 4-tuples."""
        self._next_sweep = now + self._sweep_every
        self._fresh_since = self._next_sweep - self._idle_ns
        self._behind = now - self._idle_ns
        self._behind_since = _NEVER_SWEPT
        self._swept_to = max(self._swept_to, now)
        limit = now - self._idle_ns
        attempts_limit = now - self._attempt_ns
        linger = now - _FIN_LINGER_NS
        idle = [
            f
            for f in self._open.values()
            if f.conn.last_ts < limit
            or (f.fin_done and f.conn.last_ts < linger)
            or (f.conn.last_ts < attempts_limit and _unproven(f))
        ]
        for flow in idle:  # in opening order: deterministic
            # Stamped with the last packet, not with the end of the wait:
            # nothing of the connection was seen after it.
            last = flow.conn.last_ts
            wait = 0 if flow.fin_done else self._timeout(flow)
            self._close(flow, last, CloseReason.IDLE, events, decided=last + wait)
        for closed in (self._closed, self._closed_attempts):
            while closed:
                flow = closed[0]
                if flow.forget_at >= now:
                    break
                closed.popleft()
                for key in flow.keys:
                    found = self._flows.get(key)
                    if found is not None and found[0] is flow:
                        del self._flows[key]

    def _syn_in_session(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        seg: Segment,
        events: list[StreamEvent],
    ) -> bool:
        """Whether a SYN that is not this connection's own leaves it open.

        A SYN from the server's side never starts a connection to it: the
        server's SYN of a simultaneous open, whose SYN-ACK repeats its ISN,
        or a forgery (found in review: one sent after the client's SYN hid
        the whole session). A client's SYN with another ISN while the
        connection is established and neither side has closed it is what
        RFC 5961 4 has the server answer with an ACK of the old connection
        (found in review: one sent mid-session ended the session as reused,
        and the AUTH attempts after it with it). It waits in ``flow.reuse``
        for the server to answer it with a SYN-ACK, as it does when it had
        dropped the old one (``_hold_synack``). Any other SYN (after a FIN
        or on an attempt) starts a connection at once.
        """
        conn = flow.conn
        if direction == Direction.SERVER and not conn.from_smtp_port:
            self._anomaly(
                flow,
                direction,
                ts,
                "tcp_syn_in_session",
                "SYN from the server on an open connection, ignored",
                events,
            )
            return True
        client, server = flow.halves
        if (
            direction != Direction.CLIENT
            or not conn.handshake_completed
            or flow.fin_done
            or client.fin_off is not None
            or server.fin_off is not None
        ):
            return False
        if flow.reuse is None:
            flow.reuse = {}
            self._anomaly(
                flow,
                direction,
                ts,
                "tcp_syn_in_session",
                "client SYN with another sequence number on an open connection:"
                " a new connection only if the server answers it with a SYN-ACK",
                events,
            )
        isn = seg[1]
        if flow.synacks:
            # A SYN-ACK captured before this SYN (two taps' clocks) answers it.
            for nxt, (held_ts, synack, syn, sent) in list(flow.synacks.items()):
                if syn is None and _acknowledges_syn(synack[2], seg):
                    flow.synacks[nxt] = (held_ts, synack, (ts, _kept(seg)), sent)
        if isn not in flow.reuse:
            # Every one kept, up to a few (found in review: a decoy SYN sent
            # after the real one took its place, and the server's SYN-ACK to
            # the real one then answered nothing). Past that the oldest
            # goes (see _hold_synack).
            if len(flow.reuse) >= _PENDING_SYNS:
                del flow.reuse[next(iter(flow.reuse))]
            flow.reuse[isn] = (ts, _kept(seg))
        return True

    def _hold_synack(
        self,
        flow: _Flow,
        ts: int,
        seg: Segment,
        events: list[StreamEvent],
    ) -> None:
        """Keep a server SYN-ACK of another connection on ``flow``'s ports,
        with the client SYN it answers if one was seen (``flow.synacks``, up
        to a few, by the sequence number the server's first byte will
        carry); the first makes a ``tcp_syn_in_session`` anomaly.

        The new connection starts only with a server segment in its
        sequence space (``_held_for``), its greeting or what follows: a
        SYN-ACK, or a SYN and a SYN-ACK, are sent from any address (found
        in review: a client hid its brute force behind one forged SYN-ACK
        and its own acknowledgment of it, and before that behind one forged
        SYN-ACK alone)."""
        if flow.synacks is None:
            flow.synacks = {}
            self._anomaly(
                flow,
                Direction.SERVER,
                ts,
                "tcp_syn_in_session",
                "server SYN-ACK of another connection on an open one: a new"
                " connection only once the server sends in its sequence space",
                events,
            )
        following = (seg[1] + 1) % _SEQ_MOD
        if _near(flow.halves[Direction.SERVER], following):
            # A server stream that would go on from the old connection's:
            # the old one's next server segment would show it (found in
            # review: an on-path forger chose the number so, and the
            # server's next segment of the old connection started a new
            # one). A real server's new ISN lies anywhere; the client's may
            # lie near its old stream (its own choice), so it proves nothing.
            return
        if following not in flow.synacks:
            if len(flow.synacks) >= _PENDING_SYNS:
                del flow.synacks[next(iter(flow.synacks))]
            syn = _answered(flow.reuse, seg[2])
            flow.synacks[following] = (ts, _kept(seg), syn, [])
        flow.steady = False

    def _reused(
        self,
        flow: _Flow,
        synack_ts: int,
        synack: Segment,
        syn: tuple[int, Segment] | None,
        sent: list[tuple[int, Segment]],
        events: list[StreamEvent],
    ) -> tuple[_Flow, Direction]:
        """A new connection on ``flow``'s ports, from the server's SYN-ACK at
        ``synack_ts``, the client's ``syn`` (time and segment) where it was
        captured and the client segments ``sent`` after them, in capture
        order: ``flow`` is closed as reused if it is still open. Returns the
        new flow and the server's direction in it, for the segment that
        showed it."""
        flow.reuse = None
        flow.synacks = None
        steps = [(synack_ts, 1, synack)]
        if syn is not None:
            steps.append((syn[0], 0, syn[1]))  # before its SYN-ACK at a tie
        steps.sort(key=lambda step: step[:2])
        steps += [(at, 0, segment) for at, segment in sent]
        if not flow.closed:
            last = flow.conn.last_ts
            self._close(flow, last, CloseReason.REUSED, events, decided=steps[0][0])
        new: _Flow | None = None
        for ts, from_server, seg in steps:
            if new is None:
                new, direction = self._start(seg[0], ts, seg[3], events)
            else:
                direction = Direction.SERVER if from_server else Direction.CLIENT
            self._segment(new, direction, ts, seg, events)
            new.settle()
        assert new is not None
        return new, Direction.SERVER

    # -- one segment ----------------------------------------------------

    def _segment(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        seg: Segment,
        events: list[StreamEvent],
    ) -> None:
        _, seq, ack, flags, payload, missing = seg
        conn = flow.conn
        conn.last_ts = ts
        conn.packets[direction] += 1
        conn.wire_bytes[direction] += len(payload) + missing
        half = flow.halves[direction]
        peer = flow.halves[1 - direction]
        believed = True
        if flags & SYN or (conn.synack_ts is not None and conn.ack_ts is None):
            believed = self._handshake(flow, direction, ts, seg, half, peer)
        if direction == Direction.CLIENT and flags & _ACK_ONLY == ACK and believed:
            conn.client_acked = True
            if conn.synack_ts is None and not conn.client_ack_moved:
                if flow.first_ack is None:
                    flow.first_ack = ack
                else:
                    # Forward, by what a server sends before the client's
                    # next segments: a greeting, some replies. Random
                    # guesses (a flood's, each segment its own) land
                    # anywhere in the 2**32 numbers.
                    moved = (ack - flow.first_ack) % _SEQ_MOD
                    conn.client_ack_moved = 0 < moved <= _ACK_MOVE_MAX
            if peer.base is None:
                flow.early_ack = ack
        elif (
            direction == Direction.SERVER
            and flags & _ACK_ONLY == ACK
            and conn.syn_ts is None
            and conn.synack_ts is None
        ):
            # Only needed, and only watched (see _Flow.settle), where the
            # handshake was not captured.
            conn.server_acked = True
        if (
            direction == Direction.CLIENT
            and payload
            and conn.syn_ts is None
            and conn.synack_ts is None
            and half.base is not None
            and half.next_off
            and half.offset(seq) == half.next_off
        ):
            conn.client_continued = True  # see Connection.client_continued
        if flags & RST:
            self._reset(flow, direction, ts, seg, events)
            return

        # The acknowledgment first: it speaks of bytes sent before this.
        if flags & ACK and peer.base is not None and believed:
            ack_off = peer.offset(ack)
            if ack_off > peer.acked:
                self._acknowledged(flow, 1 - direction, ack_off, ts, events)
                if (
                    flags & FIN
                    and ack_off == peer.next_off + 1
                    and peer.fin_off is None
                    and not peer.pending
                ):
                    self._fin_lost(flow, 1 - direction, ts)

        if payload or missing or flags & FIN:
            # The common case, next bytes in order with nothing held back
            # and no FIN about, goes straight out; the rest goes by _data.
            if (
                half.base is not None
                and not half.pending
                and half.fin_off is None
                and not missing
                and not flags & (SYN | FIN)
                and half.offset(seq) == half.next_off
            ):
                self._deliver(flow, direction, ts, payload, events)
            else:
                self._data(flow, direction, ts, seg, events)

        # Closed once each side's FIN is reached (RFC 9293 3.6) and the last
        # FIN is acknowledged: that final ACK is the connection's last packet.
        if (
            half.fin_off is not None
            and peer.fin_off is not None
            and half.next_off >= half.fin_off
            and peer.next_off >= peer.fin_off
        ):
            final_ack = not payload and not flags & FIN
            guessed = half.fin_lost is not None or peer.fin_lost is not None
            if (flow.fin_done or final_ack) and not guessed:
                self._close(flow, ts, CloseReason.FIN, events)
            else:
                flow.fin_done = True

    def _handshake(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        seg: Segment,
        half: _Half,
        peer: _Half,
    ) -> bool:
        """Note the handshake's times and initial sequence numbers (RFC 9293 3.5).

        The SYN sets its direction's ISN; a SYN-ACK's acknowledgment gives
        the client's when the SYN itself was not captured. Returns False for
        a client's ACK that the server, its SYN-ACK captured, refuses: one
        that does not acknowledge that SYN-ACK, whose acknowledgment is then
        no proof of anything (a spoofed flood's guess).
        """
        _, seq, ack, flags, _, _ = seg
        conn = flow.conn
        if flags & SYN:
            if flags & ACK:
                if conn.synack_ts is None:
                    conn.synack_ts = ts
                if peer.base is None:
                    peer.base = ack
            elif conn.syn_ts is None:
                conn.syn_ts = ts
                if (
                    half.base is not None
                    and half.isn is None
                    and not half.next_off
                    and not half.pending
                ):
                    # The SYN-ACK came first in the capture (two taps'
                    # clocks) and set the stream's start past the bytes of
                    # a Fast Open SYN: the SYN itself says where it starts
                    # (found in review: an empty second session).
                    half.isn = seq
                    half.base = (seq + 1) % _SEQ_MOD
            if half.base is None:
                half.isn = seq
                half.base = (seq + 1) % _SEQ_MOD
                if direction == Direction.SERVER and flow.early_ack is not None:
                    # The client's ACKs came first in the capture (clocks of
                    # two taps, or a flood's ACK right behind its SYN): only
                    # now can they be checked.
                    conn.client_acked = _acknowledges_synack(half, flow.early_ack)
            return True
        if direction != Direction.CLIENT or not flags & ACK:
            return True
        if not _acknowledges_synack(peer, ack):
            # RFC 9293 3.10.7.3: in SYN-RECEIVED the server answers such an
            # ACK with a RST and stays where it was.
            return False
        if not flags & RST:
            # A RST with the ACK bit (a spoofed source's answer to a
            # SYN-ACK it never asked for) ends the handshake, not completes it.
            conn.ack_ts = ts
        return True

    def _reset(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        seg: Segment,
        events: list[StreamEvent],
    ) -> None:
        _, seq, _, _, payload, _ = seg
        half = flow.halves[direction]
        if half.base is not None:
            # RFC 5961 3.2: a RST whose sequence number lies outside the
            # window is ignored by the endpoints, so the conversation goes
            # on; closing on it would let an injected RST blind us.
            distance = abs(half.offset(seq) - half.next_off)
            if distance > _RST_WINDOW:
                self._anomaly(
                    flow,
                    direction,
                    ts,
                    "tcp_rst_out_of_window",
                    f"RST {distance} bytes away from the stream, ignored",
                    events,
                )
                return
        if payload:
            # RFC 9293 3.5.3: data on a RST is diagnostic, not stream.
            self._anomaly(
                flow,
                direction,
                ts,
                "tcp_rst_with_data",
                f"{len(payload)} bytes carried by a RST",
                events,
            )
        self._close(flow, ts, CloseReason.RST, events)

    def _acknowledged(
        self,
        flow: _Flow,
        direction: int,
        ack_off: int,
        ts: int,
        events: list[StreamEvent],
    ) -> None:
        """The peer of ``direction`` acknowledged everything before ``ack_off``."""
        half = flow.halves[direction]
        if ack_off <= half.acked:
            return
        half.acked = ack_off
        # Acknowledged bytes will not be retransmitted in earnest: stop
        # keeping them for comparison.
        drop = len(half.tail) - max(0, half.next_off - ack_off)
        if drop > 0:
            _trimmed(half, drop)
        if ack_off > half.next_off and (half.pending or half.fin_off is not None):
            self._gaps_proven(flow, direction, ts, events)

    def _data(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        seg: Segment,
        events: list[StreamEvent],
    ) -> None:
        """Place the segment's bytes (and FIN) in the direction's stream."""
        _, seq, _, flags, payload, missing = seg
        half = flow.halves[direction]
        if flags & SYN:
            seq = (seq + 1) % _SEQ_MOD
        if half.base is None:
            # No SYN seen: the first bytes seen start the stream.
            half.base = seq
        start = half.offset(seq)
        end = start + len(payload)
        wire_end = end + missing
        lost_at = half.fin_off if half.fin_lost is not None else None
        if lost_at is not None and (
            wire_end > lost_at or (flags & FIN and wire_end != lost_at)
        ):
            # Sent past the FIN placed where the peer acknowledged one: that
            # was a byte the capture lost, not a FIN (found in review: what
            # came after it was dropped as data after the FIN).
            half.fin_off = half.fin_lost = None
            flow.fin_done = False  # the FINs are not both reached after all
        elif lost_at is not None and flags & FIN:
            # The FIN itself, only late (reordered): it was not lost, and
            # the connection's last packet is the ACK of it still to come.
            half.fin_lost = None
            flow.fin_done = False
        if flags & FIN and half.fin_off is None and wire_end >= half.next_off:
            if wire_end - half.next_off <= self._max_bytes:
                half.fin_off = wire_end
            else:
                # A FIN far past anything buffered is forged or corrupt: the
                # real one will come where the stream ends.
                self._anomaly(
                    flow,
                    direction,
                    ts,
                    "tcp_fin_out_of_window",
                    f"FIN {wire_end - half.next_off} bytes ahead, ignored",
                    events,
                )

        # Clip what cannot belong to the stream: bytes before its start
        # (a capture begun mid-connection, then a reordered segment) and
        # bytes past the FIN (RFC 9293 3.10.7.4: none may follow it).
        if start < 0:
            if wire_end > start:
                self._anomaly(
                    flow,
                    direction,
                    ts,
                    "tcp_data_before_start",
                    f"{min(wire_end, 0) - start} bytes before the first byte seen",
                    events,
                )
            if wire_end <= 0:
                return
            payload = payload[-start:]
            start = 0
            end = max(end, 0)
        if half.fin_off is not None and wire_end > half.fin_off:
            self._anomaly(
                flow,
                direction,
                ts,
                "tcp_data_after_fin",
                f"{wire_end - max(start, half.fin_off)} bytes past the FIN "
                f"at offset {half.fin_off}",
                events,
            )
            if start >= half.fin_off:
                return
            wire_end = half.fin_off
            end = min(end, wire_end)
            payload = payload[: end - start]

        if payload:
            if start == half.next_off and not half.pending:
                self._deliver(flow, direction, ts, payload, events)
            else:
                self._insert(flow, direction, ts, start, payload, events)
        if wire_end > end:
            self._missing(flow, direction, ts, end, wire_end, events)
        if half.pending and half.pending[0][0] <= half.next_off:
            self._drain(flow, direction, ts, events)

        # More data past a hole the peer already acknowledged: the hole's
        # bytes were sent and the capture lost them.
        if half.acked > half.next_off and (half.pending or half.fin_off is not None):
            self._gaps_proven(flow, direction, ts, events)
        if half.pending and self._over(flow, half):
            self._over_limit(flow, direction, ts, events)

    # -- byte stream bookkeeping ----------------------------------------

    def _deliver(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        data: bytes,
        events: list[StreamEvent],
    ) -> None:
        half = flow.halves[direction]
        events.append(StreamData(flow.conn, direction, ts, data))
        half.next_off += len(data)
        tail = _kept_tail(half, data)
        window = self._window if not _unproven(flow) else _UNPROVEN_BYTES
        if len(tail) > window:
            del tail[: len(tail) - window]

    def _gap(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        size: int,
        events: list[StreamEvent],
    ) -> None:
        half = flow.halves[direction]
        events.append(StreamGap(flow.conn, direction, ts, size))
        self.stats.gaps += 1
        self.stats.gap_bytes += size
        half.next_off += size
        half.tail = b""

    def _insert(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        start: int,
        data: bytes,
        events: list[StreamEvent],
    ) -> None:
        """Hold ``data`` (at ``start``) back, keeping bytes seen earlier."""
        half = flow.halves[direction]

        # Step 1: bytes already delivered: compare with what is kept of them.
        if start < half.next_off:
            old_end = min(start + len(data), half.next_off)
            tail_start = half.next_off - len(half.tail)
            lo = max(start, tail_start)
            if lo < old_end and (
                half.tail[lo - tail_start : old_end - tail_start]
                != data[lo - start : old_end - start]
            ):
                self._mismatch(flow, direction, ts, lo, old_end - lo, events)
            if old_end == start + len(data):
                self.stats.retransmissions += 1
                return
            data = data[half.next_off - start :]
            start = half.next_off

        # Step 2: bytes held back already win; only the uncovered parts of
        # ``data`` are added, and a marked-missing range yields to data.
        pending = _pieces(half)
        end = start + len(data)
        same = half.same
        if same is not None:
            at, kept = start - same[0], same[1]
            if (
                at >= 0
                and at + len(data) <= len(kept)
                and kept[at : at + len(data)] == data
            ):
                self.stats.retransmissions += 1
                return
        i = bisect.bisect_left(pending, start, key=_piece_end_after)
        j = i
        merged: list[_Piece] = []
        cursor = start
        equal = True  # so far, to the held bytes it overlaps
        while j < len(pending) and pending[j][0] < end:
            p_start, p_end, p_data = pending[j]
            if p_data is None:
                # Split the marker around the real bytes.
                if p_start < start:
                    merged.append((p_start, start, None))
                if p_end > end:
                    merged.append((end, p_end, None))
                j += 1
                continue
            if p_start > cursor:
                merged.append((cursor, p_start, data[cursor - start : p_start - start]))
            lo, hi = max(p_start, start), min(p_end, end)
            if p_data[lo - p_start : hi - p_start] != data[lo - start : hi - start]:
                self._mismatch(flow, direction, ts, lo, hi - lo, events)
                equal = False
            merged.append(pending[j])
            cursor = max(cursor, p_end)
            j += 1
        if cursor < end:
            merged.append((cursor, end, data[cursor - start :]))
        added = _held(merged) - _held(pending[i:j])
        if added == 0:
            self.stats.retransmissions += 1
            # Wholly over held bytes, and equal to them: kept as _Half.same
            # when it spans several pieces, the longest such segment first.
            if (
                equal
                and j - i >= _SAME_PIECES
                and (same is None or len(data) > len(same[1]))
            ):
                half.same = (start, bytes(data))
        merged.sort(key=_piece_start)
        pending[i:j] = merged
        half.pending_bytes += added

    def _missing(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        start: int,
        end: int,
        events: list[StreamEvent],
    ) -> None:
        """Bytes the segment carried but the capture cut off (snap length)."""
        half = flow.halves[direction]
        if start < half.next_off:
            start = half.next_off
        if start >= end:
            return
        if start == half.next_off and not half.pending:
            self._gap(flow, direction, ts, end - start, events)
            return
        # Out of order: mark the range; any real bytes for it take over.
        low, high = half.covered
        if low <= start and end <= high:
            return  # held or marked already
        pending = _pieces(half)
        i = bisect.bisect_left(pending, start, key=_piece_end_after)
        j = i
        merged: list[_Piece] = []
        cursor = start
        while j < len(pending) and pending[j][0] < end:
            p_start, p_end, _ = pending[j]
            if p_start > cursor:
                merged.append((cursor, p_start, None))
            merged.append(pending[j])
            cursor = max(cursor, p_end)
            j += 1
        if cursor < end:
            merged.append((cursor, end, None))
        pending[i:j] = merged
        if start <= high and low <= end:  # the two ranges touch: one range
            half.covered = (min(low, start), max(high, end))
        else:
            half.covered = (start, end)

    def _drain(
        self, flow: _Flow, direction: Direction, ts: int, events: list[StreamEvent]
    ) -> None:
        """Deliver held-back pieces that now continue the stream."""
        half = flow.halves[direction]
        pending = _pieces(half)  # a list already: called with pieces held
        cursor = half.next_off
        taken = 0
        run: list[bytes] = []
        for p_start, p_end, p_data in pending:
            if p_start > cursor:
                break
            taken += 1
            cursor = p_end
            if p_data is None:
                if run:
                    self._deliver(flow, direction, ts, b"".join(run), events)
                    run = []
                self._gap(flow, direction, ts, p_end - p_start, events)
            else:
                half.pending_bytes -= len(p_data)
                run.append(p_data)
        del pending[:taken]
        if taken:
            half.same = None  # what it held may be delivered now
        if run:
            self._deliver(flow, direction, ts, b"".join(run), events)

    def _gaps_proven(
        self, flow: _Flow, direction: int, ts: int, events: list[StreamEvent]
    ) -> None:
        """Give up on holes the peer's acknowledgment proves were sent."""
        half = flow.halves[direction]
        d = _DIRECTIONS[direction]
        while half.acked > half.next_off:
            if half.pending:
                target = min(half.acked, half.pending[0][0])
            elif half.fin_off is not None:
                target = min(half.acked, half.fin_off)
            else:
                return
            if target <= half.next_off:
                return
            self._gap(flow, d, ts, target - half.next_off, events)
            if half.pending and half.pending[0][0] <= half.next_off:
                self._drain(flow, d, ts, events)

    def _over(self, flow: _Flow, half: _Half) -> bool:
        """Whether ``half`` holds back more than its connection may."""
        if _unproven(flow):
            pieces, size = _UNPROVEN_PIECES, _UNPROVEN_BYTES
        else:
            pieces, size = self._max_pieces, self._max_bytes
        return len(half.pending) > pieces or half.pending_bytes > size

    def _over_limit(
        self, flow: _Flow, direction: Direction, ts: int, events: list[StreamEvent]
    ) -> None:
        """Too much held back: the oldest hole becomes a gap."""
        half = flow.halves[direction]
        while half.pending and self._over(flow, half):
            self.stats.buffer_limit_hits += 1
            hole = half.pending[0][0] - half.next_off
            self._anomaly(
                flow,
                direction,
                ts,
                "tcp_buffer_limit",
                f"{half.pending_bytes} bytes in {len(half.pending)} pieces held "
                f"past a hole of {hole} bytes at offset {half.next_off}; "
                "hole given up as a gap",
                events,
            )
            if hole > 0:
                self._gap(flow, direction, ts, hole, events)
            self._drain(flow, direction, ts, events)

    def _fin_lost(self, flow: _Flow, direction: int, ts: int) -> None:
        """The peer of ``direction``, closing too, acknowledged one sequence
        number past all that ``direction`` sent: a FIN the capture lost.

        A FIN takes one sequence number (RFC 9293 3.4), and one byte of data
        lost just as the other side closes is far less likely than its FIN:
        the FIN is placed there, so the stream ends without a false gap of
        one byte and the connection can close by its FINs. Only a guess
        until then: bytes that come at or past it undo it (``_data``), and
        the anomaly is told at the close (``_flush``).
        """
        half = flow.halves[direction]
        half.fin_off = half.next_off
        half.fin_lost = ts

    def _flush(
        self, flow: _Flow, direction: Direction, ts: int, events: list[StreamEvent]
    ) -> None:
        """At close: every hole becomes a gap, held-back bytes go out in order."""
        half = flow.halves[direction]
        while half.pending:
            hole = half.pending[0][0] - half.next_off
            if hole > 0:
                self._gap(flow, direction, ts, hole, events)
            self._drain(flow, direction, ts, events)
        if (
            half.fin_off is None
            and half.acked == half.next_off + 1
            and flow.halves[1 - direction].fin_off is not None
        ):
            # The peer closed first and acknowledged one sequence number
            # past this side's bytes: its FIN, lost (see _fin_lost). Judged
            # only now, when nothing more can come to undo it.
            self._fin_lost(flow, direction, ts)
        if half.fin_lost is not None:
            side = "client" if direction == Direction.CLIENT else "server"
            self._anomaly(
                flow,
                direction,
                half.fin_lost,
                "tcp_fin_missing",
                f"the {side}'s FIN is not in the capture; the peer acknowledged it",
                events,
            )
        # Bytes proven sent past the last seen: by the FIN's place, else by
        # the peer's acknowledgment.
        proven = half.fin_off if half.fin_off is not None else half.acked
        if proven > half.next_off:
            self._gap(flow, direction, ts, proven - half.next_off, events)

    # -- reporting ------------------------------------------------------

    def _mismatch(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        offset: int,
        size: int,
        events: list[StreamEvent],
    ) -> None:
        self.stats.overlap_mismatches += 1
        self._anomaly(
            flow,
            direction,
            ts,
            "tcp_overlap_mismatch",
            f"{size} bytes at offset {offset} differ from the copy seen first; "
            "first copy kept",
            events,
        )

    def _anomaly(
        self,
        flow: _Flow,
        direction: Direction,
        ts: int,
        kind: str,
        detail: str,
        events: list[StreamEvent],
    ) -> None:
        events.append(StreamAnomaly(flow.conn, direction, ts, kind, detail))


def _held(pieces: list[_Piece]) -> int:
    return sum(len(data) for _, _, data in pieces if data is not None)


def _piece_start(piece: _Piece) -> int:
    return piece[0]


def _piece_end_after(piece: _Piece) -> int:
    # bisect key: the first piece whose end lies past a start overlaps it.
    return piece[1] - 1
