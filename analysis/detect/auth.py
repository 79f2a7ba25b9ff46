"""AUTH abuse: brute force, password spraying, distributed guessing.

Counts refused AUTH commands (RFC 4954 6: 535 and kin) per client, per
client and distinct user name, and per user name and distinct client. A
success from a client or for a user after many refusals is the worst case:
a guess that worked. User names come from the session table (PLAIN and
LOGIN reveal them); passwords are never read, and the examples are the
commands table's rows, whose AUTH payloads already read "[redacted]".
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from analysis.detect import facts
from analysis.detect.rules import Rules
from analysis.detect.window import Observation, client_observation
from analysis.records import SessionResult

_UNKNOWN_USER = "(unknown)"


class AuthDetector:
    KINDS = (
        "auth_brute_force",
        "auth_spraying",
        "auth_user_many_clients",
        "auth_success_after_failures",
    )

    def __init__(self, rules: Rules) -> None:
        self._local = rules.local
        rule = rules.rule("auth_success_after_failures")
        self._window = rule.window_ns
        self._threshold = rule.limit
        # Timestamps of refusals per client and per user, kept sorted.
        self._by_client: defaultdict[str, list[int]] = defaultdict(list)
        self._by_user: defaultdict[str, list[int]] = defaultdict(list)

    def observe(self, result: SessionResult) -> list[Observation]:
        session = result.session
        client = session.client_ip
        if self._local.is_own_client(client):
            return []
        # The session table keeps the last user name; the parser reveals no
        # more, so every AUTH of a session is taken to be for that user.
        user = session.auth_user
        out = []
        for command in result.commands:
            if command.verb != "AUTH" or command.reply_code is None:
                continue
            shown = facts.example(command)
            if facts.accepted(command):
                out += self._success(result, command.ts, user, shown)
                continue
            if command.reply_code // 100 != 5 or command.reply_code == 501:
                continue  # 501 is a cancelled or malformed exchange, no guess
            bisect.insort(self._by_client[client], command.ts)
            if user is not None:
                bisect.insort(self._by_user[user], command.ts)
            out.append(
                client_observation(
                    result, "auth_brute_force", command.ts, example=shown
                )
            )
            out.append(
                client_observation(
                    result,
                    "auth_spraying",
                    command.ts,
                    value=user or _UNKNOWN_USER,
                    example=shown,
                )
            )
            if user is not None:
                out.append(
                    Observation(
                        kind="auth_user_many_clients",
                        key=(user,),
                        ts=command.ts,
                        session_id=session.session_id,
                        client_ip=client,
                        server_ip=session.server_ip,
                        value=client,
                        example=shown,
                    )
                )
        return out

    def _success(
        self, result: SessionResult, ts: int, user: str | None, shown: str
    ) -> list[Observation]:
        failures = self._recent(self._by_client[result.session.client_ip], ts)
        about = "from this client"
        if user is not None:
            for_user = self._recent(self._by_user[user], ts)
            if for_user > failures:
                failures, about = for_user, f"for user {user}"
        if failures < self._threshold:
            return []
        return [
            client_observation(
                result,
                "auth_success_after_failures",
                ts,
                measure=failures,
                example=shown,
                note=about,
            )
        ]

    def _recent(self, times: list[int], now: int) -> int:
        # Sessions come in start order, so older refusals are never needed
        # again; dropping them keeps the lists short.
        del times[: bisect.bisect_left(times, now - 2 * self._window)]
        return bisect.bisect_right(times, now) - bisect.bisect_left(
            times, now - self._window
        )
