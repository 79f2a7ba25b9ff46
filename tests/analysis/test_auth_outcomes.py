"""What a session row and the detectors make of AUTH replies (RFC 4954).

The session row's auth_mechanism, auth_user and auth_result tell of one
AUTH; a failure is a failed login (535), the other refusals are counted
apart. The replies are aiosmtpd's, as a mail administrator saw them on
loopback (tests/analysis/test_detect_auth_refusals.py: what the detectors
make of them).
"""

from __future__ import annotations

import base64

import pytest

from analysis.records import SessionRecord
from analysis.smtp import auth
from capture.stream import Direction
from tests.analysis.conversation import C, S, session

_HELLO = [
    (S, b"220 mx ESMTP\r\n"),
    (C, b"EHLO c\r\n"),
    (S, b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n"),
]
_QUIT = [(C, b"QUIT\r\n"), (S, b"221 bye\r\n")]
_NOT_OFFERED = b"504 5.5.4 Unrecognized authentication type\r\n"
_INVALID = b"535 5.7.8 Authentication credentials invalid\r\n"
_ABORTED = b"501 5.7.0 Auth aborted\r\n"


def _plain(user: bytes, password: bytes) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password)


def _auth_columns(s: SessionRecord) -> tuple[object, ...]:
    return (
        s.auth_mechanism,
        s.auth_user,
        s.auth_result,
        s.auth_attempts,
        s.auth_successes,
        s.auth_failures,
        s.auth_other_refusals,
    )


def test_two_mechanisms_the_server_lacks_are_no_failed_login() -> None:
    # Reported: PLAIN for bob answered 504, then CRAM-MD5 answered 504, read
    # "CRAM-MD5, bob, failure" with 2 failures: as if bob failed CRAM-MD5.
    result = session(
        [
            *_HELLO,
            (C, _plain(b"bob", b"nope") + b"\r\n"),
            (S, _NOT_OFFERED),
            (C, b"AUTH CRAM-MD5\r\n"),
            (S, _NOT_OFFERED),
            *_QUIT,
        ]
    )
    assert _auth_columns(result.session) == ("CRAM-MD5", None, "refused", 2, 0, 0, 2)
    assert b"nope" not in repr(result).encode()


def test_a_cancelled_login_after_a_failed_one_leaves_the_failure_shown() -> None:
    # Reported: PLAIN for eve answered 535, then LOGIN cancelled with "*",
    # read "LOGIN, eve, cancelled", though LOGIN never revealed a user.
    result = session(
        [
            *_HELLO,
            (C, _plain(b"eve", b"guess1") + b"\r\n"),
            (S, _INVALID),
            (C, b"AUTH LOGIN\r\n"),
            (S, b"334 VXNlcm5hbWU6\r\n"),
            (C, b"*\r\n"),
            (S, _ABORTED),
            *_QUIT,
        ]
    )
    assert _auth_columns(result.session) == ("PLAIN", "eve", "failure", 2, 0, 1, 0)
    assert [(c.verb, c.reply_code) for c in result.commands] == [
        ("EHLO", 250), ("AUTH", 535), ("AUTH", 501), ("QUIT", 221),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "result", "failures", "others"),
    [
        (b"235 2.7.0 Authentication successful", "success", 0, 0),
        (b"535 5.7.8 Authentication credentials invalid", "failure", 1, 0),
        (b"535 Incorrect authentication data", "failure", 1, 0),  # Exim
        (b"554 5.7.8 Error: authentication failed", "failure", 1, 0),
        (b"504 5.5.4 Unrecognized authentication type", "refused", 0, 1),
        (b"534 5.7.9 Authentication mechanism is too weak", "refused", 0, 1),
        (
            b"538 5.7.11 Encryption required for requested authentication",
            "refused",
            0,
            1,
        ),
        (b"454 4.7.0 Temporary authentication failure", "refused", 0, 1),
        (b"432 4.7.12 A password transition is needed", "refused", 0, 1),
        (b"500 5.5.6 Authentication Exchange line is too long", "refused", 0, 1),
        (b"501 5.5.2 Can't decode base64", "refused", 0, 1),
        (b"503 5.5.1 Error: authentication not enabled", "refused", 0, 1),
        (b"530 5.7.0 Must issue a STARTTLS command first", "refused", 0, 1),
        (b"550 5.7.1 Access denied", "refused", 0, 1),
    ],
)
def test_only_a_verdict_on_the_credentials_is_a_failure(
    reply: bytes, result: str, failures: int, others: int
) -> None:
    s = session(
        [*_HELLO, (C, _plain(b"bob", b"pw") + b"\r\n"), (S, reply + b"\r\n")]
    ).session
    successes = int(result == "success")
    assert _auth_columns(s) == ("PLAIN", "bob", result, 1, successes, failures, others)


def test_a_cancel_the_server_answers_535_is_a_failure_as_the_detectors_count_it() -> (
    None
):
    s = session(
        [
            *_HELLO,
            (C, b"AUTH LOGIN\r\n"),
            (S, b"334 VXNlcm5hbWU6\r\n"),
            (C, b"*\r\n"),
            (S, _INVALID),
        ]
    ).session
    assert _auth_columns(s) == ("LOGIN", None, "failure", 1, 0, 1, 0)


def test_the_login_username_belongs_to_its_own_auth() -> None:
    s = session(
        [
            *_HELLO,
            (C, b"AUTH LOGIN\r\n"),
            (S, b"334 VXNlcm5hbWU6\r\n"),
            (C, base64.b64encode(b"carol") + b"\r\n"),
            (S, b"334 UGFzc3dvcmQ6\r\n"),
            (C, base64.b64encode(b"wrong") + b"\r\n"),
            (S, _INVALID),
            (C, b"AUTH CRAM-MD5\r\n"),
            (S, _NOT_OFFERED),
        ]
    ).session
    assert _auth_columns(s) == ("LOGIN", "carol", "failure", 2, 0, 1, 1)


def test_the_accepted_auth_is_the_one_shown_whatever_came_before_or_after() -> None:
    s = session(
        [
            *_HELLO,
            (C, _plain(b"eve", b"guess1") + b"\r\n"),
            (S, _INVALID),
            (C, _plain(b"alice", b"right") + b"\r\n"),
            (S, b"235 2.7.0 Authentication successful\r\n"),
            (C, b"AUTH CRAM-MD5\r\n"),
            (S, b"503 Already authenticated\r\n"),
            *_QUIT,
        ]
    ).session
    assert _auth_columns(s) == ("PLAIN", "alice", "success", 3, 1, 1, 1)


def test_of_refusals_cancels_and_silence_the_last_is_shown() -> None:
    # A PLAIN for bob refused (538), then a LOGIN the capture never saw
    # answered: the row tells of the LOGIN, without bob.
    s = session(
        [
            *_HELLO,
            (C, _plain(b"bob", b"pw") + b"\r\n"),
            (S, b"538 5.7.11 Encryption required for requested authentication\r\n"),
            (C, b"AUTH LOGIN\r\n"),
        ]
    ).session
    assert _auth_columns(s) == ("LOGIN", None, "no_reply", 2, 0, 0, 1)


def test_a_failure_stays_shown_over_a_later_unanswered_auth() -> None:
    s = session(
        [
            *_HELLO,
            (C, _plain(b"eve", b"guess1") + b"\r\n"),
            (S, _INVALID),
            (C, b"AUTH LOGIN\r\n"),
        ]
    ).session
    assert _auth_columns(s) == ("PLAIN", "eve", "failure", 2, 0, 1, 0)


def test_outcome_reads_the_code_and_the_enhanced_code() -> None:
    assert auth.outcome(235, "2.7.0") == auth.SUCCESS
    assert auth.outcome(535, None) == auth.FAILURE
    assert auth.outcome(454, "4.7.8") == auth.FAILURE
    assert auth.outcome(504, "5.5.4") == auth.REFUSED
    assert auth.outcome(501, None) == auth.REFUSED


def test_an_outcome_of_an_auth_before_the_capture_counts_one_attempt() -> None:
    # Reported by a new user: a capture cut inside AUTH LOGIN read an empty
    # mechanism, 0 attempts and 1 success (aiosmtpd's prompts).
    result = session(
        [
            (S, b"334 VXNlciBOYW1lAA==\r\n"),
            (C, base64.b64encode(b"alice") + b"\r\n"),
            (S, b"334 UGFzc3dvcmQA\r\n"),
            (C, base64.b64encode(b"hunter2hunter2") + b"\r\n"),
            (S, b"235 2.7.0 Authentication successful\r\n"),
            *_QUIT,
        ]
    )
    assert _auth_columns(result.session) == (None, None, "success", 1, 1, 0, 0)
    assert [(c.verb, c.argument, c.reply_code) for c in result.commands] == [
        ("[redacted]", "", 235),
        ("QUIT", "", 221),
    ]


def test_a_challenge_before_the_capture_then_a_refusal_counts_one_attempt() -> None:
    # The capture begins with the server's 334 (its username prompt); the
    # client's username and password follow, and the server refuses them.
    result = session(
        [
            (S, b"334 UGFzc3dvcmQ6\r\n"),
            (C, base64.b64encode(b"hunter2hunter2") + b"\r\n"),
            (S, _INVALID),
            *_QUIT,
        ]
    )
    assert _auth_columns(result.session) == (None, None, "failure", 1, 0, 1, 0)


def test_an_auth_without_a_mechanism_names_none() -> None:
    result = session([*_HELLO, (C, b"AUTH\r\n"), (S, b"501 5.5.4 Syntax\r\n"), *_QUIT])
    assert _auth_columns(result.session) == (None, None, "refused", 1, 0, 0, 1)


def _cram(response: bytes) -> list[tuple[Direction, bytes]]:
    return [
        *_HELLO,
        (C, b"AUTH CRAM-MD5\r\n"),
        (S, b"334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n"),
        (C, base64.b64encode(response) + b"\r\n"),
        (S, _INVALID),
        *_QUIT,
    ]


def test_a_cram_md5_response_names_its_user_and_keeps_no_digest() -> None:
    # A new user's point: the name is sent in the clear (RFC 2195 2's
    # example response); the digest, from which a password may be guessed,
    # is withheld like any SASL answer.
    response = b"tim b913a602c7eda7a495b4e6e7334d3890"
    result = session(_cram(response))
    assert _auth_columns(result.session) == ("CRAM-MD5", "tim", "failure", 1, 0, 1, 0)
    shown = repr(result)
    assert "b913a602" not in shown
    assert base64.b64encode(response).decode() not in shown


@pytest.mark.parametrize(
    "response",
    [b"hunter2hunter2", b"tim b913a602", b" b913a602c7eda7a495b4e6e7334d3890"],
)
def test_a_cram_md5_response_of_another_shape_names_nobody(response: bytes) -> None:
    result = session(_cram(response))
    assert _auth_columns(result.session) == ("CRAM-MD5", None, "failure", 1, 0, 1, 0)
    assert b"hunter2" not in repr(result).encode()


def test_a_line_answered_535_later_in_a_session_is_no_attempt() -> None:
    # Found in review: a one-word line after a failed PLAIN for alice, which
    # the server answered 535, counted a second attempt and blanked alice
    # from the row, hiding her from the per-user AUTH detectors. Only a
    # capture's first line can answer an exchange the capture missed.
    result = session(
        [
            *_HELLO,
            (C, _plain(b"alice", b"guess1") + b"\r\n"),
            (S, _INVALID),
            (C, b"Zm9vYmFy\r\n"),
            (S, _INVALID),
            (C, b"XYZZY\r\n"),
            (S, b"235 2.7.0 ok\r\n"),
            *_QUIT,
        ]
    )
    assert _auth_columns(result.session) == ("PLAIN", "alice", "failure", 1, 0, 1, 0)
    assert [(c.verb, c.argument, c.reply_code) for c in result.commands] == [
        ("EHLO", "c", 250),
        ("AUTH", "PLAIN [redacted]", 535),
        ("[redacted]", "", 535),
        ("[redacted]", "", 235),
        ("QUIT", "", 221),
    ]
