"""Ctrl-C keeps what was read: the open sessions are closed as interrupted."""

from __future__ import annotations

import importlib.abc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis import cli, export, launch, parallel, pipeline, rowfiles
from analysis.records import SessionResult
from analysis.rowfiles import Format
from analysis.schema import TABLES
from analysis.tables import read_captures
from capture import libpcap, source
from capture.stream import StreamClosed, StreamData, StreamEvent
from tests.analysis.test_views import _summary_rows
from tests.capture.craft import Frame, ethernet, pcap, v4_tcp

CAPTURE = str(Path(__file__).parents[2] / "pcaps" / "rset-multi.pcap")
AUTH = str(Path(__file__).parents[2] / "pcaps" / "auth.pcap")
ROOT = Path(__file__).resolve().parents[2]


def _interrupted_source(
    paths: list[str],
    handle: Callable[[StreamEvent], SessionResult | None],
    *args: Any,
    **kwargs: Any,
) -> Iterator[SessionResult]:
    """The real events of the capture, until Ctrl-C before the close."""

    def until_the_close(event: StreamEvent) -> SessionResult | None:
        if isinstance(event, StreamClosed):
            raise KeyboardInterrupt
        return handle(event)

    return source.handle_stream_events(paths, until_the_close, *args, **kwargs)


@pytest.fixture
def ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "handle_stream_events", _interrupted_source)


@pytest.mark.usefixtures("ctrl_c")
def test_open_sessions_are_kept_and_marked() -> None:
    tables = read_captures(CAPTURE)
    assert tables.stats.interrupted
    assert list(tables.sessions["close"]) == ["interrupted"]
    assert list(tables.transactions["status"]) == [
        "accepted",
        "accepted",
        "reset",
        "accepted",
    ]


@pytest.mark.usefixtures("ctrl_c")
def test_cli_shows_the_sessions_and_exits_130(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = cli.main(["read", CAPTURE, "-o", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 130
    assert "interrupted" in err
    assert "messages accepted" in out
    assert (tmp_path / "sessions.jsonl").read_text().count("\n") == 1
    # The summary says it too, first (a new user's point: only stderr did).
    assert _summary_rows(out) == {
        "partial": "stopped before the end: figures of what was read",
        "captures": "1",
        "packets": "49",
        "packets on SMTP ports": "49",
    }


def test_a_whole_run_has_no_partial_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["read", CAPTURE]) == 0
    assert "partial" not in _summary_rows(capsys.readouterr().out)


def test_nothing_on_the_smtp_ports_says_how_to_add_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    web = tmp_path / "web.pcap"
    frame = ethernet(v4_tcp(sport=40000, dport=80, payload=b"GET / HTTP/1.0\r\n"))
    web.write_bytes(pcap([Frame(1_700_000_000, 0, frame)]))
    status = cli.main(["read", str(web), "-q"])
    err = capsys.readouterr().err
    assert status == 0
    assert "no TCP connection on the SMTP ports (25, 465, 587, 2525)" in err
    assert "--port N" in err


@pytest.mark.parametrize("fast", [False, True])
def test_nothing_on_the_smtp_ports_is_said_through_libpcap_too(
    fast: bool,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Through libpcap's filter no packet of web.pcap reaches Python, so
    # none is counted: the hint must not depend on that count.
    if fast and not libpcap.available():
        pytest.skip("libpcap is not installed")
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0 if fast else 1 << 40)
    web = tmp_path / "web.pcap"
    frame = ethernet(v4_tcp(sport=40000, dport=80, payload=b"GET / HTTP/1.0\r\n"))
    web.write_bytes(pcap([Frame(1_700_000_000, 0, frame)]))
    status = cli.main(["read", str(web), "--no-summary", "-j", "1"])
    out, err = capsys.readouterr()
    assert (status, out) == (0, "")
    assert err == (
        "smtpscope: no TCP connection on the SMTP ports (25, 465, 587, 2525); "
        "if the server listens on another port, add it with --port N "
        "(--tls-port N where TLS starts at the first byte)\n"
    )


def test_check_says_too_that_nothing_was_on_the_smtp_ports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Found in a new user's trial: check gave OK for no sessions, with no
    # word that the server was on another port.
    web = tmp_path / "web.pcap"
    frame = ethernet(v4_tcp(sport=40000, dport=80, payload=b"GET / HTTP/1.0\r\n"))
    web.write_bytes(pcap([Frame(1_700_000_000, 0, frame)]))
    assert cli.main(["check", "-r", str(web)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("SMTPSCOPE OK - 0 sessions on web.pcap, ")
    assert err == (
        "smtpscope: no TCP connection on the SMTP ports (25, 465, 587, 2525); "
        "if the server listens on another port, add it with --port N "
        "(--tls-port N where TLS starts at the first byte)\n"
    )
    # An ACK alone on port 25: a packet there, but no session.
    ack = tmp_path / "ack.pcap"
    frame = ethernet(v4_tcp(sport=40000, dport=25, flags=0x10))
    ack.write_bytes(pcap([Frame(1_700_000_000, 0, frame)]))
    assert cli.main(["check", "-r", str(ack)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("SMTPSCOPE OK - 0 sessions on ack.pcap, ")
    assert err == (
        "smtpscope: 1 TCP packet on the SMTP ports (25, 465, 587, 2525), "
        "but no connection began or sent a byte there\n"
    )


def test_a_stopped_run_gives_no_hint_of_the_ports() -> None:
    # Stopped while reading other traffic, a run has seen no SMTP yet: what
    # was not read may hold it, and --port would not help (found in review:
    # check -r stopped by SIGTERM said to add the server's port).
    stats = pipeline.RunStats()
    stats.packets = 1000
    ports = pipeline.DEFAULT_PORTS
    assert cli.no_session_hint(stats, ports) is not None
    stats.interrupted = True
    assert cli.no_session_hint(stats, ports) is None


def test_a_capture_without_packets_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A pcap file header alone: with --no-summary nothing else is shown.
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(pcap([]))
    status = cli.main(["read", str(empty), "--no-summary"])
    out, err = capsys.readouterr()
    assert (status, out, err) == (0, "", "smtpscope: the captures hold no packets\n")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_ctrl_c_while_the_tables_are_written_keeps_the_old_ones(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fmt: str,
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    old = tmp_path / f"sessions.{fmt}"
    old.write_text("from an earlier run\n")
    stop = _stop_at_call(2)  # rows of the second session, or the second table
    if fmt == "parquet":  # all tables at the end, from DataFrames
        writer = stop(export._WRITERS[Format.PARQUET])
        monkeypatch.setitem(export._WRITERS, Format.PARQUET, writer)
    else:  # rows written as the spool is replayed
        write_text = stop(rowfiles.TableFiles.write_text)
        monkeypatch.setattr(rowfiles.TableFiles, "write_text", write_text)

    # A KeyboardInterrupt however raised there (the stops themselves are in
    # test_stop_after_reading: a first one is only said) abandons them.
    argv = ["read", CAPTURE, AUTH, "-q", "-o", str(tmp_path), "--format", fmt]
    status = cli.main(argv)
    assert status == 130
    assert capsys.readouterr().err == (
        "smtpscope: interrupted again: the tables were abandoned, "
        f"none in {tmp_path} was replaced\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.name]
    assert old.read_text() == "from an earlier run\n"


@pytest.mark.parametrize("stops", [1, 2])
def test_ctrl_c_between_two_renames_still_puts_every_table_in_place(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    stops: int,
) -> None:
    # A stop between two renames would leave this run's first tables
    # beside an earlier run's others: it waits until all are renamed, and
    # is then a first stop (only said) or a second (the end of the run).
    for table in TABLES:
        (tmp_path / f"{table}.jsonl").write_text("from an earlier run\n")
    real_replace = os.replace
    renamed: list[str] = []

    def replace(source: Any, target: Any) -> None:
        if 1 <= len(renamed) <= stops:
            signal.raise_signal(signal.SIGINT)
        renamed.append(str(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    status = cli.main(["read", CAPTURE, "-q", "-o", str(tmp_path)])
    assert status == 130
    noted = (
        "smtpscope: interrupted: writing the tables of everything read; "
        "a second Ctrl-C abandons them\n"
    )
    assert capsys.readouterr().err == noted + (
        "smtpscope: interrupted after reading: the tables hold everything read\n"
        if stops == 1
        else "smtpscope: interrupted again, once the tables were written\n"
    )
    assert len(renamed) == len(TABLES)
    for table in TABLES:
        assert "earlier" not in (tmp_path / f"{table}.jsonl").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{table}.jsonl" for table in TABLES
    )


def _stop_at_call(n: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a function so that its ``n``-th call raises KeyboardInterrupt."""

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        calls = 0

        def stopped(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        return stopped

    return wrap


def _conversation_with_a_hole(path: Path) -> None:
    """Greeting, EHLO and its reply; then the client's QUIT overtakes a
    MAIL command the capture lost, and the server answers something."""
    c, s = (
        ("192.0.2.1", "198.51.100.2", 40000, 25),
        ("198.51.100.2", "192.0.2.1", 25, 40000),
    )
    lost = b"MAIL FROM:<a@b>\r\n"
    steps = [
        (c, 1000, 0, 0x02, b""),
        (s, 5000, 1001, 0x12, b""),
        (c, 1001, 5001, 0x10, b""),
        (s, 5001, 1001, 0x18, b"220 mx\r\n"),
        (c, 1001, 5009, 0x18, b"EHLO a\r\n"),
        (s, 5009, 1009, 0x18, b"250 ok\r\n"),
        (c, 1009 + len(lost), 5017, 0x18, b"QUIT\r\n"),
        (s, 5017, 1009, 0x18, b"250 sender ok\r\n"),
    ]
    frames = [
        Frame(
            1_700_000_000,
            i * 1000,
            ethernet(v4_tcp(src, dst, sp, dp, payload, seq=seq, ack=ack, flags=flags)),
        )
        for i, ((src, dst, sp, dp), seq, ack, flags, payload) in enumerate(steps)
    ]
    path.write_bytes(pcap(frames))


def test_ctrl_c_hands_over_the_bytes_held_behind_a_hole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The QUIT waits behind the lost MAIL command for bytes that never
    # come. Ctrl-C, while the server's last reply is handled, closes the
    # session: the QUIT was read, so it comes out after the gap, as it
    # does at the end of a capture.
    capture = tmp_path / "hole.pcap"
    _conversation_with_a_hole(capture)

    def stopped(
        paths: list[str],
        handle: Callable[[StreamEvent], SessionResult | None],
        *args: Any,
        **kwargs: Any,
    ) -> Iterator[SessionResult]:
        def until_the_last_reply(event: StreamEvent) -> SessionResult | None:
            if isinstance(event, StreamData) and event.data.startswith(b"250 sender"):
                raise KeyboardInterrupt
            return handle(event)

        return source.handle_stream_events(paths, until_the_last_reply, *args, **kwargs)

    monkeypatch.setattr(pipeline, "handle_stream_events", stopped)
    tables = read_captures(str(capture))
    assert tables.stats.interrupted
    session = tables.sessions.iloc[0]
    assert session["close"] == "interrupted"
    assert (session["gaps"], session["gap_bytes"], session["client_bytes"]) == (
        1,
        17,
        14,
    )
    assert list(tables.commands["verb"]) == ["EHLO", "QUIT"]
    assert list(tables.anomalies["kind"]) == ["tcp_gap", "no_reply"]


# Where a stop can land before reading begins: the function it lands in (a
# real signal, raised in this process as a terminal's Ctrl-C would be).
_BEFORE_READING: dict[str, tuple[Any, str]] = {
    "parsing the arguments": (cli, "build_parser"),
    "checking the output directory": (cli, "prepare_directory"),
    "making the spool": (cli, "Spool"),
    "choosing the processes": (cli, "_jobs"),
    "starting the workers": (parallel._Worker, "__init__"),  # -j 2 only
}


class _SignalledImport(importlib.abc.MetaPathFinder):
    """A Ctrl-C that comes while Python loads ``analysis.cli``."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "analysis.cli":
            signal.raise_signal(signal.SIGINT)


def _unread_share(*args: Any, **kwargs: Any) -> Iterator[SessionResult]:
    """A -j worker's reading that has not begun when the stop reaches it."""
    time.sleep(60)  # cut short by the stop
    raise AssertionError("the worker was not stopped")


@pytest.mark.parametrize(
    ("stage", "signum", "jobs"),
    [
        (stage, signal.SIGINT, jobs)
        for stage in ["loading the modules", *_BEFORE_READING]
        for jobs in ["1", "2"]
        if stage != "starting the workers" or jobs == "2"  # one process: none
    ]
    + [("making the spool", signal.SIGTERM, jobs) for jobs in ["1", "2"]],
)
def test_a_stop_before_reading_still_writes_the_tables_and_exits_130(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    stage: str,
    signum: signal.Signals,
    jobs: str,
) -> None:
    # Found in review: a Ctrl-C in the first 0.15 s of a run (the modules
    # loading, the arguments, the spool, the workers starting) wrote no
    # tables, though the README promises that a stop still writes what was
    # read. The stops are now held from the start until reading begins.
    out = tmp_path / "out"
    argv = ["read", AUTH, "-o", str(out), "-j", jobs]
    if stage == "loading the modules":
        monkeypatch.delitem(sys.modules, "analysis.cli")
        monkeypatch.setattr(sys, "meta_path", [_SignalledImport(), *sys.meta_path])
        monkeypatch.setattr(sys, "argv", ["smtpscope", *argv])
        status = launch.run()
    else:
        owner, name = _BEFORE_READING[stage]
        real = getattr(owner, name)

        def stopped_in(*args: Any, **kwargs: Any) -> Any:
            if name == "__init__":  # once this worker is forked
                real(*args, **kwargs)
                signal.raise_signal(signum)
                return None
            signal.raise_signal(signum)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, stopped_in)
        monkeypatch.setattr(pipeline, "analyze", _unread_share)  # in a worker
        status = cli.main(argv)

    out_text, err = capsys.readouterr()
    assert status == 130
    assert err == "smtpscope: interrupted: the tables hold what was read until then\n"
    assert "packets on SMTP ports  0" in out_text  # the report is shown
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{table}.jsonl" for table in TABLES
    )
    assert all(p.read_text() == "" for p in out.iterdir())
    # The handlers from before the run are back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# The console script's own code (pip writes it), with a SIGINT sent to the
# process as the module named first in argv starts to be imported. Run with
# -S, the site directories added by hand: a .pth file of the machine's may
# import typing before any of smtpscope runs (found in CI's environment,
# where one imports certifi), and the stop would then never be sent.
_SCRIPT_STOPPED_IN_AN_IMPORT = """
import os, signal, site, sys
sys.path.extend(site.getsitepackages())
assert "typing" not in sys.modules
target = sys.argv.pop(1)
sent = []
def stop(event, args):
    if event == "import" and args[0] == target and not sent:
        sent.append(target)
        os.kill(os.getpid(), signal.SIGINT)
sys.addaudithook(stop)
import re
from analysis.launch import run
if __name__ == "__main__":
    sys.exit(run())
"""


@pytest.mark.parametrize("module", ["typing", "analysis.cli"])
def test_a_ctrl_c_while_the_command_starts_ends_it_quietly(
    module: str, tmp_path: Path
) -> None:
    # Found in review: a Ctrl-C in the first ~30 ms could end in a
    # traceback. typing was imported by the package before the command held
    # stops; it no longer is, so only logging, signal and the two small
    # modules of the entry point come before the hold (see analysis.launch).
    argv = ["read", AUTH, "-q", "-o", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-S", "-c", _SCRIPT_STOPPED_IN_AN_IMPORT, module, *argv],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        130,
        "",
        "smtpscope: interrupted: the tables hold what was read until then\n",
    )
    assert (tmp_path / "sessions.jsonl").read_text() == ""


def test_a_stop_the_shell_told_the_command_to_ignore_stays_ignored() -> None:
    # A shell starts background commands with SIGINT ignored, so that a
    # Ctrl-C at the terminal stops only the foreground one; Python keeps it
    # ignored, and so must the handlers smtpscope holds stops with.
    def run(ignore: bool) -> subprocess.CompletedProcess[str]:
        def child() -> None:
            if ignore:
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        with subprocess.Popen(
            [sys.executable, "-m", "analysis", "read", "-", "-q"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=False,
            preexec_fn=child,
        ) as reader:
            assert reader.stdin is not None and reader.stderr is not None
            reader.stdin.write(Path(AUTH).read_bytes()[:24])  # the file header
            reader.stdin.flush()
            time.sleep(1.0)  # reading standard input by now
            reader.send_signal(signal.SIGINT)
            time.sleep(0.3)
            reader.stdin.close()
            err = reader.stderr.read().decode()
            return subprocess.CompletedProcess(reader.args, reader.wait(), "", err)

    ignored = run(ignore=True)
    # Read to its end, a header alone: only the note that it held nothing.
    assert (ignored.returncode, ignored.stderr) == (
        0,
        "smtpscope: the captures hold no packets\n",
    )
    heard = run(ignore=False)
    assert heard.returncode == 130


def test_workers_keep_ignoring_what_the_command_was_started_ignoring(
    tmp_path: Path,
) -> None:
    # Found in review: with SIGINT ignored (a background job), a Ctrl-C sent
    # to the group still stopped the -j workers, and the tables held half
    # of the sessions. The parent's own stop reaches them with SIGTERM.
    capture = tmp_path / "flood.pcap"
    make = [sys.executable, str(ROOT / "bench" / "make_flood.py")]
    subprocess.run([*make, "--syns", "60000", str(capture)], check=True)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "analysis", "read", str(capture), "-q"]
    with subprocess.Popen(
        [*argv, "-j", "2", "-o", str(out), "--max-connections", "0"],
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    ) as reader:
        time.sleep(1.0)  # the workers are reading by now
        os.killpg(reader.pid, signal.SIGINT)
        assert reader.wait(timeout=60) == 0
    assert len((out / "sessions.jsonl").read_text().splitlines()) == 60000


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_stop_while_a_session_is_spooled_keeps_it_and_the_open_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: str
) -> None:
    # Found in review: a stop that came in Spool.add (a long one, for a
    # large session) was outside the reading's own handling, so the session
    # being spooled and every session still open were lost.
    from analysis.spool import Spool
    from tests.capture.craft import TcpPeers

    # Three sessions: the second closes while the first and third are open.
    ends = [
        TcpPeers("192.0.2.1", 40000 + n, "198.51.100.2", 25, 1000, 9000)
        for n in range(3)
    ]
    steps = [(0, False, b"220 mx\r\n"), (1, False, b"220 mx\r\n")]
    steps += [
        (1, True, b"QUIT\r\n"),
        (1, False, b"221 bye\r\n"),
        (2, False, b"220 mx\r\n"),
    ]
    frames = []
    for n, (end, by_client, payload) in enumerate(steps):
        frames.append(
            Frame(1_700_000_000 + n, 0, ends[end].frame(by_client, payload, 0x18))
        )
    for by_client, flags in ((True, 0x11), (False, 0x11), (True, 0x10)):
        frames.append(Frame(1_700_000_010, 0, ends[1].frame(by_client, b"", flags)))
    frames.append(Frame(1_700_000_011, 0, ends[0].frame(True, b"NOOP\r\n", 0x18)))
    path = tmp_path / "three.pcap"
    path.write_bytes(pcap(frames))
    capture = str(path)
    add = Spool.add
    stopped: list[int] = []

    def stop_in_the_closed_one(self: Spool, result: SessionResult) -> None:
        # In whichever process holds it (a -j worker holds nothing back).
        if result.session.close == "fin" and not stopped:
            stopped.append(result.session.client_port)
            raise KeyboardInterrupt
        add(self, result)

    monkeypatch.setattr(Spool, "add", stop_in_the_closed_one)
    monkeypatch.setattr(parallel, "DEFERRED_SESSIONS", 0)
    cut = tmp_path / "cut"
    assert cli.main(["read", "-q", "-j", jobs, "-o", str(cut), capture]) in (0, 130)
    rows = (cut / "sessions.jsonl").read_text().splitlines()
    closes = {json.loads(row)["client_port"]: json.loads(row)["close"] for row in rows}
    if jobs == "1":
        assert closes == {40000: "interrupted", 40001: "fin", 40002: "interrupted"}
    else:
        # 40000 and 40001 are this process's share (capture.libpcap.shard_of);
        # the worker holding 40002 is stopped too, at whatever packet it
        # had reached.
        assert (closes[40000], closes[40001]) == ("interrupted", "fin")
        assert closes.get(40002, "interrupted") in ("interrupted", "end_of_capture")
