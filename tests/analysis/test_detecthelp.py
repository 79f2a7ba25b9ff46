"""A forked helper judging some detectors changes no alert, and may fail.

``analysis.detecthelp`` splits the detectors between this process and a
forked one at the end of a ``-j N`` run; the alerts must be exactly those
of one engine with every detector, whatever happens to the helper.
"""

from __future__ import annotations

import marshal
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis import detecthelp, pipeline
from analysis.detect import Alert, AlertEngine
from analysis.detect.engine import DETECTORS
from analysis.detecthelp import HELPER_SHARE, REST_SHARE, DetectHelper
from analysis.offline import finish
from analysis.rowfiles import Format, TableFiles
from analysis.spool import Spool
from tests.analysis.same import same_files

PROJECT = sorted(
    str(p) for p in (Path(__file__).parents[2] / "pcaps").glob("**/*.pcap")
)


@pytest.fixture
def spool() -> Iterator[Spool]:
    with Spool(rows=Format.JSONL, results=False) as spooled:
        for result in pipeline.analyze(PROJECT, pipeline.DEFAULT_PORTS):
            spooled.add(result)
        yield spooled


@pytest.fixture
def always(monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper even for the few hundred sessions of the project captures."""
    monkeypatch.setattr(detecthelp, "MIN_SESSIONS", 0)


def _ordered(alerts: list[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (a.first_seen, a.alert_id))


def _all_alerts(spool: Spool) -> list[Alert]:
    alerts, forgotten = detecthelp.judge(spool, tuple(range(len(DETECTORS))))
    assert forgotten == 0
    return _ordered(alerts)


def test_the_shares_split_the_detectors() -> None:
    assert HELPER_SHARE and REST_SHARE
    assert sorted(HELPER_SHARE + REST_SHARE) == list(range(len(DETECTORS)))


def test_engines_with_disjoint_shares_give_one_engines_alerts(spool: Spool) -> None:
    everything = _all_alerts(spool)
    assert len(everything) > 10
    assert len({a.kind for a in everything}) > 5
    for i in range(len(DETECTORS)):
        alone, _ = detecthelp.judge(spool, (i,))
        others, _ = detecthelp.judge(
            spool, tuple(j for j in range(len(DETECTORS)) if j != i)
        )
        assert _ordered(alone + others) == everything, DETECTORS[i]


def test_an_engine_refuses_evidence_of_another_detector_set() -> None:
    with pytest.raises(ValueError, match="another set of detectors"):
        AlertEngine(share=(0,)).feed_evidence(0, [None])


def test_evidence_comes_in_the_replays_order(spool: Spool) -> None:
    replayed = [(r.start, r.evidence) for r in spool.replay()]
    assert list(spool.evidence()) == replayed
    assert len(replayed) == len(spool) > 50


def test_a_helper_writes_the_same_files(
    spool: Spool, always: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[bool] = []
    start = DetectHelper.start

    def spied(self: DetectHelper) -> bool:
        started.append(start(self))
        return started[-1]

    monkeypatch.setattr(DetectHelper, "start", spied)
    written = {}
    for helper in (False, True):
        out = tmp_path / str(helper)
        with TableFiles(out, Format.JSONL) as files:
            done = finish(spool, files=files, helper=helper)
            files.commit()
        written[helper] = done.alerts
    assert started == [True]  # it did run
    assert written[True] == written[False] == _all_alerts(spool)
    same_files(tmp_path / "True", tmp_path / "False")


def test_too_few_sessions_fork_no_helper(spool: Spool) -> None:
    assert len(spool) < detecthelp.MIN_SESSIONS
    assert not DetectHelper(spool).start()


class _NoMarshal:
    """``marshal`` as the helper sees it: its alerts cannot be encoded."""

    load = staticmethod(marshal.load)

    @staticmethod
    def dumps(value: Any) -> bytes:
        raise ValueError("not this time")


def test_a_helper_that_fails_costs_only_time(
    spool: Spool, always: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detecthelp, "marshal", _NoMarshal)
    helper = DetectHelper(spool)
    assert helper.start()
    assert _ordered(helper.alerts()) == _ordered(
        detecthelp.judge(spool, HELPER_SHARE)[0]
    )


def test_a_killed_helper_costs_only_time(spool: Spool, always: None) -> None:
    helper = DetectHelper(spool)
    assert helper.start()
    os.kill(helper._pid or 0, signal.SIGKILL)
    assert _ordered(helper.alerts()) == _ordered(
        detecthelp.judge(spool, HELPER_SHARE)[0]
    )


def test_a_stopped_helper_is_reaped(spool: Spool, always: None) -> None:
    helper = DetectHelper(spool)
    assert helper.start()
    pid = helper._pid
    helper.stop()
    helper.stop()  # twice is harmless
    with pytest.raises(ChildProcessError):
        os.waitpid(pid or 0, os.WNOHANG)
    with pytest.raises(RuntimeError, match="not running"):
        helper.alerts()


def test_the_helper_writes_nothing_to_the_spool(spool: Spool, always: None) -> None:
    # Sessions still batched in memory at the fork are written out first,
    # once: the child must not write its copy of them through the same
    # file offset.
    assert spool._batch  # the project captures fit in one batch
    helper = DetectHelper(spool)
    assert helper.start()
    helper.alerts()
    spool.flush()  # as the replay beside the helper's does
    [handle] = spool._files
    assert os.fstat(handle.fileno()).st_size == spool._end


def test_ctrl_c_during_the_fork_leaves_no_helper_behind(
    spool: Spool, always: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The signal lands while it is held back for the fork: it is raised when
    # this process lets it through, and the helper must still be stopped.
    forked: list[int] = []
    fork = os.fork

    def fork_then_ctrl_c() -> int:
        pid = fork()
        if pid:
            forked.append(pid)
            os.kill(os.getpid(), signal.SIGINT)
        return pid

    monkeypatch.setattr(detecthelp.os, "fork", fork_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        finish(spool, helper=True)
    [pid] = forked
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: neither running nor a zombie
