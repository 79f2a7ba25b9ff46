"""Refused recipients: directory harvest and a high refusal ratio.

A harvester tries many local parts at a domain to learn which exist, so
most of its RCPTs are refused as unknown users (RFC 3463 x.1.1); a bot
sending to a stale or bought list sees most of its RCPTs refused for any
reason. Both count every answered RCPT of one client, so the ratio of
refused to all can be checked within the window.
"""

from __future__ import annotations

from analysis.detect import facts
from analysis.detect.rules import Rules
from analysis.detect.window import Observation, client_key
from analysis.records import SessionResult

# What ``extract`` keeps of a session: client, server, session id, and per
# answered RCPT (ts, refused as an unknown user, refused, example if refused).
_Rcpt = tuple[int, bool, bool, str | None]
_Extract = tuple[str, str, str, list[_Rcpt]]


class RecipientDetector:
    KINDS = ("directory_harvest", "high_refusal")

    def __init__(self, rules: Rules) -> None:
        self._local = rules.local

    def extract(self, result: SessionResult) -> _Extract | None:
        """The session's answered RCPTs; None when it has none to count.

        Not the observations themselves, as a ``PerSession`` detector would
        hand out: two per RCPT, each repeating the session's fields, are
        several times as much to make and to send to ``judge``.
        """
        session = result.session
        if self._local.is_own_client(session.client_ip):
            return None
        rcpts = []
        for command in result.commands:
            if command.verb != "RCPT" or command.reply_code is None:
                continue
            refused = facts.refused(command)
            # Every unknown user is refused: one example serves both kinds.
            shown = facts.example(command) if refused else None
            rcpts.append((command.ts, facts.is_unknown_user(command), refused, shown))
        if not rcpts:
            return None
        return (session.client_ip, session.server_ip, session.session_id, rcpts)

    def judge(self, extracted: _Extract | None) -> list[Observation]:
        if extracted is None:
            return []
        client, server, session_id, rcpts = extracted
        key = client_key(client)
        out = []
        for ts, unknown, refused, shown in rcpts:
            out.append(
                Observation(
                    "directory_harvest",
                    key,
                    ts,
                    session_id,
                    client,
                    server,
                    hit=unknown,
                    example=shown if unknown else None,
                )
            )
            out.append(
                Observation(
                    "high_refusal",
                    key,
                    ts,
                    session_id,
                    client,
                    server,
                    hit=refused,
                    example=shown,
                )
            )
        return out
