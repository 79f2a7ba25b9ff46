"""Possible STARTTLS stripping, judged across all sessions of a run.

An attacker on the path can remove STARTTLS from a server's EHLO reply so
that the client never asks for TLS (RFC 3207 6; RFC 8314 3 calls this a
downgrade). Some middleboxes overwrite the keyword in place with one of the
same length (``XXXXXXXA``). Two signs are looked for, once every session has
been read:

- an EHLO reply in clear text without STARTTLS, while another session with
  the same server (address and port) did get STARTTLS offered;
- an EHLO keyword made of X's, at most one other letter.

Each gives one ``possible_downgrade`` anomaly on the session. The result
depends only on the sessions' values, not on the order they were read in.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.records import AnomalyRecord, SessionRecord

KIND = "possible_downgrade"


def mangled_keyword(keyword: str) -> bool:
    """A keyword overwritten with X's, like Cisco's ``XXXXXXXA``."""
    word = keyword.split(" ", 1)[0].upper()
    return len(word) >= 4 and word.isalpha() and word.count("X") >= len(word) - 1


def find(sessions: Mapping[str, Sequence[Any]]) -> list[tuple[int, AnomalyRecord]]:
    """(row position, anomaly) for every session that looks downgraded.

    ``sessions`` holds the sessions table's columns as lists, by name.
    """
    ledger = Ledger()
    for i, values in enumerate(zip(*(sessions[name] for name in _READ), strict=True)):
        ledger.add_values(i, *values)
    return ledger.find()


# The session columns ``find`` reads, in ``Ledger.add_values``'s order.
_READ = (
    "session_id",
    "start",
    "server_ip",
    "server_port",
    "starttls_offered",
    "capabilities",
    "tls",
    "helo_verb",
)


class Ledger:
    """What ``find`` needs, gathered a session at a time.

    Most sessions can only count their server as one that offered STARTTLS;
    only the few that ``may_apply`` to are kept, so that the ledger grows
    with the servers seen rather than with the sessions. Each session has a
    position (its row): ``find`` reports the suspects by it.
    """

    def __init__(self) -> None:
        self.offered: Counter[tuple[str, int]] = Counter()
        # (position, session id, start, server, mangled keyword or None)
        self.suspects: list[tuple[int, str, int, tuple[str, int], str | None]] = []

    def add(self, position: int, session: SessionRecord) -> None:
        self.add_values(
            position,
            session.session_id,
            session.start,
            session.server_ip,
            session.server_port,
            session.starttls_offered,
            session.capabilities,
            session.tls,
            session.helo_verb,
        )

    def add_values(
        self,
        position: int,
        session_id: str,
        start: int,
        server_ip: str,
        server_port: int,
        offered: bool,
        capabilities: list[str] | None,
        tls: str,
        helo_verb: str | None,
    ) -> None:
        """``add`` from the session's column values, in ``_READ``'s order."""
        server = (server_ip, server_port)
        if offered:
            self.offered[server] += 1
        mangled = None
        if capabilities and _any_mangled(tuple(capabilities)):
            mangled = next(c for c in capabilities if mangled_keyword(c))
        elif not _clear_ehlo_without_starttls(tls, helo_verb, capabilities, offered):
            return
        self.suspects.append((position, session_id, start, server, mangled))

    def merge(self, other: Ledger, shift: int) -> None:
        """Take ``other``'s sessions, whose positions follow ``shift`` on."""
        self.offered.update(other.offered)
        self.suspects.extend(
            (position + shift, sid, start, server, mangled)
            for position, sid, start, server, mangled in other.suspects
        )

    def find(self) -> list[tuple[int, AnomalyRecord]]:
        """``find`` over every session added, in the order they were added."""
        found: list[tuple[int, AnomalyRecord]] = []
        for position, sid, start, server, mangled in self.suspects:
            if mangled is not None:
                detail = (
                    f"EHLO keyword {mangled!r} looks overwritten "
                    "(STARTTLS removed on the path?)"
                )
            elif self.offered[server]:
                detail = (
                    "EHLO reply without STARTTLS; "
                    f"{self.offered[server]} other session(s) to "
                    f"{server[0]}:{server[1]} were offered it"
                )
            else:
                continue
            found.append((position, AnomalyRecord(sid, start, KIND, detail)))
        return found


def _clear_ehlo_without_starttls(
    tls: str, helo_verb: str | None, capabilities: list[str] | None, offered: bool
) -> bool:
    # A clear-text EHLO reply was seen (it listed keywords), and no TLS
    # followed: after TLS the capabilities may be those of the inner EHLO.
    return (
        tls == "none"
        and helo_verb in ("EHLO", "LHLO")
        and bool(capabilities)
        and not offered
    )


def may_apply(session: SessionRecord) -> bool:
    """Whether ``find`` could flag this session, whatever the others hold.

    Lets a caller keep only these sessions whole until ``find`` has run.
    """
    return _any_mangled(tuple(session.capabilities)) or (
        _clear_ehlo_without_starttls(
            session.tls,
            session.helo_verb,
            session.capabilities,
            session.starttls_offered,
        )
    )


@functools.lru_cache(maxsize=1024)
def _any_mangled(capabilities: tuple[str, ...]) -> bool:
    # Asked for every session as it is spooled; a server lists the same
    # keywords to all its clients, so the lists seen are few.
    return any(mangled_keyword(c) for c in capabilities)
