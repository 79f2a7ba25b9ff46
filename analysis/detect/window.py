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


# An observation's timestamp, by position: cheaper than a lambda per call.
_TS = operator.itemgetter(Observation._fields.index("ts"))


class _Ordered:
    """Items in time order, forgotten from the oldest, counted by time range.

    Forgetting moves a start index rather than deleting the head of the
    list at once, so that neither forgetting nor counting costs time in
    proportion to how many items are kept; the list is compacted when at
    least half of it is forgotten. Only ``items[start:]`` are kept: an item
    added older than a forgotten one still lands among the kept ones.
    """

    __slots__ = ("items", "key", "start")

    def __init__(self, key: Any = None) -> None:
        self.items: list[Any] = []
        self.start = 0
        self.key = key

    def __len__(self) -> int:
        return len(self.items) - self.start

    def kept(self) -> list[Any]:
        return self.items[self.start :]

    def newest(self) -> int:
        last = self.items[-1]
        return int(last if self.key is None else self.key(last))

    def add(self, item: Any, ts: int) -> None:
        # After items of the same time, as they came, like ``bisect.insort``.
        items = self.items
        if len(items) == self.start or self.newest() <= ts:
            items.append(item)  # in time order, as most items come
        else:
            bisect.insort(items, item, lo=self.start, key=self.key)

    def index(self, ts: int) -> int:
        """Where items of ``ts`` and later begin."""
        return bisect.bisect_left(self.items, ts, lo=self.start, key=self.key)

    def between(self, first: int, last: int) -> int:
        """How many items fall within ``first`` and ``last``, both included."""
        lo = self.index(first)
        return bisect.bisect_right(self.items, last, lo=lo, key=self.key) - lo

    def forget_before(self, ts: int) -> list[Any]:
        """Forget the items older than ``ts``; return them."""
        lo, hi = self.start, self.index(ts)
        gone = self.items[lo:hi]
        self.start = hi
        if hi * 2 >= len(self.items):
            del self.items[:hi]
            self.start = 0
        return gone


# What a Tracker's hits, other observations, times, values and counts are
# until it has one: never written to (add replaces them first; forgetting
# from an empty one changes nothing).
_NO_HITS: Final = _Ordered(_TS)
_NO_TIMES: Final = _Ordered()
_NO_VALUES: Final[dict[str, _Ordered]] = {}
_NO_COUNTS: Final[dict[str, int]] = {}


# Client addresses a Tally counts one by one: about 10 MB of them.
MAX_TALLY_CLIENTS = 100_000
MAX_TALLY_NOTES = 20
# Distinct values a Tally counts one by one; past that it estimates their
# number (_Sketch). An incident that never pauses for its window (a relay or
# AUTH spraying campaign from a few clients) otherwise kept every domain or
# user name it saw: 10 MiB in 30 incidents of 10,000 sessions (found in
# review), for ever in ``live``.
MAX_TALLY_VALUES = 10_000


# Distinct values a Tally keeps in a list before a set: 20 take 2.2 KB in a
# set and 0.2 in a list, and an incident of 20 relay attempts, each to a
# domain of its own, holds them for the rule's hour (20,000 clients that
# did so in half an hour: 40 MB of sets).
MAX_LISTED_VALUES = 32


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
    # ``values`` is emptied. A list up to MAX_LISTED_VALUES, then a set.
    values: list[str | bytes] | set[str | bytes] = field(default_factory=list)
    sketch: _Sketch | None = None
    # At most MAX_TALLY_CLIENTS, then ``more_clients``: a flood from
    # spoofed addresses has a new one per hit.
    clients: set[str | None] = field(default_factory=set)
    more_clients: bool = False
    servers: set[str | None] = field(default_factory=set)
    # At most MAX_TALLY_NOTES, then the hits with other notes are counted in
    # ``other_notes``: a client can make every note different (found in
    # review: 3,000 sessions each naming two long HELO names held 618 MB,
    # and one alert's summary was 96 MB).
    notes: dict[str, int] = field(default_factory=dict)
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
            return len(self.values) + self.plain
        valued = self.hits - self.plain
        estimate = self.sketch.estimate()
        return min(max(estimate, MAX_TALLY_VALUES + 1), valued) + self.plain

    @property
    def estimated(self) -> bool:
        return self.sketch is not None

    def add(self, obs: Observation) -> None:
        self.hits += 1
        value = obs.value
        if value is None:
            self.plain += 1
        else:
            kept = value if len(value) <= _COUNTED_IN_FULL else _digest(value)
            if self.sketch is not None:
                self.sketch.add(kept)
            elif kept not in self.values:
                self._add_value(kept)
        if obs.session_id != self.last_session:
            self.sessions += 1
            self.last_session = obs.session_id
        clients = self.clients
        if len(clients) < MAX_TALLY_CLIENTS:
            clients.add(obs.client_ip)
        elif obs.client_ip not in clients:
            self.more_clients = True
        self.servers.add(obs.server_ip)
        note = obs.note
        if note:
            notes = self.notes
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
        """Count a value not counted yet."""
        values = self.values
        if isinstance(values, list):
            values.append(kept)
            if len(values) > MAX_LISTED_VALUES:
                self.values = set(values)
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
    # session id -> the earliest place of its hits
    sessions: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (ts, taken before it, example), earliest first: at most MAX_EXAMPLES,
    # each example once, at its earliest place.
    examples: list[tuple[int, int, str]] = field(default_factory=list)

    @classmethod
    def of(cls, hits: list[Observation]) -> Evidence:
        evidence = cls()
        for obs in hits:
            evidence.add(obs)
        return evidence

    def add(self, obs: Observation) -> None:
        place = (obs.ts, self.taken)
        self.taken += 1
        sessions = self.sessions
        earliest = sessions.get(obs.session_id)
        if earliest is None or place < earliest:
            sessions[obs.session_id] = place
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
        # Places are distinct: the texts are never compared.
        bisect.insort(examples, (*place, example))
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


@dataclass(slots=True)
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

    threshold: int
    window: int  # ns
    min_ratio: float
    incident: Incident | None = None
    # Hits an incident keeps whole (0: all), and whether only hits stretch
    # it: see ``Incident``.
    keep: int = 0
    hits_span: bool = False
    # The recent hits and the times of the other observations (none while
    # an incident is open), the times of hits without a value and of each
    # value, and the newest observation's time.
    _recent: _Ordered = field(init=False)
    _others: _Ordered = field(init=False)
    _plain: _Ordered = field(init=False)
    _values: dict[str, _Ordered] = field(init=False)
    _newest: int = field(init=False, default=0)
    # Hits per value at or after ``_edge``: the newest time less a window.
    _edge: int = field(init=False, default=0)
    _edge_values: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._forget_all()

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
            self._others.add(ts, ts)
            return
        if self._recent is _NO_HITS:
            self._recent = _Ordered(_TS)
        self._recent.add(obs, ts)
        value = obs.value
        if value is None:
            if self._plain is _NO_TIMES:
                self._plain = _Ordered()
            self._plain.add(ts, ts)
        else:
            if self._values is _NO_VALUES:
                self._values, self._edge_values = {}, {}
            times = self._values.get(value)
            if times is None:
                times = self._values[value] = _Ordered()
            times.add(ts, ts)
            if ts >= self._edge:
                edge_values = self._edge_values
                edge_values[value] = edge_values.get(value, 0) + 1
        if self._crossed(ts):
            self.incident = self._open(obs)
            self._forget_all()

    def _open(self, crossing: Observation) -> Incident:
        """The incident the hit ``crossing`` (just added) opens."""
        hits, others = self._recent.kept(), self._others
        first = hits[0].ts
        if self.hits_span:
            last = hits[-1].ts
            incident = Incident(
                hits,
                others.between(first, last),
                first,
                last,
                hits_span=True,
                trailing=others.between(last + 1, self._newest),
            )
        else:
            if others:
                first = min(first, others.items[others.start])
            incident = Incident(hits, len(others), first, self._newest)
        if self.keep:
            tally = Tally.of(hits)
            # The hit added last came last: later hits of its session follow.
            tally.last_session = crossing.session_id
            incident.tally, incident.keep = tally, self.keep
            incident.evidence = Evidence.of(hits[: self.keep])
            incident.hits = []
        return incident

    def expire(self, now: int) -> Incident | None:
        """Forget what ``now`` leaves behind; return an incident now final."""
        cutoff = now - self.window
        recent, others = self._recent, self._others
        forgot = False
        if others and others.items[others.start] < cutoff:
            others.forget_before(cutoff)
            forgot = True
        if recent and recent.items[recent.start].ts < cutoff:
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

    def _forget_values(self, gone: list[Observation], cutoff: int) -> None:
        values, edge_values, edge = self._values, self._edge_values, self._edge
        for obs in gone:
            value = obs.value
            if value is None:
                continue
            times = values.get(value)
            if times is not None:
                times.forget_before(cutoff)
                if not times:
                    del values[value]
            if obs.ts >= edge:
                self._uncount(edge_values, value)

    def _move_edge(self, edge: int) -> None:
        # Hits between the old edge and the new leave the window that ends
        # at the newest; each does so once, as the edge only rises.
        recent = self._recent
        lo, hi = recent.index(self._edge), recent.index(edge)
        edge_values = self._edge_values
        for obs in recent.items[lo:hi]:
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


def server_observation(
    result: SessionResult,
    kind: str,
    ts: int,
    *,
    hit: bool = True,
    note: str | None = None,
) -> ObservationCells:
    """``client_observation``'s cells, counted per server address."""
    cells = client_observation(result, kind, ts, hit=hit, note=note)
    return (kind, server_key(result.session.server_ip), *cells[2:])


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
