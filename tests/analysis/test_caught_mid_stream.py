"""Connections the capture caught after their start (a rotated ring buffer):
TLS whose handshake it missed, and a first reply that is not the greeting.

``conversation.session`` builds a caught connection (no SYN) unless told
``start_seen``.
"""

from __future__ import annotations

import base64

from analysis.records import SessionResult
from tests.analysis.conversation import C, S, session


def _record(size: int, kind: int = 0x17) -> bytes:
    """A TLS 1.2-framed record of ``kind`` (application data by default)
    with ``size`` bytes of stand-in ciphertext."""
    return bytes([kind, 3, 3, size >> 8, size & 0xFF]) + bytes(
        i % 256 for i in range(size)
    )


def _tls_columns(result: SessionResult) -> tuple[object, ...]:
    s = result.session
    return (
        s.tls,
        s.tls_start,
        s.tls_handshake,
        s.tls_client_bytes,
        s.tls_server_bytes,
        s.greeting_code,
        s.commands,
        s.anomalies,
    )


def _anomalies(result: SessionResult) -> list[tuple[int, str, str]]:
    return [(a.ts, a.kind, a.detail) for a in result.anomalies]


def _commands(result: SessionResult) -> list[tuple[object, ...]]:
    return [
        (c.ts, c.verb, c.argument, c.reply_code, c.reply_text) for c in result.commands
    ]


# TLS caught under way -------------------------------------------------------


def test_implicit_tls_caught_after_its_handshake_is_tls_not_smtp() -> None:
    # Found by a user on a rotated capture: read as clear text, with
    # plaintext_on_tls_port, malformed_reply and ciphertext "commands".
    r = session([(S, _record(36)), (C, _record(36)), (S, _record(200))], port=465)
    assert _tls_columns(r) == ("implicit", None, "none", 41, 205, None, 0, 2)
    assert (_commands(r), r.tls) == ([], [])
    # The server's first record comes before the client's bytes confirm
    # that the connection is TLS, and is read as replies meanwhile: one
    # side alone may be a forger (below).
    assert [a[1] for a in _anomalies(r)] == ["bare_lf", "malformed_reply"]


def test_a_forged_record_header_from_a_caught_server_hides_no_command() -> None:
    # Found in review: the server's first bytes alone made the connection
    # TLS, so a client that connected from port 25 (and so took the
    # server's place) hid its commands behind five forged bytes.
    forged = b"\x17\x03\x03\x00\x03abc"
    r = session(
        [
            (S, forged + b"250 ok\r\n"),
            (C, b"MAIL FROM:<a@x.example>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"RCPT TO:<b@far.example>\r\n"),
            (S, b"250 ok\r\n"),
        ]
    )
    assert _tls_columns(r) == ("none", None, "none", 0, 0, None, 2, 2)
    assert [c[1:4] for c in _commands(r)] == [
        ("MAIL", "FROM:<a@x.example>", 250),
        ("RCPT", "TO:<b@far.example>", 250),
    ]
    assert [a[1] for a in _anomalies(r)] == ["malformed_reply", "greeting_missing"]


def test_implicit_tls_caught_when_the_client_speaks_first() -> None:
    alert = bytes([0x15, 3, 3, 0, 2, 2, 40])
    r = session([(C, _record(36)), (S, _record(36)), (C, alert)], port=465)
    assert _tls_columns(r) == ("implicit", None, "none", 48, 41, None, 0, 0)
    assert (_commands(r), _anomalies(r), r.tls) == ([], [], [])


def test_starttls_caught_after_the_220_is_tls_not_smtp() -> None:
    # On a port where SMTP is due, TLS follows STARTTLS.
    for port in (25, 587):
        r = session([(C, _record(500)), (S, _record(30)), (C, _record(60))], port)
        assert _tls_columns(r) == ("starttls", None, "none", 570, 35, None, 0, 0)
        assert (_commands(r), _anomalies(r), r.tls) == ([], [], [])


def test_a_caught_clienthello_on_a_plain_port_is_read_as_before() -> None:
    # A handshake record may be a ClientHello: its handshake is read.
    r = session([(C, _record(60, kind=0x16))], port=25)
    assert (r.session.tls, [a.kind for a in r.anomalies]) == (
        "implicit",
        ["tls_on_plain_port"],
    )
    assert [t.mode for t in r.tls] == ["implicit"]


def test_tls_records_on_a_tls_port_whose_start_was_seen_are_not_a_handshake() -> None:
    # With the SYN in the capture the first bytes are the connection's
    # first: application data there is no handshake, as before.
    r = session([(S, _record(4))], port=465, start_seen=True)
    assert r.session.tls == "none"
    assert _anomalies(r)[0] == (
        1,
        "plaintext_on_tls_port",
        "server began with: \\x17\\x03\\x03\\x00\\x04\\x00\\x01\\x02\\x03",
    )


def test_clear_text_on_a_tls_port_still_says_so_caught_or_not() -> None:
    steps = [(S, b"220 mx.example ESMTP\r\n"), (C, b"QUIT\r\n"), (S, b"221 Bye\r\n")]
    for seen in (False, True):
        r = session(steps, port=465, start_seen=seen)
        assert _tls_columns(r) == ("none", None, "none", 0, 0, 220, 1, 1)
        assert _anomalies(r) == [
            (
                1,
                "plaintext_on_tls_port",
                "server began with: 220 mx.example ESMTP\\r\\n",
            )
        ]
        assert _commands(r) == [(2, "QUIT", "", 221, "Bye")]


def test_a_caught_connection_in_clear_text_is_smtp() -> None:
    r = session([(C, b"NOOP\r\n"), (S, b"250 2.0.0 Ok\r\n")], port=25)
    assert _tls_columns(r) == ("none", None, "none", 0, 0, None, 1, 1)
    assert _commands(r) == [(1, "NOOP", "", 250, "2.0.0 Ok")]
    assert _anomalies(r) == [
        (2, "greeting_missing", "capture starts after the greeting")
    ]


# The first reply of a caught connection ---------------------------------------


def test_a_capture_that_begins_at_an_auth_login_challenge_has_no_greeting() -> None:
    user, password = base64.b64encode(b"bob"), base64.b64encode(b"hunter2hunter2")
    r = session(
        [
            (S, b"334 VXNlciBOYW1lAA==\r\n"),
            (C, user + b"\r\n"),
            (S, b"334 UGFzc3dvcmQ6\r\n"),
            (C, password + b"\r\n"),
            (S, b"235 2.7.0 Authentication successful\r\n"),
            (C, b"QUIT\r\n"),
            (S, b"221 2.0.0 Bye\r\n"),
        ]
    )
    s = r.session
    assert (s.greeting_code, s.greeting_text, s.greeting_delay_s) == (None, None, None)
    assert (s.auth_result, s.auth_attempts, s.auth_mechanism) == ("success", 1, None)
    assert _commands(r) == [
        (2, "[redacted]", "", 235, "2.7.0 Authentication successful"),
        (6, "QUIT", "", 221, "2.0.0 Bye"),
    ]
    assert _anomalies(r) == [
        (1, "greeting_missing", "capture starts after the greeting"),
        (2, "possible_sasl_data", "base64 line withheld"),
    ]
    assert b"hunter2" not in repr(r).encode()


def test_a_password_of_capitals_where_the_capture_begins_is_withheld() -> None:
    # Found in review: the base64 of MASTER is TUFTVEVS, letters of one
    # case, and a 454 is no SASL code: the password was the row's verb.
    r = session(
        [
            (C, base64.b64encode(b"MASTER") + b"\r\n"),
            (S, b"454 4.7.0 Temporary authentication failure\r\n"),
            (C, b"QUIT\r\n"),
            (S, b"221 bye\r\n"),
        ]
    )
    assert _commands(r) == [
        (1, "[redacted]", "", 454, "4.7.0 Temporary authentication failure"),
        (3, "QUIT", "", 221, "bye"),
    ]
    assert _anomalies(r) == [
        (1, "possible_sasl_data", "base64 line withheld"),
        (2, "greeting_missing", "capture starts after the greeting"),
    ]
    # Only a 235 or 535 there is the outcome of an AUTH (see above).
    s = r.session
    assert (s.auth_result, s.auth_attempts, s.auth_mechanism) == (None, 0, None)
    assert b"TUFTVEVS" not in repr(r).encode()


def test_a_password_a_sasl_code_shows_is_hidden_in_that_reply() -> None:
    # Found in review: a line of an unknown verb answered 535 is SASL data,
    # and its row was hidden, but not the server's echo of it in the 535
    # when it looked like no base64 ("ab", "p@ss!", "my pass"). Only that
    # reply is scrubbed of it; a word under four characters where it
    # stands alone, as a short password is.
    r = session(
        [
            (C, b"ab\r\n"),
            (S, b"535 5.7.8 bad ab (about ab)\r\n"),
            (C, b"p@ss!\r\n"),
            (S, b"535 5.7.8 bad P@SS!\r\n"),
            (C, b"my pass\r\n"),
            (S, b"535 5.7.8 bad my pass\r\n"),
            (C, b"NOOP ab my pass\r\n"),
            (S, b"250 2.0.0 ab my pass stay\r\n"),
        ]
    )
    assert _commands(r) == [
        (1, "[redacted]", "", 535, "5.7.8 bad [redacted] (about [redacted])"),
        (3, "[redacted]", "", 535, "5.7.8 bad [redacted]"),
        (5, "[redacted]", "", 535, "5.7.8 bad [redacted] [redacted]"),
        (7, "NOOP", "ab my pass", 250, "2.0.0 ab my pass stay"),
    ]
    assert [kind for _, kind, _ in _anomalies(r)] == [
        "greeting_missing",
        "auth_midstream",
        "auth_midstream",
        "auth_midstream",
    ]


def test_a_capture_that_begins_mid_transaction_has_no_greeting() -> None:
    r = session(
        [
            (S, b"250 2.1.5 Ok\r\n"),
            (C, b"DATA\r\n"),
            (S, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
            (C, b"Subject: hi\r\n\r\nhello\r\n.\r\n"),
            (S, b"250 2.0.0 Ok: queued as 6B68AF9CA6\r\n"),
        ],
        port=587,
    )
    assert (r.session.greeting_code, r.session.greeting_text) == (None, None)
    assert _commands(r) == [
        (2, "DATA", "", 354, "End data with <CR><LF>.<CR><LF>"),
    ]
    # The 250 before DATA answered a command sent before the capture: it is
    # no reply_without_command, so no unsolicited_reply alert either.
    assert _anomalies(r) == [
        (1, "greeting_missing", "capture starts after the greeting"),
        (3, "message_without_mail", "DATA with no MAIL"),
    ]


def test_a_caught_connection_of_replies_alone_is_smtp() -> None:
    r = session([(S, b"250 2.1.5 Ok\r\n")])
    assert _anomalies(r) == [
        (1, "greeting_missing", "capture starts after the greeting")
    ]


def test_a_greeting_code_first_is_the_greeting_of_a_caught_connection() -> None:
    for line, code in ((b"220 mx.example ESMTP\r\n", 220), (b"554 go away\r\n", 554)):
        r = session([(S, line), (C, b"QUIT\r\n"), (S, b"221 Bye\r\n")])
        assert r.session.greeting_code == code
        assert _commands(r) == [(2, "QUIT", "", 221, "Bye")]
        assert _anomalies(r) == []


def test_the_first_reply_is_the_greeting_where_the_start_was_seen() -> None:
    # The server sent no 220; with the SYN in the capture nothing was
    # missed, so its first line stands as its greeting, as before.
    r = session(
        [(S, b"250 hello\r\n"), (C, b"QUIT\r\n"), (S, b"221 Bye\r\n")], start_seen=True
    )
    assert (r.session.greeting_code, r.session.greeting_text) == (250, "hello")


def test_a_forged_record_header_from_a_caught_client_hides_no_command() -> None:
    # Found in review: five bytes of a record's header, sent by the client
    # of a caught connection (one it had evicted under a flood, say), made
    # the rest TLS, and every command after them went unseen. The server's
    # first bytes decide: here a reply in clear text, so the client's bytes
    # are SMTP.
    forged = b"\x17\x03\x03\x00\x20"
    r = session(
        [
            (C, forged + b"MAIL FROM:<a@evil.example>\r\n"),
            (S, b"500 5.5.2 Error: bad syntax\r\n"),
            (C, b"RCPT TO:<x@victim.example>\r\n"),
            (S, b"250 2.1.5 Ok\r\n"),
            (C, b"QUIT\r\n"),
            (S, b"221 bye\r\n"),
        ]
    )
    assert _tls_columns(r) == ("none", None, "none", 0, 0, None, 3, 2)
    assert [c[1:4] for c in _commands(r)] == [
        ("\x17\x03\x03\x00", "MAIL FROM:<a@evil.example>", 500),
        ("RCPT", "TO:<x@victim.example>", 250),
        ("QUIT", "", 221),
    ]


def test_a_caught_client_s_records_wait_for_the_server_s_to_be_tls() -> None:
    # Two of the client's records come before the server's first: they are
    # held, and counted as TLS once the server's bytes are TLS too.
    r = session([(C, _record(500)), (C, _record(70)), (S, _record(30))])
    assert _tls_columns(r) == ("starttls", None, "none", 580, 35, None, 0, 0)
    assert (_commands(r), _anomalies(r)) == ([], [])


def test_a_forged_record_header_on_a_tls_port_hides_no_command_either() -> None:
    # Found in review: on an implicit-TLS port the client's five bytes alone
    # made a caught connection TLS, and a harvest at a server speaking clear
    # text there (plaintext_on_tls_port) left no command, no anomaly. Its
    # bytes wait for the server's first, as on a port where SMTP is due.
    forged = b"\x17\x03\x03\x00\x20"
    rcpts = b"".join(b"RCPT TO:<u%d@mx.example>\r\n" % i for i in range(3))
    r = session(
        [
            (C, forged + b"MAIL FROM:<a@evil.example>\r\n" + rcpts),
            (S, b"500 5.5.2 Error: bad syntax\r\n" + b"550 5.1.1 unknown\r\n" * 3),
        ],
        port=465,
    )
    assert _tls_columns(r)[:5] == ("none", None, "none", 0, 0)
    assert [c[1:4] for c in _commands(r)] == [
        ("\x17\x03\x03\x00", "MAIL FROM:<a@evil.example>", 500),
        ("RCPT", "TO:<u0@mx.example>", 550),
        ("RCPT", "TO:<u1@mx.example>", 550),
        ("RCPT", "TO:<u2@mx.example>", 550),
    ]
    assert (
        2,
        "plaintext_on_tls_port",
        "server began with: 500 5.5.2 Error: bad syntax\\r\\n550 5.1.1 u...",
    ) in _anomalies(r)
