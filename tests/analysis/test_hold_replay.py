"""Client bytes held behind DATA and AUTH, at sizes that once broke the replay.

A run of blocking commands past the hold limit (256 KiB) in one chunk made the
replay recurse once per command (RecursionError), and each reply to a long
pipeline re-held every segment still waiting (quadratic). The rows are those
the parser gave before, where it gave any.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from analysis.records import AnomalyRecord, CommandRecord, SessionResult
from analysis.smtp import parser as parser_module
from analysis.smtp.events import CommandSeen, MessageEnded, MessageStarted, SmtpEvent
from analysis.smtp.parser import SmtpParser
from capture.stream import Direction
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
    assert result.anomalies[-1].detail.startswith(
        "5006 unanswered: AUTH, AUTH answer, AUTH answer"
    )
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


def one_byte_segments(data: bytes) -> list[tuple[Direction, bytes]]:
    return [(C, data[i : i + 1]) for i in range(len(data))]


# A DATA sent with its message and the QUIT after it, none of it waiting
# for the 354 (found in review: held a tuple a segment, so 250 KB in one-byte
# segments took 30 MB).
ENVELOPE = [
    *OPENING,
    (C, b"MAIL FROM:<a@b.example>\r\n"),
    (S, b"250 ok\r\n"),
    (C, b"RCPT TO:<c@d.example>\r\n"),
    (S, b"250 ok\r\n"),
    (C, b"DATA\r\n"),  # step 8
]
MESSAGE = b"Subject: tiny\r\n\r\n" + (b"x" * 70 + b"\r\n") * 1000 + b".\r\n"


REPLIES = [(S, b"354 go\r\n"), (S, b"250 2.0.0 queued as A1\r\n"), (S, b"221 bye\r\n")]


def test_a_message_held_in_one_byte_segments_gives_the_rows_of_one_segment() -> None:
    held = MESSAGE + b"QUIT\r\n"
    whole = session([*ENVELOPE, (C, held), *REPLIES])
    apart = session([*ENVELOPE, *one_byte_segments(held), *REPLIES])

    # The QUIT is stamped with the segment that brought its LF, the last:
    # step 9 + 72,025. Everything else is as when the bytes came in one.
    n = len(held) - 1
    assert len(held) == 72_026
    assert [(c.verb, c.ts, c.reply_code, c.reply_ts) for c in whole.commands] == [
        ("EHLO", 2, 250, 3),
        ("MAIL", 4, 250, 5),
        ("RCPT", 6, 250, 7),
        ("DATA", 8, 354, 10),
        ("QUIT", 9, 221, 12),
    ]
    assert [(c.verb, c.ts, c.reply_code, c.reply_ts) for c in apart.commands] == [
        ("EHLO", 2, 250, 3),
        ("MAIL", 4, 250, 5),
        ("RCPT", 6, 250, 7),
        ("DATA", 8, 354, 10 + n),
        ("QUIT", 9 + n, 221, 12 + n),
    ]
    for result in (whole, apart):
        (txn,) = result.transactions
        assert (txn.status, txn.data_code, txn.queue_id) == ("accepted", 250, "A1")
        assert (txn.message_bytes, txn.subject, txn.message_complete) == (
            len(MESSAGE) - 3,  # without the ".\r\n"
            "tiny",
            True,
        )
        assert result.anomalies == []
        assert result.session.commands == 5
    assert (whole.transactions[0].end, apart.transactions[0].end) == (11, 11 + n)
    assert [replace(c, ts=0, reply_ts=0, latency_s=0) for c in whole.commands] == [
        replace(c, ts=0, reply_ts=0, latency_s=0) for c in apart.commands
    ]


def test_a_message_held_in_one_byte_segments_ends_with_the_segment_of_its_lf() -> None:
    held = MESSAGE + b"NOOP\r\n"
    parser = SmtpParser()
    events: list[SmtpEvent] = []
    ts = 0
    for side, data in [*ENVELOPE, *one_byte_segments(held)]:
        ts += 1
        events += (parser.feed_client if side == C else parser.feed_server)(data, ts)
    assert not [e for e in events if isinstance(e, MessageStarted)]
    events += parser.feed_server(b"354 go\r\n", ts + 1)

    # Replayed at the 354: the message ends at the segment of the LF of
    # ".\r\n", and the NOOP comes at the segment of its own LF.
    (ended,) = [e for e in events if isinstance(e, MessageEnded)]
    assert (ended.ts, ended.size, ended.complete) == (
        8 + len(MESSAGE),
        len(MESSAGE) - 3,
        True,
    )
    commands = [(e.verb, e.ts) for e in events if isinstance(e, CommandSeen)]
    assert commands[-2:] == [("DATA", 8), ("NOOP", 8 + len(held))]


def test_bytes_sent_before_the_220_to_starttls_are_counted_however_segmented() -> None:
    early = b"\x16\x03\x01\x00\x05hello" + b"NOOP\r\n" * 3
    steps = [*OPENING, (C, b"STARTTLS\r\n")]
    tail = [(S, b"220 go ahead\r\n")]
    whole = session([*steps, (C, early), *tail])
    apart = session([*steps, *one_byte_segments(early), *tail])
    for result in (whole, apart):
        injected = [
            a for a in result.anomalies if a.kind == "starttls_client_injection"
        ]
        assert [a.detail for a in injected] == [
            "28 bytes before the 220: "
            "\\x16\\x03\\x01\\x00\\x05[redacted]\\r\\nNOOP\\r\\nNOOP\\r\\n"
        ]
        assert [c.verb for c in result.commands] == ["EHLO", "STARTTLS"]
    assert [a.ts for a in whole.anomalies] == [6]
    assert [a.ts for a in apart.anomalies] == [5 + len(early)]
    assert [replace(a, ts=0) for a in whole.anomalies] == [
        replace(a, ts=0) for a in apart.anomalies
    ]


def test_segments_past_the_held_runs_cap_take_the_time_of_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each run of held bytes keeps a time; past MAX_HELD_RUNS a segment
    # joins the last run, and the lines in it take its latest time.
    monkeypatch.setattr(parser_module, "MAX_HELD_RUNS", 3)
    steps = [*ENVELOPE, *[(C, b"NOOP\r\n")] * 5, (S, b"554 no valid recipients\r\n")]
    steps += [(S, b"250 ok\r\n")] * 5
    result = session(steps)
    assert [(c.verb, c.ts, c.reply_code) for c in result.commands[3:]] == [
        ("DATA", 8, 554),
        ("NOOP", 9, 250),
        ("NOOP", 10, 250),
        ("NOOP", 13, 250),
        ("NOOP", 13, 250),
        ("NOOP", 13, 250),
    ]
    assert [a.kind for a in result.anomalies] == []
