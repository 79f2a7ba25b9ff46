"""Sessions caught after their start: what the capture did not see is no
evidence against the client or the server.

A capture that begins mid-traffic, or a connection evicted under
``--max-connections`` and caught again, misses the greeting, the EHLO and
its reply, and commands still awaiting their replies. The same
conversations with their start in the capture show what is still blamed.
"""

from __future__ import annotations

from analysis.detect.engine import detect
from analysis.records import SessionResult
from capture.stream import Direction
from tests.analysis.conversation import session

S = 1_000_000_000
C = Direction.CLIENT
D = Direction.SERVER
GREETING = (D, b"220 mail.example.net ESMTP\r\n")


def _session(
    steps: list[tuple[Direction, bytes]], start_seen: bool, n: int = 1
) -> SessionResult:
    """One session of ``steps`` from 203.0.113.n, with its SYN in the
    capture or caught after its start (no SYN, no SYN-ACK)."""
    return session(
        steps,
        start_seen=start_seen,
        client=f"203.0.113.{n}",
        server="198.51.100.25",
        start=n * S,
    )


def _alerts(results: list[SessionResult]) -> list[tuple[str, str | None, int]]:
    return sorted((a.kind, a.client_ip, a.count) for a in detect(results))


def _anomalies(result: SessionResult) -> list[tuple[str, str]]:
    return [(a.kind, a.detail) for a in result.anomalies]


# A transaction pipelined to a server whose EHLO reply the capture may hold.
_PIPELINED_MAIL = [
    (C, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"),
    (D, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"),
    (C, b"QUIT\r\n"),
    (D, b"221 Bye\r\n"),
]
_EHLO_WITHOUT_PIPELINING = [
    (C, b"EHLO client.example.org\r\n"),
    (D, b"250-mail.example.net\r\n250 8BITMIME\r\n"),
]
_EHLO_WITH_PIPELINING = [
    (C, b"EHLO client.example.org\r\n"),
    (D, b"250-mail.example.net\r\n250 PIPELINING\r\n"),
]


def test_pipelining_before_any_ehlo_is_blamed_only_when_the_start_was_seen() -> None:
    # With its start seen, the client never sent EHLO: nothing was offered.
    whole = _session([GREETING, *_PIPELINED_MAIL], start_seen=True, n=1)
    # Caught after its start: the EHLO that offered PIPELINING may be
    # before the capture (found on a capture cut mid-traffic).
    # (A command counts as pipelined once the server has spoken.)
    noop = [(C, b"NOOP\r\n"), (D, b"250 2.0.0 Ok\r\n")]
    caught = _session([*noop, *_PIPELINED_MAIL], start_seen=False, n=2)
    assert caught.session.capabilities == []
    assert [c.pipelined for c in caught.commands] == [False, False, True, False]
    assert _alerts([whole]) == [("pipelining_unadvertised", "203.0.113.1", 1)]
    assert _alerts([caught]) == []


def test_a_caught_session_is_blamed_after_an_ehlo_seen_without_pipelining() -> None:
    lacking = _session(
        [*_EHLO_WITHOUT_PIPELINING, *_PIPELINED_MAIL], start_seen=False, n=1
    )
    offering = _session(
        [*_EHLO_WITH_PIPELINING, *_PIPELINED_MAIL], start_seen=False, n=2
    )
    assert lacking.session.capabilities == ["8BITMIME"]
    assert _alerts([lacking, offering]) == [
        ("pipelining_unadvertised", "203.0.113.1", 1)
    ]


def test_a_caught_session_is_blamed_after_an_accepted_helo() -> None:
    # HELO offers no extension (RFC 2920 3.1), whatever came before it.
    helo = [(C, b"HELO client.example.org\r\n"), (D, b"250 mail.example.net\r\n")]
    caught = _session([*helo, *_PIPELINED_MAIL], start_seen=False)
    assert _alerts([caught]) == [("pipelining_unadvertised", "203.0.113.1", 1)]


def test_a_refused_ehlo_in_a_caught_session_shows_nothing_offered() -> None:
    # A refused EHLO changes nothing on the server: the EHLO before the
    # capture may still be the one in force.
    refused = [(C, b"EHLO bad name\r\n"), (D, b"501 5.5.2 Bad syntax\r\n")]
    caught = _session([*refused, *_PIPELINED_MAIL], start_seen=False)
    assert _alerts([caught]) == []


# Replies still owed to a transaction the client pipelined before the
# capture began (or before its connection was evicted): MAIL and RCPT were
# sent unseen, DATA is the first command the capture holds.
_LATE_REPLIES = [
    (C, b"DATA\r\n"),
    (D, b"250 2.1.0 Ok\r\n"),
    (D, b"250 2.1.5 Ok\r\n"),
    (D, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
]


def test_replies_to_commands_before_the_capture_are_not_unsolicited() -> None:
    caught = _session(_LATE_REPLIES, start_seen=False)
    # The parser still tells it saw replies with no command waiting.
    assert _anomalies(caught) == [
        ("message_without_mail", "DATA with no MAIL"),
        ("greeting_missing", "capture starts after the greeting"),
        ("reply_without_command", "250 2.1.5 Ok"),
        ("reply_without_command", "354 End data with <CR><LF>.<CR><LF>"),
        ("message_incomplete", "connection ended in DATA"),
    ]
    assert _alerts([caught]) == []
    # With its start seen, nothing was sent unseen: the replies are extra.
    whole = _session(_LATE_REPLIES, start_seen=True, n=2)
    assert _alerts([whole]) == [("unsolicited_reply", "203.0.113.2", 1)]


def test_a_reply_to_nothing_is_unsolicited_when_the_start_was_seen() -> None:
    injected = [
        GREETING,
        *_EHLO_WITH_PIPELINING,
        (D, b"250 2.0.0 Ok: queued as 4F00D\r\n"),
        (C, b"QUIT\r\n"),
        (D, b"221 Bye\r\n"),
    ]
    whole = _session(injected, start_seen=True, n=1)
    caught = _session(injected[1:], start_seen=False, n=2)
    assert ("reply_without_command", "250 2.0.0 Ok: queued as 4F00D") in _anomalies(
        whole
    )
    assert _alerts([whole, caught]) == [("unsolicited_reply", "203.0.113.1", 1)]


def test_a_refusal_to_nothing_is_no_unsolicited_reply_either_way() -> None:
    # A server may send 421 at any time (RFC 5321 3.8).
    timeout = [GREETING, (D, b"421 4.4.2 Timeout\r\n")]
    assert _alerts([_session(timeout, start_seen=True)]) == []


def _relaying(to: bytes) -> list[tuple[Direction, bytes]]:
    return [
        (C, b"MAIL FROM:<a@example.org>\r\n"),
        (D, b"250 2.1.0 Ok\r\n"),
        (C, b"RCPT TO:<b@" + to + b">\r\n"),
        (D, b"250 2.1.5 Ok\r\n"),
        (C, b"RSET\r\n"),
        (D, b"250 2.0.0 Ok\r\n"),
    ]


_THREE_DOMAINS = [
    step
    for to in (b"example.com", b"example.info", b"example.biz")
    for step in _relaying(to)
]


def test_an_accepted_foreign_rcpt_is_an_open_relay_only_with_no_auth_unseen() -> None:
    ehlo = [(C, b"EHLO client.example.org\r\n"), (D, b"250 mail.example.net\r\n")]
    whole = _session([GREETING, *ehlo, *_THREE_DOMAINS], start_seen=True, n=1)
    # Caught after its start: the client may have authenticated unseen.
    caught = _session([*ehlo, *_THREE_DOMAINS], start_seen=False, n=2)
    assert _alerts([whole, caught]) == [("open_relay", "203.0.113.1", 3)]
