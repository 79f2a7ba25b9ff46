"""HELO and EHLO names that say something about the client.

RFC 5321 4.1.1.1 asks for the client's fully qualified domain name or, when
it has none, an address literal of its own address (4.1.3). Bots often send
an address literal that is not theirs, a bare IP without brackets, a
single word, or the server's own name or address (to look local to naive
filters), and some change names within a session.
"""

from __future__ import annotations

import ipaddress
import itertools
import string
from typing import Final

from analysis.detect import facts
from analysis.detect.rules import Rules
from analysis.detect.window import ObservationCells, PerSession, client_observation
from analysis.records import CommandRecord, SessionResult

_HELO_VERBS = frozenset({"EHLO", "HELO"})
# Names with a dot that still name no host on the Internet.
_NOT_QUALIFIED = frozenset({"localhost.localdomain", "localhost.local"})


class HeloDetector(PerSession):
    KINDS = (
        "helo_literal_mismatch",
        "helo_bare_ip",
        "helo_not_fqdn",
        "helo_impersonation",
        "helo_changed",
    )

    def __init__(self, rules: Rules) -> None:
        self._own_names = rules.local.server_names

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        session = result.session
        helos = [c for c in result.commands if c.verb in _HELO_VERBS and c.argument]
        server_names = self._own_names | facts.host_names(session.greeting_text)
        authenticated = session.auth_result == "success"
        found: dict[str, CommandRecord] = {}  # kind -> first command showing it
        # Each name once, in order, as first sent: names differ only when
        # they differ beyond case (RFC 1035 2.3.3), but the note quotes the
        # client's spelling, which is evidence.
        names: dict[str, str] = {}
        for command in helos:
            sent = command.argument.split()[0]
            name = sent.rstrip(".").lower()
            names.setdefault(sent.rstrip(".").translate(_ASCII_LOWER), sent)
            for kind in _kinds(
                name, session.client_ip, session.server_ip, server_names
            ):
                # RFC 5321 4.1.1.1 matters between MTAs on the Internet;
                # hosts on a private network or loopback name themselves as
                # they like. Asked only here: most sessions never get here,
                # and with many clients the answer is seldom cached.
                if kind == "helo_not_fqdn" and (
                    authenticated or not facts.is_global(session.client_ip)
                ):
                    continue
                found.setdefault(kind, command)
        if len(names) > 1:
            found.setdefault("helo_changed", helos[-1])
        return [
            client_observation(
                result,
                kind,
                command.ts,
                example=facts.example(command),
                note=_names_note(names) if kind == "helo_changed" else None,
            )
            for kind, command in found.items()
        ]


# How many of a session's HELO names helo_changed's note shows, and how much
# of each: a client may send thousands of names of up to a line each.
_NOTE_NAMES = 10
# Names are told apart with ASCII letters alone folded (RFC 1035 2.3.3):
# str.lower() also makes the Kelvin sign a "k", so "\u212ax.example" and
# "kx.example" read as one name and a client switching between them
# raised no helo_changed.
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_NOTE_NAME_CHARS = 100


def _names_note(names: dict[str, str]) -> str:
    shown = [
        name if len(name) <= _NOTE_NAME_CHARS else name[:_NOTE_NAME_CHARS] + "..."
        for name in itertools.islice(names.values(), _NOTE_NAMES)
    ]
    if len(names) > _NOTE_NAMES:
        shown.append(f"{len(names) - _NOTE_NAMES:,} more")
    return ", ".join(shown)


def _kinds(
    name: str, client: str, server: str, server_names: set[str] | frozenset[str]
) -> list[str]:
    """The anomalies one HELO name shows."""
    literal = _address_literal(name)
    if literal is not None:
        if literal == _normal(server):
            return ["helo_impersonation"]
        # A private address is what a client behind NAT knows as its own.
        foreign = facts.is_global(literal) and literal != _normal(client)
        return ["helo_literal_mismatch"] if foreign else []
    if facts.is_address(name):
        return [
            "helo_bare_ip",
            *(["helo_impersonation"] if _normal(name) == _normal(server) else []),
        ]
    if name in server_names:
        return ["helo_impersonation"]
    if "." not in name or name in _NOT_QUALIFIED:
        return ["helo_not_fqdn"]
    return []


def _address_literal(name: str) -> str | None:
    """The address of "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 4.1.3)."""
    if not (name.startswith("[") and name.endswith("]")):
        return None
    inner = name[1:-1]
    if inner.startswith("ipv6:"):
        inner = inner[5:]
    return _normal(inner)


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address
