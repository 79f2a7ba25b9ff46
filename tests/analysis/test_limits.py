"""Bounds that keep one hostile input from flooding memory or the tables."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from analysis import session as session_module
from analysis.pipeline import SessionTracker
from analysis.session import MAX_ANOMALIES_PER_KIND, MAX_COMMAND_ROWS, SessionBuilder
from analysis.smtp.events import MessageEnded
from analysis.smtp.parser import MAX_PENDING, SmtpParser
from analysis.tls import decrypt
from capture.decode import SYN
from capture.reassembly import Reassembler
from capture.stream import Connection, Direction
from tests.analysis.conversation import C, S, session


def test_anomalies_of_one_kind_are_capped_per_session() -> None:
    conn = Connection(0, "192.0.2.1", 40000, "192.0.2.2", 25, first_ts=1)
    builder = SessionBuilder(conn, frozenset({465}))
    for i in range(MAX_ANOMALIES_PER_KIND + 50):
        builder.gap(Direction.CLIENT, 10, i)
    result = builder.close(1000, "fin")
    gaps = [a for a in result.anomalies if a.kind == "tcp_gap"]
    assert len(gaps) == MAX_ANOMALIES_PER_KIND
    assert gaps[-1].detail.endswith("(further tcp_gap not recorded)")
    # The session still counts every gap.
    assert result.session.gaps == MAX_ANOMALIES_PER_KIND + 50


def test_an_overlong_key_log_is_refused_before_tshark_runs(tmp_path: Path) -> None:
    keylog = tmp_path / "huge.keylog"
    line = "CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\n"
    keylog.write_text(line * (decrypt.MAX_KEYLOG_LINES + 1))
    with pytest.raises(decrypt.DecryptError, match="more than"):
        decrypt._check_keylog_size(str(keylog))
    keylog.write_text(line * 10)
    decrypt._check_keylog_size(str(keylog))


def test_a_key_log_without_newlines_is_refused_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted line by line, /dev/zero or a large file with no newline was
    # read whole into memory: a MemoryError traceback (found in review).
    monkeypatch.setattr(decrypt, "MAX_KEYLOG_BYTES", 3 << 20)
    keylog = tmp_path / "zeros.keylog"
    keylog.write_bytes(b"\0" * (3 << 20))
    decrypt._check_keylog_size(str(keylog))
    keylog.write_bytes(b"\0" * ((3 << 20) + 1))
    with pytest.raises(decrypt.DecryptError, match="larger than 3145728 bytes"):
        decrypt._check_keylog_size(str(keylog))
    assert not decrypt.is_keylog(str(keylog))
    keylog.write_bytes(b"\0" * 100 + b"\nCLIENT_RANDOM 00 11\n")
    assert decrypt.is_keylog(str(keylog))


def test_a_connection_that_sends_nothing_costs_little_memory() -> None:
    # A SYN flood or port scan on port 25 opens a connection per SYN, each
    # held until the attempt timeout: its reassembly state, parser and
    # session builder must stay small. 6.0 KB each before the parser and
    # builder lost their instance dicts and empty queues; 3.1 KB after;
    # 1.4 KB since the builder waits for the connection's first byte.
    reassembler = Reassembler(frozenset({25}))
    tracker = SessionTracker()
    count = 5000
    segments = [
        ((f"10.1.{i >> 8}.{i & 255}", "10.0.0.1", 1024 + i, 25), 1000, 0, SYN, b"", 0)
        for i in range(count)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, segment in enumerate(segments):
            for event in reassembler.feed(1_700_000_000 * 10**9 + i, segment):
                tracker.handle(event)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert tracker.open_sessions == count
    assert held / count < 1600


def test_command_rows_are_capped_per_session_and_commands_still_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bare LF is an empty command: 1 MiB of them gave a million rows and
    # 680 MiB. Past the cap only what the detectors read keeps a row, so
    # that padding hides no AUTH failure or RCPT from them; the rest is
    # counted and followed to its reply, which may settle a transaction.
    monkeypatch.setattr(session_module, "MAX_COMMAND_ROWS", 3)
    result = session(
        [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO a\r\n"),
            (S, b"250 mx\r\n"),
            (C, b"NOOP\r\n\n"),  # the bare LF: the cap's third row
            (S, b"250 ok\r\n500 what\r\n"),
            (C, b"NOOP\r\nAUTH PLAIN AGZha2UAZmFrZQ==\r\n"),  # fake credentials
            (S, b"250 ok\r\n535 5.7.8 no\r\n"),
            (C, b"MAIL FROM:<a@example.org>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"RCPT TO:<b@example.net>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"DATA\r\n"),  # no row, yet its reply is followed
            (S, b"354 go\r\n"),
            (C, b"Subject: hi\r\n\r\nbody\r\n.\r\n"),
            (S, b"250 queued as 4A\r\n"),
            (C, b"QUIT\r\nNOOP\r\nNOOP\r\n"),  # the first after QUIT keeps one
        ]
    )
    assert [(c.verb, c.argument, c.reply_code) for c in result.commands] == [
        ("EHLO", "a", 250),
        ("NOOP", "", 250),
        ("", "", 500),
        ("AUTH", "PLAIN [redacted]", 535),
        ("MAIL", "FROM:<a@example.org>", 250),
        ("RCPT", "TO:<b@example.net>", 250),
        ("QUIT", "", None),
        ("NOOP", "", None),
    ]
    assert result.session.commands == 11
    assert (result.session.auth_attempts, result.session.auth_failures) == (1, 1)
    [txn] = result.transactions
    assert (txn.mail_from, txn.rcpt_to, txn.rcpt_codes) == (
        "a@example.org",
        ["b@example.net"],
        [250],
    )
    assert (txn.status, txn.data_code, txn.subject) == ("accepted", 250, "hi")
    capped = [a for a in result.anomalies if a.kind == "command_rows_capped"]
    assert [(a.ts, a.detail) for a in capped] == [
        (
            6,
            "past 3 commands only those the detectors read get a row (AUTH, "
            "MAIL, RCPT, HELO, EHLO, LHLO, QUIT, the command after a QUIT, the "
            "first pipelined command after a HELO); the others are counted in "
            "the session",
        )
    ]


def test_padding_hides_no_unoffered_pipelining(monkeypatch: pytest.MonkeyPatch) -> None:
    # The protocol detector reads the first pipelined command after each
    # HELO: past the cap that one keeps its row, the ones after it do not.
    monkeypatch.setattr(session_module, "MAX_COMMAND_ROWS", 2)
    result = session(
        [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO a\r\n"),
            (S, b"250 mx\r\n"),  # no PIPELINING offered
            (C, b"NOOP\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"NOOP\r\n"),  # past the cap: no row
            (S, b"250 ok\r\n"),
            (C, b"RSET\r\nNOOP\r\nNOOP\r\n"),  # both NOOPs pipelined
            (S, b"250 ok\r\n250 ok\r\n250 ok\r\n"),
            (C, b"EHLO b\r\nNOOP\r\n"),  # a HELO: the next first one again
            (S, b"250 mx\r\n250 ok\r\n"),
        ]
    )
    assert [(c.verb, c.argument, c.pipelined) for c in result.commands] == [
        ("EHLO", "a", False),
        ("NOOP", "", False),
        ("NOOP", "", True),
        ("EHLO", "b", False),
        ("NOOP", "", True),
    ]
    assert result.session.commands == 8


def test_past_the_hard_cap_no_command_gets_a_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # QUIT and the command after it keep rows past the first cap: "QUIT\n\n"
    # repeated would otherwise give a row per 2.5 bytes again.
    monkeypatch.setattr(session_module, "MAX_COMMAND_ROWS", 2)
    monkeypatch.setattr(session_module, "MAX_KEPT_ROWS", 5)
    result = session(
        [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"NOOP\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"NOOP\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"NOOP\r\n"),  # past the first cap, read by no detector
            (S, b"250 ok\r\n"),
            (C, b"QUIT\n\nQUIT\n\nQUIT\n\n"),
        ]
    )
    assert [c.verb for c in result.commands] == ["NOOP", "NOOP", "QUIT", "", "QUIT"]
    assert result.session.commands == 9
    capped = [a for a in result.anomalies if a.kind == "command_rows_capped"]
    assert [(a.ts, a.detail[:40]) for a in capped] == [
        (6, "past 2 commands only those the detectors"),
        (8, "past 5 rows no command gets one; all are"),
    ]


def test_commands_past_the_cap_that_get_no_reply_are_let_go() -> None:
    # A flood of commands the server never answers: past the row cap only
    # those the parser still waits for are held.
    conn = Connection(0, "192.0.2.1", 40000, "192.0.2.2", 25, first_ts=1)
    builder = SessionBuilder(conn, frozenset({465}))
    builder.data(Direction.SERVER, b"220 mx\r\n", 1)
    flood = MAX_COMMAND_ROWS + MAX_PENDING + 100
    builder.data(Direction.CLIENT, b"\n" * flood, 2)
    assert len(builder.commands) == MAX_COMMAND_ROWS
    assert builder._unkept is not None and len(builder._unkept) == MAX_PENDING
    result = builder.close(3, "fin")
    assert result.session.commands == flood
    assert len(result.commands) == MAX_COMMAND_ROWS


def test_a_command_without_a_row_keeps_little_of_a_long_argument() -> None:
    # It waits only for its reply: 60,000 unanswered 16 KB NOOPs past the
    # cap held 1.2 GB, their whole lines kept for rows that never come (a
    # NOOP now holds nothing at all: see the test below).
    conn = Connection(0, "192.0.2.1", 40000, "192.0.2.2", 25, first_ts=1)
    builder = SessionBuilder(conn, frozenset({465}))
    builder.data(Direction.SERVER, b"220 mx\r\n", 1)
    builder.data(Direction.CLIENT, b"\n" * MAX_COMMAND_ROWS, 2)
    builder.data(Direction.CLIENT, b"DATA " + b"x" * 10_000 + b"\r\n", 3)
    assert builder._unkept is not None
    assert [(row.verb, row.argument) for row in builder._unkept.values()] == [
        ("DATA", "x" * 256 + "... [10,000 characters]"),
    ]


def test_a_long_argument_held_without_a_row_still_settles_what_it_should(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a reply reads of a command without a row: a BDAT's chunk (valid
    # with any amount of space before LAST, invalid cut or whole) and an
    # accepted HELO name, which the session shows cut as a row would.
    monkeypatch.setattr(session_module, "MAX_COMMAND_ROWS", 1)
    monkeypatch.setattr(session_module, "MAX_KEPT_ROWS", 4)
    name = "h" * 300
    result = session(
        [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO a\r\n"),
            (S, b"250-mx\r\n250 CHUNKING\r\n"),
            (C, b"MAIL FROM:<a@example.org>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"RCPT TO:<b@example.net>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"BDAT 2 " + b" " * 300 + b"LAST\r\nhi"),  # no row: past the caps
            (S, b"250 queued as 4A\r\n"),
            (C, b"MAIL FROM:<c@example.org>\r\n"),  # the fourth row
            (S, b"250 ok\r\n"),
            (C, b"BDAT 2 " + b"x" * 300 + b"\r\n"),  # invalid: no chunk follows
            (S, b"501 5.5.4 bad syntax\r\n"),
            (C, b"EHLO " + name.encode() + b"\r\n"),
            (S, b"250 mx\r\n"),
        ]
    )
    assert [c.verb for c in result.commands] == ["EHLO", "MAIL", "RCPT", "MAIL"]
    # The invalid BDAT is refused as one, with no chunk (a valid one would
    # have taken 2 bytes of the EHLO after it): recorded as a refused DATA
    # is, which the EHLO after it leaves rejected (README, transactions).
    assert [
        (t.mail_from, t.status, t.data_method, t.data_code, t.message_bytes)
        for t in result.transactions
    ] == [
        ("a@example.org", "accepted", "BDAT", 250, 2),
        ("c@example.org", "rejected", "BDAT", 501, None),
    ]
    assert result.session.helo == name[:256] + "... [300 characters]"
    assert result.session.commands == 7


def test_answers_about_long_reply_texts_are_not_cached() -> None:
    # Caches of whole EHLO replies and greetings (servers repeat theirs)
    # held what the capture held when each of 200 sessions sent a distinct
    # 1 MB one: 449 MB for 214 MB. Long texts are answered uncached, and a
    # greeting is cached by its first word.
    from analysis import downgrade
    from analysis.detect import facts, protocol

    long_lines = tuple(f"X-{i:06d} " + "y" * 4000 for i in range(3))
    reply = "mx.example.org\nPIPELINING\n" + "\n".join(long_lines)
    greeting = "mx.example.org ESMTP " + "z" * 10_000
    for cache in (protocol._cached_pipelining, downgrade._cached_overwritten):
        cache.cache_clear()
    facts._host_names.cache_clear()

    assert protocol._offers_pipelining(reply)
    assert not protocol._offers_pipelining(reply.replace("PIPELINING", "CHUNKING"))
    assert downgrade._overwritten(("XXXXXXXX", *long_lines)) == "XXXXXXXX"
    assert facts.host_names(greeting) == {"mx.example.org", "example.org"}
    assert protocol._cached_pipelining.cache_info().currsize == 0
    assert downgrade._cached_overwritten.cache_info().currsize == 0
    assert facts._host_names.cache_info().currsize == 1

    assert protocol._offers_pipelining("mx\nPIPELINING")
    assert downgrade._overwritten(("PIPELINING", "XXXXXXXA")) == "XXXXXXXA"
    assert protocol._cached_pipelining.cache_info().currsize == 1
    assert downgrade._cached_overwritten.cache_info().currsize == 1


def test_past_the_cap_only_commands_whose_reply_matters_wait_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 65,536 commands may wait per connection: 40 connections of unanswered
    # NOOPs took 1 GB, each holding its row. A NOOP, RSET, VRFY, EXPN or
    # HELP past the cap holds nothing; an unknown verb holds a marker, for
    # a reply that says it was SASL data.
    monkeypatch.setattr(session_module, "MAX_COMMAND_ROWS", 1)
    conn = Connection(0, "192.0.2.1", 40000, "192.0.2.2", 25, first_ts=1)
    builder = SessionBuilder(conn, frozenset({465}))
    builder.data(Direction.SERVER, b"220 mx\r\n", 1)
    builder.data(Direction.CLIENT, b"EHLO a\r\n", 2)
    builder.data(Direction.SERVER, b"250-mx\r\n250 PIPELINING\r\n", 3)
    builder.data(Direction.CLIENT, b"NOOP\r\nVRFY x\r\nXYZZY\r\nRSET\r\nDATA\r\n", 4)
    assert builder._unkept is not None
    assert [(i, row.verb) for i, row in builder._unkept.items()] == [
        (3, ""),  # the marker of XYZZY
        (5, "DATA"),
    ]
    builder.data(Direction.SERVER, b"250 ok\r\n252 x\r\n535 no\r\n250 ok\r\n", 5)
    builder.data(Direction.SERVER, b"503 no\r\n", 6)
    assert not builder._unkept
    result = builder.close(7, "fin")
    assert [(a.ts, a.kind) for a in result.anomalies] == [
        (4, "command_rows_capped"),
        (5, "auth_midstream"),
    ]
    # VRFY keeps its row as the first pipelined command after the EHLO.
    assert [c.verb for c in result.commands] == ["EHLO", "VRFY"]
    assert result.session.commands == 6


def _after_data() -> SmtpParser:
    """A parser whose client has sent DATA, with no reply to it yet."""
    parser = SmtpParser()
    for ts, (side, data) in enumerate(
        [
            (S, b"220 mx\r\n"),
            (C, b"EHLO x\r\n"),
            (S, b"250 mx\r\n"),
            (C, b"MAIL FROM:<a@b.example>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"RCPT TO:<c@d.example>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"DATA\r\n"),
        ]
    ):
        (parser.feed_client if side == C else parser.feed_server)(data, ts)
    return parser


@pytest.mark.parametrize(
    ("line", "bound"),
    [
        (b"x" * 70 + b"\r\n", 1.5),  # a message in one-byte segments
        (b"\n", 2.5),  # an empty line a segment: every segment a line
    ],
)
def test_bytes_held_for_a_reply_cost_little_more_than_themselves(
    line: bytes, bound: float
) -> None:
    # Found in review: each held segment was a tuple of its own, about 120
    # bytes on top of its payload: 250,000 bytes after a DATA with no 354
    # yet, sent a byte a segment, held 30 MB. Now 1.3 times the bytes, and
    # 2.1 times when each segment has an LF (see _Held, MAX_HELD_RUNS).
    size = 250_000
    body = (line * (size // len(line) + 1))[:size]
    segments = [body[i : i + 1] for i in range(size)]
    parser = _after_data()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for ts, segment in enumerate(segments, start=100):
            assert parser.feed_client(segment, ts) == []
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < bound * size
    # Once the 354 comes, the message is what the same bytes in one
    # segment give.
    events = parser.feed_server(b"354 go\r\n", 10**6)
    events += parser.close(10**6 + 1)
    whole = _after_data()
    assert whole.feed_client(body, 99 + size) == []
    expected = whole.feed_server(b"354 go\r\n", 10**6)
    expected += whole.close(10**6 + 1)
    assert events == expected
    ended = [e for e in events if isinstance(e, MessageEnded)]
    assert [(e.ts, e.complete) for e in ended] == [(10**6 + 1, False)]
