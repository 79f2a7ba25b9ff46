from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from rich.console import Console

from analysis import pipeline
from analysis.records import SessionResult
from analysis.tables import SmtpTables, TableBuilder, empty_tables, read_captures
from analysis.views import print_report, summarize
from capture import libpcap, source
from capture.pcapfile import open_capture
from tests.analysis.table_samples import (
    MARKUP_HELO,
    SECOND,
    hostile_session,
    sample_results,
    twin_session,
)
from tests.capture.craft import (
    Frame,
    ethernet,
    ng_epb,
    ng_idb,
    ng_shb,
    ng_spb,
    pcap,
    v4_tcp,
)


def build(
    results: list[SessionResult], stats: pipeline.RunStats | None = None
) -> SmtpTables:
    builder = TableBuilder(stats)
    builder.add_all(results)
    return builder.build()


def render(
    tables: SmtpTables,
    *,
    limit: int | None = 20,
    summary: bool = True,
    width: int = 120,
) -> str:
    console = Console(
        file=io.StringIO(),
        record=True,
        width=width,
        force_terminal=True,
        color_system=None,
    )
    print_report(console, tables, limit=limit, summary=summary)
    return console.export_text()


PCAPS = Path(__file__).resolve().parents[2] / "pcaps"


@pytest.fixture
def tables() -> SmtpTables:
    return build(sample_results(), pipeline.RunStats(captures=1, packets=1234))


def test_summary_numbers(tables: SmtpTables) -> None:
    summary = summarize(tables)
    assert (summary.captures, summary.packets, summary.errors) == (1, 1234, 0)
    assert (summary.sessions, summary.transactions, summary.messages_accepted) == (
        3,
        3,
        1,
    )
    # Greetings 220 and 554; replies 250 x3, 550 and 535; two commands
    # unanswered; and the 250 verdict on the DATA message.
    assert summary.reply_classes == {"2xx": 5, "3xx": 0, "4xx": 0, "5xx": 3, "other": 0}
    assert summary.tls_sessions == 1
    assert (summary.auth_successes, summary.auth_failures) == (1, 3)
    assert summary.top_clients == [("192.0.2.10", 2), ("203.0.113.7", 1)]


def test_summary_panel_content(tables: SmtpTables) -> None:
    text = render(tables)
    assert "smtpscope summary" in text
    assert "1,234" in text
    assert "2xx 5  3xx 0  4xx 0  5xx 3" in text
    assert "other" not in text
    assert "1 of 3 sessions (33%)" in text
    assert "1 succeeded, 3 failed attempts" in text
    assert "192.0.2.10 (2), 203.0.113.7 (1)" in text
    assert "damaged inputs" not in text


def test_summary_of_nothing() -> None:
    text = render(empty_tables(pipeline.RunStats(captures=1, errors=["bad"])))
    assert "damaged inputs" in text
    assert "sessions               0" in text
    assert "TLS                    -" in text
    assert "anomalies              none" in text
    assert "close" not in text  # no empty session table


def test_summary_names_the_anomaly_kinds() -> None:
    capture = Path(__file__).parents[2] / "pcaps" / "starttls-injection.pcap"
    text = render(read_captures(capture))
    assert "anomalies              starttls_client_injection (1)" in text


def session_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:2] in ("03", "20")]


def test_session_table_rows(tables: SmtpTables) -> None:
    text = render(tables, summary=False, width=140)
    assert "smtpscope summary" not in text
    assert "sessions on 2024-01-02 (UTC)" in text
    header = next(line for line in text.splitlines() if line.startswith("start"))
    assert header.split() == [
        "start",
        "session_id",
        "client",
        "server",
        "helo",
        "tls",
        "auth",
        "mails",
        "accepted",
        "close",
        "anomalies",
    ]
    rows = session_rows(text)
    assert len(rows) == 3
    assert rows[0].split()[:4] == [
        "03:03:55",
        "s-a",
        "203.0.113.7:50000",
        "198.51.100.1:587",
    ]
    assert "LOGIN failed" in rows[0]
    assert rows[0].split()[-4:] == ["2", "0", "rst", "2"]
    assert "PLAIN ok" in rows[2]
    assert "starttls" in rows[2]
    assert "too narrow" not in text


def test_sessions_on_several_days_show_dates() -> None:
    early = hostile_session()
    early.session.start -= 86_400 * SECOND
    text = render(build([early, twin_session()]), summary=False)
    assert "sessions (UTC)" in text
    assert [row[:19] for row in session_rows(text)] == [
        "2024-01-01 03:03:55",
        "2024-01-02 03:04:05",
    ]


def test_session_table_is_truncated(tables: SmtpTables) -> None:
    text = render(tables, limit=1)
    assert len(session_rows(text)) == 1
    assert "… and 2 more (--limit 0 shows all; -o writes all)" in text
    assert "more" not in render(tables, limit=None)


def test_narrow_terminal_leaves_out_columns(tables: SmtpTables) -> None:
    text = render(tables, summary=False, width=100)
    # close, helo and auth go first; the server stays, and the session_id.
    assert "too narrow to show: helo, auth, close" in text
    header = next(line for line in text.splitlines() if line.startswith("start"))
    assert header.split() == [
        "start",
        "session_id",
        "client",
        "server",
        "tls",
        "mails",
        "accepted",
        "anomalies",
    ]
    assert all(len(line) <= 100 for line in text.splitlines())


def test_the_session_id_outlasts_the_server(tables: SmtpTables) -> None:
    # It is what every table, alert and --session name a session by.
    text = render(tables, summary=False, width=80)
    assert "too narrow to show: server, helo, auth, close" in text
    assert session_rows(text) == [
        "03:03:55 s-a        203.0.113.7:50000 none         2        0         2",
        "03:04:05 s-0        192.0.2.10:40001  none         0        0         0",
        "03:04:05 s-b        192.0.2.10:40000  starttls     1        1         0",
    ]


def test_narrow_terminal_puts_each_alert_summary_below_it() -> None:
    # Beside severity, kind and time, 60 columns would leave the summary
    # two letters wide.
    abuse = read_captures(PCAPS / "abuse" / "auth-abuse.pcap")
    text = render(abuse, summary=False, width=60)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[1:8] == [
        "severity kind first seen / summary",
        "critical auth_success_after_failures 2026-12-04 17:14:14",
        "  127.0.0.1 authenticated after 12 failed AUTH attempts from",
        "  this client within 10 minutes.",
        "high     auth_brute_force 2026-12-04 17:14:14",
        "  127.0.0.1 failed AUTH 12 times within 10 minutes in 12",
        "  session(s).",
    ]
    assert all(len(line) <= 60 for line in lines)
    wide = render(abuse, summary=False, width=120).splitlines()
    assert wide[1].split() == ["severity", "kind", "first", "seen", "summary"]
    assert wide[2].startswith(
        "critical auth_success_after_failures 2026-12-04 17:14:14 127.0.0.1 "
    )


def test_alert_table_is_truncated_with_the_sessions_hint() -> None:
    # auth-abuse.pcap raises 4 alerts in 19 sessions; the first of each is shown.
    abuse = read_captures(PCAPS / "abuse" / "auth-abuse.pcap")
    text = render(abuse, summary=False, limit=1, width=120)
    assert "… and 3 more (--limit 0 shows all; -o writes all)" in text
    assert "… and 18 more (--limit 0 shows all; -o writes all)" in text


def test_escape_sequences_from_the_wire_are_shown_escaped(tables: SmtpTables) -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True)
    print_report(console, tables)
    written = out.getvalue()
    assert "\x1b[31mred" not in written  # the peer's ESC never reaches the terminal
    assert "evil\\x1b[31m" in written


def test_markup_from_the_wire_is_shown_literally() -> None:
    session = twin_session()
    session = dataclasses.replace(
        session,
        session=dataclasses.replace(session.session, helo=MARKUP_HELO[:10]),
    )
    text = render(build([session]))
    assert "[bold]shou" in text


def test_one_is_singular_in_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.cli import main

    auth = Path(__file__).resolve().parents[2] / "pcaps" / "auth.pcap"
    plain = Path(__file__).resolve().parents[2] / "pcaps" / "plain-delivery.pcap"
    assert main(["read", str(auth)]) == 0
    # The aborted AUTH LOGIN (a 501 to the client's "*") is neither.
    assert (
        "│ AUTH                   3 succeeded, 1 failed attempt, 1 cancelled or "
        "unanswered │"
    ) in capsys.readouterr().out
    assert main(["read", str(plain)]) == 0
    assert "TLS                    0 of 1 session (0%)" in capsys.readouterr().out


def _with_web_traffic(target: Path, handover: str) -> str:
    """pcaps/auth.pcap (124 packets, all on port 587) with a web frame after
    each packet, for libpcap's path: read to its end (``none``), or handed
    over to the Python reader at its 60th packet, in a pcapng Simple Packet
    Block (``simple``) or padded to the snaplen in a pcap (``long``)."""
    with open_capture(str(PCAPS / "auth.pcap")) as reader:
        packets = list(reader)
    web = ethernet(v4_tcp(sport=40999, dport=80, payload=b"GET / HTTP/1.1\r\n"))
    if handover == "long":
        frames = []
        for n, packet in enumerate(packets):
            data = packet.data
            if n == 60:
                data += b"\0" * (262144 - len(data))  # Ethernet padding
            seconds, nanos = divmod(packet.ts, 1_000_000_000)
            frames += [Frame(seconds, nanos, data), Frame(seconds, nanos, web)]
        target.write_bytes(pcap(frames, nano=True))
        return str(target)
    content = ng_shb() + ng_idb(1, tsresol=9)
    for n, packet in enumerate(packets):
        if n == 60 and handover == "simple":
            content += ng_spb(packet.data)
        else:
            content += ng_epb(0, packet.ts, packet.data)
        content += ng_epb(0, packet.ts, web)
    target.write_bytes(content)
    return str(target)


def _summary_rows(out: str) -> dict[str, str]:
    """The summary panel's first rows, label to value."""
    rows = {}
    for line in out.splitlines():
        label, _, value = line.strip("│ ").partition("  ")
        if label == "sessions":
            return rows
        if value:
            rows[label] = value.strip()
    raise AssertionError(f"no summary in {out!r}")


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
@pytest.mark.parametrize("report", ["digest", "tables"])
@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("handover", ["none", "simple", "long"])
def test_the_summary_counts_packets_alike_whichever_reader_read_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    handover: str,
    jobs: str,
    report: str,
) -> None:
    # Found in review: after libpcap handed a capture over to the Python
    # reader, which counts every packet, the summary still called them all
    # "packets on SMTP ports" (here 248, or the segments before the
    # hand-over counted twice under -j 2).
    from analysis.cli import main

    path = _with_web_traffic(tmp_path / "capture", handover)
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    # The report from a digest of the sessions, or from the whole tables
    # (views.summarize), which Parquet output builds.
    output = ["-o", str(tmp_path / "out"), "--format", "parquet"]
    argv = ["read", path, "-j", jobs, *(output if report == "tables" else [])]
    assert main(argv) == 0
    rows = _summary_rows(capsys.readouterr().out)

    # All packets are shown where they were all counted: where no reader's
    # filter read the capture to its end. Under -j 2 the process without the
    # hand-over's connection reads it so.
    if handover == "none" or jobs == "2":
        assert rows == {
            "captures": "1",
            "packets": "not counted (libpcap's filter kept the SMTP ports only)",
            "packets on SMTP ports": "124",
        }
    else:
        assert rows == {
            "captures": "1",
            "packets": "248",
            "packets on SMTP ports": "124",
        }


def test_auth_refusals_that_judged_no_password_are_shown_apart() -> None:
    # A user's report: PLAIN for bob then CRAM-MD5, both answered 504,
    # showed "CRAM-MD5 failed" beside bob and 2 failed attempts.
    from tests.analysis.conversation import C, S, session

    refused = b"504 5.5.4 Unrecognized authentication type\r\n"
    result = session(
        [
            (S, b"220 mx\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n"),
            (C, b"AUTH PLAIN AGJvYgBub3Bl\r\n"),
            (S, refused),
            (C, b"AUTH CRAM-MD5\r\n"),
            (S, refused),
        ],
        port=587,
    )
    text = render(build([result]))
    summary = "0 succeeded, 0 failed attempts, 2 refused for other reasons"
    assert f"│ AUTH                   {summary} │" in text
    (row,) = [line for line in text.splitlines() if "192.0.2.2:587" in line]
    assert "CRAM-MD5 refused" in row
