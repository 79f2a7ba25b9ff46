"""Dashboard, metrics endpoint and ``smtpscope check`` over the project's captures."""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from analysis import cli, liverun
from analysis.check import Thresholds, evaluate
from analysis.dashboard import dashboard
from analysis.metrics import MetricsServer, exposition
from analysis.monitor import Monitor, RecentEvent
from analysis.pipeline import analyze
from analysis.records import SessionResult
from analysis.tables import read_captures
from capture.live import InterfaceCounts

PCAPS = Path(__file__).parents[2] / "pcaps"
NOW = 1_800_000_000 * 10**9


def _monitor(*names: str) -> Monitor:
    monitor = Monitor(NOW - 125 * 10**9)
    for result in analyze([str(PCAPS / n) for n in names]):
        monitor.add(result, NOW - 10 * 10**9)
    return monitor


COUNTS = [InterfaceCounts("eth0", 1234, 7, 0)]


def test_dashboard_shows_the_totals() -> None:
    monitor = _monitor("auth.pcap", "rejected-rcpt.pcap")
    monitor.active_sessions = 2
    monitor.capture.received = 1234
    monitor.capture.dropped = 7
    monitor.add_alert(RecentEvent(NOW, "Sx", "192.0.2.9", "auth_brute", "9 fails"))
    console = Console(width=100, height=40, record=True, color_system=None)
    console.print(dashboard(monitor, COUNTS, NOW))
    text = console.export_text()
    assert "smtpscope live on eth0, up 0:02:05" in text
    for expected in (
        "sessions/min       5",
        "active sessions    2",
        "TLS                0 of 5 sessions (0%)",
        "AUTH failures      1",
        "alerts             1",
        "packets            1,234 captured",
        "dropped            7",
        "127.0.0.1",
        # The times are the capture's in UTC, as read's tables say they are.
        "latest anomalies and alerts (UTC)",
        time.strftime("%H:%M:%S", time.gmtime(NOW // 10**9)) + "  192.0.2.9",
        "auth_brute",
        "9 fails",
    ):
        assert expected in text, expected
    assert "2xx 30  3xx 3  4xx 0  5xx 5" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_metrics_count_auth_commands_both_ways() -> None:
    # auth.pcap: three AUTH commands accepted, one refused (535).
    page = exposition(_monitor("auth.pcap"), COUNTS)
    lines = set(page.splitlines())
    assert "smtpscope_auth_successes_total 3" in lines
    assert "smtpscope_auth_failures_total 1" in lines
    # Its AUTH LOGIN cancelled with "*" (501) is neither kind of refusal.
    assert "smtpscope_auth_other_refusals_total 0" in lines
    assert 'smtpscope_auth_results_total{result="refused"} 0' in lines


def test_metrics_endpoint_serves_the_page() -> None:
    monitor = _monitor("plain-delivery.pcap", "rejected-rcpt.pcap")
    server = MetricsServer("127.0.0.1", 0)
    server.start()
    try:
        server.publish(exposition(monitor, COUNTS))
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            page = r.read().decode()
    finally:
        server.close()
    lines = set(page.splitlines())
    for expected in (
        "smtpscope_sessions_total 2",
        'smtpscope_replies_total{class="5xx"} 3',
        "smtpscope_refusals_total 3",
        "smtpscope_alerts_total 0",
        'smtpscope_packets_dropped_total{interface="eth0"} 7',
        "# TYPE smtpscope_greeting_delay_seconds histogram",
        'smtpscope_greeting_delay_seconds_bucket{le="+Inf"} 2',
        "smtpscope_greeting_delay_seconds_count 2",
        'smtpscope_command_latency_seconds_count{verb="RCPT"} 5',
    ):
        assert expected in lines, expected


@pytest.mark.parametrize(
    ("args", "status", "start"),
    [
        (["-r", "plain-delivery.pcap", "--refusal-warn", "0.2"], 0, "SMTPSCOPE OK - 1"),
        (
            [
                "-r",
                "rejected-rcpt.pcap",
                "--refusal-warn",
                "0.2",
                "--refusal-crit",
                "0.5",
            ],
            1,
            "SMTPSCOPE WARNING - refusal ratio 0.428571 above 0.2",
        ),
        (
            [
                "-r",
                "plain-delivery.pcap",
                "--tls-min-warn",
                "0.9",
                "--tls-min-crit",
                "0.5",
            ],
            2,
            "SMTPSCOPE CRITICAL - TLS share 0 below 0.5",
        ),
        (["-r", "no-such.pcap"], 3, "SMTPSCOPE UNKNOWN - no-such.pcap: cannot open"),
        (["--refusal-warn", "x"], 3, "SMTPSCOPE UNKNOWN - usage:"),
    ],
)
def test_check_exit_status(
    args: list[str],
    status: int,
    start: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(PCAPS)
    assert cli.main(["check", *args]) == status
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(start), out
    if status < 3:
        assert " | sessions=" in out and "refusal_ratio=" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--refusal-warn", "0.5", "--refusal-crit", "0.2"],
            "--refusal-warn 0.5 is above --refusal-crit 0.2: WARNING would come "
            "after CRITICAL",
        ),
        (
            ["--tls-min-warn", "0.5", "--tls-min-crit", "0.9"],
            "--tls-min-warn 0.5 is below --tls-min-crit 0.9: WARNING would come "
            "after CRITICAL",
        ),
        (
            ["--sessions-min-warn", "1", "--sessions-min-crit", "2"],
            "--sessions-min-warn 1 is below --sessions-min-crit 2: WARNING would "
            "come after CRITICAL",
        ),
        (
            ["--sessions-min-warn", "1.5"],
            "argument --sessions-min-warn: '1.5' is not a number of sessions",
        ),
        (
            ["--sessions-min-crit", "9" * 400],
            f"argument --sessions-min-crit: '{'9' * 400}' is more than "
            "9,007,199,254,740,992 (2**53) sessions",
        ),
        (["--refusal-warn", "2"], "--refusal-warn 2: a share, from 0 to 1"),
        (["--tls-min-crit", "1.5"], "--tls-min-crit 1.5: a share, from 0 to 1"),
        (
            ["--duration", "5"],
            "--duration is how long -i watches; it does not apply to -r",
        ),
        (
            ["--alerts-warn", "1.5"],
            "argument --alerts-warn: '1.5' is not a number of alerts",
        ),
        # Thresholds print exactly in the performance data, or are refused:
        # 400 nines made "inf" there.
        (
            ["--alerts-warn", "9" * 400],
            f"argument --alerts-warn: '{'9' * 400}' is more than "
            "9,007,199,254,740,992 (2**53) alerts",
        ),
        (
            ["--alerts-crit", "9" * 5000],  # past what int() converts
            f"argument --alerts-crit: '{'9' * 5000}' is more than "
            "9,007,199,254,740,992 (2**53) alerts",
        ),
        (
            ["--alerts-crit", "9007199254740993"],
            "argument --alerts-crit: '9007199254740993' is more than "
            "9,007,199,254,740,992 (2**53) alerts",
        ),
        (
            ["--greeting-delay-warn", "9" * 400],
            f"argument --greeting-delay-warn: '{'9' * 400}' is too large",
        ),
        (
            ["--greeting-delay-crit", "1e300"],
            "argument --greeting-delay-crit: '1e300' is more than ten years of seconds",
        ),
        (["--refusal-warn", "inf"], "argument --refusal-warn: 'inf' is too large"),
        (
            ["--tls-min-crit", "nan"],
            "argument --tls-min-crit: 'nan' is not a non-negative number",
        ),
    ],
)
def test_check_refuses_thresholds_that_make_no_sense(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "-r", str(PCAPS / "auth.pcap"), *args]) == 3
    assert capsys.readouterr().out == f"SMTPSCOPE UNKNOWN - usage: {message}\n"


def test_check_perfdata_uses_nagios_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(PCAPS / "starttls.pcap")
    args = ["check", "-r", path, "--tls-min-warn", "0.8", "--greeting-delay-crit", "5"]
    assert cli.main(args) == 0
    perf = capsys.readouterr().out.split(" | ", 1)[1].split()
    assert "tls_share=1;0.8:;;0;1" in perf
    assert any(p.startswith("greeting_delay=") and p.endswith("s;;5;0") for p in perf)


def test_check_prints_thresholds_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    # As given, in the digits perfdata allows: no rounding to six digits,
    # no exponent.
    path = str(PCAPS / "rejected-rcpt.pcap")
    args = ["--refusal-warn", "0.1234567", "--greeting-delay-crit", "1e-7"]
    args += ["--tls-min-warn", "-0", "--alerts-crit", "9007199254740992"]
    assert cli.main(["check", "-r", path, *args]) == 2
    assert capsys.readouterr().out == (
        "SMTPSCOPE CRITICAL - refusal ratio 0.428571 above 0.1234567; "
        "greeting delay 0.000202 above 0.0000001 - 1 session on "
        "rejected-rcpt.pcap, refusal ratio 0.428571, max greeting delay "
        "0.000202s, TLS share 0, 1 alert | sessions=1;;;0 "
        "refusal_ratio=0.428571;0.1234567;;0;1 "
        "greeting_delay=0.000202s;;0.0000001;0 tls_share=0;0:;;0;1 "
        "alerts=1;;9007199254740992;0 packets=31c;;;0 dropped=0c;;;0\n"
    )


@pytest.mark.parametrize(
    ("capture", "thresholds", "status", "line"),
    [
        # A server on a port the check does not watch: no session, which is
        # an OK unless a minimum is asked for (a new user's point).
        (
            "implicit-tls-10465.pcap",
            ["--sessions-min-warn", "1"],
            1,
            "SMTPSCOPE WARNING - sessions 0 below 1 - 0 sessions on "
            "implicit-tls-10465.pcap, refusal ratio U, max greeting delay U, "
            "TLS share U, 0 alerts | sessions=0;1:;;0 refusal_ratio=U;;;0;1 "
            "greeting_delay=U;;;0 tls_share=U;;;0;1 alerts=0;;;0 "
            "packets=31c;;;0 dropped=0c;;;0\n",
        ),
        (
            "auth.pcap",
            ["--sessions-min-warn", "5", "--sessions-min-crit", "4"],
            1,
            "SMTPSCOPE WARNING - sessions 4 below 5 - 4 sessions on auth.pcap, "
            "refusal ratio 0, max greeting delay 0.002373s, TLS share 0, 0 alerts "
            "| sessions=4;5:;4:;0 refusal_ratio=0;;;0;1 greeting_delay=0.002373s;;;0 "
            "tls_share=0;;;0;1 alerts=0;;;0 packets=124c;;;0 dropped=0c;;;0\n",
        ),
        (
            "auth.pcap",
            ["--sessions-min-warn", "9", "--sessions-min-crit", "5"],
            2,
            "SMTPSCOPE CRITICAL - sessions 4 below 5 - 4 sessions on auth.pcap, "
            "refusal ratio 0, max greeting delay 0.002373s, TLS share 0, 0 alerts "
            "| sessions=4;9:;5:;0 refusal_ratio=0;;;0;1 greeting_delay=0.002373s;;;0 "
            "tls_share=0;;;0;1 alerts=0;;;0 packets=124c;;;0 dropped=0c;;;0\n",
        ),
    ],
)
def test_check_judges_a_minimum_of_sessions(
    capture: str,
    thresholds: list[str],
    status: int,
    line: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check", "-r", str(PCAPS / capture), *thresholds]) == status
    assert capsys.readouterr().out == line


def test_sessions_per_minute_forgets_old_ones() -> None:
    monitor = _monitor("auth.pcap")
    assert monitor.sessions_last_minute(NOW) == 4
    assert monitor.sessions_last_minute(NOW + 51 * 10**9) == 0
    assert time.time_ns() > 0


def test_check_counts_the_detectors_alerts(capsys: pytest.CaptureFixture[str]) -> None:
    # harvest.pcap raises one directory_harvest alert.
    capture = str(PCAPS / "abuse" / "harvest.pcap")
    status = cli.main(["check", "-r", capture, "--alerts-warn", "0"])
    line = capsys.readouterr().out
    assert status == 1
    assert line.startswith("SMTPSCOPE WARNING - alerts 1 above 0")
    assert " alerts=1;0;;0 " in line


def test_check_counts_the_alerts_read_raises(
    capsys: pytest.CaptureFixture[str],
) -> None:
    captures = sorted(str(path) for path in (PCAPS / "abuse").glob("*.pcap"))
    expected = len(read_captures(captures).alerts)
    assert expected == 24
    args = ["check", *(f"--read={path}" for path in captures)]
    assert cli.main(args) == 0
    assert f" alerts={expected};;;0 " in capsys.readouterr().out


def test_check_lays_rules_over_the_defaults(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The site's rules switch the one detector harvest.pcap trips off.
    rules = tmp_path / "rules.toml"
    rules.write_text("[directory_harvest]\nenabled = false\n")
    capture = str(PCAPS / "abuse" / "harvest.pcap")
    args = ["check", "-r", capture, "--alerts-warn", "0", "--rules", str(rules)]
    assert cli.main(args) == 0
    line = capsys.readouterr().out
    assert line.startswith("SMTPSCOPE OK - ")
    assert " alerts=0;0;;0 " in line
    rules.write_text("[directory_harvest]\nenabled = maybe\n")
    assert cli.main(args) == 3
    assert capsys.readouterr().out.startswith("SMTPSCOPE UNKNOWN - usage: ")


def test_check_reads_a_capture_named_twice_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    capture = str(PCAPS / "auth.pcap")
    assert cli.main(["check", "-r", capture, "-r", capture]) == 0
    line = capsys.readouterr().out
    assert line.startswith("SMTPSCOPE OK - 4 sessions on auth.pcap, ")
    assert " sessions=4;;;0 " in line


def test_check_counts_one_session_in_the_singular(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check", "-r", str(PCAPS / "plain-delivery.pcap")]) == 0
    line = capsys.readouterr().out
    assert line.startswith("SMTPSCOPE OK - 1 session on plain-delivery.pcap, ")


def test_check_escapes_file_names_in_its_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Everything after the first "|" is performance data to Nagios, and
    # only the first line is read: a file name holds neither.
    name = "evil|x=1;2;3 \nSECOND \x1b[31mLINE.pcap"
    (tmp_path / name).write_bytes((PCAPS / "rejected-rcpt.pcap").read_bytes())
    assert cli.main(["check", "-r", str(tmp_path / name)]) == 0
    assert capsys.readouterr().out == (
        "SMTPSCOPE OK - 1 session on evil\\x7cx=1;2;3 \\x0aSECOND "
        "\\x1b[31mLINE.pcap, refusal ratio 0.428571, max greeting delay "
        "0.000202s, TLS share 0, 1 alert | sessions=1;;;0 "
        "refusal_ratio=0.428571;;;0;1 greeting_delay=0.000202s;;;0 "
        "tls_share=0;;;0;1 alerts=1;;;0 packets=31c;;;0 dropped=0c;;;0\n"
    )

    missing = tmp_path / "gone|x=1\n.pcap"
    assert cli.main(["check", "-r", str(missing)]) == 3
    assert capsys.readouterr().out == (
        f"SMTPSCOPE UNKNOWN - {tmp_path}/gone\\x7cx=1\\x0a.pcap: cannot open: "
        "No such file or directory\n"
    )

    assert cli.main(["check", "-r", str(missing), "--refusal-warn", "1|x=1"]) == 3
    assert capsys.readouterr().out == (
        "SMTPSCOPE UNKNOWN - usage: argument --refusal-warn: '1\\x7cx=1' is "
        "not a number\n"
    )


def test_check_judges_what_a_damaged_capture_held(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The last record cut off, as by a tcpdump killed mid-write: the session
    # before it is whole, and its refusals are still CRITICAL.
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((PCAPS / "rejected-rcpt.pcap").read_bytes()[:3857])
    damage = (
        f"judged on what could be read: {cut}: damaged at byte 3782: record "
        "truncated: 66 bytes of packet announced, 59 present"
    )
    summary = (
        "1 session on cut.pcap, refusal ratio 0.428571, max greeting delay "
        "0.000202s, TLS share 0, 1 alert"
    )
    perf = (
        "greeting_delay=0.000202s;;;0 tls_share=0;;;0;1 alerts=1;;;0 "
        "packets=30c;;;0 dropped=0c;;;0"
    )
    limits = ["--refusal-warn", "0.2", "--refusal-crit", "0.4"]
    assert cli.main(["check", "-r", str(cut), *limits]) == 2
    assert capsys.readouterr().out == (
        f"SMTPSCOPE CRITICAL - refusal ratio 0.428571 above 0.4; {damage} - "
        f"{summary} | sessions=1;;;0 refusal_ratio=0.428571;0.2;0.4;0;1 {perf}\n"
    )

    # Figures within their limits: WARNING, since part of the traffic went
    # unseen (read exits 1 for the same capture).
    assert cli.main(["check", "-r", str(cut)]) == 1
    assert capsys.readouterr().out == (
        f"SMTPSCOPE WARNING - {damage} - {summary} | sessions=1;;;0 "
        f"refusal_ratio=0.428571;;;0;1 {perf}\n"
    )

    # A capture missing among others is one more piece of damage, and said
    # not to have been read.
    args = ["check", "-r", str(cut), "-r", str(tmp_path / "gone.pcap")]
    assert cli.main(args) == 1
    assert capsys.readouterr().out.startswith(
        f"SMTPSCOPE WARNING - {damage} (and 1 more) - 1 session on cut.pcap "
        "(not read: gone.pcap), refusal ratio 0.428571, "
    )

    # Nothing read, nothing to judge: UNKNOWN.
    cut.write_bytes((PCAPS / "rejected-rcpt.pcap").read_bytes()[:30])
    assert cli.main(["check", "-r", str(cut)]) == 3
    assert capsys.readouterr().out == (
        f"SMTPSCOPE UNKNOWN - {cut}: damaged at byte 24: record header "
        "truncated at 6 of 16 bytes\n"
    )


def test_check_prints_small_figures_without_an_exponent() -> None:
    monitor = Monitor(NOW)
    monitor.sessions = 1
    monitor.greeting.observe(0.00005)  # a greeting in 50 us, on loopback
    monitor.refusals, monitor.refusable = 1, 100_000
    line = evaluate(monitor, Thresholds(), "x.pcap").line
    assert " refusal_ratio=0.00001;;;0;1 greeting_delay=0.00005s;;;0 " in line
    assert ", refusal ratio 0.00001, max greeting delay 0.00005s, " in line


def test_check_stopped_part_way_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C, or a scheduler's timeout (SIGTERM), while check -r reads: the
    # figures are of part of the capture, which an OK would hide.
    from analysis import liverun

    def two_then_stopped(*args: Any, **kwargs: Any) -> Iterator[SessionResult]:
        results = analyze(*args, **kwargs)
        yield next(results)
        yield next(results)
        kwargs["stats"].interrupted = True

    monkeypatch.setattr(liverun.pipeline, "analyze", two_then_stopped)
    assert cli.main(["check", "-r", str(PCAPS / "auth.pcap")]) == 1
    assert capsys.readouterr().out.startswith(
        "SMTPSCOPE WARNING - judged on what could be read: stopped before the "
        "end - 2 sessions on auth.pcap, "
    )


@pytest.mark.parametrize("where", ["analyze", "finish"])
def test_check_stopped_outside_the_reading_still_gives_a_status_line(
    where: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stop before the reading began (the spool being made) or after it
    # (the detectors' judgement) ended check with exit 130 and no line,
    # which a monitoring system cannot read.
    from analysis import liverun

    def stopped(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(
        liverun.pipeline if where == "analyze" else liverun, where, stopped
    )
    assert cli.main(["check", "-r", str(PCAPS / "auth.pcap")]) == 3
    assert capsys.readouterr().out == ("SMTPSCOPE UNKNOWN - stopped before a verdict\n")


def test_live_says_what_was_opened_from_smtp_ports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As read's summary does: such packets make no session (backscatter).
    from analysis import liverun

    summary = liverun._Summary(opened_from_smtp_ports=1200)
    liverun._print_summary(Monitor(0), summary, liverun._StopFlag())
    assert capsys.readouterr().err.splitlines()[-1] == (
        "smtpscope: 1,200 connections opened from an SMTP port, not sessions"
    )


@pytest.mark.parametrize(
    ("sessions", "line"),
    [
        (
            1,
            "smtpscope: 1 session (0 interrupted), 0 transactions, 0 messages "
            "accepted, 0 rows",
        ),
        (
            2,
            "smtpscope: 2 sessions (0 interrupted), 0 transactions, 0 messages "
            "accepted, 0 rows",
        ),
    ],
)
def test_live_counts_one_session_in_the_singular(
    sessions: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from analysis import liverun

    monitor = Monitor(0)
    monitor.sessions = sessions
    liverun._print_summary(monitor, liverun._Summary(), liverun._StopFlag())
    assert capsys.readouterr().err.splitlines()[1] == line


def test_a_fault_of_the_check_itself_is_unknown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: a crash (since mended) ended check with Python's exit
    # status 1, which a monitoring system reads as WARNING, and no line.
    def broken(*args: Any, **kwargs: Any) -> Iterator[SessionResult]:
        raise ValueError("embedded null character")
        yield

    monkeypatch.setattr(liverun.pipeline, "analyze", broken)
    assert cli.main(["check", "-r", str(PCAPS / "auth.pcap")]) == 3
    assert capsys.readouterr().out == (
        "SMTPSCOPE UNKNOWN - internal error: ValueError: embedded null character\n"
    )


def test_check_names_as_read_only_the_captures_it_could_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Found in review: "5 sessions on auth.pcap, gone.pcap, ...", as if the
    # missing capture had been read. One that cannot be opened (missing, a
    # directory) or holds no capture at all is said not to have been read;
    # one damaged part way was read up to the damage, and is named as read.
    gone = tmp_path / "gone.pcap"
    folder = tmp_path / "folder.pcap"
    folder.mkdir()
    text = tmp_path / "text.pcap"
    text.write_text("no capture\n")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((PCAPS / "rejected-rcpt.pcap").read_bytes()[:3857])
    named = [PCAPS / "auth.pcap", gone, folder, text, cut]
    assert cli.main(["check", *(f"-r{path}" for path in named)]) == 1
    assert capsys.readouterr().out == (
        f"SMTPSCOPE WARNING - judged on what could be read: {cut}: damaged at "
        "byte 3782: record truncated: 66 bytes of packet announced, 59 present "
        "(and 3 more) - 5 sessions on auth.pcap, cut.pcap (not read: "
        "gone.pcap, folder.pcap, text.pcap), refusal ratio 0.214286, max "
        "greeting delay 0.002373s, TLS share 0, 1 alert | sessions=5;;;0 "
        "refusal_ratio=0.214286;;;0;1 greeting_delay=0.002373s;;;0 "
        "tls_share=0;;;0;1 alerts=1;;;0 packets=154c;;;0 dropped=0c;;;0\n"
    )

    # One cut within its file header was not read either; a name given
    # twice is said once.
    short = tmp_path / "short.pcap"
    short.write_bytes((PCAPS / "auth.pcap").read_bytes()[:10])
    named = [short, PCAPS / "auth.pcap", gone, gone]
    assert cli.main(["check", *(f"-r{path}" for path in named)]) == 1
    assert capsys.readouterr().out.startswith(
        f"SMTPSCOPE WARNING - judged on what could be read: {short}: damaged at "
        "byte 0: file header truncated at 10 of 24 bytes (and 2 more) - 4 "
        "sessions on auth.pcap (not read: short.pcap, gone.pcap), refusal "
    )


def test_check_reads_several_captures_after_one_r(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Found in a new user's trial: "check -r dir/*.pcap" was a usage error;
    # -r repeated reads the same.
    captures = [str(PCAPS / "auth.pcap"), str(PCAPS / "rset-multi.pcap")]
    assert cli.main(["check", "-r", *captures]) == 0
    after_one = capsys.readouterr().out
    assert after_one.startswith(
        "SMTPSCOPE OK - 5 sessions on auth.pcap, rset-multi.pcap, "
    )
    assert cli.main(["check", "-r", captures[0], "-r", captures[1]]) == 0
    assert capsys.readouterr().out == after_one


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_check_stopped_while_it_starts_still_gives_a_status_line(
    signum: signal.Signals,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found in review: a stop held from the entry point's first line (the
    # modules loading, the arguments parsed) was raised in cli.main before
    # check ran: "smtpscope: interrupted", exit 130 and no status line.
    from analysis import interrupts

    real = cli.build_parser

    def stopped_while_parsing() -> Any:
        signal.raise_signal(signum)  # held: only noted
        return real()

    monkeypatch.setattr(cli, "build_parser", stopped_while_parsing)
    assert cli.main(["check", "-r", str(PCAPS / "auth.pcap")]) == 3
    out, err = capsys.readouterr()
    assert out == "SMTPSCOPE UNKNOWN - stopped before a verdict\n"
    assert err == ""
    assert interrupts._held is None  # put back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
