"""Connection floods: many sessions, many empty ones, and refusals.

Counted per client on session start times: all sessions (a flood), sessions
that end quickly without a MAIL command (probing, address verification,
a bot testing the server), and servers that refuse a client at the
greeting or drop it with 421 (RFC 5321 3.8, 4.3.2), which is what rate
limits and tarpits answer when they trip.
"""

from __future__ import annotations

from analysis.detect.rules import Rules
from analysis.detect.window import ObservationCells, PerSession, client_observation
from analysis.escape import escape_controls
from analysis.records import SessionResult

NS = 1_000_000_000
# RFC 5321 3.1: 554 instead of 220 refuses the session; 421 is a temporary
# refusal, at the greeting or any time later.
_REFUSING_GREETINGS = frozenset({421, 554})


class FloodDetector(PerSession):
    KINDS = ("connection_flood", "short_sessions", "greeting_refused")

    def __init__(self, rules: Rules) -> None:
        self._local = rules.local
        self._short = rules.rule("short_sessions").limit * NS

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        session = result.session
        if self._local.is_own_client(session.client_ip):
            return []
        out = [client_observation(result, "connection_flood", session.start)]
        short = session.end - session.start < self._short
        # Short means seen to end soon. One open at the end of the capture
        # was not seen to end; one closed as idle stayed open, silent, for
        # the whole idle timeout after its last packet (its end).
        ended = session.close not in ("end_of_capture", "idle")
        if short and session.transactions == 0 and ended:
            out.append(client_observation(result, "short_sessions", session.start))
        refusal = self._refusal(result)
        if refusal is not None:
            out.append(
                client_observation(
                    result, "greeting_refused", session.start, example=refusal
                )
            )
        return out

    @staticmethod
    def _refusal(result: SessionResult) -> str | None:
        session = result.session
        if session.greeting_code in _REFUSING_GREETINGS:
            text = (session.greeting_text or "").split("\n", 1)[0][:120]
            return escape_controls(f"S: {session.greeting_code} {text}".rstrip())
        for command in result.commands:
            if command.reply_code == 421:
                text = (command.reply_text or "").split("\n", 1)[0][:120]
                return escape_controls(f"C: {command.verb} / S: 421 {text}".rstrip())
        return None
