"""Client bytes held behind DATA and AUTH, at sizes that once broke the replay.

A run of blocking commands past the hold limit (256 KiB) in one chunk made the
replay recurse once per command (RecursionError), and each reply to a long
pipeline re-held every segment still waiting (quadratic). The rows are those
the parser gave before, where it gave any.
"""

from __future__ import annotations

from collections import Counter

from analysis.records import AnomalyRecord, CommandRecord, SessionResult
from tests.analysis.conversation import C, S, session

OPENING = [(S, b"220 mx\r\n"), (C, b"EHLO x\r\n"), (S, b"250 mx\r\n")]


def anomaly_kinds(result: SessionResult) -> Counter[str]:
    return Counter(a.kind for a in result.anomalies)


def test_data_runs_past_the_hold_limit_in_one_chunk() -> None:
    # 300 KiB of "DATA\r\n.\r\n", as the reassembler hands over a filled hole.
    result = session([*OPENING, (C, b"DATA\r\n.\r\n" * (300 * 1024 // 9))])

    # The first DATA blocks with 307,191 bytes behind it. While the held
    # bytes are past the limit the reply is taken as lost, the DATA as
    # accepted, and ".\r\nDATA\r\n" (9 bytes) leads to the next DATA:
    # 5,006 times, until 262,137 bytes are left. Closing releases them once
    # more, and one further DATA blocks: the rest is never parsed.
    assert len(result.commands) == 1 + 1 + 5006 + 1
    assert anomaly_kinds(result) == {
        "reply_missing": 20,  # capped per kind by the parser
        "message_without_mail": 100,  # and by the session
        "no_reply": 1,
    }
    first, second, last = result.commands[1], result.commands[2], result.commands[-1]
    assert (first.verb, first.ts, first.reply_code, first.pipelined) == (
        "DATA",
        4,
        None,
        False,
    )
    assert (second.verb, second.ts, second.pipelined) == ("DATA", 4, True)
    assert (last.verb, last.ts, last.pipelined) == ("DATA", 4, True)
    assert result.anomalies[0] == AnomalyRecord(
        result.session.session_id,
        4,
        "reply_missing",
        "client went on without the reply",
    )
    assert result.anomalies[-1].detail.startswith("10015 unanswered: DATA, ., DATA")
    assert result.session.commands == 5009


def test_auth_runs_past_the_hold_limit_in_one_chunk() -> None:
    run = b"AUTH LOGIN\r\neA==\r\n" * (300 * 1024 // 18)
    result = session([*OPENING, (C, run)])

    # The first AUTH is taken as answered by 334; every line after it is
    # an answer to the exchange, so no password becomes a command row.
    # Each answer awaits a reply (5,005 of them before the bytes left fit
    # under the limit, one more at close), as the AUTH itself does.
    assert [c.verb for c in result.commands] == ["EHLO", "AUTH"]
    sid = result.session.session_id
    assert result.commands[1] == CommandRecord(sid, 4, "AUTH", "LOGIN")
    assert anomaly_kinds(result) == {
        "auth_cleartext": 1,
        "reply_missing": 20,
        "no_reply": 1,
    }
    assert result.anomalies[-1].detail.startswith("5006 unanswered: AUTH, AUTH")
    assert (result.session.auth_result, result.session.auth_user) == (
        "no_reply",
        None,
    )


def test_pipelined_data_in_one_byte_segments_each_refused() -> None:
    count = 16 * 1024 // 6
    steps = [*OPENING]
    steps += [(C, bytes([byte])) for byte in b"DATA\r\n" * count]
    steps += [(S, b"554 5.5.1 no valid recipients\r\n" * count)]
    steps += [(C, b"QUIT\r\n"), (S, b"221 bye\r\n")]
    result = session(steps)

    # Held segments keep their own times: each DATA is stamped with the
    # segment that brought its LF, six steps after the one before.
    data = result.commands[1:-1]
    assert len(data) == count
    assert [c.ts for c in data[:3]] == [9, 15, 21]
    assert data[-1].ts == 3 + 6 * count
    assert {(c.verb, c.reply_code, c.reply_ts, c.pipelined) for c in data} == {
        ("DATA", 554, 4 + 6 * count, False)
    }
    assert data[0].reply_enhanced == "5.5.1"
    quit_ = result.commands[-1]
    assert (quit_.verb, quit_.reply_code) == ("QUIT", 221)
    assert result.anomalies == []
    assert result.transactions == []
