"""``smtpscope check``: a monitor's totals judged against thresholds.

The verdict follows the Nagios plugin guidelines, which Icinga, Zabbix's
Nagios-compatible checks and Naemon share: one line of output, ``SERVICE
STATUS - text | perfdata``, and exit status 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN. Performance data is ``label=value[unit];warn;crit;min;max``
with Nagios ranges: ``0.2`` alerts above 0.2, ``0.5:`` alerts below 0.5.
A figure that cannot be computed (no sessions, no greeting seen) is
printed as ``U`` and never alerts: too little traffic is not a failure of
the mail server.

Input read only in part (a capture damaged or missing among others) is
still judged: UNKNOWN would hide a CRITICAL figure, and ``read`` too keeps
what it decoded. The status is then at least WARNING, as ``read`` exits
non-zero: a monitor notifies on nothing else, and an OK would hide that
part of the traffic went unseen. UNKNOWN is for a check that judged
nothing (not one packet read, no permission to capture, a usage error).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from analysis.escape import plugin_text
from analysis.monitor import Monitor


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class Threshold:
    """Warning and critical limits; ``minimum`` alerts below them, not above."""

    warn: float | None = None
    crit: float | None = None
    minimum: bool = False

    def judge(self, value: float | None) -> Status:
        if value is None:
            return Status.OK
        if self.crit is not None and self._beyond(value, self.crit):
            return Status.CRITICAL
        if self.warn is not None and self._beyond(value, self.warn):
            return Status.WARNING
        return Status.OK

    def _beyond(self, value: float, limit: float) -> bool:
        return value < limit if self.minimum else value > limit

    def perf(self) -> str:
        """``;warn;crit`` in Nagios range syntax."""
        return f";{self._range(self.warn)};{self._range(self.crit)}"

    def _range(self, limit: float | None) -> str:
        if limit is None:
            return ""
        return f"{_exact(limit)}:" if self.minimum else _exact(limit)


@dataclass(frozen=True, slots=True)
class Thresholds:
    refusal_ratio: Threshold = Threshold()
    greeting_delay: Threshold = Threshold()
    tls_share: Threshold = Threshold(minimum=True)
    alerts: Threshold = Threshold()
    sessions: Threshold = Threshold(minimum=True)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    line: str


def _num(value: float) -> str:
    """A figure to six significant digits, without the exponent ``:g`` gives
    below 0.0001 (a greeting in 50 us): perfdata numbers are ``[-0-9.]``."""
    return format(Decimal(f"{value:.6g}"), "f")


def _exact(limit: float) -> str:
    """A threshold as given: the shortest decimal that reads back as the
    same float, with no exponent (perfdata numbers are ``[-0-9.]``). The
    command line bounds thresholds from above; a tiny one (1e-300) prints
    all its zeros, still exact."""
    if limit.is_integer():
        return str(int(limit))
    return format(Decimal(repr(limit)), "f")


def _value(value: float | None, unit: str = "") -> str:
    return "U" if value is None else f"{_num(value)}{unit}"


def evaluate(
    monitor: Monitor, limits: Thresholds, source: str, damage: Sequence[str] = ()
) -> Verdict:
    """Judge the monitor's totals; ``source`` names what was watched or read
    (file names, interfaces: escaped here, like every text that is not ours)
    and ``damage`` says what of it could not be read, one message each."""
    m = monitor
    alerts = float(sum(m.alerts.values()))
    figures = [
        ("sessions", float(m.sessions), limits.sessions),
        ("refusal ratio", m.refusal_ratio, limits.refusal_ratio),
        ("greeting delay", m.greeting_delay_max, limits.greeting_delay),
        ("TLS share", m.tls_share, limits.tls_share),
        ("alerts", alerts, limits.alerts),
    ]
    status = Status.OK
    problems = []
    for name, value, threshold in figures:
        verdict = threshold.judge(value)
        if verdict is not Status.OK:
            assert value is not None
            side = "below" if threshold.minimum else "above"
            limit = threshold.crit if verdict is Status.CRITICAL else threshold.warn
            assert limit is not None
            problems.append(f"{name} {_num(value)} {side} {_exact(limit)}")
        status = max(status, verdict)
    if damage:
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        problems.append(f"judged on what could be read: {damage[0]}{more}")
        status = max(status, Status.WARNING)

    summary = (
        f"{m.sessions} {'session' if m.sessions == 1 else 'sessions'} on "
        f"{source}, refusal ratio "
        f"{_value(m.refusal_ratio)}, max greeting delay "
        f"{_value(m.greeting_delay_max, 's')}, TLS share {_value(m.tls_share)}, "
        f"{int(alerts)} {'alert' if int(alerts) == 1 else 'alerts'}"
    )
    text = plugin_text("; ".join(problems) + " - " + summary if problems else summary)
    perf = " ".join(
        [
            f"sessions={m.sessions}{limits.sessions.perf()};0",
            f"refusal_ratio={_value(m.refusal_ratio)}{limits.refusal_ratio.perf()};0;1",
            f"greeting_delay={_value(m.greeting_delay_max, 's')}"
            f"{limits.greeting_delay.perf()};0",
            f"tls_share={_value(m.tls_share)}{limits.tls_share.perf()};0;1",
            f"alerts={int(alerts)}{limits.alerts.perf()};0",
            f"packets={m.capture.received}c;;;0",
            f"dropped={m.capture.dropped}c;;;0",
        ]
    )
    return Verdict(status, f"SMTPSCOPE {status.name} - {text} | {perf}")


def unknown(message: str) -> Verdict:
    """The verdict when nothing could be judged: the check itself failed."""
    return Verdict(Status.UNKNOWN, f"SMTPSCOPE UNKNOWN - {plugin_text(message)}")
