"""The window tracker: exact incidents, the same as the rescanning tracker's.

``ReferenceTracker`` below is the tracker as it was before it counted
incrementally: it rescans the window at every hit, which is quadratic when a
rule never crosses, but its meaning is the one to keep. The randomized test
feeds both the same streams and wants the same incidents, step by step.
The reference keeps every observation of an incident; the tracker keeps the
hits and only the count and times of the rest, which is all an alert reads
(``summary`` compares the two on that).
"""

from __future__ import annotations

import bisect
import operator
import random
from dataclasses import dataclass, field

import pytest

from analysis.detect import window
from analysis.detect.window import Evidence, Incident, Observation, Tally, Tracker

S = 1_000_000_000
_TS = operator.itemgetter(Observation._fields.index("ts"))


def count_hits(observations: list[Observation]) -> int:
    """Hits, each distinct ``value`` once; hits without a value each once."""
    hits = [o for o in observations if o.hit]
    values = {o.value for o in hits if o.value is not None}
    return len(values) + sum(1 for o in hits if o.value is None)


# The reference: the rescanning tracker, kept as it was (do not optimise).
@dataclass(slots=True)
class ReferenceTracker:
    threshold: int
    window: int
    min_ratio: float
    recent: list[Observation] = field(default_factory=list)
    incident: list[Observation] | None = None
    last: int = 0

    def add(self, obs: Observation) -> None:
        ts = obs.ts
        if self.incident is not None:
            self.incident.append(obs)
            if ts > self.last:
                self.last = ts
            return
        recent = self.recent
        if not recent or recent[-1].ts <= ts:
            recent.append(obs)
        else:
            bisect.insort(recent, obs, key=_TS)
        if obs.hit and self._crossed(ts):
            self.incident = list(recent)
            self.last = max(o.ts for o in recent)
            self.recent = []

    def expire(self, now: int) -> list[Observation] | None:
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
        newest = self.recent[-1].ts
        if self._window_crosses(newest):
            return True
        return ts != newest and self._window_crosses(ts)

    def _window_crosses(self, end: int) -> bool:
        recent = self.recent
        lo = bisect.bisect_left(recent, end - self.window, key=_TS)
        hi = bisect.bisect_right(recent, end, lo=lo, key=_TS)
        if hi - lo < self.threshold:
            return False
        inside = recent[lo:hi]
        hits = [o for o in inside if o.hit]
        if count_hits(hits) < self.threshold:
            return False
        return len(hits) >= self.min_ratio * len(inside)


def obs(
    ts: int, *, hit: bool = True, value: str | None = None, n: int = 0
) -> Observation:
    return Observation("k", ("c",), ts, f"s{n}", "c", None, hit, value)


Summary = tuple[list[Observation], int, int, int]


def summary(incident: Incident | list[Observation] | None) -> Summary | None:
    """What an alert reads of an incident, from the tracker's or the
    reference's: the hits in order, how many others, the first and last time."""
    if incident is None:
        return None
    if isinstance(incident, Incident):
        return (incident.hits, incident.others, incident.first, incident.last)
    hits = [o for o in incident if o.hit]
    times = [o.ts for o in incident]
    return (hits, len(incident) - len(hits), min(times), max(times))


def feed(
    tracker: Tracker, stream: list[Observation]
) -> list[tuple[list[int], int, int, int]]:
    """Incidents as hit times, others, first and last: each session expires,
    then adds."""
    incidents = []
    for o in stream:
        incident = tracker.expire(o.ts)
        if incident is not None:
            incidents.append(incident)
        tracker.add(o)
    incident = tracker.finish()
    if incident is not None:
        incidents.append(incident)
    return [([x.ts for x in i.hits], i.others, i.first, i.last) for i in incidents]


def test_one_value_never_crosses_a_distinct_rule_until_enough_come() -> None:
    tracker = Tracker(threshold=3, window=10 * S, min_ratio=0.0)
    # A hit a second with one value: never 3 distinct, however many hits.
    stream = [obs(t * S, value="a") for t in range(30)]
    # Then b and c: at c the window (28 to 38) holds a, b and c.
    stream += [obs(35 * S, value="b"), obs(38 * S, value="c"), obs(39 * S, value="a")]
    stream += [obs(60 * S, value="d")]  # more than a window after 39
    hits = [28 * S, 29 * S, 35 * S, 38 * S, 39 * S]
    assert feed(tracker, stream) == [(hits, 0, 28 * S, 39 * S)]
    assert tracker.idle


def test_a_ratio_rule_crosses_only_when_hits_are_the_share() -> None:
    tracker = Tracker(threshold=3, window=10 * S, min_ratio=0.5)
    # One hit in three, for a long time: never half.
    stream = [obs(t * S, hit=t % 3 == 0) for t in range(60)]
    assert feed(tracker, stream) == []
    # Then hits only: the window ending at 63 holds 11, 6 of them hits.
    stream += [obs(t * S) for t in range(60, 66)]
    stream += [obs(90 * S, hit=False)]
    tracker = Tracker(threshold=3, window=10 * S, min_ratio=0.5)
    # 53 to 65, of which 53, 55, 56, 58 and 59 are not hits.
    hits = [t * S for t in (54, 57, 60, 61, 62, 63, 64, 65)]
    assert feed(tracker, stream) == [(hits, 5, 53 * S, 65 * S)]


def test_a_hit_older_than_the_newest_is_judged_in_its_own_window() -> None:
    # A session that began earlier brings a later observation: the window
    # ending at the newest (25) holds one hit; the one ending at 12 three.
    tracker = Tracker(threshold=3, window=5 * S, min_ratio=0.0)
    for o in (obs(8 * S), obs(25 * S), obs(10 * S), obs(12 * S)):
        tracker.add(o)
    assert tracker.incident is not None
    assert [o.ts // S for o in tracker.incident.hits] == [8, 10, 12, 25]


def random_stream(rng: random.Random, n: int) -> list[tuple[str, Observation | int]]:
    """Adds and expiries, mostly in start order, some out of it."""
    steps: list[tuple[str, Observation | int]] = []
    now = 0
    values = [None, None, "a", "b", "c", "d", "e"][: rng.randint(1, 7)]
    for i in range(n):
        now += rng.choice((0, 0, 1, 1, 2, 3, 7, 20))
        if rng.random() < 0.3:
            steps.append(("expire", now))
        ts = now + rng.choice((0, 0, 0, 1, 2, 5, 15))
        if rng.random() < 0.05:
            ts = max(0, ts - rng.randint(0, 30))  # not even after ``now``
        o = obs(ts, hit=rng.random() < 0.6, value=rng.choice(values), n=i)
        steps.append(("add", o))
        if rng.random() < 0.01:
            steps.append(("finish", 0))
    steps.append(("finish", 0))
    return steps


def test_incidents_are_the_reference_trackers() -> None:
    rng = random.Random(20240611)
    for _ in range(400):
        threshold = rng.randint(1, 6)
        window = rng.choice((0, 1, 3, 10, 25))
        min_ratio = rng.choice((0.0, 0.0, 0.3, 0.5, 0.8, 1.0))
        new = Tracker(threshold, window, min_ratio)
        old = ReferenceTracker(threshold, window, min_ratio)
        for step, arg in random_stream(rng, rng.randint(1, 200)):
            if step == "add":
                assert isinstance(arg, Observation)
                new.add(arg)
                old.add(arg)
                assert summary(new.incident) == summary(old.incident)
                if old.incident is not None:
                    assert new.incident is not None
                    assert new.incident.last == old.last
            elif step == "expire":
                assert isinstance(arg, int)
                assert summary(new.expire(arg)) == summary(old.expire(arg))
            else:
                assert summary(new.finish()) == summary(old.finish())
            assert new.idle == old.idle


class Counted(Observation):
    """An observation that counts how often a tracker looks at its ``hit``."""

    looks = 0

    @property
    def hit(self) -> bool:
        Counted.looks += 1
        return bool(self[6])


def looks_for(stream: list[Observation], tracker: Tracker) -> int:
    Counted.looks = 0
    for o in stream:
        tracker.expire(o.ts)
        tracker.add(o)
    assert tracker.finish() is None
    return Counted.looks


def counted(ts: int, hit: bool, value: str | None) -> Observation:
    return Counted("k", ("c",), ts, "s", "c", None, hit, value)


def test_a_rule_that_never_crosses_looks_at_each_observation_a_few_times() -> None:
    # 10,000 hits within one window: the rescanning tracker looked at every
    # observation of the window at every hit, some 50 million times.
    n = 10_000
    one_value = [counted(t, True, "a") for t in range(n)]
    assert looks_for(one_value, Tracker(3, 10 * n, 0.0)) <= 4 * n
    # A short window: each observation also leaves the window once.
    assert looks_for(one_value, Tracker(3, 100, 0.0)) <= 4 * n
    one_in_three = [counted(t, t % 3 == 0, None) for t in range(n)]
    assert looks_for(one_in_three, Tracker(3, 10 * n, 0.5)) <= 4 * n
    # Out of order, as overlapping sessions bring them: the same.
    shuffled = [counted(t + (t % 7) * 5, True, "a") for t in range(n)]
    assert looks_for(shuffled, Tracker(3, 10 * n, 0.0)) <= 4 * n


# Incidents that keep only their first hits, and incidents only hits stretch.


def tallied(incident: Incident | None, keep: int) -> tuple[object, ...] | None:
    """What an alert reads of an incident, the tally of its hits included."""
    if incident is None:
        return None
    tally = incident.tally or Tally.of(incident.hits)
    evidence = incident.evidence or Evidence.of(incident.hits[:keep])
    return (
        (evidence.first(), evidence.session_ids(), evidence.listed_examples()),
        incident.total,
        incident.first,
        incident.last,
        (tally.hits, tally.count, tally.sessions, tally.shift),
        (tally.clients, tally.servers, tally.notes),
    )


def test_an_incident_that_keeps_a_few_hits_tallies_them_all() -> None:
    rng = random.Random(20261206)
    for _ in range(300):
        threshold = rng.randint(1, 6)
        window = rng.choice((1, 3, 10, 25))
        min_ratio = rng.choice((0.0, 0.5))
        keep = rng.randint(1, 8)
        whole = Tracker(threshold, window, min_ratio)
        kept = Tracker(threshold, window, min_ratio, keep=keep)
        for step, arg in random_stream(rng, rng.randint(1, 200)):
            if step == "add":
                assert isinstance(arg, Observation)
                o = arg._replace(
                    client_ip=rng.choice("abc"),
                    example=rng.choice((None, "", "e1", "e2", "e3", "e4", "e5")),
                    note=rng.choice((None, "x", "y")),
                    severity_shift=rng.choice((-1, 0, 1)),
                )
                whole.add(o)
                kept.add(o)
                if kept.incident is not None and kept.incident.tally is None:
                    # One hit alone so far: kept whole, tallied at the next.
                    assert len(kept.incident.hits) == 1
                    assert kept.incident.evidence is None
                elif kept.incident is not None:
                    assert kept.incident.hits == []
                    assert kept.incident.evidence is not None
                    assert kept.incident.evidence.taken <= keep
                got, want = kept.incident, whole.incident
            elif step == "expire":
                assert isinstance(arg, int)
                got, want = kept.expire(arg), whole.expire(arg)
            else:
                got, want = kept.finish(), whole.finish()
            assert tallied(got, keep) == tallied(want, keep)


def test_only_hits_stretch_an_incident_that_spans_its_hits() -> None:
    # An ordinary session every second from 0 to 60, and failures at 30.5,
    # 31.5, 32.5 (crossing: 3 of the 13 in the window ending there) and
    # 34.5. Each observation is its own session.
    times = [(t * S, False) for t in range(61)]
    times += [(t * S + S // 2, True) for t in (30, 31, 32, 34)]
    stream = [obs(ts, hit=hit, n=n) for n, (ts, hit) in enumerate(sorted(times))]
    hits = [t * S + S // 2 for t in (30, 31, 32, 34)]
    spanned = Tracker(threshold=3, window=10 * S, min_ratio=0.2, hits_span=True)
    # From the first hit to the last, with the 4 sessions between them
    # (31, 32, 33, 34); over once 10 s pass without a hit, at 45.
    assert feed(spanned, stream) == [(hits, 4, 30 * S + S // 2, 34 * S + S // 2)]
    # Stretched by every observation, the same incident takes in the
    # sessions of the window before its first hit (23 to 30) and every
    # later one, to the end.
    stretched = Tracker(threshold=3, window=10 * S, min_ratio=0.2)
    assert feed(stretched, stream) == [(hits, 38, 23 * S, 60 * S)]


def listed_as_before(hits: list[Observation]) -> tuple[object, ...]:
    """What an alert listed of hits kept whole: the first hit's session and
    time, the sessions in time order, the first three examples."""
    ordered = sorted(hits, key=lambda o: o.ts)
    examples = dict.fromkeys(o.example for o in ordered if o.example)
    return (
        (ordered[0].session_id, ordered[0].ts),
        tuple(dict.fromkeys(o.session_id for o in ordered)),
        tuple(examples)[:3],
    )


def listed(evidence: Evidence) -> tuple[object, ...]:
    return (evidence.first(), evidence.session_ids(), evidence.listed_examples())


def test_evidence_lists_what_hits_kept_whole_listed() -> None:
    # Arriving out of time order, as overlapping sessions bring them: each
    # of s1's examples is pushed out by earlier ones, and "b" comes back
    # with an earlier hit; s1 moves ahead of s2; at time 2, s3's hit came
    # first.
    arrivals = [
        (5, "s1", "C: RCPT a"),
        (5, "s1", "C: RCPT b"),
        (3, "s2", None),
        (5, "s2", "C: RCPT a"),
        (2, "s3", ""),
        (4, "s3", "C: RCPT c"),
        (1, "s4", "C: RCPT d"),
        (4, "s1", "C: RCPT e"),
        (2, "s1", "C: RCPT b"),
    ]
    hits = [
        Observation("k", ("c",), ts, sid, "c", None, example=example)
        for ts, sid, example in arrivals
    ]
    evidence = Evidence.of(hits)
    assert listed(evidence) == (
        ("s4", 1),
        ("s4", "s3", "s1", "s2"),
        ("C: RCPT d", "C: RCPT b", "C: RCPT c"),
    )
    assert listed(evidence) == listed_as_before(hits)
    # Held: one place per session, three examples.
    assert evidence.taken == 9
    assert evidence.sessions == {
        "s1": (2, 8),
        "s2": (3, 2),
        "s3": (2, 4),
        "s4": (1, 6),
    }
    assert [text for _, _, text in evidence.examples] == [
        "C: RCPT d",
        "C: RCPT b",
        "C: RCPT c",
    ]

    rng = random.Random(20261207)
    for _ in range(500):
        hits = [
            Observation(
                "k",
                ("c",),
                rng.randint(0, 12),
                f"s{rng.randint(0, 6)}",
                "c",
                None,
                example=rng.choice((None, "", "e1", "e2", "e3", "e4", "e5")),
            )
            for _ in range(rng.randint(1, 30))
        ]
        assert listed(Evidence.of(hits)) == listed_as_before(hits)


def test_a_tally_counts_long_values_by_digest() -> None:
    # A client can name a new 4 KB sender domain in every MAIL: 40,000 of
    # them held 170 MB in one alert's tally, which only counts them.
    long = ["d" * 4000 + str(i) for i in range(3)]
    values = ["short", *long, long[0], "short", "x" * 64]
    tally = Tally.of([obs(n, value=value) for n, value in enumerate(values)])
    assert tally.count == 5
    texts = sorted(v for v in tally.counted() if isinstance(v, str))
    digests = [v for v in tally.counted() if isinstance(v, bytes)]
    assert texts == ["short", "x" * 64]  # up to 64 characters kept as they are
    assert [len(v) for v in digests] == [16, 16, 16]


def test_a_tally_lists_its_first_values_then_sets_them() -> None:
    # An incident of 20 relay attempts, each to a domain of its own, is
    # held for the rule's hour: 20 values took 2.2 KB in a set, 1.4 KB as
    # strings in a list, and take 0.3 KB in one text.
    tally = Tally()
    for n in range(62):
        tally.add(obs(n, value=f"dom{n % 31}.example"))
    tally.add(obs(62, value="x" * 65))
    tally.add(obs(63, value="x" * 65))  # its digest, once
    assert isinstance(tally.values, str)
    assert (tally.distinct, tally.count) == (32, 32)
    assert tally.counted() == {
        *(f"dom{n}.example" for n in range(31)),
        window._digest("x" * 65),
    }
    tally.add(obs(64, value=None))
    assert tally.count == 33
    tally.add(obs(65, value="dom31.example"))
    assert isinstance(tally.values, set)
    assert (tally.distinct, tally.count) == (33, 34)
    assert tally.values == {
        *(f"dom{n}.example" for n in range(32)),
        window._digest("x" * 65),
    }
    tally.add(obs(66, value="dom0.example"))
    tally.add(obs(67, value="x" * 65))
    assert (tally.hits, tally.count) == (68, 34)


def test_past_so_many_distinct_values_a_tally_estimates_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found in review: an incident that never pauses for its window (relay
    # attempts or AUTH spraying from a few clients) kept every domain or user
    # name it saw. Past MAX_TALLY_VALUES the set goes and a 4 KiB sketch
    # estimates the number, the same in any order.

    monkeypatch.setattr(window, "MAX_TALLY_VALUES", 100)
    values = [f"user{n}" for n in range(20_000)] + ["user7"] * 500
    exact = Tally.of([obs(n, value=v) for n, v in enumerate(values[:100])])
    assert (exact.count, exact.estimated) == (100, False)

    tally = Tally.of([obs(n, value=v) for n, v in enumerate(values)])
    assert tally.estimated and tally.values == set()
    assert abs(tally.count - 20_000) < 20_000 * 0.03

    # Never fewer than were counted one by one, nor more than the hits:
    # one value past the limit gave fewer (found in review).
    just_past = Tally.of([obs(n, value=f"v{n}") for n in range(101)])
    assert just_past.estimated and just_past.count == 101
    random.Random(3).shuffle(values)
    shuffled = Tally.of([obs(n, value=v) for n, v in enumerate(values)])
    assert shuffled.count == tally.count
    # Hits without a value are still counted one by one beside it.
    tally.add(obs(1, value=None))
    assert tally.count == shuffled.count + 1


def test_an_estimated_count_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.detect import AlertEngine

    monkeypatch.setattr(window, "MAX_TALLY_VALUES", 100)
    hits = [
        Observation(
            "auth_spraying",
            ("192.0.2.1",),
            n,
            f"S{n}",
            "192.0.2.1",
            "198.51.100.1",
            value=f"user{n}",
        )
        for n in range(5_000)
    ]
    tally = Tally.of(hits)
    incident = Incident(hits[:10], 0, 0, 4_999, keep=10, tally=tally)
    alert = AlertEngine()._alert("auth_spraying", ("192.0.2.1",), incident)
    assert alert.count == tally.count
    assert alert.summary.startswith(
        f"192.0.2.1 failed AUTH for about {tally.count:,} different user names"
    )


def test_a_window_holds_one_observation_for_hits_alike_but_for_time() -> None:
    # Five refused AUTHs of a session differ only in their times: the
    # window holds the first one's observation for all five, each time in
    # an array, and an incident that keeps its hits whole gets each with
    # its own time back.
    tracker = Tracker(8, 10 * S, 0.0)
    alike = [obs(ts * S) for ts in (1, 2, 2, 3, 4)]
    for each in alike:
        tracker.add(each)
    items = tracker._recent.items
    assert items is not None and all(item is alike[0] for item in items)
    assert list(tracker._recent.times) == [S, 2 * S, 2 * S, 3 * S, 4 * S]
    other = obs(5 * S, n=1)
    tracker.add(other)
    assert tracker._recent.items is not None
    assert tracker._recent.items[-1] is other
    tracker.add(obs(6 * S, n=1))
    assert tracker.incident is None
    tracker.add(obs(7 * S))
    assert tracker.incident is not None
    hits = tracker.incident.hits
    assert [(o.ts // S, o.session_id) for o in hits] == [
        (1, "s0"), (2, "s0"), (2, "s0"), (3, "s0"), (4, "s0"),
        (5, "s1"), (6, "s1"), (7, "s0"),
    ]  # fmt: skip
    assert hits[:5] == alike and hits[0] is alike[0]


def test_a_tally_holds_one_client_and_server_in_a_tuple() -> None:
    tally = Tally()
    for n in range(3):
        tally.add(Observation("k", ("c",), n, "s1", "c", "srv", note="x"))
    assert (tally.clients, tally.servers, tally.notes) == (("c",), ("srv",), {"x": 3})
    tally.add(Observation("k", ("c",), 3, "s2", "d", "srv"))
    assert (tally.clients, tally.servers, tally.sessions) == ({"c", "d"}, ("srv",), 2)
    assert Tally().notes == {} and Tally().notes is Tally().notes  # shared, empty


def test_a_tally_lists_a_value_with_its_separators_in_hex() -> None:
    # Found in review: such a value went to a set at once, so a client that
    # put a NUL in every domain it named made each tally of 20 domains hold
    # 2.5 KB rather than 0.9 KB. Listed as the hex digits of its UTF-8, no
    # value can be taken for another, nor for a digest.
    values = ["a", "a\0b", "\2" + "61", "\1" + "61", "b\udcff\2", "a\0b", "61"]
    tally = Tally.of([obs(n, value=value) for n, value in enumerate(values)])
    assert tally.values == (
        "\0a\0\2" + "610062" + "\0\2" + "023631" + "\0\2" + "013631"
        "\0\2" + "62edb3bf02" + "\0" + "61"
    )
    assert (tally.distinct, tally.count) == (6, 6)
    assert tally.counted() == {"a", "a\0b", "\2" + "61", "\1" + "61", "b\udcff\2", "61"}
    listed = Tally.of([obs(0, value="a"), obs(1, value="ab"), obs(2, value="a")])
    assert (listed.values, listed.count) == ("\0a\0ab", 2)


def test_a_tally_sets_its_listed_values_as_they_were() -> None:
    many = [f"v{n}\0" for n in range(window.MAX_LISTED_VALUES)] + ["w", "v0\0"]
    tally = Tally.of([obs(n, value=value) for n, value in enumerate(many)])
    assert tally.values == set(many)
    assert tally.count == window.MAX_LISTED_VALUES + 1


def test_evidence_of_one_session_holds_no_dict() -> None:
    evidence = Evidence.of([obs(5, n=1), obs(3, n=1), obs(4, n=1)])
    assert (evidence.only, evidence.only_place, evidence.more) == ("s1", (3, 1), None)
    assert evidence.sessions == {"s1": (3, 1)}
    evidence.add(obs(1, n=2))
    assert (evidence.only, evidence.more) == (None, {"s1": (3, 1), "s2": (1, 3)})
    assert (evidence.first(), evidence.session_ids()) == (("s2", 1), ("s2", "s1"))


def test_an_incident_of_one_hit_keeps_it_whole_until_a_second() -> None:
    tracker = Tracker(1, 10 * S, 0.0, keep=3)
    first = Observation("k", ("c",), 1 * S, "s1", "c", "v", value="a", example="e1")
    tracker.add(first)
    incident = tracker.incident
    assert incident is not None
    assert incident.hits == [first] and incident.tally is None
    assert incident.total == 1
    # The second hit tallies both, as an incident opened on two would.
    tracker.add(first._replace(ts=2 * S, session_id="s2", value="b"))
    assert incident.hits == [] and incident.tally is not None
    assert incident.evidence is not None
    assert (incident.tally.hits, incident.tally.count, incident.tally.sessions) == (
        2,
        2,
        2,
    )
    assert incident.evidence.session_ids() == ("s1", "s2")
