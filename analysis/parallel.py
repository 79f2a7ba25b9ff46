"""``-j N``: one capture set analysed by N worker processes.

Each worker reads every capture but keeps only the connections that hash to
it (``capture.libpcap.shard_of``: the same both ways, so a connection is
never split). Where one process's judgement depends on connections a worker
does not hold, the workers agree through the parent in rounds (``_agree``).
At the start of each capture that holds a segment they agree on the clock
and on the last packet of any connection read so far, so that each judges as
one process whether the capture is another recording (``capture.source``).
Once all have read everything they agree on the latest time any of them
read to, so that a connection left idle near the end closes as idle, as it
would where one process saw the others' packets go on. A process that
waits in a round spools meanwhile the sessions it closed and held back
(``_Deferred``). Workers spool their results to files in a directory of
the parent's spool and return only a description of them (``SpoolPart``),
so nothing large crosses between processes; the parent's own share goes
straight into its spool. The parent
replays all parts as one spool: the tables are the same rows in the same
order as a single process gives, because session ids and row order depend
only on the traffic, and the detectors see every session at once.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from analysis import interrupts, pipeline
from analysis.detect import Rules
from analysis.records import SessionResult
from analysis.rowfiles import Format
from analysis.spool import Spool, SpoolError, SpoolPart
from capture.source import ClockHook


class WorkerLost(Exception):
    """A worker process ended without handing back its share."""


# The share this process reads while it reads one of several, as (k, n),
# k counted from 1; None otherwise. The command names it in its log lines:
# with -v every process logs each capture it reads, and identical lines
# read as if the capture were read twice (found in review).
_reading: tuple[int, int] | None = None


def reading_share() -> tuple[int, int] | None:
    """The share this process is reading, (k, n) from (1, n); None when it
    reads none, or reads all."""
    return _reading


def connection_share(max_connections: int | None, jobs: int) -> int | None:
    """The connections each of ``jobs`` processes may hold open at once:
    its share of ``max_connections``, rounded up so that none holds 0."""
    return None if max_connections is None else -(-max_connections // jobs)


def read_sharded(
    paths: Sequence[str],
    ports: frozenset[int],
    jobs: int,
    spool: Spool | None = None,
    *,
    progress: pipeline.ProgressHook | None = None,
    max_connections: int | None = None,
    started: Callable[[], None] | None = None,
    ended: Callable[[bool], None] | None = None,
    implicit_tls_ports: frozenset[int] = pipeline.IMPLICIT_TLS_PORTS,
) -> Spool:
    """Analyse ``paths`` in ``jobs`` processes into ``spool`` (or a new one).

    This process takes the first share itself while ``jobs - 1`` workers
    take the others, so no process sits idle. ``spool.stats`` is set to the
    merged statistics of all shares. ``progress`` follows this process's
    share. ``max_connections`` is for all processes together: each holds
    its share of it. Every share takes the server ports in
    ``implicit_tls_ports`` as TLS from the first byte.

    Ctrl-C or SIGTERM stops every share, not just this process's: the
    workers are told with SIGTERM and hand back what they read, closing
    their open sessions as interrupted, as a single process does. So does
    a KeyboardInterrupt from ``started``, called here once the workers are
    forked (the command takes there the stops it held since its start:
    ``analysis.interrupts``). ``ended`` is called once every share is in,
    before they are taken over, with whether a stop came while reading:
    the command then only notes the next stop, so that one that comes
    while the shares are taken over loses none of them. Raises
    ``WorkerLost`` when a worker dies (killed, out of memory) and
    ``SpoolError`` when a share cannot be spooled.
    """
    spool = spool if spool is not None else Spool()
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    directory = spool.scratch_directory()
    each = connection_share(max_connections, jobs)
    settings = _Settings(
        directory, spool.rules, spool.rows, spool.results, each, implicit_tls_ports
    )
    work = [(list(paths), ports, (k, jobs), settings) for k in range(jobs)]

    workers: list[_Worker] = []
    for job in work[1:]:
        workers.append(_Worker(context, job, workers))
    try:
        try:
            # This process's share goes straight into ``spool``, whose file
            # has no name: a kill then leaves nothing of it behind.
            own = _read_share(
                work[0],
                spool,
                progress,
                lambda idle: functools.partial(_agree, workers, idle),
                first=started,
            )
        finally:
            # Agreed or not (Ctrl-C, an error): a worker still to ask in a
            # round (_Told) must not wait for an answer. (Not by closing
            # this end: the workers forked with a copy of it.) After the
            # last round nobody reads this.
            for worker in workers:
                worker.release()
        stopped = own.interrupted  # SIGTERM may have reached only us
        if stopped:
            for worker in workers:
                worker.stop()
        parts: list[SpoolPart] = []
        for worker in workers:
            part, interrupted = _wait(worker, workers)
            parts.append(part)
            stopped = stopped or interrupted
        if ended is not None:
            ended(stopped)
    except BaseException:
        for worker in workers:  # their work would be thrown away
            worker.stop()
        raise
    finally:
        for worker in workers:
            worker.reap()

    for part in parts:
        spool.adopt(part)
    with contextlib.suppress(OSError):  # not empty: left to spool.close
        os.rmdir(directory)
    spool.stats = _merged_stats([own, *(part.stats for part in parts)])
    spool.stats.interrupted = spool.stats.interrupted or stopped
    return spool


class _Worker:
    """One worker process and the pipe its share comes back through."""

    _receive: Any  # its share comes through here
    clock: Any  # this process's end of the pipe of _agree's rounds

    def __init__(self, context: Any, job: _Job, before: list[_Worker]) -> None:
        receive, send = context.Pipe(duplex=False)
        self.clock, clock = context.Pipe()  # see _agree
        # The forked child gets a copy of every end this process holds; it
        # closes this process's, so that it sees end of file (and a broken
        # pipe) when this process is gone.
        ours = [receive, self.clock]
        for other in before:
            ours += [other._receive, other.clock]
        self.process = context.Process(
            target=_child, args=(job, send, clock, ours, os.getpid()), daemon=True
        )
        # Held back until the child has its own handlers (see _child): a
        # Ctrl-C right after the fork would otherwise kill it mid-start.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        send.close()  # the child's end; EOF here then means the child is gone
        clock.close()
        self._receive = receive
        self.stopped = False
        self.released = False  # see release

    def ready(self) -> bool:
        """Whether ``told`` would return at once."""
        return self.released or _readable(self.clock)

    def told(self) -> tuple[str, int | None] | None:
        """The worker's round and value; None if it stopped asking."""
        if self.released:
            return None
        try:
            told: tuple[str, int | None] = self.clock.recv()
        except (EOFError, OSError):  # it stopped early and closed its end
            self.released = True
            return None
        return told

    def answer(self, name: str, latest: int | None) -> None:
        """Tell the worker the latest value of round ``name``."""
        with contextlib.suppress(OSError):
            self.clock.send((name, latest))

    def release(self) -> None:
        """Tell the worker to go on alone: no round is answered any more."""
        if not self.released:
            self.released = True
            with contextlib.suppress(OSError):
                self.clock.send(None)

    def result(self) -> SpoolPart:
        try:
            outcome = self._receive.recv()
        except EOFError:
            self.process.join()
            raise WorkerLost(
                f"worker process {self.process.pid} ended without its share "
                f"(exit status {self.process.exitcode}: killed, or out of memory?)"
            ) from None
        if isinstance(outcome, BaseException):
            raise outcome
        part: SpoolPart = outcome
        return part

    def stop(self) -> None:
        """Ask the worker to stop reading, as Ctrl-C would.

        With SIGTERM: a worker may ignore SIGINT, as the command does when
        its shell started it so (a background job).
        """
        if not self.stopped and self.process.is_alive() and self.process.pid:
            self.stopped = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)

    def reap(self) -> None:
        self._receive.close()
        self.clock.close()
        self.process.join(timeout=5)
        if self.process.is_alive():  # only after an error in this process
            self.process.kill()
            self.process.join()


def _wait(worker: _Worker, everyone: list[_Worker]) -> tuple[SpoolPart, bool]:
    """The worker's share, and whether Ctrl-C came meanwhile.

    Ctrl-C (or SIGTERM) while waiting stops every worker, once; each then
    hands back what it read.
    """
    interrupted = False
    while True:
        try:
            return worker.result(), interrupted
        except KeyboardInterrupt:
            interrupted = True
            for other in everyone:
                other.stop()


def _agree(
    workers: list[_Worker], idle: Idle, name: str, mine: int | None
) -> int | None:
    """Round ``name``: the latest value of all shares (None when none had
    one), this process's being ``mine``. While a worker has not told its
    value yet, ``idle`` is called until it says it has nothing more to do
    (see ``_Deferred``).

    Every share goes through the same rounds in the same order, since each
    reads the same captures (``capture.source.handle_stream_events``): each
    worker tells its value, then waits for the answer (``_Told``). A worker
    that stops early closes its end instead, and is left out from then on.
    One that tells another round (a capture that changed while the shares
    read it) is told to go on alone, as is one that asks after this process
    stopped agreeing.
    """
    values = [mine]
    asking: list[_Worker] = []
    for worker in workers:
        while not worker.ready() and idle():
            pass
        told = worker.told()
        if told is None:
            continue
        if told[0] != name:
            worker.release()
            continue
        values.append(told[1])
        asking.append(worker)
    latest = max((value for value in values if value is not None), default=None)
    for worker in asking:
        worker.answer(name, latest)
    return latest


# What a process does while it waits in a round: False when it has nothing.
Idle = Callable[[], bool]
# Makes a share's ClockHook, given its idle work.
_ClockMaker = Callable[[Idle], ClockHook]


class _Told:
    """A worker's side of ``_agree``, called for each round.

    Once the parent has stopped agreeing (it answers None, or is gone), the
    worker goes on alone: each round gives its own value, without asking.
    """

    def __init__(self, clock: Any, idle: Idle) -> None:
        self._clock: Any | None = clock
        self._idle = idle  # called while the answer is awaited

    def __call__(self, name: str, mine: int | None) -> int | None:
        if self._clock is None:
            return mine
        try:
            self._clock.send((name, mine))
        except OSError:  # the parent is gone
            self._clock = None
            return mine
        # Outside the try below: an error of the idle work (a full disk)
        # is not the parent's absence.
        while not self._ready() and self._idle():
            pass
        try:
            answer: tuple[str, int | None] | None = self._clock.recv()
        except (EOFError, OSError):  # the parent is gone
            answer = None
        if answer is None or answer[0] != name:
            self._clock = None
            return mine
        return answer[1]

    def _ready(self) -> bool:
        return self._clock is None or _readable(self._clock)


def _readable(end: Any) -> bool:
    """Whether a recv on pipe end ``end`` would return at once: something
    is there, or the other end is gone (recv then says so)."""
    try:
        readable: bool = end.poll()
    except OSError:
        return True
    return readable


def _child(job: _Job, send: Any, clock: Any, ours: list[Any], parent: int) -> None:
    """A worker process: its share, or the exception that stopped it.

    ``ours``: the parent's ends of the pipes, to close here. ``parent``:
    the parent's pid; if it dies, this worker is stopped as by SIGTERM.
    """
    for end in ours:
        end.close()
    # Ctrl-C while reading closes the open sessions as interrupted (inside
    # pipeline.analyze); outside it, the share is handed back as it is.
    outcome: SpoolPart | BaseException | None = None
    # A group Ctrl-C and the parent's own stop may both arrive: only the
    # first may interrupt, or the second would cut the closing short. A
    # stop the command was started ignoring stays ignored here too.
    interrupts.take(_interrupt_once)
    # Stop signals are still blocked (see _Worker): one sent now, the
    # parent's death included, interrupts the share below, at the unblock.
    _stop_with(parent)
    try:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            outcome = _work(job, clock=functools.partial(_Told, clock))
        except KeyboardInterrupt:  # before the share's reading began
            outcome = _empty_part(job[3])
        except BaseException as exc:  # handed to the parent, which reports it
            outcome = exc
        _ignore_stops()  # if the share was not read to its end
    except KeyboardInterrupt:
        pass  # a first stop as a failed or unread share was done: it stands
    if outcome is None:  # stopped before anything was read
        outcome = _empty_part(job[3])
    # Whether or not this share got through all rounds: a parent waiting in
    # one must not wait for it while it waits to hand its share over.
    clock.close()
    try:
        send.send(outcome)
    except (KeyboardInterrupt, OSError):
        # The parent is gone: nobody will adopt the share or delete its file,
        # nor the directory of the shares once the last worker's file is out.
        if isinstance(outcome, SpoolPart) and outcome.path:
            with contextlib.suppress(OSError):
                os.unlink(outcome.path)
        with contextlib.suppress(OSError):  # not empty: another worker's turn
            os.rmdir(job[3].directory)
    except Exception:  # an exception that does not pickle: its text then
        with contextlib.suppress(KeyboardInterrupt, OSError):
            send.send(RuntimeError(f"worker failed: {outcome!r}"))
    send.close()


def _stop_with(parent: int) -> None:
    """Have the kernel send SIGTERM here when the parent process dies.

    Otherwise a worker whose parent was killed (SIGKILL, out of memory)
    would read its whole share for nobody. Linux only (prctl); elsewhere the
    worker finds out when it hands its share over.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True, slots=True)
class _Settings:
    """What a worker's spool must share with the parent's, its share of
    the connections that may be open at once, and the ports that are TLS
    from the first byte."""

    directory: str
    rules: Rules | None
    rows: Format | None
    results: bool
    max_connections: int | None = None
    implicit_tls_ports: frozenset[int] = pipeline.IMPLICIT_TLS_PORTS


def _empty_part(settings: _Settings) -> SpoolPart:
    """The share of a worker stopped before it read anything."""
    part = Spool(settings.directory, named=True).detach()
    part.stats.interrupted = True
    return part


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    _ignore_stops()
    raise KeyboardInterrupt


def _ignore_stops() -> None:
    # A handler that does nothing rather than SIG_IGN: a second stop already
    # caught by the C handler, to be run as Python's, would otherwise be
    # reported as an OSError ("Signal 15 ignored due to race condition")
    # with a traceback, when a stop sent to the group and the parent's own
    # both reach a worker.
    signal.signal(signal.SIGINT, _ignored)
    signal.signal(signal.SIGTERM, _ignored)


def _ignored(signum: int, frame: FrameType | None) -> None:
    return


_Job = tuple[list[str], frozenset[int], tuple[int, int], "_Settings"]


def _work(job: _Job, clock: _ClockMaker | None = None) -> SpoolPart:
    """A worker's share, in a spool file of its own for the parent to adopt."""
    settings = job[3]
    spool = Spool(
        settings.directory,
        named=True,
        rules=settings.rules,
        rows=settings.rows,
        results=settings.results,
    )
    try:
        # Once the share is read, a stop must not cut the hand-over short:
        # the share would be lost, not handed back as read.
        _read_share(job, spool, clock=clock, then=_ignore_stops)
        return spool.detach()
    except SpoolError as exc:
        spool.close()
        # Said of the directory the parent's spool is in (-o DIR, or the
        # system's temporary one), not of the scratch directory within it,
        # which is gone by the time the message is read (found in review).
        where = os.path.dirname(settings.directory)
        raise SpoolError(exc.errno, exc.strerror, where) from None
    except BaseException:
        spool.close()  # its file would not be adopted
        raise


def _read_share(
    job: _Job,
    spool: Spool,
    progress: pipeline.ProgressHook | None = None,
    clock: _ClockMaker | None = None,
    then: Callable[[], None] | None = None,
    first: Callable[[], None] | None = None,
) -> pipeline.RunStats:
    """Analyse one share into ``spool``; its statistics.

    ``clock`` makes the rounds' hook, given what to do while waiting in one
    (``_Deferred``). ``first`` is called before the share is read and
    ``then`` once it is spooled, where a Ctrl-C in either is still caught
    as one while reading.
    """
    paths, ports, shard, settings = job
    stats = spool.stats
    deferred = _Deferred(spool)
    results = None
    global _reading
    _reading = (shard[0] + 1, shard[1]) if shard[1] > 1 else None
    try:
        if first is not None:
            first()
        results = pipeline.analyze(
            paths,
            ports,
            stats=stats,
            shard=shard,
            progress=progress,
            clock=clock(deferred.one) if clock is not None else None,
            max_connections=settings.max_connections,
            implicit_tls_ports=settings.implicit_tls_ports,
        )
        for result in results:
            deferred.add(result)
        deferred.all()
        if then is not None:
            then()
    except KeyboardInterrupt:
        # Outside pipeline.analyze's own handling (while spooling): the
        # sessions closed so far are kept, and those still open closed as
        # interrupted, as in a single process (found in review: they were
        # lost). A worker ignores any later stop; see _interrupt_once.
        stats.interrupted = True
        if results is not None:
            for result in pipeline.after_stop(results):
                deferred.add(result)
        deferred.all()
    finally:
        _reading = None
    return stats


# Held back from the spool at most (see _Deferred): sessions, and rows of
# theirs (commands, transactions, recipients, anomalies, TLS records), so
# that large sessions are not held. A row counts once more per _ROW_BYTES
# of the text it holds, and a TLS record once more per so many items of
# its lists: rows of 16 KB commands, or TLS records listing 30,000
# certificates each, took 64 held sessions to 330 MB (found in review).
DEFERRED_SESSIONS = 64
DEFERRED_ROWS = 4096
_ROW_BYTES = 512
_TLS_ITEMS = 16


class _Deferred:
    """The share's closed sessions on their way into its spool, up to
    DEFERRED_SESSIONS and DEFERRED_ROWS held back, the oldest first.

    Spooling a session (encoding its rows and the detectors' evidence) is
    about a seventh of the work of reading it. Held back, it is done where
    this process would otherwise sit idle: in a round (``_agree``), while
    another share has not reached it yet. The shares of a capture are
    never even, and a capture rotated into many files has a round at the
    start of each file: 108 files of 10 MB kept each of two processes
    waiting 0.2 to 0.35 s in all. The order of the spool is the order of
    closing either way.
    """

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._held: collections.deque[tuple[SessionResult, int]] = collections.deque()
        self._rows = 0  # of the sessions held

    def add(self, result: SessionResult) -> None:
        rows = _rows_of(result)
        self._held.append((result, rows))
        self._rows += rows
        while len(self._held) > DEFERRED_SESSIONS or self._rows > DEFERRED_ROWS:
            self.one()

    def one(self) -> bool:
        """Spool the oldest session held back; False when there was none.

        Let go of only once it is in: a stop (KeyboardInterrupt) while it
        is spooled leaves it out of the spool whole (``Spool.add``) and
        still held here, for ``all`` to spool after the stop (found in
        test: a worker stopped while it spooled in a round lost the
        session).
        """
        held = self._held
        if not held:
            return False
        result, rows = held[0]
        self._spool.add(result)
        held.popleft()
        self._rows -= rows
        return True

    def all(self) -> None:
        while self.one():
            pass


def _rows_of(result: SessionResult) -> int:
    """About how much of memory ``result`` holds, in rows (see DEFERRED_ROWS)."""
    recipients = sum(len(txn.rcpt_to) for txn in result.transactions)
    text = (
        sum(len(c.argument) + len(c.reply_text or "") for c in result.commands)
        + sum(len(a.detail or "") for a in result.anomalies)
        + sum(
            len(t.data_reply or "") + len(t.subject or "") + sum(map(len, t.rcpt_to))
            for t in result.transactions
        )
    )
    items = sum(
        len(t.chain_sha256)
        + len(t.cert_sans)
        + len(t.cipher_suites)
        + len(t.extensions)
        + len(t.alpn)
        + len(t.client_versions)
        for t in result.tls
    )
    return (
        1
        + len(result.commands)
        + len(result.transactions)
        + recipients
        + len(result.anomalies)
        + len(result.tls)
        + text // _ROW_BYTES
        + items // _TLS_ITEMS
    )


def _merged_stats(parts: list[pipeline.RunStats]) -> pipeline.RunStats:
    """Every worker read every capture: count the files and errors once.

    Packets are counted once too, except behind libpcap's filter, where each
    worker only saw its share and the shares add up. The segments on the
    SMTP ports are each worker's own connections' on either path, and add up.
    """
    first = parts[0]
    filtered = any(part.filtered for part in parts)
    return pipeline.RunStats(
        captures=first.captures,
        packets=sum(p.packets for p in parts) if filtered else first.packets,
        bytes=first.bytes,
        smtp_packets=sum(p.smtp_packets for p in parts),
        errors=list(first.errors),
        unread=list(first.unread),
        rewinds=list(first.rewinds),  # agreed: the same in every share
        # Each packet is one share's: each share counts its own.
        clock_outliers=sum(part.clock_outliers for part in parts),
        snap_cut=sum(part.snap_cut for part in parts),
        snap_cut_bytes=sum(part.snap_cut_bytes for part in parts),
        # Not by share: see RunStats.header_cut.
        header_cut=max(part.header_cut for part in parts),
        filtered=filtered,
        # Any share stopped early (Ctrl-C reaches every process, SIGTERM
        # at least this one) makes the whole run an interrupted one.
        interrupted=any(part.interrupted for part in parts),
        evicted=sum(part.evicted for part in parts),
        handshakes_from_smtp_ports=sum(p.handshakes_from_smtp_ports for p in parts),
    )
