"""What a detector reports: an alert, its severity and its evidence.

An alert is data, like an anomaly: a frozen record whose fields are the
columns of the ``alerts`` table (``analysis.schema.ALERTS``). Its id is
derived from what it is about and from its first piece of evidence, so the
same input gives the same ids however it was split into files.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from dataclasses import dataclass


class Severity(enum.StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 4 for critical, for sorting most severe first."""
        return _RANK[self]

    def shifted(self, steps: int) -> Severity:
        """``steps`` more severe (negative: less), within info..critical."""
        return _ORDER[min(max(self.rank + steps, 0), len(_ORDER) - 1)]


_ORDER = tuple(Severity)
_RANK = {severity: rank for rank, severity in enumerate(_ORDER)}


@dataclass(frozen=True, slots=True)
class Alert:
    """One finding, with the sessions that prove it.

    ``count`` is the number that crossed ``threshold``: events within
    ``window_s`` for a windowed rule, or the largest measured value (most
    recipients in one message, say) for a rule with a per-item limit.
    ``total`` is the denominator of a ratio rule (every RCPT, where
    ``count`` is the refused ones), the number of items over the limit for
    a per-item rule, else None.
    """

    alert_id: str
    kind: str
    severity: str
    client_ip: str | None  # None when the alert spans many clients
    server_ip: str | None
    first_seen: int  # ns since the epoch, like every record
    last_seen: int
    count: int
    threshold: int
    window_s: float | None
    total: int | None
    sessions: int
    session_ids: tuple[str, ...]
    examples: tuple[str, ...]  # "C: ... / S: ..." lines, control chars escaped
    summary: str


def alert_id(kind: str, key: tuple[str, ...], first_session: str, first_ts: int) -> str:
    """A stable id: the same finding in the same traffic gets the same id."""
    text = "|".join((kind, *key, first_session, str(first_ts)))
    digest = hashlib.blake2b(text.encode(), digest_size=10).digest()
    return "A" + base64.b32encode(digest).decode().lower()
