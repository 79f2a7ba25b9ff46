"""Captures in, finished SMTP sessions out: the offline analysis loop.

Reads capture files through ``capture.source``, feeds each connection's byte
streams to a ``SessionBuilder`` and yields one ``SessionResult`` per
connection as it closes, in close order. Memory follows the connections open
at once, not the size of the input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from analysis.records import SessionResult
from analysis.session import SessionBuilder
from analysis.tls.decrypt import DecryptedStreams, decrypt_captures
from capture.source import SourceStats, iter_stream_events
from capture.stream import (
    StreamAnomaly,
    StreamClosed,
    StreamData,
    StreamGap,
    StreamOpened,
)

log = logging.getLogger(__name__)

DEFAULT_PORTS: frozenset[int] = frozenset({25, 465, 587, 2525})
IMPLICIT_TLS_PORTS: frozenset[int] = frozenset({465})

ProgressHook = Callable[[str, int, int | None], None]  # path, done, total bytes


@dataclass(slots=True)
class RunStats:
    captures: int = 0
    packets: int = 0
    bytes: int = 0
    smtp_packets: int = 0
    errors: list[str] = field(default_factory=list)  # one message per bad input
    # True when libpcap's BPF filter skipped the packets off the SMTP ports,
    # so that ``packets`` counts only those on them.
    filtered: bool = False
    # Reading stopped on Ctrl-C; the sessions open then were closed early.
    interrupted: bool = False


def analyze(
    paths: Sequence[str],
    ports: frozenset[int] = DEFAULT_PORTS,
    *,
    stats: RunStats | None = None,
    progress: ProgressHook | None = None,
    shard: tuple[int, int] = (0, 1),
    tls_keylog: str | None = None,
) -> Iterator[SessionResult]:
    """Yield every SMTP session found in ``paths``, read in the given order.

    A capture that cannot be read, or is damaged part way, adds a message to
    ``stats.errors``; the sessions decoded before the damage are still
    yielded, and reading goes on with the next capture. ``shard`` (k, n)
    keeps only the connections that hash to worker k of n.

    With ``tls_keylog`` (an NSS key log), tshark first decrypts the sessions
    whose keys are in it (``analysis.tls.decrypt``; raises ``DecryptError``
    when tshark is missing) and the SMTP inside them is parsed too.
    """
    run = stats if stats is not None else RunStats()
    source = SourceStats()
    builders: dict[int, SessionBuilder] = {}
    all_ports = frozenset(ports)
    decrypted = (
        decrypt_captures(paths, tls_keylog, all_ports)
        if tls_keylog is not None
        else DecryptedStreams()
    )

    try:
        for event in iter_stream_events(
            list(paths), all_ports, stats=source, progress=progress, shard=shard
        ):
            if isinstance(event, StreamData):
                builder = builders.get(event.conn.conn_id)
                if builder is not None:
                    builder.data(event.direction, event.data, event.ts)
            elif isinstance(event, StreamOpened):
                conn = event.conn
                key = (
                    conn.client_ip,
                    conn.client_port,
                    conn.server_ip,
                    conn.server_port,
                )
                builders[conn.conn_id] = SessionBuilder(
                    conn, IMPLICIT_TLS_PORTS, decrypted.take(key, conn.first_ts)
                )
            elif isinstance(event, StreamClosed):
                builder = builders.pop(event.conn.conn_id, None)
                if builder is not None:
                    result = builder.close(event.ts, str(event.reason))
                    log.info(
                        "session %s closed (%s)",
                        result.session.session_id,
                        event.reason,
                    )
                    yield result
            elif isinstance(event, StreamGap):
                builder = builders.get(event.conn.conn_id)
                if builder is not None:
                    builder.gap(event.direction, event.size, event.ts)
            elif isinstance(event, StreamAnomaly):
                builder = builders.get(event.conn.conn_id)
                if builder is not None:
                    builder.tcp_anomaly(event.ts, event.kind, event.detail)
    except KeyboardInterrupt:
        # Ctrl-C (a user ending "tcpdump -w - | smtpscope read -"): what was
        # read so far is kept, the open sessions marked as cut short.
        run.interrupted = True
        for builder in list(builders.values()):
            yield builder.close(builder.conn.last_ts, "interrupted")
        builders.clear()
    finally:
        run.captures += source.captures
        run.packets += source.packets
        run.bytes += source.bytes
        run.smtp_packets += source.smtp_packets
        run.filtered = run.filtered or source.filtered
        run.errors.extend(str(error) for error in source.errors)
