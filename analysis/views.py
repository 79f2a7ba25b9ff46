"""Terminal views of the tables: a summary panel, alerts and sessions.

Everything that came off the wire reaches rich only as a ``Text`` built by
``analysis.escape.terminal_text``: never as a markup string, so neither
control characters nor ``[bold]``-style markup from a peer can change what
the terminal shows. Labels and numbers made here are ``Text`` as well, so
there is no string cell anywhere for rich to interpret.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from analysis.detect import Severity
from analysis.escape import terminal_text
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
    _SessionColumn("client"),
    _SessionColumn("server", drop_rank=3),
    _SessionColumn("helo", drop_rank=2, max_width=24, shrinks_to=10),
    _SessionColumn("tls"),
    _SessionColumn("auth", drop_rank=1),
    _SessionColumn("mails", "right"),
    _SessionColumn("accepted", "right"),
    _SessionColumn("close", drop_rank=4),
    _SessionColumn("anomalies", "right"),
)

_SEVERITY_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}

# Shorter words for the session builder's AUTH results.
_AUTH_RESULTS = {"success": "ok", "failure": "failed", "no_reply": "no reply"}
REPLY_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other")


@dataclass(frozen=True, slots=True)
class Summary:
    """The numbers of the summary panel, computed apart from their layout."""

    captures: int
    packets: int
    errors: int
    packets_filtered: bool  # libpcap skipped the packets off the SMTP ports
    sessions: int
    transactions: int
    messages_accepted: int
    tls_sessions: int
    auth_successes: int  # sessions whose last AUTH succeeded
    auth_failures: int  # refused AUTH commands, all sessions together
    # Greetings and replies to commands, by first digit; "other" holds codes
    # outside 200-599, which RFC 5321 4.2.1 does not define.
    reply_classes: dict[str, int] = field(default_factory=dict)
    top_clients: list[tuple[str, int]] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)  # severity -> count
    # The most frequent anomaly kinds, (kind, rows), most frequent first.
    anomaly_kinds: list[tuple[str, int]] = field(default_factory=list)
    tls_decrypted: int = 0  # sessions whose TLS a key log opened


def summarize(tables: SmtpTables, top: int = 5) -> Summary:
    sessions = tables.sessions
    # The verdict on a DATA message answers no command row of its own, so
    # it is taken from the transactions (BDAT verdicts are command rows).
    verdicts = tables.transactions.loc[
        tables.transactions["data_method"] == "DATA", "data_code"
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
        tls_sessions=int((sessions["tls"] != "none").sum()),
        auth_successes=int((sessions["auth_result"] == "success").sum()),
        auth_failures=int(sessions["auth_failures"].sum()),
        reply_classes=_reply_classes(int(code) for code in codes),
        top_clients=_top_clients(sessions, top),
        alerts=_alert_counts(tables.alerts),
        anomaly_kinds=_top_kinds(tables.anomalies, top),
        tls_decrypted=int(sessions["tls_decrypted"].sum()),
    )


def summary_panel(summary: Summary) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, Text]] = [
        ("captures", _count_text(summary.captures)),
        (
            "packets on SMTP ports" if summary.packets_filtered else "packets",
            _count_text(summary.packets),
        ),
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
    if summary.errors:
        rows.insert(2, ("damaged inputs", Text(str(summary.errors), style="red")))
    for label, value in rows:
        grid.add_row(Text(label), value)
    return Panel(grid, title=Text("smtpscope summary"), expand=False)


def sessions_table(
    sessions: pd.DataFrame, limit: int | None = 20, width: int | None = None
) -> Table:
    """One row per session, the first ``limit`` of them (all for ``None``).

    With ``width``, columns that would not fit are left out, least useful
    first, and the caption says which; the rest keep readable widths.
    """
    shown = sessions if limit is None else sessions.head(limit)
    dates = {start.date() for start in shown["start"]}
    one_date = len(dates) == 1
    rows = [_session_cells(row, time_only=one_date) for row in shown.to_dict("records")]
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
    hidden = len(sessions) - len(shown)
    if hidden:
        notes.append(f"… and {hidden:,} more")
    left_out = [c.header for i, c in enumerate(_SESSION_COLUMNS) if i not in keep]
    if left_out:
        notes.append(f"too narrow to show: {', '.join(left_out)}")
    if notes:
        table.caption = Text("; ".join(notes))
    return table


def alerts_table(alerts: pd.DataFrame, limit: int | None = 20) -> Table:
    """Alerts, most severe first, then by when they began."""
    rank = alerts["severity"].map(lambda s: -Severity(s).rank)
    order = alerts.assign(_rank=rank).sort_values(
        ["_rank", "first_seen", "alert_id"], kind="stable"
    )
    shown = order if limit is None else order.head(limit)
    table = Table(
        title=Text("alerts, most severe first (UTC)"),
        box=None,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        header_style="bold underline",
    )
    for header in ("severity", "kind", "first seen", "summary"):
        table.add_column(Text(header), no_wrap=header != "summary")
    for row in shown.to_dict("records"):
        severity = Severity(row["severity"])
        first: pd.Timestamp = row["first_seen"]
        table.add_row(
            Text(severity.value, style=_SEVERITY_STYLE[severity]),
            Text(str(row["kind"])),
            Text(first.strftime("%Y-%m-%d %H:%M:%S")),
            terminal_text(row["summary"]),
        )
    hidden = len(alerts) - len(shown)
    if hidden:
        table.caption = Text(f"… and {hidden:,} more (all of them in alerts with -o)")
    return table


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


def _session_cells(row: Mapping[Hashable, Any], *, time_only: bool) -> list[Text]:
    anomalies = int(row["anomalies"])
    start: pd.Timestamp = row["start"]
    return [
        Text(start.strftime("%H:%M:%S" if time_only else "%Y-%m-%d %H:%M:%S")),
        terminal_text(row["client_ip"]),
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
) -> Group:
    """Summary panel (unless ``summary`` is false), alerts, then sessions."""
    parts: list[RenderableType] = []
    if summary:
        parts.append(summary_panel(summarize(tables)))
    if len(tables.alerts):
        parts.append(alerts_table(tables.alerts, limit))
    if len(tables.sessions):
        parts.append(sessions_table(tables.sessions, limit, width))
    return Group(*parts)


def print_report(
    console: Console,
    tables: SmtpTables,
    *,
    limit: int | None = 20,
    summary: bool = True,
) -> None:
    console.print(report(tables, limit=limit, summary=summary, width=console.width))


def _reply_classes(codes: Iterable[int]) -> dict[str, int]:
    counts = dict.fromkeys(REPLY_CLASSES, 0)
    for code in codes:
        key = f"{code // 100}xx" if 200 <= code <= 599 else "other"
        counts[key] += 1
    return counts


def _top_clients(sessions: pd.DataFrame, top: int) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for ip in sessions["client_ip"].dropna():
        counts[ip] = counts.get(ip, 0) + 1
    # Ties broken by address so the panel does not change from run to run.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:top]


def _alert_counts(alerts: pd.DataFrame) -> dict[str, int]:
    counts = {s.value: 0 for s in reversed(Severity)}
    for severity in alerts["severity"]:
        counts[str(severity)] += 1
    return {name: count for name, count in counts.items() if count}


def _alerts_text(counts: dict[str, int]) -> Text:
    if not counts:
        return Text("none")
    text = Text(f"{sum(counts.values()):,} (")
    for i, (name, count) in enumerate(counts.items()):
        if i:
            text.append(", ")
        text.append(f"{count:,} {name}", style=_SEVERITY_STYLE[Severity(name)])
    text.append(")")
    return text


def _count_text(value: int) -> Text:
    return Text(f"{value:,}")


def _share_text(part: int, whole: int) -> Text:
    if not whole:
        return Text(MISSING)
    return Text(f"{part:,} of {whole:,} sessions ({100 * part / whole:.0f}%)")


def _reply_text(classes: dict[str, int]) -> Text:
    shown = [f"{name} {count:,}" for name, count in classes.items()]
    if not classes.get("other"):
        shown = shown[:-1]
    return Text("  ".join(shown))


def _auth_text(summary: Summary) -> Text:
    text = Text(f"{summary.auth_successes:,} succeeded, ")
    text.append(
        f"{summary.auth_failures:,} failed attempts",
        style="red" if summary.auth_failures else "",
    )
    return text


def _top_kinds(anomalies: pd.DataFrame, top: int) -> list[tuple[str, int]]:
    counts = anomalies["kind"].value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
    return [(str(kind), int(count)) for kind, count in ranked[:top]]


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
    return None if value is None or value is pd.NA else str(value)
