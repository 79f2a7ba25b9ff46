"""The end of an offline run: spooled sessions into table files and alerts.

``finish`` replays a ``Spool`` once, in table order, and hands every session
to whoever needs it: the detectors, the table files written row by row
(``analysis.rowfiles``), and a ``TableBuilder`` when DataFrames are wanted
too (the terminal report, Parquet). Only one session is in memory at a time
unless a builder is given.

Rows come out exactly as ``TableBuilder.build`` orders them: sessions by
start, then session id; each session's transactions by index, its commands
and anomalies by time, its TLS handshakes by start, in the order the
session produced them when those are equal.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analysis.detect import Alert, AlertEngine, Rules
from analysis.records import SessionResult
from analysis.rowfiles import TableFiles
from analysis.spool import Spool

if TYPE_CHECKING:
    from analysis.tables import SmtpTables, TableBuilder

# How each session's child rows are ordered (the sort is stable).
_CHILD_ORDER: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("transactions", operator.attrgetter("index")),
    ("commands", operator.attrgetter("ts")),
    ("anomalies", operator.attrgetter("ts")),
    ("tls", operator.attrgetter("start")),
)


@dataclass(slots=True)
class Finished:
    """What ``finish`` saw: counts for the summary, and the alerts."""

    sessions: int = 0
    alerts: list[Alert] = field(default_factory=list)


def finish(
    spool: Spool,
    *,
    rules: Rules | None = None,
    files: TableFiles | None = None,
    builder: TableBuilder | None = None,
) -> Finished:
    """Replay ``spool`` into the detectors, ``files`` and ``builder``.

    ``files`` gets every row of every table, alerts last; the caller
    commits them. ``builder`` gets each session as analysed, so that its
    ``build`` gives the same tables; pass it the returned alerts to spare
    it running the detectors again.
    """
    engine = AlertEngine(rules)
    done = Finished()
    alerts: list[Alert] = []
    for replayed in spool.replay():
        done.sessions += 1
        alerts += engine.feed(replayed.result)
        if builder is not None:
            builder.add(replayed.result)
        if files is not None:
            _write_session(files, replayed.with_extra())
    alerts += engine.finish()
    alerts.sort(key=lambda a: (a.first_seen, a.alert_id))
    if files is not None:
        files.write("alerts", alerts)
    done.alerts = alerts
    return done


def _write_session(files: TableFiles, result: SessionResult) -> None:
    files.write("sessions", (result.session,))
    for table, key in _CHILD_ORDER:
        rows = getattr(result, table)
        if rows:
            files.write(table, sorted(rows, key=key))


def build_tables(spool: Spool, rules: Rules | None = None) -> SmtpTables:
    """The spooled sessions as DataFrames, as ``read_captures`` returns them."""
    from analysis.tables import TableBuilder

    builder = TableBuilder(spool.stats, rules=rules)
    done = finish(spool, rules=rules, builder=builder)
    return builder.build(done.alerts)
