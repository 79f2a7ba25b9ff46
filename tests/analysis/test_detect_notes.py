"""Notes in alerts stay short however many a client makes (found in review:
3,000 sessions each naming two long HELO names held 618 MB, and one
helo_changed alert's summary was 96 MB)."""

from __future__ import annotations

import dataclasses

import pytest

from analysis.detect import AlertEngine, default_rules
from analysis.detect.alert import Alert
from analysis.records import SessionResult
from tests.analysis.conversation import C, S, session


def _named(names: list[bytes]) -> SessionResult:
    steps = [(S, b"220 mx.example ESMTP\r\n")]
    for name in names:
        steps += [(C, b"EHLO " + name + b"\r\n"), (S, b"250 mx.example\r\n")]
    return session(steps)


def _alerts(results: list[SessionResult]) -> list[Alert]:
    engine = AlertEngine(default_rules())
    alerts = []
    for result in results:
        alerts += engine.feed_evidence(result.session.start, engine.evidence(result))
    return [a for a in alerts + engine.finish() if a.kind == "helo_changed"]


def test_a_session_of_many_helo_names_notes_ten_each_cut_short() -> None:
    names = [b"h%d.example" % n for n in range(11)] + [b"x" * 150 + b".example"]
    (alert,) = _alerts([_named(names)])
    shown = ", ".join(f"h{n}.example" for n in range(10))
    assert f"({shown}, 2 more)" in alert.summary


def test_an_alert_keeps_twenty_notes_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from analysis.detect import window

    monkeypatch.setattr(window, "MAX_TALLY_NOTES", 2)
    results = []
    for n in range(5):
        result = _named([b"a%d.example" % n, b"b%d.example" % n])
        at = dataclasses.replace(result.session, start=n, session_id=f"S{n}")
        results.append(dataclasses.replace(result, session=at))
    (alert,) = _alerts(results)
    assert alert.count == 5
    assert (
        "(a0.example, b0.example, a1.example, b1.example, 3 more hits with other notes)"
        in (alert.summary)
    )


def test_the_note_quotes_each_name_as_first_sent() -> None:
    # Reported by a new user: the note lower-cased the names it quotes. A
    # name that differs only in case (or a final dot) is no change.
    (alert,) = _alerts([_named([b"Mail.Example.", b"mail.example", b"BOT"])])
    assert "(Mail.Example., BOT)" in alert.summary


def test_a_name_that_lowers_to_another_only_beyond_ascii_is_another() -> None:
    # Found in review: the Kelvin sign (U+212A) lower-cases to "k", so a
    # client switching between these two names raised no helo_changed.
    (alert,) = _alerts([_named(["\u212ax.example".encode(), b"kx.example"])])
    assert alert.summary == (
        "192.0.2.1 changed its HELO name within a session in 1 session(s) "
        "(\u212ax.example, kx.example)."
    )
    assert _alerts([_named([b"KX.Example.", b"kx.example"])]) == []
