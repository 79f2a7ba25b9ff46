"""A stop once reading is over: the tables of all that was read are finished.

Writing the tables replays every session (seconds on a large capture), and
with ``-j`` the workers' shares are gathered first. A first Ctrl-C or
SIGTERM there is only said: the run writes the same files as a run not
stopped and exits 130. A second one abandons them, and the files of an
earlier run stay as they were.

Each stop is a real signal, raised in this process from inside the named
function on its chosen call, so that it goes through the handlers the
command set, as a terminal's Ctrl-C would.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from analysis import cli, export, liverun, offline, parallel, pipeline, rowfiles, views
from analysis.rowfiles import Format
from analysis.schema import TABLES
from analysis.spool import Spool
from tests.analysis.test_interrupt import _interrupted_source

PCAPS = Path(__file__).parents[2] / "pcaps"
CAPTURES = [str(PCAPS / "rset-multi.pcap"), str(PCAPS / "auth.pcap")]

NOTED = (
    "smtpscope: interrupted: writing the tables of everything read; "
    "a second Ctrl-C abandons them\n"
)
DONE = "smtpscope: interrupted after reading: the tables hold everything read\n"


def _abandoned(directory: Path) -> str:
    return (
        "smtpscope: interrupted again: the tables were abandoned, "
        f"none in {directory} was replaced\n"
    )


def _signal_at(
    calls: set[int], signum: int = signal.SIGINT
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a function so that each of its calls numbered in ``calls``
    (from 1) first sends this process ``signum``."""

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        made = 0

        def signalled(*args: Any, **kwargs: Any) -> Any:
            nonlocal made
            made += 1
            if made in calls:
                signal.raise_signal(signum)
            return real(*args, **kwargs)

        return signalled

    return wrap


def _stop_in(
    monkeypatch: pytest.MonkeyPatch, where: str, calls: set[int], signum: int
) -> None:
    """Send ``signum`` from inside ``where`` on the calls numbered."""
    stop = _signal_at(calls, signum)
    if where == "parquet writer":
        writer = stop(export._WRITERS[Format.PARQUET])
        monkeypatch.setitem(export._WRITERS, Format.PARQUET, writer)
        return
    owner, name = {
        "TableFiles.write_text": (rowfiles.TableFiles, "write_text"),
        "Spool.adopt": (Spool, "adopt"),
        "_merged_stats": (parallel, "_merged_stats"),
        "_trim_heap": (cli, "_trim_heap"),
        "ReportDigest.add": (views.ReportDigest, "add"),
        "finish": (offline.AlertEngine, "drain"),
    }[where]
    monkeypatch.setattr(owner, name, stop(getattr(owner, name)))


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _unstopped(tmp_path: Path, fmt: str, jobs: str) -> dict[str, bytes]:
    """The files a run not stopped writes."""
    clean = tmp_path / "clean"
    argv = ["read", *CAPTURES, "-q", "-j", jobs, "-o", str(clean), "--format", fmt]
    assert cli.main(argv) == 0
    return _files(clean)


def _same_tables(got: dict[str, bytes], want: dict[str, bytes], fmt: str) -> None:
    assert sorted(got) == sorted(f"{table}.{fmt}" for table in TABLES)
    if fmt != "parquet":
        assert got == want
        return
    import io

    import pandas as pd

    for name, data in want.items():
        expected = pd.read_parquet(io.BytesIO(data))
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(got[name])), expected)


# Where a first stop can come once reading is over, with the -j it needs:
# the shares gathered (-j 2 and 3), the gap before the writing, the rows
# written, the Parquet files written from the DataFrames.
_POINTS = [
    ("Spool.adopt", "3", "jsonl", {1}),
    ("Spool.adopt", "2", "jsonl", {1}),
    ("_merged_stats", "2", "csv", {1}),
    ("_trim_heap", "1", "jsonl", {1}),
    ("_trim_heap", "3", "csv", {1}),
    ("TableFiles.write_text", "1", "jsonl", {2}),
    ("TableFiles.write_text", "2", "csv", {2}),
    ("TableFiles.write_text", "3", "jsonl", {1}),
    ("parquet writer", "1", "parquet", {2}),
    ("parquet writer", "2", "parquet", {6}),
    ("finish", "1", "csv", {1}),
]


@pytest.mark.parametrize(("where", "jobs", "fmt", "calls"), _POINTS)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_first_stop_after_reading_writes_every_table_in_full(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: str,
    jobs: str,
    fmt: str,
    calls: set[int],
    signum: int,
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    want = _unstopped(tmp_path, fmt, jobs)
    capsys.readouterr()

    _stop_in(monkeypatch, where, calls, signum)
    out = tmp_path / "out"
    argv = ["read", *CAPTURES, "-q", "-j", jobs, "-o", str(out), "--format", fmt]
    status = cli.main(argv)

    assert (status, capsys.readouterr()) == (130, ("", NOTED + DONE))
    _same_tables(_files(out), want, fmt)
    # The handlers from before the run are back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(
    ("where", "jobs", "fmt", "calls"),
    [
        ("Spool.adopt", "3", "jsonl", {1, 2}),
        ("_trim_heap", "2", "csv", {1}),  # both stops in the one call
        ("TableFiles.write_text", "1", "jsonl", {1, 2}),
        ("TableFiles.write_text", "3", "csv", {2, 3}),
        ("parquet writer", "2", "parquet", {1, 4}),
    ],
)
def test_a_second_stop_abandons_the_tables_and_keeps_the_old_ones(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: str,
    jobs: str,
    fmt: str,
    calls: set[int],
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    out.mkdir()
    old = out / f"sessions.{fmt}"
    old.write_text("from an earlier run\n")
    if where == "_trim_heap":
        # Two stops in one call: Ctrl-C pressed twice in quick succession.
        def twice() -> None:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)

        monkeypatch.setattr(cli, "_trim_heap", twice)
    else:
        _stop_in(monkeypatch, where, calls, signal.SIGINT)

    argv = ["read", *CAPTURES, "-q", "-j", jobs, "-o", str(out), "--format", fmt]
    status = cli.main(argv)

    assert (status, capsys.readouterr()) == (130, ("", NOTED + _abandoned(out)))
    # Only the earlier run's file: no table of this run, nor any of its
    # temporary files, which could pass for a table.
    assert _files(out) == {old.name: b"from an earlier run\n"}


def test_a_third_stop_does_not_leave_the_temporary_files(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Ctrl-C pressed three times: the third lands while the abandoned
    # tables' temporary files are deleted, and must not cut that short.
    _stop_in(monkeypatch, "TableFiles.write_text", {1, 2}, signal.SIGINT)
    monkeypatch.setattr(Path, "unlink", _signal_at({1})(Path.unlink))
    out = tmp_path / "out"
    out.mkdir()
    old = out / "sessions.jsonl"
    old.write_text("from an earlier run\n")

    argv = ["read", *CAPTURES, "-q", "-j", "1", "-o", str(out)]
    status = cli.main(argv)

    assert (status, capsys.readouterr()) == (130, ("", NOTED + _abandoned(out)))
    assert _files(out) == {old.name: b"from an earlier run\n"}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_second_stop_while_the_tables_are_renamed_says_they_were_written(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fmt: str,
) -> None:
    # The renames hold the stop back until all are done: every table is
    # then this run's, and stderr must not say the old ones were kept.
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    want = _unstopped(tmp_path, fmt, "1")
    capsys.readouterr()
    _stop_in(monkeypatch, "_trim_heap", {1}, signal.SIGINT)
    monkeypatch.setattr(os, "replace", _signal_at({3})(os.replace))
    out = tmp_path / "out"

    argv = ["read", *CAPTURES, "-q", "-j", "1", "-o", str(out), "--format", fmt]
    status = cli.main(argv)

    again = "smtpscope: interrupted again, once the tables were written\n"
    assert (status, capsys.readouterr()) == (130, ("", NOTED + again))
    _same_tables(_files(out), want, fmt)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("reading", [False, True])
def test_a_stop_never_says_the_tables_hold_what_could_not_be_written(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fmt: str,
    reading: bool,
) -> None:
    # A directory where a table goes: its rename fails, and none is written.
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    if reading:
        monkeypatch.setattr(pipeline, "handle_stream_events", _interrupted_source)
    else:
        _stop_in(monkeypatch, "_trim_heap", {1}, signal.SIGTERM)
    out = tmp_path / "out"
    (out / f"sessions.{fmt}").mkdir(parents=True)

    argv = ["read", *CAPTURES, "-q", "-j", "1", "-o", str(out), "--format", fmt]
    status = cli.main(argv)

    err = capsys.readouterr().err.splitlines(keepends=True)
    assert status == 130
    if reading:
        assert err[-1] == "smtpscope: interrupted: the tables were not written\n"
    else:
        assert err[0] == NOTED
        last = "smtpscope: interrupted after reading: the tables were not written\n"
        assert err[-1] == last
    blocked = f"smtpscope: cannot write {out}/sessions.{fmt}: Is a directory\n"
    assert err[-2] == blocked
    assert len(err) == 2 + (not reading)
    # No table, nor any temporary file, beside the directory in the way.
    assert [p.name for p in out.iterdir()] == [f"sessions.{fmt}"]


def test_a_stop_while_reading_then_one_while_writing_abandons_the_tables(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # The stop while reading was the first: the one while writing is the
    # second, as a user pressing Ctrl-C twice means it.
    monkeypatch.setattr(pipeline, "handle_stream_events", _interrupted_source)
    _stop_in(monkeypatch, "TableFiles.write_text", {1}, signal.SIGINT)
    out = tmp_path / "out"
    status = cli.main(["read", *CAPTURES, "-q", "-j", "1", "-o", str(out)])
    assert (status, capsys.readouterr()) == (130, ("", _abandoned(out)))
    assert _files(out) == {}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_first_stop_after_reading_still_shows_the_whole_report(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    jobs: str,
) -> None:
    argv = ["read", *CAPTURES, "-j", jobs, "--limit", "0"]
    assert cli.main(argv) == 0
    want = capsys.readouterr().out

    _stop_in(monkeypatch, "ReportDigest.add", {2}, signal.SIGINT)
    status = cli.main(argv)
    assert (status, capsys.readouterr()) == (
        130,
        (
            want,
            "smtpscope: interrupted: finishing the report of everything read; "
            "a second Ctrl-C abandons it\n"
            "smtpscope: interrupted after reading: "
            "the report shows everything read\n",
        ),
    )


def test_a_second_stop_abandons_the_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stop_in(monkeypatch, "ReportDigest.add", {1, 2}, signal.SIGINT)
    status = cli.main(["read", *CAPTURES, "-j", "1"])
    assert (status, capsys.readouterr()) == (
        130,
        (
            "",
            "smtpscope: interrupted: finishing the report of everything read; "
            "a second Ctrl-C abandons it\n"
            "smtpscope: interrupted again: the rest of the run was abandoned\n",
        ),
    )


def test_a_quiet_run_without_tables_says_it_finishes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stop_in(monkeypatch, "_trim_heap", {1}, signal.SIGTERM)
    status = cli.main(["read", *CAPTURES, "-q", "-j", "2"])
    assert (status, capsys.readouterr()) == (
        130,
        (
            "",
            "smtpscope: interrupted: finishing the run; "
            "a second Ctrl-C abandons it\n"
            "smtpscope: interrupted after reading\n",
        ),
    )


@pytest.mark.parametrize("stops", [{1}, {1, 2}])
def test_check_judges_everything_read_after_a_first_stop(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stops: set[int],
) -> None:
    # check -r writes no tables, but the detectors' judgement comes after
    # the reading as the writing does: a first stop there still gives the
    # verdict of all that was read, a second gives none.
    argv = ["check", "-r", *CAPTURES, "--refusal-warn", "0.2"]
    status = cli.main(argv)
    want = capsys.readouterr().out

    monkeypatch.setattr(offline.AlertEngine, "drain", _twice_in_drain(stops))
    noted = (
        "smtpscope: interrupted: judging everything read; "
        "a second Ctrl-C gives no verdict\n"
    )
    if stops == {1}:
        assert (cli.main(argv), capsys.readouterr()) == (status, (want, noted))
    else:
        assert (cli.main(argv), capsys.readouterr()) == (
            3,
            ("SMTPSCOPE UNKNOWN - stopped before a verdict\n", noted),
        )


def _twice_in_drain(stops: set[int]) -> Callable[..., Any]:
    real = offline.AlertEngine.drain

    def drain(self: Any) -> Any:
        for _ in stops:
            signal.raise_signal(signal.SIGINT)
        return real(self)

    return drain


def test_check_prints_its_verdict_whatever_stop_comes_once_it_is_made(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", "-r", *CAPTURES, "--refusal-warn", "0.2"]
    status = cli.main(argv)
    want = capsys.readouterr().out

    # The first stop while the detectors judge, the second as the line goes.
    monkeypatch.setattr(offline.AlertEngine, "drain", _twice_in_drain({1}))

    def printed(*args: Any, **kwargs: Any) -> None:
        signal.raise_signal(signal.SIGINT)
        print(*args, **kwargs)

    monkeypatch.setattr(liverun, "print", printed, raising=False)
    noted = (
        "smtpscope: interrupted: judging everything read; "
        "a second Ctrl-C gives no verdict\n"
    )
    assert (cli.main(argv), capsys.readouterr()) == (status, (want, noted))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
