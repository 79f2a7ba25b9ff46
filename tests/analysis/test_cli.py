"""The ``smtpscope`` command, with the pipeline replaced by hand-made sessions.

``FakePipeline`` stands in for ``analysis.pipeline.analyze``: it records how
it was called, yields the sample sessions and can then report damage, raise
an OSError or be interrupted, as the real pipeline may.
"""

from __future__ import annotations

import importlib.abc
import io
import json
import logging
import os
import struct
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from analysis import cli, launch, pipeline
from analysis.cli import PROGRESS_THRESHOLD, main
from analysis.records import SessionResult
from tests.analysis.table_samples import sample_results
from tests.analysis.test_tls_captures import needs_tshark


class FakePipeline:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], frozenset[int]]] = []
        self.implicit_tls: list[frozenset[int]] = []
        self.damage: str | None = None
        self.raise_after: BaseException | None = None

    def __call__(
        self,
        paths: Sequence[str],
        ports: frozenset[int] = pipeline.DEFAULT_PORTS,
        *,
        stats: pipeline.RunStats | None = None,
        progress: pipeline.ProgressHook | None = None,
        tls_keylog: str | None = None,
        max_connections: int | None = None,
        implicit_tls_ports: frozenset[int] = pipeline.IMPLICIT_TLS_PORTS,
    ) -> Iterator[SessionResult]:
        assert stats is not None
        assert max_connections == pipeline.DEFAULT_MAX_CONNECTIONS
        self.calls.append((list(paths), ports))
        self.implicit_tls.append(implicit_tls_ports)
        stats.captures += len(paths)
        yield from sample_results()
        if self.damage is not None:
            stats.errors.append(self.damage)
        if self.raise_after is not None:
            raise self.raise_after


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    fake = FakePipeline()
    monkeypatch.setattr(pipeline, "analyze", fake)
    return fake


@pytest.fixture
def capture(tmp_path: Path) -> str:
    path = tmp_path / "one.pcap"
    path.write_bytes(b"")  # never parsed: the pipeline is faked
    return str(path)


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: smtpscope" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("smtpscope ")


def test_read_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--output", "--format", "--port", "--limit", "--no-summary", "-q"):
        assert option in out
    assert "25, 465, 587, 2525" in " ".join(out.split())
    assert "Exit status" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["read"],
        ["read", "--bogus", "x.pcap"],
        ["read", "--port", "0", "x.pcap"],
        ["read", "--port", "65536", "x.pcap"],
        ["read", "--port", "smtp", "x.pcap"],
        ["read", "--port", "25,x", "x.pcap"],
        ["read", "--port", "-5", "x.pcap"],
        ["read", "--tls-port", "0", "x.pcap"],
        ["read", "--tls-port", "10465,smtps", "x.pcap"],
        # Digits of other scripts: int() reads them, a user meant none.
        ["read", "--tls-port", "\u0661\u0660\u0664\u0666\u0665", "x.pcap"],
        ["read", "--port", "\uff12\uff15", "x.pcap"],
        ["read", "--limit", "-1", "x.pcap"],
        ["read", "--format", "xml", "-o", "out", "x.pcap"],
        ["read", "--format", "csv", "x.pcap"],
        ["read", "-", "-"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], fake: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert ": error: " in capsys.readouterr().err
    assert fake.calls == []


def test_read_shows_summary_and_sessions(
    fake: FakePipeline, capture: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", capture]) == 0
    out, err = capsys.readouterr()
    assert "smtpscope summary" in out
    assert "203.0.113.7" in out
    assert "\x1b[31m" not in out
    assert err == ""
    assert fake.calls == [([capture], pipeline.DEFAULT_PORTS)]


def test_ports_add_to_the_defaults(fake: FakePipeline, capture: str) -> None:
    assert main(["read", "--port", "2526", "--port", "10025, 10026", capture]) == 0
    assert fake.calls[0][1] == pipeline.DEFAULT_PORTS | {2526, 10025, 10026}
    assert fake.implicit_tls == [pipeline.IMPLICIT_TLS_PORTS]


def test_tls_ports_are_watched_and_implicit_tls(
    fake: FakePipeline, capture: str
) -> None:
    argv = ["read", "--tls-port", "10465", "--tls-port", "20465, 30465", capture]
    assert main(argv) == 0
    assert fake.calls[0][1] == pipeline.DEFAULT_PORTS | {10465, 20465, 30465}
    assert fake.implicit_tls == [frozenset({465, 10465, 20465, 30465})]


def test_a_port_given_to_both_options_is_implicit_tls(
    fake: FakePipeline, capture: str
) -> None:
    assert main(["read", "--port", "10465", "--tls-port", "10465", capture]) == 0
    assert fake.calls[0][1] == pipeline.DEFAULT_PORTS | {10465}
    assert fake.implicit_tls == [frozenset({465, 10465})]


@pytest.mark.parametrize("command", ["read", "live", "check"])
def test_every_command_with_port_offers_tls_port(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--port N" in out and "--tls-port N" in out


def test_stdin_is_passed_to_the_pipeline(fake: FakePipeline, capture: str) -> None:
    assert main(["read", "-q", capture, "-"]) == 0
    assert fake.calls[0][0] == [capture, "-"]


def test_output_options(
    fake: FakePipeline, capture: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", "--no-summary", "--limit", "1", capture]) == 0
    out = capsys.readouterr().out
    assert "smtpscope summary" not in out
    assert "… and 2 more (--limit 0 shows all; -o writes all)" in out

    assert main(["read", "-q", capture]) == 0
    assert capsys.readouterr() == ("", "")


def test_tables_are_written(fake: FakePipeline, capture: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["read", "-q", "-o", str(out), capture]) == 0
    sessions = (out / "sessions.jsonl").read_text().splitlines()
    assert [json.loads(line)["session_id"] for line in sessions] == [
        "s-a",
        "s-0",
        "s-b",
    ]

    assert main(["read", "-q", "-o", str(out), "--format", "csv", capture]) == 0
    assert (out / "commands.csv").read_text().startswith("session_id,ts,verb,")


def test_missing_file_is_reported_and_nothing_is_read(
    fake: FakePipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pcap"
    assert main(["read", "-o", str(tmp_path / "out"), str(missing)]) == 1
    out, err = capsys.readouterr()
    assert err == f"smtpscope: cannot read {missing}: No such file or directory\n"
    assert out == ""
    assert fake.calls == []
    assert not (tmp_path / "out" / "sessions.jsonl").exists()


def test_each_bad_input_is_reported_and_the_rest_read(
    fake: FakePipeline, capture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["read", str(tmp_path / "a.pcap"), capture, str(tmp_path), "b\x1b[2J.pcap"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"smtpscope: cannot read {tmp_path / 'a.pcap'}: No such file or directory",
        f"smtpscope: cannot read {tmp_path}: Is a directory",
        "smtpscope: cannot read b\\x1b[2J.pcap: No such file or directory",
    ]
    assert fake.calls[0][0] == [capture]
    assert "smtpscope summary" in out


def test_a_file_that_is_no_capture_gets_its_error_and_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by a first-time user: a summary panel of zeros above the error.
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    assert main(["read", str(text)]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"smtpscope: {text}: not a pcap or pcapng file\n")


def test_damaged_capture_keeps_earlier_sessions(
    fake: FakePipeline, capture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.damage = f"{capture}: damaged at byte 4242: truncated record"
    assert main(["read", "-o", str(tmp_path / "out"), capture]) == 1
    out, err = capsys.readouterr()
    assert err == f"smtpscope: {fake.damage}\n"
    assert "damaged inputs" in out
    assert len((tmp_path / "out" / "sessions.jsonl").read_text().splitlines()) == 3


def test_os_error_while_reading_keeps_earlier_sessions(
    fake: FakePipeline, capture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.raise_after = OSError(5, "Input/output error", capture)
    assert main(["read", "-q", "-o", str(tmp_path / "out"), capture]) == 1
    assert (
        capsys.readouterr().err
        == f"smtpscope: cannot read {capture}: Input/output error\n"
    )
    assert len((tmp_path / "out" / "sessions.jsonl").read_text().splitlines()) == 3


def test_unwritable_output_is_reported_before_reading(
    fake: FakePipeline, capture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    assert main(["read", "-o", str(tmp_path / "file"), capture]) == 1
    assert capsys.readouterr().err == (
        f"smtpscope: cannot write tables into {tmp_path / 'file'}: "
        "it is not a directory\n"
    )
    assert fake.calls == []


def test_read_output_dash_is_refused_not_made_a_directory(
    fake: FakePipeline,
    capture: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Found in a trial: "read -o -" made a directory named "-" (live -o -
    # means standard output), and one had been committed by mistake.
    monkeypatch.chdir(tmp_path)
    assert main(["read", "-o", "-", capture]) == 2
    assert capsys.readouterr().err == (
        "smtpscope: read -o takes a directory, not '-'; write ./- for one named so\n"
    )
    assert fake.calls == []
    assert not (tmp_path / "-").exists()


def test_missing_pyarrow_is_reported_before_reading(
    fake: FakePipeline,
    capture: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    argv = ["read", "-o", str(tmp_path), "--format", "parquet", capture]
    assert main(argv) == 1
    assert "needs pyarrow" in capsys.readouterr().err
    assert fake.calls == []


def test_interrupt_exits_130(
    fake: FakePipeline, capture: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.raise_after = KeyboardInterrupt()
    assert main(["read", capture]) == 130
    # What was read before Ctrl-C is still shown.
    out, err = capsys.readouterr()
    assert "smtpscope summary" in out
    assert err == "smtpscope: interrupted: the report shows what was read until then\n"


def test_closed_stdout_exits_quietly(
    fake: FakePipeline,
    capture: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def closed_pipe(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_show", closed_pipe)
    assert main(["read", capture]) == 141
    assert capsys.readouterr().err == ""


def test_closed_pipe_seen_by_rich_exits_quietly(
    fake: FakePipeline,
    capture: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["read", capture]) == 141
    assert capsys.readouterr().err == ""


def test_progress_bar_waits_for_large_inputs() -> None:
    with cli._ProgressBar(enabled=True) as hook:
        assert hook is not None
        hook("small.pcap", 1000, 2000)
        assert hook._task is None  # type: ignore[attr-defined]
        hook("big.pcap", 0, PROGRESS_THRESHOLD + 1)
        assert hook._task is not None  # type: ignore[attr-defined]
    with cli._ProgressBar(enabled=False) as hook:
        assert hook is None


def test_verbose_logging_escapes_wire_text(
    fake: FakePipeline, capture: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        assert main(["read", "-q", "-vv", capture]) == 0
        logging.getLogger("analysis.test").debug("line %s", "x\x1b[2Jy")
        assert "DEBUG analysis.test: line x\\x1b[2Jy" in capsys.readouterr().err
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)


def test_verbose_lines_name_the_share_under_jobs_and_only_there() -> None:
    # Found in review: with -j 2 both processes logged "reading auth.pcap",
    # which read as if the capture were read twice.
    def logged(*jobs: str) -> list[str]:
        argv = ["read", str(PCAPS / "auth.pcap"), "-q", "-v", *jobs]
        done = subprocess.run(
            [sys.executable, "-m", "analysis", *argv],
            cwd=PCAPS.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stdout) == (0, "")
        return done.stderr.splitlines()

    reading = f"INFO capture.source: reading {PCAPS / 'auth.pcap'}"
    closed = "INFO analysis.pipeline: session {} closed (fin)"
    ids = ["Szkyy4lfbfkthc33c", "St7q3wod27oerqxk3", "Suhoxbsxnzi33qbfg"]
    ids.append("Sxj2qo5m6mdksxfey")
    one = [reading, *(closed.format(sid) for sid in ids)]
    assert logged() == one
    assert logged("-j", "1") == one
    # Each process's lines in its order; the processes' lines interleave.
    two = logged("-j", "2")
    assert [line for line in two if line.startswith("[1/2] ")] == [
        f"[1/2] {reading}",
        *(f"[1/2] {closed.format(sid)}" for sid in ids[2:]),
    ]
    assert [line for line in two if line.startswith("[2/2] ")] == [
        f"[2/2] {reading}",
        *(f"[2/2] {closed.format(sid)}" for sid in ids[:2]),
    ]
    assert len(two) == 6


def test_jobs_asked_for_but_unusable_get_a_note(tmp_path: Path) -> None:
    # -j N was ignored without a word for input that can be read only once
    # and for --tls-keylog: a user asking for N processes is told why not.
    def stderr_of(*argv: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "analysis", "read", "-q", *argv],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=120,
        )
        assert (done.returncode, done.stdout) == (0, b"")
        return done.stderr.decode()

    capture = (PCAPS / "auth.pcap").read_bytes()
    note = "smtpscope: note: reading with one process, not {}: {}\n"
    once = "standard input can be read only once"
    assert stderr_of("-j", "2", "-", stdin=capture) == note.format(2, once)
    assert stderr_of("-j", "1", "-", stdin=capture) == ""
    assert stderr_of("-", stdin=capture) == ""  # not asked: nothing to say

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [sys.executable, "-c", f"open({str(fifo)!r}, 'wb').write({capture!r})"]
    )
    try:
        said = stderr_of("-j", "3", str(fifo))
    finally:
        writer.wait(timeout=60)
    assert said == note.format(3, f"{fifo} can be read only once")

    needs_tshark()
    keylog = ["--tls-keylog", str(PCAPS / "starttls.keylog")]
    starttls = str(PCAPS / "starttls.pcap")
    tshark = "--tls-keylog decrypts whole captures with tshark"
    assert stderr_of("-j", "2", *keylog, starttls) == note.format(2, tshark)
    assert stderr_of(*keylog, starttls) == ""


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "--version"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("smtpscope ")


def test_stdin_from_a_terminal_is_a_usage_error(
    fake: FakePipeline,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    assert main(["read", "-"]) == 2
    assert "standard input, which is a terminal" in capsys.readouterr().err
    assert fake.calls == []


PCAPS = Path(__file__).resolve().parents[2] / "pcaps"


def test_end_to_end_on_the_projects_own_captures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captures = sorted(str(p) for p in PCAPS.glob("*.pcap"))
    assert main(["read", "-o", str(tmp_path), *captures]) == 0
    out, err = capsys.readouterr()
    # Recordings made one after the other: by name they are not in time
    # order, but they are read in it, and none overlaps another.
    assert err == ""
    assert f"captures               {len(captures)}" in out
    sessions = (tmp_path / "sessions.jsonl").read_text().splitlines()
    assert len(sessions) > len(captures)


def test_end_to_end_damaged_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = (PCAPS / "rset-multi.pcap").read_bytes()
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes(whole[: len(whole) // 2])
    intact = str(PCAPS / "plain-delivery.pcap")
    out_dir = tmp_path / "out"
    assert main(["read", "-q", "-o", str(out_dir), intact, str(damaged)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"smtpscope: {damaged}: damaged at byte ")
    sessions = [json.loads(line) for line in (out_dir / "sessions.jsonl").open()]
    # The intact capture's session and the one cut short are both kept.
    assert len(sessions) == 2


class _InterruptedImport(importlib.abc.MetaPathFinder):
    """A KeyboardInterrupt while Python loads ``analysis.cli``: not a Ctrl-C,
    which is held there (see test_interrupt), but where stops cannot be held
    (``run`` called from another thread) one could land there."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "analysis.cli":
            raise KeyboardInterrupt


def test_ctrl_c_while_the_modules_load_is_quiet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: a Ctrl-C in the first few dozen milliseconds, while
    # the modules load, ended the command with a traceback.
    monkeypatch.delitem(sys.modules, "analysis.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    assert launch.run() == 130
    assert capsys.readouterr().err == "smtpscope: interrupted\n"


def test_the_command_is_started_through_launch() -> None:
    with open(Path(__file__).parents[2] / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"smtpscope": "analysis.launch:run"}
    done = subprocess.run(
        [sys.executable, "-m", "analysis", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("smtpscope ")


def test_a_link_type_nothing_decodes_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 0xFFFF)
    record = struct.pack("<IIII", 1_700_000_000, 0, 60, 60) + b"x" * 60
    weird = tmp_path / "weird.pcap"
    weird.write_bytes(header + record)
    assert main(["read", str(weird), "-q"]) == 1
    assert capsys.readouterr().err == (
        f"smtpscope: {weird}: 1 packet skipped: their link type is not one "
        "smtpscope decodes\n"
    )


@pytest.mark.parametrize("frames", [False, True])
def test_a_report_into_a_file_or_pipe_shows_every_column(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    frames: bool,
) -> None:
    # rich takes 80 columns where standard output is no terminal; the
    # sessions table would leave out helo and close to fit them.
    monkeypatch.delenv("COLUMNS", raising=False)
    argv = ["read", str(PCAPS / "auth.pcap")]
    if frames:  # the report from DataFrames, as with Parquet
        pytest.importorskip("pyarrow")
        argv += ["-o", str(tmp_path), "--format", "parquet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "too narrow" not in out
    assert (
        "start    session_id        client          server        helo        "
        "          tls  auth         mails accepted close anomalies\n"
    ) in out
    assert (
        "16:44:08 St7q3wod27oerqxk3 127.0.0.1:38970 127.0.0.1:587 "
        "client.smtpscope.test none LOGIN failed     0        0 fin           1\n"
    ) in out

    monkeypatch.setenv("COLUMNS", "100")
    assert main(argv) == 0
    assert "too narrow to show: helo, close" in capsys.readouterr().out


def test_rules_prints_the_defaults_and_checks_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # After a plain pip install the defaults file sits deep in site-packages:
    # a first-time user found no way to see it.
    shipped = Path(__file__).resolve().parents[2] / "analysis/detect/default_rules.toml"
    assert main(["rules"]) == 0
    assert capsys.readouterr().out == shipped.read_text()

    mine = tmp_path / "rules.toml"
    mine.write_text("[syn_flood]\nthreshold = 50\n")
    assert main(["rules", str(mine)]) == 0
    assert capsys.readouterr().out == f"{mine}: a valid rules file\n"
    mine.write_text("[syn_flood]\nthreshold = 'fifty'\n")
    assert main(["rules", str(mine)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"smtpscope: {mine}: ")


def test_rules_offers_no_verbose_option_the_commands_that_read_keep_theirs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Found in review: rules offered -v, which meant nothing there.
    assert main(["rules", "--help"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "usage: smtpscope rules [-h] [FILE]"
    )
    assert main(["rules", "-v"]) == 2
    assert capsys.readouterr().err.endswith(
        "smtpscope rules: error: unrecognized arguments: -v\n"
    )
    for command in ("read", "live", "check"):
        parser = cli.build_parser().commands[command]
        verbose = [a for a in parser._actions if a.dest == "verbose"]
        assert [a.option_strings for a in verbose] == [["-v", "--verbose"]]


def test_a_rules_file_nested_too_deeply_is_a_usage_error(
    fake: FakePipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: 500 nested brackets (1,003 bytes) made tomllib
    # recurse past Python's limit, and every command gave a traceback.
    deep = tmp_path / "deep.toml"
    deep.write_text("a=" + "[" * 500 + "]" * 500 + "\n")
    why = f"{deep}: nested too deeply (arrays or inline tables within each other)"

    assert main(["rules", str(deep)]) == 2
    assert capsys.readouterr() == ("", f"smtpscope: {why}\n")

    assert main(["read", "--rules", str(deep), str(PCAPS / "auth.pcap")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith(f"\nsmtpscope read: error: argument --rules: {why}\n")

    # check stays a monitoring plugin: one status line, UNKNOWN.
    assert main(["check", "-r", str(PCAPS / "auth.pcap"), "--rules", str(deep)]) == 3
    assert capsys.readouterr() == (
        f"SMTPSCOPE UNKNOWN - usage: argument --rules: {why}\n",
        "",
    )
    assert fake.calls == []


def test_a_key_log_that_cannot_be_read_is_a_usage_error_like_rules(
    fake: FakePipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It exited 2 as a usage error, but without the usage line and the
    # option's name that a --rules file that cannot be read gets.
    capture = str(PCAPS / "auth.pcap")
    missing = tmp_path / "keys.log"
    assert main(["read", capture, "--tls-keylog", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: smtpscope read ")
    assert err.endswith(
        f"\nsmtpscope read: error: argument --tls-keylog: cannot read {missing}: "
        "No such file or directory\n"
    )

    assert main(["read", capture, "--tls-keylog", str(tmp_path)]) == 2
    assert capsys.readouterr().err.endswith(
        f"--tls-keylog: cannot read {tmp_path}: Is a directory\n"
    )
    assert fake.calls == []


def test_usage_errors_escape_what_the_user_typed(
    fake: FakePipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A --rules path that cannot be read reached the terminal as typed,
    # escape sequences included; the capture's own path was escaped.
    odd = f"{tmp_path}/\x1b[31mred"
    for option in ("--rules", "--tls-keylog"):
        assert main(["read", str(PCAPS / "auth.pcap"), option, odd]) == 2
        err = capsys.readouterr().err
        assert "\x1b" not in err
        assert err.endswith(
            f"error: argument {option}: cannot read {tmp_path}/\\x1b[31mred: "
            "No such file or directory\n"
        )
    assert fake.calls == []


def test_unrecognized_arguments_are_the_command_s_usage_error(
    fake: FakePipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: argparse said so on the top-level parser, which
    # escaped nothing and gave check, a monitoring plugin, exit 2 and no
    # status line.
    capture = str(PCAPS / "auth.pcap")
    assert main(["read", capture, "--bogus", "\x1b[31m"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: smtpscope read ")
    assert err.endswith(
        "smtpscope read: error: unrecognized arguments: --bogus \\x1b[31m\n"
    )
    assert main(["check", "-r", capture, "--bogus"]) == 3
    assert capsys.readouterr() == (
        "SMTPSCOPE UNKNOWN - usage: unrecognized arguments: --bogus\n",
        "",
    )
    assert fake.calls == []


def test_a_key_log_that_is_no_file_is_refused(
    fake: FakePipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: a named pipe was read for its size, then again by
    # tshark, which waited for ever.
    fifo = tmp_path / "keys"
    os.mkfifo(fifo)
    assert main(["read", str(PCAPS / "starttls.pcap"), "--tls-keylog", str(fifo)]) == 2
    assert capsys.readouterr().err.endswith(
        f"error: argument --tls-keylog: {fifo}: not a regular file (it is read "
        "twice, the second time by tshark; save the key log to a file first)\n"
    )
    assert fake.calls == []


def test_live_metrics_address_in_use_is_named_as_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The address was shown as a Python tuple: "on ('127.0.0.1', 9100)".
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status = main(["live", "-i", "lo", "--metrics", f"127.0.0.1:{port}"])
    assert status == cli.Exit.INPUT
    err = capsys.readouterr().err
    assert f"cannot serve metrics on 127.0.0.1:{port}: " in err


@pytest.mark.parametrize("columns", ["0", "00"])
def test_a_width_of_zero_columns_still_shows_the_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: str
) -> None:
    # Found in review: rich takes COLUMNS=0 for a width of 0 and prints
    # nothing, so the report vanished and the exit status said all was well.
    # A width of 0 is no width: as without COLUMNS, every column is shown.
    monkeypatch.setenv("COLUMNS", columns)
    assert main(["read", str(PCAPS / "auth.pcap")]) == 0
    out = capsys.readouterr().out
    assert "smtpscope summary" in out
    assert "client.smtpscope.test none LOGIN failed     0        0 fin" in out


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_table_whose_name_is_a_directory_replaces_no_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    # Found in review: with DIR/tls.jsonl a directory, the five other tables
    # were replaced and the message named a temporary file; the tables go
    # into place together or not at all.
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    capture = str(PCAPS / "auth.pcap")
    assert main(["read", "-q", "--format", fmt, "-o", str(out), capture]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    blocker = out / f"tls.{fmt}"
    blocker.unlink()
    blocker.mkdir()
    del before[blocker.name]

    again = [
        "read",
        "-q",
        "--format",
        fmt,
        "-o",
        str(out),
        str(PCAPS / "rset-multi.pcap"),
    ]
    assert main(again) == 1
    assert (
        capsys.readouterr().err
        == f"smtpscope: cannot write {blocker}: Is a directory\n"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, blocker.name])
