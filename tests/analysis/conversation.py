"""One conversation through a SessionBuilder, for tests of the rows it gives."""

from __future__ import annotations

from analysis.records import SessionResult
from analysis.session import SessionBuilder
from capture.stream import Connection, Direction

C, S = Direction.CLIENT, Direction.SERVER


def session(
    steps: list[tuple[Direction, bytes]],
    port: int = 25,
    *,
    start_seen: bool = False,
    client: str = "192.0.2.1",
    server: str = "192.0.2.2",
    start: int = 0,
) -> SessionResult:
    """The session of ``steps`` from ``client`` to ``server`` on ``port``
    (465 is implicit TLS), one a nanosecond after ``start``, closed by FIN
    after them. Caught after its start unless ``start_seen``: then the
    capture holds its SYN, at ``start``."""
    conn = Connection(start, client, 40000, server, port, first_ts=start)
    if start_seen:
        conn.syn_ts = start
    builder = SessionBuilder(conn, frozenset({465}))
    for ts, (side, data) in enumerate(steps, start=start + 1):
        builder.data(side, data, ts)
    return builder.close(start + len(steps) + 1, "fin")
