"""smtpscope's tables for the public captures, against other analyzers' outputs.

Every capture in ``../shared/pcaps/public/MANIFEST.tsv`` is analysed once (see
``tests.corpus``) and compared with the expected outputs kept beside it:

- Zeek's ``smtp.log``, ``conn.log``, ``files`` and ``intel.log`` baselines are
  parsed from their TSV (the ``#fields`` line, or a ``.cut`` file's first
  line, names the columns; ``-`` is unset, ``(empty)`` is empty);
- suricata-verify's ``test.yaml`` checks are copied into ``SURICATA`` with the
  lines they quote (the project has no YAML parser, and the files hold far
  more than SMTP values);
- arkime's ``.test`` files are read as the JSON they are;
- nDPI's ``.out`` flow line is quoted in its test.

The other tools are evidence, not gospel. Where one disagrees with smtpscope
the bytes decide (read with ``tshark -qz follow,tcp,ascii``), and the test
asserts what the bytes show, with a comment saying why. Where the bytes show
smtpscope wrong, the case is marked ``xfail(strict=True)`` with a reason that
names the bug: fixing the bug makes the case pass, and strict mode then fails
it until the mark is removed.

Column mapping, once: Zeek ``helo`` is ``sessions.helo``; ``mailfrom`` and
``rcptto`` are ``transactions.mail_from`` and ``rcpt_to`` (both tools list
refused recipients too); ``date``, ``from``, ``to``, ``cc``, ``subject`` and
``msg_id`` are the transaction's header columns (Zeek splits To and Cc at
commas into sets, so ours are split the same way to compare); ``last_reply``
is the final reply to the message content (we keep its code and queue id,
not its text) or, without content, the last reply the transaction's commands
got; ``tls`` is ``sessions.tls != "none"``. Suricata logs the reverse-path and
forward-paths with the angle brackets the client sent; ours strip them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import SmtpTables
from tests.corpus import CAPTURES, CORPUS, or_missing, require_corpus, tables

pytestmark = pytest.mark.corpus

# Bugs the bytes show, one sentence each; every xfail below names one.


def known_bug(reason: str) -> pytest.MarkDecorator:
    """Expected to fail on an assertion until the bug is fixed, then to pass."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


# ---------------------------------------------------------------------------
# Reading our tables


def value(cell: Any) -> Any:
    """A scalar cell with pandas' missing markers turned into None."""
    return None if pd.isna(cell) else cell


def the_session(t: SmtpTables, client_ip: str, client_port: int) -> pd.Series:
    found = t.sessions[
        (t.sessions.client_ip == client_ip) & (t.sessions.client_port == client_port)
    ]
    assert len(found) == 1, f"sessions from {client_ip}:{client_port}"
    return found.iloc[0]


def only_session(t: SmtpTables) -> pd.Series:
    assert len(t.sessions) == 1
    return t.sessions.iloc[0]


def transactions_of(t: SmtpTables, session_id: str) -> list[pd.Series]:
    rows = t.transactions[t.transactions.session_id == session_id]
    return [row for _, row in rows.sort_values("index").iterrows()]


def commands_of(
    t: SmtpTables, session_id: str, txn: pd.Series | None = None
) -> list[pd.Series]:
    """The session's commands, or those sent while ``txn`` was open."""
    rows = t.commands[t.commands.session_id == session_id]
    if txn is not None:
        rows = rows[rows.ts >= txn.start]
        if value(txn["end"]) is not None:
            rows = rows[rows.ts <= txn["end"]]
    return [row for _, row in rows.iterrows()]


def last_reply(commands: list[pd.Series]) -> str | None:
    """``code text`` of the last reply a command other than QUIT got."""
    replied = [
        c for c in commands if c.verb != "QUIT" and value(c.reply_code) is not None
    ]
    if not replied:
        return None
    return f"{replied[-1].reply_code} {replied[-1].reply_text}"


def smtp_session_count(t: SmtpTables) -> int:
    """Sessions in which either side spoke SMTP: a greeting or a command."""
    spoke = t.sessions.greeting_code.notna() | (t.sessions.commands > 0)
    return int(spoke.sum())


def header_parts(header: str | None) -> set[str]:
    """A To or Cc header cut at commas, as Zeek's smtp.log sets are."""
    return {part.strip() for part in header.split(",")} if header else set()


def addresses(headers: list[str | None]) -> set[str]:
    return {addr for _, addr in getaddresses([h for h in headers if h]) if addr}


def unbracket(path: str) -> str:
    """Suricata's reverse-path or forward-path as our columns hold it."""
    return path[1:-1] if path.startswith("<") and path.endswith(">") else path


def decoded(header: str) -> str:
    """RFC 2047 encoded words decoded, as arkime shows subjects."""
    return str(make_header(decode_header(header)))


def fixed(ids: list[str]) -> None:
    """Fail early when a hand-written table names a capture not in the corpus."""
    if CAPTURES:
        unknown = sorted(set(ids) - set(CAPTURES))
        assert not unknown, f"not in MANIFEST.tsv: {unknown}"


# ---------------------------------------------------------------------------
# 1. Every capture is read cleanly, with the SMTP sessions the manifest counts

# Where tshark's count in the manifest is not what the bytes show.
SESSION_COUNT_EXCEPTIONS: dict[str, tuple[int, str]] = {
    "arkime/smtp-subject-multi-nospace.pcap": (
        1,
        "tshark counts 0: the client sent EHLO, MAIL, RCPT, DATA and the "
        "message in one segment and the server never answered, so tshark's "
        "heuristics call it a DATA fragment; the lines are plainly SMTP "
        "commands, and arkime also sees one SMTP session (smtpHello)",
    ),
    "pcapplusplus/Smtp.pcap": (
        3,
        "tshark counts 2 (one stream per 4-tuple): frames 7 and 8 reuse "
        "10.10.1.4:1470 <-> 74.53.140.153:25 442,200,619 s (14 years) after "
        "frame 1, without a SYN and with sequence numbers back at the "
        "connection's start; smtpscope ends the connection after 600 s idle "
        "(as Zeek does after 5 minutes) and picks the late frames up as a "
        "new session, which begins with the server's 451 lines",
    ),
}


def test_corpus_present() -> None:
    require_corpus()
    assert len(CAPTURES) == 95
    fixed(list(SESSION_COUNT_EXCEPTIONS))


@pytest.mark.parametrize("capture_id", or_missing(list(CAPTURES), 1))
def test_capture_reads_cleanly(capture_id: str) -> None:
    # No capture in the manifest is marked damaged, so none may report an
    # error.
    t = tables(capture_id)
    assert t.stats.errors == []
    assert t.stats.captures == 1
    expected = CAPTURES[capture_id].smtp_sessions
    if capture_id in SESSION_COUNT_EXCEPTIONS:
        expected = SESSION_COUNT_EXCEPTIONS[capture_id][0]
    assert smtp_session_count(t) == expected


# ---------------------------------------------------------------------------
# 2a. Zeek baselines


@dataclass(frozen=True, slots=True)
class LogRow:
    """One data line of a Zeek log, with its column values."""

    file: Path
    line: int  # 1-based, for messages
    values: dict[str, Any]  # None for unset, a list for set and vector fields

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    @property
    def where(self) -> str:
        return f"{self.file.name}:{self.line}"


def read_zeek_log(path: Path) -> list[LogRow]:
    """Rows of a Zeek TSV log or of a ``zeek-cut`` extract of one."""
    fields: list[str] = []
    kinds: list[str] = []
    unset, empty, set_separator = "-", "(empty)", ","
    rows: list[LogRow] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if line.startswith("#"):
            key, _, rest = line[1:].partition("\t")
            if key == "fields":
                fields = rest.split("\t")
            elif key == "types":
                kinds = rest.split("\t")
            elif key == "unset_field":
                unset = rest
            elif key == "empty_field":
                empty = rest
            elif key == "set_separator":
                set_separator = rest
            continue
        cells = line.split("\t")
        if not fields:
            fields = cells  # a .cut file names its columns on the first line
            continue
        values: dict[str, Any] = {}
        for i, (name, cell) in enumerate(zip(fields, cells, strict=True)):
            container = i < len(kinds) and kinds[i].startswith(("set[", "vector["))
            if cell == unset:
                values[name] = None
            elif container:
                values[name] = [] if cell == empty else cell.split(set_separator)
            else:
                values[name] = "" if cell == empty else cell
        rows.append(LogRow(path, number, values))
    return rows


# smtp.log baselines not compared, and why.
ZEEK_SKIPPED_LOGS = {
    "smtp.mail-transactions-invalid-disable-analyzer__smtp.log": (
        "the same capture with Zeek's analyzer switched off after too many "
        "invalid transactions: it shows a Zeek policy, not the wire"
    ),
    "smtp.attachment__smtp.log": "the same rows as smtp.basic__smtp.log",
}
# smtp.log rows checked by their own tests below instead of field by field.
ZEEK_ROWS_ELSEWHERE = {
    ("zeek/smtp-mail-transactions-invalid.pcap", 1): "test_zeek_rcpt_before_mail",
    ("zeek/smtp-mail-transactions-invalid.pcap", 2): "test_zeek_split_transaction",
    ("zeek/smtp-mail-transactions-invalid.pcap", 3): "test_zeek_split_transaction",
    ("zeek/smtp__smtp-bdat-gap.pcap", 0): "test_zeek_bdat_gap_*",
}


def _names_txn(row: LogRow) -> bool:
    return row["mailfrom"] is not None or row["rcptto"] is not None


def _zeek_smtp_cases() -> Iterator[Any]:
    for capture_id, capture in CAPTURES.items():
        for log in capture.expected_files("__smtp.log"):
            if any(log.name.endswith(name) for name in ZEEK_SKIPPED_LOGS):
                continue
            seen: dict[tuple[str, str], int] = {}  # txn rows per connection
            for number, row in enumerate(read_zeek_log(log)):
                conn = (row["id.orig_h"], row["id.orig_p"])
                position = None
                if _names_txn(row):
                    position = seen.get(conn, 0)
                    seen[conn] = position + 1
                key = (capture_id, number)
                if key in ZEEK_ROWS_ELSEWHERE:
                    continue
                yield pytest.param(
                    capture_id, row, position, id=f"{capture_id}#{number}"
                )


@pytest.mark.parametrize(
    ("capture_id", "row", "position"), or_missing(list(_zeek_smtp_cases()), 3)
)
def test_zeek_smtp_log(capture_id: str, row: LogRow, position: int | None) -> None:
    t = tables(capture_id)
    session = the_session(t, row["id.orig_h"], int(row["id.orig_p"]))
    assert value(session.helo) == row["helo"], row.where
    assert (session.tls != "none") == (row["tls"] == "T"), row.where
    txns = transactions_of(t, session.session_id)

    # A row that names neither sender nor recipient describes the session
    # (here: EHLO, then STARTTLS, then encrypted bytes).
    if position is None:
        assert txns == [], row.where
        got = last_reply(commands_of(t, session.session_id))
        assert got == row["last_reply"], row.where
        return

    txn = txns[position]
    assert value(txn.mail_from) == row["mailfrom"], row.where
    assert set(txn.rcpt_to) == set(row["rcptto"] or []), row.where
    for zeek, ours in [
        ("date", "date"),
        ("from", "from"),
        ("subject", "subject"),
        ("msg_id", "message_id"),
        ("reply_to", "reply_to"),
        ("in_reply_to", "in_reply_to"),
        ("user_agent", "user_agent"),
        ("x_originating_ip", "x_originating_ip"),
        ("first_received", "first_received"),
        ("second_received", "second_received"),
    ]:
        assert value(txn[ours]) == row[zeek], f"{row.where} {zeek}"
    for name in ("to", "cc"):
        assert header_parts(value(txn[name])) == set(row[name] or []), row.where
    check_last_reply(t, session, txn, row["last_reply"], row.where)


def check_last_reply(
    t: SmtpTables, session: pd.Series, txn: pd.Series, expected: str | None, where: str
) -> None:
    if value(txn.data_code) is not None:
        # The final reply to the content: its code and text, as last_reply.
        assert f"{txn.data_code} {txn.data_reply}" == expected, where
        if value(txn.queue_id) is not None:
            assert txn.queue_id in expected, where
        return
    got = last_reply(commands_of(t, session.session_id, txn))
    assert got == expected, where


def test_zeek_rcpt_before_mail() -> None:
    # mail-transactions-invalid__smtp.log:11 is a transaction with no sender,
    # recipient alice@example.org, last_reply "500 unrecognized command".
    # On the wire that RCPT comes after the first message and before any
    # MAIL, and the server answers "503 sender not yet given". No
    # transaction was open, so smtpscope records it as an anomaly.
    t = tables("zeek/smtp-mail-transactions-invalid.pcap")
    found = t.anomalies[t.anomalies.kind == "rcpt_without_mail"]
    assert list(found.detail) == ["TO:<alice@example.org>"]
    rcpts = t.commands[t.commands.verb == "RCPT"]
    assert list(rcpts.reply_code) == [250, 503, 250]


def test_zeek_split_transaction() -> None:
    # mail-transactions-invalid__smtp.log:12-13 are two rows of one Zeek
    # transaction (trans_depth 2), split at the third MAIL:
    #   bob@example.org, no recipient, "500 unrecognized command"
    #   bob@example.org -> alice@example.org, "250 OK id=1pgobM-001mwq-Vc"
    # On the wire: MAIL (250), DATA (503), a body line and "." (500 each),
    # DATA (503), a body line and "." (500 each), MAIL (503 sender already
    # given), RCPT (250), DATA (354), a message and "." (250 OK
    # id=1pgobM-001mwq-Vc). The 500s answer body lines the client sent after
    # its DATA was refused, not the transaction, whose own refusals are the
    # 503s.
    t = tables("zeek/smtp-mail-transactions-invalid.pcap")
    session = only_session(t)
    later = transactions_of(t, session.session_id)[1:]
    assert {txn.mail_from for txn in later} == {"bob@example.org"}
    assert [r for txn in later for r in txn.rcpt_to] == ["alice@example.org"]
    accepted = [txn for txn in later if txn.status == "accepted"]
    assert [txn.queue_id for txn in accepted] == ["1pgobM-001mwq-Vc"]
    assert 500 not in {value(txn.data_code) for txn in later}
    refused_body = t.anomalies[t.anomalies.kind == "data_body_after_refusal"]
    assert list(refused_body.detail) == [f"Hello, Alice ({n})" for n in (2, 3, 4)]


def test_zeek_accepted_message_belongs_to_accepted_mail() -> None:
    # Same capture: the server refuses the third MAIL with "503 sender
    # already given", so the message it accepts (1pgobM-001mwq-Vc) belongs
    # to the transaction the second MAIL opened, whose reply was 250. Today
    # the first refused DATA ends that transaction and the refused MAIL
    # opens the one the message is filed under.
    t = tables("zeek/smtp-mail-transactions-invalid.pcap")
    accepted = t.transactions[t.transactions.queue_id == "1pgobM-001mwq-Vc"]
    assert list(accepted.mail_from_code) == [250]


# bdat-gap__smtp.log:10: helo sender.example.com, sender@example.com ->
# recipient@example.com, last_reply "250 OK: message queued", no headers.
# On the wire: BDAT 200 (250 OK), 100 bytes of the chunk, 1000 client bytes
# missing (the rest of the chunk and more), then DATA (354), a message with
# From, To and Subject, "." (250 OK: message queued) and QUIT (221 Bye).
# Zeek logs no headers for it, so its empty header fields are not evidence.


def test_zeek_bdat_gap_envelope() -> None:
    t = tables("zeek/smtp__smtp-bdat-gap.pcap")
    session = only_session(t)
    assert (session.helo, session.tls, session.gap_bytes) == (
        "sender.example.com",
        "none",
        1000,
    )
    [txn] = transactions_of(t, session.session_id)
    assert (txn.mail_from, list(txn.rcpt_to)) == (
        "sender@example.com",
        ["recipient@example.com"],
    )


def test_zeek_bdat_gap_final_reply() -> None:
    t = tables("zeek/smtp__smtp-bdat-gap.pcap")
    [txn] = transactions_of(t, only_session(t).session_id)
    assert set(t.commands.verb) <= {"EHLO", "MAIL", "RCPT", "BDAT", "DATA", "QUIT"}
    assert value(txn.data_code) == 250


def test_zeek_bdat_gap_rows() -> None:
    # BDAT 200 (frame 18) is answered 250 OK at once (frame 20); 100 bytes
    # of its chunk follow (frame 22), then the capture lost 1000 client
    # bytes: the chunk's last 100 and 900 after it (the server's ACK in
    # frame 24 covers them). What those 900 held, and so what the 250 OK of
    # frame 24 answers, the capture does not show: it stays a reply
    # without a command, as after any client gap. Then DATA (354), a
    # message of 78 bytes and its verdict. The BDAT message was never seen
    # whole and never got its LAST chunk; RFC 3030 2 has a server refuse
    # DATA in its transaction, this test server took it. Zeek's files.log
    # has the BDAT part missing 1000 bytes and the DATA part whole; here
    # the one transaction (one MAIL) carries the DATA's method and verdict,
    # message_complete false, and the anomalies say what the gap took.
    t = tables("zeek/smtp__smtp-bdat-gap.pcap")
    session = only_session(t)
    assert [
        (c.verb, c.argument, value(c.reply_code), c.reply_text)
        for c in t.commands.itertuples()
    ] == [
        ("EHLO", "sender.example.com", 250, "mail.example.com Hello\nCHUNKING\nOK"),
        ("MAIL", "FROM:<sender@example.com>", 250, "OK"),
        ("RCPT", "TO:<recipient@example.com>", 250, "OK"),
        ("BDAT", "200", 250, "OK"),
        ("DATA", "", 354, "End data with <CR><LF>.<CR><LF>"),
        ("QUIT", "", 221, "Bye"),
    ]
    assert [(a.kind, a.detail) for a in t.anomalies.itertuples()] == [
        ("reply_without_command", "250 OK"),
        ("tcp_gap", "1000 client bytes missing"),
        (
            "message_incomplete",
            "a TCP gap took the last 100 bytes of a BDAT chunk and 900 bytes after it",
        ),
        ("data_after_bdat", "DATA while a BDAT message was open"),
    ]
    [txn] = transactions_of(t, session.session_id)
    assert (
        txn.data_method,
        value(txn.data_code),
        txn.data_reply,
        value(txn.message_bytes),
        txn.message_complete,
        txn.status,
    ) == ("DATA", 250, "OK: message queued", 78, False, "accepted")
    assert (txn["from"], txn.to, txn.subject) == (
        "sender@example.com",
        "recipient@example.com",
        "Test",
    )
    assert (session.gaps, session.gap_bytes, session.messages_accepted) == (1, 1000, 1)


# conn.log baselines not compared, and why.
ZEEK_SKIPPED_CONN_LOGS = {
    "netcontrol.packetfilter__conn.log": (
        "a NetControl test: Zeek's packet filter cut the connections after "
        "the handshake, so its durations and counts describe the filter"
    ),
}


def _zeek_conn_cases() -> Iterator[Any]:
    for capture_id, capture in CAPTURES.items():
        logs = capture.expected_files("conn.log") + capture.expected_files(
            "conn.log.cut"
        )
        for log in logs:
            if any(log.name.endswith(name) for name in ZEEK_SKIPPED_CONN_LOGS):
                continue
            for row in read_zeek_log(log):
                if "id.orig_h" in row and ("duration" in row or "missed_bytes" in row):
                    yield pytest.param(capture_id, row, id=f"{capture_id}:{row.line}")


# Zeek's connection ends at the second FIN; ours at the ACK of that FIN,
# the connection's last packet. Seconds between the two, read from the frame
# times (tshark): FIN frame -> ACK frame.
ZEEK_DURATION_AFTER_LAST_FIN = {
    "zeek/smtp__rfc3030-bdat-0-last.pcap": 0.000030,  # 25 -> 26
    "zeek/smtp__rfc3030-bdat-example1.pcap": 0.000048,  # 27 -> 28
    "zeek/smtp__rfc3030-bdat-multipart-chunked.pcap": 0.000020,  # 183 -> 184
    "zeek/smtp__rfc3030-bdat-multipart.pcap": 0.000040,  # 29 -> 30
    "zeek/smtp__smtp-bdat-gap.pcap": 0.000429,  # 39 -> 40
}


@pytest.mark.parametrize(("capture_id", "row"), or_missing(list(_zeek_conn_cases()), 2))
def test_zeek_conn_log(capture_id: str, row: LogRow) -> None:
    session = the_session(tables(capture_id), row["id.orig_h"], int(row["id.orig_p"]))
    if "duration" in row:
        extra = ZEEK_DURATION_AFTER_LAST_FIN.get(capture_id, 0.0)
        duration = round(session.duration_s - extra, 6)
        assert duration == float(row["duration"]), row.where
    if "missed_bytes" in row:
        assert session.gap_bytes == int(row["missed_bytes"]), row.where


def _zeek_message_cases() -> Iterator[Any]:
    # The size of each message/rfc822 file Zeek extracted is the size of the
    # message content, which is our message_bytes. A capture whose content
    # lost bytes in a gap is left out: Zeek counts partial files differently.
    for capture_id, capture in CAPTURES.items():
        rows = [
            row
            for suffix in ("files.cut", "files.log.cut")
            for log in capture.expected_files(suffix)
            for row in read_zeek_log(log)
            if row.values.get("mime_type") == "message/rfc822"
        ]
        if not rows or any(
            row.values.get("missing_bytes") not in (None, "0") for row in rows
        ):
            continue
        sizes = sorted(int(row["seen_bytes"]) for row in rows)
        yield pytest.param(capture_id, sizes, rows[0].where, id=capture_id)


@pytest.mark.parametrize(
    ("capture_id", "sizes", "where"), or_missing(list(_zeek_message_cases()), 3)
)
def test_zeek_message_sizes(capture_id: str, sizes: list[int], where: str) -> None:
    t = tables(capture_id)
    ours = sorted(int(size) for size in t.transactions.message_bytes.dropna())
    assert ours == sizes, where


def _zeek_intel_cases() -> Iterator[Any]:
    for capture_id, capture in CAPTURES.items():
        for log in capture.expected_files("intel.log"):
            for row in read_zeek_log(log):
                yield pytest.param(
                    capture_id, row, id=f"{capture_id}:{row['seen.where']}:{row.line}"
                )


@pytest.mark.parametrize(
    ("capture_id", "row"), or_missing(list(_zeek_intel_cases()), 2)
)
def test_zeek_intel_log(capture_id: str, row: LogRow) -> None:
    # intel.log lists only the addresses that matched Zeek's indicator list,
    # with where it saw each; each must be where we have it.
    t = tables(capture_id)
    session = the_session(t, row["id.orig_h"], int(row["id.orig_p"]))
    txns = transactions_of(t, session.session_id)
    seen_in = {
        "SMTP::IN_MAIL_FROM": {txn.mail_from for txn in txns},
        "SMTP::IN_RCPT_TO": {r for txn in txns for r in txn.rcpt_to},
        "SMTP::IN_FROM": addresses([value(txn["from"]) for txn in txns]),
        "SMTP::IN_TO": addresses([value(txn.to) for txn in txns]),
        "SMTP::IN_CC": addresses([value(txn.cc) for txn in txns]),
    }
    assert row["seen.indicator"] in seen_in[row["seen.where"]], row.where


# ---------------------------------------------------------------------------
# 2b. suricata-verify test.yaml checks


@dataclass(frozen=True, slots=True)
class Envelope:
    """One smtp event as suricata logs it (only the fields its test checks)."""

    mail_from: str  # with the angle brackets the client sent
    rcpt_to: tuple[str, ...] = ()
    email_from: str | None = None  # email.from, when checked
    email_to: str | None = None  # email.to[0], checked with no email.to[1]


@dataclass(frozen=True, slots=True)
class SuricataCase:
    cite: str  # the test.yaml lines the values come from
    helo: str | None = None  # our expected sessions.helo, when checked
    # Our transactions whose MAIL was not refused, in order. Suricata opens
    # no transaction for a refused MAIL, so only these are comparable.
    transactions: tuple[Envelope, ...] | None = None
    anomalies: tuple[str, ...] = ()  # anomaly kinds we must also report
    count: int | None = None  # how many such transactions, values unchecked


def _alice_bob() -> tuple[Envelope, ...]:
    return (Envelope("<alice@example.com>", ("<bob@example.com>",)),)


def _two_mails(first_headers: bool = False) -> tuple[Envelope, ...]:
    """alice -> bob, then bob -> alice with From/To headers checked."""
    first = Envelope("<alice@example.com>", ("<bob@example.com>",))
    if first_headers:
        first = Envelope(
            "<alice@example.com>",
            ("<bob@example.com>",),
            "alice@example.com",
            "bob@example.com",
        )
    second = Envelope(
        "<bob@example.com>",
        ("<alice@example.com>",),
        "bob@example.com",
        "alice@example.com",
    )
    return (first, second)


def _mime_dec(cite: str) -> SuricataCase:
    # The ten mime-dec-* tests replay one HELO/MAIL/RCPT/DATA session with
    # different bodies; each checks the same values in its min-version
    # 8.0.7 filter and expects no second smtp event (count: 0 for tx_id 1).
    return SuricataCase(
        cite=cite,
        helo="linuxbox",
        transactions=(
            Envelope(
                "<toto@gmail.com>",
                ("<172.16.92.2@linuxbox>",),
                "toto <toto@gmail.com>",
                "172.16.92.2@linuxbox",
            ),
        ),
    )


SURICATA_LONG_HELO = "OBLAH" * 818 + "\r"  # smtp-long-command test.yaml:14

SURICATA: dict[str, SuricataCase] = {
    # Suricata logs one smtp event (helo bug.client) for a DATA sent with no
    # MAIL. The client never named a sender, so there is no mail transaction
    # (RFC 5321 3.3); the DATA row keeps the server's 354 and the session
    # gets a message_without_mail anomaly.
    "suricata/bug-1449-01__suricata_stackoverflow.pcap": SuricataCase(
        "test.yaml:18-21", "bug.client", (), ("message_without_mail",)
    ),
    # The client sent the paths without angle brackets (FROM:blah@...).
    "suricata/bug-6207-1__input.pcap": SuricataCase(
        "test.yaml:23-26",
        "smtp.intra",
        (Envelope("blah@smtp.lab.com", ("test@wut.com",)),),
    ),
    "suricata/bug-6207-2__input.pcap": SuricataCase(
        "test.yaml:23-26",
        "smtp.intra",
        (Envelope("blah@smtp.lab.com", ("test@wut.com",)),),
    ),
    # The test checks Received headers, which we do not keep; its one smtp
    # event is our one transaction.
    "suricata/detect-email-received__input.pcap": SuricataCase(
        "test.yaml:23-29", count=1
    ),
    "suricata/firewall-122-smtp__smtp-simple-session.pcap": SuricataCase(
        "test.yaml:11-15", transactions=_alice_bob()
    ),
    # Suricata logs no smtp event here (test.yaml:38-40, count: 0) because
    # the firewall rules drop the flow; its alert carries the envelope.
    "suricata/firewall-125-smtp-all-rcpts-required-drop__two-rcpt.pcap": SuricataCase(
        "test.yaml:16,32-33",
        transactions=(
            Envelope(
                "<alice@example.com>", ("<bob@example.com>", "<alice@example.com>")
            ),
        ),
    ),
    "suricata/firewall-127-smtp-interactive-commands__smtp-interactive.pcap": (
        SuricataCase("test.yaml:20-24", transactions=_alice_bob())
    ),
    "suricata/firewall-128-smtp-rset-next-tx-delivered__smtp-rset-change-sender.pcap": (
        SuricataCase(
            "test.yaml:19-31",
            transactions=(
                Envelope("<alice@example.com>"),
                Envelope("<bob@example.com>", ("<alice@example.com>",)),
            ),
        )
    ),
    "suricata/firewall-130-smtp-rset-after-rcpt__smtp-rset-after-rcpt.pcap": (
        SuricataCase("test.yaml:20-24", transactions=_alice_bob() * 2)
    ),
    "suricata/firewall-131-smtp-quit-after-mail-from__smtp-quit-after-mail.pcap": (
        SuricataCase("test.yaml:22-26", transactions=(Envelope("<alice@example.com>"),))
    ),
    # MAIL alice (250), MAIL bob (503 nested MAIL command), RCPT bob (250),
    # DATA: the server kept alice as the sender. Suricata is right.
    "suricata/firewall-132-smtp-nested-mail-from__smtp-nested-mail.pcap": (
        SuricataCase("test.yaml:20-24", transactions=_alice_bob())
    ),
    "suricata/firewall-134-smtp-rset-then-quit__smtp-rset-then-quit.pcap": (
        SuricataCase("test.yaml:19-23", transactions=_alice_bob())
    ),
    "suricata/firewall-135-smtp-multi-mail-accept__smtp-multi-mail.pcap": SuricataCase(
        "test.yaml:19-41",
        transactions=(
            Envelope("<alice@example.com>", ("<bob@example.com>",)),
            Envelope("<bob@example.com>", ("<alice@example.com>",)),
            Envelope(
                "<alice@example.com>", ("<bob@example.com>", "<alice@example.com>")
            ),
        ),
    ),
    "suricata/firewall-139-smtp-pipelined-post-data-mail-from__"
    "smtp-pipelined-post-data-mail-from.pcap": (
        SuricataCase(
            "test.yaml:19-35",
            transactions=(
                Envelope("<alice@example.com>", ("<bob@example.com>",)),
                Envelope("<bob@example.com>", ("<alice@example.com>",)),
            ),
        )
    ),
    "suricata/firewall-140-smtp-pipelined-post-data-rset-sequence__"
    "smtp-pipelined-post-data-rset-sequence.pcap": (
        SuricataCase(
            "test.yaml:19-35",
            transactions=(
                Envelope("<alice@example.com>", ("<bob@example.com>",)),
                Envelope("<bob@example.com>", ("<alice@example.com>",)),
            ),
        )
    ),
    "suricata/mime__mime-dec-parse-full-msg-test01__input.pcap": _mime_dec(
        "test.yaml:12-20,62"
    ),
    "suricata/mime__mime-dec-parse-full-msg-test02__input.pcap": _mime_dec(
        "test.yaml:12-20,62"
    ),
    "suricata/mime__mime-dec-parse-line-test01__input.pcap": _mime_dec(
        "test.yaml:12-20,62"
    ),
    "suricata/mime__mime-dec-parse-line-test02__input.pcap": _mime_dec(
        "test.yaml:12-21,64"
    ),
    "suricata/mime__mime-dec-parse-long-filename01__input.pcap": _mime_dec(
        "test.yaml:28-36,103"
    ),
    "suricata/mime__mime-dec-parse-long-filename02__input.pcap": _mime_dec(
        "test.yaml:13-21,88"
    ),
    "suricata/mime__mime-dec-parse-odd-len__input.pcap": _mime_dec(
        "test.yaml:12-20,62"
    ),
    "suricata/mime__mime-dec-parse-rem-sp__input.pcap": _mime_dec("test.yaml:12-20,62"),
    "suricata/mime__mime-dec-parse-small-rem-inp__input.pcap": _mime_dec(
        "test.yaml:12-20,62"
    ),
    "suricata/mime__mime-dec-very-small-inp__input.pcap": _mime_dec(
        "test.yaml:12-20,62"
    ),
    # BDAT 5 X (521), then pipelined and never answered: BDAT 221 LAST with
    # a message, MAIL bob, RCPT alice, DATA, a message, ".". Both messages
    # are read; the server closed, so neither transaction has a verdict.
    "suricata/smtp-bdat-bad-tail-next-mail__input.pcap": SuricataCase(
        "test.yaml:10,18-37", transactions=_two_mails()
    ),
    "suricata/smtp-bdat-last-next-mail__input.pcap": SuricataCase(
        "test.yaml:10,17-36", transactions=_two_mails()
    ),
    "suricata/smtp-bdat-multichunk-inspection__input.pcap": SuricataCase(
        "test.yaml:13,19-35",
        transactions=(
            Envelope("<a@example.com>", ("<b@example.com>",)),
            Envelope("<evil@example.com>", ("<victim@example.com>",)),
        ),
    ),
    "suricata/smtp-bdat-multichunk-next-mail__input.pcap": SuricataCase(
        "test.yaml:10,18-37", transactions=_two_mails()
    ),
    "suricata/smtp-bdat-zero-last-next-mail__input.pcap": SuricataCase(
        "test.yaml:10,17-36", transactions=_two_mails()
    ),
    "suricata/smtp-bug-6053__input.pcap": SuricataCase("test.yaml:8-10", "Simone"),
    # Suricata counts 2 smtp events (test.yaml:10): one for HELO and the
    # DATA refused with 503 (no MAIL yet), one for the mail. Only one MAIL
    # was sent, so we have one transaction.
    "suricata/smtp-ehlo-reset-after-rejected-data__input.pcap": SuricataCase(
        "test.yaml:16-35",
        "client.example.com",
        (_two_mails()[1],),
    ),
    "suricata/smtp-ehlo-reset__input.pcap": SuricataCase(
        "test.yaml:10-34",
        transactions=(Envelope("<alice@example.com>"), _two_mails()[1]),
    ),
    # The min-version 8.0.7 filters: one smtp event, none with tx_id 1.
    "suricata/smtp-file-data-01__input.pcap": SuricataCase(
        "test.yaml:11-27,104",
        "client-1016363.example.int",
        (
            Envelope(
                "<sender@example.com>",
                ("<recipient@example.com>",),
                "<sender@example.com>",
                "<recipient@example.com>",
            ),
        ),
    ),
    "suricata/smtp-helo-reset-after-rcpt__input.pcap": SuricataCase(
        "test.yaml:10-36", transactions=_two_mails()
    ),
    # Suricata cuts lines at 4096 bytes: "EHLO " and 4090 characters fill
    # 4095, and the next byte kept is the CR of the line's CRLF. On the wire
    # the line is "EHLO " + 4090 characters + CRLF, so our helo has no CR.
    # Its TRUNCATED_LINE event is our line_too_long (over RFC 5321's 512).
    # Its one smtp event is the session: EHLO and AUTH LOGIN, no MAIL.
    "suricata/smtp-long-command__input.pcap": SuricataCase(
        "test.yaml:5-23",
        SURICATA_LONG_HELO.removesuffix("\r"),
        (),
        ("line_too_long",),
    ),
    # app_layer.tx.smtp counts suricata's transactions, which it also opens
    # for commands outside a mail transaction. These sessions send QUIT
    # alone, RSET alone, and RSET then one mail: 0, 0 and 1 MAIL commands.
    "suricata/smtp-no-helo-quit__input.pcap": SuricataCase("test.yaml:11", None, ()),
    "suricata/smtp-no-helo-rset__input.pcap": SuricataCase("test.yaml:11", None, ()),
    "suricata/smtp-no-helo-rset-helo-mail__input.pcap": SuricataCase(
        "test.yaml:11", count=1
    ),
    "suricata/smtp-pipelined-post-data-rset-sequence__input.pcap": SuricataCase(
        "test.yaml:9-30", transactions=_two_mails(first_headers=True)
    ),
    "suricata/smtp-pipelined-rset-after-complete__input.pcap": SuricataCase(
        "test.yaml:9-38", transactions=_two_mails(first_headers=True)
    ),
    # RSET, DATA and "." pipelined with no MAIL: suricata logs one smtp
    # event (helo client.example); there is no mail transaction.
    "suricata/smtp-pipelined-rset-data-replies__input.pcap": SuricataCase(
        "test.yaml:13-17", "client.example", (), ("message_without_mail",)
    ),
    "suricata/smtp-pipelining__input.pcap": SuricataCase(
        "test.yaml:9-13",
        transactions=(Envelope("<username@domain.com>", ("<john.doe@example.com>",)),),
    ),
    # Suricata keeps helo "client.example.com" (test.yaml:19) after the
    # client's later bare "EHLO", which the server refused (501 Syntax: EHLO
    # hostname); so does our helo column, the last name the server accepted.
    # (Zeek's helo is the last sent, here empty.)
    "suricata/smtp-rejected-ehlo-preserves-envelope__input.pcap": SuricataCase(
        "test.yaml:15-24",
        "client.example.com",
        (
            Envelope(
                "<alice@example.com>",
                ("<bob@example.com>",),
                "alice@example.com",
                "bob@example.com",
            ),
        ),
    ),
    # In these two, suricata's one smtp event is the session before TLS:
    # EHLO (and RSET) then STARTTLS, answered 220. No MAIL was sent in clear
    # text, and what follows is encrypted.
    "suricata/smtp-rset-starttls__input.pcap": SuricataCase(
        "test.yaml:6-9", transactions=()
    ),
    "suricata/smtp-startssl__input.pcap": SuricataCase(
        "test.yaml:5-13", "desktop.unx.ca", ()
    ),
}

SURICATA_XFAIL: dict[str, str] = {}


def _suricata_cases() -> list[Any]:
    cases = []
    for capture_id, case in SURICATA.items():
        marks = []
        if capture_id in SURICATA_XFAIL:
            reason = SURICATA_XFAIL[capture_id]
            marks.append(known_bug(reason))
        cases.append(pytest.param(capture_id, case, id=capture_id, marks=marks))
    return cases


def test_suricata_table_names_known_captures() -> None:
    require_corpus()
    fixed(list(SURICATA))
    for capture_id in SURICATA:
        assert CAPTURES[capture_id].expected_files("test.yaml"), capture_id


@pytest.mark.parametrize(("capture_id", "case"), _suricata_cases())
def test_suricata_verify(capture_id: str, case: SuricataCase) -> None:
    t = tables(capture_id)
    session = only_session(t)
    where = f"{capture_id} {case.cite}"
    if case.helo is not None:
        assert value(session.helo) == case.helo, where
    if case.transactions is not None:
        txns = [
            txn
            for txn in transactions_of(t, session.session_id)
            if value(txn.mail_from_code) is None or txn.mail_from_code < 400
        ]
        assert len(txns) == len(case.transactions), where
        for txn, expected in zip(txns, case.transactions, strict=True):
            assert txn.mail_from == unbracket(expected.mail_from), where
            assert list(txn.rcpt_to) == [unbracket(r) for r in expected.rcpt_to], where
            if expected.email_from is not None:
                assert txn["from"] == expected.email_from, where
            if expected.email_to is not None:
                assert txn.to == expected.email_to, where
    if case.count is not None:
        txns = transactions_of(t, session.session_id)
        assert len(txns) == case.count, where
    for kind in case.anomalies:
        assert kind in set(t.anomalies.kind), where


# ---------------------------------------------------------------------------
# 2c. arkime .test files


def _arkime_sessions(capture_id: str) -> list[dict[str, Any]]:
    """The SMTP sessions of an arkime .test file that carried packets."""
    test_files = CAPTURES[capture_id].expected_files(".test")
    assert len(test_files) == 1
    found = json.loads(test_files[0].read_text(encoding="utf-8"))
    return [
        s["body"]
        for s in found["sessions3"]
        if "smtp" in s["body"].get("protocol", []) and s["body"]["network"]["packets"]
    ]


ARKIME = [cid for cid in CAPTURES if cid.startswith("arkime/")]

# arkime's smtp:statuscode tag holds the reply to the end of DATA only.
ARKIME_STATUS_EXCEPTIONS: dict[str, str] = {
    "arkime/wireshark-bdat.pcap": (
        "no tag: the message came in BDAT chunks, and arkime reads no reply "
        "to BDAT; the reply to BDAT 8380 LAST is 250 OK bdat"
    ),
    "arkime/smtp-subject-windows.pcap": (
        "no tag, though the server answered 250 Message accepted for "
        "delivery; see test_bare_lf_dot_accepted_by_server"
    ),
}


@pytest.mark.parametrize("capture_id", or_missing(ARKIME, 1))
def test_arkime_envelope(capture_id: str) -> None:
    # email.src holds the MAIL FROM paths and the From: addresses, email.dst
    # the RCPT TO paths (refused ones too) and the To:/Cc: addresses, email.id
    # the Message-ID without its angle brackets. arkime leaves an empty
    # HELO argument out of smtpHello.
    t = tables(capture_id)
    for body in _arkime_sessions(capture_id):
        email = body.get("email", {})
        session = the_session(t, body["source"]["ip"], body["source"]["port"])
        txns = transactions_of(t, session.session_id)
        helo = value(session.helo)
        assert set(email.get("smtpHello", [])) == ({helo} if helo else set())
        src = {txn.mail_from for txn in txns if value(txn.mail_from) is not None}
        src |= addresses([value(txn["from"]) for txn in txns])
        assert set(email.get("src", [])) == src
        dst = {r for txn in txns for r in txn.rcpt_to}
        dst |= addresses([value(txn[h]) for txn in txns for h in ("to", "cc")])
        assert set(email.get("dst", [])) == dst
        ids = {txn.message_id.strip("<>") for txn in txns if value(txn.message_id)}
        assert set(email.get("id", [])) == ids
        # email.useragent is User-Agent or X-Mailer; email.ip holds the
        # X-Originating-IP with the addresses of the Received headers.
        agents = {txn.user_agent for txn in txns if value(txn.user_agent)}
        assert set(email.get("useragent", [])) == agents
        origins = {txn.x_originating_ip for txn in txns if value(txn.x_originating_ip)}
        assert origins <= set(email.get("ip", []))
        if capture_id not in ARKIME_STATUS_EXCEPTIONS:
            tags = body.get("tags") or []
            codes = {int(tag.rsplit(":", 1)[1]) for tag in tags if "statuscode" in tag}
            ours = {int(txn.data_code) for txn in txns if value(txn.data_code)}
            assert codes == ours


def test_a_refused_message_keeps_the_servers_words() -> None:
    # arkime shows only the tag smtp:statuscode:521; tshark shows the text.
    require_corpus()
    (txn,) = tables("arkime/smtp-data-521.pcap").transactions.to_dict("records")
    assert (txn["data_code"], txn["data_enhanced"], txn["data_reply"]) == (
        521,
        "5.2.1",
        "5.2.1 MUST COMPLETE IMAGE PUZZLE BEFORE SENDING. PLEASE GOTO "
        "http://challenge.aol.com/spam.html",
    )
    assert txn["status"] == "rejected"


@pytest.mark.parametrize("capture_id", or_missing(ARKIME, 1))
def test_arkime_community_id(capture_id: str) -> None:
    # arkime tags each session with its Community ID (network.community_id),
    # as Zeek and Suricata do: the same value lets a user pivot between them.
    t = tables(capture_id)
    bodies = _arkime_sessions(capture_id)
    assert bodies
    for body in bodies:
        session = the_session(t, body["source"]["ip"], body["source"]["port"])
        assert session.community_id == body["network"]["community_id"]


# Folded subjects (RFC 5322 2.2.3 unfolding keeps the whitespace after the
# fold): 8859-multi has CRLF and five spaces before "5spaces", 8859-q and
# utf8-mixed CRLF and 53 or 58 spaces before "test".
ARKIME_SUBJECT_XFAIL: dict[str, str] = {}

# Subjects compared as sent rather than decoded, and why.
ARKIME_RAW_SUBJECTS = {
    # The header carries byte 0x92, not UTF-8 and not encoded: arkime guesses
    # windows-1252 (’); our columns escape invalid UTF-8 as \x92.
    "arkime/smtp-subject-windows.pcap": (
        "Awesome windows: See What\\x92s Next in charset decoding!"
    ),
    # Encoded words glued to text ("xxxxxxxxxxxxx:=?UTF-8?Q?...") and folds
    # between encoded words, which RFC 2047 6.2 says to drop and arkime keeps.
    # The header as sent, unfolded by removing the CRLFs (RFC 5322 2.2.3):
    "arkime/smtp-subject-multi-nospace.pcap": (
        "xxxxxxxxxxxxx:=?UTF-8?Q?=20xxxx=C3=AAxx=20xx=C3=A9xxxxxxx?="
        "  =?UTF-8?Q?xx=20xxx=20xxx=20xxxxxxxxxx?="
        "  =?UTF-8?Q?x=20xx=20xxxxxxxxxxxxxxx=20?==?UTF-8?Q?=2D=20xxxx?="
    ),
}


def _arkime_subject_cases() -> list[Any]:
    cases = []
    for capture_id in ARKIME:
        marks = []
        if capture_id in ARKIME_SUBJECT_XFAIL:
            reason = ARKIME_SUBJECT_XFAIL[capture_id]
            marks.append(known_bug(reason))
        cases.append(pytest.param(capture_id, id=capture_id, marks=marks))
    return cases


@pytest.mark.parametrize("capture_id", or_missing(_arkime_subject_cases(), 1))
def test_arkime_subject(capture_id: str) -> None:
    # Our subject column keeps the header as sent; arkime decodes RFC 2047
    # encoded words, so ours are decoded (standard library) to compare.
    t = tables(capture_id)
    for body in _arkime_sessions(capture_id):
        session = the_session(t, body["source"]["ip"], body["source"]["port"])
        subjects = [
            txn.subject
            for txn in transactions_of(t, session.session_id)
            if value(txn.subject) is not None
        ]
        if capture_id in ARKIME_RAW_SUBJECTS:
            assert subjects == [ARKIME_RAW_SUBJECTS[capture_id]]
            continue
        expected = body.get("email", {}).get("subject", [])
        assert [decoded(s) for s in subjects] == expected


# ---------------------------------------------------------------------------
# 2d. nDPI


def test_ndpi_flow() -> None:
    # tests__cfgs__default__result__smtp.pcap.out:27: "TCP
    # 194.7.248.153:2127 <-> 172.16.114.207:25 [proto: 3/SMTP] ...
    # [51 pkts/19311 bytes <-> 44 pkts/3846 bytes] ...
    # [Hostname/SNI: pigeon.eyrie.af.mil]". nDPI's SMTP hostname is the
    # first word of the server's greeting. Its byte counts are IP lengths,
    # ours are SMTP bytes, so they are not compared.
    t = tables("ndpi/smtp.pcap")
    session = only_session(t)
    assert (session.client_ip, session.client_port) == ("194.7.248.153", 2127)
    assert (session.server_ip, session.server_port) == ("172.16.114.207", 25)
    assert (session.client_packets, session.server_packets) == (51, 44)
    assert session.greeting_text.split()[0] == "pigeon.eyrie.af.mil"
    out = CORPUS / "ntop__nDPI" / "tests__cfgs__default__result__smtp.pcap.out"
    flow = out.read_text(encoding="utf-8").splitlines()[26]
    assert "194.7.248.153:2127 <-> 172.16.114.207:25" in flow
    assert "[51 pkts/19311 bytes <-> 44 pkts/3846 bytes]" in flow
    assert "[Hostname/SNI: pigeon.eyrie.af.mil]" in flow


# ---------------------------------------------------------------------------
# 3. Findings from the bytes that no expected output states


def test_bare_lf_dot_accepted_by_server() -> None:
    # The client sends the whole dialogue in one segment before the banner;
    # its message ends "hate hate hate\r\n.\n\n". Sendmail answers, after
    # 354, "250 2.0.0 ... Message accepted for delivery" and then "500 5.5.1
    # Command unrecognized" for the empty line: it took ".\n" as the end of
    # data. The bare_lf_dot_line anomaly is right to stay.
    t = tables("arkime/smtp-subject-windows.pcap")
    txn = transactions_of(t, only_session(t).session_id)[0]
    assert "bare_lf_dot_line" in set(t.anomalies.kind)
    assert (txn.status, value(txn.data_code)) == ("accepted", 250)


@pytest.mark.parametrize(
    "capture_id",
    [
        # HELO, MAIL alice (250), EHLO (250), MAIL bob ...
        "suricata/smtp-ehlo-reset__input.pcap",
        # EHLO, MAIL alice, RCPT bob (250), HELO (250), MAIL bob ...
        "suricata/smtp-helo-reset-after-rcpt__input.pcap",
    ],
)
def test_accepted_helo_resets_transaction(capture_id: str) -> None:
    t = tables(capture_id)
    first = transactions_of(t, only_session(t).session_id)[0]
    assert first.status == "reset"


@pytest.mark.parametrize(
    ("capture_id", "refusals"),
    [
        # EHLO, MAIL, RCPT, then a BDAT Postfix cannot parse, answered 521
        # 5.5.4 before it closes: once per session (Zeek's last_reply 521).
        (
            "zeek/smtp__smtp-bdat-cmd-invalid.pcapng",
            [
                "2024-01-15 15:41:38.584016",
                "2024-01-15 15:42:58.990031",
                "2024-01-15 15:43:35.079715",
            ],
        ),
        (
            "zeek/smtp__smtp-bdat-cmd-chunk-size-overflow.pcap",
            ["2024-01-19 11:41:59.637049"],
        ),
        (
            "zeek/smtp__smtp-bdat-cmd-chunk-size-overflow2.pcap",
            ["2024-01-19 12:21:00.150115"],
        ),
        (
            "zeek/smtp__smtp-bdat-cmd-negative-chunk-size.pcap",
            ["2024-01-19 11:43:01.678442"],
        ),
    ],
)
def test_a_refused_bdat_is_recorded_as_a_refused_data(
    capture_id: str, refusals: list[str]
) -> None:
    # No chunk went: the refusal is the transaction's outcome, as a 554 to
    # DATA would be, at the 521's time; message_complete is None.
    t = tables(capture_id)
    assert [
        (
            row.status,
            row.end,
            row.data_method,
            row.data_code,
            row.data_reply,
            value(row.message_complete),
        )
        for row in t.transactions.itertuples()
    ] == [
        (
            "rejected",
            _stamped(clock),
            "BDAT",
            521,
            "5.5.4 Syntax: BDAT count [LAST]",
            None,
        )
        for clock in refusals
    ]


def test_a_transaction_the_close_left_open_has_no_end() -> None:
    # MAIL, RCPT refused 553, then FIN: nothing ended the transaction on
    # the wire (it ended with the session's last packet, 14:10:23.067866,
    # before), and no message went.
    t = tables("arkime/smtp-rcpt-553.pcap")
    [txn] = t.transactions.itertuples()
    assert (txn.status, value(txn.end), value(txn.message_complete)) == (
        "incomplete",
        None,
        None,
    )


def _stamped(clock: str) -> pd.Timestamp:
    return pd.Timestamp(clock, tz="UTC")


def _commands_and_times(t: SmtpTables) -> list[tuple[str, pd.Timestamp]]:
    return [(row.verb, row.ts) for row in t.commands.itertuples()]


def _transaction_times(t: SmtpTables) -> list[tuple[Any, Any, str]]:
    return [
        (row.start, value(row.end), row.status) for row in t.transactions.itertuples()
    ]


def test_one_side_only_commands_keep_their_segments_times() -> None:
    # The client's side alone (no SYN-ACK, no reply): frames 4 to 7 carry
    # EHLO, MAIL, RCPT and DATA, 2 to 3 ms apart; frame 8 brings the first
    # message past 4 KiB, and what was held until then is read. Read as one,
    # the four took frame 4's time, and the first transaction started at
    # the EHLO (found by a user). The second message's commands were never
    # held (frames 10, 11, 12; QUIT in 17). No reply ends either
    # transaction on the wire: both are incomplete, without an end.
    t = tables("zeek/smtp-one-side-only.pcap")
    assert _commands_and_times(t) == [
        ("EHLO", _stamped("2014-06-11 00:23:09.935267")),
        ("MAIL", _stamped("2014-06-11 00:23:09.937303")),
        ("RCPT", _stamped("2014-06-11 00:23:09.940732")),
        ("DATA", _stamped("2014-06-11 00:23:09.942016")),
        ("MAIL", _stamped("2014-06-11 00:23:09.993233")),
        ("RCPT", _stamped("2014-06-11 00:23:09.995871")),
        ("DATA", _stamped("2014-06-11 00:23:09.999159")),
        ("QUIT", _stamped("2014-06-11 00:23:10.050885")),
    ]
    assert t.commands.latency_s.isna().all()  # no reply captured
    assert _transaction_times(t) == [
        (_stamped("2014-06-11 00:23:09.937303"), None, "incomplete"),
        (_stamped("2014-06-11 00:23:09.993233"), None, "incomplete"),
    ]
    session = only_session(t)
    assert (session.start, session.end, session.duration_s) == (
        _stamped("2014-06-11 00:23:09.905880"),
        _stamped("2014-06-11 00:23:10.051527"),
        0.145647,
    )
    assert (session.synack_seen, session.handshake_completed) == (False, True)
    assert (session.client_bytes, session.client_packets, session.anomalies) == (
        18530,
        19,
        0,
    )


def test_attachment_msg_commands_keep_their_segments_times() -> None:
    # Over ::1, the client's side alone: EHLO in frame 4, MAIL in 8, RCPT
    # in 10, DATA in 12 and the message in 14, 688 bytes in all, held to
    # the close and read then. Read as one, the four took frame 4's time.
    t = tables("zeek/smtp-attachment-msg.pcap")
    assert _commands_and_times(t) == [
        ("EHLO", _stamped("2021-01-13 17:12:06.000496")),
        ("MAIL", _stamped("2021-01-13 17:12:06.000957")),
        ("RCPT", _stamped("2021-01-13 17:12:06.001180")),
        ("DATA", _stamped("2021-01-13 17:12:06.001323")),
    ]
    assert t.commands.latency_s.isna().all()
    assert _transaction_times(t) == [
        (_stamped("2021-01-13 17:12:06.000957"), None, "incomplete")
    ]
    session = only_session(t)
    assert (session.start, session.end, session.duration_s) == (
        _stamped("2021-01-13 17:12:05.999672"),
        _stamped("2021-01-13 17:12:06.003820"),
        0.004148,
    )
    assert (session.synack_seen, session.handshake_completed) == (False, True)
    assert (session.client_bytes, session.client_packets, session.anomalies) == (
        688,
        17,
        0,
    )
