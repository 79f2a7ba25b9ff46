"""Live packets in, rows out as soon as they are final: the live analysis loop.

``LiveAnalyzer`` runs the offline path (``decode_at``, ``Reassembler``,
``SessionTracker``) on packets as they are captured. It writes each row
through ``on_row`` once the row can no longer change: commands when their
reply is in, transactions when they have ended, anomalies when seen, and
the session row when its connection closes. Every ``SessionHook`` is then
called with the finished session (the monitor's totals), and the detectors
see it too: their alerts are written as rows of the ``alerts`` table.

``run`` is the loop around it: wait for packets, feed them, and on every
tick close idle connections by the clock, so a silent connection does not
wait for someone else's packet. It owns no terminal and no signals: the
caller says when to stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from analysis.detect import AlertEngine, Rules
from analysis.pipeline import IMPLICIT_TLS_PORTS, SessionTracker
from analysis.records import SessionResult
from analysis.session import SessionBuilder
from capture.decode import DecodeStats, decode_at
from capture.live import LiveSource
from capture.pcapfile import RawPacket
from capture.pcapwriter import RotatingWriter
from capture.reassembly import Reassembler
from capture.stream import CloseReason, StreamEvent

log = logging.getLogger(__name__)

NS = 1_000_000_000
RowHook = Callable[[str, object], None]  # table name, record
SessionHook = Callable[[SessionResult], None]


@dataclass(slots=True)
class _Written:
    """How many of a session's rows of each table were written already."""

    transactions: int = 0
    commands: int = 0
    anomalies: int = 0


class LiveAnalyzer:
    """Packets to rows and finished sessions; see the module docstring."""

    def __init__(
        self,
        ports: frozenset[int],
        on_row: RowHook,
        *,
        idle_timeout_s: float = 600.0,
        max_connections: int | None = None,
        hooks: Iterable[SessionHook] = (),
        rules: Rules | None = None,
        implicit_tls_ports: frozenset[int] = IMPLICIT_TLS_PORTS,
    ) -> None:
        self.ports = ports
        self.emit = on_row
        self.hooks = list(hooks)
        self.reassembler = Reassembler(
            ports, idle_timeout_s=idle_timeout_s, max_connections=max_connections
        )
        self.decode_stats = DecodeStats()
        # Those of ``ports`` that speak TLS from the first byte.
        self.tracker = SessionTracker(implicit_tls_ports)
        self.packets = 0  # packets fed, all kinds
        self._written: dict[int, _Written] = {}  # by conn_id
        # The detectors see sessions as they close, which live is close to
        # start order. An alert row is written when its threshold is crossed
        # and again, complete and with the same alert_id, when it is over.
        # What they remember of sessions goes once no connection still open
        # began early enough to need it.
        self.alerts = AlertEngine(
            rules, early=True, horizon=lambda: self.reassembler.earliest_open
        )

    @property
    def active_sessions(self) -> int:
        return self.tracker.open_sessions

    def feed(self, packet: RawPacket) -> None:
        self.packets += 1
        data = packet.data
        segment = decode_at(
            packet.linktype, data, 0, len(data), self.ports, self.decode_stats
        )
        if segment is not None:
            self._apply(self.reassembler.feed(packet.ts, segment))

    def tick(self, now_ns: int) -> None:
        """Close connections idle at ``now_ns``; write rows that became final."""
        self._apply(self.reassembler.expire(now_ns))
        for conn_id, builder in self.tracker.builders.items():
            self._write_settled(conn_id, builder)

    def stop(self) -> None:
        """Close every open session as interrupted, its held-back bytes first.

        The reassembler hands over what it holds back (out-of-order bytes,
        then gaps for the holes) before each close, so nothing captured is
        left out of the rows.
        """
        self._apply(self.reassembler.finish(reason=CloseReason.INTERRUPTED))
        for alert in self.alerts.finish():
            self.emit("alerts", alert)

    # ---------------------------------------------------------------------

    def _apply(self, events: list[StreamEvent]) -> None:
        for event in events:
            result = self.tracker.handle(event)
            if result is not None:
                self._finished(event.conn.conn_id, result)

    def _write_settled(self, conn_id: int, builder: SessionBuilder) -> None:
        transactions, commands = builder.settled()
        written = self._written.setdefault(conn_id, _Written())
        self._write_new(written, "transactions", builder.transactions[:transactions])
        self._write_new(written, "commands", builder.commands[:commands])
        self._write_new(written, "anomalies", builder.anomalies)

    def _write_new(self, written: _Written, table: str, rows: Sequence[object]) -> None:
        done: int = getattr(written, table)
        for row in rows[done:]:
            self.emit(table, row)
        setattr(written, table, max(done, len(rows)))

    def _finished(self, conn_id: int, result: SessionResult) -> None:
        written = self._written.pop(conn_id, _Written())
        self._write_new(written, "transactions", result.transactions)
        self._write_new(written, "commands", result.commands)
        self._write_new(written, "anomalies", result.anomalies)
        for handshake in result.tls:
            self.emit("tls", handshake)
        self.emit("sessions", result.session)
        for alert in self.alerts.feed(result):
            self.emit("alerts", alert)
        for hook in self.hooks:
            hook(result)


@dataclass(slots=True)
class LoopOptions:
    tick_s: float = 0.25  # how often idle connections and the views are handled
    duration_s: float | None = None  # stop after this long; None runs until told


def run(
    source: LiveSource,
    analyzer: LiveAnalyzer,
    should_stop: Callable[[], bool],
    *,
    options: LoopOptions | None = None,
    pcap: RotatingWriter | None = None,
    on_tick: Callable[[], None] | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> None:
    """Capture until ``should_stop()`` or the duration ends, then stop cleanly.

    On the way out the packets still in the kernel rings are read and
    analysed, then every open session is closed as interrupted.
    """
    opts = options or LoopOptions()
    start = clock()
    deadline = None if opts.duration_s is None else start + int(opts.duration_s * NS)
    next_tick = start
    while not should_stop():
        now = clock()
        wait = max(0.0, min(opts.tick_s, (next_tick - now) / NS))
        if deadline is not None:
            wait = min(wait, max(0.0, (deadline - now) / NS))
        _feed(analyzer, pcap, source.wait(wait))
        now = clock()
        if now >= next_tick:
            analyzer.tick(now)
            if pcap is not None:
                pcap.flush()
            if on_tick is not None:
                on_tick()
            next_tick = now + int(opts.tick_s * NS)
        if deadline is not None and now >= deadline:
            break
    _feed(analyzer, pcap, source.drain())
    analyzer.stop()
    if pcap is not None:
        pcap.flush()


def _feed(
    analyzer: LiveAnalyzer,
    pcap: RotatingWriter | None,
    packets: list[tuple[int, RawPacket]],
) -> None:
    for interface, packet in packets:
        if pcap is not None:
            pcap.write(interface, packet.ts, packet.data, packet.wire_len)
        analyzer.feed(packet)
