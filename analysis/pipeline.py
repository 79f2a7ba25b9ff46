"""Captures in, finished SMTP sessions out: the offline analysis loop.

Reads capture files through ``capture.source``, feeds each connection's byte
streams to a ``SessionBuilder`` and yields one ``SessionResult`` per
connection as it closes, in close order. Memory follows the connections open
at once, not the size of the input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from analysis.holding import Held, settled, vouched
from analysis.records import SessionResult
from analysis.session import SessionBuilder
from analysis.tls.decrypt import (
    DecryptedStreams,
    decrypt_captures,
    keylog_client_randoms,
)
from capture.source import (
    ClockHook,
    SourceStats,
    handle_stream_events,
    in_time_order,
)
from capture.stream import (
    Connection,
    StreamAnomaly,
    StreamClosed,
    StreamData,
    StreamEvent,
    StreamGap,
    StreamOpened,
)

log = logging.getLogger(__name__)

DEFAULT_PORTS: frozenset[int] = frozenset({25, 465, 587, 2525})
IMPLICIT_TLS_PORTS: frozenset[int] = frozenset({465})
# Connections open at once, past which the longest silent are evicted: far
# above what a mail server holds (thousands), and about 100 MB when all are
# a SYN flood's unanswered SYNs (1 KB each), 150 MB when all are handshakes
# that never sent a byte.
DEFAULT_MAX_CONNECTIONS = 100_000

ProgressHook = Callable[[str, int, int | None], None]  # path, done, total bytes


@dataclass(slots=True)
class RunStats:
    captures: int = 0
    packets: int = 0  # all kinds, unless ``filtered``
    bytes: int = 0
    # TCP segments on the SMTP ports, each once: the same on libpcap's path
    # and the Python reader's, with one process or several.
    smtp_packets: int = 0
    errors: list[str] = field(default_factory=list)  # one message per bad input
    # Captures of which nothing could be read (not opened, no capture at
    # all, cut within the file header), as named; each has its message in
    # errors.
    unread: list[str] = field(default_factory=list)
    # True when libpcap's BPF filter read a capture to its end (one handed
    # over to the Python reader is read and counted whole): it skipped the
    # packets off the SMTP ports uncounted, so ``packets`` is then only
    # those that passed it, summed over the -j workers (some pass every
    # worker's filter): no count of all packets.
    filtered: bool = False
    # Reading stopped on Ctrl-C; the sessions open then were closed early.
    interrupted: bool = False
    # Connections closed early (close "evicted") to stay within
    # max_connections open at once.
    evicted: int = 0
    # Captures that began before those read before them had reached.
    rewinds: list[str] = field(default_factory=list)
    # Packets stamped well ahead of the packets after them, read at their
    # connection's time (ReassemblyStats.clock_outliers).
    clock_outliers: int = 0
    # TCP segments on the SMTP ports whose payload the capture's snap length
    # cut short, and the payload bytes it left out: the streams hold gaps
    # there (ReassemblyStats.snap_cut).
    snap_cut: int = 0
    snap_cut_bytes: int = 0
    # Packets on the SMTP ports whose TCP header the capture cut off, lost
    # whole (DecodeStats.header_cut). Under -j a count of one process's:
    # each decodes every packet the Python reader reads, its share or not.
    header_cut: int = 0
    # Connections opened from an SMTP port to another (backscatter of SYNs
    # sent with a server's address): followed, but no sessions.
    handshakes_from_smtp_ports: int = 0
    # With a key log: sessions whose TLS handshake completed, and how many
    # of them the key log decrypted: a session is decrypted once tshark
    # gave some of its application data.
    tls_completed: int = 0
    tls_decrypted: int = 0
    # Of those not decrypted, the ones the key log holds secrets for (their
    # ClientHello's random is in it): no application data followed their
    # handshake (a capture cut short), or none could be decrypted. The rest
    # had no secrets in the key log.
    tls_keyed: int = 0


def analyze(
    paths: Sequence[str],
    ports: frozenset[int] = DEFAULT_PORTS,
    *,
    stats: RunStats | None = None,
    progress: ProgressHook | None = None,
    shard: tuple[int, int] = (0, 1),
    tls_keylog: str | None = None,
    clock: ClockHook | None = None,
    max_connections: int | None = None,
    implicit_tls_ports: frozenset[int] = IMPLICIT_TLS_PORTS,
) -> Generator[SessionResult, None, None]:
    """Yield every SMTP session found in ``paths``, read in the time order
    of their first packets (``capture.source.in_time_order``).

    A capture that cannot be read, or is damaged part way, adds a message to
    ``stats.errors``; the sessions decoded before the damage are still
    yielded, and reading goes on with the next capture. ``shard`` (k, n)
    keeps only the connections that hash to worker k of n; ``clock`` then
    agrees with the other workers on what depends on their connections: at
    the start of each capture and at the end (``handle_stream_events``).
    ``max_connections`` bounds the connections open at once (see
    ``capture.reassembly.Reassembler``). Connections to a server port in
    ``implicit_tls_ports`` are TLS from the first byte; only those also in
    ``ports`` are read at all.

    With ``tls_keylog`` (an NSS key log), tshark first decrypts the sessions
    whose keys are in it (``analysis.tls.decrypt``; raises ``DecryptError``
    when tshark is missing) and the SMTP inside them is parsed too.
    """
    run = stats if stats is not None else RunStats()
    source = SourceStats()
    all_ports = frozenset(ports)
    decrypted = DecryptedStreams()
    keyed: frozenset[bytes] = frozenset()
    counted = _as_they_come
    if tls_keylog is not None:
        decrypted = decrypt_captures(paths, tls_keylog, implicit_tls_ports)
        keyed = keylog_client_randoms(tls_keylog)
        counted = _count_decrypted
    tracker = SessionTracker(frozenset(implicit_tls_ports), decrypted=decrypted)

    try:
        yield from counted(
            handle_stream_events(
                in_time_order(paths),
                tracker.handle,
                all_ports,
                stats=source,
                progress=progress,
                shard=shard,
                clock=clock,
                max_connections=max_connections,
            ),
            run,
            keyed,
        )
    except KeyboardInterrupt:
        # Ctrl-C (a user ending "tcpdump -w - | smtpscope read -"): what was
        # read so far is kept, the open sessions marked as cut short.
        run.interrupted = True
        yield from counted(tracker.close_all("interrupted"), run, keyed)
    finally:
        run.captures += source.captures
        run.packets += source.packets
        run.bytes += source.bytes
        run.smtp_packets += source.smtp_packets
        run.filtered = run.filtered or source.filtered
        run.evicted += source.reassembly.evicted
        run.handshakes_from_smtp_ports += source.reassembly.handshakes_from_smtp_ports
        run.rewinds.extend(source.rewinds)
        run.clock_outliers += source.reassembly.clock_outliers
        run.snap_cut += source.reassembly.snap_cut
        run.snap_cut_bytes += source.reassembly.snap_cut_bytes
        run.header_cut += source.decode.header_cut
        run.errors.extend(str(error) for error in source.errors)
        run.unread.extend(source.unread)


def after_stop(
    results: Generator[SessionResult, None, None],
) -> Iterator[SessionResult]:
    """The rest of ``analyze``'s ``results`` after a stop (KeyboardInterrupt)
    that came outside them, while their consumer handled a session (spooled
    it, say): the sessions still open, closed as interrupted, as a stop
    while reading gives.

    The stop is raised in the reading where it stands, so that its own
    handling runs. Nothing when the reading had ended.
    """
    try:
        first = results.throw(KeyboardInterrupt())
    except (KeyboardInterrupt, StopIteration):
        return
    yield first
    yield from results


def _as_they_come(
    results: Iterable[SessionResult], run: RunStats, keyed: frozenset[bytes]
) -> Iterable[SessionResult]:
    return results


def _count_decrypted(
    results: Iterable[SessionResult], run: RunStats, keyed: frozenset[bytes]
) -> Iterator[SessionResult]:
    """``results``, counting in ``run`` how many TLS sessions a key log
    could have decrypted, how many it did, and of the rest how many it holds
    secrets for (``keyed``, the client randoms in it): a key log from
    another run decrypts nothing, silently but for these counts, and so
    does one of this run where the capture ends after the handshakes."""
    for result in results:
        session = result.session
        if session.tls_handshake == "completed":
            run.tls_completed += 1
            run.tls_decrypted += session.tls_decrypted
            if not session.tls_decrypted and result.client_random in keyed:
                run.tls_keyed += 1
        yield result


class SessionTracker:
    """Stream events to sessions: one ``SessionBuilder`` per open connection.

    Shared by the offline loop and live capture, so both turn the same
    events into the same rows.
    """

    def __init__(
        self,
        implicit_tls_ports: frozenset[int] = IMPLICIT_TLS_PORTS,
        decrypted: DecryptedStreams | None = None,
    ) -> None:
        self._implicit_tls = implicit_tls_ports
        # Plaintext of TLS sessions tshark decrypted with a key log, if any.
        self._decrypted = decrypted if decrypted is not None else DecryptedStreams()
        self.builders: dict[int, SessionBuilder] = {}  # by conn_id, opening order
        # Connections that have not said anything yet, by conn_id: their
        # builder is made when they do, or at their close. Most of a SYN
        # flood never does, and a builder is most of what an open
        # connection costs (about 1.5 KB of 3).
        self.silent: dict[int, Connection] = {}
        # What a connection sent before the server accepted it, by conn_id
        # (analysis.holding): read once it has, reported if it never did.
        self._held: dict[int, Held] = {}

    @property
    def open_sessions(self) -> int:
        return len(self.builders) + len(self.silent)

    def handle(self, event: StreamEvent) -> SessionResult | None:
        """Apply ``event``; return the session it closed, if it closed one."""
        if isinstance(event, StreamData):
            conn, direction, ts, data = event  # one step for the four fields
            builder = self.builders.get(conn.conn_id)
            if builder is None:
                held = self._holding(conn)
                # A capture of the client's side alone never settles: past
                # what a SYN can carry, it is read on the client's word, if
                # its acknowledgments moved (analysis.holding.vouched).
                if held is not None and not (vouched(conn) and held.overflows(data)):
                    held.data(direction, data, ts)
                    return None
                builder = self._woken(conn)
            if builder is not None:
                builder.data(direction, data, ts)
        elif isinstance(event, StreamOpened):
            # One opened from an SMTP port (Connection.from_smtp_port) makes
            # no session: unknown here, its events go nowhere.
            if not event.conn.from_smtp_port:
                self.silent[event.conn.conn_id] = event.conn
        elif isinstance(event, StreamClosed):
            conn = event.conn
            if self._traceless(conn):
                return None
            builder = self._builder(conn)
            if builder is not None:
                del self.builders[conn.conn_id]
                reason = str(event.reason)
                result = builder.close(event.ts, reason)
                log.info("session %s closed (%s)", result.session.session_id, reason)
                return result
        elif isinstance(event, StreamGap):
            target = self._target(event.conn)
            if target is not None:
                target.gap(event.direction, event.size, event.ts)
        elif isinstance(event, StreamAnomaly):
            target = self._target(event.conn)
            if target is not None:
                target.tcp_anomaly(event.ts, event.kind, event.detail)
        return None

    def _target(self, conn: Connection) -> Held | SessionBuilder | None:
        """Where a gap or TCP anomaly of ``conn`` goes: with what it holds
        while it is not settled, else to its builder."""
        if conn.conn_id not in self.builders:
            held = self._holding(conn)
            if held is not None:
                return held
        return self._builder(conn)

    def _holding(self, conn: Connection) -> Held | None:
        """Where a silent connection's events wait while it is not
        settled (analysis.holding); None once it is, or for one that makes
        no session."""
        if settled(conn) or conn.conn_id not in self.silent:
            return None
        held = self._held.get(conn.conn_id)
        if held is None:
            held = self._held[conn.conn_id] = Held()
        return held

    def _traceless(self, conn: Connection) -> bool:
        """Whether ``conn`` closes without a session to show: it never spoke
        (no byte, no gap, no anomaly) and its capture missed its start (no
        SYN, no SYN-ACK). Stray ACKs or RSTs of a connection that ended
        before the capture, or an ACK scan: rows of nothing, which would
        swell the session counts."""
        if conn.conn_id not in self.silent or not conn.traceless:
            return False
        del self.silent[conn.conn_id]
        return True

    def _builder(self, conn: Connection) -> SessionBuilder | None:
        """The connection's builder, made now if it was silent; at the
        close, what it held is read if the server accepted it."""
        builder = self.builders.get(conn.conn_id)
        return builder if builder is not None else self._woken(conn)

    def _woken(self, conn: Connection) -> SessionBuilder | None:
        """The builder of a silent connection, made now; None if unknown."""
        if self.silent.pop(conn.conn_id, None) is None:
            return None
        # What a builder reads of the connection at its start (addresses,
        # first packet time) is fixed from the connection's first packet,
        # so made late it is the builder made at the start.
        key = (conn.client_ip, conn.client_port, conn.server_ip, conn.server_port)
        builder = SessionBuilder(
            conn, self._implicit_tls, self._decrypted.take(key, conn.first_ts)
        )
        self.builders[conn.conn_id] = builder
        held = self._held.pop(conn.conn_id, None)
        if held is not None:
            # Settled by now, or closing: the client's word is then all
            # there will be (a capture of its side alone).
            held.release(builder, vouched(conn))
        return builder

    def close_all(self, reason: str) -> list[SessionResult]:
        """Close every open session now, at its last packet, as ``reason``."""
        for conn in list(self.silent.values()):
            self._woken(conn)
        # In opening order, silent ones included.
        builders = sorted(self.builders.items())
        self.builders.clear()
        return [b.close(b.conn.last_ts, reason) for _, b in builders]
