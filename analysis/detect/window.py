"""Counting observations per key within a time window, and when to alert.

Detectors turn each finished session into ``Observation``s; a ``Tracker``
per (kind, key) counts them on their own timestamps, never on when they
arrived. It opens an incident when ``threshold`` hits (distinct ones, for
rules that count distinct values) fall within ``window``, and, when a
``min_ratio`` is set, hits are at least that share of all observations in
the window. The incident then takes every later observation of its key
until ``window`` passes without one, and becomes one alert.

Sessions are fed in start order, so an observation from a later session is
never older than that session's start: anything older than
``start - window`` can be forgotten, and an incident idle since then is
final. That is what makes the result independent of how the input was split
into files, and lets a live mode close incidents as time goes by.
"""

from __future__ import annotations

import bisect
import functools
import operator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
        return [Observation._make(cells) for cells in extracted]


# An observation's timestamp, by position: cheaper than a lambda per call.
_TS = operator.itemgetter(Observation._fields.index("ts"))


@dataclass(slots=True)
class Tracker:
    """The recent observations of one key, and its open incident if any."""

    threshold: int
    window: int  # ns
    min_ratio: float
    recent: list[Observation] = field(default_factory=list)  # sorted by ts
    incident: list[Observation] | None = None
    last: int = 0  # newest observation in the incident

    def add(self, obs: Observation) -> None:
        ts = obs.ts
        if self.incident is not None:
            self.incident.append(obs)
            if ts > self.last:
                self.last = ts
            return
        recent = self.recent
        if not recent or recent[-1].ts <= ts:
            recent.append(obs)  # in time order, as most observations come
        else:
            bisect.insort(recent, obs, key=_TS)
        if obs.hit and self._crossed(ts):
            self.incident = list(recent)
            self.last = max(o.ts for o in recent)
            self.recent = []

    def expire(self, now: int) -> list[Observation] | None:
        """Forget what ``now`` leaves behind; return an incident now final."""
        recent = self.recent
        if recent and recent[0].ts < now - self.window:
            del recent[: bisect.bisect_left(recent, now - self.window, key=_TS)]
        incident = self.incident
        if incident is not None and self.last + self.window < now:
            self.incident = None
            return incident
        return None

    def finish(self) -> list[Observation] | None:
        incident, self.incident = self.incident, None
        self.recent = []
        return incident

    @property
    def idle(self) -> bool:
        return self.incident is None and not self.recent

    def _crossed(self, ts: int) -> bool:
        # The window that ends at the newest observation (the usual case, in
        # order) and the one that ends at the observation just added.
        newest = self.recent[-1].ts
        if self._window_crosses(newest):
            return True
        return ts != newest and self._window_crosses(ts)

    def _window_crosses(self, end: int) -> bool:
        recent = self.recent
        lo = bisect.bisect_left(recent, end - self.window, key=_TS)
        hi = bisect.bisect_right(recent, end, lo=lo, key=_TS)
        if hi - lo < self.threshold:
            return False  # too few observations, let alone hits
        inside = recent[lo:hi]
        hits = [o for o in inside if o.hit]
        if count_hits(hits) < self.threshold:
            return False
        return len(hits) >= self.min_ratio * len(inside)


def count_hits(observations: list[Observation]) -> int:
    """Hits, each distinct ``value`` once; hits without a value each once."""
    hits = [o for o in observations if o.hit]
    values = {o.value for o in hits if o.value is not None}
    return len(values) + sum(1 for o in hits if o.value is None)


@functools.lru_cache(maxsize=1024)
def client_key(client_ip: str) -> tuple[str]:
    """The key of observations counted per client.

    One key object per client: the trackers hold an observation for every
    recipient within their windows, and a session's observations, sent
    between processes in one piece, keep sharing it on arrival.
    """
    return (client_ip,)


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
