"""What TCP reassembly hands to its consumer: ordered bytes per direction.

The reassembler (``capture.reassembly``) turns TCP segments into these events.
They are the only contract between ``capture`` and ``analysis``: the analysis
side never sees a packet, only a connection's two byte streams, the holes in
them, the trouble found while putting them together, and how each ended.

Invariants a consumer may rely on:
- every connection gets exactly one ``StreamOpened`` first and one
  ``StreamClosed`` last; ``StreamData``/``StreamGap``/``StreamAnomaly`` come
  in between, in capture order;
- within one direction, ``StreamData`` and ``StreamGap`` together cover the
  byte stream exactly once and in order: no byte is delivered twice, and a
  hole is reported as a gap of known size, never filled with zeros;
- timestamps are integer nanoseconds since the Unix epoch (UTC).

The events are NamedTuples, immutable and cheap to build: the reassembler
makes one for nearly every segment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class Direction(enum.IntEnum):
    """Which way bytes flow, relative to the side that opened the connection."""

    CLIENT = 0  # client to server
    SERVER = 1  # server to client


class CloseReason(enum.StrEnum):
    FIN = "fin"  # both sides sent FIN (or one did and the capture saw it acked)
    RST = "rst"
    IDLE = "idle"  # no packet for longer than the idle timeout
    END_OF_CAPTURE = "end_of_capture"
    REUSED = "reused"  # a new SYN arrived on the same 4-tuple
    INTERRUPTED = "interrupted"  # reading was stopped (Ctrl-C) while it was open
    # Closed early to make room: more connections were open than allowed.
    EVICTED = "evicted"


@dataclass(slots=True)
class Connection:
    """One TCP connection, as far as the capture shows it.

    Mutable on purpose: the handshake timestamps are filled in as packets
    arrive. ``client`` is the side that sent the SYN; when the handshake was
    not seen, the side talking to a well-known SMTP port is taken as the
    server, and failing that the side with the lower port.
    """

    conn_id: int  # order of first appearance in the capture, from 0
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    first_ts: int
    syn_ts: int | None = None
    synack_ts: int | None = None
    ack_ts: int | None = None  # the client's ACK that completes the handshake
    last_ts: int = 0
    packets: list[int] = field(default_factory=lambda: [0, 0])  # per Direction
    # TCP payload bytes seen per direction, retransmissions included, counted
    # at the length the IP header gives (so bytes the snap length cut count).
    wire_bytes: list[int] = field(default_factory=lambda: [0, 0])
    # The client acknowledged something without a SYN: it had the SYN-ACK,
    # whether or not the capture has it (one side captured). Where the
    # capture has it, only an acknowledgment of it counts (see
    # Reassembler._handshake).
    client_acked: bool = False
    # With no SYN-ACK captured, the client acknowledged more than one point
    # of the server's stream: the server was sending. A flood's data behind
    # its SYN guesses one number (see analysis.holding).
    client_ack_moved: bool = False
    # Where neither SYN nor SYN-ACK was captured: the server sent a plain
    # ACK (no SYN, no RST), so it knew the connection and took the client's
    # bytes. A stack answers a segment of a connection it does not know
    # with a RST (RFC 9293 3.10.7.1), as a spoofed client's get.
    server_acked: bool = False
    # Where neither SYN nor SYN-ACK was captured: the client sent a segment
    # that went on from its earlier bytes, in order. A spoofed segment is one
    # of its kind; a client the capture shows alone (one side captured, or a
    # server slow to answer) sends on.
    client_continued: bool = False
    # Opened from an SMTP port to another port (a SYN from port 25, or a
    # SYN-ACK sent to it: backscatter): no SMTP connection of a client, and
    # no session (the reassembler still follows it, so that its later
    # packets are not taken for another connection).
    from_smtp_port: bool = False

    @property
    def handshake_seen(self) -> bool:
        return self.syn_ts is not None

    @property
    def handshake_completed(self) -> bool:
        """Whether the connection got past its TCP handshake, as far as the
        capture shows.

        With a SYN or SYN-ACK captured: the client's ACK of the SYN-ACK, or
        any later acknowledgment from it, or a byte from the server. With
        the SYN-ACK captured, an ACK whose number does not acknowledge it
        (a spoofed flood's guess) is none. Bytes in a SYN (TCP Fast Open)
        are no proof: a flood may carry them, and the server has not
        answered them. Without either (caught after the handshake): a byte
        from the server, or bytes from the client that the server answered
        with an ACK, or that went on in a second segment, or whose
        acknowledgments moved as a sending server makes them (a capture of
        the client's side alone). One segment answered with a RST only, or
        not at all, is a spoofed client's as likely; a stray ACK or RST
        proves nothing.
        """
        if self.wire_bytes[Direction.SERVER]:
            return True
        if self.syn_ts is None and self.synack_ts is None:
            return bool(self.wire_bytes[Direction.CLIENT]) and (
                self.server_acked or self.client_continued or self.client_ack_moved
            )
        return self.ack_ts is not None or self.client_acked

    @property
    def traceless(self) -> bool:
        """No handshake seen (no SYN, no SYN-ACK) and no byte either way: a
        stray ACK or RST, whose connection ended before the capture began."""
        return (
            self.syn_ts is None
            and self.synack_ts is None
            and not self.wire_bytes[0]
            and not self.wire_bytes[1]
        )


class StreamOpened(NamedTuple):
    conn: Connection


class StreamData(NamedTuple):
    conn: Connection
    direction: Direction
    ts: int  # capture time of the segment that completed these bytes
    data: bytes


class StreamGap(NamedTuple):
    """Bytes that were never seen: the stream resumes ``size`` bytes later."""

    conn: Connection
    direction: Direction
    ts: int
    size: int


class StreamAnomaly(NamedTuple):
    """Something odd at the TCP level, kept as data for the anomalies table."""

    conn: Connection
    direction: Direction | None
    ts: int
    kind: str  # short snake_case name, e.g. "tcp_overlap_mismatch"
    detail: str


class StreamClosed(NamedTuple):
    conn: Connection
    # The connection's last packet, whatever the reason: an idle close is
    # decided only after the timeout, but nothing of it was seen after that
    # packet. (``Reassembler.finish`` may be told another time.)
    ts: int
    reason: CloseReason


StreamEvent = StreamOpened | StreamData | StreamGap | StreamAnomaly | StreamClosed
