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
import operator
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from analysis.records import AnomalyRecord, SessionRecord

KIND = "possible_downgrade"


def mangled_keyword(keyword: str) -> bool:
    """A keyword overwritten with X's, like Cisco's ``XXXXXXXA``."""
    word = keyword.split(" ", 1)[0].upper()
    return len(word) >= 4 and word.isalpha() and word.count("X") >= len(word) - 1


def find(sessions: Mapping[str, Sequence[Any]]) -> list[tuple[int, AnomalyRecord]]:
    """(row position, anomaly) for every session that looks downgraded.

    ``sessions`` holds the sessions table's columns as lists, by name. All
    of them are in memory already, so the ledger's limits do not apply.
    """
    ledger = Ledger(limited=False)
    for i, values in enumerate(zip(*(sessions[name] for name in _READ), strict=True)):
        ledger.add_values(i, *values)
    ids, starts = sessions["session_id"], sessions["start"]
    return ledger.find(lambda i: (ids[i], starts[i]))


# The session columns ``find`` reads, in ``Ledger.add_values``'s order.
_READ = (
    "server_ip",
    "server_port",
    "starttls_offered",
    "capabilities",
    "tls",
    "helo_verb",
)

# A session's id and start, by position: its owner has them already.
Describe = Callable[[int], tuple[str, int]]

# Bytes of suspects one ledger keeps: about 12 a session to an IPv4
# server, 24 to an IPv6 one, so about 1.4 million sessions whose clear-text
# EHLO reply lacked STARTTLS. Past it such sessions are counted, not judged.
MOST_SUSPECT_BYTES = 16 << 20
# Servers one ledger counts STARTTLS offers for, about 75 bytes each. An
# offer from a server past them is counted as not judged.
MOST_SERVERS = 200_000


class Ledger:
    """What ``find`` needs, gathered a session at a time.

    Of a session that ``may_apply`` to, its position and its server (or its
    overwritten keyword), packed in one bytearray (``_Suspects``); of a
    session offered STARTTLS, a count for its server. Nothing of other
    sessions, and nothing per server that never offered STARTTLS. Session
    ids and starts are not kept: the owner has them, and ``find`` asks it
    for those of the sessions it flags. Sessions have consecutive positions
    (their rows) from 0, and ``find`` reports the suspects by position.

    Past ``MOST_SUSPECT_BYTES`` of suspects or ``MOST_SERVERS`` servers
    offering STARTTLS (unless not ``limited``), a session that would need
    either is counted in ``unjudged`` instead: the check could miss a
    downgrade among them.

    The owner (``analysis.spool``) counts a session only once its own
    record of it is complete, after the ledger's; a Ctrl-C can stop it in
    between. So the last add's count is kept apart (``_pending``) until the
    next add or merge shows its session was counted (its position lies
    before theirs) or not (theirs is the same): only then is it folded in,
    by a store that gives the same whether done once or twice. ``find``
    and ``merge`` take a count of sessions and leave out what lies beyond.
    """

    def __init__(self, limited: bool = True) -> None:
        self._most_bytes = MOST_SUSPECT_BYTES if limited else None
        self._most_servers = MOST_SERVERS if limited else None
        self._offers: dict[bytes, int] = {}  # server key -> sessions offered
        # The last add's changes, as (position, server key or None, its new
        # count of offers, the new unjudged).
        self._pending: tuple[int, bytes | None, int, int] | None = None
        self._unjudged = 0
        self._length = 0
        self._parts: list[tuple[int, int, Ledger]] = []  # (shift, count, part)
        self.suspects = _Suspects()

    def __len__(self) -> int:
        return self._length

    def add(self, position: int, session: SessionRecord) -> None:
        self.add_values(
            position,
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
        server_ip: str,
        server_port: int,
        offered: bool,
        capabilities: list[str] | None,
        tls: str,
        helo_verb: str | None,
    ) -> None:
        """``add`` from the session's column values, in ``_READ``'s order."""
        self._settle(position)
        mangled = _overwritten(tuple(capabilities or ()))
        stripped = _clear_ehlo_without_starttls(tls, helo_verb, capabilities, offered)
        key = server_key(server_ip, server_port) if offered or stripped else None
        unjudged = self._unjudged
        if mangled is not None or stripped:
            payload = _MANGLED + _text(mangled) if mangled is not None else key
            assert payload is not None
            if self.suspects.fits(payload, self._most_bytes):
                self.suspects.append(position, payload)
            else:
                unjudged += 1
        count = 0
        if offered:
            assert key is not None
            count = self._offers.get(key, 0) + 1
            if count == 1 and not _below(len(self._offers), self._most_servers):
                key, count, unjudged = None, 0, unjudged + 1
        if count or unjudged != self._unjudged:
            self._pending = (position, key if count else None, count, unjudged)
        self._length = position + 1  # the session is in

    def merge(self, other: Ledger, shift: int, count: int) -> None:
        """Take ``other``'s first ``count`` sessions as positions ``shift`` on.

        ``other`` is kept as it is, not copied: it is the parent's from then
        on, and only what lies beyond ``count`` is dropped from it.
        """
        self._settle(shift)
        other._settle(count)
        self._parts.append((shift, count, other))
        self._length = shift + count  # the sessions are in

    @property
    def unjudged(self) -> int:
        """Sessions left out past the limits, among all added."""
        return self.unjudged_within(len(self))

    def unjudged_within(self, count: int) -> int:
        """Sessions left out past the limits, among the first ``count``."""
        pending = self._pending
        total = pending[3] if pending and pending[0] < count else self._unjudged
        for shift, size, part in self._parts:
            if shift < count:
                total += part.unjudged_within(min(size, count - shift))
        return total

    def offers(self, count: int) -> Counter[tuple[str, int]]:
        """Sessions offered STARTTLS per server, among the first ``count``."""
        total: Counter[tuple[str, int]] = Counter()
        pending = self._pending
        for key, n in self._offers.items():
            total[server_of(key)] += n
        if pending and pending[1] is not None and pending[0] < count:
            server = server_of(pending[1])
            total[server] += pending[2] - self._offers.get(pending[1], 0)
        for shift, size, part in self._parts:
            if shift < count:
                total.update(part.offers(min(size, count - shift)))
        return total

    def find(
        self, describe: Describe, count: int | None = None
    ) -> list[tuple[int, AnomalyRecord]]:
        """``find`` over the first ``count`` sessions (all by default);
        ``describe`` gives a flagged session's id and start."""
        count = len(self) if count is None else count
        lookups = self._lookups(count)
        found: list[tuple[int, AnomalyRecord]] = []
        for position, payload in self._suspects_within(count):
            if payload[:1] == _MANGLED:
                mangled = payload[1:].decode("utf-8", "surrogatepass")
                detail = (
                    f"EHLO keyword {mangled!r} looks overwritten "
                    "(STARTTLS removed on the path?)"
                )
            else:
                offered = sum(lookup(payload) for lookup in lookups)
                if not offered:
                    continue
                ip, port = server_of(payload)
                detail = (
                    "EHLO reply without STARTTLS; "
                    f"{offered} other session(s) to {ip}:{port} were offered it"
                )
            session_id, start = describe(position)
            found.append((position, AnomalyRecord(session_id, start, KIND, detail)))
        found.sort(key=operator.itemgetter(0))
        return found

    def _lookups(self, count: int) -> list[Callable[[bytes], int]]:
        """Functions giving a server's offers among the first ``count``
        sessions, one for this ledger's own and one for each part's."""
        offers, pending = self._offers, self._pending
        lookups: list[Callable[[bytes], int]] = []
        if pending and pending[1] is not None and pending[0] < count:
            at_key, at_count = pending[1], pending[2]
            lookups.append(
                lambda key: at_count if key == at_key else offers.get(key, 0)
            )
        elif offers:
            lookups.append(lambda key: offers.get(key, 0))
        for shift, size, part in self._parts:
            if shift < count:
                lookups += part._lookups(min(size, count - shift))
        return lookups

    def _suspects_within(self, count: int) -> Iterator[tuple[int, bytes]]:
        """(position, payload) of the suspects among the first ``count``."""
        for position, payload in self.suspects:
            if position < count:
                yield position, payload
        for shift, size, part in self._parts:
            for position, payload in part._suspects_within(min(size, count - shift)):
                yield position + shift, payload

    def _settle(self, position: int) -> None:
        """Fold in the last add if its session lies before ``position``, and
        forget what lies at or beyond it: what an add or merge cut short
        left (a Ctrl-C), or what the owner never counted."""
        pending = self._pending
        if pending is not None:
            at, key, count, unjudged = pending
            if at < position:
                if key is not None:
                    self._offers[key] = count
                self._unjudged = unjudged
            self._pending = None
        while self._parts and self._parts[-1][0] >= position:
            self._parts.pop()
        self.suspects.drop_from(position)


def _below(size: int, most: int | None) -> bool:
    return most is None or size < most


_MANGLED = b"m"  # a suspect's payload: an overwritten keyword, not a server


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def server_key(ip: str, port: int) -> bytes:
    """A server as a few bytes: its address packed (7 bytes for IPv4, 19
    for IPv6, with the port), or as text where packing would not give the
    same text back."""
    family, tag = (socket.AF_INET6, b"6") if ":" in ip else (socket.AF_INET, b"4")
    try:
        packed = socket.inet_pton(family, ip)
        if socket.inet_ntop(family, packed) == ip and 0 <= port < 1 << 16:
            return tag + packed + port.to_bytes(2, "big")
    except (OSError, ValueError):
        pass
    return b"t" + _text(f"{port}\n{ip}")


def server_of(key: bytes) -> tuple[str, int]:
    """The address and port ``server_key`` made ``key`` of."""
    tag = key[:1]
    if tag == b"t":
        port, ip = key[1:].decode("utf-8", "surrogatepass").split("\n", 1)
        return ip, int(port)
    family = socket.AF_INET6 if tag == b"6" else socket.AF_INET
    return socket.inet_ntop(family, key[1:-2]), int.from_bytes(key[-2:], "big")


class _Suspects:
    """The sessions ``find`` may flag, as (position, payload) records in one
    bytearray, in the order added: a session to an IPv4 server in 12 bytes.

    Each record is its position (4 bytes), its payload, and the payload's
    length at its end (1 byte, or 5 from 255 bytes on), so the records are
    read from the last. A record is added by one ``+=``: a Ctrl-C leaves it
    in whole or not at all. Objects per session took 250 bytes, then
    arrays of positions, starts, ids and servers' numbers about 45 (found
    in review: 150,000 sessions to distinct servers without STARTTLS).
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def __len__(self) -> int:
        return sum(1 for _ in self._records())

    @property
    def size(self) -> int:
        return len(self._data)

    def fits(self, payload: bytes, most: int | None) -> bool:
        """Whether a record of ``payload`` keeps the bytes within ``most``."""
        size = len(payload)
        record = 4 + size + (1 if size < 255 else 5)
        return most is None or len(self._data) + record <= most

    def append(self, position: int, payload: bytes) -> None:
        size = len(payload)
        tail = bytes([size]) if size < 255 else size.to_bytes(4, "little") + b"\xff"
        self._data += position.to_bytes(4, "little") + payload + tail

    def drop_from(self, position: int) -> None:
        """Forget the records of positions from ``position`` on (those
        added last)."""
        for at, start, _ in self._records():
            if at < position:
                break
            del self._data[start:]

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(position, payload), from the last added to the first."""
        data, end = self._data, len(self._data)
        for position, start, payload in self._records():
            yield (
                position,
                bytes(data[payload : end - (1 if data[end - 1] < 255 else 5)]),
            )
            end = start

    def _records(self) -> Iterator[tuple[int, int, int]]:
        """(position, where the record starts, where its payload starts),
        from the last record to the first."""
        data, end = self._data, len(self._data)
        while end:
            size, tail = data[end - 1], 1
            if size == 255:
                size, tail = int.from_bytes(data[end - 5 : end - 1], "little"), 5
            payload = end - tail - size
            start = payload - 4
            yield int.from_bytes(data[start:payload], "little"), start, payload
            end = start


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
