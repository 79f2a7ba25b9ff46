"""Captures in, finished SMTP sessions out: the offline analysis loop.

Reads capture files through ``capture.source``, feeds each connection's byte
streams to an SMTP parser and session builder, and yields one
``SessionResult`` per connection as it closes, in close order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from analysis.records import SessionResult

DEFAULT_PORTS: frozenset[int] = frozenset({25, 465, 587, 2525})
IMPLICIT_TLS_PORTS: frozenset[int] = frozenset({465})

ProgressHook = Callable[[str, int, int | None], None]  # path, done, total bytes


@dataclass(slots=True)
class RunStats:
    captures: int = 0
    packets: int = 0
    bytes: int = 0
    smtp_packets: int = 0
    errors: list[str] = field(default_factory=list)  # one message per bad input


def analyze(
    paths: Sequence[str],
    ports: frozenset[int] = DEFAULT_PORTS,
    *,
    stats: RunStats | None = None,
    progress: ProgressHook | None = None,
) -> Iterator[SessionResult]:
    """Yield every SMTP session found in ``paths``, read in the given order."""
    raise NotImplementedError("the pipeline is being written")
