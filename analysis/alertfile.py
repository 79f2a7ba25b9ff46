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
"""

from __future__ import annotations

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


class AlertFile:
    """Alerts' rows in a scratch file, an index of their order in memory.

    ``encode`` turns alerts into the text of their rows (a ``TableFiles``
    encoder for the ``alerts`` table); ``scratch`` is the unnamed file to
    keep them in, which ``close`` closes (and so deletes).
    """

    def __init__(
        self, encode: Callable[[Iterable[Alert]], str], scratch: IO[bytes]
    ) -> None:
        self._encode = encode
        self._file = scratch
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
        self._file.write(data)
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
        self._file.flush()
        descriptor = self._file.fileno()
        ends = self._ends
        start = end = 0  # the run of rows lying side by side, to read next
        for i in self._order():
            begin = ends[i - 1] if i else 0
            if begin == end and end - start < _READ:
                end = ends[i]
                continue
            if end > start:
                yield _read(descriptor, start, end)
            start, end = begin, ends[i]
        if end > start:
            yield _read(descriptor, start, end)

    def close(self) -> None:
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


def _read(descriptor: int, start: int, end: int) -> str:
    # By position: the file's offset is left where the writes end.
    data = os.pread(descriptor, end - start, start)
    if len(data) != end - start:
        raise OSError(f"the alerts' scratch file is shorter than written ({start})")
    return data.decode("utf-8", _ERRORS)
