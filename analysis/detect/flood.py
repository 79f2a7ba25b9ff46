"""Connection floods: many sessions, many empty ones, refusals, SYN floods.

Counted per client on session start times: all sessions (a flood), sessions
that end quickly without a MAIL command (probing, address verification,
a bot testing the server), and servers that refuse a client at the
greeting or drop it with 421 (RFC 5321 3.8, 4.3.2), which is what rate
limits and tarpits answer when they trip.

Counted per server: TCP handshakes that never completed (a SYN flood),
against every session to that server. A flood from spoofed addresses sends
one SYN from each, so no client ever crosses a per-client threshold.
"""

from __future__ import annotations

from analysis.detect.rules import Rules
from analysis.detect.window import (
    ObservationCells,
    PerSession,
    client_observation,
    server_observation,
)
from analysis.escape import escape_controls
from analysis.records import SessionRecord, SessionResult

NS = 1_000_000_000
# RFC 5321 3.1: 554 instead of 220 refuses the session; 421 is a temporary
# refusal, at the greeting or any time later.
_REFUSING_GREETINGS = frozenset({421, 554})
_NOT_SEEN_TO_END = frozenset({"end_of_capture", "idle", "evicted"})


class FloodDetector(PerSession):
    KINDS = ("connection_flood", "short_sessions", "greeting_refused", "syn_flood")

    def __init__(self, rules: Rules) -> None:
        self._local = rules.local
        self._short = rules.rule("short_sessions").limit * NS
        self._syn_flood = rules.enabled("syn_flood")

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        session = result.session
        out = []
        # Every client counts here, the site's own networks too: an address
        # that never completed a handshake was never shown to be the
        # sender's (a flood may spoof the site's own), and the alert is
        # about the server under the flood, not about a client's conduct.
        if self._syn_flood:
            out.append(_handshake(result))
        if not session.handshake_completed or self._local.is_own_client(
            session.client_ip
        ):
            # The rest blames the client, whose address a connection that
            # never completed its handshake does not show to be its own: a
            # SYN, or a segment the server answered only with a RST, is
            # sent from any address (found in review: forty such segments
            # raised connection_flood on a spoofed one).
            return out
        out.append(client_observation(result, "connection_flood", session.start))
        short = session.end - session.start < self._short
        # Short means seen to end soon. One open at the end of the capture
        # was not seen to end; one closed as idle stayed open, silent, for
        # the whole idle timeout after its last packet (its end); one
        # evicted was closed to make room, not by its ends.
        ended = session.close not in _NOT_SEEN_TO_END
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


def handshake_failed(session: SessionRecord) -> bool:
    """Whether the session's TCP handshake began and never completed.

    Began: the capture shows the client's SYN or the server's SYN-ACK.
    Completed (``Connection.handshake_completed``): the client's ACK of the
    SYN-ACK (when the SYN-ACK is captured, one whose number acknowledges
    it: a guessed one does not), or any later acknowledgment from it, or a
    byte from the server. Without the SYN-ACK in the capture (one side
    captured), the client's acknowledgments still show it arrived. Bytes in
    the SYN alone (TCP Fast Open, or a flood that carries a payload to pass
    filters that drop empty SYNs) prove nothing: the server never answered
    them. An SMTP server speaks first (RFC 5321 3.1), so a handshake that
    completed with no byte either way, its ACK lost to the capture, is one
    its client dropped at once, and counting it as failed is the rare error.
    """
    began = session.handshake_seen or session.synack_seen
    return began and not session.handshake_completed


def server_answer(session: SessionRecord) -> str:
    """How the server answered a handshake that failed, as the alert says it."""
    if session.synack_seen:
        return "answered with SYN-ACK"
    if not session.server_packets:
        return "not answered"
    # RFC 9293 3.10.7.1: a SYN to a port nobody listens on gets a RST.
    if session.close == "rst":
        return "refused with RST"
    return "answered with neither SYN-ACK nor RST"


def _handshake(result: SessionResult) -> ObservationCells:
    session = result.session
    if handshake_failed(session):
        note = server_answer(session)
        return server_observation(result, "syn_flood", session.start, note=note)
    return server_observation(result, "syn_flood", session.start, hit=False)
