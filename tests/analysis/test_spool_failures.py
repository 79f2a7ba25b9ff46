"""``read -o`` under -j N and when the disk fails: status, messages, old files.

Found in review: an interrupted ``-j N`` run exited 0 without saying so; a
full disk gave tracebacks and left temporary files, and under ``-j N`` a
worker that could not spool replaced the previous files with empty tables.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis import cli, parallel, pipeline, spool
from analysis.records import SessionResult
from analysis.rowfiles import Format, TableFiles
from capture import source
from capture.stream import StreamClosed, StreamEvent
from tests.analysis.same import same_files
from tests.analysis.test_interrupt import AUTH, CAPTURE

# Two captures in the order smtpscope reads them, their time order: LATER
# (auth.pcap, four sessions, in both shares of two) was recorded after
# EARLIER (plain-delivery.pcap, one session). The rounds at the start of a
# capture are those of LATER.
ROOT = Path(__file__).parents[2]
EARLIER = str(ROOT / "pcaps" / "plain-delivery.pcap")
LATER = AUTH


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_interrupted_sharded_run_says_so(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    jobs: str,
) -> None:
    # Workers are forked, so they are interrupted at the same place, each by
    # a SIGINT of its own as a Ctrl-C gives every process of the group: a
    # worker then ignores the one the parent sends it once its own share is
    # interrupted (parallel._interrupt_once), as in a real Ctrl-C.
    monkeypatch.setattr(pipeline, "handle_stream_events", _signalled_source)
    status = cli.main(["read", CAPTURE, "-q", "-o", str(tmp_path), "-j", jobs])
    err = capsys.readouterr().err
    assert status == 130, err
    assert "interrupted" in err
    assert '"close":"interrupted"' in (tmp_path / "sessions.jsonl").read_text()
    assert _leftovers(tmp_path) == []


def _signalled_source(
    paths: list[str],
    handle: Callable[[StreamEvent], SessionResult | None],
    *args: Any,
    **kwargs: Any,
) -> Iterator[SessionResult]:
    """The real events of the capture, until a SIGINT before the close."""

    def until_the_close(event: StreamEvent) -> SessionResult | None:
        if isinstance(event, StreamClosed):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises KeyboardInterrupt first
        return handle(event)

    return source.handle_stream_events(paths, until_the_close, *args, **kwargs)


class _FullDisk:
    """A spool file on a full filesystem: writes, flushes and closes fail."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self._real.close()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _fill_spools(
    monkeypatch: pytest.MonkeyPatch, *, workers_only: bool = False
) -> None:
    """Every spool file made from now on is on a full disk; with
    ``workers_only``, only those of -j workers (named: see Spool), not this
    process's own."""
    real = spool.Spool._new_file

    def full(self: spool.Spool) -> Any:
        handle = real(self)
        if workers_only and not self._named:
            return handle
        broken = self._files[-1] = _FullDisk(handle)
        return broken

    monkeypatch.setattr(spool.Spool, "_new_file", full)


def test_a_full_disk_under_the_spool_gives_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _fill_spools(monkeypatch)
    (tmp_path / "sessions.jsonl").write_text("old\n")
    # Without -q the report is replayed again after the failure, and that
    # replay failed the same way, with a traceback (found in review: read
    # -o DIR on a tmpfs nearly full).
    for jobs, quiet in (("1", ["-q"]), ("2", ["-q"]), ("1", [])):
        argv = ["read", EARLIER, LATER, *quiet, "-o", str(tmp_path), "-j", jobs]
        status = cli.main(argv)
        err = capsys.readouterr().err
        assert status == 1
        assert err.startswith(f"smtpscope: cannot write {tmp_path}: No space left")
        assert "Traceback" not in err and "Exception ignored" not in err
        assert "cannot read" not in err  # it is the spool that cannot be written
        # The run failed: the previous files stay as they were.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.jsonl"]
        assert (tmp_path / "sessions.jsonl").read_text() == "old\n"


def test_a_full_disk_under_a_workers_spool_names_the_directory_given(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Found in review: a worker's spool (a file of its own in a scratch
    # directory within DIR) said "cannot write DIR/.smtpscope-spool-...",
    # a directory gone by the time the message was read.
    _fill_spools(monkeypatch, workers_only=True)
    argv = ["read", EARLIER, LATER, "-q", "-o", str(tmp_path), "-j", "2"]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == (
        f"smtpscope: cannot write {tmp_path}: No space left on device\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quiet", [True, False])
def test_a_full_disk_under_the_alerts_scratch_file_says_so(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    quiet: bool,
) -> None:
    # Found in review (a tmpfs too small for the alerts' scratch file, the
    # last thing read -o writes before the alerts table): "cannot write: No
    # space left on device", which did not say what needed the room. Its
    # writes fail; its close, which flushes, fails again and must not hide
    # the first error.
    real = spool.Spool.scratch_file
    monkeypatch.setattr(spool.Spool, "scratch_file", lambda self: _FullDisk(real(self)))
    capture = str(ROOT / "pcaps" / "abuse" / "relay-refused.pcap")
    (tmp_path / "alerts.jsonl").write_text("old\n")
    argv = ["read", capture, "-o", str(tmp_path), *(["-q"] if quiet else [])]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert err == (
        f"smtpscope: cannot write the alerts' scratch file in {tmp_path} (their "
        "rows wait there to be put in order): No space left on device; none in "
        f"{tmp_path} was replaced\n"
    )
    # Nothing was written, nothing of the old replaced, nothing left behind;
    # the report still shows every session and alert.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alerts.jsonl"]
    assert (tmp_path / "alerts.jsonl").read_text() == "old\n"
    if quiet:
        assert out == ""
    else:
        assert "│ alerts                 2 (2 medium)" in out
        monkeypatch.undo()
        assert cli.main(["read", capture]) == 0
        assert capsys.readouterr().out == out


def test_table_files_that_cannot_be_flushed_are_still_removed(tmp_path: Path) -> None:
    (tmp_path / "sessions.csv").write_text("old\n")
    files = TableFiles(tmp_path, Format.CSV)
    for name, handle in files._handles.items():
        files._handles[name] = _FailingText(handle)
    files.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.csv"]


class _FailingText(io.StringIO):
    def __init__(self, real: Any) -> None:
        super().__init__()
        self._real = real

    def close(self) -> None:
        self._real.close()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_ctrl_c_while_waiting_for_workers_keeps_what_was_read(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    real = parallel._Worker.result

    def result(self: parallel._Worker) -> Any:
        if not getattr(self, "interrupted", False):
            # Ctrl-C once, as the parent starts waiting, after the worker
            # finished its share (so what it read is known exactly).
            self.interrupted = True  # type: ignore[attr-defined]
            self.process.join(timeout=30)
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(parallel._Worker, "result", result)
    status = cli.main(["read", EARLIER, LATER, "-q", "-o", str(tmp_path), "-j", "2"])
    assert status == 130
    assert "interrupted" in capsys.readouterr().err
    # What the parent and the worker had read is written.
    assert (tmp_path / "sessions.jsonl").read_text().count("\n") == 5
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "waiting",
    [
        "capture 1 clock",  # a round at the start of the second capture
        "capture 1 open",  # its second round
        "end",  # for the clock, once all is read
        "for the shares",
    ],
)
def test_ctrl_c_while_waiting_is_passed_on_to_the_workers(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    waiting: str,
) -> None:
    # The parent waits for the workers in rounds (parallel._agree): at the
    # start of LATER, the second capture, and once each has read everything;
    # then for their shares. Its Ctrl-C comes while it waits in one.
    real_work = parallel._work

    def slow_worker(job: Any, clock: Any) -> Any:
        # Through the rounds, and from the one where the parent stops
        # agreeing (the end's, when it stops waiting for the shares) alone,
        # once told to stop. The stop is held back until that round, so
        # what this worker reads does not depend on when it comes, and
        # waited for while held back: one that came between unblocking and
        # the start of a sleep would not cut the sleep short.
        sleep_at = "end" if waiting == "for the shares" else waiting
        # The parent tells its workers to stop with SIGTERM (a worker may
        # ignore SIGINT, as a background job does).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

        def slow_clock(idle: Any) -> Any:
            hook = clock(idle)

            def slow(name: str, mine: int | None) -> int | None:
                latest: int | None = hook(name, mine)
                if name != sleep_at:
                    return latest
                # A worker that goes on only once told to stop.
                if signal.sigtimedwait({signal.SIGTERM}, 30) is None:
                    raise AssertionError("the worker was never told to stop")
                return latest

            return slow

        return real_work(job, clock=slow_clock)

    def interrupted_once(real: Any, when: str | None = None) -> Any:
        """``real``, but Ctrl-C at its first call (in round ``when``)."""

        def wait(*args: Any) -> Any:
            due = when is None or when in args
            if due and not getattr(wait, "interrupted", False):
                wait.interrupted = True  # type: ignore[attr-defined]
                if when is not None:
                    # Once the worker waits in the round too: sooner, a
                    # stop could reach it before it started reading (before
                    # slow_worker holds stops back), and it would hand back
                    # nothing, rightly, the parent's captures being small.
                    for worker in args[0]:
                        worker.told()
                raise KeyboardInterrupt
            return real(*args)

        return wait

    monkeypatch.setattr(parallel, "_work", slow_worker)
    if waiting == "for the shares":
        real_result = parallel._Worker.result
        monkeypatch.setattr(parallel._Worker, "result", interrupted_once(real_result))
    else:
        agree = interrupted_once(parallel._agree, waiting)
        monkeypatch.setattr(parallel, "_agree", agree)
    started = time.monotonic()
    status = cli.main(["read", EARLIER, LATER, "-q", "-o", str(tmp_path), "-j", "2"])
    assert time.monotonic() - started < 20  # the worker did not sleep it out
    assert status == 130
    assert "interrupted" in capsys.readouterr().err
    # Stopped at the start of LATER, the parent did not read its share of it;
    # the worker read all of its own, alone once the parent stopped.
    unread = _sessions([LATER], (0, 2)) if waiting.startswith("capture") else 0
    assert unread > 0 or not waiting.startswith("capture")
    assert (tmp_path / "sessions.jsonl").read_text().count("\n") == 5 - unread
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_a_stop_once_a_share_is_read_does_not_lose_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, jobs: str
) -> None:
    # Found in review: a stop that reached a worker after it had read its
    # share, before it handed it over (Spool.detach), made it hand back an
    # empty share: the sessions it had read were missing from the tables.
    # Now a worker ignores stops once its share is read.
    real_detach = spool.Spool.detach

    def stopped_first(self: spool.Spool) -> spool.SpoolPart:
        os.kill(os.getpid(), signal.SIGINT)  # only workers detach a spool
        return real_detach(self)

    single = tmp_path / "single"
    assert cli.main(["read", EARLIER, LATER, "-q", "-o", str(single)]) == 0
    monkeypatch.setattr(spool.Spool, "detach", stopped_first)
    sharded = tmp_path / "sharded"
    status = cli.main(["read", EARLIER, LATER, "-q", "-o", str(sharded), "-j", jobs])
    assert status == 0
    same_files(sharded, single)


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_a_worker_gone_during_a_round_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    how: str,
) -> None:
    # The worker is stopped (Ctrl-C of its own, or SIGTERM) or killed while
    # it waits for the second round at the start of LATER: the parent reads
    # on without it and does not wait for it in the later rounds.
    real_agree = parallel._agree

    def agree(workers: list[parallel._Worker], idle: Any, name: str, mine: Any) -> Any:
        if name == "capture 1 open":
            (worker,) = workers
            assert worker.process.pid is not None
            signum = signal.SIGINT if how == "stopped" else signal.SIGKILL
            os.kill(worker.process.pid, signum)
            worker.process.join(timeout=30)
        return real_agree(workers, idle, name, mine)

    monkeypatch.setattr(parallel, "_agree", agree)
    started = time.monotonic()
    status = cli.main(["read", EARLIER, LATER, "-q", "-o", str(tmp_path), "-j", "2"])
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    if how == "killed":
        assert status == 1
        assert "ended without its share (exit status -9" in err
        assert not (tmp_path / "sessions.jsonl").exists()
    else:
        # Its share of the first capture is kept, the parent's of both.
        assert status == 130
        unread = _sessions([LATER], (1, 2))
        assert unread > 0
        written = (tmp_path / "sessions.jsonl").read_text().count("\n")
        assert written == 5 - unread
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("waiting", ["worker", "parent"])
def test_a_share_spools_what_it_held_back_while_it_waits_in_a_round(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, waiting: str
) -> None:
    # Closed sessions are held back from the spool (parallel._Deferred) and
    # spooled while the process waits in a round. The worker's share of
    # EARLIER (one session) is spooled while the parent, slow to reach
    # LATER's first round, keeps it waiting there; the parent's share of
    # LATER (two sessions) while the worker, slow to reach the end's round,
    # keeps the parent waiting there. The tables are a single process's.
    log = tmp_path / "spooled-while-waiting"
    real_one = parallel._Deferred.one

    def one(self: parallel._Deferred) -> bool:
        spooled = real_one(self)
        if spooled and sys._getframe(1).f_code.co_name != "all":
            with log.open("a") as out:
                out.write(f"{os.getpid()}\n")
        return spooled

    real_agree = parallel._agree

    def slow_parent(
        workers: list[parallel._Worker], idle: Any, name: str, mine: Any
    ) -> Any:
        if name == "capture 1 clock":
            time.sleep(0.5)  # the worker is in the round by then
        return real_agree(workers, idle, name, mine)

    real_work = parallel._work

    def slow_worker(job: Any, clock: Any) -> Any:
        def slow_clock(idle: Any) -> Any:
            hook = clock(idle)

            def slow(name: str, mine: int | None) -> int | None:
                if name == "end":
                    time.sleep(0.5)  # the parent is in the round by then
                latest: int | None = hook(name, mine)
                return latest

            return slow

        return real_work(job, clock=slow_clock)

    monkeypatch.setattr(parallel._Deferred, "one", one)
    if waiting == "worker":
        monkeypatch.setattr(parallel, "_agree", slow_parent)
    else:
        monkeypatch.setattr(parallel, "_work", slow_worker)
    single = tmp_path / "single"
    assert cli.main(["read", EARLIER, LATER, "-q", "-o", str(single)]) == 0
    sharded = tmp_path / "sharded"
    status = cli.main(["read", EARLIER, LATER, "-q", "-o", str(sharded), "-j", "2"])
    assert status == 0
    same_files(sharded, single)
    pids = [int(pid) for pid in log.read_text().split()]
    if waiting == "worker":
        assert any(pid != os.getpid() for pid in pids)
    else:
        assert pids.count(os.getpid()) == 2


def _result(name: int, commands: int = 0, argument: str = "", chain: int = 0) -> Any:
    """A stand-in for a SessionResult of ``commands`` command rows, each
    with ``argument``, and a TLS record listing ``chain`` certificates."""
    row = types.SimpleNamespace(argument=argument, reply_text=None)
    lists: dict[str, list[Any]] = {
        name: []
        for name in (
            "cert_sans",
            "cipher_suites",
            "extensions",
            "alpn",
            "client_versions",
        )
    }
    tls = (
        [types.SimpleNamespace(chain_sha256=["0" * 64] * chain, **lists)]
        if chain
        else []
    )
    return types.SimpleNamespace(
        name=name, commands=[row] * commands, transactions=[], anomalies=[], tls=tls
    )


class _Recorder:
    """A stand-in for a Spool that records the results added, by name."""

    def __init__(self) -> None:
        self.added: list[int] = []

    def add(self, result: Any) -> None:
        self.added.append(result.name)


def test_deferred_sessions_reach_the_spool_in_closing_order() -> None:
    spool = _Recorder()
    deferred = parallel._Deferred(spool)  # type: ignore[arg-type]
    held = parallel.DEFERRED_SESSIONS
    for n in range(held + 3):
        deferred.add(_result(n))
    assert spool.added == [0, 1, 2]  # no more than DEFERRED_SESSIONS wait
    assert deferred.one() and spool.added == [0, 1, 2, 3]
    deferred.all()
    assert spool.added == list(range(held + 3))
    assert not deferred.one()


def test_a_large_session_is_not_held_back() -> None:
    # Rows held back are bounded too: a session of more than DEFERRED_ROWS
    # goes into the spool at once, after those closed before it.
    spool = _Recorder()
    deferred = parallel._Deferred(spool)  # type: ignore[arg-type]
    deferred.add(_result(0, commands=10))
    deferred.add(_result(1, commands=10))
    assert spool.added == []
    deferred.add(_result(2, commands=parallel.DEFERRED_ROWS))
    assert spool.added == [0, 1, 2]
    deferred.add(_result(3, commands=10))
    assert spool.added == [0, 1, 2]


def test_a_session_of_large_rows_is_not_held_back() -> None:
    # Found in review: rows counted alike whatever they hold, 64 sessions
    # of TLS records listing 30,000 certificates each held 330 MB.
    spool = _Recorder()
    deferred = parallel._Deferred(spool)  # type: ignore[arg-type]
    deferred.add(_result(0, commands=10))
    deferred.add(_result(1, commands=200, argument="a" * 16_000))
    assert spool.added == [0, 1]
    deferred.add(_result(2, chain=70_000))
    assert spool.added == [0, 1, 2]
    deferred.add(_result(3, commands=200, argument="a" * 100))
    assert spool.added == [0, 1, 2]


def test_a_session_stopped_while_spooled_stays_held() -> None:
    # A stop inside Spool.add leaves the session out of the spool whole:
    # _Deferred keeps it, and spools it with the rest after the stop.
    class StoppedOnce(_Recorder):
        stopped = False

        def add(self, result: Any) -> None:
            if not self.stopped:
                self.stopped = True
                raise KeyboardInterrupt
            super().add(result)

    spool = StoppedOnce()
    deferred = parallel._Deferred(spool)  # type: ignore[arg-type]
    deferred.add(_result(1))
    deferred.add(_result(2))
    with pytest.raises(KeyboardInterrupt):
        deferred.one()
    deferred.all()
    assert spool.added == [1, 2]


def test_a_worker_out_of_step_goes_on_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A worker that finds no segment in LATER (as if the file changed while
    # the shares read it) skips its rounds there: its next is the end's,
    # which the parent, at LATER's first round, does not take for its own.
    # It is told to go on alone, and nobody waits.
    real_work = parallel._work

    def work(job: Any, clock: Any = None) -> Any:  # in the worker only
        monkeypatch.setattr(source, "first_segment_time", lambda *args: None)
        return real_work(job, clock)

    names: list[str] = []
    real_agree = parallel._agree

    def agree(workers: list[parallel._Worker], idle: Any, name: str, mine: Any) -> Any:
        names.append(name)
        return real_agree(workers, idle, name, mine)

    monkeypatch.setattr(parallel, "_work", work)
    monkeypatch.setattr(parallel, "_agree", agree)
    started = time.monotonic()
    status = cli.main(["read", EARLIER, LATER, "-q", "-o", str(tmp_path), "-j", "2"])
    assert time.monotonic() - started < 20
    assert status == 0
    assert names == ["capture 1 clock", "capture 1 open", "end"]
    # Nothing was open at LATER's start: alone, it judged the same.
    assert (tmp_path / "sessions.jsonl").read_text().count("\n") == 5


def _sessions(paths: list[str], shard: tuple[int, int]) -> int:
    return len(list(pipeline.analyze(paths, shard=shard)))


def test_a_worker_that_dies_is_reported(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    (tmp_path / "sessions.jsonl").write_text("old\n")

    def die(job: Any, *pipes: Any) -> None:
        os._exit(9)

    monkeypatch.setattr(parallel, "_child", die)
    status = cli.main(["read", AUTH, "-q", "-o", str(tmp_path), "-j", "2"])
    err = capsys.readouterr().err
    assert status == 1
    assert "ended without its share (exit status 9" in err
    assert "Traceback" not in err
    assert (tmp_path / "sessions.jsonl").read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_a_worker_stopped_outside_its_reading_hands_back_an_empty_share(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(job: Any, progress: Any = None, clock: Any = None) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(parallel, "_work", interrupted)
    monkeypatch.setattr(parallel, "_stop_with", lambda parent: None)  # in-process
    sent: list[Any] = []

    class Pipe:
        def send(self, outcome: Any) -> None:
            sent.append(outcome)

        def close(self) -> None:
            pass

    settings = parallel._Settings(str(tmp_path), None, None, True)
    previous = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        job = ([AUTH], pipeline.DEFAULT_PORTS, (1, 2), settings)
        parallel._child(job, Pipe(), Pipe(), [], os.getppid())
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    (part,) = sent
    assert isinstance(part, spool.SpoolPart)
    assert len(part.index) == 0 and part.stats.interrupted


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        children = Path(f"/proc/{pid}/task/{task}/children")
        with contextlib.suppress(OSError):
            found += [int(child) for child in children.read_text().split()]
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_workers_end_when_the_parent_is_killed(tmp_path: Path) -> None:
    # Found in review: with the parent killed (SIGKILL, out of memory), the
    # workers waited for it forever, holding the caller's stdout and their
    # spool files. They now get SIGTERM from the kernel and find the pipes
    # broken, since none of them holds a copy of the parent's ends.
    # Copies, not the same file 400 times: that is read once.
    copies = []
    for n in range(400):
        copies.append(str(tmp_path / f"bulk-{n}.pcap"))
        shutil.copy(ROOT / "pcaps" / "abuse" / "bulk.pcap", copies[-1])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "analysis", "read", *copies]
    parent = subprocess.Popen(
        [*argv, "-q", "-o", str(out), "-j", "3"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = _children(parent.pid)
            time.sleep(0.005)
        assert len(workers) == 2, "the workers did not start"
        # Until sessions are spooled (this capture's connections fall to
        # two of the three shares, this process's among them).
        while not list(out.rglob("spool-*")) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)
        parent.send_signal(signal.SIGSTOP)  # reading or waiting for it: both
        time.sleep(0.3)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(
            Path(f"/proc/{w}").exists() for w in workers
        ):
            time.sleep(0.05)
        alive = [w for w in workers if Path(f"/proc/{w}").exists()]
        assert alive == [], "workers outlived their parent"
    finally:
        for pid in [parent.pid, *_children(parent.pid)]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    # Their spool files are gone with them, and the last one out removed
    # their directory; the parent's own share was in a file with no name.
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_worker_ignores_further_stops_without_sig_ign() -> None:
    # Found in review: SIGTERM to the process group and the parent's SIGINT
    # both reached a worker. With SIG_IGN set while the second was already
    # caught, Python printed "OSError: Signal 15 ignored due to race
    # condition" with a traceback. A handler that does nothing has no race.
    previous = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.signal(signal.SIGINT, parallel._interrupt_once)
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is parallel._ignored
        assert signal.getsignal(signal.SIGTERM) is parallel._ignored
        signal.raise_signal(signal.SIGTERM)  # nothing happens
        signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_a_full_disk_under_the_table_files_says_where(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Found in review: a table's own file on a full disk said only "cannot
    # write: No space left on device", though README says stderr names what
    # could not be written and where, and that none in DIR was replaced.
    def full(self: TableFiles, texts: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TableFiles, "write_text", full)
    (tmp_path / "sessions.jsonl").write_text("old\n")
    status = cli.main(["read", EARLIER, LATER, "-q", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1
    assert err == (
        f"smtpscope: cannot write the tables in {tmp_path}: No space left on "
        f"device; none in {tmp_path} was replaced\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.jsonl"]
    assert (tmp_path / "sessions.jsonl").read_text() == "old\n"
