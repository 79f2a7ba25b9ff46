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
    servers = list(zip(sessions["server_ip"], sessions["server_port"], strict=True))
    offered = Counter(
        server
        for server, flag in zip(servers, sessions["starttls_offered"], strict=True)
        if flag
    )
    found: list[tuple[int, AnomalyRecord]] = []
    for i, server in enumerate(servers):
        sid = sessions["session_id"][i]
        start = sessions["start"][i]
        capabilities = sessions["capabilities"][i] or []
        mangled = [c for c in capabilities if mangled_keyword(c)]
        if mangled:
            found.append(
                (
                    i,
                    AnomalyRecord(
                        sid,
                        start,
                        KIND,
                        f"EHLO keyword {mangled[0]!r} looks overwritten "
                        "(STARTTLS removed on the path?)",
                    ),
                )
            )
        elif _stripped(sessions, i) and offered[server]:
            found.append(
                (
                    i,
                    AnomalyRecord(
                        sid,
                        start,
                        KIND,
                        "EHLO reply without STARTTLS; "
                        f"{offered[server]} other session(s) to "
                        f"{server[0]}:{server[1]} were offered it",
                    ),
                )
            )
    return found


def _stripped(sessions: Mapping[str, Sequence[Any]], i: int) -> bool:
    return _clear_ehlo_without_starttls(
        sessions["tls"][i],
        sessions["helo_verb"][i],
        sessions["capabilities"][i],
        sessions["starttls_offered"][i],
    )


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
