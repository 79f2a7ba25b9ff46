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
from analysis.detect.window import ObservationCells, PerSession, client_observation
from analysis.records import SessionResult


class RecipientDetector(PerSession):
    KINDS = ("directory_harvest", "high_refusal")

    def __init__(self, rules: Rules) -> None:
        self._local = rules.local

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        session = result.session
        if self._local.is_own_client(session.client_ip):
            return []
        out = []
        for command in result.commands:
            if command.verb != "RCPT" or command.reply_code is None:
                continue
            unknown = facts.is_unknown_user(command)
            refused = facts.refused(command)
            # Every unknown user is refused: one example serves both kinds.
            shown = facts.example(command) if refused else None
            out.append(
                client_observation(
                    result,
                    "directory_harvest",
                    command.ts,
                    hit=unknown,
                    example=shown if unknown else None,
                )
            )
            out.append(
                client_observation(
                    result, "high_refusal", command.ts, hit=refused, example=shown
                )
            )
        return out
