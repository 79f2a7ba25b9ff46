"""AUTH abuse: brute force, password spraying, distributed guessing.

Counts AUTH commands refused for their credentials (RFC 4954 6: 535, or
the enhanced code x.7.8) per client, per client and distinct user name,
and per user name and distinct client: each is a password the server
judged wrong. The other refusals are no guess that failed and count
nowhere here: a mechanism the server lacks (504), one too weak (534) or
not without TLS (538), a temporary refusal (432, 454), an exchange out of
sequence (503) or the client's own cancel or bad base64 (501; a client
that sends bad base64 over and over is a syntax_errors matter, see
``analysis.detect.protocol``). A success from a client or for a user after
many refusals is the worst case: a guess that worked. User names come from
the session table (PLAIN and LOGIN reveal them); passwords are never read,
and the examples are the commands table's rows, whose AUTH payloads
already read "[redacted]".
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from analysis.detect import facts
from analysis.detect.rules import Rules
from analysis.detect.window import Observation, shared_key, shared_text
from analysis.records import SessionResult
from analysis.smtp import auth

_UNKNOWN_USER = "(unknown)"


# What ``extract`` keeps of a session: client, server, session id, user,
# and per counted AUTH reply (ts, accepted, example).
_Extract = tuple[str, str, str, str | None, list[tuple[int, bool, str]]]


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
        self._stretch = max(self._window, 1)  # a window may round to 0 ns
        self._threshold = rule.limit
        # Timestamps of refusals per client and per user, kept sorted.
        self._by_client: defaultdict[str, list[int]] = defaultdict(list)
        self._by_user: defaultdict[str, list[int]] = defaultdict(list)
        # The clients and users given a refusal, per window-long stretch of
        # time (ts // _stretch): what ``forget_before`` looks through, so
        # that it touches only keys with something old to let go.
        self._stretches: defaultdict[int, tuple[set[str], set[str]]] = defaultdict(
            lambda: (set(), set())
        )

    def extract(self, result: SessionResult) -> _Extract | None:
        """The session's AUTH outcomes that count: (ts, accepted, example).

        Pure; ``judge`` weighs them against the refusals of earlier
        sessions.
        """
        session = result.session
        if self._local.is_own_client(session.client_ip):
            return None
        outcomes = []
        for command in result.commands:
            if command.verb != "AUTH" or command.reply_code is None:
                continue
            verdict = auth.outcome(command.reply_code, command.reply_enhanced)
            if verdict == auth.SUCCESS:
                outcomes.append((command.ts, True, facts.example(command)))
            elif verdict == auth.FAILURE:
                outcomes.append((command.ts, False, facts.example(command)))
        # The session table keeps one user name, of the AUTH its row tells
        # of (the accepted one, else the last refused for its credentials);
        # the parser reveals no more, so every AUTH of a session is taken
        # to be for that user.
        return (
            session.client_ip,
            session.server_ip,
            session.session_id,
            session.auth_user,
            outcomes,
        )

    def judge(self, extracted: _Extract | None) -> list[Observation]:
        if extracted is None:
            return []
        client, server, session_id, user, outcomes = extracted
        # Held by the observations for their windows, and repeated from
        # session to session: shared rather than a copy of each per session.
        client, server = shared_text(client), shared_text(server)

        def observation(kind: str, ts: int, **details: Any) -> Observation:
            # Per-user observations are only made when there is a user.
            who = user if kind == "auth_user_many_clients" and user else client
            return Observation(
                kind, shared_key((who,)), ts, session_id, client, server, **details
            )

        out = []
        for ts, accepted, said in outcomes:
            shown = shared_text(said)
            if accepted:
                out += self._success(observation, client, ts, user, shown)
                continue
            clients, users = self._stretches[ts // self._stretch]
            bisect.insort(self._by_client[client], ts)
            clients.add(client)
            if user is not None:
                bisect.insort(self._by_user[user], ts)
                users.add(user)
            out.append(observation("auth_brute_force", ts, example=shown))
            out.append(
                observation(
                    "auth_spraying", ts, value=user or _UNKNOWN_USER, example=shown
                )
            )
            if user is not None:
                out.append(
                    observation(
                        "auth_user_many_clients", ts, value=client, example=shown
                    )
                )
        return out

    def _success(
        self,
        observation: Callable[..., Observation],
        client: str,
        ts: int,
        user: str | None,
        shown: str,
    ) -> list[Observation]:
        # Looked up, not made: a success alone keeps no list.
        failures = self._recent(self._by_client.get(client, []), ts)
        about = "from this client"
        if user is not None:
            for_user = self._recent(self._by_user.get(user, []), ts)
            if for_user > failures:
                failures, about = for_user, f"for user {user}"
        if failures < self._threshold:
            return []
        return [
            observation(
                "auth_success_after_failures",
                ts,
                measure=failures,
                example=shown,
                note=about,
            )
        ]

    def forget_before(self, horizon: int) -> None:
        """Let go of the refusals no session starting at ``horizon`` or
        later can count.

        A success counts the refusals of the window before it, and comes
        no earlier than its session's start (give or take a clock that
        steps back, for which a window more is kept): older ones are never
        needed again. Only the caller knows the horizon (offline, sessions come in
        start order; live, they come as they close, and one still open may
        have started long ago), so without this call nothing is let go.
        Whole stretches older than that go at once: a key is looked at once
        per stretch it had refusals in.
        """
        # A window more than that: a capture's clock can step back (captures
        # merged, a pcapng's interfaces), and a success then comes stamped
        # before its session's start (found in review: by 100 s, and its
        # refusals were let go).
        oldest = horizon - 2 * self._window
        old = [s for s in self._stretches if (s + 1) * self._stretch <= oldest]
        for stretch in old:
            clients, users = self._stretches.pop(stretch)
            _drop_older(self._by_client, clients, oldest)
            _drop_older(self._by_user, users, oldest)

    def _recent(self, times: list[int], now: int) -> int:
        return bisect.bisect_right(times, now) - bisect.bisect_left(
            times, now - self._window
        )


def _drop_older(table: dict[str, list[int]], keys: set[str], oldest: int) -> None:
    """Drop the times before ``oldest`` from ``keys``' lists, and the keys
    left with none."""
    for key in keys:
        times = table.get(key)
        if times is None:
            continue
        del times[: bisect.bisect_left(times, oldest)]
        if not times:
            del table[key]
