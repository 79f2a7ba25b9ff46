"""Bytes a connection sends before the server has accepted it.

A client's bytes reach the server's application only once the TCP
handshake has completed: data in a SYN (TCP Fast Open, or a flood that puts
a payload in its SYNs to pass filters) is delivered with the server's
SYN-ACK, data sent without any acknowledgment never. Read at once, the
data of SYNs nobody answered became commands, and high alerts, on the
(spoofed) addresses that sent them. So what a connection sends before
its handshake is settled is held here, with the TCP gaps and anomalies
that came with it, in order, and handed to its session builder once the
server accepted the connection, or reported as unread if it never did.

Settled means completed (``Connection.handshake_completed``), and not only
by the client's word: a client segment acknowledging something before the
server's SYN-ACK was captured shows the handshake completed only if the
SYN-ACK, when it comes, agrees (a flood's ACK behind its SYN guesses it).
In a capture of the client's side alone no SYN-ACK ever comes: its bytes
are read once MAX_HELD_BYTES are held, or at the close, if the client's
acknowledgments moved forward as a sending server makes them (``vouched``).
A connection caught after its start, with neither SYN nor SYN-ACK
captured, is settled once the server acknowledged it, or the client's
acknowledgments moved, or it sent a second segment going on from the
first: a segment from a spoofed address gets a RST at most, and comes
alone.

Each held segment keeps its capture time and is handed over with it, so
that what it carried is stamped as it would have been unheld (found by a
user: in a capture of the client's side alone, where a whole session may
be held, every command took the time of the first).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Final, NamedTuple

from analysis.session import SessionBuilder
from analysis.smtp.parser import without_credentials
from analysis.smtp.syntax import show_bytes
from capture.stream import Connection, Direction

# What a connection may hold: a SYN carries one segment (an MSS, 1,460
# bytes on Ethernet), and a client's whole first flight of commands fits
# well within it. Past it a connection whose handshake the client alone
# vouches for (a capture of one side) is read; one nobody vouches for keeps
# holding the first bytes only, the rest as a gap.
MAX_HELD_BYTES: Final = 4096
# And at most this many of its TCP anomalies (a RST out of the window, say).
MAX_HELD_ANOMALIES: Final = 100
# Held segments that keep their own capture time, 16 bytes each: 1 KiB
# beside the 4 KiB of MAX_HELD_BYTES. Past it a segment joins the one
# before, whose time becomes its own (the lines ending in it are stamped
# right, those before it late). A client's first flight of commands is a
# few segments; with 256, connections each holding one-byte segments took
# 4.2 KB more apiece (found in review), 420 MB at 100,000 of them.
MAX_HELD_RUNS: Final = 64

_SERVER: Final = Direction.SERVER


def settled(conn: Connection) -> bool:
    """Whether ``conn``'s bytes may be read: the server accepted it."""
    if not conn.handshake_completed:
        return False
    if conn.wire_bytes[_SERVER] or conn.synack_ts is not None:
        return True
    # Completed on the client's word alone: only where its SYN was not
    # captured either (caught after its start) is no SYN-ACK still due.
    return conn.syn_ts is None


def vouched(conn: Connection) -> bool:
    """Whether ``conn``'s bytes may be read once no SYN-ACK can refute the
    client any more (past MAX_HELD_BYTES, or at the close): settled, or
    its acknowledgments moved, as only a server that sends makes them (a
    flood behind its SYNs guesses one number, and found in review, sent a
    RST before the SYN-ACK to be read at the close)."""
    return settled(conn) or (conn.handshake_completed and conn.client_ack_moved)


class _Data(NamedTuple):
    direction: Direction
    data: bytearray  # the segments that came in a row, joined
    ts: int  # the first's (each one's is in Held's runs)


class _Gap(NamedTuple):
    direction: Direction
    size: int
    ts: int


class _Anomaly(NamedTuple):
    ts: int
    kind: str
    detail: str


class Held:
    """What one connection sent before it was settled, in order."""

    __slots__ = ("_lengths", "_times", "actions", "anomalies", "size", "unread")

    def __init__(self) -> None:
        self.actions: list[_Data | _Gap | _Anomaly] = []  # as the events came
        # The held segments of all _Data entries, in order: each one's
        # length and capture time (segments of the same time are one). Two
        # arrays, not a tuple a segment (about 100 bytes).
        self._lengths = array("q")
        self._times = array("q")
        self.size = 0  # bytes held
        self.unread = 0  # bytes past MAX_HELD_BYTES, kept as a gap
        self.anomalies = 0  # TCP anomalies that came, kept or not

    def overflows(self, data: bytes) -> bool:
        """Whether ``data`` would take it past MAX_HELD_BYTES."""
        return self.size + len(data) > MAX_HELD_BYTES

    def data(self, direction: Direction, data: bytes, ts: int) -> None:
        room = MAX_HELD_BYTES - self.size
        kept, rest = data[:room], len(data) - min(room, len(data))
        if kept:
            last = self.actions[-1] if self.actions else None
            # One entry for the segments that came in a row (found in
            # review: a flood of one-byte segments held 545 KB each).
            if isinstance(last, _Data) and last.direction == direction:
                last.data.extend(kept)
                if ts == self._times[-1] or len(self._times) >= MAX_HELD_RUNS:
                    self._lengths[-1] += len(kept)
                    self._times[-1] = ts
                else:
                    self._lengths.append(len(kept))
                    self._times.append(ts)
            else:
                self.actions.append(_Data(direction, bytearray(kept), ts))
                self._lengths.append(len(kept))
                self._times.append(ts)
            self.size += len(kept)
        if rest:
            self.unread += rest
            self.gap(direction, rest, ts)

    def gap(self, direction: Direction, size: int, ts: int) -> None:
        last = self.actions[-1] if self.actions else None
        if isinstance(last, _Gap) and last.direction == direction:
            self.actions[-1] = last._replace(size=last.size + size)  # one gap
        else:
            self.actions.append(_Gap(direction, size, ts))

    def tcp_anomaly(self, ts: int, kind: str, detail: str) -> None:
        # Past MAX_HELD_ANOMALIES only counted (found in review: a SYN and
        # two million out-of-window RSTs held 516 MB): the session builder
        # keeps no more than a hundred rows of a kind anyway.
        if self.anomalies < MAX_HELD_ANOMALIES:
            self.actions.append(_Anomaly(ts, kind, detail))
        self.anomalies += 1

    def release(self, builder: SessionBuilder, accepted: bool) -> None:
        """Hand everything to ``builder`` if the server ``accepted`` the
        connection (``vouched``); else only the TCP anomalies, and a note of
        the bytes."""
        first: _Data | None = None
        runs = zip(self._lengths, self._times, strict=True)
        for action in self.actions:
            if isinstance(action, _Anomaly):
                builder.tcp_anomaly(*action)
            elif not accepted:
                if first is None and isinstance(action, _Data):
                    first = action
            elif isinstance(action, _Data):
                for data, ts in _segments(action.data, runs):
                    builder.data(action.direction, data, ts)
            else:
                builder.gap(*action)
        if accepted or first is None:
            return
        # Credentials first, then escaped: hidden in the escaped text, a
        # secret and the line after it would be one word (\r\n).
        shown = show_bytes(without_credentials(bytes(first.data)))
        builder.tcp_anomaly(
            first.ts,
            "data_without_handshake",
            f"{self.size + self.unread:,} bytes sent before the server was "
            f"seen to accept the connection, not read: {shown}",
        )


def _segments(
    data: bytearray, runs: Iterator[tuple[int, int]]
) -> Iterator[tuple[bytes, int]]:
    """``data`` cut into the segments it was held from, each with its
    capture time, taken from ``runs`` (Held's lengths and times)."""
    start = 0
    while start < len(data):
        length, ts = next(runs)
        yield bytes(data[start : start + length]), ts
        start += length
