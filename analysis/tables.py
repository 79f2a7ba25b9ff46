"""Finished sessions into pandas DataFrames: the public Python API.

``read_captures`` reads capture files and returns the tables described in
``analysis.schema``: five with rows per session or per thing a session holds
(``tls`` among them), and ``alerts``, which the detectors of
``analysis.detect`` compute from all sessions at ``build`` time.
``TableBuilder`` does the same one ``SessionResult`` at a time, so the CLI
can stream sessions and parallel workers' results can be merged.

Invariants of every ``SmtpTables``:
- each table has exactly the columns and dtypes of ``analysis.schema``, in
  that order, even when it has no rows, and a default ``RangeIndex``;
- sessions are ordered by ``start``, then ``session_id``; the other tables
  follow that session order, then ``index`` (transactions) or ``ts``
  (commands, anomalies), keeping the order the session produced them in for
  equal timestamps. The order does not depend on the order sessions closed
  in or on how results were merged;
- alerts are ordered by ``first_seen``, then ``alert_id``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis import downgrade, pipeline
from analysis.detect import Alert, Rules, detect
from analysis.records import SessionResult
from analysis.rowfiles import ROW_ORDER, SESSION_TABLES
from analysis.schema import TABLES, Column, Kind

StrPath = str | os.PathLike[str]

# A child row sorts by its session, then by ROW_ORDER (transactions by their
# MAIL order, commands and anomalies by time); SESSION_TABLES are the tables
# filled from session results ("alerts" is computed from all of them). Both
# are shared with the files written row by row, which must match.

# numpy's NaT is the smallest int64; missing timestamps are stored as it.
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class SmtpTables:
    """The tables of one analysis run, and what the run read."""

    sessions: pd.DataFrame
    transactions: pd.DataFrame
    commands: pd.DataFrame
    anomalies: pd.DataFrame
    tls: pd.DataFrame
    stats: pipeline.RunStats
    alerts: pd.DataFrame

    def frames(self) -> dict[str, pd.DataFrame]:
        """Table name to DataFrame, in schema order, for exporters."""
        return {name: getattr(self, name) for name in TABLES}


class TableBuilder:
    """Collects ``SessionResult`` objects column by column.

    Values are kept as plain Python lists until ``build``, which sorts and
    converts them; adding a session is cheap and never touches pandas. The
    results themselves are kept too, for the detectors, which ``build`` runs
    over all of them in start order (``rules``: None for the defaults).
    """

    def __init__(
        self, stats: pipeline.RunStats | None = None, rules: Rules | None = None
    ) -> None:
        self.stats = stats if stats is not None else pipeline.RunStats()
        self.rules = rules
        self._values: dict[str, dict[str, list[Any]]] = {
            table: {column.name: [] for column in TABLES[table]}
            for table in SESSION_TABLES
        }
        # Per table, the arrival number of the session each row came from.
        self._owner: dict[str, list[int]] = {table: [] for table in SESSION_TABLES}
        self._results: list[SessionResult] = []
        self._sessions_added = 0

    def __len__(self) -> int:
        return self._sessions_added

    def add(self, result: SessionResult) -> None:
        owner = self._sessions_added
        self._sessions_added += 1
        self._append("sessions", [result.session], owner)
        self._append("transactions", result.transactions, owner)
        self._append("commands", result.commands, owner)
        self._append("anomalies", result.anomalies, owner)
        self._append("tls", result.tls, owner)
        self._results.append(result)

    def add_all(self, results: Iterable[SessionResult]) -> None:
        for result in results:
            self.add(result)

    def merge(self, other: TableBuilder) -> None:
        """Append everything ``other`` collected, stats included."""
        offset = self._sessions_added
        self._results.extend(other._results)
        for table in SESSION_TABLES:
            for name, values in other._values[table].items():
                self._values[table][name].extend(values)
            self._owner[table].extend(o + offset for o in other._owner[table])
        self._sessions_added += other._sessions_added
        _add_stats(self.stats, other.stats)

    def build(self, alerts: list[Alert] | None = None) -> SmtpTables:
        """The tables, with the findings that need every session added.

        Those findings (``analysis.downgrade``) go into copies of the
        collected values, so building twice gives the same tables.
        ``alerts``, when the caller already ran the detectors over the same
        sessions (``analysis.offline.finish``), are used as they are.
        """
        values = self._values
        owners = self._owner
        results = self._results
        extra = downgrade.find(values["sessions"])
        if extra:
            values = {table: dict(columns) for table, columns in values.items()}
            owners = dict(owners)
            counts = list(values["sessions"]["anomalies"])
            anomalies = {name: list(v) for name, v in values["anomalies"].items()}
            anomaly_owners = list(owners["anomalies"])
            for owner, record in extra:
                counts[owner] += 1
                for column in TABLES["anomalies"]:
                    anomalies[column.name].append(getattr(record, column.attribute))
                anomaly_owners.append(owner)
            values["sessions"]["anomalies"] = counts
            # The detectors see them too (starttls_downgrade), in copies.
            results = list(results)
            for owner, record in extra:
                result = results[owner]
                results[owner] = dataclasses.replace(
                    result,
                    session=dataclasses.replace(
                        result.session, anomalies=result.session.anomalies + 1
                    ),
                    anomalies=[*result.anomalies, record],
                )
            values["anomalies"] = anomalies
            owners["anomalies"] = anomaly_owners
        session_rank = self._session_rank()
        frames = {
            table: self._frame(
                values, table, self._row_order(table, session_rank, values, owners)
            )
            for table in SESSION_TABLES
        }
        if alerts is None:
            alerts = detect(results, self.rules)
        return SmtpTables(stats=self.stats, alerts=_alert_frame(alerts), **frames)

    def _append(self, table: str, records: Sequence[object], owner: int) -> None:
        values = self._values[table]
        for column in TABLES[table]:
            values[column.name].extend(getattr(r, column.attribute) for r in records)
        self._owner[table].extend([owner] * len(records))

    def _session_rank(self) -> list[int]:
        """Position in the sessions table of each session, by arrival number."""
        starts = self._values["sessions"]["start"]
        ids = self._values["sessions"]["session_id"]
        order = sorted(range(len(starts)), key=lambda i: (starts[i], ids[i], i))
        rank = [0] * len(order)
        for position, arrival in enumerate(order):
            rank[arrival] = position
        return rank

    def _row_order(
        self,
        table: str,
        session_rank: list[int],
        values: dict[str, dict[str, list[Any]]],
        all_owners: dict[str, list[int]],
    ) -> list[int]:
        owners = all_owners[table]
        if table == "sessions":
            return sorted(range(len(owners)), key=lambda i: session_rank[owners[i]])
        keys = values[table][ROW_ORDER[table]]

        def key(i: int) -> tuple[int, Any]:
            return session_rank[owners[i]], keys[i]

        # Python's sort is stable, so equal keys keep arrival order.
        return sorted(range(len(owners)), key=key)

    def _frame(
        self, all_values: dict[str, dict[str, list[Any]]], table: str, order: list[int]
    ) -> pd.DataFrame:
        values = all_values[table]
        data = {
            column.name: column_series(column, [values[column.name][i] for i in order])
            for column in TABLES[table]
        }
        return pd.DataFrame(data, index=pd.RangeIndex(len(order)))


def read_captures(
    paths: StrPath | Sequence[StrPath],
    ports: Iterable[int] | None = None,
    *,
    progress: pipeline.ProgressHook | None = None,
    rules: Rules | None = None,
    tls_keylog: StrPath | None = None,
    implicit_tls_ports: Iterable[int] | None = None,
) -> SmtpTables:
    """Read capture files and return their SMTP sessions as DataFrames.

    ``paths`` is one path or a sequence of them, read in order; ``-`` reads a
    capture from standard input. ``ports`` is the exact set of server ports
    taken as SMTP; ``None`` means ``pipeline.DEFAULT_PORTS`` (25, 465, 587,
    2525). To add a port to the defaults, pass
    ``pipeline.DEFAULT_PORTS | {2526}``.

    ``implicit_tls_ports`` is the exact set of server ports that speak TLS
    from the first byte (implicit TLS, as SMTP submission on 465 does);
    ``None`` means ``pipeline.IMPLICIT_TLS_PORTS`` (465). A set given is
    taken as SMTP too, whether in ``ports`` or not: ``{465, 10465}`` adds
    10465 to the ports read, as TLS.

    A damaged capture does not raise: the sessions decoded before the damage
    are in the tables and ``stats.errors`` says what went wrong and where.
    Column names and dtypes are listed in ``analysis.schema``. ``rules``
    (from ``analysis.detect.load_rules``) replaces the default detection
    rules.

    ``tls_keylog`` names an NSS key log (SSLKEYLOGFILE): sessions whose keys
    are in it are decrypted with tshark and the SMTP inside them is parsed
    (``commands.tls`` and ``sessions.tls_decrypted`` are then true). Without
    tshark this raises ``analysis.tls.decrypt.DecryptError``.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    port_set = pipeline.DEFAULT_PORTS if ports is None else frozenset(ports)
    if implicit_tls_ports is None:
        # The default set leaves ``ports`` as given: a caller who left 465
        # out of them does not want it read.
        tls_set = pipeline.IMPLICIT_TLS_PORTS
    else:
        tls_set = frozenset(implicit_tls_ports)
        port_set |= tls_set
    builder = TableBuilder(rules=rules)
    builder.add_all(
        pipeline.analyze(
            [os.fspath(p) for p in paths],
            port_set,
            stats=builder.stats,
            progress=progress,
            tls_keylog=None if tls_keylog is None else os.fspath(tls_keylog),
            implicit_tls_ports=tls_set,
        )
    )
    return builder.build()


def empty_tables(stats: pipeline.RunStats | None = None) -> SmtpTables:
    """Tables with every column and dtype and no rows."""
    return TableBuilder(stats).build()


def _alert_frame(alerts: list[Alert]) -> pd.DataFrame:
    data = {
        column.name: column_series(
            column, [getattr(a, column.attribute) for a in alerts]
        )
        for column in TABLES["alerts"]
    }
    return pd.DataFrame(data, index=pd.RangeIndex(len(alerts)))


def column_series(column: Column, values: list[Any]) -> pd.Series:
    """A column's cells as the records hold them, in the column's dtype."""
    return _CONVERTERS[column.kind](values)


def _timestamps(values: list[Any]) -> pd.Series:
    ns = np.array([_NAT if v is None else v for v in values], dtype=np.int64)
    return pd.Series(ns.view("datetime64[ns]")).dt.tz_localize("UTC")


def _floats(values: list[Any]) -> pd.Series:
    return pd.Series(
        np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    )


def _lists(values: list[Any]) -> pd.Series:
    # Filled one cell at a time: given a list of equal-length lists, numpy
    # would build a 2-D array instead of an array of lists.
    cells = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        cells[i] = list(value)
    return pd.Series(cells, dtype=object)


_CONVERTERS: dict[Kind, Callable[[list[Any]], pd.Series]] = {
    Kind.TIMESTAMP: _timestamps,
    Kind.FLOAT: _floats,
    Kind.INT: lambda values: pd.Series(np.array(values, dtype=np.int64)),
    Kind.NULLABLE_INT: lambda values: pd.Series(pd.array(values, dtype="Int64")),
    Kind.BOOL: lambda values: pd.Series(np.array(values, dtype=np.bool_)),
    Kind.NULLABLE_BOOL: lambda values: pd.Series(pd.array(values, dtype="boolean")),
    Kind.STRING: lambda values: pd.Series(pd.array(values, dtype="string")),
    Kind.STRING_LIST: _lists,
    Kind.INT_LIST: _lists,
}


def _add_stats(total: pipeline.RunStats, part: pipeline.RunStats) -> None:
    # Generic over RunStats' fields so that new counters merge without a
    # change here: numbers add up, lists concatenate.
    for f in dataclasses.fields(total):
        mine, theirs = getattr(total, f.name), getattr(part, f.name)
        if isinstance(mine, bool):
            setattr(total, f.name, mine or theirs)
        elif isinstance(mine, list):
            mine.extend(theirs)
        elif isinstance(mine, int | float):
            setattr(total, f.name, mine + theirs)
        else:
            raise TypeError(f"RunStats.{f.name}: cannot merge {type(mine).__name__}")
