"""Counting observations per key within a time window, and when to alert.

Detectors turn each finished session into ``Observation``s; a ``Tracker``
per (kind, key) counts them on their own timestamps, never on when they
arrived. It opens an incident when ``threshold`` hits (distinct ones, for
rules that count distinct values) fall within ``window``, and, when a
``min_ratio`` is set, hits are at least that share of all observations in
the window. The incident then takes every later observation of its key
until ``window`` passes without one (without a hit, for a tracker whose
incidents only hits stretch), and becomes one alert.

Sessions are fed in start order, so an observation from a later session is
never older than that session's start: anything older than
``start - window`` can be forgotten, and an incident idle since then is
final. That is what makes the result independent of how the input was split
into files, and lets a live mode close incidents as time goes by.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import operator
from array import array
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from analysis.records import SessionResult


class Observation(NamedTuple):
    """One event a detector saw in one session.

    ``hit`` observations count toward the threshold; the others only toward
    the denominator of a ratio rule. ``value`` makes hits count once per
    distinct value (user names for spraying); None counts each hit.
    ``measure`` is what a per-item rule measured (recipients of a message).
    An alert takes the largest ``severity_shift`` of its observations.

    A NamedTuple rather than a frozen dataclass: detectors make one per
    recipient and per command of interest, and a tuple is several times
    cheaper to build and to turn into plain data for another process.
    """

    kind: str
    key: tuple[str, ...]
    ts: int
    session_id: str
    client_ip: str | None
    server_ip: str | None
    hit: bool = True
    value: str | None = None
    measure: int | None = None
    example: str | None = None
    note: str | None = None  # a phrase the summary adds (an inference, a user)
    severity_shift: int = 0  # steps above (+) or below (-) the rule's severity


# An ``Observation``'s fields as a plain tuple, in its field order: how a
# per-session detector's observations travel between processes.
ObservationCells = tuple[Any, ...]


class PerSession:
    """A detector whose observations depend on one session alone.

    Detectors take a session in two steps so that the first can run where
    the session was analysed (a worker process) and the second where all
    sessions meet, in start order: ``extract`` is a pure function of the
    session that returns plain data (numbers, strings, None, and tuples
    and lists of them) and ``judge`` turns that into observations, keeping
    whatever the detector learns across sessions. Here, with nothing to
    learn, ``extract`` does all the work: it returns the observations
    already, as ``ObservationCells`` (see ``client_observation``).
    """

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        raise NotImplementedError

    def judge(self, extracted: list[ObservationCells]) -> list[Observation]:
        # Key and addresses shared: the observations of a window hold them.
        return [
            Observation._make(
                (
                    cells[0],
                    shared_key(cells[1]),
                    *cells[2:4],
                    _shared_address(cells[4]),
                    _shared_address(cells[5]),
                    *cells[6:],
                )
            )
            for cells in extracted
        ]


@functools.lru_cache(maxsize=4096)
def shared_key(key: tuple[str, ...]) -> tuple[str, ...]:
    """One key tuple per key, whichever session brought it.

    A session's evidence comes back from the spool (marshal) with tuples of
    its own, and a tracker holds an observation of every session within its
    window: on the 1 GB benchmark capture, one key tuple per session (4,100)
    rather than per client (750).
    """
    return key


@functools.lru_cache(maxsize=4096)
def shared_text(text: str) -> str:
    """One string per text, as ``shared_key``: for the addresses and
    examples that the observations of many sessions repeat (an AUTH
    brute force's "AUTH PLAIN [redacted]", five a session)."""
    return text


def _shared_address(address: str | None) -> str | None:
    return address if address is None else shared_text(address)


class _Ordered:
    """Times in order, each with an item if asked for, forgotten from the
    oldest, counted by time range.

    The times are an array of 64-bit integers (nanoseconds since 1970, which
    the capture readers keep within that range): 8 bytes each, where an int
    object in a list takes 40, and a window holds one per observation.
    Forgetting moves a start index rather than deleting the head at once,
    so that neither forgetting nor counting costs time in proportion to how
    many are kept; the head is deleted when at least half is forgotten.
    Only those from ``start`` on are kept: a time added older than a
    forgotten one still lands among the kept ones.
    """

    __slots__ = ("items", "start", "times")

    def __init__(self, with_items: bool = False) -> None:
        self.times = array("q")
        self.items: list[Any] | None = [] if with_items else None
        self.start = 0

    def __len__(self) -> int:
        return len(self.times) - self.start

    def oldest(self) -> int:
        return self.times[self.start]

    def newest(self) -> int:
        return self.times[-1]

    def kept(self) -> list[tuple[int, Any]]:
        """The times kept, each with its item."""
        start, items = self.start, self.items or ()
        return list(zip(self.times[start:], items[start:], strict=True))

    def add(self, ts: int, item: Any = None) -> None:
        # After those of the same time, as they came, like ``bisect.insort``.
        times, items = self.times, self.items
        if len(times) == self.start or times[-1] <= ts:
            times.append(ts)  # in time order, as most come
            if items is not None:
                items.append(item)
            return
        at = bisect.bisect_right(times, ts, lo=self.start)
        times.insert(at, ts)
        if items is not None:
            items.insert(at, item)

    def index(self, ts: int) -> int:
        """Where the times of ``ts`` and later begin."""
        return bisect.bisect_left(self.times, ts, lo=self.start)

    def between(self, first: int, last: int) -> int:
        """How many times fall within ``first`` and ``last``, both included."""
        lo = self.index(first)
        return bisect.bisect_right(self.times, last, lo=lo) - lo

    def forget_before(self, ts: int) -> list[tuple[int, Any]]:
        """Forget the times older than ``ts``; return them with their items
        (none without items)."""
        lo, hi = self.start, self.index(ts)
        times, items = self.times, self.items
        gone = []
        if items is not None:
            gone = list(zip(times[lo:hi], items[lo:hi], strict=True))
        self.start = hi
        if hi * 2 >= len(times):
            del times[:hi]
            if items is not None:
                del items[:hi]
            self.start = 0
        return gone


# What a Tracker's hits, other observations, times, values and counts are
# until it has one: never written to (add replaces them first; forgetting
# from an empty one changes nothing).
_NO_HITS: Final = _Ordered(with_items=True)
_NO_TIMES: Final = _Ordered()
_NO_VALUES: Final[dict[str, _Ordered]] = {}
_NO_COUNTS: Final[dict[str, int]] = {}
# The hits of an incident that tallies them: none is kept, and an empty
# list of its own would take 56 bytes an incident.
_NONE_KEPT: Final[list[Observation]] = []


# Client addresses a Tally counts one by one: about 10 MB of them.
MAX_TALLY_CLIENTS = 100_000
MAX_TALLY_NOTES = 20
# Distinct values a Tally counts one by one; past that it estimates their
# number (_Sketch). An incident that never pauses for its window (a relay or
# AUTH spraying campaign from a few clients) otherwise kept every domain or
# user name it saw: 10 MiB in 30 incidents of 10,000 sessions (found in
# review), for ever in ``live``.
MAX_TALLY_VALUES = 10_000


# Distinct values a Tally keeps in one text before a set: 20 take 2.2 KB in
# a set, 1.4 KB as strings in a list and 0.3 in one text, and an incident
# of 20 relay attempts, each to a domain of its own, holds them for the
# rule's hour (20,000 clients that did so in half an hour: 40 MB of sets).
MAX_LISTED_VALUES = 32
# How the text lists them: each value after _SEP, a digest (bytes) as _DIGEST
# and its hex digits, a value with any of the three characters in it as
# _ESCAPED and the hex digits of its UTF-8, so that no listed value can be
# mistaken for another. Such values stay in the text rather than going to
# a set: a client can put a NUL in every domain it names (found in review:
# 2.5 KB a tally of 20 such domains in a set, against 0.9 KB as a list).
_SEP = "\0"
_DIGEST = "\1"
_ESCAPED = "\2"


# Characters of a tallied value kept as they are; a longer one is counted by
# a 16-byte digest, the same for the same text in any process.
_COUNTED_IN_FULL = 64


def _digest(value: str) -> bytes:
    return hashlib.blake2b(
        value.encode(errors="surrogatepass"), digest_size=16
    ).digest()


class _Sketch:
    """The number of distinct values seen, estimated in 16 KiB: HyperLogLog
    (Flajolet et al., 2007) with 16,384 registers. The hash is blake2b, so
    every process and every order of the same values gives the same
    estimate.

    Up to 2.5 times as many values as registers (about 41,000) the estimate
    counts the empty registers (linear counting), within about 1 %; the
    raw estimate beyond that runs a few per cent high up to about twice
    that. With 4,096 registers the switch from MAX_TALLY_VALUES came in that
    range, 3 % high and up to 5 % either way (found in review).
    """

    __slots__ = ("registers",)
    _BITS = 14  # 2**14 registers
    _REST = 64 - _BITS

    def __init__(self) -> None:
        self.registers = bytearray(1 << self._BITS)

    def add(self, value: str | bytes) -> None:
        data = (
            value if isinstance(value, bytes) else value.encode(errors="surrogatepass")
        )
        hashed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
        index = hashed >> self._REST
        rank = self._REST - (hashed & ((1 << self._REST) - 1)).bit_length() + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def estimate(self) -> int:
        size = len(self.registers)
        alpha = 0.7213 / (1 + 1.079 / size)
        raw = alpha * size * size / sum(2.0**-rank for rank in self.registers)
        empty = self.registers.count(0)
        if raw <= 2.5 * size and empty:
            raw = size * math.log(size / empty)  # few values: count empty ones
        return round(raw)


def _listed(kept: str | bytes) -> str:
    """How ``kept`` is written in a Tally's text."""
    if isinstance(kept, bytes):
        return _SEP + _DIGEST + kept.hex()
    if _SEP in kept or _DIGEST in kept or _ESCAPED in kept:
        # Surrogates too: a value from the wire may hold them.
        return _SEP + _ESCAPED + kept.encode("utf-8", "surrogatepass").hex()
    return _SEP + kept


def _unlisted(text: str) -> set[str | bytes]:
    """The values a Tally's text lists."""
    values: set[str | bytes] = set()
    for each in text.split(_SEP)[1:]:
        if each.startswith(_DIGEST):
            values.add(bytes.fromhex(each[1:]))
        elif each.startswith(_ESCAPED):
            values.add(bytes.fromhex(each[1:]).decode("utf-8", "surrogatepass"))
        else:
            values.add(each)
    return values


# The clients or servers a Tally holds as a tuple before a set: most
# incidents are one client's at one server, and a set of one takes 216
# bytes against 56 for the tuple. Two go to a set, which compares equal
# whatever the order they came in.
_Held = tuple[str | None, ...] | set[str | None]


def _hold(held: _Held, value: str | None, most: int | None = None) -> _Held | None:
    """``held`` with ``value`` added (itself if it was there); None when
    ``value`` is new and ``held`` has ``most`` already."""
    if value in held:
        return held
    if most is not None and len(held) >= most:
        return None
    if isinstance(held, tuple):
        return (value,) if not held else {*held, value}
    held.add(value)
    return held


# What a Tally's notes are until it has one: never written to.
_NO_NOTES: Final[dict[str, int]] = {}


def _no_notes() -> dict[str, int]:
    return _NO_NOTES


@dataclass(slots=True)
class Tally:
    """What an alert reads of its hits besides the ones it lists.

    How many (each distinct ``value`` once, each hit without one once), in
    how many sessions, from which clients to which servers, each note with
    how many hits carried it (in the order the notes first came), and the
    largest severity shift. Taken hit by hit in the order the hits came,
    sessions are counted where the session changes: a session's
    observations reach a tracker together, so another's never split them.
    """

    hits: int = 0
    plain: int = 0  # hits without a value
    sessions: int = 0
    shift: int = 0
    measure: int = 0  # the largest of the hits' measures
    # Each distinct value, only counted: a long one as its digest (see
    # _COUNTED_IN_FULL), for a client can name a new 4 KB sender domain in
    # every MAIL (found in review: 40,000 of them took 198 MB). Past
    # MAX_TALLY_VALUES of them, ``sketch`` estimates how many, and
    # ``values`` is emptied. One text up to MAX_LISTED_VALUES (see _SEP),
    # then a set.
    values: str | set[str | bytes] = ""
    sketch: _Sketch | None = None
    # At most MAX_TALLY_CLIENTS, then ``more_clients``: a flood from
    # spoofed addresses has a new one per hit. A tuple of one, then a set
    # (see _Held).
    clients: _Held = ()
    more_clients: bool = False
    servers: _Held = ()
    # At most MAX_TALLY_NOTES, then the hits with other notes are counted in
    # ``other_notes``: a client can make every note different (found in
    # review: 3,000 sessions each naming two long HELO names held 618 MB,
    # and one alert's summary was 96 MB).
    notes: dict[str, int] = field(default_factory=_no_notes)
    other_notes: int = 0  # hits whose note was not kept
    last_session: str | None = None

    @classmethod
    def of(cls, hits: list[Observation]) -> Tally:
        """The tally of hits in any order: sessions as distinct ids."""
        tally = cls()
        for obs in hits:
            tally.add(obs)
        tally.sessions = len({obs.session_id for obs in hits})
        return tally

    @property
    def count(self) -> int:
        """Distinct values and hits without one: estimated once
        ``estimated``, and then never fewer than were counted one by one nor
        more than the hits with a value (found in review: one value past the
        limit gave 9,685)."""
        if self.sketch is None:
            return self.distinct + self.plain
        valued = self.hits - self.plain
        estimate = self.sketch.estimate()
        return min(max(estimate, MAX_TALLY_VALUES + 1), valued) + self.plain

    @property
    def estimated(self) -> bool:
        return self.sketch is not None

    def counted(self) -> set[str | bytes]:
        """The values counted one by one, as kept (a long one as its digest)."""
        values = self.values
        return _unlisted(values) if isinstance(values, str) else set(values)

    @property
    def distinct(self) -> int:
        """The values counted one by one."""
        values = self.values
        if isinstance(values, str):
            return values.count(_SEP)
        return len(values)

    def add(self, obs: Observation) -> None:
        self.hits += 1
        value = obs.value
        if value is None:
            self.plain += 1
        else:
            kept = value if len(value) <= _COUNTED_IN_FULL else _digest(value)
            if self.sketch is not None:
                self.sketch.add(kept)
            else:
                self._add_value(kept)
        if obs.session_id != self.last_session:
            self.sessions += 1
            self.last_session = obs.session_id
        clients = _hold(self.clients, obs.client_ip, MAX_TALLY_CLIENTS)
        if clients is None:
            self.more_clients = True
        else:
            self.clients = clients
        servers = _hold(self.servers, obs.server_ip)
        if servers is not None:
            self.servers = servers
        note = obs.note
        if note:
            notes = self.notes
            if notes is _NO_NOTES:
                notes = self.notes = {}
            if note in notes:
                notes[note] += 1
            elif len(notes) < MAX_TALLY_NOTES:
                notes[note] = 1
            else:
                self.other_notes += 1
        if self.hits == 1 or obs.severity_shift > self.shift:
            self.shift = obs.severity_shift
        if obs.measure is not None and obs.measure > self.measure:
            self.measure = obs.measure

    def _add_value(self, kept: str | bytes) -> None:
        """Count a value unless it was counted already."""
        values = self.values
        if isinstance(values, str):
            listed = _listed(kept)
            if listed + _SEP in values + _SEP:
                return
            if values.count(_SEP) < MAX_LISTED_VALUES:
                self.values = values + listed
                return
            values = self.values = _unlisted(values)
        if kept in values:
            return
        values.add(kept)
        if len(values) > MAX_TALLY_VALUES:
            self.sketch = _Sketch()
            for each in values:
                self.sketch.add(each)
            self.values = set()


# The examples an alert lists, the first in time of its hits' distinct ones.
MAX_EXAMPLES = 3


@dataclass(slots=True)
class Evidence:
    """What an alert lists of the hits it takes: the session ids, in the
    order of each session's first hit, and the first ``MAX_EXAMPLES``
    distinct examples, in the order of their first hit. The first hit
    overall is the alert's first piece of evidence (its id comes from it).

    Hits are ordered by time, those of one time in the order they were
    taken: each is placed at (ts, how many were taken before it). A session
    is kept with its earliest place alone and only the first examples with
    theirs: held whole, each with an example of its own, the hits of an
    incident of 20 relay attempts took about 6 KB, for the rule's hour
    (20,000 clients refused 20 domains each in half an hour: read -j 1
    peaked at 345 MiB with the hits whole, 197 MiB with their evidence).
    """

    taken: int = 0
    # The session of the hits while they are all one session's, with its
    # earliest place; then ``more``: session id -> the earliest place of its
    # hits. A dict of one takes 184 bytes, and most incidents held for a
    # window are a single session's.
    only: str | None = None
    only_place: tuple[int, int] = (0, 0)
    more: dict[str, tuple[int, int]] | None = None
    # (ts, taken before it, example), earliest first: at most MAX_EXAMPLES,
    # each example once, at its earliest place.
    examples: list[tuple[int, int, str]] = field(default_factory=list)

    @classmethod
    def of(cls, hits: list[Observation]) -> Evidence:
        evidence = cls()
        for obs in hits:
            evidence.add(obs)
        return evidence

    @property
    def sessions(self) -> dict[str, tuple[int, int]]:
        """Session id -> the earliest place of its hits."""
        if self.more is not None:
            return self.more
        return {} if self.only is None else {self.only: self.only_place}

    def add(self, obs: Observation) -> None:
        place = (obs.ts, self.taken)
        self.taken += 1
        session_id, more = obs.session_id, self.more
        if more is None:
            if self.only is None:
                self.only, self.only_place = session_id, place
            elif session_id == self.only:
                self.only_place = min(self.only_place, place)
            else:
                more = self.more = {self.only: self.only_place}
                self.only = None
        if more is not None:
            earliest = more.get(session_id)
            if earliest is None or place < earliest:
                more[session_id] = place
        example = obs.example
        if example:
            self._add_example(place, example)

    def _add_example(self, place: tuple[int, int], example: str) -> None:
        # An example pushed out past MAX_EXAMPLES has others before it that
        # only move earlier: it can come back only with an earlier hit of
        # its own, which is then placed as new.
        examples = self.examples
        for at, (ts, taken, text) in enumerate(examples):
            if text == example:
                if (ts, taken) < place:
                    return
                del examples[at]
                break
        # Places are distinct: the texts are never compared. One string per
        # text: the incidents of several kinds list the same commands.
        bisect.insort(examples, (*place, shared_text(example)))
        del examples[MAX_EXAMPLES:]

    def first(self) -> tuple[str, int]:
        """The session id and time of the earliest hit."""
        session_id, (ts, _) = min(self.sessions.items(), key=operator.itemgetter(1))
        return session_id, ts

    def session_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.sessions, key=self.sessions.__getitem__))

    def listed_examples(self) -> tuple[str, ...]:
        return tuple(text for _, _, text in self.examples)


@dataclass(slots=True)
class Incident:
    """What one alert is made of: its hits (see ``tally``), and the other
    observations of its key that came with them, by count and time only.

    An alert reads only hits, but for its total (a ratio rule's) and its
    first and last times: an observation that is not a hit is kept as its
    time alone, which is most of a window's memory (a session that asks for
    five recipients gives ten observations, most of them not hits).

    With a ``tally``, every hit is counted in the tally and none is kept
    whole: the first ``keep`` make the ``evidence`` the alert lists, which
    holds their sessions and first examples only. A SYN flood brings
    hundreds of thousands, each from its own client. Kept whole, 500,000
    such hits took 208 MiB (about 440 bytes each); tallied, 45 MiB, nearly
    all of it the set of their 500,000 client addresses. ``tally`` and
    ``evidence`` come together.

    An incident that counts its hits but has had one alone so far keeps
    that hit whole in ``hits``, with neither: the alert reads the same of
    it (``Tally.of`` and ``Evidence.of`` that one hit), and the second hit
    makes them. A flood of clients that each try to relay once opens an
    incident per client, held for the rule's hour: its hit takes about
    0.3 KB, a tally and evidence of it about 0.9 KB more.

    With ``hits_span``, only hits stretch the incident: ``first`` and
    ``last`` are its first and last hit's times and the others counted are
    those between them. Rules counted per server see every session to the
    server; its ordinary traffic must not keep an incident open after the
    last hit, nor swell its total.
    """

    hits: list[Observation]  # none with a tally
    others: int  # observations that were not hits
    first: int  # the oldest observation's time, hit or not (see hits_span)
    last: int  # the newest's
    keep: int = 0
    tally: Tally | None = None
    evidence: Evidence | None = None
    hits_span: bool = False
    # With hits_span: others newer than the last hit, counted among
    # ``others`` once a later hit shows them to be within the incident.
    trailing: int = 0
    # The alert's id, once an alert was made of it (see AlertEngine._alert).
    alert_id: str | None = None

    @property
    def total(self) -> int:
        hits = len(self.hits) if self.tally is None else self.tally.hits
        return hits + self.others

    def add(self, obs: Observation) -> None:
        ts = obs.ts
        if obs.hit:
            if self.keep and self.tally is None:
                self._tally_first()
            tally = self.tally
            if tally is None:
                self.hits.append(obs)
            else:
                tally.add(obs)
                evidence = self.evidence
                if evidence is not None and evidence.taken < self.keep:
                    evidence.add(obs)
            if self.hits_span and ts > self.last:
                self.others += self.trailing
                self.trailing = 0
        elif self.hits_span:
            if ts > self.last:
                self.trailing += 1
            else:
                self.others += 1
            return
        else:
            self.others += 1
        if ts < self.first:
            self.first = ts
        elif ts > self.last:
            self.last = ts

    def _tally_first(self) -> None:
        """Count the one hit kept whole so far, as the incident's opening
        would have (a tally reads no time, and its last session is that
        hit's), before a second is taken."""
        held = self.hits
        self.tally = Tally.of(held)
        self.evidence = Evidence.of(held[: self.keep])
        self.hits = _NONE_KEPT


class _Rule(NamedTuple):
    """What a Tracker counts by, the same for every key of a rule: held
    once (see ``_rule``) rather than in each tracker, of which a flood of
    distinct clients opens one per client."""

    threshold: int
    window: int  # ns
    min_ratio: float
    # Hits an incident keeps whole (0: all), and whether only hits stretch
    # it: see ``Incident``.
    keep: int
    hits_span: bool


@functools.lru_cache(maxsize=256)
def _rule(
    threshold: int, window: int, min_ratio: float, keep: int, hits_span: bool
) -> _Rule:
    return _Rule(threshold, window, min_ratio, keep, hits_span)


class Tracker:
    """The recent observations of one key, and its open incident if any.

    A rule crosses in the window that ends at the newest observation or in
    the one that ends at a hit just added (an observation of a session that
    began earlier can be newer). Deciding that must not take time in
    proportion to what the window holds: a rule that never crosses (one
    sender domain, a ratio never reached) is asked at every hit. So every
    window count is a range count over times kept in order, and the
    distinct values of the window ending at the newest observation are
    counted as observations enter and leave it.
    """

    __slots__ = (
        "_edge",
        "_edge_values",
        "_last",
        "_newest",
        "_others",
        "_plain",
        "_recent",
        "_rule",
        "_values",
        "incident",
    )

    # The times of the recent hits, each with its observation, and the
    # times of the other observations (none while an incident is open), the
    # times of hits without a value and of each value, and the newest
    # observation's time. A hit's observation is the one held for an
    # earlier hit when the two differ only in their time (see _held): the
    # refusals of one session are alike but for it, and an observation
    # takes about 150 bytes. All of them shared empty ones (or 0) while an
    # incident is open or the window is empty (see _forget_all).
    _recent: _Ordered
    _others: _Ordered
    _plain: _Ordered
    _values: dict[str, _Ordered]
    _newest: int
    # Hits per value at or after ``_edge``: the newest time less a window.
    _edge: int
    _edge_values: dict[str, int]
    # The observation held for the latest hit.
    _last: Observation | None

    def __init__(
        self,
        threshold: int,
        window: int,
        min_ratio: float,
        incident: Incident | None = None,
        keep: int = 0,
        hits_span: bool = False,
    ) -> None:
        self._rule = _rule(threshold, window, min_ratio, keep, hits_span)
        self.incident = incident
        self._forget_all()

    @property
    def threshold(self) -> int:
        return self._rule.threshold

    @property
    def window(self) -> int:
        return self._rule.window

    @property
    def min_ratio(self) -> float:
        return self._rule.min_ratio

    @property
    def keep(self) -> int:
        return self._rule.keep

    @property
    def hits_span(self) -> bool:
        return self._rule.hits_span

    def add(self, obs: Observation) -> None:
        ts = obs.ts
        if self.incident is not None:
            self.incident.add(obs)
            return
        if self.idle:
            self._newest = ts
            self._edge = ts - self.window
        elif ts > self._newest:
            self._newest = ts
            self._move_edge(ts - self.window)
        if not obs.hit:
            if self._others is _NO_TIMES:
                self._others = _Ordered()
            self._others.add(ts)
            return
        if self._recent is _NO_HITS:
            self._recent = _Ordered(with_items=True)
        self._recent.add(ts, self._held(obs))
        value = obs.value
        if value is None:
            if self._plain is _NO_TIMES:
                self._plain = _Ordered()
            self._plain.add(ts)
        else:
            if self._values is _NO_VALUES:
                self._values, self._edge_values = {}, {}
            times = self._values.get(value)
            if times is None:
                times = self._values[value] = _Ordered()
            times.add(ts)
            if ts >= self._edge:
                edge_values = self._edge_values
                edge_values[value] = edge_values.get(value, 0) + 1
        if self._crossed(ts):
            self.incident = self._open(obs)
            self._forget_all()

    def _held(self, obs: Observation) -> Observation:
        """What the window holds for the hit ``obs`` beside its time: the
        observation held for the latest hit if only their times differ."""
        last = self._last
        if last is not None and last[3:] == obs[3:] and last[:2] == obs[:2]:
            return last
        self._last = obs
        return obs

    def _open(self, crossing: Observation) -> Incident:
        """The incident the hit ``crossing`` (just added) opens."""
        recent, others = self._recent, self._others
        first = recent.oldest()
        if self.hits_span:
            last = recent.newest()
            incident = Incident(
                [],
                others.between(first, last),
                first,
                last,
                hits_span=True,
                trailing=others.between(last + 1, self._newest),
            )
        else:
            if others:
                first = min(first, others.oldest())
            incident = Incident([], len(others), first, self._newest)
        held = recent.kept()
        if self.keep and len(held) == 1:
            incident.keep = self.keep
            # Tallied when a second hit comes; a list made to size (56 + 8
            # bytes, where a comprehension of one takes 88).
            incident.hits = list(_timed(held))
        elif self.keep:
            # A tally reads no time: the observations held serve as they are.
            tally = Tally.of([obs for _, obs in held])
            # The hit added last came last: later hits of its session follow.
            tally.last_session = crossing.session_id
            incident.tally, incident.keep = tally, self.keep
            incident.evidence = Evidence.of(_timed(held[: self.keep]))
            incident.hits = _NONE_KEPT
        else:
            incident.hits = _timed(held)
        return incident

    def expire(self, now: int) -> Incident | None:
        """Forget what ``now`` leaves behind; return an incident now final."""
        cutoff = now - self.window
        recent, others = self._recent, self._others
        forgot = False
        if others and others.oldest() < cutoff:
            others.forget_before(cutoff)
            forgot = True
        if recent and recent.oldest() < cutoff:
            gone = recent.forget_before(cutoff)
            self._plain.forget_before(cutoff)
            self._forget_values(gone, cutoff)
            forgot = True
        if forgot and self.idle:
            self._forget_all()
        incident = self.incident
        if incident is not None and incident.last + self.window < now:
            self.incident = None
            return incident
        return None

    def finish(self) -> Incident | None:
        incident, self.incident = self.incident, None
        self._forget_all()
        return incident

    @property
    def idle(self) -> bool:
        return self.incident is None and not self._recent and not self._others

    def _forget_all(self) -> None:
        # Shared empty ones until an observation needs its own (see add):
        # most keys see a session or two, and there are thousands of keys.
        self._recent = _NO_HITS
        self._others = _NO_TIMES
        self._plain = _NO_TIMES
        self._values = _NO_VALUES
        self._edge_values = _NO_COUNTS
        self._last = None
        # Read only while the window holds something: add sets them anew
        # when it is empty, and an int of a time takes 36 bytes.
        self._newest = self._edge = 0

    def _forget_values(self, gone: list[tuple[int, Observation]], cutoff: int) -> None:
        values, edge_values, edge = self._values, self._edge_values, self._edge
        for ts, obs in gone:
            value = obs.value
            if value is None:
                continue
            times = values.get(value)
            if times is not None:
                times.forget_before(cutoff)
                if not times:
                    del values[value]
            if ts >= edge:
                self._uncount(edge_values, value)

    def _move_edge(self, edge: int) -> None:
        # Hits between the old edge and the new leave the window that ends
        # at the newest; each does so once, as the edge only rises.
        recent = self._recent
        lo, hi = recent.index(self._edge), recent.index(edge)
        edge_values = self._edge_values
        for obs in (recent.items or ())[lo:hi]:
            if obs.value is not None:
                self._uncount(edge_values, obs.value)
        self._edge = edge

    @staticmethod
    def _uncount(counts: dict[str, int], value: str) -> None:
        left = counts[value] - 1
        if left:
            counts[value] = left
        else:
            del counts[value]

    def _crossed(self, ts: int) -> bool:
        # The window that ends at the newest observation (the usual case, in
        # order) and the one that ends at the hit just added.
        newest = self._newest
        if self._newest_window_crosses(newest):
            return True
        return ts != newest and self._window_crosses(ts)

    def _newest_window_crosses(self, newest: int) -> bool:
        edge = self._edge
        count = len(self._edge_values) + self._plain.between(edge, newest)
        if count < self.threshold:
            return False
        hits = self._recent.between(edge, newest)
        return hits >= self.min_ratio * (hits + self._others.between(edge, newest))

    def _window_crosses(self, end: int) -> bool:
        first = end - self.window
        hits = self._recent.between(first, end)
        if hits < self.threshold:
            return False  # too few hits, let alone distinct ones
        if hits < self.min_ratio * (hits + self._others.between(first, end)):
            return False
        # Each value at most once: stop as soon as enough are found. A value
        # kept but outside this window can only be where sessions overlap.
        wanted = self.threshold - self._plain.between(first, end)
        if wanted > len(self._values):
            return False
        for times in self._values.values():
            if wanted <= 0:
                break
            if times.between(first, end):
                wanted -= 1
        return wanted <= 0


def _timed(held: list[tuple[int, Observation]]) -> list[Observation]:
    """The hits ``held`` as they came, each with its own time."""
    return [obs if obs.ts == ts else obs._replace(ts=ts) for ts, obs in held]


@functools.lru_cache(maxsize=1024)
def client_key(client_ip: str) -> tuple[str]:
    """The key of observations counted per client.

    One key object per client: the trackers hold an observation for every
    recipient within their windows, and a session's observations, sent
    between processes in one piece, keep sharing it on arrival.
    """
    return (client_ip,)


@functools.lru_cache(maxsize=256)
def server_key(server_ip: str) -> tuple[str]:
    """The key of observations counted per server: one object per server."""
    return (server_ip,)


@functools.lru_cache(maxsize=256)
def server_side_key(server_ip: str) -> tuple[str, str]:
    """The key of observations counted per server in a kind that counts
    others per client (``starttls_injection``): kept apart from the key of
    a client with the same address, and told apart by ``is_server_side``."""
    return (server_ip, SERVER_SIDE)


SERVER_SIDE = "server"


def is_server_side(key: tuple[str, ...]) -> bool:
    return len(key) == 2 and key[1] == SERVER_SIDE


def server_observation(
    result: SessionResult,
    kind: str,
    ts: int,
    *,
    hit: bool = True,
    example: str | None = None,
    note: str | None = None,
    key: tuple[str, ...] | None = None,
) -> ObservationCells:
    """``client_observation``'s cells, counted per server address (under
    ``key``, where a kind keeps its servers apart: ``server_side_key``)."""
    cells = client_observation(result, kind, ts, hit=hit, example=example, note=note)
    if key is None:
        key = server_key(result.session.server_ip)
    return (kind, key, *cells[2:])


def client_observation(
    result: SessionResult,
    kind: str,
    ts: int,
    *,
    hit: bool = True,
    value: str | None = None,
    measure: int | None = None,
    example: str | None = None,
    note: str | None = None,
) -> ObservationCells:
    """An observation counted per client address, the usual key, as cells.

    Made as a plain tuple, not an ``Observation``: a session has one per
    recipient, say, and would have to be turned into tuples to leave the
    process anyway.
    """
    session = result.session
    client_ip = session.client_ip
    return (
        kind,
        client_key(client_ip),
        ts,
        session.session_id,
        client_ip,
        session.server_ip,
        hit,
        value,
        measure,
        example,
        note,
        0,  # severity_shift
    )
