"""The exact rows smtpscope produces for the project's own lab captures.

Every capture in ``pcaps/`` comes with its ground truth in
``pcaps/expected.json``, written from tshark's reading of the same pcap and
checked against what the generator's clients were told to do. These tests
read each capture through the public DataFrame API (``read_captures``) and
compare the four tables with that truth, row by row and cell by cell.

Three kinds of expectation are not in ``expected.json`` and are written
here: what smtpscope sees of TLS (nothing inside it: expected.json was read
with the key logs), which commands were pipelined, and which anomalies a
capture has. The packet timestamps and the message bytes are read from the
pcaps themselves by the small reader at the end of this module, so that the
ground truth is checked too, not only trusted.

A disagreement that is smtpscope's fault is an ``xfail(strict=True)`` naming
the bug (see ``KNOWN_BUGS``); it turns into a failure the day it is fixed.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import ipaddress
import itertools
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import SmtpTables, read_captures

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
EXPECTED: dict[str, Any] = json.loads((PCAPS / "expected.json").read_text())["captures"]
CAPTURES = [
    "plain-delivery.pcap",
    "rset-multi.pcap",
    "rejected-rcpt.pcap",
    "pipelining.pcap",
    "bdat.pcap",
    "auth.pcap",
    "starttls.pcap",
    "implicit-tls-465.pcap",
    "ipv6.pcap",
    "sll2-any.pcap",
    "starttls-454.pcap",
    "lf-only.pcap",
]

# Commands sent before the reply to the previous one, by capture, session
# and position in the session's command list (pcaps/README.md: swaks sends
# MAIL, three RCPTs and DATA in one segment; the raw client sends "BDAT 359",
# the chunk and "BDAT 0 LAST" in one segment). MAIL itself follows the EHLO
# reply, and BDAT 359 follows the RCPT reply: neither is pipelined.
PIPELINED: dict[str, dict[int, set[int]]] = {
    "pipelining.pcap": {0: {2, 3, 4, 5}},
    "bdat.pcap": {0: {9}},
}

# Anomaly kinds per capture and session; every other session has none.
# lf-only.pcap: the client ends every line with a bare LF (RFC 5321 2.3.8).
ANOMALIES: dict[str, dict[int, list[str]]] = {
    "lf-only.pcap": {0: ["bare_lf"]},
    # RFC 4954 4: every AUTH in auth.pcap is sent without TLS.
    "auth.pcap": {stream: ["auth_cleartext"] for stream in range(4)},
}

# (test, capture) -> the smtpscope bug that makes it fail.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def _params(test: str) -> list[Any]:
    return [
        pytest.param(
            name,
            id=name.removesuffix(".pcap"),
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[test, name])]
            if (test, name) in KNOWN_BUGS
            else [],
        )
        for name in CAPTURES
    ]


@cache
def tables(name: str) -> SmtpTables:
    return read_captures(PCAPS / name)


def session_rows(name: str) -> list[tuple[dict[str, Any], pd.Series]]:
    """Each expected session with smtpscope's row for the same connection."""
    frame = tables(name).sessions
    pairs = []
    for want in EXPECTED[name]["sessions"]:
        match = frame[
            (frame.client_ip == want["client_ip"])
            & (frame.client_port == want["client_port"])
        ]
        assert len(match) == 1, (name, want["client_port"])
        pairs.append((want, match.iloc[0]))
    return pairs


def rows_of(frame: pd.DataFrame, session_id: str) -> list[dict[str, Any]]:
    return [
        {k: _plain(v) for k, v in row.items()}
        for _, row in frame[frame.session_id == session_id].iterrows()
    ]


def _plain(value: Any) -> Any:
    """pandas' missing markers as None, numpy scalars as Python ones."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------
# What smtpscope can see of each expected session: everything in clear text,
# nothing inside TLS (expected.json was read with the key logs).
# --------------------------------------------------------------------------


def visible_commands(session: dict[str, Any]) -> list[dict[str, Any]]:
    if session["tls"] == "implicit":
        return []
    commands = session["commands"]
    if session["tls"] == "starttls":
        cut = next(
            i
            for i, c in enumerate(commands)
            if c["verb"] == "STARTTLS" and c["code"] == 220
        )
        return commands[: cut + 1]
    return commands


def visible_transactions(session: dict[str, Any]) -> list[dict[str, Any]]:
    mails = sum(c["verb"] == "MAIL" for c in visible_commands(session))
    return session["transactions"][:mails]


def reply_text(line: str) -> str:
    return line[4:]


def enhanced_code(code: int, first_line: str) -> str | None:
    """RFC 3463 class.subject.detail at the start of the reply text."""
    found = re.match(r"(\d)\.(\d{1,3})\.(\d{1,3})(?: |$)", reply_text(first_line))
    if found is None or int(found[1]) != code // 100:
        return None
    return found[0].strip()


def expected_argument(command: dict[str, Any]) -> str:
    # AUTH keeps the mechanism; an initial response is never shown.
    if command["verb"] == "AUTH" and command["initial_response"]:
        return f"{command['arg']} [redacted]"
    return command["arg"]


def expected_status(txn: dict[str, Any]) -> str:
    if txn["end"] in ("data", "bdat_last"):
        return "accepted" if txn["final_code"] // 100 == 2 else "rejected"
    return {"rset": "reset"}[txn["end"]]


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------


def test_every_capture_is_covered() -> None:
    assert sorted(CAPTURES) == sorted(EXPECTED)
    # The TLS captures of scripts/tls.py have their own record and tests
    # (test_tls_captures.py); the one of scripts/oneside.py its own tests
    # (test_client_side_only.py).
    tls_made = json.loads((PCAPS / "tls-captures.json").read_text())
    others = [entry["pcap"] for entry in tls_made.values()]
    others.append("client-side-only.pcap")
    assert sorted(CAPTURES + others) == sorted(p.name for p in PCAPS.glob("*.pcap"))
    for name in CAPTURES:
        data = (PCAPS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == EXPECTED[name]["sha256"], name


@pytest.mark.parametrize("name", _params("sessions"))
def test_sessions(name: str) -> None:
    frame = tables(name).sessions
    assert len(frame) == len(EXPECTED[name]["sessions"])
    assert tables(name).stats.errors == []
    for want, got in session_rows(name):
        commands = visible_commands(want)
        txns = visible_transactions(want)
        helos = [c for c in commands if c["verb"] in ("EHLO", "HELO", "LHLO")]
        ehlos = [c for c in helos if c["verb"] == "EHLO" and c["code"] == 250]
        auths = want["auth"]
        last_auth = auths[-1] if auths else {}
        greeting = want["greeting"] if want["tls"] != "implicit" else []
        expect = {
            "client_ip": want["client_ip"],
            "client_port": want["client_port"],
            "server_ip": want["server_ip"],
            "server_port": want["server_port"],
            "greeting_code": int(greeting[0][:3]) if greeting else None,
            "greeting_text": reply_text(greeting[0]) if greeting else None,
            "helo": helos[-1]["arg"] if helos else None,
            "helo_verb": helos[-1]["verb"] if helos else None,
            "capabilities": [reply_text(x) for x in ehlos[-1]["reply"][1:]]
            if ehlos
            else [],
            "tls": want["tls"],
            "tls_start_set": want["tls"] != "none",
            "auth_mechanism": last_auth.get("mechanism"),
            "auth_user": last_auth.get("user"),
            "auth_result": last_auth.get("result"),
            "auth_attempts": len(auths),
            "auth_failures": sum(a["result"] == "failure" for a in auths),
            "auth_successes": sum(a["result"] == "success" for a in auths),
            "commands": len(commands),
            "transactions": len(txns),
            "messages_accepted": sum(t.get("final_code") == 250 for t in txns),
            "close": "fin" if not want["tcp"]["rst"] else "rst",
            "gaps": 0,
            "gap_bytes": 0,
            "anomalies": len(ANOMALIES.get(name, {}).get(want["tcp_stream"], [])),
            "handshake_seen": want["tcp"]["handshake"],
            # Loopback loses nothing: the SYN-ACK is there whenever the SYN is.
            "synack_seen": want["tcp"]["handshake"],
            # Every one of them got to talking.
            "handshake_completed": True,
        }
        actual = {k: _plain(got[k]) for k in expect if k != "tls_start_set"}
        actual["tls_start_set"] = not pd.isna(got["tls_start"])
        assert actual == expect, (name, want["tcp_stream"])


TXN_COLUMNS = (
    "index",
    "mail_from",
    "mail_from_code",
    "mail_params",
    "rcpt_to",
    "rcpt_codes",
    "rcpts_accepted",
    "data_method",
    "data_code",
    "message_bytes",
    "queue_id",
    "status",
    "date",
    "from",
    "to",
    "cc",
    "subject",
    "message_id",
    "tls",
    "message_complete",
    "data_enhanced",
    "data_reply",
)


def final_reply(txn: dict[str, Any]) -> tuple[str | None, str | None]:
    """The enhanced code and text of a transaction's final reply, if any."""
    reply = txn.get("final_reply")
    if reply is None:
        return None, None
    lines = [reply] if isinstance(reply, str) else reply
    text = "\n".join(reply_text(line) for line in lines)
    return enhanced_code(txn["final_code"], lines[0]), text


@pytest.mark.parametrize("name", _params("transactions"))
def test_transactions(name: str) -> None:
    total = 0
    for want, got in session_rows(name):
        rows = rows_of(tables(name).transactions, got["session_id"])
        expect = []
        for index, txn in enumerate(visible_transactions(want)):
            headers = txn.get("headers", {})
            sent = "message_size" in txn
            expect.append(
                {
                    "index": index,
                    "mail_from": txn["mail_from"],
                    "mail_from_code": txn["mail_code"],
                    "mail_params": txn["mail_params"] or None,
                    "rcpt_to": [r["addr"] for r in txn["rcpt_to"]],
                    "rcpt_codes": [r["code"] for r in txn["rcpt_to"]],
                    "rcpts_accepted": len(txn["rcpt_accepted"]),
                    "data_method": txn.get("data_mode"),
                    "data_code": txn.get("final_code"),
                    "message_bytes": txn.get("message_size"),
                    "queue_id": txn.get("queue_id"),
                    "status": expected_status(txn),
                    "date": headers.get("Date"),
                    "from": headers.get("From"),
                    "to": headers.get("To"),
                    "cc": headers.get("Cc"),
                    "subject": headers.get("Subject"),
                    "message_id": headers.get("Message-ID"),
                    "tls": False,
                    # None where no content went (README: transactions).
                    "message_complete": True if sent else None,
                    "data_enhanced": final_reply(txn)[0],
                    "data_reply": final_reply(txn)[1],
                    "end_set": expected_status(txn) != "incomplete",
                    "data_duration_set": sent,
                }
            )
        actual = []
        for row in rows:
            picked = {k: row[k] for k in TXN_COLUMNS}
            picked["end_set"] = row["end"] is not None
            picked["data_duration_set"] = row["data_duration_s"] is not None
            actual.append(picked)
        assert actual == expect, (name, want["tcp_stream"])
        total += len(rows)
    assert total == len(tables(name).transactions)


@pytest.mark.parametrize("name", _params("commands"))
def test_commands(name: str) -> None:
    total = 0
    for want, got in session_rows(name):
        rows = rows_of(tables(name).commands, got["session_id"])
        pipelined = PIPELINED.get(name, {}).get(want["tcp_stream"], set())
        expect = [
            (
                c["verb"],
                expected_argument(c),
                c["code"],
                enhanced_code(c["code"], c["reply"][0]),
                "\n".join(reply_text(line) for line in c["reply"]),
                i in pipelined,
                False,
            )
            for i, c in enumerate(visible_commands(want))
        ]
        actual = [
            (
                r["verb"],
                r["argument"],
                r["reply_code"],
                r["reply_enhanced"],
                r["reply_text"],
                r["pipelined"],
                r["tls"],
            )
            for r in rows
        ]
        assert actual == expect, (name, want["tcp_stream"])
        total += len(rows)
    assert total == len(tables(name).commands)


@pytest.mark.parametrize("name", _params("anomalies"))
def test_anomalies(name: str) -> None:
    for want, got in session_rows(name):
        rows = rows_of(tables(name).anomalies, got["session_id"])
        expect = ANOMALIES.get(name, {}).get(want["tcp_stream"], [])
        assert [r["kind"] for r in rows] == expect, (name, want["tcp_stream"])
    assert len(tables(name).anomalies) == sum(
        len(kinds) for kinds in ANOMALIES.get(name, {}).values()
    )


@pytest.mark.parametrize("name", _params("timestamps"))
def test_timestamps(name: str) -> None:
    capture = read_pcap(PCAPS / name)
    t = tables(name)
    first = t.sessions.iloc[0]["start"]
    assert isinstance(first, pd.Timestamp)
    assert str(first.tz) == "UTC"
    assert first == _timestamp(capture.first_ts)

    for want, got in session_rows(name):
        flow = capture.flows[want["client_ip"], want["client_port"]]
        assert got["start"] == _timestamp(flow.first_ts), want["tcp_stream"]
        if not pd.isna(got["tls_start"]):
            assert got["start"] <= got["tls_start"] <= got["end"]

    commands = t.commands
    assert commands.reply_ts.notna().all()
    assert (commands.reply_ts >= commands.ts).all()
    latency = (commands.reply_ts - commands.ts).dt.total_seconds()
    assert ((latency - commands.latency_s).abs() < 1e-9).all()

    # A transaction starts with its MAIL command.
    mails = commands[commands.verb == "MAIL"]
    assert list(t.transactions.start) == list(mails.ts)


@pytest.mark.parametrize("name", _params("wire_times"))
def test_command_and_reply_times_are_their_packets(name: str) -> None:
    """A command's ts is its segment's, reply_ts the segment that completed
    the reply (aiosmtpd sends each EHLO line in a segment of its own), and an
    accepted message's transaction ends with the final reply."""
    capture = read_pcap(PCAPS / name)
    for want, got in session_rows(name):
        flow = capture.flows[want["client_ip"], want["client_port"]]
        times = wire_times(flow, want)
        rows = rows_of(tables(name).commands, got["session_id"])
        assert [(r["ts"], r["reply_ts"]) for r in rows] == [
            (_timestamp(sent), _timestamp(replied)) for sent, replied, _ in times
        ]
        finals = [_timestamp(final) for _, _, final in times if final is not None]
        txns = rows_of(tables(name).transactions, got["session_id"])
        accepted = [r["end"] for r in txns if r["status"] == "accepted"]
        assert accepted == finals, want["tcp_stream"]


@pytest.mark.parametrize("name", _params("byte_counts"))
def test_byte_counts(name: str) -> None:
    """Application bytes each way, and how many of them were TLS records."""
    capture = read_pcap(PCAPS / name)
    for want, got in session_rows(name):
        flow = capture.flows[want["client_ip"], want["client_port"]]
        sent, received = flow.sent.data(), flow.received.data()
        clear_sent = clear_received = 0
        if want["tls"] == "none":
            clear_sent, clear_received = len(sent), len(received)
        elif want["tls"] == "starttls":
            # Clear text up to the STARTTLS line and its 220 reply.
            clear_sent = sent.upper().index(b"STARTTLS\r\n") + len(b"STARTTLS\r\n")
            ready = _reply_bytes(visible_commands(want)[-1])
            clear_received = received.index(ready) + len(ready)
        assert (
            got["client_bytes"],
            got["server_bytes"],
            got["tls_client_bytes"],
            got["tls_server_bytes"],
        ) == (
            len(sent),
            len(received),
            len(sent) - clear_sent,
            len(received) - clear_received,
        ), want["tcp_stream"]


@pytest.mark.parametrize("name", _params("whole_connection"))
def test_session_covers_every_packet(name: str) -> None:
    capture = read_pcap(PCAPS / name)
    for want, got in session_rows(name):
        flow = capture.flows[want["client_ip"], want["client_port"]]
        assert flow.packets == want["tcp"]["frames"]
        packets = got["client_packets"] + got["server_packets"]
        assert (got["end"], packets) == (_timestamp(flow.last_ts), flow.packets)


def wire_times(
    flow: Flow, session: dict[str, Any]
) -> list[tuple[int, int, int | None]]:
    """Per visible command: when it was sent, when its reply was complete,
    and when the final reply to its message content was complete (DATA, or
    the BDAT LAST chunk), found by walking both byte streams in order."""
    sent, received = flow.sent.data(), flow.received.data()
    sent_at = received_at = 0
    if session["tls"] != "implicit":
        received_at = _find(received, _reply_bytes(session["greeting"]), 0)[1]
    times = []
    for command in visible_commands(session):
        line = " ".join(filter(None, [command["verb_raw"], command["arg"]]))
        start, sent_at = _find(sent, line.encode(), sent_at, line_start=True)
        if "chunk_size" in command:  # RFC 3030 2: the chunk follows the line
            sent_at += len(b"\r\n") + command["chunk_size"]
        received_at = _find(received, _reply_bytes(command), received_at)[1]
        replied = flow.received.ts_at(received_at - 1)
        final = replied if command.get("last") else None
        if "final_reply" in command:
            text = _reply_bytes(command["final_reply"])
            received_at = _find(received, text, received_at)[1]
            final = flow.received.ts_at(received_at - 1)
        times.append((flow.sent.ts_at(start), replied, final))
    return times


def _reply_bytes(reply: dict[str, Any] | list[str]) -> bytes:
    lines = reply["reply"] if isinstance(reply, dict) else reply
    return "".join(line + "\r\n" for line in lines).encode()


def _find(
    stream: bytes, text: bytes, pos: int, *, line_start: bool = False
) -> tuple[int, int]:
    """Where ``text`` next occurs from ``pos`` on: (start, end).

    With ``line_start``, only at the start of a line, or right at ``pos``:
    a command after a BDAT chunk follows the chunk's last byte, which need
    not end a line.
    """
    while True:
        start = stream.index(text, pos)
        at_line_start = start == pos or stream[start - 1 : start] == b"\n"
        if not line_start or at_line_start:
            return start, start + len(text)
        pos = start + 1


@pytest.mark.parametrize("name", CAPTURES, ids=lambda n: n.removesuffix(".pcap"))
def test_expected_message_size_is_the_unstuffed_wire_content(name: str) -> None:
    """expected.json's message_size and sha256 agree with the pcap's bytes.

    The message is what the client sent after DATA, dot-unstuffed
    (RFC 5321 4.5.2), or its BDAT chunks put together (RFC 3030 2).
    make_captures.py has already compared these hashes with the messages
    its clients were given, so this ties the sizes to what the script sent.
    """
    capture = read_pcap(PCAPS / name)
    for want in EXPECTED[name]["sessions"]:
        if want["tls"] != "none":
            continue  # the content is encrypted on the wire
        flow = capture.flows[want["client_ip"], want["client_port"]]
        sent = list(client_messages(flow.client_bytes()))
        expect = [t for t in want["transactions"] if "message_size" in t]
        assert [len(m) for m in sent] == [t["message_size"] for t in expect]
        assert [hashlib.sha256(m).hexdigest() for m in sent] == [
            t["message_sha256"] for t in expect
        ]
    if name == "plain-delivery.pcap":
        wire = capture.flows["127.0.0.1", EXPECTED[name]["sessions"][0]["client_port"]]
        assert b"\r\n..this line starts with a dot\r\n" in wire.client_bytes()


def test_no_password_in_any_table() -> None:
    secrets = credential_strings()
    for name in CAPTURES:
        for table, frame in tables(name).frames().items():
            for column in frame.columns:
                for cell in frame[column]:
                    for text in _strings(cell):
                        leaked = [s for s in secrets if s in text]
                        assert not leaked, (name, table, column)


def credential_strings() -> set[str]:
    """The generator's AUTH passwords and every form they take on the wire.

    Read from make_captures.py without running it, plus each base64 line the
    clients sent in auth.pcap after an AUTH command (initial responses and
    answers to challenges, except the "*" that cancels).
    """
    tree = ast.parse((PCAPS / "make_captures.py").read_text())
    consts: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in (
                "AUTH_USERS",
                "WRONG_PASSWORD",
            ):
                consts[target.id] = ast.literal_eval(node.value)
    users: dict[str, str] = consts["AUTH_USERS"]
    passwords = [*users.values(), consts["WRONG_PASSWORD"]]
    assert len(passwords) == 3

    secrets = set(passwords)
    for password in passwords:
        secrets.add(base64.b64encode(password.encode()).decode())
        for user in users:
            plain = f"\0{user}\0{password}".encode()
            secrets.add(base64.b64encode(plain).decode())

    capture = read_pcap(PCAPS / "auth.pcap")
    on_wire = set()
    for flow in capture.flows.values():
        on_wire.update(auth_lines(flow.client_bytes()))
    assert len(on_wire) >= 4  # PLAIN ir, LOGIN pairs, PLAIN after 334
    decoded = b"".join(base64.b64decode(x) for x in on_wire)
    assert all(p.encode() in decoded for p in passwords)
    # The user names are meant to be shown; their base64 alone is no secret.
    return secrets | {x for x in on_wire if base64.b64decode(x) not in _names(users)}


def _names(users: dict[str, str]) -> set[bytes]:
    return {u.encode() for u in users}


def _strings(cell: Any) -> Iterator[str]:
    if isinstance(cell, str):
        yield cell
    elif isinstance(cell, list):
        for item in cell:
            yield from _strings(item)


def _timestamp(ns: int) -> pd.Timestamp:
    return pd.Timestamp(ns, unit="ns", tz="UTC")


# --------------------------------------------------------------------------
# A small reader for these captures: classic pcap, Ethernet or SLL2, IPv4 or
# IPv6, TCP. Enough for clean loopback captures, and independent of both
# smtpscope's capture package and tshark.
# --------------------------------------------------------------------------


@dataclass
class Stream:
    """One direction's payload: capture time of each piece, by sequence number."""

    pieces: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    def data(self) -> bytes:
        return b"".join(piece for _, piece in self._in_order())

    def ts_at(self, offset: int) -> int:
        """Capture time of the segment that carried byte ``offset``."""
        start = 0
        for ts, piece in self._in_order():
            if offset < start + len(piece):
                return ts
            start += len(piece)
        raise IndexError(offset)

    def _in_order(self) -> list[tuple[int, bytes]]:
        seqs = sorted(self.pieces)
        for seq, following in itertools.pairwise(seqs):
            assert following == seq + len(self.pieces[seq][1]), "hole or overlap"
        return [self.pieces[seq] for seq in seqs]


@dataclass
class Flow:
    first_ts: int
    client: tuple[str, int]
    last_ts: int = 0
    packets: int = 0
    sent: Stream = field(default_factory=Stream)  # by the client
    received: Stream = field(default_factory=Stream)  # from the server

    def client_bytes(self) -> bytes:
        return self.sent.data()


@dataclass
class Capture:
    first_ts: int
    flows: dict[tuple[str, int], Flow]  # by client address and port


@cache
def read_pcap(path: Path) -> Capture:
    raw = path.read_bytes()
    magic = raw[:4]
    micro = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}.get(magic)
    nano = {b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    order = micro or nano
    assert order, f"{path.name}: not a classic pcap"
    linktype = struct.unpack(order + "I", raw[20:24])[0]
    scale = 1 if nano else 1000

    flows: dict[tuple[str, int], Flow] = {}
    first_ts = None
    offset = 24
    while offset < len(raw):
        sec, frac, caplen, _ = struct.unpack(order + "IIII", raw[offset : offset + 16])
        frame = raw[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        ts = sec * 1_000_000_000 + frac * scale
        first_ts = ts if first_ts is None else first_ts
        packet = _tcp(linktype, frame)
        if packet is None:
            continue
        src, dst, flags, seq, payload = packet
        syn_only = flags & 0x12 == 0x02
        if syn_only and src not in flows:
            flows[src] = Flow(first_ts=ts, client=src)
        flow = flows.get(src) or flows[dst]
        flow.last_ts = ts
        flow.packets += 1
        if payload:
            stream = flow.sent if src == flow.client else flow.received
            stream.pieces.setdefault(seq, (ts, payload))  # first copy wins
    assert first_ts is not None
    return Capture(first_ts, flows)


def _tcp(linktype: int, frame: bytes) -> tuple[Any, Any, int, int, bytes] | None:
    if linktype == 1:  # Ethernet
        ethertype, ip = struct.unpack("!H", frame[12:14])[0], frame[14:]
    elif linktype == 276:  # Linux cooked capture v2
        ethertype, ip = struct.unpack("!H", frame[0:2])[0], frame[20:]
    else:
        raise AssertionError(f"link type {linktype}")
    if ethertype == 0x0800:
        header = (ip[0] & 0x0F) * 4
        total, proto = struct.unpack("!H", ip[2:4])[0], ip[9]
        src_ip, dst_ip = _v4(ip[12:16]), _v4(ip[16:20])
        tcp = ip[header:total]
    elif ethertype == 0x86DD:
        length, proto = struct.unpack("!H", ip[4:6])[0], ip[6]
        src_ip, dst_ip = _v6(ip[8:24]), _v6(ip[24:40])
        tcp = ip[40 : 40 + length]
    else:
        return None
    if proto != 6:
        return None
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    data_offset, flags = tcp[12] >> 4, tcp[13]
    return (src_ip, sport), (dst_ip, dport), flags, seq, tcp[data_offset * 4 :]


def _v4(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _v6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))


def client_messages(stream: bytes) -> Iterator[bytes]:
    """Each message the client sent, unstuffed, in order."""
    pos = 0
    while pos < len(stream):
        end = stream.index(b"\n", pos) + 1
        line = stream[pos:end]
        pos = end
        words = line.split()
        verb = words[0].upper() if words else b""
        if verb == b"DATA":
            lines = []
            while True:
                end = stream.index(b"\n", pos) + 1
                line = stream[pos:end]
                pos = end
                if line.rstrip(b"\r\n") == b".":
                    break
                lines.append(line[1:] if line.startswith(b".") else line)
            yield b"".join(lines)
        elif verb == b"BDAT":
            chunks = []
            while True:
                size = int(words[1])
                chunks.append(stream[pos : pos + size])
                pos += size
                if len(words) > 2 and words[2].upper() == b"LAST":
                    break
                end = stream.index(b"\n", pos) + 1
                words = stream[pos:end].split()
                pos = end
                assert words[0].upper() == b"BDAT"
            yield b"".join(chunks)


def auth_lines(stream: bytes) -> Iterator[str]:
    """Base64 credentials a client sent in AUTH exchanges (not the '*').

    After an AUTH command every client line up to the next command is an
    answer to a challenge (RFC 4954 4).
    """
    in_auth = False
    for line in stream.decode("ascii").split("\r\n"):
        words = line.split()
        verb = words[0].upper() if words else ""
        if verb == "AUTH":
            in_auth = True
            yield from words[2:3]  # the initial response, if any
        elif verb in _VERBS or not line:
            in_auth = False
        elif in_auth and line != "*":
            yield line


_VERBS = {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT"}
