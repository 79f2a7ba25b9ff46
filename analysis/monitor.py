"""Running totals over finished sessions, for watching SMTP as it happens.

``Monitor.add`` takes each ``SessionResult`` as it closes and keeps only
counters, histograms and a short list of recent anomalies, so its memory
does not grow with the traffic. The live dashboard, the Prometheus
endpoint and ``smtpscope check`` all read the same ``Monitor``, so the
numbers they show agree.

Definitions shared by all three:
- reply classes count greetings, replies to commands and the verdict on
  each DATA message (as the summary of ``smtpscope read`` does);
- the refusal ratio is the share of replies to MAIL, RCPT and message
  content (the verdict on DATA or on the last BDAT) that were 4xx or 5xx:
  what an administrator sees as mail turned away;
- the TLS share is the share of sessions that used STARTTLS or implicit TLS.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from analysis.records import SessionResult, content_verdict, used_tls
from analysis.smtp.syntax import KNOWN_VERBS

NS = 1_000_000_000
# Upper bounds of the latency histograms, in seconds: SMTP replies range
# from sub-millisecond (local) to tens of seconds (tarpits, greylisting).
BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
REPLY_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other")
AUTH_RESULTS = ("success", "failure", "refused", "cancelled", "no_reply")
RECENT = 8  # anomalies kept for the dashboard
MAX_CLIENTS = 100_000  # client addresses counted at once
_ENVELOPE_VERBS = frozenset({"MAIL", "RCPT"})


@dataclass(slots=True)
class Histogram:
    """Observations counted per bucket of ``BUCKETS``; the last is +Inf."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    observations: int = 0
    maximum: float = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.observations += 1
        self.maximum = max(self.maximum, value)


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """An anomaly or alert as the dashboard lists it."""

    ts: int
    session_id: str
    client_ip: str
    kind: str
    detail: str


@dataclass(slots=True)
class CaptureTotals:
    """Packets of all interfaces together, as libpcap counts them."""

    received: int = 0  # handed over by libpcap, after the filter
    dropped: int = 0  # kernel ring full, plus interface drops


class Monitor:
    """Totals of every session added; see the module docstring."""

    def __init__(self, started_ns: int = 0) -> None:
        self.started_ns = started_ns
        self.sessions = 0
        self.transactions = 0
        self.messages_accepted = 0
        self.commands = 0
        self.tls_sessions = 0
        self.reply_classes: dict[str, int] = dict.fromkeys(REPLY_CLASSES, 0)
        self.auth_results: dict[str, int] = dict.fromkeys(AUTH_RESULTS, 0)
        self.auth_failures = 0  # AUTH commands refused for their credentials
        self.auth_other_refusals = 0  # AUTH commands refused for another reason
        self.auth_successes = 0  # accepted AUTH commands
        self.refusals = 0
        self.refusable = 0  # replies to MAIL, RCPT and message content
        self.clients: collections.Counter[str] = collections.Counter()
        self.anomalies: collections.Counter[str] = collections.Counter()
        self.alerts: collections.Counter[str] = collections.Counter()
        self.alert_ids: set[str] = set()  # alerts counted, by alert_id
        self.recent: collections.deque[RecentEvent] = collections.deque(maxlen=RECENT)
        self.greeting = Histogram()
        # Per verb; verbs the parser does not know share "other", so a peer
        # cannot create metric labels at will.
        self.latency: dict[str, Histogram] = {}
        self.capture = CaptureTotals()
        self.active_sessions = 0
        self._closed_at: collections.deque[int] = collections.deque()

    # Input ---------------------------------------------------------------

    def add(self, result: SessionResult, now_ns: int) -> None:
        s = result.session
        self.sessions += 1
        self.transactions += s.transactions
        self.messages_accepted += s.messages_accepted
        self.commands += s.commands
        self.tls_sessions += used_tls(s.tls, s.tls_handshake)
        if s.auth_result in self.auth_results:
            self.auth_results[s.auth_result] += 1
        self.auth_failures += s.auth_failures
        self.auth_other_refusals += s.auth_other_refusals
        self.auth_successes += s.auth_successes
        self.clients[s.client_ip] += 1
        if len(self.clients) > MAX_CLIENTS:
            # A scan from many addresses must not grow memory for ever: the
            # rarest clients are forgotten, which top_clients cannot miss.
            kept = self.clients.most_common(MAX_CLIENTS // 10)
            self.clients = collections.Counter(dict(kept))
        self._closed_at.append(now_ns)
        self._forget_before(now_ns)

        # Step 1: replies, by class and, for the envelope and content, as
        # accepted or refused.
        if s.greeting_code is not None:
            self._count_reply(s.greeting_code)
        if s.greeting_delay_s is not None:
            self.greeting.observe(s.greeting_delay_s)
        for command in result.commands:
            if command.reply_code is None:
                continue
            self._count_reply(command.reply_code)
            if command.verb in _ENVELOPE_VERBS:
                self._count_refusal(command.reply_code)
            if command.latency_s is not None:
                verb = command.verb if command.verb in KNOWN_VERBS else "other"
                self.latency.setdefault(verb, Histogram()).observe(command.latency_s)
        for txn in result.transactions:
            if txn.data_code is None:
                continue
            verdict = content_verdict(txn)
            if verdict is not None:
                self._count_reply(verdict)
            self._count_refusal(txn.data_code)

        # Step 2: anomalies, the latest kept to show.
        for anomaly in result.anomalies:
            self.anomalies[anomaly.kind] += 1
            self.recent.append(
                RecentEvent(
                    anomaly.ts, s.session_id, s.client_ip, anomaly.kind, anomaly.detail
                )
            )

    def add_alert(self, event: RecentEvent) -> None:
        """An alert from a detector: counted by kind and listed as recent."""
        self.alerts[event.kind] += 1
        self.recent.append(event)

    # Derived figures -----------------------------------------------------

    def sessions_last_minute(self, now_ns: int) -> int:
        self._forget_before(now_ns)
        return len(self._closed_at)

    @property
    def refusal_ratio(self) -> float | None:
        return self.refusals / self.refusable if self.refusable else None

    @property
    def tls_share(self) -> float | None:
        return self.tls_sessions / self.sessions if self.sessions else None

    @property
    def greeting_delay_max(self) -> float | None:
        return self.greeting.maximum if self.greeting.observations else None

    def top_clients(self, count: int = 5) -> list[tuple[str, int]]:
        # Ties broken by address, so the list does not flicker.
        ranked = sorted(self.clients.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:count]

    # ---------------------------------------------------------------------

    def _count_reply(self, code: int) -> None:
        key = f"{code // 100}xx" if 200 <= code <= 599 else "other"
        self.reply_classes[key] += 1

    def _count_refusal(self, code: int) -> None:
        self.refusable += 1
        if 400 <= code <= 599:
            self.refusals += 1

    def _forget_before(self, now_ns: int) -> None:
        closed = self._closed_at
        while closed and closed[0] <= now_ns - 60 * NS:
            closed.popleft()
