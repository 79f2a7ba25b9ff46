"""Protocol abuse: what well-behaved SMTP clients do not do.

Talking before the greeting (RFC 5321 4.3.1, which spam bots do to save
time), pipelining to a server that did not offer it (RFC 2920 3.1),
commands after QUIT (RFC 5321 4.1.1.10), an end of data that is not
CRLF.CRLF inside a CRLF message (the shape of SMTP smuggling, RFC 5321
4.1.1.4 and 2.3.8), replies to commands nobody gave, and many syntax errors.
Most come from the parser's anomalies; this module only turns them into
observations.
"""

from __future__ import annotations

import functools

from analysis.detect import facts
from analysis.detect.rules import Rules
from analysis.detect.window import ObservationCells, PerSession, client_observation
from analysis.downgrade import CACHED_TEXT
from analysis.escape import escape_controls
from analysis.records import CommandRecord, SessionResult

# Parser anomaly kind -> the alert kind it is evidence for.
_FROM_ANOMALY = {
    "early_talker": "early_talker",
    "bare_lf_dot_line": "smtp_smuggling",
    "bare_lf_end_of_data": "smtp_smuggling",
    "reply_without_command": "unsolicited_reply",
}


class ProtocolDetector(PerSession):
    KINDS = (
        "early_talker",
        "pipelining_unadvertised",
        "data_after_quit",
        "smtp_smuggling",
        "unsolicited_reply",
        "syntax_errors",
    )

    def __init__(self, rules: Rules) -> None:
        del rules  # nothing site-specific: protocol rules hold for every client

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        out = []
        reported: set[str] = set()
        for anomaly in result.anomalies:
            kind = _FROM_ANOMALY.get(anomaly.kind)
            if kind == "unsolicited_reply" and not _injected(result, anomaly.detail):
                continue
            if kind is not None and kind not in reported:
                reported.add(kind)
                shown = escape_controls(f"{anomaly.kind}: {anomaly.detail}")
                out.append(client_observation(result, kind, anomaly.ts, example=shown))
        unoffered = _first_unoffered_pipelining(
            result.commands, facts.start_seen(result.session)
        )
        if unoffered is not None:
            out.append(
                client_observation(
                    result,
                    "pipelining_unadvertised",
                    unoffered.ts,
                    example=facts.example(unoffered),
                )
            )
        after_quit = _first_after_quit(result.commands)
        if after_quit is not None:
            out.append(
                client_observation(
                    result,
                    "data_after_quit",
                    after_quit.ts,
                    example=facts.example(after_quit),
                )
            )
        for command in result.commands:
            if command.reply_code in facts.SYNTAX_ERROR_CODES and (
                command.verb != "AUTH" or _auth_syntax_error(command)
            ):
                out.append(
                    client_observation(
                        result,
                        "syntax_errors",
                        command.ts,
                        example=facts.example(command),
                    )
                )
        return out


def _auth_syntax_error(command: CommandRecord) -> bool:
    """Whether a 500 or 501 to AUTH refused bad syntax, not a cancel.

    RFC 4954 4: the server answers 501 both to the client's cancel ("*")
    and to a response it cannot decode as base64, the latter with the
    enhanced code 5.5.2; servers give cancels 5.7.0, 5.0.0 or no code. So
    a 501 counts with a syntax code (5.5.x) alone; a 500 (a line too long,
    AUTH unknown to the server) always. A client that sends bad base64
    over and over probes the server's SASL decoder: no password was judged,
    so it counts here and not as AUTH guessing.
    """
    if command.reply_code == 500:
        return True
    enhanced = command.reply_enhanced
    return enhanced is not None and enhanced.startswith("5.5.")


def _injected(result: SessionResult, detail: str) -> bool:
    """Whether a reply nobody asked for looks injected rather than routine.

    A server may send 421 at any time (RFC 5321 3.8) and many send 4xx or
    5xx on a timeout; a positive reply is what could make a client or a
    filter believe a command it never sent was accepted. After a TCP gap
    the command may simply be in the part that was not captured.

    In a session caught after its start, the command may have been sent
    before the capture began: replies are matched to commands in order, so
    one still owed to a command pipelined before the capture takes the
    place of the next reply, and so on until the extra one is left over,
    wherever that falls. Only a session whose start was seen tells an
    injected reply from a late one.
    """
    return (
        result.session.gaps == 0
        and detail[:1] in ("2", "3")
        and facts.start_seen(result.session)
    )


def _first_unoffered_pipelining(
    commands: list[CommandRecord], start_seen: bool
) -> CommandRecord | None:
    """The first command pipelined while the server was known not to offer
    PIPELINING, or None.

    With the session's start in the capture, a server offers nothing before
    an accepted EHLO: a client that pipelines without one is to blame. In a
    session caught after its start, the EHLO and its reply may be before the
    capture, so what was offered is unknown until an EHLO or HELO seen in
    the capture is accepted (a refused one changes nothing on the server).
    """
    offered: bool | None = False if start_seen else None  # None: not known
    for command in commands:
        if command.pipelined and offered is False:
            return command
        if command.verb in facts.HELO_VERBS and facts.accepted(command):
            # HELO offers no extensions at all (RFC 2920 3.1).
            offered = command.verb != "HELO" and _offers_pipelining(command.reply_text)
    return None


def _offers_pipelining(reply_text: str | None) -> bool:
    """Whether an EHLO reply lists PIPELINING (cached: servers repeat theirs,
    and only short replies are: see ``downgrade.CACHED_TEXT``).

    RFC 2920 3.1: the EHLO reply's keywords, one per line after the first.
    The first line, the server's name, is searched too: some servers put a
    keyword there, and a client that trusts it is not the one to blame.
    """
    if reply_text is not None and len(reply_text) > CACHED_TEXT:
        return _lists_pipelining(reply_text)
    return _cached_pipelining(reply_text)


def _lists_pipelining(reply_text: str | None) -> bool:
    keywords = (reply_text or "").split("\n")
    return any(k.split()[0].upper() == "PIPELINING" for k in keywords if k.split())


_cached_pipelining = functools.lru_cache(maxsize=1024)(_lists_pipelining)


def _first_after_quit(commands: list[CommandRecord]) -> CommandRecord | None:
    quit_seen = False
    for command in commands:
        if quit_seen:
            return command
        quit_seen = command.verb == "QUIT"
    return None
