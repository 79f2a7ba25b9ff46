"""Some of the detectors judged in a forked process while the replay writes.

At the end of an offline run one process replays every session in table
order, writing its rows and feeding the detectors: on the 1 GB benchmark
capture (4,104 sessions) about 0.19 s, 0.12 s of it in the detectors, with
the other core idle. Under ``-j N`` (N > 1) a forked helper replays the same
spool and judges a share of the detectors (``AlertEngine(share=...)``)
while this process judges the rest and writes the rows. The helper writes
its alerts as it makes them into an unnamed scratch file this process made
before the fork, and says through a pipe at the end how many there are:
this process then reads them back one at a time, so that neither holds a
list of them (a flood of distinct clients makes an alert per client).
Engines with disjoint shares fed the same sessions give between them
exactly the alerts one engine with every detector gives, so the tables do
not change.

A helper that fails in any way (killed, out of memory, an alert that
cannot be written) costs only time: this process then judges the helper's
share itself, from another replay.
"""

from __future__ import annotations

import contextlib
import marshal
import operator
import os
import signal
import struct
from collections.abc import Iterator
from dataclasses import fields
from typing import IO

from analysis.detect import Alert, AlertEngine
from analysis.detect.engine import DETECTORS
from analysis.detect.flood import FloodDetector
from analysis.detect.recipients import RecipientDetector
from analysis.spool import Spool

# The helper's detectors. On the 1 GB benchmark capture (4,104 sessions),
# each engine's reading of the evidence takes 0.018 s; on top of that the
# recipient detector takes 0.035 s and the flood detector 0.042 s, against
# 0.034 s for the other five together, which this process judges beside
# replaying the sessions (0.035 s) and writing their rows (0.03 s). With
# the bulk detector (0.018 s) in the helper too, this process waited for it
# 0.06 to 0.11 s; without, 0 to 0.02 s.
_HELPER_KINDS = (RecipientDetector, FloodDetector)
HELPER_SHARE = tuple(i for i, make in enumerate(DETECTORS) if make in _HELPER_KINDS)
REST_SHARE = tuple(i for i in range(len(DETECTORS)) if i not in HELPER_SHARE)

# Below this many sessions the fork costs more than the judging it spares.
MIN_SESSIONS = 1000

_STOPS = {signal.SIGINT, signal.SIGTERM}

# The helper's answer through the pipe, once its alerts are all in the
# scratch file: how many, their bytes there, and its engine's
# AlertEngine.singles_forgotten.
_ANSWER = struct.Struct("<QQQ")
# An alert as it is written to the scratch file: its fields, plain values
# that ``marshal`` writes and reads back fast.
_FIELDS = operator.attrgetter(*(f.name for f in fields(Alert)))


class DetectHelper:
    """A forked process judging ``HELPER_SHARE`` over a spool's sessions.

    Made first and started (forked) after, inside the caller's ``try``,
    whose ``finally`` calls ``stop``: a Ctrl-C that lands during the fork is
    raised once the child's pid is known here, so it is never left behind.
    """

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._pid: int | None = None
        self._answer: int | None = None  # the pipe's read end
        self._scratch: IO[bytes] | None = None  # where the helper's alerts go
        # Its engine's AlertEngine.singles_forgotten, once the last of
        # alerts() is taken.
        self.forgotten = 0

    def start(self) -> bool:
        """Fork the helper; False where there is no fork or it would not pay."""
        spool = self._spool
        if len(spool) < MIN_SESSIONS or not hasattr(os, "fork"):
            return False
        # Written out first: the child would otherwise write the sessions
        # still batched in memory too, through the same file offset.
        spool.flush()
        try:
            self._scratch = scratch = spool.scratch_file()
            answer, tell = os.pipe()
        except OSError:
            self._drop_scratch()
            return False
        # Held back until the child ignores Ctrl-C (this process stops it)
        # and this one knows the child's pid.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            try:
                pid = os.fork()
            except OSError:
                os.close(answer)
                os.close(tell)
                self._drop_scratch()
                return False
            if pid == 0:
                _child(spool, scratch, answer, tell, held)  # never returns
            self._pid, self._answer = pid, answer
            os.close(tell)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return True

    def alerts(self) -> Iterator[Alert]:
        """The helper's alerts, or this process's own judgement if it failed.

        Waits for the helper, then gives the alerts one at a time;
        ``forgotten`` is set once the last is taken.
        """
        answer, pid, scratch = self._answer, self._pid, self._scratch
        if answer is None or pid is None or scratch is None:
            raise RuntimeError("the helper is not running")
        with os.fdopen(answer, "rb", closefd=True) as stream:
            self._answer = None
            data = stream.read()
        _, status = os.waitpid(pid, 0)
        self._pid = None
        # A damaged answer, or alerts missing from the file: judged here.
        if os.waitstatus_to_exitcode(status) == 0 and len(data) == _ANSWER.size:
            count, size, forgotten = _ANSWER.unpack(data)
            if os.fstat(scratch.fileno()).st_size == size:
                return self._read_back(scratch, count, forgotten)
        self._drop_scratch()
        return self._judge_here()

    def stop(self) -> None:
        """End the helper if it still runs (this process is failing)."""
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None
        if self._answer is not None:
            os.close(self._answer)
            self._answer = None
        self._drop_scratch()

    def _read_back(
        self, scratch: IO[bytes], count: int, forgotten: int
    ) -> Iterator[Alert]:
        # The helper moved the offset it shares with this process's handle.
        scratch.seek(0)
        for _ in range(count):
            yield Alert(*marshal.load(scratch))
        self.forgotten = forgotten
        self._drop_scratch()

    def _judge_here(self) -> Iterator[Alert]:
        engine = AlertEngine(self._spool.rules, share=HELPER_SHARE)
        yield from judging(self._spool, engine)
        self.forgotten = engine.singles_forgotten

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            self._scratch.close()  # which deletes it: it has no name
            self._scratch = None


# The alerts of some detectors, and how many single observations their
# engine forgot (AlertEngine.singles_forgotten).
Judged = tuple[list[Alert], int]


def judge(spool: Spool, share: tuple[int, ...]) -> Judged:
    """The detectors in ``share`` over every spooled session."""
    engine = AlertEngine(spool.rules, share=share)
    alerts = list(judging(spool, engine))
    return alerts, engine.singles_forgotten


def judging(spool: Spool, engine: AlertEngine) -> Iterator[Alert]:
    """``engine``'s alerts over every spooled session, as they are made."""
    for start, evidence in spool.evidence():
        yield from engine.feed_evidence(start, evidence)
    yield from engine.drain()


def _child(
    spool: Spool,
    scratch: IO[bytes],
    answer: int,
    tell: int,
    held: set[int | signal.Signals],
) -> None:
    """The helper's whole life; it leaves by ``os._exit`` whatever happens.

    Nothing of the parent's may run here: not its ``finally`` blocks (which
    would close or commit its table files), not its ``atexit`` handlers.
    """
    status = 1
    try:
        os.close(answer)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        engine = AlertEngine(spool.rules, share=HELPER_SHARE)
        count = 0
        for alert in judging(spool, engine):
            scratch.write(marshal.dumps(_FIELDS(alert)))
            count += 1
        scratch.flush()
        done = _ANSWER.pack(count, scratch.tell(), engine.singles_forgotten)
        with os.fdopen(tell, "wb", closefd=True) as stream:
            stream.write(done)
        status = 0
    except BaseException:  # the parent judges this share itself
        pass
    finally:
        os._exit(status)
