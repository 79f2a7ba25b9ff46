"""The end of an offline run: spooled sessions into table files and alerts.

``finish`` replays a ``Spool`` once, in table order, and hands every session
to whoever needs it: the detectors, the table files written row by row
(``analysis.rowfiles``), a ``TableBuilder`` when DataFrames are wanted too
(Parquet), and the terminal report's ``ReportDigest``. Only one session is
in memory at a time unless a builder is given, and, unless the caller keeps
them, no alert either: their rows wait in a scratch file
(``analysis.alertfile``) until the end puts them in order.

Rows come out exactly as ``TableBuilder.build`` orders them: sessions by
start, then session id (``Spool.replay``), each session's own rows as
``analysis.rowfiles.SessionRows`` orders them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from analysis.alertfile import AlertFile, AlertFileError
from analysis.detect import Alert, AlertEngine
from analysis.detecthelp import REST_SHARE, DetectHelper
from analysis.records import SessionResult
from analysis.rowfiles import TableFiles
from analysis.spool import Replayed, Spool

if TYPE_CHECKING:
    from analysis.focus import Picks
    from analysis.tables import SmtpTables, TableBuilder
    from analysis.views import ReportDigest


@dataclass(slots=True)
class Finished:
    """What ``finish`` saw: counts for the summary, and the alerts if kept."""

    sessions: int = 0
    # Every alert in table order, when ``finish`` was asked to keep them.
    alerts: list[Alert] = field(default_factory=list)
    # Observations the detectors forgot before their window ended, under a
    # flood of distinct clients (AlertEngine.singles_forgotten).
    forgotten: int = 0


def finish(
    spool: Spool,
    *,
    files: TableFiles | None = None,
    builder: TableBuilder | None = None,
    digest: ReportDigest | None = None,
    helper: bool = False,
    keep_alerts: bool = True,
    on_alert: Callable[[Alert], None] | None = None,
    picks: Picks | None = None,
) -> Finished:
    """Replay ``spool`` into the detectors, ``files``, ``builder`` and ``digest``.

    The detectors run with the spool's rules. ``files`` gets every row of
    every table, alerts last; the caller commits them. It takes the rows
    the spool stored when their format matches, and encodes them itself
    otherwise (the spool must then keep results). ``builder`` gets each
    session as analysed, so that its ``build`` gives the same tables; pass
    it the returned alerts to spare it running the detectors again.
    ``digest`` gets each session as the tables show it, for the report
    (the spool must then keep results), and each alert. ``helper``: judge
    some of the detectors in a forked process meanwhile
    (``analysis.detecthelp``), when there are enough sessions for it to
    pay; the alerts are the same. ``keep_alerts``: return every alert;
    otherwise none is held until the end, their rows wait in a scratch
    file beside the spool's (``analysis.alertfile``). ``on_alert`` is
    called with each alert as it is made, in no particular order.
    ``picks`` gets what ``digest`` would (the spool must keep results),
    and keeps the sessions ``read --session`` asked for.
    """
    helping = DetectHelper(spool) if helper else None
    parked: AlertFile | None = None
    try:
        if files is not None and not keep_alerts:
            parked = _alert_file(spool, files)
        hooks = [] if on_alert is None else [on_alert]
        if picks is not None:
            hooks.append(picks.add_alert)
        alerts = _Alerts([] if keep_alerts else None, parked, digest, hooks)
        if helping is not None and not helping.start():
            helping = None
        share = REST_SHARE if helping is not None else None
        engine = AlertEngine(spool.rules, share=share)
        done = Finished()
        stored_rows = files is not None and files.format is spool.rows
        for replayed in spool.replay():
            done.sessions += 1
            alerts.take(engine.feed_evidence(replayed.start, replayed.evidence))
            if builder is not None:
                builder.add(_result(replayed))
            if digest is not None:
                digest.add(replayed.with_extra())
            if picks is not None:
                picks.add(replayed.with_extra())
            if files is None:
                continue
            if stored_rows and not replayed.extra and replayed.rows is not None:
                files.write_text(replayed.rows)
            else:
                files.write_session(replayed.with_extra())
        alerts.take(engine.drain())
        done.forgotten = engine.singles_forgotten
        if helping is not None:
            alerts.take(helping.alerts())
            done.forgotten += helping.forgotten

        # The alerts table, in its order: by first_seen, then alert_id.
        if alerts.kept is not None:
            alerts.kept.sort(key=lambda a: (a.first_seen, a.alert_id))
            done.alerts = alerts.kept
            if files is not None:
                files.write("alerts", alerts.kept)
        elif files is not None and parked is not None:
            for text in parked.texts():
                files.write_encoded("alerts", text)
    finally:
        if helping is not None:
            helping.stop()
        if parked is not None:
            parked.close()
    return done


def _alert_file(spool: Spool, files: TableFiles) -> AlertFile:
    """A scratch file beside the spool's for the alerts' rows."""
    try:
        scratch = spool.scratch_file()
    except OSError as exc:  # a SpoolError, which would name the spool
        raise AlertFileError(exc, spool.directory) from exc
    return AlertFile(files.encoder("alerts"), scratch, spool.directory)


class _Alerts:
    """Where ``finish`` hands each alert as it is made: the list of those
    kept, the scratch file of those parked, the report's digest, the
    caller's hooks."""

    def __init__(
        self,
        kept: list[Alert] | None,
        parked: AlertFile | None,
        digest: ReportDigest | None,
        hooks: list[Callable[[Alert], None]],
    ) -> None:
        self.kept = kept
        self._parked = parked
        self._digest = digest
        self._hooks = hooks

    def take(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            if self.kept is not None:
                self.kept.append(alert)
            if self._parked is not None:
                self._parked.add(alert)
            if self._digest is not None:
                self._digest.add_alert(alert)
            for hook in self._hooks:
                hook(alert)


def build_tables(spool: Spool) -> SmtpTables:
    """The spooled sessions as DataFrames, as ``read_captures`` returns them.

    The spool must keep results (the default).
    """
    from analysis.tables import TableBuilder

    builder = TableBuilder(spool.stats, rules=spool.rules)
    done = finish(spool, builder=builder)
    return builder.build(done.alerts)


def _result(replayed: Replayed) -> SessionResult:
    if replayed.result is None:
        raise ValueError("a TableBuilder needs a spool that keeps results")
    return replayed.result
