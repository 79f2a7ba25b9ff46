"""Bulk and bot sending: the shape of the envelopes a client sends.

Many recipients in one message, many messages in one session, many
envelope-sender domains from one client (one host rarely sends for dozens
of domains unless it is a relay or a bot forging senders) and bursts of
the null reverse-path, which is meant for bounces only (RFC 5321 4.5.5) and
is abused because it cannot be bounced.
"""

from __future__ import annotations

import sys

from analysis.detect import facts
from analysis.detect.rules import Rules
from analysis.detect.window import ObservationCells, PerSession, client_observation
from analysis.records import SessionResult


class BulkDetector(PerSession):
    KINDS = ("bulk_recipients", "bulk_messages", "sender_domains", "null_sender_burst")

    def __init__(self, rules: Rules) -> None:
        self._local = rules.local
        self._recipients = rules.rule("bulk_recipients").limit
        self._messages = rules.rule("bulk_messages").limit

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        session = result.session
        if self._local.is_own_client(session.client_ip):
            return []
        out = []
        mails = {c.ts: c for c in result.commands if c.verb == "MAIL"}
        for txn in result.transactions:
            mail = mails.get(txn.start)
            shown = facts.example(mail) if mail is not None else None
            if txn.rcpts_total >= self._recipients:
                out.append(
                    client_observation(
                        result, "bulk_recipients", txn.start, measure=txn.rcpts_total
                    )
                )
            if txn.mail_from == "":
                out.append(
                    client_observation(
                        result, "null_sender_burst", txn.start, example=shown
                    )
                )
            domain = facts.sender_domain(txn.mail_from)
            if domain is not None:
                # Interned, which marshal keeps: the tracker then holds one
                # string per domain rather than one per message (see
                # window.PerSession.judge for the key).
                domain = sys.intern(domain)
                out.append(
                    client_observation(
                        result, "sender_domains", txn.start, value=domain, example=shown
                    )
                )
        if session.transactions >= self._messages:
            out.append(
                client_observation(
                    result, "bulk_messages", session.start, measure=session.transactions
                )
            )
        return out
