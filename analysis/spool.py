"""Finished sessions parked on disk until an offline run has read everything.

The tables are ordered by session start and the detectors need every
session, so nothing can be written while captures are still being read.
Keeping every ``SessionResult`` in memory until then would make memory grow
with the size of the input. A ``Spool`` instead stores what the end of the
run will need from each session in a temporary file the moment its
connection closes, and keeps in memory only a few dozen bytes of index per
session and what the cross-session check (``analysis.downgrade.Ledger``)
needs: a count per server that offered STARTTLS, and the sessions it may
flag. ``replay``
reads the sessions back one at a time, in table order, with that check's
findings beside each.

What is stored per session is done work, so that it happens where the
session was analysed (in parallel, under ``-j N``):
- what the detectors take from it (``AlertEngine.evidence``), always;
- its rows as text, when the spool is told the output format;
- the whole result, when the caller wants results back (DataFrames), or
  when the cross-session check might change the session's rows.

Worker processes of ``-j N`` each fill a spool of their own in a directory
the parent gives them and hand back a ``SpoolPart``, a small picklable
description; the parent's spool takes the parts over (``adopt``) and
replays all of them as one.
"""

from __future__ import annotations

import contextlib
import itertools
import marshal
import operator
import os
import shutil
import struct
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import IO, Any

from analysis import downgrade
from analysis.detect import AlertEngine, Rules
from analysis.pipeline import RunStats
from analysis.records import (
    AnomalyRecord,
    CommandRecord,
    SessionRecord,
    SessionResult,
    TlsRecord,
    TransactionRecord,
)
from analysis.rowfiles import SESSION_TABLES, Format, SessionRows

# Sessions are written to the spool file in batches of about this many
# bytes: a session takes a few KiB, and a system call for each costs more
# than marshalling it. (A larger file buffer would batch the writes too,
# but also make every read of the replay, which jumps around, that large.)
_BATCH = 256 * 1024
# A session is stored as its parts, each marshalled on its own, then their
# lengths (8 bytes each) and their number (a byte), so that a large session
# can be read a part at a time (_Parts). A session of at most _TABLE_PARTS
# commands and transactions, nearly every one, is one part: the tuple of
# its detectors' evidence, its rows' text (a text per table, SESSION_TABLES
# order, or None when the spool keeps no rows) and its result's cells (or
# None), marshalled in one call each way as it always was (one call per
# part cost 14 % of a run of 100,000 short sessions). A larger one is
# stored as the evidence, a part per table when the spool keeps rows, and
# the cells: each part is made and written before the next is made, and
# read back only when it is used.
_LENGTH = struct.Struct("<Q")
_TABLE_PARTS = 1000
_WHOLE = struct.Struct("<QB")  # the trailer of a session stored as one part
# The most parts a session has: evidence, a part per table, cells.
_MOST_PARTS = 2 + len(SESSION_TABLES)


def _cells(record_type: type) -> Callable[[Any], tuple[Any, ...]]:
    return operator.attrgetter(*(f.name for f in fields(record_type)))


_SESSION = _cells(SessionRecord)
_TRANSACTION = _cells(TransactionRecord)
_COMMAND = _cells(CommandRecord)
_ANOMALY = _cells(AnomalyRecord)
_TLS = _cells(TlsRecord)


def _result_cells(result: SessionResult) -> tuple[Any, ...]:
    # The records hold only numbers, strings, None and lists of those, so
    # each becomes a tuple of its fields, which ``marshal`` writes about
    # twice as fast as pickle (pickle rebuilds slotted objects attribute by
    # attribute). A value of any other type makes ``marshal`` raise.
    return (
        _SESSION(result.session),
        [_TRANSACTION(r) for r in result.transactions],
        [_COMMAND(r) for r in result.commands],
        [_ANOMALY(r) for r in result.anomalies],
        [_TLS(r) for r in result.tls],
    )


def _result_of(cells: tuple[Any, ...]) -> SessionResult:
    session, transactions, commands, anomalies, tls = cells
    return SessionResult(
        SessionRecord(*session),
        [TransactionRecord(*row) for row in transactions],
        [CommandRecord(*row) for row in commands],
        [AnomalyRecord(*row) for row in anomalies],
        [TlsRecord(*row) for row in tls],
    )


class SpoolError(OSError):
    """The spool could not be written (a full disk, say).

    ``filename`` is the spool's directory. Sessions are missing from the
    spool then, so its tables must not replace anything.
    """


class _Index:
    """Where each spooled session lies and what orders it, in flat arrays.

    About 40 bytes a session: an object per session, with its own id
    string and integers, took ten times that, and this index is what
    memory keeps of every session until the end of the run.

    A session counts once its entry in ``id_ends``, written last, is in.
    A Ctrl-C can stop ``append`` between any two of its steps; the other
    arrays may then hold one entry more, which ``len``, ``order`` and
    ``extend`` leave out and the next ``append`` drops.
    """

    def __init__(self) -> None:
        # A start beyond 64 bits (a hostile pcapng timestamp) turns
        # ``starts`` into a list: see ``_add_start``.
        self.starts: array[int] | list[int] = array("q")
        self.parts = array("I")  # index into Spool._files
        self.offsets = array("q")
        self.lengths = array("q")
        # The session ids, one after the other, in UTF-8: its bytes sort as
        # the text does.
        self.ids = bytearray()
        self.id_ends = array("q")
        # Sessions whose id is that of the one before them in table order,
        # as ``order`` last found: the same connection read twice.
        self.repeated = 0

    def __len__(self) -> int:
        return len(self.id_ends)

    def append(
        self, start: int, session_id: str, part: int, offset: int, length: int
    ) -> None:
        if len(self.starts) != len(self.id_ends):
            self._drop_partial()
        self._add_start(start)
        self.parts.append(part)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.ids += session_id.encode("utf-8", "surrogatepass")
        self.id_ends.append(len(self.ids))  # the session is in

    def extend(self, other: _Index, part: int) -> None:
        """Add ``other``'s sessions, all of them stored in file ``part``."""
        if len(self.starts) != len(self.id_ends):
            self._drop_partial()
        count = len(other)
        for start in other.starts[:count]:
            self._add_start(start)
        self.parts.extend(array("I", [part]) * count)
        self.offsets.extend(other.offsets[:count])
        self.lengths.extend(other.lengths[:count])
        shift = len(self.ids)
        self.ids += other.ids[: other.id_ends[-1] if count else 0]
        self.id_ends.extend(end + shift for end in other.id_ends)

    def session_id(self, i: int) -> bytes:
        return bytes(self.ids[self.id_ends[i - 1] if i else 0 : self.id_ends[i]])

    def order(self) -> array[int]:
        """Positions in table order: by start, then session id, then position.

        An array, not a list: the replay holds it to the end, next to the
        detectors' windows, and a list holds an int object per session.
        """
        order = sorted(range(len(self)), key=self.starts.__getitem__)
        # Sessions that start in the same nanosecond are few: only their
        # runs are sorted again, so no key tuple is made per session. Equal
        # ids, which only equal starts can have, end up side by side.
        done = 0
        repeated = 0
        for _, run in itertools.groupby(order, key=self.starts.__getitem__):
            count = len(list(run))
            if count > 1:
                keyed = sorted(
                    (self.session_id(i), i) for i in order[done : done + count]
                )
                order[done : done + count] = [i for _, i in keyed]
                repeated += sum(a[0] == b[0] for a, b in itertools.pairwise(keyed))
            done += count
        self.repeated = repeated
        return array("q", order)

    def _add_start(self, start: int) -> None:
        try:
            self.starts.append(start)
        except OverflowError:
            self.starts = [*self.starts, start]

    def _drop_partial(self) -> None:
        """Drop what an ``append`` cut short left beyond the last session."""
        count = len(self.id_ends)
        del self.starts[count:]
        del self.parts[count:]
        del self.offsets[count:]
        del self.lengths[count:]
        del self.ids[self.id_ends[-1] if count else 0 :]


@dataclass(slots=True)
class SpoolPart:
    """A worker's spool, handed to the parent process (see ``Spool.adopt``)."""

    path: str
    index: _Index
    ledger: downgrade.Ledger
    stats: RunStats


class _Parts:
    """One stored session's parts (see _LENGTH), read as they are asked for.

    A session of the usual few KiB is read whole at once; a larger one
    (past _BATCH) part by part, so that the rows of a session at the row
    caps are read one table at a time as they are written out, and its
    result only if someone asks for it.
    """

    __slots__ = ("_data", "_descriptor", "_offset", "_starts")

    def __init__(self, descriptor: int, offset: int, length: int) -> None:
        data = None
        if length <= _BATCH:
            tail = data = memoryview(os.pread(descriptor, length, offset))
        else:
            size = min(length, _MOST_PARTS * _LENGTH.size + 1)
            tail = memoryview(os.pread(descriptor, size, offset + length - size))
        count = tail[-1]
        if count == 1:
            starts = [0, length - _WHOLE.size]
        else:
            trailer = tail[len(tail) - 1 - count * _LENGTH.size : -1]
            starts = [0]
            for (part,) in _LENGTH.iter_unpack(trailer):
                starts.append(starts[-1] + part)
        self._data = data
        self._descriptor = descriptor
        self._offset = offset
        self._starts = starts

    def __len__(self) -> int:
        return len(self._starts) - 1

    def load(self, k: int) -> Any:
        """Part ``k``, unmarshalled."""
        start, end = self._starts[k], self._starts[k + 1]
        if self._data is not None:
            return marshal.loads(self._data[start:end])
        return marshal.loads(
            os.pread(self._descriptor, end - start, self._offset + start)
        )


class _Texts:
    """A session's rows, one text per table, each read when it is reached."""

    __slots__ = ("_parts",)

    def __init__(self, parts: _Parts) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[str]:
        parts = self._parts
        for k in range(1, len(parts) - 1):
            text: str = parts.load(k)
            yield text


class Replayed:
    """One session, as the end of the run needs it.

    ``evidence`` goes to ``AlertEngine.feed_evidence``, taken again by
    the detectors that read them where there are findings across sessions
    (``extra``, see ``AlertEngine.refreshed``). ``rows`` is
    the session's rows as text, one per table in ``SESSION_TABLES`` order
    (None unless the spool had a format); ``result`` the session as
    analysed (None unless kept). Both are read from the spool when used,
    so only while it is open. ``extra`` holds the anomalies found across
    sessions, which the tables add to it; the result is always kept when
    there are any (``with_extra``).
    """

    __slots__ = (
        "_cells",
        "_parts",
        "_read",
        "_result",
        "_rows",
        "evidence",
        "extra",
        "start",
    )

    def __init__(
        self,
        start: int,
        parts: _Parts,
        extra: list[AnomalyRecord],
        refresh: Callable[[list[Any], SessionResult], list[Any]],
    ) -> None:
        self.start = start
        self.extra = extra
        self._parts = parts
        self._result: SessionResult | None = None
        self._read = False  # whether _result was made
        self._rows: Iterable[str] | None
        self._cells: tuple[Any, ...] | None = None
        if len(parts) == 1:  # stored whole, read whole
            self.evidence, self._rows, self._cells = parts.load(0)
        else:
            self.evidence = parts.load(0)
            self._rows = _Texts(parts) if len(parts) > 2 else None
        if extra:
            # Taken when the session was spooled, before the check across
            # sessions had found these: starttls_downgrade rests on them.
            self.evidence = refresh(self.evidence, self.with_extra())

    @property
    def rows(self) -> Iterable[str] | None:
        return self._rows

    @property
    def result(self) -> SessionResult | None:
        if not self._read:
            parts = self._parts
            cells = self._cells if len(parts) == 1 else parts.load(len(parts) - 1)
            self._result = _result_of(cells) if cells is not None else None
            self._cells = None
            self._read = True
        return self._result

    def with_extra(self) -> SessionResult:
        """The result with ``extra`` counted and listed among its anomalies."""
        result = self.result
        if result is None:
            raise ValueError("the spool did not keep this session's result")
        if not self.extra:
            return result
        session = result.session
        return SessionResult(
            # A copy: the detectors saw the session without these.
            session=replace(session, anomalies=session.anomalies + len(self.extra)),
            transactions=result.transactions,
            commands=result.commands,
            anomalies=result.anomalies + self.extra,
            tls=result.tls,
        )


class Spool:
    """Sessions on disk, an index in memory; see the module docstring.

    ``rules`` are the detection rules the observations are made with (None
    for the defaults); the run's ``AlertEngine`` must use the same.
    ``rows``: the format to keep each session's rows in, if any.
    ``results``: keep every session's result for ``replay``.

    Files go in ``directory`` (None: the system's temporary directory; the
    CLI uses the output directory, which needs the room anyway, rather than
    a /tmp that may be in memory). They are unnamed, gone when the spool is
    closed or the process ends, unless ``named``: then another process can
    read them (``detach``), and ``close`` deletes them.
    """

    def __init__(
        self,
        directory: str | None = None,
        *,
        named: bool = False,
        rules: Rules | None = None,
        rows: Format | None = None,
        results: bool = True,
    ) -> None:
        self.stats = RunStats()
        self.rules = rules
        self.rows = rows
        self.results = results
        engine = AlertEngine(rules)
        self._evidence = engine.evidence
        self._refresh = engine.refreshed
        self._rows = SessionRows(rows) if rows is not None else None
        self._directory = directory
        self._named = named
        self._files: list[IO[bytes]] = []
        self._paths: list[str | None] = []
        self._index = _Index()
        # What the cross-session check needs of every session.
        self._ledger = downgrade.Ledger()
        self._writer: IO[bytes] | None = None
        self._batch: list[bytes] = []  # sessions not yet written to _writer
        self._batched = 0  # their bytes
        self._end = 0  # _writer's size, the batch included
        self._cut_short = False  # an add stopped before it counted its bytes
        self._scratch: str | None = None

    def __len__(self) -> int:
        return len(self._index)

    @property
    def unjudged(self) -> int:
        """Sessions the check for STARTTLS stripping left out, past its
        limits (see ``downgrade.Ledger``)."""
        return self._ledger.unjudged_within(len(self._index))

    @property
    def repeated(self) -> int:
        """Sessions with the id of another, as the last replay found: the
        same connection from the same first packet, read twice (a capture
        given twice under two names, captures that overlap)."""
        return self._index.repeated

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, result: SessionResult) -> None:
        session = result.session
        keep = self.results or downgrade.may_apply(session)
        if self._writer is None:
            with self._writing():
                self._writer = self._new_file()
            self._end = 0
        elif self._cut_short:
            # A Ctrl-C in the last add may have left its bytes counted or
            # not, in the batch or in the file: count again from the file.
            # They belong to no session, as the index never had it.
            self._write_batch()
            with self._writing():
                self._end = self._writer.tell()
        self._cut_short = True
        offset = self._end
        rows = self._rows
        if len(result.commands) + len(result.transactions) <= _TABLE_PARTS:
            data = marshal.dumps(
                (
                    self._evidence(result),
                    rows(result) if rows is not None else None,
                    _result_cells(result) if keep else None,
                )
            )
            trailer = _WHOLE.pack(len(data), 1)
            size = len(data) + len(trailer)
            self._queue(data, trailer)
        else:
            size = self._add_in_parts(result, keep)
        self._end = offset + size
        self._cut_short = False
        # The index last: a session counts once it is in (see _Index), so a
        # Ctrl-C anywhere in this method leaves it out whole.
        index = self._index
        self._ledger.add(len(index), session)
        index.append(
            session.start, session.session_id, len(self._files) - 1, offset, size
        )

    def _add_in_parts(self, result: SessionResult, keep: bool) -> int:
        """Store a large session a part at a time (see _TABLE_PARTS); its
        size in the file."""
        assert self._writer is not None
        lengths = []
        straight = False
        for part in self._parts(result, keep):
            lengths.append(len(part))
            if straight:
                # The rest of a session too large for the batch goes to the
                # file as it is made, and is let go.
                with self._writing():
                    self._writer.write(part)
            else:
                straight = self._queue(part)
        trailer = struct.pack(f"<{len(lengths)}QB", *lengths, len(lengths))
        self._queue(trailer)
        return sum(lengths) + len(trailer)

    def _queue(self, *data: bytes) -> bool:
        """Add ``data`` to the batch, and write the batch once it is full;
        whether it was."""
        self._batch += data
        self._batched += sum(map(len, data))
        if self._batched < _BATCH:
            return False
        self._write_batch()
        return True

    def _parts(self, result: SessionResult, keep: bool) -> Iterator[bytes]:
        """The session's parts, marshalled, each made once the one before
        is handed on: a session at the row caps (analysis.session) then
        holds one part's objects and bytes at a time, not all of them."""
        yield marshal.dumps(self._evidence(result))
        if self._rows is not None:
            for text in self._rows.each(result):
                yield marshal.dumps(text)
        yield marshal.dumps(_result_cells(result) if keep else None)

    def detach(self) -> SpoolPart:
        """Close the file and describe it for another process to ``adopt``."""
        path = self._paths[-1] if self._writer is not None else None
        if self._writer is not None:
            self._write_batch()
            with self._writing():
                self._writer.close()
            self._writer = None
        part = SpoolPart(path or "", self._index, self._ledger, self.stats)
        self._index = _Index()
        self._ledger = downgrade.Ledger()
        self._files.clear()
        self._paths.clear()
        return part

    def adopt(self, part: SpoolPart) -> None:
        """Take over a worker's sessions; its file loses its name at once.

        The worker's spool must have been made with the same rules, format
        and ``results`` as this one.
        """
        if not len(part.index):
            return
        self.flush()
        self._writer = None  # later adds start a file of their own
        # The index last: until it has them, the ledger's new sessions do
        # not count (see downgrade.Ledger).
        self._ledger.merge(part.ledger, len(self._index), len(part.index))
        self._index.extend(part.index, len(self._files))
        self._files.append(open(part.path, "rb"))  # noqa: SIM115 (closed in close())
        # Read through the open file from now on: with its name gone, a
        # process killed while replaying leaves nothing of it behind.
        os.unlink(part.path)
        self._paths.append(None)

    def replay(self) -> Iterator[Replayed]:
        """Every session in table order: by start, then session id, then arrival.

        The cross-session findings are computed first, from the kept
        columns, so each session comes with its own. A session's rows and
        result are read from the file when asked for: only while the spool
        is open.
        """
        extra = self._findings()
        starts = self._index.starts
        for i, parts in self._stored():
            yield Replayed(starts[i], parts, extra.get(i, []), self._refresh)

    def evidence(self) -> Iterator[tuple[int, list[Any]]]:
        """Each session's start and detectors' evidence, in table order,
        as ``replay`` gives them (the findings across sessions in it)."""
        extra = self._findings()
        starts = self._index.starts
        for i, parts in self._stored():
            if i in extra:
                replayed = Replayed(starts[i], parts, extra[i], self._refresh)
                yield replayed.start, replayed.evidence
            else:
                yield starts[i], parts.load(0)[0] if len(parts) == 1 else parts.load(0)

    def session_ids(self) -> Iterator[str]:
        """Every session's id, in the order the sessions were added: read
        from the index, without the sessions (``read --session``)."""
        index = self._index
        for i in range(len(index)):
            yield index.session_id(i).decode("utf-8", "surrogatepass")

    def _findings(self) -> dict[int, list[AnomalyRecord]]:
        """The anomalies found across sessions, by position in the index."""
        extra: dict[int, list[AnomalyRecord]] = {}
        index = self._index
        described = self._ledger.find(
            lambda i: (
                index.session_id(i).decode("utf-8", "surrogatepass"),
                index.starts[i],
            ),
            len(index),
        )
        for position, record in described:
            extra.setdefault(position, []).append(record)
        return extra

    def _stored(self) -> Iterator[tuple[int, _Parts]]:
        """Each session's position in the index and stored parts, in order."""
        self.flush()
        index = self._index
        # By position, not seek and read: a process forked to replay beside
        # this one (``analysis.detecthelp``) shares the files' offsets.
        descriptors = [handle.fileno() for handle in self._files]
        for i in index.order():
            yield (
                i,
                _Parts(descriptors[index.parts[i]], index.offsets[i], index.lengths[i]),
            )

    def scratch_directory(self) -> str:
        """A private directory for worker spools, removed on ``close``."""
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(
                prefix=".smtpscope-spool-", dir=self._directory
            )
        return self._scratch

    @property
    def directory(self) -> str:
        """Where the spool's files are."""
        return self._directory or tempfile.gettempdir()

    def scratch_file(self) -> IO[bytes]:
        """An unnamed temporary file where the spool keeps its own, for the
        caller to close: it is gone then, or when the process ends."""
        with self._writing():
            return tempfile.TemporaryFile(
                prefix=".smtpscope-scratch-", dir=self._directory
            )

    def close(self) -> None:
        for handle in self._files:
            # Closing flushes, which fails again after a write failed; the
            # contents are being thrown away anyway.
            with contextlib.suppress(OSError):
                handle.close()
        for path in self._paths:
            if path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self._files.clear()
        self._paths.clear()
        self._writer = None
        self._batch.clear()
        self._batched = 0
        if self._scratch is not None:
            # Parts that were never adopted (a worker failed) are in it too.
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _new_file(self) -> IO[bytes]:
        if not self._named:
            handle: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115 (closed in close())
                prefix=".smtpscope-spool-", dir=self._directory
            )
            path = None
        else:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
                prefix="spool-", dir=self._directory, delete=False
            )
            path = handle.name
        self._files.append(handle)
        self._paths.append(path)
        return handle

    def flush(self) -> None:
        """Write out every session added so far, for a reader in another process."""
        if self._writer is not None:
            self._write_batch()
            with self._writing():
                self._writer.flush()

    def _write_batch(self) -> None:
        """Write the batched sessions at the end of the current file."""
        writer = self._writer
        if writer is None or not self._batch:
            return
        with self._writing():
            writer.write(b"".join(self._batch))
        self._batch.clear()
        self._batched = 0

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failure to write the spool into a ``SpoolError``."""
        try:
            yield
        except SpoolError:
            raise
        except OSError as exc:
            raise SpoolError(
                exc.errno, exc.strerror or str(exc), self.directory
            ) from exc
