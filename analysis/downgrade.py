"""Possible STARTTLS stripping, judged across all sessions of a run.

An attacker on the path can remove STARTTLS from a server's EHLO reply so
that the client never asks for TLS (RFC 3207 6; RFC 8314 3 calls this a
downgrade). Some middleboxes overwrite the keyword in place with one of the
same length (``XXXXXXXA``). Two signs are looked for, once every session has
been read:

- an EHLO reply in clear text without STARTTLS, while another session with
  the same server (address and port) did get STARTTLS offered;
- an EHLO keyword made of X's, at most one other letter.

Each gives one ``possible_downgrade`` anomaly on the session. The result
depends only on the sessions' values, not on the order they were read in.
"""

from __future__ import annotations

import functools
import itertools
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from analysis.records import AnomalyRecord, SessionRecord

KIND = "possible_downgrade"


def mangled_keyword(keyword: str) -> bool:
    """A keyword overwritten with X's, like Cisco's ``XXXXXXXA``."""
    word = keyword.split(" ", 1)[0].upper()
    return len(word) >= 4 and word.isalpha() and word.count("X") >= len(word) - 1


def find(sessions: Mapping[str, Sequence[Any]]) -> list[tuple[int, AnomalyRecord]]:
    """(row position, anomaly) for every session that looks downgraded.

    ``sessions`` holds the sessions table's columns as lists, by name.
    """
    ledger = Ledger()
    for i, values in enumerate(zip(*(sessions[name] for name in _READ), strict=True)):
        ledger.add_values(i, *values)
    return ledger.find()


# The session columns ``find`` reads, in ``Ledger.add_values``'s order.
_READ = (
    "session_id",
    "start",
    "server_ip",
    "server_port",
    "starttls_offered",
    "capabilities",
    "tls",
    "helo_verb",
)


class Ledger:
    """What ``find`` needs, gathered a session at a time.

    Per session only its server's number and whether it was offered
    STARTTLS (five bytes); whole only the few sessions that ``may_apply``
    to. Sessions have consecutive positions (their rows) from 0, and
    ``find`` reports the suspects by position.

    A session's entries are written last to ``offered``. ``find`` and
    ``merge`` take a count of sessions and ignore whatever lies beyond it, and
    ``add`` first drops what an add cut short (Ctrl-C) left beyond its
    position: so the owner (``analysis.spool``), which counts a session
    only once its own record of it is complete, never sees half of one.
    """

    def __init__(self) -> None:
        self._numbers: dict[tuple[str, int], int] = {}  # server -> number
        self._servers: list[tuple[str, int]] = []  # number -> server
        self._server_of = array("I")  # by position
        self._offered = bytearray()  # by position: 1 when offered STARTTLS
        self.suspects = _Suspects()

    def __len__(self) -> int:
        return len(self._offered)

    def add(self, position: int, session: SessionRecord) -> None:
        self.add_values(
            position,
            session.session_id,
            session.start,
            session.server_ip,
            session.server_port,
            session.starttls_offered,
            session.capabilities,
            session.tls,
            session.helo_verb,
        )

    def add_values(
        self,
        position: int,
        session_id: str,
        start: int,
        server_ip: str,
        server_port: int,
        offered: bool,
        capabilities: list[str] | None,
        tls: str,
        helo_verb: str | None,
    ) -> None:
        """``add`` from the session's column values, in ``_READ``'s order."""
        self._drop_from(position)
        number = self._number((server_ip, server_port))
        mangled = _overwritten(tuple(capabilities or ()))
        if mangled is not None or _clear_ehlo_without_starttls(
            tls, helo_verb, capabilities, offered
        ):
            self.suspects.append(position, session_id, start, number, mangled)
        self._server_of.append(number)
        self._offered.append(1 if offered else 0)  # the session is in

    def merge(self, other: Ledger, shift: int, count: int) -> None:
        """Take ``other``'s first ``count`` sessions as positions ``shift`` on."""
        self._drop_from(shift)
        renumber = [self._number(server) for server in other._servers]
        for position, sid, start, number, mangled in other.suspects:
            if position < count:
                self.suspects.append(
                    position + shift, sid, start, renumber[number], mangled
                )
        self._server_of.extend(renumber[n] for n in other._server_of[:count])
        self._offered += other._offered[:count]

    def offers(self, count: int) -> Counter[tuple[str, int]]:
        """Sessions offered STARTTLS per server, among the first ``count``."""
        numbers = itertools.compress(self._server_of[:count], self._offered[:count])
        return Counter({self._servers[n]: k for n, k in Counter(numbers).items()})

    def find(self, count: int | None = None) -> list[tuple[int, AnomalyRecord]]:
        """``find`` over the first ``count`` sessions (all by default)."""
        count = len(self) if count is None else count
        offered = self.offers(count)
        found: list[tuple[int, AnomalyRecord]] = []
        for position, sid, start, number, mangled in self.suspects:
            if position >= count:
                break
            server = self._servers[number]
            if mangled is not None:
                detail = (
                    f"EHLO keyword {mangled!r} looks overwritten "
                    "(STARTTLS removed on the path?)"
                )
            elif offered[server]:
                detail = (
                    "EHLO reply without STARTTLS; "
                    f"{offered[server]} other session(s) to "
                    f"{server[0]}:{server[1]} were offered it"
                )
            else:
                continue
            found.append((position, AnomalyRecord(sid, start, KIND, detail)))
        return found

    def _number(self, server: tuple[str, int]) -> int:
        number = self._numbers.get(server)
        if number is None:
            # In this order: a number is handed out only once its server
            # is listed.
            self._servers.append(server)
            number = self._numbers[server] = len(self._servers) - 1
        return number

    def _drop_from(self, position: int) -> None:
        """Forget sessions from ``position`` on: what an add cut short left."""
        if len(self._server_of) > position or len(self._offered) > position:
            del self._server_of[position:]
            del self._offered[position:]
        suspects = self.suspects
        while suspects and suspects.positions[-1] >= position:
            suspects.pop()


class _Suspects:
    """The sessions ``find`` may flag, in the order added: (position,
    session id, start, server number, overwritten keyword or None), held
    in arrays. As a list of tuples they took about 250 bytes a session, and
    a run may see hundreds of thousands of clear-text EHLO replies without
    STARTTLS (found in review: 200,000 of them, 49 MB).
    """

    __slots__ = ("_ends", "_ids", "_mangled", "numbers", "positions", "starts")

    def __init__(self) -> None:
        self.positions = array("q")
        self.starts = array("q")
        self.numbers = array("I")
        self._ids = bytearray()  # the session ids, one after another
        self._ends = array("Q")  # where each ends in _ids
        self._mangled: dict[int, str] = {}  # by index, the few that have one

    def __len__(self) -> int:
        return len(self.positions)

    def append(
        self,
        position: int,
        session_id: str,
        start: int,
        number: int,
        mangled: str | None,
    ) -> None:
        if mangled is not None:
            self._mangled[len(self.positions)] = mangled
        self._ids += session_id.encode()
        self._ends.append(len(self._ids))
        self.positions.append(position)
        self.starts.append(start)
        self.numbers.append(number)

    def pop(self) -> None:
        """Forget the last one added."""
        last = len(self.positions) - 1
        self._mangled.pop(last, None)
        del self._ids[self._ends[last - 1] if last else 0 :]
        for values in (self.positions, self.starts, self.numbers, self._ends):
            values.pop()

    def __iter__(self) -> Iterator[tuple[int, str, int, int, str | None]]:
        ids, mangled, begin = self._ids, self._mangled, 0
        rows = zip(self.positions, self.starts, self.numbers, self._ends, strict=True)
        for i, (position, start, number, end) in enumerate(rows):
            yield position, ids[begin:end].decode(), start, number, mangled.get(i)
            begin = end


def _clear_ehlo_without_starttls(
    tls: str, helo_verb: str | None, capabilities: list[str] | None, offered: bool
) -> bool:
    # A clear-text EHLO reply was seen (it listed keywords), and no TLS
    # followed: after TLS the capabilities may be those of the inner EHLO.
    return (
        tls == "none"
        and helo_verb in ("EHLO", "LHLO")
        and bool(capabilities)
        and not offered
    )


def may_apply(session: SessionRecord) -> bool:
    """Whether ``find`` could flag this session, whatever the others hold.

    Lets a caller keep only these sessions whole until ``find`` has run.
    """
    return _overwritten(tuple(session.capabilities)) is not None or (
        _clear_ehlo_without_starttls(
            session.tls,
            session.helo_verb,
            session.capabilities,
            session.starttls_offered,
        )
    )


def _overwritten(capabilities: tuple[str, ...]) -> str | None:
    """The first keyword that looks overwritten, if any."""
    # Asked for every session as it is spooled; a server lists the same
    # keywords to all its clients, so the lists seen are few and cached.
    # Long ones are not: 200 sessions of distinct 1 MB EHLO replies held
    # 448 MB for a 214 MB capture in this and two caches like it (found in
    # review).
    if sum(map(len, capabilities)) > CACHED_TEXT:
        return _first_overwritten(capabilities)
    return _cached_overwritten(capabilities)


def _first_overwritten(capabilities: tuple[str, ...]) -> str | None:
    return next((c for c in capabilities if mangled_keyword(c)), None)


_cached_overwritten = functools.lru_cache(maxsize=1024)(_first_overwritten)
# Characters of wire text beyond which an answer about it is not cached.
CACHED_TEXT = 4096
