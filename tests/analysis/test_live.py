"""LiveAnalyzer writes the rows ``smtpscope read`` writes, and keeps open ones.

The project's captures are fed packet by packet, with a tick between
packets, as live capture would; no privilege is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import build_parser
from analysis.export import json_line, write_tables
from analysis.live import LiveAnalyzer
from analysis.pipeline import DEFAULT_PORTS
from analysis.records import SessionResult
from analysis.tables import read_captures
from capture.pcapfile import open_capture

PCAPS = Path(__file__).parents[2] / "pcaps"


def _live_rows(path: Path, *, stop_after: int | None = None) -> list[dict[str, object]]:
    lines: list[str] = []
    sessions: list[SessionResult] = []
    analyzer = LiveAnalyzer(
        DEFAULT_PORTS,
        lambda table, record: lines.append(json_line(table, record)),
        hooks=[sessions.append],
    )
    with open_capture(str(path)) as reader:
        for i, packet in enumerate(reader):
            if stop_after is not None and i == stop_after:
                break
            analyzer.feed(packet)
            analyzer.tick(packet.ts)
    if stop_after is None:
        analyzer.tick(1 << 62)  # far future: every connection idles out
    analyzer.stop()
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert len(sessions) == sum('"table":"sessions"' in line for line in lines)
    return [json.loads(line) for line in lines]


def _read_rows(path: Path, tmp_path: Path) -> list[dict[str, object]]:
    tables = read_captures(path)
    rows: list[dict[str, object]] = []
    for file in write_tables(tables.frames(), tmp_path / path.stem):
        for line in file.read_text().splitlines():
            rows.append({"table": file.stem, **json.loads(line)})
    return rows


def _final_alerts(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Live writes an alert when crossed and again when over: keep the last."""
    last = {
        row["alert_id"]: i for i, row in enumerate(rows) if row["table"] == "alerts"
    }
    return [
        row
        for i, row in enumerate(rows)
        if row["table"] != "alerts" or last[row["alert_id"]] == i
    ]


def test_live_alert_is_written_when_crossed_and_when_over() -> None:
    rows = _live_rows(PCAPS / "rejected-rcpt.pcap")
    alerts = [row for row in rows if row["table"] == "alerts"]
    assert [a["kind"] for a in alerts] == ["relay_attempt", "relay_attempt"]
    assert alerts[0]["alert_id"] == alerts[1]["alert_id"]
    # The first comes as soon as the session that crossed it has closed.
    first = rows.index(alerts[0])
    assert any(row["table"] == "sessions" for row in rows[:first])


def _canonical(rows: list[dict[str, object]]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


@pytest.mark.parametrize(
    "name",
    [
        "plain-delivery.pcap",
        "rset-multi.pcap",
        "rejected-rcpt.pcap",
        "pipelining.pcap",
        "bdat.pcap",
        "auth.pcap",
        "starttls.pcap",
        "ipv6.pcap",
        "sll2-any.pcap",
    ],
)
def test_live_rows_equal_read_rows(name: str, tmp_path: Path) -> None:
    live = _final_alerts(_live_rows(PCAPS / name))
    read = _read_rows(PCAPS / name, tmp_path)
    # Captures end with every connection closed by FIN, so the close
    # reasons agree; a far-future tick would otherwise say "idle".
    assert _canonical(live) == _canonical(read)


def test_rows_come_out_before_the_session_closes() -> None:
    rows = _live_rows(PCAPS / "rset-multi.pcap")
    tables = [row["table"] for row in rows]
    # Four transactions, each written once settled, before the session row.
    assert tables.index("sessions") == len(tables) - 1
    assert tables.count("transactions") == 4
    # The first transaction is out while later commands are still to come.
    first_txn = tables.index("transactions")
    assert "commands" in tables[first_txn:]


def test_stop_writes_open_sessions_as_interrupted() -> None:
    rows = _live_rows(PCAPS / "rset-multi.pcap", stop_after=40)
    sessions = [row for row in rows if row["table"] == "sessions"]
    assert [s["close"] for s in sessions] == ["interrupted"]
    assert any(row["table"] == "commands" for row in rows)


def test_ticks_close_idle_connections_without_packets() -> None:
    closed: list[SessionResult] = []
    analyzer = LiveAnalyzer(
        DEFAULT_PORTS, lambda t, r: None, idle_timeout_s=5, hooks=[closed.append]
    )
    with open_capture(str(PCAPS / "rset-multi.pcap")) as reader:
        packets = list(reader)
    for packet in packets[:30]:
        analyzer.feed(packet)
    last = packets[29].ts
    analyzer.tick(last + 4 * 10**9)
    assert not closed and analyzer.active_sessions == 1
    analyzer.tick(last + 6 * 10**9)
    assert [r.session.close for r in closed] == ["idle"]
    assert analyzer.active_sessions == 0


def test_a_flood_on_the_wire_is_held_to_max_connections(tmp_path: Path) -> None:
    # Live capture has no end of capture to wait for: a SYN flood would
    # hold every attempt until its timeout. Past the limit the oldest go.
    flood = tmp_path / "flood.pcap"
    make = Path(__file__).parents[2] / "bench" / "make_flood.py"
    subprocess.run(
        [sys.executable, str(make), "--syns", "50", str(flood)],
        check=True,
        capture_output=True,
    )
    closed: list[SessionResult] = []
    analyzer = LiveAnalyzer(
        DEFAULT_PORTS, lambda t, r: None, max_connections=20, hooks=[closed.append]
    )
    most = 0
    with open_capture(str(flood)) as reader:
        for packet in reader:
            analyzer.feed(packet)
            most = max(most, analyzer.active_sessions)
    assert most == 20
    # At each 21st, the 3 oldest go (a tenth of 20, and the one too many).
    assert [r.session.close for r in closed] == ["evicted"] * 30
    assert [r.session.client_port for r in closed] == list(range(1024, 1054))
    analyzer.stop()
    assert len(closed) == 50
    assert analyzer.reassembler.stats.evicted == 30


@pytest.mark.parametrize("command", ["live", "check"])
def test_an_interface_named_twice_is_opened_once(command: str) -> None:
    # Opened twice, lo would hand every packet on it over twice.
    args = build_parser().parse_args([command, "-i", "lo", "-i", "eth9", "-i", "lo"])
    args.validate(args)
    assert args.interfaces == ["lo", "eth9"]


def test_live_detectors_are_told_the_oldest_open_connections_start() -> None:
    # They let go of what they remember of sessions (refused AUTHs) only
    # before that: a session still open may yet count it.
    analyzer = LiveAnalyzer(DEFAULT_PORTS, lambda table, record: None)
    horizon = analyzer.alerts._horizon
    assert horizon is not None and horizon() is None
    with open_capture(str(PCAPS / "rset-multi.pcap")) as reader:
        packets = list(reader)
    for packet in packets[:3]:
        analyzer.feed(packet)
    assert horizon() == packets[0].ts
    analyzer.stop()
    assert horizon() is None
