"""Implicit TLS on a port of the user's choosing: ``--tls-port``.

``pcaps/implicit-tls-10465.pcap`` (``pcaps/scripts/tlsport.py``) holds one
session of ``smtplib.SMTP_SSL`` limited to TLS 1.2, with the SNI
mail.smtpscope.test, to aiosmtpd speaking TLS from the first byte on
127.0.0.1:10465; inside, EHLO, one message to alice and QUIT. Named as
``--tls-port`` it reads as 465 would; named as ``--port`` alone, as a
plain SMTP port where the client began TLS at once.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import cli, pipeline, read_captures
from analysis.cli import build_parser, main
from analysis.export import json_line
from analysis.live import LiveAnalyzer
from analysis.tls import decrypt
from capture import libpcap, source
from capture.live import capture_filters
from capture.pcapfile import open_capture
from tests.analysis import tls_port
from tests.analysis.test_tls_captures import needs_tshark

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
CAPTURE = PCAPS / tls_port.CAPTURE
KEYLOG = CAPTURE.with_suffix(".keylog")
MADE = json.loads((PCAPS / "tls-captures.json").read_text())["implicit-tls-10465"]

# The session's TLS columns, as the capture's ClientHello and server
# handshake give them (TLS 1.2: the certificate travels in the clear).
SESSION_TLS = {
    "server_port": 10465,
    "tls": "implicit",
    "tls_start": pd.Timestamp("2026-12-06T11:27:26.009936", tz="UTC"),
    "tls_client_bytes": 857,
    "tls_server_bytes": 1471,
    "tls_version": "TLSv1.2",
    "tls_cipher": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "tls_sni": "mail.smtpscope.test",
    "tls_ja3": "70e47b149c152d891341c87d58c2b327",
    "tls_ja4": "t12d150700_d68b136fe8d9_e7e480e5a997",
    "tls_handshake": "completed",
    "tls_alert": None,
    "cert_subject": "CN=mail.smtpscope.test",
    "cert_issuer": "CN=mail.smtpscope.test",
    "cert_sha256": MADE["cert_sha256"],
    "cert_self_signed": True,
    "starttls_offered": False,
    "starttls_attempted": False,
    "auth_cleartext": False,
    "tls_decrypted": False,
    "close": "rst",
    "anomalies": 0,
}
TLS_ROW = {
    "mode": "implicit",
    "outcome": "completed",
    "client_version": "TLSv1.2",
    "version": "TLSv1.2",
    "cipher": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "cipher_id": 0xC02C,
    "sni": "mail.smtpscope.test",
    "alpn": [],
    "ja3": "70e47b149c152d891341c87d58c2b327",
    "hello_retry": False,
    "alert": None,
    "cert_count": 1,
    "cert_subject": "CN=mail.smtpscope.test",
    "cert_sans": ["mail.smtpscope.test"],
    "cert_sha256": MADE["cert_sha256"],
    "cert_self_signed": True,
}
PLAIN_PORT_ANOMALY = [("tls_on_plain_port", "client began TLS at once")]


def _plain(value: Any) -> Any:
    """A cell as Python compares it: NA and NaT as None, lists as lists."""
    if isinstance(value, list):
        return value
    return None if pd.isna(value) else value


def _row(frame: pd.DataFrame, columns: dict[str, Any]) -> dict[str, Any]:
    assert len(frame) == 1
    return {name: _plain(frame[name].iloc[0]) for name in columns}


def test_the_capture_is_the_one_the_script_made() -> None:
    assert hashlib.sha256(CAPTURE.read_bytes()).hexdigest() == MADE["sha256"]
    assert MADE["messages_received"] == 1


def test_a_tls_port_reads_as_implicit_tls() -> None:
    tables = read_captures(CAPTURE, implicit_tls_ports=tls_port.IMPLICIT_TLS)
    assert _row(tables.sessions, SESSION_TLS) == SESSION_TLS
    assert _row(tables.tls, TLS_ROW) == TLS_ROW
    assert tables.tls["session_id"].tolist() == tables.sessions["session_id"].tolist()
    assert tables.anomalies.empty
    assert tables.stats.errors == []


def test_the_port_alone_keeps_the_plain_port_reading() -> None:
    # Watched as SMTP but not named as TLS: a ClientHello where commands
    # were due, read as TLS all the same, and said so.
    tables = read_captures(CAPTURE, ports=tls_port.PORTS)
    anomalies = list(
        zip(tables.anomalies["kind"], tables.anomalies["detail"], strict=True)
    )
    assert anomalies == PLAIN_PORT_ANOMALY
    assert _row(tables.sessions, SESSION_TLS) == SESSION_TLS | {"anomalies": 1}
    assert _row(tables.tls, TLS_ROW) == TLS_ROW
    # Named nowhere, the port is not SMTP.
    assert read_captures(CAPTURE).sessions.empty


def test_libpcaps_filter_passes_the_tls_port(monkeypatch: pytest.MonkeyPatch) -> None:
    if not libpcap.available():
        pytest.skip("libpcap is not installed")
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    tables = read_captures(CAPTURE, implicit_tls_ports={10465})
    assert tables.stats.filtered
    assert tables.stats.smtp_packets == tables.stats.packets == 31
    assert _row(tables.sessions, SESSION_TLS) == SESSION_TLS


def _read_dir(tmp_path: Path, name: str, *options: str) -> dict[str, str]:
    out = tmp_path / name
    captures = [str(CAPTURE), str(PCAPS / "implicit-tls-465.pcap")]
    captures.append(str(PCAPS / "starttls.pcap"))
    assert main(["read", *captures, "-q", "-o", str(out), *options]) == 0
    return {file.name: file.read_text() for file in sorted(out.iterdir())}


def test_read_with_two_processes_gives_the_tables_of_one(tmp_path: Path) -> None:
    one = _read_dir(tmp_path, "one", "--tls-port", "10465", "-j", "1")
    two = _read_dir(tmp_path, "two", "--tls-port", "10465", "-j", "2")
    assert two == one
    sessions = [json.loads(line) for line in one["sessions.jsonl"].splitlines()]
    assert sorted((s["server_port"], s["tls"]) for s in sessions) == [
        (465, "implicit"),
        (587, "starttls"),
        (10465, "implicit"),
    ]
    assert one["anomalies.jsonl"].count("tls_on_plain_port") == 0
    assert len(one["tls.jsonl"].splitlines()) == 3


def test_port_and_tls_port_together_are_implicit_tls(tmp_path: Path) -> None:
    both = _read_dir(tmp_path, "both", "--port", "10465", "--tls-port", "10465")
    tls = _read_dir(tmp_path, "tls", "--tls-port", "465,10465")
    assert both == tls
    plain = _read_dir(tmp_path, "plain", "--port", "10465", "-j", "2")
    assert plain["anomalies.jsonl"].count('"kind":"tls_on_plain_port"') == 1
    assert plain["tls.jsonl"] == tls["tls.jsonl"]


def test_a_key_log_decrypts_the_tls_port() -> None:
    needs_tshark()
    tables = read_captures(
        CAPTURE, implicit_tls_ports=tls_port.IMPLICIT_TLS, tls_keylog=KEYLOG
    )
    assert tables.commands["verb"].tolist() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert tables.commands["tls"].all()
    session = tables.sessions.iloc[0]
    assert (session["greeting_code"], session["helo"]) == (220, "client.smtpscope.test")
    assert session["tls_decrypted"] and session["messages_accepted"] == 1
    assert tables.transactions["subject"].tolist() == [
        "Sent over implicit TLS on port 10465"
    ]
    assert tables.anomalies.empty


def _moved(capture: bytes, port: int, to: int) -> bytes:
    """A classic pcap of Ethernet frames (as CAPTURE is) with TCP ``port``
    made ``to`` in every IPv4 segment, each end; checksums are left as they
    were, as nothing here checks them."""
    out = bytearray(capture)
    at = 24  # the file header (pcap-savefile(5))
    while at < len(out):
        (length,) = struct.unpack_from("<I", out, at + 8)
        ip = at + 16 + 14  # record header, then Ethernet
        tcp = ip + (out[ip] & 0x0F) * 4
        for field in (tcp, tcp + 2):
            if struct.unpack_from(">H", out, field)[0] == port:
                struct.pack_into(">H", out, field, to)
        at += 16 + length
    return bytes(out)


@pytest.mark.parametrize("port", [443, 143])
def test_a_key_log_decrypts_a_tls_port_tshark_takes_for_another_protocol(
    tmp_path: Path, port: int
) -> None:
    # tshark reads 443 as HTTPS and 143 as IMAP: unless told the port is
    # TLS with SMTP inside, it hands the plaintext to those dissectors, or
    # finds no TLS at all, and nothing is decrypted (the warning then
    # blames the key log).
    needs_tshark()
    moved = tmp_path / f"implicit-tls-{port}.pcap"
    moved.write_bytes(_moved(CAPTURE.read_bytes(), tls_port.PORT, port))
    tables = read_captures(
        moved,
        implicit_tls_ports=pipeline.IMPLICIT_TLS_PORTS | {port},
        tls_keylog=KEYLOG,
    )
    assert tables.commands["verb"].tolist() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    session = tables.sessions.iloc[0]
    assert session["server_port"] == port
    assert session["tls_decrypted"] and session["messages_accepted"] == 1
    assert tables.transactions["subject"].tolist() == [
        "Sent over implicit TLS on port 10465"
    ]
    assert tables.anomalies.empty


def test_tshark_is_told_the_tls_ports() -> None:
    assert decrypt._decode_as([10465, 443, 443]) == {
        "tcp.port==443": "tls",
        "tls.port==443": "smtp",
        "tcp.port==10465": "tls",
        "tls.port==10465": "smtp",
    }
    assert decrypt._decode_as(()) == {}


def test_check_reads_the_tls_port(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "-r", str(CAPTURE), "--tls-min-warn", "0.5"]
    assert main([*argv, "--tls-port", "10465"]) == 0
    line = capsys.readouterr().out
    assert "sessions=1;" in line and "tls_share=1;" in line
    # Without it, the session is on no SMTP port.
    main(argv)
    assert "sessions=0;" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["live", "check"])
def test_live_and_check_filter_on_the_tls_port(command: str) -> None:
    args = build_parser().parse_args([command, "-i", "lo", "--tls-port", "10465"])
    ports, implicit_tls = cli.port_sets(args)
    assert ports == pipeline.DEFAULT_PORTS | {10465}
    assert implicit_tls == frozenset({465, 10465})
    assert all("port 10465" in bpf for bpf in capture_filters(ports))


def _live_rows(implicit_tls: frozenset[int]) -> list[dict[str, Any]]:
    lines: list[str] = []
    analyzer = LiveAnalyzer(
        tls_port.PORTS,
        lambda table, record: lines.append(json_line(table, record)),
        implicit_tls_ports=implicit_tls,
    )
    with open_capture(str(CAPTURE)) as reader:
        for packet in reader:
            analyzer.feed(packet)
            analyzer.tick(packet.ts)
    analyzer.stop()
    return [json.loads(line) for line in lines]


def test_live_takes_the_tls_port_as_read_does() -> None:
    rows = _live_rows(tls_port.IMPLICIT_TLS)
    assert sorted(row["table"] for row in rows) == ["sessions", "tls"]
    session = next(row for row in rows if row["table"] == "sessions")
    assert (session["tls"], session["tls_sni"], session["anomalies"]) == (
        "implicit",
        "mail.smtpscope.test",
        0,
    )
    plain = _live_rows(pipeline.IMPLICIT_TLS_PORTS)
    kinds = [row["kind"] for row in plain if row["table"] == "anomalies"]
    assert kinds == ["tls_on_plain_port"]
