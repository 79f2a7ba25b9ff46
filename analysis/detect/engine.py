"""Finished sessions in, alerts out: the detectors and their rule table.

``AlertEngine`` takes ``SessionResult``s in session-start order, asks every
detector for observations, counts them per kind and key in a ``Tracker``
and turns each incident into one ``Alert``. ``detect`` does that for a
whole offline run, sorting the sessions first, so the alerts do not depend
on the order sessions closed in or on how the input was split into files.
A live mode feeds sessions as they come (after a short reorder delay) and
calls ``expire`` as time passes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from analysis.detect.alert import Alert, alert_id
from analysis.detect.auth import AuthDetector
from analysis.detect.bulk import BulkDetector
from analysis.detect.flood import FloodDetector
from analysis.detect.helo import HeloDetector
from analysis.detect.protocol import ProtocolDetector
from analysis.detect.recipients import RecipientDetector
from analysis.detect.relay import RelayDetector
from analysis.detect.rules import Rule, Rules, default_rules
from analysis.detect.starttls import StarttlsDetector
from analysis.detect.window import (
    Evidence,
    Incident,
    Observation,
    Tally,
    Tracker,
    is_server_side,
)
from analysis.records import SessionResult

# Keys seen once that are kept per detector (see AlertEngine._singles):
# about 35 MB each. Per detector, so that every share of the detectors under
# -j forgets the same ones as one engine with all (a budget shared by all
# detectors let a flood seen by two of them, judged in two processes under
# -j 2, forget fewer than one process did).
MAX_SINGLE = 100_000
# Trackers kept per kind (see AlertEngine._let_go): a flood of distinct
# clients that each try to relay once opens an incident per client, each
# held for its rule's window (an hour), about 1 KB apiece: 20,000 clients
# in 85 s took 20 MB of them in review, and nothing bounded the rest of
# the hour. Per kind, so that every share of the detectors under -j lets
# the same ones go.
MAX_TRACKERS = 50_000
# Kinds counted per user name rather than per client.
_PER_USER = frozenset({"auth_user_many_clients"})
# Kinds counted per server, from every session to it. Only their hits
# stretch an incident (a busy server's ordinary sessions never stop).
_PER_SERVER = frozenset({"syn_flood"})
# An alert lists the sessions and examples of its incident's first KEPT_HITS
# hits (the incident's evidence); its tally counts them all: a SYN flood's
# hits each come from a client of their own, and 400,000 failed AUTHs from
# one client kept 400,000 hits and listed every session in each of four
# alerts, about 8 MB a row.
KEPT_HITS = 1000


# A single observation as a detector holds it until a second of its key
# comes: see ``_held_single``.
_Single = int | tuple[Any, ...]
# A detector's keys seen once, by (kind, key), oldest first.
_Singles = OrderedDict[tuple[str, tuple[str, ...]], _Single]
# Where ``hit`` is among an Observation's fields, and each field's default
# (None for those without one): see _held_single.
_HIT = Observation._fields.index("hit")
_DEFAULTS = tuple(Observation._field_defaults.get(name) for name in Observation._fields)


def _held_single(obs: Observation) -> _Single:
    """What a single observation is held as: a flood of distinct clients
    brings one per client and kind, each held for its rule's window (an
    hour for sender_domains), and an Observation takes 144 bytes.

    One that is not a hit as its time alone, all a tracker reads of it;
    a hit as its fields after kind and key (which its slot holds), those
    at the end that have their default values left out (one a tracker can
    take as it came: see ``_single_observation``).
    """
    if not obs.hit:
        return obs.ts
    end = len(obs)
    while end > _HIT + 1 and obs[end - 1] == _DEFAULTS[end - 1]:
        end -= 1
    return tuple(obs[2:end])


def _single_observation(
    slot: tuple[str, tuple[str, ...]], held: _Single
) -> Observation:
    """The observation held as ``held`` (see ``_held_single``)."""
    kind, key = slot
    if isinstance(held, int):
        return Observation(kind, key, held, "", None, None, hit=False)
    return Observation(kind, key, *held)


def _held_ts(held: _Single) -> int:
    return held if isinstance(held, int) else held[0]


class Detector(Protocol):
    """See ``window.PerSession`` for what each step may do."""

    @property
    def KINDS(self) -> tuple[str, ...]:  # a constant of each class
        """The kinds of alert it observes."""

    def extract(self, result: SessionResult) -> Any: ...

    def judge(self, extracted: Any) -> list[Observation]: ...


@runtime_checkable
class Forgetting(Protocol):
    """A detector that remembers sessions for as long as a later one may
    still count them: told at each sweep how early a session still to come
    can start."""

    def forget_before(self, horizon: int) -> None: ...


DETECTORS: tuple[Callable[[Rules], Detector], ...] = (
    RelayDetector,
    RecipientDetector,
    AuthDetector,
    FloodDetector,
    BulkDetector,
    HeloDetector,
    ProtocolDetector,
    StarttlsDetector,
)
# The detectors that read the anomalies found across sessions at the end of
# an offline run (``analysis.downgrade``), after the session's evidence was
# taken: see ``AlertEngine.refreshed``.
_READ_FINDINGS: tuple[type, ...] = (StarttlsDetector,)


@dataclass(frozen=True, slots=True)
class Wording:
    """How an alert of one kind is told: its summary sentence.

    The template gets ``who`` (the client, or the user for per-user rules),
    ``server`` (or how many servers), ``the_server`` (the same after the
    word "server", or "N servers"), ``count``, ``threshold``, ``window``,
    ``total``, ``ratio``, ``sessions``, ``clients`` (how many distinct
    client addresses), ``span`` (how long the incident lasted, first to
    last observation),
    ``note`` (the observations' notes, each after "; "), ``notes`` (the
    same joined with ", ") and ``tally`` (each note after how many hits
    carried it, most first: "250 answered with SYN-ACK, 50 not answered").
    ``measured`` marks rules whose detector measures each item against
    ``limit`` (recipients of a message, say): ``count`` is then the largest
    measured value and ``threshold`` the limit.
    """

    template: str
    measured: bool = False
    # The sentence for an alert counted per server in a kind that counts
    # others per client (``window.server_side_key``).
    server_template: str | None = None


WORDING: dict[str, Wording] = {
    "open_relay": Wording(
        "{who} relayed {count} recipient domain(s) through {server} "
        "without authenticating{note}"
    ),
    "relay_attempt": Wording(
        "{the_server} refused to relay for client {who} to {count} "
        "recipient domain(s){note}"
    ),
    "directory_harvest": Wording(
        "{who} had {count} recipients refused as unknown users within {window} "
        "({ratio} of {total} RCPTs)"
    ),
    "high_refusal": Wording(
        "{who} had {count} recipients refused within {window} "
        "({ratio} of {total} RCPTs)"
    ),
    "auth_brute_force": Wording(
        "{who} failed AUTH {count} times within {window} in {sessions} session(s)"
    ),
    "auth_spraying": Wording(
        "{who} failed AUTH for {count} different user names within {window}"
    ),
    "auth_user_many_clients": Wording(
        "AUTH for {who} failed from {count} different clients within {window}"
    ),
    "auth_success_after_failures": Wording(
        "{who} authenticated after {count} failed AUTH attempts {notes} "
        "within {window}",
        measured=True,
    ),
    "connection_flood": Wording("{who} opened {count} sessions within {window}"),
    "short_sessions": Wording(
        "{who} opened {count} short sessions without sending mail within {window}"
    ),
    "greeting_refused": Wording(
        "{the_server} refused or dropped client {who} with 421/554 in "
        "{count} sessions within {window}"
    ),
    "bulk_recipients": Wording(
        "{who} sent {total} message(s) with {threshold} or more recipients "
        "(most: {count})",
        measured=True,
    ),
    "bulk_messages": Wording(
        "{who} sent {total} session(s) with {threshold} or more messages "
        "(most: {count})",
        measured=True,
    ),
    "sender_domains": Wording(
        "{who} used {count} different envelope-sender domains within {window}"
    ),
    "null_sender_burst": Wording(
        "{who} sent {count} messages with the null sender <> within {window}"
    ),
    "helo_literal_mismatch": Wording(
        "{who} greeted with an address literal that is not its address "
        "in {sessions} session(s)"
    ),
    "helo_bare_ip": Wording(
        "{who} greeted with a bare IP address in {sessions} session(s)"
    ),
    "helo_not_fqdn": Wording(
        "{who} greeted with a name that is not a fully qualified domain "
        "in {sessions} session(s)"
    ),
    "helo_impersonation": Wording(
        "{who} greeted {server} with the server's own name or address "
        "in {sessions} session(s)"
    ),
    "helo_changed": Wording(
        "{who} changed its HELO name within a session in {sessions} session(s) "
        "({notes})"
    ),
    "early_talker": Wording(
        "{who} sent data before the server's greeting in {sessions} session(s)"
    ),
    "pipelining_unadvertised": Wording(
        "{who} pipelined commands to {server}, which did not offer PIPELINING, "
        "in {sessions} session(s)"
    ),
    "data_after_quit": Wording(
        "{who} sent commands after QUIT in {sessions} session(s)"
    ),
    "smtp_smuggling": Wording(
        "{who} sent a message with a bare-LF end-of-data sequence (SMTP "
        "smuggling shape) in {sessions} session(s)"
    ),
    "unsolicited_reply": Wording(
        "{server} sent replies to commands {who} never gave in {sessions} session(s)"
    ),
    "starttls_downgrade": Wording(
        "STARTTLS was removed from the EHLO reply of {server} to {who} in "
        "{sessions} session(s), so the client could not ask for TLS "
        "(STARTTLS stripping on the path){note}"
    ),
    "starttls_injection": Wording(
        "{who} sent commands after STARTTLS before the server's 220 to "
        "{server} in {sessions} session(s): a server that queues them reads "
        "them as if sent inside TLS (STARTTLS command injection, CVE-2011-0411)",
        server_template="{server} sent bytes after its 220 to STARTTLS, before "
        "the TLS handshake, to {who} in {sessions} session(s): a client that "
        "queues them reads them as if sent inside TLS (STARTTLS reply injection)",
    ),
    "syntax_errors": Wording(
        "{who} had {count} commands refused as syntax errors within {window}"
    ),
    "syn_flood": Wording(
        "{server} had {count} TCP handshakes that never completed ({tally}) "
        "in {span} from {clients} client address(es), {ratio} of its "
        "{total} sessions"
    ),
}


_SWEEP_EVERY_NS = 60 * 1_000_000_000


class AlertEngine:
    """Counts observations per (kind, key) and hands out finished alerts."""

    def __init__(
        self,
        rules: Rules | None = None,
        *,
        early: bool = False,
        share: Iterable[int] | None = None,
        horizon: Callable[[], int | None] | None = None,
    ) -> None:
        # ``early`` (live capture): an alert is also handed out the moment
        # its threshold is crossed, with the evidence so far, and again,
        # complete and with the same alert_id, when its incident is over.
        self.early = early
        self.rules = rules if rules is not None else default_rules()
        self._detectors = [make(self.rules) for make in DETECTORS]
        # ``share``: the positions in DETECTORS whose evidence this engine
        # judges (all by default). Each detector counts in trackers of its
        # own kinds, and an alert's content and id depend only on its
        # tracker, so engines with disjoint shares fed the same sessions
        # give, between them, exactly the alerts of one engine with all.
        picked = range(len(DETECTORS)) if share is None else sorted(set(share))
        self._judged = [(i, self._detectors[i]) for i in picked]
        # ``horizon``: the earliest start of a session that may still be fed
        # (live: the oldest connection still open), None when there is none.
        # Without it sessions come in start order, and each one's start is
        # that horizon. Detectors that remember sessions let go of what no
        # session from then on can need (see sweep).
        self._horizon = horizon
        self._forgetting = [d for _, d in self._judged if isinstance(d, Forgetting)]
        self._trackers: dict[tuple[str, tuple[str, ...]], Tracker] = {}
        # The keys of each kind's trackers, oldest first (see MAX_TRACKERS).
        self._kind_keys: dict[str, dict[tuple[str, ...], None]] = {}
        # Keys seen once within their window, by their one observation, for
        # rules that need more than one to cross: a flood from spoofed
        # addresses brings one session per client, and a Tracker holding it
        # costs twice the observation itself (about 0.7 KB against 0.35).
        # The second observation makes the key a Tracker, fed both. At most
        # MAX_SINGLE per detector, the oldest forgotten first (see _tracker).
        self._singles: list[_Singles] = [OrderedDict() for _ in self._detectors]
        self._single_of = {
            kind: self._singles[position]
            for position, detector in enumerate(self._detectors)
            for kind in detector.KINDS
        }
        # Keys let go before their window ended: single observations past
        # MAX_SINGLE, trackers past MAX_TRACKERS.
        self.singles_forgotten = 0
        self._next_sweep = 0

    def feed(self, result: SessionResult) -> list[Alert]:
        """Take the next session, in start order; return alerts now final."""
        return self.feed_evidence(result.session.start, self.evidence(result))

    def evidence(self, result: SessionResult) -> list[Any]:
        """What each detector takes from one session, as plain data.

        A pure function of the session and the rules: worker processes call
        it as sessions close, and whoever sees all sessions in start order
        passes it to ``feed_evidence``.
        """
        return [detector.extract(result) for detector in self._detectors]

    def refreshed(self, evidence: list[Any], result: SessionResult) -> list[Any]:
        """``evidence`` of a session to which anomalies found across sessions
        were added after it was taken (``possible_downgrade``, at the end of
        an offline run): the detectors that read them take ``result``,
        which holds them, again; the others' evidence is kept."""
        fresh = list(evidence)
        for position, detector in enumerate(self._detectors):
            if isinstance(detector, _READ_FINDINGS):
                fresh[position] = detector.extract(result)
        return fresh

    def feed_evidence(self, now: int, evidence: list[Any]) -> list[Alert]:
        """``feed`` for a session ``evidence`` has looked at; ``now``: its start."""
        alerts: list[Alert] = []
        # Sweeping every tracker at every session is quadratic; a tracker is
        # brought up to date when it is touched, and the rest once a sweep
        # interval, which only delays when their alerts come out.
        if now >= self._next_sweep:
            alerts = self.sweep(now)
            self._next_sweep = now + _SWEEP_EVERY_NS
        if len(evidence) != len(self._detectors):
            raise ValueError("evidence from another set of detectors")
        for position, detector in self._judged:
            for obs in detector.judge(evidence[position]):
                rule = self.rules.rule(obs.kind)
                if not rule.enabled:
                    continue
                tracker = self._tracker(obs, rule, now, alerts)
                if tracker is None:
                    continue
                incident = tracker.expire(now)
                if incident is not None:
                    alerts.append(self._alert(obs.kind, obs.key, incident))
                opened = tracker.incident is None
                tracker.add(obs)
                if self.early and opened and tracker.incident is not None:
                    alerts.append(self._alert(obs.kind, obs.key, tracker.incident))
        return alerts

    def sweep(self, now: int) -> list[Alert]:
        """``expire``, and the detectors let go of what no session still to
        come can need."""
        alerts = self.expire(now)
        open_since = self._horizon() if self._horizon is not None else None
        horizon = now if open_since is None else min(now, open_since)
        for detector in self._forgetting:
            detector.forget_before(horizon)
        return alerts

    def expire(self, now: int) -> list[Alert]:
        """Alerts whose activity ended more than a window before ``now``."""
        alerts = []
        for (kind, key), tracker in list(self._trackers.items()):
            incident = tracker.expire(now)
            if incident is not None:
                alerts.append(self._alert(kind, key, incident))
            if tracker.idle:
                del self._trackers[(kind, key)]
                del self._kind_keys[kind][key]
        for single in self._singles:
            for slot, held in list(single.items()):
                if _held_ts(held) < now - self.rules.rule(slot[0]).window_ns:
                    del single[slot]  # as its tracker would forget it
        return alerts

    def finish(self) -> list[Alert]:
        """Every alert still open: the end of the input."""
        return list(self.drain())

    def drain(self) -> Iterator[Alert]:
        """``finish`` one alert at a time, in the same order.

        Each tracker is let go as its alert is made: at the end of a flood
        of distinct clients up to MAX_TRACKERS incidents per kind are open,
        and a list of all their alerts made beside them would hold about
        as much again (an alert and an incident take about 1 KB each).
        """
        for single in self._singles:  # one observation never crosses
            single.clear()
        trackers = self._trackers
        for slot in list(trackers):
            incident = trackers.pop(slot).finish()
            if incident is not None:
                yield self._alert(slot[0], slot[1], incident)
        self._kind_keys.clear()

    def _tracker(
        self, obs: Observation, rule: Rule, now: int, alerts: list[Alert]
    ) -> Tracker | None:
        """The tracker ``obs`` goes to; None when it is its key's only one
        (kept in ``_singles``, not counted yet). The alert of a tracker let
        go to make room is added to ``alerts``."""
        slot = (obs.kind, obs.key)
        tracker = self._trackers.get(slot)
        if tracker is not None:
            return tracker
        per_server = obs.kind in _PER_SERVER
        single = self._single_of[obs.kind]
        held = single.pop(slot, None)
        first = None if held is None else _single_observation(slot, held)
        if first is not None and first.ts < now - rule.window_ns:
            first = None  # what the tracker would have forgotten by now
        if first is None and rule.threshold > 1 and not per_server:
            single[slot] = _held_single(obs)
            if len(single) > MAX_SINGLE:
                # A flood from more distinct clients than this within a
                # window: the oldest is forgotten before its window ends.
                # Only a client that comes back to exactly the threshold
                # within it would have been alerted on.
                single.popitem(last=False)
                self.singles_forgotten += 1
            return None
        tracker = Tracker(
            rule.threshold,
            rule.window_ns,
            rule.min_ratio,
            keep=KEPT_HITS,
            hits_span=per_server,
        )
        # What the tracker would hold had it taken ``first`` when it came.
        if first is not None:
            tracker.add(first)
        keys = self._kind_keys.setdefault(obs.kind, {})
        if len(keys) >= MAX_TRACKERS:
            self._let_go(obs.kind, next(iter(keys)), alerts)
        keys[obs.key] = None
        self._trackers[slot] = tracker
        return tracker

    def _let_go(self, kind: str, key: tuple[str, ...], alerts: list[Alert]) -> None:
        """Drop the tracker of ``key``: its incident ends now, as at the end
        of the input (a later observation of the key opens another), and a
        count short of the threshold is forgotten, as a single one is."""
        tracker = self._trackers.pop((kind, key))
        del self._kind_keys[kind][key]
        incident = tracker.finish()
        if incident is not None:
            alerts.append(self._alert(kind, key, incident))
        self.singles_forgotten += 1

    def _alert(self, kind: str, key: tuple[str, ...], incident: Incident) -> Alert:
        rule = self.rules.rule(kind)
        wording = WORDING[kind]
        template = wording.template
        if wording.server_template is not None and is_server_side(key):
            template = wording.server_template
        # The evidence is what the alert lists; the tally counts every hit
        # (both are read only: an early alert's incident goes on). Without
        # them, the hits were kept whole: all are listed.
        hits = sorted(incident.hits, key=lambda o: o.ts)
        tally = incident.tally or Tally.of(hits)
        evidence = incident.evidence or Evidence.of(hits)
        total: int | None
        if wording.measured:
            count = tally.measure
            threshold, total = rule.limit, tally.hits
        else:
            count, threshold = tally.count, rule.threshold
            total = incident.total if rule.min_ratio else None
        clients, servers = tally.clients, tally.servers
        client = next(iter(clients)) if len(clients) == 1 else None
        server = next(iter(servers)) if len(servers) == 1 else None
        notes = list(tally.notes)
        by_count = sorted(tally.notes.items(), key=lambda item: -item[1])
        if tally.other_notes:
            # Hits, not notes: the notes past the first few are not kept.
            notes.append(f"{tally.other_notes:,} more hits with other notes")
            by_count.append(("with other notes", tally.other_notes))
        # Numbers with thousands separators: a flood's run to six digits.
        values = {
            "who": client or f"{len(clients):,} clients",
            "server": server or f"{len(servers):,} servers",
            # Where the sentence names the roles: greeting_refused is counted
            # per client, whose sessions may go to several servers ("server
            # 3 servers refused ..." read as nonsense).
            "the_server": (
                f"server {server}" if server else f"{len(servers):,} servers"
            ),
            # Past MAX_TALLY_VALUES distinct values, their number is estimated.
            "count": ("about " if tally.estimated and not wording.measured else "")
            + f"{count:,}",
            "threshold": f"{threshold:,}",
            "window": _duration(rule.window_s),
            "span": _span(incident.last - incident.first),
            "total": f"{total if total is not None else tally.hits:,}",
            "ratio": f"{count / total:.0%}" if total else "-",
            "sessions": f"{tally.sessions:,}",
            "clients": ("more than " if tally.more_clients else "")
            + f"{len(clients):,}",
            "note": "".join(f"; {note}" for note in notes),
            "notes": ", ".join(notes),
            "tally": ", ".join(f"{n:,} {note}" for note, n in by_count),
        }
        if kind in _PER_USER:
            values["who"] = f"user {key[0]}"
        # Live, the first alert of an incident fixes its id: its later,
        # complete row must keep it, though a hit older than its first can
        # still come (sessions reach the detectors as they close: a SYN
        # refused with RST at once, one never answered a minute later).
        if incident.alert_id is None:
            incident.alert_id = alert_id(kind, key, *evidence.first())
        return Alert(
            alert_id=incident.alert_id,
            kind=kind,
            severity=rule.severity.shifted(tally.shift).value,
            client_ip=client,
            server_ip=server,
            first_seen=incident.first,
            last_seen=incident.last,
            count=count,
            threshold=threshold,
            window_s=rule.window_s,
            total=total,
            sessions=tally.sessions,
            session_ids=evidence.session_ids(),
            examples=evidence.listed_examples(),
            summary=template.format(**values) + ".",
        )


def detect(results: Iterable[SessionResult], rules: Rules | None = None) -> list[Alert]:
    """Every alert of an offline run, ordered by first_seen then alert_id."""
    engine = AlertEngine(rules)
    ordered = sorted(results, key=lambda r: (r.session.start, r.session.session_id))
    alerts = []
    for result in ordered:
        alerts += engine.feed(result)
    alerts += engine.finish()
    return sorted(alerts, key=lambda a: (a.first_seen, a.alert_id))


def _span(ns: int) -> str:
    """How long an incident lasted, first to last observation, roughly."""
    seconds = ns / 1_000_000_000
    if seconds < 1:
        return "less than a second"
    if seconds < 120:
        whole = round(seconds)
        return f"{whole} second" + ("s" if whole != 1 else "")
    if seconds < 7200:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour" + ("s" if hours != 1 else "")
    if seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds:g} seconds"
