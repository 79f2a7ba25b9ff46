"""Which AUTH refusals the detectors take for password guessing.

Only failed logins (535) feed the AUTH detectors; mechanisms the server
lacks, refusals that judged no password and cancels count nowhere, and
base64 the server cannot decode, over and over, is syntax_errors. The
replies are aiosmtpd's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.detect import detect
from analysis.tables import read_captures
from capture.stream import Direction
from tests.analysis.conversation import C, S, session
from tests.analysis.test_auth_outcomes import (
    _ABORTED,
    _HELLO,
    _INVALID,
    _NOT_OFFERED,
    _QUIT,
    _plain,
)

# Twelve AUTHs in one session, each answered: more than the brute-force
# threshold (10 in 10 min) and the syntax-errors one (10 in 5 min).
_TIMES = 12


def _alert_kinds(steps: list[tuple[Direction, bytes]]) -> list[str]:
    result = session([*_HELLO, *steps * _TIMES, *_QUIT])
    return sorted(alert.kind for alert in detect([result]))


def test_failed_logins_are_brute_force() -> None:
    steps = [(C, _plain(b"bob", b"pw") + b"\r\n"), (S, _INVALID)]
    assert _alert_kinds(steps) == ["auth_brute_force"]


@pytest.mark.parametrize(
    "reply",
    [
        _NOT_OFFERED,
        b"538 5.7.11 Encryption required for requested authentication\r\n",
        b"454 4.7.0 Temporary authentication failure\r\n",
    ],
)
def test_refusals_that_judged_no_password_are_no_guessing(reply: bytes) -> None:
    assert _alert_kinds([(C, _plain(b"bob", b"pw") + b"\r\n"), (S, reply)]) == []


def test_cycling_through_mechanisms_the_server_lacks_raises_nothing() -> None:
    steps = [
        (C, b"AUTH CRAM-MD5\r\n"),
        (S, _NOT_OFFERED),
        (C, b"AUTH DIGEST-MD5\r\n"),
        (S, _NOT_OFFERED),
    ]
    assert _alert_kinds(steps) == []


def test_cancelled_exchanges_raise_nothing() -> None:
    steps = [
        (C, b"AUTH LOGIN\r\n"),
        (S, b"334 VXNlcm5hbWU6\r\n"),
        (C, b"*\r\n"),
        (S, _ABORTED),
    ]
    assert _alert_kinds(steps) == []


def test_bad_base64_over_and_over_is_syntax_errors_not_brute_force() -> None:
    steps = [
        (C, b"AUTH PLAIN\r\n"),
        (S, b"334 \r\n"),
        (C, b"not base64!\r\n"),
        (S, b"501 5.5.2 Can't decode base64\r\n"),
    ]
    assert _alert_kinds(steps) == ["syntax_errors"]


def test_the_bench_writes_refused_auths_from_clients_in_turn(tmp_path: Path) -> None:
    # bench/make_flood.py --auth-clients, the shape whose refusals wait per
    # client in the windows (bench/README.md): 4 sessions from 2 clients, 5
    # AUTH PLAIN refused for their credentials in each.
    capture = tmp_path / "auth.pcap"
    make = [sys.executable, str(Path(__file__).parents[2] / "bench" / "make_flood.py")]
    options = ["--auth-clients", "2", "--sessions", "4", "--span", "4"]
    subprocess.run([*make, *options, str(capture)], check=True, capture_output=True)
    tables = read_captures(capture)
    sessions = tables.sessions[["client_ip", "auth_user"]].to_dict("records")
    assert (
        sessions
        == [
            {"client_ip": "198.18.0.0", "auth_user": "user0"},
            {"client_ip": "198.18.0.1", "auth_user": "user1"},
        ]
        * 2
    )
    auths = tables.commands[tables.commands["verb"] == "AUTH"]
    assert auths["argument"].tolist() == ["PLAIN [redacted]"] * 20
    assert set(auths["reply_enhanced"]) == {"5.7.8"}
    for table in (tables.sessions, tables.commands, tables.alerts):
        assert "guess" not in table.to_csv()  # the passwords tried
    alerts = tables.alerts[["kind", "client_ip", "count", "sessions"]]
    assert alerts.to_dict("records") == [
        {"kind": "auth_brute_force", "client_ip": c, "count": 10, "sessions": 2}
        for c in ("198.18.0.0", "198.18.0.1")
    ]
