"""Terminal views of the tables: a summary panel, alerts and sessions.

Everything that came off the wire reaches rich only as a ``Text`` built by
``analysis.escape.terminal_text``: never as a markup string, so neither
control characters nor ``[bold]``-style markup from a peer can change what
the terminal shows. Labels and numbers made here are ``Text`` as well, so
there is no string cell anywhere for rich to interpret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from analysis.detect import Alert, Severity
from analysis.escape import terminal_text
from analysis.pipeline import RunStats
from analysis.records import (
    SessionRecord,
    SessionResult,
    content_verdict,
    used_tls,
)
from analysis.severity import SEVERITY_STYLE

if TYPE_CHECKING:
    import pandas as pd

    from analysis.tables import SmtpTables

MISSING = "-"


@dataclass(frozen=True, slots=True)
class _SessionColumn:
    header: str
    justify: JustifyMethod = "left"
    # On a terminal too narrow for every column, the column with the highest
    # rank goes first; rank 0 is never dropped.
    drop_rank: int = 0
    max_width: int | None = None  # wider cells end in an ellipsis
    # A column that may shrink to this width, with an ellipsis, before any
    # column is dropped; 0 for one that keeps the width of its widest cell.
    shrinks_to: int = 0


_SESSION_COLUMNS: tuple[_SessionColumn, ...] = (
    _SessionColumn("start"),
    # Second, as Zeek puts its uid: what every table, alert and --session
    # name a session by, so a row can be followed (a new user's point: the
    # table was a dead end). Dropped last, and shown whole.
    _SessionColumn("session_id", drop_rank=1),
    # With its port, as the server: the port is what a tcpdump filter or
    # a firewall log needs to find the connection.
    _SessionColumn("client"),
    # The server goes after helo, auth and close: an analyst's first
    # question of a session, after the client (a new user's point).
    _SessionColumn("server", drop_rank=2),
    _SessionColumn("helo", drop_rank=4, max_width=24, shrinks_to=10),
    _SessionColumn("tls"),
    _SessionColumn("auth", drop_rank=3),
    _SessionColumn("mails", "right"),
    _SessionColumn("accepted", "right"),
    _SessionColumn("close", drop_rank=5),
    _SessionColumn("anomalies", "right"),
)

# Shorter words for the session builder's AUTH results.
_AUTH_RESULTS = {"success": "ok", "failure": "failed", "no_reply": "no reply"}
REPLY_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other")


@dataclass(frozen=True, slots=True)
class Summary:
    """The numbers of the summary panel, computed apart from their layout."""

    captures: int
    packets: int  # all kinds; not all of them when packets_filtered
    errors: int
    packets_filtered: bool  # libpcap skipped the packets off the SMTP ports
    sessions: int
    transactions: int
    messages_accepted: int
    tls_sessions: int
    auth_successes: int  # accepted AUTH commands, all sessions together
    # AUTH commands refused for their credentials (535), all sessions together
    auth_failures: int
    # Greetings and replies to commands, by first digit; "other" holds codes
    # outside 200-599, which RFC 5321 4.2.1 does not define.
    reply_classes: dict[str, int] = field(default_factory=dict)
    top_clients: list[tuple[str, int]] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)  # severity -> count
    # The most frequent anomaly kinds, (kind, rows), most frequent first.
    anomaly_kinds: list[tuple[str, int]] = field(default_factory=list)
    tls_decrypted: int = 0  # sessions whose TLS a key log opened
    # TCP segments on the SMTP ports: counted alike by libpcap's path and the
    # Python reader, so the figure means the same whichever read a capture.
    smtp_packets: int = 0
    # Connections opened from an SMTP port: not sessions
    # (RunStats.handshakes_from_smtp_ports).
    handshakes_from_smtp_ports: int = 0
    # Packets on the SMTP ports the snap length cut short (RunStats.snap_cut).
    snap_cut: int = 0
    # Whether it cut TCP headers too (RunStats.header_cut: no count under -j).
    header_cut: bool = False
    # Reading was stopped part way (RunStats.interrupted): the figures are
    # of what was read until then.
    interrupted: bool = False
    # AUTH commands sent, all sessions together: besides those accepted and
    # refused, those the client cancelled ("*", RFC 4954 4) or that got no
    # reply.
    auth_attempts: int = 0
    # AUTH commands refused for another reason (504, 534, 538, 454, 501 ...).
    auth_other_refusals: int = 0


def summarize(tables: SmtpTables, top: int = 5) -> Summary:
    import pandas as pd  # loaded already: the tables are its DataFrames

    sessions = tables.sessions
    # The verdict on a DATA message answers no command row of its own, so
    # it is taken from the transactions, as records.content_verdict does.
    transactions = tables.transactions
    verdicts = transactions.loc[
        (transactions["data_method"] == "DATA")
        & transactions["message_complete"].notna(),
        "data_code",
    ]
    codes = pd.concat(
        [sessions["greeting_code"], tables.commands["reply_code"], verdicts],
        ignore_index=True,
    ).dropna()
    return Summary(
        captures=tables.stats.captures,
        packets=tables.stats.packets,
        errors=len(tables.stats.errors),
        packets_filtered=tables.stats.filtered,
        sessions=len(sessions),
        transactions=len(tables.transactions),
        messages_accepted=int(sessions["messages_accepted"].sum()),
        tls_sessions=int(  # records.used_tls, over the column
            (
                (sessions["tls"] != "none") & (sessions["tls_handshake"] != "failed")
            ).sum()
        ),
        auth_successes=int(sessions["auth_successes"].sum()),
        auth_failures=int(sessions["auth_failures"].sum()),
        auth_attempts=int(sessions["auth_attempts"].sum()),
        auth_other_refusals=int(sessions["auth_other_refusals"].sum()),
        reply_classes=_reply_classes(int(code) for code in codes),
        top_clients=_top_clients(sessions, top),
        alerts=_alert_counts(tables.alerts["severity"]),
        anomaly_kinds=_top_kinds(tables.anomalies, top),
        tls_decrypted=int(sessions["tls_decrypted"].sum()),
        smtp_packets=tables.stats.smtp_packets,
        handshakes_from_smtp_ports=tables.stats.handshakes_from_smtp_ports,
        snap_cut=tables.stats.snap_cut,
        header_cut=bool(tables.stats.header_cut),
        interrupted=tables.stats.interrupted,
    )


class ReportDigest:
    """What the report needs, gathered one session at a time.

    The report counts over every session but shows only the first ``limit``
    sessions (all for None). Building every table as DataFrames for it made
    a run's memory grow with the capture; this keeps the counts, the
    sessions shown, and a count per client address (for the top clients).
    ``add`` must be given the sessions in table order, each with the
    anomalies found across sessions (``Replayed.with_extra``), and
    ``add_alert`` every alert, in any order, of which it keeps the counts
    and those shown; ``report`` then shows what ``report`` of the whole
    tables would.
    """

    def __init__(
        self, limit: int | None = 20, top: int = 5, *, table: bool = True
    ) -> None:
        self.limit = limit
        self.top = top
        # Whether the session table is shown: without it (read --session),
        # no session is kept, even with no limit.
        self._table = table
        self.sessions = 0
        self._shown: list[SessionRecord] = []
        # The alerts: a count per severity, and those that may be shown.
        self.alerts = 0
        self._severities = _severity_counts()
        self._alerts_shown = _FirstAlerts(limit)
        self._transactions = 0
        self._accepted = 0
        self._tls = 0
        self._decrypted = 0
        self._auth_successes = 0
        self._auth_failures = 0
        self._auth_attempts = 0
        self._auth_other_refusals = 0
        self._replies = dict.fromkeys(REPLY_CLASSES, 0)
        self._clients: dict[str, int] = {}
        self._kinds: dict[str, int] = {}

    def add(self, result: SessionResult) -> None:
        session = result.session
        self.sessions += 1
        if self._table and (self.limit is None or len(self._shown) < self.limit):
            self._shown.append(session)
        self._transactions += len(result.transactions)
        self._accepted += session.messages_accepted
        self._tls += used_tls(session.tls, session.tls_handshake)
        self._decrypted += session.tls_decrypted
        self._auth_successes += session.auth_successes
        self._auth_failures += session.auth_failures
        self._auth_attempts += session.auth_attempts
        self._auth_other_refusals += session.auth_other_refusals
        self._clients[session.client_ip] = self._clients.get(session.client_ip, 0) + 1
        for anomaly in result.anomalies:
            self._kinds[anomaly.kind] = self._kinds.get(anomaly.kind, 0) + 1

        # The replies as summarize counts them: the greeting, every
        # command's, and the verdict on each DATA message.
        replies = self._replies
        codes = [command.reply_code for command in result.commands]
        codes.append(session.greeting_code)
        codes += [content_verdict(t) for t in result.transactions]
        for code in codes:
            if code is not None:
                replies[_reply_class(code)] += 1

    def add_alert(self, alert: Alert) -> None:
        """Count ``alert``, in any order, and keep it if it may be shown."""
        self.alerts += 1
        self._severities[alert.severity] += 1
        self._alerts_shown.add(alert)

    def summary(self, stats: RunStats) -> Summary:
        return Summary(
            captures=stats.captures,
            packets=stats.packets,
            errors=len(stats.errors),
            packets_filtered=stats.filtered,
            sessions=self.sessions,
            transactions=self._transactions,
            messages_accepted=self._accepted,
            tls_sessions=self._tls,
            auth_successes=self._auth_successes,
            auth_failures=self._auth_failures,
            auth_attempts=self._auth_attempts,
            auth_other_refusals=self._auth_other_refusals,
            reply_classes=dict(self._replies),
            top_clients=_ranked(self._clients, self.top),
            alerts=_severities_with_alerts(self._severities),
            anomaly_kinds=_ranked(self._kinds, self.top),
            tls_decrypted=self._decrypted,
            smtp_packets=stats.smtp_packets,
            handshakes_from_smtp_ports=stats.handshakes_from_smtp_ports,
            snap_cut=stats.snap_cut,
            header_cut=bool(stats.header_cut),
            interrupted=stats.interrupted,
        )

    def report(
        self,
        stats: RunStats,
        *,
        summary: bool = True,
        width: int | None = None,
        sessions: bool = True,
    ) -> Group:
        """``sessions``: with the session table (``read --session`` shows
        the sessions it asks for in its place)."""
        return _report(
            self.summary(stats) if summary else None,
            _record_rows(self._alerts_shown.first(), _ALERT_COLUMNS),
            _record_rows(self._shown, _SESSION_FIELDS),
            self.sessions if sessions else 0,
            limit=self.limit,
            width=width,
            alerts_total=self.alerts,
        )


class _FirstAlerts:
    """The first ``limit`` alerts in the report's order (all for None),
    from alerts given in any order.

    A flood of distinct clients makes an alert per client; the report shows
    ``limit`` of them. At most twice that many are held: past it, the
    first ``limit`` are kept and the rest let go. Alerts equal in the
    report's order stay in the order they came, as in a stable sort.
    """

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._held: list[tuple[tuple[int, int, str, int], Alert]] = []
        self._came = 0

    def add(self, alert: Alert) -> None:
        rank = Severity(alert.severity).rank
        self._held.append(
            ((-rank, alert.first_seen, alert.alert_id, self._came), alert)
        )
        self._came += 1
        if self._limit is not None and len(self._held) > 2 * self._limit:
            self._cut()

    def first(self) -> list[Alert]:
        self._cut()
        return [alert for _, alert in self._held]

    def _cut(self) -> None:
        self._held.sort(key=lambda held: held[0])
        if self._limit is not None:
            del self._held[self._limit :]


# What the report shows of an alert and of a session.
_ALERT_COLUMNS = ("alert_id", "severity", "kind", "first_seen", "summary")
_SESSION_FIELDS = (
    "start",
    "session_id",
    "client_ip",
    "client_port",
    "server_ip",
    "server_port",
    "helo",
    "tls",
    "auth_mechanism",
    "auth_result",
    "transactions",
    "messages_accepted",
    "close",
    "anomalies",
)


def summary_panel(summary: Summary) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, Text]] = [("captures", _count_text(summary.captures))]
    if summary.interrupted:
        # First: every figure below is of part of the input (a new user's
        # point: only stderr said so).
        stopped = Text("stopped before the end: figures of what was read", "red")
        rows.insert(0, ("partial", stopped))
    # All packets are known only where libpcap's filter read no capture: it
    # skips the others uncounted, and a total of some captures' packets and
    # others' SMTP packets would be neither. Every reader counts the packets
    # on the SMTP ports alike, so that figure is always shown. The row stays,
    # saying why it has no count (a new user missed it on a large capture).
    if summary.packets_filtered:
        uncounted = Text("not counted (libpcap's filter kept the SMTP ports only)")
        rows.append(("packets", uncounted))
    else:
        rows.append(("packets", _count_text(summary.packets)))
    rows.append(("packets on SMTP ports", _count_text(summary.smtp_packets)))
    if summary.errors:
        rows.append(("damaged inputs", Text(str(summary.errors), style="red")))
    if summary.snap_cut or summary.header_cut:
        # Beside the counts they make wrong: stderr says more.
        parts = [f"{summary.snap_cut:,} packets"] if summary.snap_cut else []
        if summary.header_cut:
            parts.append("TCP headers")
        cut = f"{' and '.join(parts)} on SMTP ports (snap length)"
        rows.append(("cut short", Text(cut, style="red")))
    if summary.handshakes_from_smtp_ports:
        # Shown where there were some: they explain packets without sessions.
        count = f"{summary.handshakes_from_smtp_ports:,}"
        opened = Text(f"{count} connections, not sessions")
        rows.append(("opened from SMTP ports", opened))
    rows += [
        ("sessions", _count_text(summary.sessions)),
        ("transactions", _count_text(summary.transactions)),
        ("messages accepted", _count_text(summary.messages_accepted)),
        ("replies", _reply_text(summary.reply_classes)),
        ("TLS", _tls_text(summary)),
        ("AUTH", _auth_text(summary)),
        ("top clients", _clients_text(summary.top_clients)),
        ("alerts", _alerts_text(summary.alerts)),
        ("anomalies", _kinds_text(summary.anomaly_kinds)),
    ]
    for label, value in rows:
        grid.add_row(Text(label), value)
    return Panel(grid, title=Text("smtpscope summary"), expand=False)


# A row as plain values: timestamps as timezone-aware datetimes (pandas'
# Timestamp is one), a missing value as None.
_Row = Mapping[str, Any]


def sessions_table(shown: Sequence[_Row], total: int, width: int | None) -> Table:
    """One row per session shown, the first of ``total``.

    With ``width``, columns that would not fit are left out, least useful
    first, and the caption says which; the rest keep readable widths.
    """
    dates = {row["start"].date() for row in shown}
    one_date = len(dates) == 1
    rows = [_session_cells(row, time_only=one_date) for row in shown]
    keep = _columns_that_fit(rows, width)

    title = f"sessions on {dates.pop()} (UTC)" if one_date else "sessions (UTC)"
    table = Table(
        title=Text(title),
        box=None,
        padding=(0, 1, 0, 0),  # one space between columns, none at the edges
        pad_edge=False,
        header_style="bold underline",
    )
    for i in keep:
        column = _SESSION_COLUMNS[i]
        table.add_column(
            Text(column.header),
            justify=column.justify,
            max_width=column.max_width,
            # rich narrows wrapping columns first; cells without spaces are
            # cut with an ellipsis instead of being wrapped.
            no_wrap=not column.shrinks_to,
            overflow="ellipsis",
        )
    for cells in rows:
        table.add_row(*(cells[i] for i in keep))

    notes = []
    hidden = total - len(shown)
    if hidden:
        notes.append(f"… and {hidden:,} more (--limit 0 shows all; -o writes all)")
    left_out = [c.header for i, c in enumerate(_SESSION_COLUMNS) if i not in keep]
    if left_out:
        notes.append(f"too narrow to show: {', '.join(left_out)}")
    if notes:
        table.caption = Text("; ".join(notes))
    return table


def alerts_table(
    alerts: Sequence[_Row],
    limit: int | None,
    width: int | None = None,
    total: int | None = None,
) -> Table:
    """Alerts, most severe first, then by when they began; ``limit`` of them
    (all for None), of ``total`` (``alerts`` may hold only the first ones).

    Where ``width`` leaves the summary too little room beside the other
    columns (a summary two letters wide says nothing), each alert takes two
    lines instead: severity, kind and time, then the summary below them.
    """
    order = sorted(
        alerts,
        key=lambda row: (
            -Severity(row["severity"]).rank,
            row["first_seen"],
            row["alert_id"],
        ),
    )
    shown = order if limit is None else order[:limit]
    lines = [_alert_line(row) for row in shown]
    table = Table(
        title=Text("alerts, most severe first (UTC)"),
        box=None,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        header_style="bold underline",
    )
    beside = sum(max(len(cells[k]) for cells in lines) + 1 for k in range(3))
    if width is None or width - beside >= _SUMMARY_MIN_WIDTH:
        for header in ("severity", "kind", "first seen", "summary"):
            table.add_column(Text(header), no_wrap=header != "summary")
        for severity, kind, first, summary in lines:
            table.add_row(severity, kind, first, summary)
    else:
        table.add_column(Text("severity kind first seen / summary"))
        pad = max(len(cells[0]) for cells in lines)
        for severity, kind, first, summary in lines:
            severity.pad_right(pad - len(severity))
            table.add_row(Text(" ").join((severity, kind, first)))
            table.add_row(Padding(summary, (0, 0, 0, 2)))
    hidden = (len(alerts) if total is None else total) - len(shown)
    if hidden:
        table.caption = Text(
            f"… and {hidden:,} more (--limit 0 shows all; -o writes all)"
        )
    return table


# The narrowest summary column worth showing beside the others.
_SUMMARY_MIN_WIDTH = 30


def _alert_line(row: _Row) -> tuple[Text, Text, Text, Text]:
    severity = Severity(row["severity"])
    first = row["first_seen"]
    if isinstance(first, int):  # from an Alert, not from the table
        first = _utc(first)
    return (
        Text(severity.value, style=SEVERITY_STYLE[severity]),
        Text(str(row["kind"])),
        Text(first.strftime("%Y-%m-%d %H:%M:%S")),
        terminal_text(row["summary"]),
    )


def _plain_rows(frame: pd.DataFrame) -> list[_Row]:
    import pandas as pd  # loaded already: the frame is one of its objects

    return [
        {str(k): None if v is pd.NA else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _record_rows(records: Iterable[object], columns: Iterable[str]) -> list[_Row]:
    """Records as rows; a session's start as a datetime, as in the tables.

    An alert's ``first_seen`` stays nanoseconds: the alerts are sorted by
    it, and a datetime would drop its last three digits.
    """
    rows: list[_Row] = []
    for record in records:
        row = {name: getattr(record, name) for name in columns}
        if "start" in row:
            row["start"] = _utc(row["start"])
        rows.append(row)
    return rows


def _utc(ns: int) -> datetime:
    # Whole seconds, as the views show them: a float of nanoseconds could
    # round up into the next second.
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)


def _columns_that_fit(rows: list[list[Text]], width: int | None) -> list[int]:
    """Indexes of the columns to show in ``width`` terminal cells."""
    widths = []
    for i, column in enumerate(_SESSION_COLUMNS):
        cells = [len(column.header), *(row[i].cell_len for row in rows)]
        widths.append(min(max(cells), column.max_width or max(cells)))
        if column.shrinks_to:
            widths[-1] = min(widths[-1], column.shrinks_to)
    keep = list(range(len(_SESSION_COLUMNS)))
    droppable = sorted(
        (i for i, c in enumerate(_SESSION_COLUMNS) if c.drop_rank),
        key=lambda i: -_SESSION_COLUMNS[i].drop_rank,
    )
    for i in droppable:
        # One space between columns.
        if width is None or sum(widths[k] for k in keep) + len(keep) - 1 <= width:
            break
        keep.remove(i)
    return keep


def _session_cells(row: _Row, *, time_only: bool) -> list[Text]:
    anomalies = int(row["anomalies"])
    start: datetime = row["start"]
    return [
        Text(start.strftime("%H:%M:%S" if time_only else "%Y-%m-%d %H:%M:%S")),
        terminal_text(row["session_id"]),
        terminal_text(_endpoint(row["client_ip"], row["client_port"])),
        terminal_text(_endpoint(row["server_ip"], row["server_port"])),
        terminal_text(_optional(row["helo"]), missing=MISSING),
        terminal_text(row["tls"]),
        _auth_cell(_optional(row["auth_mechanism"]), _optional(row["auth_result"])),
        Text(f"{row['transactions']:,}"),
        Text(f"{row['messages_accepted']:,}"),
        terminal_text(row["close"]),
        Text(f"{anomalies:,}", style="yellow" if anomalies else ""),
    ]


def report(
    tables: SmtpTables,
    *,
    limit: int | None = 20,
    summary: bool = True,
    width: int | None = None,
    sessions: bool = True,
) -> Group:
    """Summary panel (unless ``summary`` is false), alerts, then sessions
    (unless ``sessions`` is false)."""
    shown = tables.sessions if limit is None else tables.sessions.head(limit)
    return _report(
        summarize(tables) if summary else None,
        _plain_rows(tables.alerts),
        _plain_rows(shown),
        len(tables.sessions) if sessions else 0,
        limit=limit,
        width=width,
    )


def _report(
    summary: Summary | None,
    alerts: Sequence[_Row],
    sessions: Sequence[_Row],
    total: int,
    *,
    limit: int | None,
    width: int | None,
    alerts_total: int | None = None,
) -> Group:
    """``sessions``: the first ``limit`` (or all) of ``total`` sessions;
    ``alerts``: all alerts, or the first of ``alerts_total``."""
    parts: list[RenderableType] = []
    if summary is not None:
        parts.append(summary_panel(summary))
    if alerts:
        parts.append(alerts_table(alerts, limit, width, alerts_total))
    if total:
        parts.append(sessions_table(sessions, total, width))
    return Group(*parts)


def print_report(
    console: Console,
    tables: SmtpTables,
    *,
    limit: int | None = 20,
    summary: bool = True,
    sessions: bool = True,
) -> None:
    shown = report(
        tables, limit=limit, summary=summary, width=console.width, sessions=sessions
    )
    console.print(shown)


def _reply_classes(codes: Iterable[int]) -> dict[str, int]:
    counts = dict.fromkeys(REPLY_CLASSES, 0)
    for code in codes:
        counts[_reply_class(code)] += 1
    return counts


def _reply_class(code: int) -> str:
    return f"{code // 100}xx" if 200 <= code <= 599 else "other"


def _top_clients(sessions: pd.DataFrame, top: int) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for ip in sessions["client_ip"].dropna():
        counts[ip] = counts.get(ip, 0) + 1
    return _ranked(counts, top)


def _ranked(counts: Mapping[str, int], top: int) -> list[tuple[str, int]]:
    # Ties broken by name so the panel does not change from run to run.
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def _alert_counts(severities: Iterable[object]) -> dict[str, int]:
    counts = _severity_counts()
    for severity in severities:
        counts[str(severity)] += 1
    return _severities_with_alerts(counts)


def _severity_counts() -> dict[str, int]:
    """A count of alerts per severity, the most severe first, all 0."""
    return {s.value: 0 for s in reversed(Severity)}


def _severities_with_alerts(counts: dict[str, int]) -> dict[str, int]:
    """The severities with alerts, as the summary lists them."""
    return {name: count for name, count in counts.items() if count}


def _alerts_text(counts: dict[str, int]) -> Text:
    if not counts:
        return Text("none")
    text = Text(f"{sum(counts.values()):,} (")
    for i, (name, count) in enumerate(counts.items()):
        if i:
            text.append(", ")
        text.append(f"{count:,} {name}", style=SEVERITY_STYLE[Severity(name)])
    text.append(")")
    return text


def _count_text(value: int) -> Text:
    return Text(f"{value:,}")


def _share_text(part: int, whole: int) -> Text:
    if not whole:
        return Text(MISSING)
    sessions = _plural(whole, "session")
    return Text(f"{part:,} of {whole:,} {sessions} ({100 * part / whole:.0f}%)")


def _reply_text(classes: dict[str, int]) -> Text:
    shown = [f"{name} {count:,}" for name, count in classes.items()]
    if not classes.get("other"):
        shown = shown[:-1]
    return Text("  ".join(shown))


def _auth_text(summary: Summary) -> Text:
    text = Text(f"{summary.auth_successes:,} succeeded, ")
    text.append(
        f"{summary.auth_failures:,} failed {_plural(summary.auth_failures, 'attempt')}",
        style="red" if summary.auth_failures else "",
    )
    # Refused for another reason than the credentials (504 mechanism
    # unknown, 538 encryption required, ...): no failed login, yet not to
    # be lost among the cancelled (found in a user's report: a client
    # trying mechanisms the server lacks showed as failed logins).
    refused = summary.auth_other_refusals
    if refused > 0:
        reasons = "another reason" if refused == 1 else "other reasons"
        text.append(f", {refused:,} refused for {reasons}")
    # Cancelled by the client ("*") or never answered: neither accepted nor
    # refused, and left out of the counts above (found in a new reader's
    # check: 2 AUTH commands in a session, 1 success and no failure shown).
    other = (
        summary.auth_attempts - summary.auth_successes - summary.auth_failures - refused
    )
    if other > 0:
        text.append(f", {other:,} cancelled or unanswered")
    return text


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _top_kinds(anomalies: pd.DataFrame, top: int) -> list[tuple[str, int]]:
    counts = anomalies["kind"].value_counts()
    return _ranked({str(kind): int(count) for kind, count in counts.items()}, top)


def _kinds_text(kinds: list[tuple[str, int]]) -> Text:
    # Named, not only counted: an injection or a downgrade must be seen
    # without opening the anomalies table.
    return _counted(kinds, empty="none")


def _tls_text(summary: Summary) -> Text:
    text = _share_text(summary.tls_sessions, summary.sessions)
    if summary.tls_decrypted:
        text.append(f", {summary.tls_decrypted:,} decrypted with the key log")
    return text


def _clients_text(clients: list[tuple[str, int]]) -> Text:
    return _counted(clients, empty=MISSING)


def _counted(items: list[tuple[str, int]], *, empty: str) -> Text:
    """ "a (3), b (1)", wire strings escaped."""
    if not items:
        return Text(empty)
    text = Text()
    for i, (name, count) in enumerate(items):
        if i:
            text.append(", ")
        text.append_text(terminal_text(name))
        text.append(f" ({count:,})")
    return text


def _auth_cell(mechanism: str | None, result: str | None) -> Text:
    if mechanism is None and result is None:
        return Text(MISSING, style="dim")
    text = terminal_text(mechanism or "?")
    if result is not None:
        text.append(" ")
        start = len(text)
        text.append_text(terminal_text(_AUTH_RESULTS.get(result, result)))
        text.stylize("green" if result == "success" else "red", start)
    return text


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _optional(value: object) -> str | None:
    return None if value is None else str(value)
