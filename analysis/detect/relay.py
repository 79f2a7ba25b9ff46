"""Open relays and relay attempts (RFC 5321 3.6, 7.1).

An unauthenticated client whose RCPT to a domain that is not the server's
own gets a 2xx reply has found an open relay; one that is refused
(554 5.7.1, 454 4.7.1, "Relay access denied") tried to. Which domains are
the server's own comes from ``[local] domains`` when set; otherwise it is
inferred per server as sessions go by: the names the server gives in its
greeting and EHLO reply (and their parent domain), and the domains for
which it refused a recipient as an unknown user, which only a server that
knows the domain's users does. A domain the server once refused as
relaying is never taken as local.

The inference cannot tell an open relay from a server that trusts the
client by its address (a mail program submitting on port 25 the way
Postfix's ``mynetworks`` allows), which looks the same on the wire. So
without configured domains a client is reported only once it got
``limit`` different foreign domains accepted by one server within the
window, or one source-routed or percent-hack address; such alerts say
that they rest on the inference and are one step less severe. They name
the inferred domains: the first ``NOTE_DOMAINS`` in sorted order, and how
many more there are beyond those.

A server keeps at most ``MAX_LOCAL`` inferred domains. Past that its
inference is incomplete: a domain it does not keep may still be its own, so
it is taken as neither local nor foreign (as at a server nothing is known
of), unless the server refused relaying to it. The bound can thus only
hide relaying at such a server, never report a domain as foreign that the
whole inference would have taken as local; its notes say that others were
not kept.

Every step here costs a few set and dict lookups per RCPT, never a pass
over all the domains learnt or the RCPTs held back: a hostile session can
name a domain per RCPT.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter, defaultdict
from typing import TypeVar

from analysis.detect import facts
from analysis.detect.rules import Rules
from analysis.detect.window import Observation, shared_key, shared_text
from analysis.records import SessionResult
from analysis.smtp import auth

# What ``extract`` keeps of a session: client, server, session id, the
# domains it shows to be the server's own (the names the server gives
# itself first, then those it refused unknown users at, each part sorted:
# past MAX_LOCAL the first are kept), and per RCPT (ts, address, domain,
# routing, accepted, refused as relaying if the domain is foreign, and if it
# is not, example).
_Rcpt = tuple[int, str, str | None, str | None, bool, bool, bool, str]
_Extract = tuple[str, str, str, list[str], list[_Rcpt]]

# How many inferred domains an open_relay note names before "and N more".
NOTE_DOMAINS = 20
# The servers whose domains are remembered at once; past that the one seen
# least recently is forgotten, and learns its own names again from its next
# session's greeting and EHLO reply. A capture of outbound mail meets a new
# server (MX) in every session (found in review: about 1.3 KB each, for the
# run, and for ever in live).
MAX_SERVERS = 50_000
# The domains refused as relaying that are remembered per server; past that
# a further one is not, and may still be inferred local if the server names
# it. Relay attempts from a few clients, a new domain per RCPT, kept every
# one for the run (found in review: 8 MiB a 10,000 sessions in 4 servers).
MAX_FOREIGN = 10_000
# The domains inferred local that are remembered per server; past that a
# further one is not, and the server's inference is incomplete (see
# ``_Domains.incomplete``). A server that refused unknown users at a new
# domain per RCPT kept every one for the run: 1,000,000 domains took 100 MiB
# more than 100,000 did (found in review).
MAX_LOCAL = 10_000
# The client and server pairs whose accepted foreign RCPTs are held back, and
# those confirmed as relaying, remembered at once; past that the one held or
# confirmed least recently is forgotten. A pair with fewer foreign domains
# than the rule's limit was held for the run (found in review: 63 MiB for
# 80,000 clients each with one accepted foreign RCPT, for ever in live).
MAX_PAIRS = 50_000
_NO_DOMAINS: frozenset[str] = frozenset()


class _Domains:
    """One server's inferred local domains, the first few kept in order.

    ``head`` is the ``NOTE_DOMAINS`` smallest names, sorted; the others
    wait in the heap ``rest``, which may still hold names discarded since
    (a discarded name is no longer in ``names``). At most ``MAX_LOCAL``
    names are kept; ``incomplete`` once one was not, for good.
    """

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.longest = 0  # no name is longer: bounds the suffixes to look up
        self.head: list[str] = []
        self._rest: list[str] = []
        self.incomplete = False

    def add(self, name: str) -> bool:
        """Take ``name``; whether that changed what the note says."""
        if name in self.names:
            return False
        if len(self.names) >= MAX_LOCAL:
            changed, self.incomplete = not self.incomplete, True
            return changed
        self.names.add(name)
        self.longest = max(self.longest, len(name))
        head = self.head
        if len(head) < NOTE_DOMAINS and not self._rest:
            bisect.insort(head, name)
        elif name < head[-1]:
            bisect.insort(head, name)
            heapq.heappush(self._rest, head.pop())
        else:
            heapq.heappush(self._rest, name)
        return True

    def discard(self, name: str) -> None:
        if name not in self.names:
            return
        self.names.discard(name)
        head = self.head
        at = bisect.bisect_left(head, name)
        if at == len(head) or head[at] != name:
            return  # it waits in the heap until popped
        del head[at]
        # The smallest name left in the heap takes its place.
        while self._rest:
            waiting = heapq.heappop(self._rest)
            if waiting in self.names and (not head or waiting > head[-1]):
                head.append(waiting)
                break


class RelayDetector:
    KINDS = ("open_relay", "relay_attempt")

    def __init__(self, rules: Rules) -> None:
        self._configured = rules.local.domains
        self._local = rules.local
        rule = rules.rule("open_relay")
        self._min_domains, self._window = rule.limit, rule.window_ns
        # (client, server) -> accepted foreign RCPTs not reported yet, by ts;
        # the pair held least recently first (see MAX_PAIRS).
        self._pending: dict[tuple[str, str], list[Observation]] = {}
        # pair -> how many of the held RCPTs went to each domain.
        self._held_domains: dict[tuple[str, str], Counter[str | None]] = {}
        # pair -> last relay ts, the pair confirmed least recently first.
        self._confirmed: dict[tuple[str, str], int] = {}
        self._configured_longest = max(map(len, self._configured), default=0)
        # Only servers with something learnt have entries: a lookup makes
        # none (found in review: a defaultdict made an empty set for every
        # server a RCPT went to).
        self._inferred: dict[str, _Domains] = {}
        self._foreign: dict[str, set[str]] = {}
        # server -> domains refused as relaying since its last session: they
        # leave the inferred ones when the server's next session is judged.
        self._newly_foreign: defaultdict[str, list[str]] = defaultdict(list)
        self._notes: dict[str, str] = {}  # server -> its note while unchanged
        # Every server judged, the one seen least recently first (see
        # MAX_SERVERS).
        self._servers: dict[str, None] = {}

    def extract(self, result: SessionResult) -> _Extract | None:
        """What the session says about relaying, before knowing the domains.

        Pure: the server's names and every unauthenticated RCPT that got a
        reply, with both readings of a refusal (a foreign domain's or not),
        since which one applies depends on what ``judge`` has learnt.
        """
        session = result.session
        if self._local.is_own_client(session.client_ip):
            return None
        # One pass over the commands for the RCPTs and for the domains the
        # session shows to be the server's own.
        names = set(facts.host_names(session.greeting_text))
        unknown_at: set[str] = set()
        rcpts = []
        authenticated = False
        # A session caught after its start may have authenticated before
        # the capture: an RCPT accepted there is no evidence of an open
        # relay, though a refusal still is of an attempt.
        auth_unknown = not facts.start_seen(session)
        for command in result.commands:
            verb = command.verb
            if verb in facts.HELO_VERBS:
                if facts.accepted(command):
                    names |= facts.host_names(command.reply_text)
                continue
            if verb == "AUTH":
                authenticated = authenticated or facts.accepted(command)
                continue
            if verb == auth.REDACTED and command.reply_code == 235:
                # SASL data the server accepted, in a capture that began
                # inside the exchange: the session row counts it as a
                # successful AUTH, and the client relays as an
                # authenticated one.
                authenticated = True
                continue
            if verb != "RCPT" or command.reply_code is None:
                continue
            where = facts.target(facts.rcpt_address(command))
            # Only a server that knows a domain's users refuses one of them as
            # unknown: the domain is its own.
            if where.domain and not where.routed and facts.is_unknown_user(command):
                unknown_at.add(where.domain)
            if authenticated or (auth_unknown and facts.accepted(command)):
                continue
            rcpts.append(
                (
                    command.ts,
                    where.address,
                    where.domain,
                    where.routed,
                    facts.accepted(command),
                    facts.is_relay_refusal(command, foreign=True),
                    facts.is_relay_refusal(command, foreign=False),
                    facts.example(command),
                )
            )
        return (
            session.client_ip,
            session.server_ip,
            session.session_id,
            sorted(names) + sorted(unknown_at - names),
            rcpts,
        )

    def judge(self, extracted: _Extract | None) -> list[Observation]:
        """Observations of one session, with the domains learnt so far."""
        if extracted is None:
            return []
        client, server, session_id, names, rcpts = extracted
        client, server = shared_text(client), shared_text(server)
        self._seen(server)
        self._learn(server, names)
        out = []
        for ts, address, domain, routed, accepted, if_foreign, if_not, shown in rcpts:
            where = facts.Target(address, domain, routed)
            local = self._is_local(server, where)
            routed_away = where.routed is not None and (
                local is False or (local is None and not self._incomplete(server))
            )
            note: str | None
            if accepted and (local is False or routed_away):
                kind, note = "open_relay", self._note(server, where)
                shift = 0 if self._configured else -1
            elif if_foreign if local is False else if_not:
                kind, note = "relay_attempt", where.routed
                shift = 1 if where.routed else 0
                if where.domain is not None and not where.routed:
                    foreign = self._foreign.setdefault(server, set())
                    if where.domain not in foreign and len(foreign) < MAX_FOREIGN:
                        self._newly_foreign[server].append(where.domain)
                        foreign.add(where.domain)
            else:
                continue
            obs = Observation(
                kind=kind,
                key=shared_key((client, server)),  # held with the window
                ts=ts,
                session_id=session_id,
                client_ip=client,
                server_ip=server,
                value=where.domain,
                example=shown,
                note=note,
                severity_shift=shift,
            )
            if kind == "open_relay" and not self._configured and not where.routed:
                out += self._confirm(obs)
            else:
                out.append(obs)
        return out

    def _confirm(self, obs: Observation) -> list[Observation]:
        """Hold inferred relaying back until enough foreign domains add up."""
        pair = (obs.key[0], obs.key[1])
        confirmed = self._confirmed.get(pair)
        if confirmed is not None and obs.ts - confirmed <= self._window:
            _latest(self._confirmed, pair, max(confirmed, obs.ts), MAX_PAIRS)
            return [obs]
        # Taken out and put back last: the pair held most recently.
        held = self._pending.pop(pair, [])
        domains = self._held_domains.pop(pair, None) or Counter()
        bisect.insort(held, obs, key=lambda o: o.ts)
        domains[obs.value] += 1
        stale = bisect.bisect_left(held, obs.ts - self._window, key=lambda o: o.ts)
        for old in held[:stale]:
            domains[old.value] -= 1
            if not domains[old.value]:
                del domains[old.value]
        del held[:stale]
        if len(domains) < self._min_domains:
            _latest(self._pending, pair, held, MAX_PAIRS)
            _latest(self._held_domains, pair, domains, MAX_PAIRS)
            return []
        _latest(self._confirmed, pair, held[-1].ts, MAX_PAIRS)
        return held

    def inferred(self, server: str) -> frozenset[str]:
        known = self._inferred.get(server)
        return frozenset(known.names) if known is not None else _NO_DOMAINS

    def _seen(self, server: str) -> None:
        """Make ``server`` the most recently seen; forget the least recently
        seen past MAX_SERVERS."""
        oldest = _latest(self._servers, server, None, MAX_SERVERS)
        if oldest is not None:
            for table in (self._inferred, self._foreign, self._newly_foreign):
                table.pop(oldest, None)
            self._notes.pop(oldest, None)

    def _learn(self, server: str, names: list[str]) -> None:
        """Take the session's names, less any domain refused as relaying."""
        known = self._inferred.get(server)
        foreign = self._foreign.get(server, _NO_DOMAINS)
        changed = False
        for name in names:
            if name in foreign or (known is not None and name in known.names):
                continue
            if known is None:
                known = self._inferred[server] = _Domains()
            changed = known.add(name) or changed
        for domain in self._newly_foreign.pop(server, ()):
            if known is not None and domain in known.names:
                known.discard(domain)
                changed = True
        if changed:
            self._notes.pop(server, None)

    def _is_local(self, server: str, where: facts.Target) -> bool | None:
        """True or False, or None when nothing is known either way."""
        domain = where.domain
        if domain is None:
            return None
        if where.internal:
            return True
        if self._configured:
            return _within(domain, self._configured, self._configured_longest)
        if domain in self._foreign.get(server, _NO_DOMAINS):
            return False
        known = self._inferred.get(server)
        if known is None or not known.names:
            return None
        if _within(domain, known.names, known.longest):
            return True
        # Past MAX_LOCAL a domain not kept may be one of those let go.
        return None if known.incomplete else False

    def _incomplete(self, server: str) -> bool:
        """The server's inferred domains are more than it keeps."""
        known = self._inferred.get(server)
        return known is not None and known.incomplete

    def _note(self, server: str, where: facts.Target) -> str:
        parts = [where.routed] if where.routed else []
        if not self._configured:
            parts.append(self._inferred_note(server))
        return "; ".join(parts)

    def _inferred_note(self, server: str) -> str:
        """The inferred domains, the first ``NOTE_DOMAINS`` of them by name."""
        note = self._notes.get(server)
        if note is None:
            known = self._inferred.get(server) or _Domains()
            named = ", ".join(known.head) or "none"
            more = len(known.names) - len(known.head)
            if more:
                named += f" and {more} more"
            if known.incomplete:
                named += f" (others past {MAX_LOCAL} not kept)"
            note = self._notes[server] = f"local domains inferred as {named}"
        return note


_K = TypeVar("_K")
_V = TypeVar("_V")


def _latest(table: dict[_K, _V], key: _K, value: _V, most: int) -> _K | None:
    """Set ``key`` last in ``table``, the most recently used; past ``most``
    keys, drop the first, the least recently used, and return it."""
    table.pop(key, None)
    table[key] = value
    if len(table) <= most:
        return None
    oldest = next(iter(table))
    del table[oldest]
    return oldest


# RFC 1035 2.3.4: no domain name is longer (253 characters written out).
# Only suffixes this long are looked up: a learnt name of 16 KB with dots all
# along made every RCPT look up thousands of suffixes of its domain, each
# sliced and hashed (found in review: 0.5 MB of capture a second).
_MAX_NAME = 253


def _within(domain: str, domains: frozenset[str] | set[str], longest: int) -> bool:
    """``domain`` is one of ``domains`` or a subdomain of one.

    Looks up each suffix of ``domain`` that follows a dot and is no longer
    than ``longest``, the longest of ``domains``, nor than a domain name
    can be (a longer one in ``domains`` still matches itself).
    """
    if domain in domains:
        return True
    longest = min(longest, _MAX_NAME)
    dot = domain.find(".", max(0, len(domain) - longest - 1))
    while dot != -1:
        if domain[dot + 1 :] in domains:
            return True
        dot = domain.find(".", dot + 1)
    return False
