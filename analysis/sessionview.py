"""One session in detail, for ``read --session``: who and what, the
dialogue in time order, then its anomalies and the alerts that name it.

It is made from the session's rows as the tables hold them, never from the
wire again: what the rows hide (AUTH payloads, the passwords a server
echoed) stays hidden, and every wire string reaches rich as a ``Text``
from ``analysis.escape.terminal_text``, as in ``analysis.views``.

The dialogue is read as "Follow TCP stream" shows one, but parsed: each
command with its reply under it (``C:`` and ``S:`` as the alerts' examples
write them; a multi-line reply as lines, ``250-`` before the last), the
time of each line from the session's start, the wait for each reply, and
marks for pipelined commands and those read inside TLS with a key log.
Each transaction's outcome is a line of its own when it was settled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from analysis.detect import Alert, Severity
from analysis.escape import terminal_text
from analysis.records import (
    CommandRecord,
    SessionRecord,
    SessionResult,
    TlsRecord,
    TransactionRecord,
)
from analysis.severity import SEVERITY_STYLE

MISSING = "-"
NS = 1_000_000_000


def session_view(result: SessionResult, alerts: Sequence[Alert]) -> Group:
    """``result`` in detail, with ``alerts``, those that name it."""
    session = result.session
    title = Text("session ", style="bold")
    title.append_text(terminal_text(session.session_id))
    title.stylize("bold")
    return Group(
        title,
        Padding(_header(result), (0, 0, 1, 2), expand=False),
        _dialogue(result),
        Text(""),
        _anomalies(result),
        Text(""),
        _alerts(alerts),
    )


def _header(result: SessionResult) -> Table:
    session = result.session
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    duration = _duration(session.end - session.start)
    rows: list[tuple[str, Text]] = [
        ("start", Text(_timestamp(session.start))),
        ("end", Text(f"{_timestamp(session.end)}, {duration} later")),
        ("client", terminal_text(_endpoint(session.client_ip, session.client_port))),
        ("server", terminal_text(_endpoint(session.server_ip, session.server_port))),
    ]
    if session.community_id is not None:
        rows.append(("community id", terminal_text(session.community_id)))
    rows += [
        ("helo", _helo(session)),
        ("tls", _tls_posture(session)),
        ("auth", _auth(session)),
        ("mails", _mails(session)),
        ("bytes", _bytes(session)),
        ("close", _close(session)),
    ]
    for label, value in rows:
        grid.add_row(Text(label), value)
    return grid


def _helo(session: SessionRecord) -> Text:
    if session.helo is None:
        return Text(MISSING, style="dim")
    text = terminal_text(session.helo_verb or "")
    text.append(" ")
    text.append_text(terminal_text(session.helo))
    return text


def _tls_posture(session: SessionRecord) -> Text:
    text = terminal_text(session.tls)
    if session.tls == "none":
        if session.starttls_offered:
            text.append(", STARTTLS offered")
        elif session.capabilities:
            text.append(", STARTTLS not offered")
        elif session.helo_verb == "HELO":
            text.append(", HELO (no extensions offered)")
        else:
            # No EHLO reply in the capture (HELO, none sent, a gap, a server
            # that closed first): nothing was offered or withheld (found in
            # a new user's trial: "not offered" where no greeting came).
            text.append(", no EHLO reply seen")
        if session.starttls_attempted:
            reply = session.starttls_reply
            text.append(f", asked for: {reply if reply is not None else 'no reply'}")
        return text
    text.append(f", handshake {session.tls_handshake}")
    _append_tls_facts(
        text,
        session.tls_version,
        session.tls_cipher,
        session.tls_sni,
        session.tls_alert,
    )
    if session.cert_subject is not None:
        text.append(", certificate ")
        text.append_text(terminal_text(session.cert_subject))
    if session.tls_decrypted:
        text.append(", decrypted with the key log")
    return text


def _auth(session: SessionRecord) -> Text:
    if not session.auth_attempts:
        return Text(MISSING, style="dim")
    text = terminal_text(session.auth_mechanism or "?")
    if session.auth_user is not None:
        text.append(", user ")
        text.append_text(terminal_text(session.auth_user))
    if session.auth_result is not None:
        text.append(": ")
        start = len(text)
        text.append_text(terminal_text(session.auth_result))
        text.stylize("green" if session.auth_result == "success" else "red", start)
    attempts = session.auth_attempts
    text.append(f" ({attempts:,} {_plural(attempts, 'attempt')}")
    if session.auth_cleartext:
        text.append(", before any TLS")
    text.append(")")
    return text


def _mails(session: SessionRecord) -> Text:
    return Text(
        f"{session.transactions:,} {_plural(session.transactions, 'transaction')}, "
        f"{session.messages_accepted:,} {_plural(session.messages_accepted, 'message')}"
        " accepted"
    )


def _bytes(session: SessionRecord) -> Text:
    text = Text(
        f"{session.client_bytes:,} from the client, "
        f"{session.server_bytes:,} from the server"
    )
    if session.gaps:
        text.append(
            f"; {session.gaps:,} {_plural(session.gaps, 'gap')} "
            f"({session.gap_bytes:,} bytes not captured)",
            style="red",
        )
    return text


def _close(session: SessionRecord) -> Text:
    return terminal_text(session.close)


@dataclass(frozen=True, slots=True)
class _Line:
    """One line of the dialogue: its time (None: not known), the wait for
    it (a reply's), its marks and its text."""

    ts: int | None
    wait: float | None
    marks: str
    text: Text


# Where events at the same nanosecond go: the dialogue's lines first, an
# outcome (said once its reply is in) after them.
_SAID, _OUTCOME = 0, 1


def _listing(title: Text) -> Table:
    """A table of the view's lists (dialogue, anomalies, alerts): no box,
    a title on its left, columns one space apart."""
    return Table(
        title=title,
        title_justify="left",
        box=None,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        header_style="bold underline",
    )


def _dialogue(result: SessionResult) -> Table:
    session = result.session
    table = _listing(
        Text("dialogue (time from the session's start, wait for each reply)")
    )
    table.add_column(Text("time"), justify="right", no_wrap=True)
    table.add_column(Text("wait"), justify="right", no_wrap=True)
    table.add_column(Text("marks"), no_wrap=True)
    table.add_column(Text("line"), overflow="fold")
    for line in _lines(result):
        time = "" if line.ts is None else _offset(line.ts - session.start)
        wait = "" if line.wait is None else _duration_s(line.wait)
        table.add_row(Text(time), Text(wait), Text(line.marks), line.text)
    return table


def _lines(result: SessionResult) -> Iterator[_Line]:
    """The dialogue's lines in time order; a reply under its command."""
    session = result.session
    if session.greeting_code is not None:
        # Its time is not kept, only its delay from the TCP handshake.
        delay, code = session.greeting_delay_s, session.greeting_code
        yield from _reply(None, delay, code, session.greeting_text)
    events: list[tuple[int, int, int, list[_Line]]] = []
    # A DATA message goes under the DATA command it followed, where it was
    # sent: at the time of its reply it would come after the commands
    # pipelined behind it, or, unanswered, after the QUIT.
    under = _data_commands(result)
    for seq, command in enumerate(result.commands):
        lines = list(_command(command))
        txn = under.get(seq)
        if txn is not None:
            lines += _outcome(txn, session)
        events.append((command.ts, _SAID, seq, lines))
    for seq, tls in enumerate(result.tls):
        events.append((tls.start, _SAID, seq, [_tls_line(tls, session)]))
    if session.tls != "none" and not result.tls:
        ts = session.tls_start if session.tls_start is not None else session.start
        events.append((ts, _SAID, 0, [_caught_in_tls(session)]))
    placed = {id(txn) for txn in under.values()}
    for txn in result.transactions:
        if id(txn) in placed:
            continue
        ts = txn.end if txn.end is not None else session.end
        lines = list(_outcome(txn, session))
        events.append((ts, _OUTCOME, txn.index, lines))
    events.sort(key=lambda event: event[:3])
    for *_, lines in events:
        yield from lines


def _data_commands(result: SessionResult) -> dict[int, TransactionRecord]:
    """The transactions that sent a message with DATA, by the position of
    their DATA command among the commands: the last DATA answered 354 (or
    not at all) after the transaction's MAIL and before the next MAIL.
    Where that is in doubt (rows capped, a MAIL inside a transaction) a
    transaction is left out, and shown when it ended."""
    by_index = {txn.index: txn for txn in result.transactions}
    found: dict[int, int] = {}  # transaction index: DATA command position
    mails = -1
    for seq, command in enumerate(result.commands):
        if command.verb == "MAIL":
            mails += 1
        elif command.verb == "DATA" and command.reply_code in (354, None):
            found[mails] = seq
    under: dict[int, TransactionRecord] = {}
    for index, seq in found.items():
        txn = by_index.get(index)
        if txn is None or txn.data_method != "DATA":
            continue
        if txn.message_complete is None:
            continue
        ts = result.commands[seq].ts
        if ts < txn.start or (txn.end is not None and ts > txn.end):
            continue
        under[seq] = txn
    return under


def _command(command: CommandRecord) -> Iterator[_Line]:
    marks = " ".join(
        mark
        for mark, on in (("pipelined", command.pipelined), ("decrypted", command.tls))
        if on
    )
    text = Text("C: ")
    said = command.verb + (f" {command.argument}" if command.argument else "")
    text.append_text(terminal_text(said))
    yield _Line(command.ts, None, marks, text)
    if command.reply_code is None:
        yield _Line(None, None, "", Text("S: (no reply)", style="dim"))
        return
    yield from _reply(
        command.reply_ts, command.latency_s, command.reply_code, command.reply_text
    )


def _reply(
    ts: int | None, wait: float | None, code: int, text: str | None
) -> Iterator[_Line]:
    """A reply as its lines, ``250-`` before the last as on the wire; the
    time and wait on its first. Marks are the command's alone."""
    lines = (text or "").split("\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        shown = Text(f"S: {code}{' ' if last else '-'}")
        shown.append_text(terminal_text(line))
        if code >= 400:
            shown.stylize("red" if code >= 500 else "yellow")
        yield _Line(ts if i == 0 else None, wait if i == 0 else None, "", shown)


def _outcome(txn: TransactionRecord, session: SessionRecord) -> Iterator[_Line]:
    """A transaction's end: a DATA message and the reply to it (which
    answers no command row of its own), then what became of it."""
    marks = "decrypted" if txn.tls and session.tls_decrypted else ""
    sent = txn.data_method == "DATA" and txn.message_complete is not None
    if sent:
        size = MISSING if txn.message_bytes is None else f"{txn.message_bytes:,}"
        whole = "" if txn.message_complete else ", incomplete"
        yield _Line(None, None, marks, Text(f"C: (message: {size} bytes{whole})"))
        if txn.data_code is not None:
            yield from _reply(txn.end, None, txn.data_code, txn.data_reply)
    text = Text(f"== mail {txn.index + 1} {txn.status}", style="bold")
    text.append(f": {txn.rcpts_accepted:,} of {txn.rcpts_total:,} ")
    text.append(_plural(txn.rcpts_total, "recipient") + " accepted")
    if txn.data_method == "BDAT" and txn.message_bytes is not None:
        text.append(f", {txn.message_bytes:,} bytes in BDAT chunks")
    if txn.queue_id is not None:
        text.append(", queue id ")
        text.append_text(terminal_text(txn.queue_id))
    yield _Line(None, None, "", text)


def _tls_line(tls: TlsRecord, session: SessionRecord) -> _Line:
    text = Text(f"== TLS ({tls.mode}) handshake {tls.outcome}", style="bold")
    _append_tls_facts(text, tls.version, tls.cipher, tls.sni, tls.alert)
    if not session.tls_decrypted:
        text.append(_encrypted(session))
    return _Line(tls.start, None, "", text)


def _append_tls_facts(
    text: Text,
    version: str | None,
    cipher: str | None,
    sni: str | None,
    alert: str | None,
) -> None:
    """A handshake's version, cipher, SNI and alert, those it has, escaped."""
    for value in (version, cipher):
        if value is not None:
            text.append(", ")
            text.append_text(terminal_text(value))
    if sni is not None:
        text.append(", SNI ")
        text.append_text(terminal_text(sni))
    if alert is not None:
        text.append(", alert ")
        text.append_text(terminal_text(alert))


def _caught_in_tls(session: SessionRecord) -> _Line:
    """A session the capture caught inside TLS: no handshake to show."""
    text = Text(f"== TLS ({session.tls}), no handshake in the capture", style="bold")
    if not session.tls_decrypted:
        text.append(_encrypted(session))
    return _Line(session.tls_start, None, "", text)


def _encrypted(session: SessionRecord) -> str:
    return (
        f"; then encrypted: {session.tls_client_bytes:,} bytes from the "
        f"client, {session.tls_server_bytes:,} from the server"
    )


def _anomalies(result: SessionResult) -> RenderableType:
    if not result.anomalies:
        return Text("anomalies: none")
    table = _listing(Text("anomalies"))
    table.add_column(Text("time"), justify="right", no_wrap=True)
    table.add_column(Text("kind"), no_wrap=True)
    table.add_column(Text("detail"), overflow="fold")
    start = result.session.start
    for anomaly in sorted(result.anomalies, key=lambda a: a.ts):
        table.add_row(
            Text(_offset(anomaly.ts - start)),
            Text(anomaly.kind, style="yellow"),
            terminal_text(anomaly.detail),
        )
    return table


def _alerts(alerts: Sequence[Alert]) -> RenderableType:
    if not alerts:
        return Text("alerts naming this session: none")
    table = _listing(Text("alerts naming this session"))
    for header in ("severity", "kind", "alert_id", "summary"):
        table.add_column(Text(header), no_wrap=header != "summary")
    for alert in alerts:
        severity = Severity(alert.severity)
        table.add_row(
            Text(severity.value, style=SEVERITY_STYLE[severity]),
            Text(alert.kind),
            Text(alert.alert_id),
            terminal_text(alert.summary),
        )
    return table


def _timestamp(ns: int) -> str:
    """To the microsecond, as Wireshark and tcpdump show times."""
    seconds, rest = divmod(ns, NS)
    when = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{when:%Y-%m-%d %H:%M:%S}.{rest // 1000:06d} UTC"


def _offset(ns: int) -> str:
    """Time from the session's start, to the microsecond, from integers:
    a float of nanoseconds would round."""
    sign = "-" if ns < 0 else "+"
    seconds, rest = divmod(abs(ns), NS)
    return f"{sign}{seconds}.{rest // 1000:06d}"


def _duration(ns: int) -> str:
    return _duration_s(ns / NS)


def _duration_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3f} ms"
    return f"{seconds:,.3f} s"


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"
