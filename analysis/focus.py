"""The sessions ``read --session`` asks for: ids resolved, sessions picked.

An id may be given whole or as a prefix of one, as git takes a commit's.
``resolve`` matches what was asked against every session id in one pass
over the spool's index, before the replay, so that the replay only has to
keep the sessions chosen (``Picks``): on a large capture memory holds
those, not every session. A prefix that matches sessions of several ids
picks none of them: showing one of them would show a session the user may
not have meant.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from analysis.detect import Alert
from analysis.records import SessionResult

# How many of the ids an ambiguous prefix matches are named.
NAMED_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """A prefix that matches sessions of more than one id."""

    prefix: str
    # The ids it matched that sort first, at most NAMED_CANDIDATES: the
    # same whatever order the index holds them in (it differs with -j).
    candidates: tuple[str, ...]
    sessions: int  # every session it matched


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the ids asked for picked."""

    chosen: frozenset[str]  # whole session ids
    unknown: tuple[str, ...]  # asked, and matching no session
    ambiguous: tuple[Ambiguous, ...]

    @property
    def refused(self) -> bool:
        """Whether the run should end with status 1: nothing was picked,
        or a prefix was ambiguous (the user's ask, not the traffic, is at
        fault then, and a script should not take the output for whole)."""
        return not self.chosen or bool(self.ambiguous)


class _Matches:
    """What one asked id matched, with bounded memory: a prefix as short
    as "S" matches every session."""

    __slots__ = ("asked", "exact", "ids", "sessions")

    def __init__(self, asked: str) -> None:
        self.asked = asked
        self.exact = False
        # The ids that sort first, at most NAMED_CANDIDATES, sorted.
        self.ids: list[str] = []
        self.sessions = 0

    def see(self, session_id: str) -> None:
        if not session_id.startswith(self.asked):
            return
        self.sessions += 1
        if session_id == self.asked:
            self.exact = True
        ids = self.ids
        if session_id in ids:
            return
        if len(ids) < NAMED_CANDIDATES:
            bisect.insort(ids, session_id)
        elif session_id < ids[-1]:
            ids.pop()
            bisect.insort(ids, session_id)


def resolve(asked: Sequence[str], session_ids: Iterable[str]) -> Resolved:
    """Match ``asked`` (whole ids or prefixes, in the order given) against
    ``session_ids``, every session's id in any order."""
    matches = [_Matches(text) for text in dict.fromkeys(asked)]
    for session_id in session_ids:
        for match in matches:
            match.see(session_id)
    chosen: set[str] = set()
    unknown: list[str] = []
    ambiguous: list[Ambiguous] = []
    for match in matches:
        if match.exact:
            # A whole id; the same connection read twice gives it twice.
            chosen.add(match.asked)
        elif len(match.ids) == 1:
            chosen.add(match.ids[0])
        elif not match.ids:
            unknown.append(match.asked)
        else:
            candidates = tuple(match.ids)
            ambiguous.append(Ambiguous(match.asked, candidates, match.sessions))
    return Resolved(frozenset(chosen), tuple(unknown), tuple(ambiguous))


class Picks:
    """The chosen sessions and the alerts that name them, taken from the
    replay: ``add`` every session (as the tables show it), ``add_alert``
    every alert, in any order."""

    def __init__(self, chosen: frozenset[str]) -> None:
        self._chosen = chosen
        self.sessions: list[SessionResult] = []
        self._alerts: list[Alert] = []

    def add(self, result: SessionResult) -> None:
        if result.session.session_id in self._chosen:
            self.sessions.append(result)

    def add_alert(self, alert: Alert) -> None:
        if not self._chosen.isdisjoint(alert.session_ids):
            self._alerts.append(alert)

    def alerts_of(self, session_id: str) -> list[Alert]:
        """The alerts whose evidence names ``session_id``, in the alerts
        table's order: by first_seen, then alert_id."""
        named = [a for a in self._alerts if session_id in a.session_ids]
        return sorted(named, key=lambda a: (a.first_seen, a.alert_id))
