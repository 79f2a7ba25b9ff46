"""The live dashboard: the monitor's totals as one rich renderable.

``dashboard`` is a pure function of a ``Monitor``, the capture counters and
the time, so a test renders it to a console of fixed size and reads the
text. As in ``analysis.views``, whatever came off the wire (client
addresses, anomaly details) reaches rich only as escaped ``Text``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from analysis.escape import terminal_text
from analysis.monitor import NS, Monitor
from capture.live import InterfaceCounts

MISSING = "-"
_DETAIL_WIDTH = 60


def dashboard(
    monitor: Monitor, interfaces: Sequence[InterfaceCounts], now_ns: int
) -> RenderableType:
    """Totals, top clients and the latest anomalies and alerts."""
    names = ", ".join(i.interface for i in interfaces) or MISSING
    uptime = max(0, now_ns - monitor.started_ns) // NS
    title = Text(f"smtpscope live on {names}, up {_duration(uptime)}")
    top = Table.grid(padding=(0, 4))
    top.add_row(_totals(monitor, interfaces, now_ns), _clients(monitor))
    return Group(Panel(top, title=title, title_align="left"), _recent(monitor))


def _totals(
    m: Monitor, interfaces: Sequence[InterfaceCounts], now_ns: int
) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    received, dropped = m.capture.received, m.capture.dropped
    replies = "  ".join(
        f"{k} {v:,}" for k, v in m.reply_classes.items() if k != "other" or v
    )
    rows = [
        ("sessions/min", Text(f"{m.sessions_last_minute(now_ns):,}")),
        ("active sessions", Text(f"{m.active_sessions:,}")),
        ("sessions", Text(f"{m.sessions:,}")),
        ("messages accepted", Text(f"{m.messages_accepted:,}")),
        ("replies", Text(replies)),
        ("TLS", _share(m.tls_sessions, m.sessions)),
        (
            "AUTH failures",
            Text(f"{m.auth_failures:,}", style="red" if m.auth_failures else ""),
        ),
        ("alerts", Text(f"{sum(m.alerts.values()):,}")),
        ("packets", Text(f"{received:,} captured")),
        ("dropped", Text(f"{dropped:,}", style="red" if dropped else "")),
    ]
    for label, value in rows:
        grid.add_row(Text(label), value)
    return grid


def _clients(m: Monitor) -> RenderableType:
    table = Table(title=Text("top clients"), box=None, header_style="bold")
    table.add_column(Text("client"))
    table.add_column(Text("sessions"), justify="right")
    for ip, count in m.top_clients(5):
        table.add_row(terminal_text(ip), Text(f"{count:,}"))
    if not m.clients:
        table.add_row(Text(MISSING), Text(""))
    return table


def _recent(m: Monitor) -> RenderableType:
    table = Table(
        title=Text("latest anomalies and alerts (UTC)"),
        title_justify="left",
        box=None,
        header_style="bold",
        expand=False,
    )
    for header in ("time", "client", "kind", "detail"):
        table.add_column(Text(header), no_wrap=True, overflow="ellipsis")
    for event in reversed(m.recent):
        detail = terminal_text(event.detail)
        detail.truncate(_DETAIL_WIDTH, overflow="ellipsis")
        table.add_row(
            Text(time.strftime("%H:%M:%S", time.gmtime(event.ts // NS))),
            terminal_text(event.client_ip),
            terminal_text(event.kind),
            detail,
        )
    if not m.recent:
        table.add_row(Text(MISSING), Text(""), Text(""), Text("none yet"))
    return table


def _share(part: int, whole: int) -> Text:
    if not whole:
        return Text(MISSING)
    return Text(f"{part:,} of {whole:,} sessions ({100 * part / whole:.0f}%)")


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"
