"""Ctrl-C while a session is being spooled, under -j N.

``parallel._read_share`` (and ``cli._read_into``) catch a KeyboardInterrupt that
lands in ``Spool.add`` and keep "the sessions spooled so far". Python runs
the SIGINT handler between any two lines, so whatever line of ``Spool.add``
(and of what it calls to record the session: ``_Index.append``,
``downgrade.Ledger.add``) the Ctrl-C lands on, the spool must hold the
session either whole or not at all, and the parent's replay of the merged
parts must be what the tables of the sessions it holds would give.

Found in review of the flat index (``_Index``) and ``Ledger``, before a
session counted only once its last entry was in: the ledger is told of a
session before the index is, and ``_Index.append`` fills six arrays one
after the other. A Ctrl-C in between left the worker's part out of step,
and ``adopt`` shifted the step onto the next part: a session of another
worker got the interrupted session's possible_downgrade anomaly, a STARTTLS
offer was counted for a session that is in no table, or every later
session was replayed with the start of the one before it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from analysis import downgrade, pipeline
from analysis.records import SessionRecord, SessionResult
from analysis.spool import Spool, _Index

STRIPPING = str(Path(__file__).parents[2] / "pcaps" / "stripping.pcap")

# The code a Ctrl-C can land in while a session is recorded.
_WATCHED = {
    Spool.add.__code__,
    Spool._write_batch.__code__,
    Spool._parts.__code__,
    Spool._add_in_parts.__code__,
    Spool._queue.__code__,
    _Index.append.__code__,
    _Index._add_start.__code__,
    _Index._drop_partial.__code__,
    downgrade.Ledger.add.__code__,
    downgrade.Ledger.add_values.__code__,
    downgrade.Ledger._settle.__code__,
    downgrade._Suspects.append.__code__,
    downgrade._Suspects.drop_from.__code__,
    downgrade._Suspects._records.__code__,
}


def _at(result: SessionResult, start: int, session_id: str) -> SessionResult:
    session = dataclasses.replace(result.session, start=start, session_id=session_id)
    return dataclasses.replace(result, session=session)


def _add_interrupted_at_line(spool: Spool, result: SessionResult, line: int) -> bool:
    """``spool.add(result)`` with Ctrl-C at its ``line``-th line; False when
    the add had fewer lines than that (it then finished)."""
    seen = 0
    previous = sys.gettrace()  # a coverage tool's, say: put back after

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal seen
        if event == "line":
            seen += 1
            if seen == line:
                sys.settrace(previous)
                raise KeyboardInterrupt
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code in _WATCHED else None

    sys.settrace(tracer)
    try:
        spool.add(result)
    except KeyboardInterrupt:
        return True  # as parallel._read_share does: keep what was spooled
    finally:
        sys.settrace(previous)
    return False


def _columns(sessions: list[SessionRecord]) -> dict[str, list[object]]:
    names = [f.name for f in dataclasses.fields(SessionRecord)]
    return {name: [getattr(s, name) for s in sessions] for name in names}


def _problems(parent: Spool) -> list[str]:
    replayed = list(parent.replay())
    problems = []
    sessions = []
    for item in replayed:
        assert item.result is not None
        session = item.result.session
        sessions.append(session)
        if item.start != session.start:
            problems.append(
                f"{session.session_id} replayed at {item.start}, "
                f"starts at {session.start}"
            )
        for anomaly in item.extra:
            if anomaly.session_id != session.session_id:
                problems.append(
                    f"{session.session_id} got {anomaly.session_id}'s anomaly"
                )
    keys = [(s.start, s.session_id) for s in sessions]
    if keys != sorted(keys):
        problems.append(f"rows out of order: {keys}")
    expected = [
        (sessions[p].session_id, a.detail)
        for p, a in downgrade.find(_columns(sessions))
    ]
    got = [
        (item.result.session.session_id, a.detail)
        for item in replayed
        if item.result is not None
        for a in item.extra
    ]
    if got != expected:
        problems.append(f"downgrade anomalies {got}, tables give {expected}")
    return problems


@pytest.mark.parametrize("interrupted", ["offered", "mangled", "large"])
def test_ctrl_c_anywhere_in_add_leaves_a_consistent_merged_spool(
    interrupted: str,
) -> None:
    # The worker spools what it still held after the stop (see
    # parallel._Deferred): the add after the interrupted one must land
    # where its index says. "large" is a session too big for the batch,
    # written to the file as it is.
    offered, mangled, stripped = pipeline.analyze([STRIPPING])
    large = dataclasses.replace(offered, commands=offered.commands * 3000)
    victim = {"offered": offered, "mangled": mangled, "large": large}[interrupted]
    broken: dict[int, list[str]] = {}
    line = 0
    while True:
        line += 1
        with Spool() as parent:
            scratch = parent.scratch_directory()
            first = Spool(scratch, named=True)  # one worker's share
            first.add(_at(offered, 10, "Sa"))
            if not _add_interrupted_at_line(first, _at(victim, 20, "Sx"), line):
                first.close()
                break
            first.add(_at(stripped, 40, "Sd"))
            first.add(_at(large, 50, "Se"))
            second = Spool(scratch, named=True)  # another worker's share
            second.add(_at(stripped, 30, "Sb"))
            second.add(_at(offered, 5, "Sc"))
            parent.adopt(first.detach())
            parent.adopt(second.detach())
            try:
                problems = _problems(parent)
            except Exception as exc:  # a traceback: nothing would be written
                problems = [f"replay raised {exc!r}"]
        if problems:
            broken[line] = problems
    assert line > 10  # the tracing reached the code
    assert broken == {}, "\n".join(
        f"Ctrl-C at line {n} of the add: {'; '.join(p)}" for n, p in broken.items()
    )
