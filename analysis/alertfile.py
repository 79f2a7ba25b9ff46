"""Alert rows parked on disk until the end of an offline run.

The ``alerts`` table is ordered by ``first_seen``, then ``alert_id``, but
the detectors hand alerts out as their incidents end, in another order, and
the last of them only when the input ends. Holding every ``Alert`` until
then (about 1 KB each) made memory grow with the incidents of the capture:
a flood of distinct clients that each try to relay once makes an alert per
client. An ``AlertFile`` instead encodes each alert's row as it comes, in
the table's format, into an unnamed scratch file (gone when closed, or when
the process ends however it ends), and keeps in memory only what orders it:
about 40 bytes an alert, in flat arrays. ``texts`` then gives the rows back
in table order, the order a stable sort of all the alerts by
(``first_seen``, ``alert_id``) would give: alerts equal in both keep the
order they came in.

A scratch file that cannot be written or read back (a full disk) raises
``AlertFileError``, which names it and its directory: the user never sees
the file, and "cannot write: No space left on device" alone (found in
review) did not say which of the run's files needed the room.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from analysis.detect import Alert

# The rows of consecutive alerts that lie side by side in the file are read
# back in one call, up to this many bytes: alerts mostly come out in about
# their table order, and a call per row would cost more than the copy.
_READ = 256 * 1024

# UTF-8 with surrogates kept, both ways: the table file's own encoder then
# meets exactly the text it would have met without the trip to disk.
_ERRORS = "surrogatepass"


class AlertFileError(OSError):
    """The alerts' scratch file could not be made, written or read back.

    ``filename`` is the directory it is in; ``action`` what failed
    ("write", "read back").
    """

    def __init__(self, exc: OSError, directory: str, action: str = "write") -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), directory)
        self.action = action

    def __str__(self) -> str:
        return (
            f"cannot {self.action} the alerts' scratch file in {self.filename} "
            f"(their rows wait there to be put in order): {self.strerror}"
        )


class AlertFile:
    """Alerts' rows in a scratch file, an index of their order in memory.

    ``encode`` turns alerts into the text of their rows (a ``TableFiles``
    encoder for the ``alerts`` table); ``scratch`` is the unnamed file to
    keep them in, which ``close`` closes (and so deletes), and ``directory``
    where it is, for the messages of ``AlertFileError``.
    """

    def __init__(
        self,
        encode: Callable[[Iterable[Alert]], str],
        scratch: IO[bytes],
        directory: str,
    ) -> None:
        self._encode = encode
        self._file = scratch
        self._directory = directory
        # A first_seen beyond 64 bits (a hostile pcapng timestamp) turns
        # ``_firsts`` into a list, as the spool's index does with starts.
        self._firsts: array[int] | list[int] = array("q")
        # The alert ids one after the other, in UTF-8 (which sorts as the
        # text does), and where each ends.
        self._ids = bytearray()
        self._id_ends = array("q")
        self._ends = array("q")  # where each row's text ends in the file
        self._size = 0

    def __enter__(self) -> AlertFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, alert: Alert) -> None:
        """Write ``alert``'s row and note where it goes in the table."""
        data = self._encode((alert,)).encode("utf-8", _ERRORS)
        try:
            self._file.write(data)
        except OSError as exc:
            raise AlertFileError(exc, self._directory) from exc
        self._size += len(data)
        try:
            self._firsts.append(alert.first_seen)
        except OverflowError:
            self._firsts = [*self._firsts, alert.first_seen]
        self._ids += alert.alert_id.encode("utf-8", _ERRORS)
        self._id_ends.append(len(self._ids))
        self._ends.append(self._size)

    def texts(self) -> Iterator[str]:
        """The rows' text in table order, a run of rows at a time."""
        try:
            self._file.flush()
        except OSError as exc:
            raise AlertFileError(exc, self._directory) from exc
        descriptor = self._file.fileno()
        ends = self._ends
        start = end = 0  # the run of rows lying side by side, to read next
        for i in self._order():
            begin = ends[i - 1] if i else 0
            if begin == end and end - start < _READ:
                end = ends[i]
                continue
            if end > start:
                yield self._read(descriptor, start, end)
            start, end = begin, ends[i]
        if end > start:
            yield self._read(descriptor, start, end)

    def close(self) -> None:
        # Closing flushes, which fails again after a write failed (and
        # would hide that error); the rows are thrown away either way.
        with contextlib.suppress(OSError):
            self._file.close()

    def _order(self) -> array[int]:
        """Positions by first_seen, then alert_id, then arrival."""
        firsts = self._firsts
        order = sorted(range(len(self)), key=firsts.__getitem__)
        # Alerts that begin in the same nanosecond are few (a burst of
        # kinds from one session): only their runs are sorted again.
        done = 0
        for _, run in itertools.groupby(order, key=firsts.__getitem__):
            count = len(list(run))
            if count > 1:
                keyed = sorted((self._id(i), i) for i in order[done : done + count])
                order[done : done + count] = [i for _, i in keyed]
            done += count
        return array("q", order)

    def _id(self, i: int) -> bytes:
        return bytes(self._ids[self._id_ends[i - 1] if i else 0 : self._id_ends[i]])

    def _read(self, descriptor: int, start: int, end: int) -> str:
        # By position: the file's offset is left where the writes end.
        try:
            data = os.pread(descriptor, end - start, start)
        except OSError as exc:
            raise AlertFileError(exc, self._directory, "read back") from exc
        if len(data) != end - start:
            short = OSError(errno.EIO, f"shorter than written (at byte {start})")
            raise AlertFileError(short, self._directory, "read back")
        return data.decode("utf-8", _ERRORS)
