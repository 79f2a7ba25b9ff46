"""``read --session``: sessions chosen by id or prefix, shown in detail."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from analysis.cli import main
from analysis.sessionview import session_view
from tests.analysis.table_samples import hostile_session
from tests.analysis.test_load import _conversation
from tests.corpus import CORPUS, require_corpus

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
AUTH = str(PCAPS / "auth.pcap")
RSET = str(PCAPS / "rset-multi.pcap")

# auth.pcap's sessions, in table order.
AUTH_IDS = [
    "Szkyy4lfbfkthc33c",
    "St7q3wod27oerqxk3",
    "Suhoxbsxnzi33qbfg",
    "Sxj2qo5m6mdksxfey",
]

# auth.pcap's first session: AUTH PLAIN with its initial response, then a
# message. The lines as shown, without the padding rich ends them with.
PLAIN_SESSION = [
    "session Szkyy4lfbfkthc33c",
    "  start         2026-12-04 16:44:08.360686 UTC",
    "  end           2026-12-04 16:44:08.364976 UTC, 4.290 ms later",
    "  client        127.0.0.1:38960",
    "  server        127.0.0.1:587",
    "  community id  1:lcaQvWGB/OvY8HI7j5MfwqmGrMg=",
    "  helo          EHLO client.smtpscope.test",
    "  tls           none, STARTTLS not offered",
    "  auth          PLAIN, user alice: success (1 attempt, before any TLS)",
    "  mails         1 transaction, 1 message accepted",
    "  bytes         497 from the client, 287 from the server",
    "  close         fin",
    "",
    "dialogue (time from the session's start, wait for each reply)",
    "     time     wait marks line",
    "          2.373 ms       S: 220 mail.smtpscope.test Python SMTP 1.4.6",
    "+0.002544                C: EHLO client.smtpscope.test",
    "+0.002840 0.296 ms       S: 250-mail.smtpscope.test",
    "                         S: 250-SIZE 33554432",
    "                         S: 250-8BITMIME",
    "                         S: 250-SMTPUTF8",
    "                         S: 250-AUTH LOGIN PLAIN",
    "                         S: 250 HELP",
    "+0.002925                C: AUTH PLAIN [redacted]",
    "+0.003164 0.239 ms       S: 235 2.7.0 Authentication successful",
    "+0.003243                C: MAIL FROM:<sender@client.smtpscope.test> size=324",
    "+0.003495 0.252 ms       S: 250 OK",
    "+0.003537                C: RCPT TO:<bob@smtpscope.test>",
    "+0.003680 0.143 ms       S: 250 OK",
    "+0.003697                C: DATA",
    "+0.003747 0.050 ms       S: 354 End data with <CR><LF>.<CR><LF>",
    "                         C: (message: 324 bytes)",
    "+0.003844                S: 250 2.0.0 Message accepted for delivery",
    "                         == mail 1 accepted: 1 of 1 recipient accepted",
    "+0.003860                C: QUIT",
    "+0.003900 0.040 ms       S: 221 Bye",
    "",
    "anomalies",
    "     time kind           detail",
    "+0.002925 auth_cleartext AUTH sent before any TLS",
    "",
    "alerts naming this session: none",
    "",
]


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    # Into a pipe, every column is shown whole (see cli._show).
    monkeypatch.delenv("COLUMNS", raising=False)


def test_a_prefix_shows_its_session_in_place_of_the_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["read", AUTH, "--no-summary", "--session", "Szk"]) == 0
    out, err = capsys.readouterr()
    assert _lines(out) == PLAIN_SESSION
    assert err == ""


def test_no_secret_of_any_auth_session_is_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The passwords of pcaps/make_captures.py, as typed and in base64, and
    # alice's PLAIN response.
    assert main(["read", AUTH, "--session", ",".join(AUTH_IDS)]) == 0
    out = capsys.readouterr().out
    for secret in (
        "throwaway",
        "not-bobs",
        "dGhyb3dhd2F5",  # "throwaway" in base64, at the three offsets
        "Rocm93YXdhe",
        "0aHJvd2F3YX",
        "AGFsaWNl",  # "\0alice"
    ):
        assert secret not in out
    assert out.count("C: AUTH PLAIN [redacted]") == 1
    assert "  auth          LOGIN, user bob: failure (1 attempt, before any TLS)" in (
        out
    )
    # The cancelled LOGIN and the PLAIN after it, whose response came apart.
    lines = _lines(out)
    assert "+0.000926                C: AUTH LOGIN" in lines  # bob's, refused
    assert "S: 501 5.7.0 Auth aborted" in out


def test_sessions_come_in_table_order_with_the_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Asked last, shown first; an id given whole and as a prefix is shown once.
    argv = ["read", RSET, AUTH, "--session", "Sxj2qo5m6mdksxfey,Szkyy"]
    assert main([*argv, "--session", "Sxj2"]) == 0
    out = _lines(capsys.readouterr().out)
    assert out[0].startswith("╭") and "smtpscope summary" in out[0]
    titles = [line for line in out if line.startswith("session ")]
    assert titles == ["session Szkyy4lfbfkthc33c", "session Sxj2qo5m6mdksxfey"]
    assert "sessions on 2026-12-04 (UTC)" not in "\n".join(out)
    start = out.index("session Szkyy4lfbfkthc33c")
    assert out[start : start + len(PLAIN_SESSION)] == PLAIN_SESSION


def test_the_same_with_two_processes_and_the_files_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    argv = ["read", RSET, AUTH, "--session", "Spx,St7q"]
    assert main([*argv, "-j", "1", "-o", str(one)]) == 0
    alone = capsys.readouterr().out
    assert main([*argv, "-j", "2", "-o", str(two)]) == 0
    assert capsys.readouterr().out == alone
    for table in ("sessions", "commands", "transactions", "anomalies"):
        assert (one / f"{table}.jsonl").read_text() == (
            two / f"{table}.jsonl"
        ).read_text()
    sessions = (two / "sessions.jsonl").read_text().splitlines()
    assert len(sessions) == 5  # every session written, not only those shown
    shown = [line for line in _lines(alone) if line.startswith("session ")]
    assert shown == ["session St7q3wod27oerqxk3", "session Spxvbwhelahmq54eu"]


def test_a_transaction_reset_and_messages_in_the_dialogue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["read", RSET, "--no-summary", "--session", "Spx"]) == 0
    out = _lines(capsys.readouterr().out)
    start = out.index("                         C: (message: 364 bytes)")
    assert out[start : start + 13] == [
        "                         C: (message: 364 bytes)",
        "+0.019772                S: 250 2.0.0 Ok: queued as 6746620C443",
        "                         == mail 2 accepted: 2 of 2 recipients accepted, "
        "queue id 6746620C443",
        "+0.019820                C: RSET",
        "+0.019833 0.013 ms       S: 250 2.0.0 Ok",
        "+0.019882                C: MAIL FROM:<sender@client.smtpscope.test>",
        "+0.019904 0.022 ms       S: 250 2.1.0 Ok",
        "+0.019977                C: RCPT TO:<alice@smtpscope.test>",
        "+0.020526 0.549 ms       S: 250 2.1.5 Ok",
        "+0.020569                C: RSET",
        "+0.020589 0.020 ms       S: 250 2.0.0 Ok",
        # Said once the RSET's reply came, which ended the transaction.
        "                         == mail 3 reset: 1 of 1 recipient accepted",
        "+0.020643                C: MAIL FROM:<sender@client.smtpscope.test> size=333",
    ]


def test_pipelined_commands_are_marked(capsys: pytest.CaptureFixture[str]) -> None:
    capture = str(PCAPS / "pipelining.pcap")
    assert main(["read", capture, "--no-summary", "--session", "S"]) == 0
    out = _lines(capsys.readouterr().out)
    marked = [line for line in out if "pipelined" in line]
    # Sent in MAIL's segment; each reply under its own command.
    assert marked == [
        "+0.001174          pipelined C: RCPT TO:<alice@smtpscope.test>",
        "+0.001174          pipelined C: RCPT TO:<nosuch@smtpscope.test>",
        "+0.001174          pipelined C: RCPT TO:<bob@smtpscope.test>",
        "+0.001174          pipelined C: DATA",
    ]
    rejected = out.index(marked[1]) + 1
    assert out[rejected] == (
        "+0.001762 0.588 ms           S: 550 5.1.1 <nosuch@smtpscope.test>: "
        "Recipient address rejected: User unknown in local recipient table"
    )


def test_an_ambiguous_prefix_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", AUTH, RSET, "--no-summary", "--session", "S"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "smtpscope: --session S: ambiguous, the ids of 5 sessions begin so "
        "(Spxvbwhelahmq54eu, St7q3wod27oerqxk3, Suhoxbsxnzi33qbfg, "
        "Sxj2qo5m6mdksxfey, Szkyy4lfbfkthc33c); give more of it\n"
    )
    # Refused even beside an id that picked a session: the ask was wrong.
    assert main(["read", AUTH, "--no-summary", "--session", "Szk,Su,St"]) == 0
    assert main(["read", AUTH, "--no-summary", "--session", "Szk,S"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("session Szkyy4lfbfkthc33c\n")
    assert err == (
        "smtpscope: --session S: ambiguous, the ids of 4 sessions begin so "
        "(St7q3wod27oerqxk3, Suhoxbsxnzi33qbfg, Sxj2qo5m6mdksxfey, "
        "Szkyy4lfbfkthc33c); give more of it\n"
    )


def test_an_unknown_id_fails_only_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", AUTH, "--no-summary", "--session", "Snone"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "smtpscope: --session Snone: no session has this id, or one beginning so\n"
    )
    # An id of another capture among those of this one (from an alert, say).
    assert main(["read", AUTH, "--no-summary", "--session", "Snone,Szk"]) == 0
    out, err = capsys.readouterr()
    assert _lines(out) == PLAIN_SESSION
    assert err == (
        "smtpscope: --session Snone: no session has this id, or one beginning so\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--session", ""], "'' is not a session id or a prefix of one"),
        (["--session", "Sa,,Sb"], "'' is not a session id or a prefix of one"),
        (["--session", "Sa b"], "'Sa b' is not a session id or a prefix of one"),
        (["--session", "Sa", "-q"], "--session shows sessions on stdout"),
    ],
)
def test_session_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["read", AUTH, *argv]) == 2
    assert message in capsys.readouterr().err


def test_wire_strings_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ESC sequences, a bidi override, a bare CR inside a command and an OSC
    # that would retitle the terminal.
    lines = [
        (False, b"220 mail.example ESMTP \xe2\x80\xae\r\n"),
        (True, b"EHLO evil\x1b[31mred\r\n"),
        (False, b"250-mail.example hi \x1b]0;title\x07\r\n250 PIPELINING\r\n"),
        (True, b"MAIL FROM:<a\rb@x.example>\r\n"),
        (False, b"250 2.1.0 ok\r\n"),
        (True, b"RCPT TO:<gpj\xe2\x80\xaeexe@x.example>\r\n"),
        (False, b"550 5.1.1 <gpj\xe2\x80\xaeexe@x.example>\x1b[2J unknown\r\n"),
        (True, b"QUIT\r\n"),
        (False, b"221 bye\r\n"),
    ]
    capture = _conversation(tmp_path / "hostile.pcapng", lines, last=17 * 10**17)
    assert main(["read", str(capture), "--no-summary", "--session", "S"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out
    assert _lines(out)[6:] == [
        "  helo          EHLO evil\\x1b[31mred",
        "  tls           none, STARTTLS not offered",
        "  auth          -",
        "  mails         1 transaction, 0 messages accepted",
        "  bytes         83 from the client, 144 from the server",
        "  close         end_of_capture",
        "",
        "dialogue (time from the session's start, wait for each reply)",
        "     time     wait marks line",
        "          1.000 ms       S: 220 mail.example ESMTP \\u202e",
        "+0.004000                C: EHLO evil\\x1b[31mred",
        "+0.005000 1.000 ms       S: 250-mail.example hi \\x1b]0;title\\x07",
        "                         S: 250 PIPELINING",
        "+0.006000                C: MAIL FROM:<a\\x0db@x.example>",
        "+0.007000 1.000 ms       S: 250 2.1.0 ok",
        "+0.008000                C: RCPT TO:<gpj\\u202eexe@x.example>",
        "+0.009000 1.000 ms       S: 550 5.1.1 <gpj\\u202eexe@x.example>"
        "\\x1b[2J unknown",
        "+0.010000                C: QUIT",
        "+0.011000 1.000 ms       S: 221 bye",
        # Never settled: said at the session's end.
        "                         == mail 1 incomplete: 0 of 1 recipient accepted",
        "",
        "anomalies: none",
        "",
        "alerts naming this session: none",
        "",
    ]


def test_the_view_escapes_rows_made_elsewhere_and_fits_a_width() -> None:
    # The sample's helo holds ESC, its greeting markup, its anomaly detail
    # CR LF; at 60 columns the long lines fold within the width. Its rows
    # lack what the session builder always gives (no reply text to the
    # 535, no greeting delay), which shows as nothing.
    written = io.StringIO()
    console = Console(file=written, record=True, width=60, force_terminal=True)
    console.print(session_view(hostile_session(), []))
    assert "\x1b[31mred" not in written.getvalue()
    assert _lines(console.export_text()) == [
        "session s-a",
        "  start   2024-01-02 03:03:55.123456 UTC",
        "  end     2024-01-02 03:04:00.123456 UTC, 5.000 s later",
        "  client  203.0.113.7:50000",
        "  server  198.51.100.1:587",
        "  helo    HELO evil\\x1b[31mred",
        "  tls     none, HELO (no extensions offered)",
        "  auth    LOGIN: failure (3 attempts)",
        "  mails   2 transactions, 0 messages accepted",
        "  bytes   0 from the client, 0 from the server; 1 gap (40",
        "          bytes not captured)",
        "  close   rst",
        "",
        "dialogue (time from the session's start, wait for each",
        "reply)",
        "     time wait marks line",
        "                     S: 554 go away [bold]shout[/bold]",
        "+1.000000            C: HELO evil\\x1b[31mred",
        "                     S: (no reply)",
        "+2.000000            C: AUTH LOGIN [redacted]",
        "                     S: 535",
        "                     == mail 1 rejected: 0 of 0 recipients",
        "                     accepted",
        "                     == mail 2 incomplete: 0 of 0 recipients",
        "                     accepted",
        "",
        "anomalies",
        "     time kind   detail",
        "+2.000000 markup [bold]shout[/bold]",
        "+4.000000 gap    40 bytes missing\\x0d\\x0afrom client",
        "",
        "alerts naming this session: none",
    ]


def test_alerts_naming_the_session_are_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    capture = str(PCAPS / "abuse" / "auth-abuse.pcap")
    argv = ["read", capture, "--no-summary", "--session", "Stsigonreadjfccry"]
    assert main(argv) == 0
    out = _lines(capsys.readouterr().out)
    start = out.index("alerts naming this session")
    assert out[start:] == [
        "alerts naming this session",
        "severity kind                   alert_id          summary",
        "medium   auth_user_many_clients Ac4j4kifnaryhybgv AUTH for user carol "
        "failed from 6 different clients within 1 hour.",
        "",
    ]
    # The alerts table of the run still comes first.
    assert out[0].strip() == "alerts, most severe first (UTC)"


def test_parquet_tables_give_the_same_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyarrow")
    argv = ["read", AUTH, "--no-summary", "--session", "Szk"]
    assert main([*argv, "-o", str(tmp_path), "--format", "parquet"]) == 0
    assert _lines(capsys.readouterr().out) == PLAIN_SESSION
    assert (tmp_path / "sessions.parquet").exists()


def test_the_session_table_names_the_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without --session: each row's id and client port lead to the rows.
    assert main(["read", AUTH, "--no-summary", "-o", str(tmp_path)]) == 0
    rows = _lines(capsys.readouterr().out)[2:]
    written = [json.loads(line) for line in (tmp_path / "sessions.jsonl").open()]
    assert [row.split()[1:3] for row in rows] == [
        [s["session_id"], f"127.0.0.1:{s['client_port']}"] for s in written
    ]
    assert [row.split()[1] for row in rows] == AUTH_IDS


def test_a_message_shows_under_its_data_command_where_it_was_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The message's end and the next MAIL in one segment, their replies in
    # the next: at its reply's time the message came after the MAIL.
    lines = [
        (False, b"220 mx\r\n"),
        (True, b"EHLO c\r\n"),
        (False, b"250-mx\r\n250 PIPELINING\r\n"),
        (True, b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n"),
        (False, b"250 ok\r\n250 ok\r\n354 go\r\n"),
        (True, b"Subject: hi\r\n\r\nhello\r\n.\r\nMAIL FROM:<c@x>\r\n"),
        (False, b"250 queued as QID1\r\n250 ok\r\n"),
        (True, b"QUIT\r\n"),
        (False, b"221 bye\r\n"),
    ]
    capture = _conversation(tmp_path / "posted.pcapng", lines, last=17 * 10**17)
    assert main(["read", str(capture), "--no-summary", "--session", "S"]) == 0
    out = _lines(capsys.readouterr().out)
    start = out.index("+0.006000          pipelined C: DATA")
    assert out[start : start + 9] == [
        "+0.006000          pipelined C: DATA",
        "+0.007000 1.000 ms           S: 354 go",
        "                             C: (message: 22 bytes)",
        "+0.009000                    S: 250 queued as QID1",
        "                             == mail 1 accepted: 1 of 1 recipient "
        "accepted, queue id QID1",
        "+0.008000          pipelined C: MAIL FROM:<c@x>",
        "+0.009000 1.000 ms           S: 250 ok",
        "+0.010000                    C: QUIT",
        "+0.011000 1.000 ms           S: 221 bye",
    ]


def test_an_unanswered_message_shows_under_its_data_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A capture of the client's side alone: no reply settles the messages,
    # which once all came after the QUIT.
    lines = [
        (True, b"EHLO c\r\n"),
        (True, b"MAIL FROM:<a@x>\r\n"),
        (True, b"RCPT TO:<b@x>\r\n"),
        (True, b"DATA\r\n"),
        (True, b"Subject: one\r\n\r\n.\r\n"),
        (True, b"MAIL FROM:<a@x>\r\n"),
        (True, b"RCPT TO:<c@x>\r\n"),
        (True, b"DATA\r\n"),
        (True, b"Subject: two\r\n\r\n.\r\n"),
        (True, b"QUIT\r\n"),
    ]
    capture = _conversation(tmp_path / "client.pcapng", lines, last=17 * 10**17)
    assert main(["read", str(capture), "--no-summary", "--session", "S"]) == 0
    out = _lines(capsys.readouterr().out)
    start = out.index("+0.004000            C: MAIL FROM:<a@x>")
    assert out[start:] == [
        "+0.004000            C: MAIL FROM:<a@x>",
        "                     S: (no reply)",
        "+0.005000            C: RCPT TO:<b@x>",
        "                     S: (no reply)",
        "+0.006000            C: DATA",
        "                     S: (no reply)",
        "                     C: (message: 16 bytes)",
        "                     == mail 1 incomplete: 0 of 1 recipient accepted",
        "+0.008000            C: MAIL FROM:<a@x>",
        "                     S: (no reply)",
        "+0.009000            C: RCPT TO:<c@x>",
        "                     S: (no reply)",
        "+0.010000            C: DATA",
        "                     S: (no reply)",
        "                     C: (message: 16 bytes)",
        "                     == mail 2 incomplete: 0 of 1 recipient accepted",
        "+0.012000            C: QUIT",
        "                     S: (no reply)",
        "",
        "anomalies: none",
        "",
        "alerts naming this session: none",
        "",
    ]


def test_an_id_not_reached_before_a_stop_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: a Ctrl-C a second into a large capture said the
    # session did not exist, where the reading never came to it.
    from analysis import pipeline
    from tests.analysis.test_interrupt import _interrupted_source

    monkeypatch.setattr(pipeline, "handle_stream_events", _interrupted_source)
    assert main(["read", AUTH, "--no-summary", "--session", "Snone"]) == 130
    err = capsys.readouterr().err
    assert err.startswith(
        "smtpscope: --session Snone: no session has this id, or one beginning "
        "so, in what was read before the stop\n"
    )


def test_a_session_without_an_ehlo_reply_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Found in a new user's trial: a server that closed before its greeting
    # was said not to offer STARTTLS, though nothing was offered or withheld.
    require_corpus()
    path = CORPUS / "OISF__suricata-verify" / "tests__smtp-quit__input.pcap"
    assert main(["read", str(path), "--no-summary", "--session", "S"]) == 0
    assert "  tls           none, no EHLO reply seen" in _lines(capsys.readouterr().out)
