"""One conversation through a SessionBuilder, for tests of the rows it gives."""

from __future__ import annotations

from analysis.records import SessionResult
from analysis.session import SessionBuilder
from capture.stream import Connection, Direction

C, S = Direction.CLIENT, Direction.SERVER


def session(
    steps: list[tuple[Direction, bytes]], port: int = 25, *, start_seen: bool = False
) -> SessionResult:
    """The session of ``steps`` to ``port`` (465 is implicit TLS), one a
    nanosecond, closed by FIN after them. Caught after its start unless
    ``start_seen``: then the capture holds its SYN, at 0."""
    conn = Connection(0, "192.0.2.1", 40000, "192.0.2.2", port, first_ts=0)
    if start_seen:
        conn.syn_ts = 0
    builder = SessionBuilder(conn, frozenset({465}))
    for ts, (side, data) in enumerate(steps, start=1):
        builder.data(side, data, ts)
    return builder.close(len(steps) + 1, "fin")
