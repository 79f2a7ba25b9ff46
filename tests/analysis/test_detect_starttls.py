"""The starttls_downgrade and starttls_injection alerts.

``pcaps/stripping.pcap`` holds a session offered STARTTLS and two that lost
it (a keyword overwritten with ``XXXXXXXA``, and STARTTLS left out);
``pcaps/starttls-injection.pcap`` a client that sent ``STARTTLS`` and
``NOOP`` in one segment (CVE-2011-0411). The downgrade is judged across
sessions at the end of a read, after the sessions were spooled: the alert
must come out the same from the DataFrame API, the CLI under ``-j 1`` and
``-j 2``, a forked detector helper and ``check``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import detecthelp, pipeline
from analysis.detect import Alert, detect, load_rules
from analysis.downgrade import find
from analysis.live import LiveAnalyzer
from analysis.offline import build_tables, finish
from analysis.parallel import read_sharded
from analysis.records import SessionResult
from analysis.tables import read_captures
from capture.pcapfile import open_capture
from tests.analysis.conversation import C, S, session

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
STRIPPING = PCAPS / "stripping.pcap"
INJECTION = PCAPS / "starttls-injection.pcap"
BOTH = [str(STRIPPING), str(INJECTION)]

DOWNGRADE_ALONE = {
    "alert_id": "A3vvv332yq24jhg6v",
    "kind": "starttls_downgrade",
    "severity": "high",
    "client_ip": "127.0.0.1",
    "server_ip": "127.0.0.1",
    "first_seen": "2026-12-04T17:14:31.055582000Z",
    "last_seen": "2026-12-04T17:14:31.064208000Z",
    "count": 2,
    "threshold": 1,
    "window_s": 3600.0,
    "total": None,
    "sessions": 2,
    "session_ids": ["Sucw74xdoritcxkgg", "Sznvsmtbrakobgnfo"],
    "examples": [
        "possible_downgrade: EHLO keyword 'XXXXXXXA' looks overwritten "
        "(STARTTLS removed on the path?)",
        "possible_downgrade: EHLO reply without STARTTLS; 1 other session(s) "
        "to 127.0.0.1:25 were offered it",
    ],
    "summary": "STARTTLS was removed from the EHLO reply of 127.0.0.1 to "
    "127.0.0.1 in 2 session(s), so the client could not ask for TLS "
    "(STARTTLS stripping on the path); keyword XXXXXXXA in its place; "
    "STARTTLS missing where other sessions to the server got it.",
}
INJECTION_ALERT = {
    "alert_id": "A6hoief5mvh36aeyw",
    "kind": "starttls_injection",
    "severity": "high",
    "client_ip": "127.0.0.1",
    "server_ip": "127.0.0.1",
    "first_seen": "2026-12-04T17:14:29.466378000Z",
    "last_seen": "2026-12-04T17:14:29.466378000Z",
    "count": 1,
    "threshold": 1,
    "window_s": 3600.0,
    "total": None,
    "sessions": 1,
    "session_ids": ["S4gyaymlrt7zawau2"],
    "examples": ["starttls_client_injection: 6 bytes before the 220: NOOP\\r\\n"],
    "summary": "127.0.0.1 sent commands after STARTTLS before the server's 220 "
    "to 127.0.0.1 in 1 session(s): a server that queues them reads them as "
    "if sent inside TLS (STARTTLS command injection, CVE-2011-0411).",
}
# Read together, the injection's session was offered STARTTLS by the same
# server too: two others.
DOWNGRADE_BESIDE_INJECTION = {
    **DOWNGRADE_ALONE,
    "examples": [
        DOWNGRADE_ALONE["examples"][0],
        "possible_downgrade: EHLO reply without STARTTLS; 2 other session(s) "
        "to 127.0.0.1:25 were offered it",
    ],
}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _frame_rows(paths: list[str]) -> list[dict[str, Any]]:
    """The alerts table's rows as ``-o DIR --format jsonl`` writes them."""
    alerts = read_captures(paths).alerts
    rows = []
    for record in alerts.to_dict("records"):
        for column in ("first_seen", "last_seen"):
            record[column] = record[column].strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        record["total"] = None if pd.isna(record["total"]) else record["total"]
        record["session_ids"] = list(record["session_ids"])
        record["examples"] = list(record["examples"])
        rows.append(record)
    return rows


def _smtpscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _read(tmp_path: Path, name: str, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / name
    done = _smtpscope("read", *args, "-o", str(out), "--format", "jsonl", "-q")
    assert done.returncode == 0, done.stderr
    return _rows(out / "alerts.jsonl")


def test_stripping_capture_raises_one_downgrade_alert_for_its_server() -> None:
    assert _frame_rows([str(STRIPPING)]) == [DOWNGRADE_ALONE]


def test_injection_capture_raises_one_injection_alert_for_its_client() -> None:
    assert _frame_rows([str(INJECTION)]) == [INJECTION_ALERT]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_read_writes_both_alerts_under_any_number_of_processes(
    tmp_path: Path, jobs: str
) -> None:
    rows = _read(tmp_path, f"j{jobs}", *BOTH, "-j", jobs)
    assert rows == [INJECTION_ALERT, DOWNGRADE_BESIDE_INJECTION]


def test_sharded_spool_and_forked_helper_give_the_same_alerts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = read_captures(BOTH).alerts
    with read_sharded(BOTH, pipeline.DEFAULT_PORTS, 2) as spool:
        sharded = build_tables(spool).alerts
        # The helper judges its share from the spool in a forked process;
        # the downgrade's detector stays here, and sees the findings.
        monkeypatch.setattr(detecthelp, "MIN_SESSIONS", 0)
        helped = finish(spool, helper=True).alerts
        # So does an engine fed the spool's evidence alone (the helper's
        # way, and its fallback).
        judged, _ = detecthelp.judge(spool, detecthelp.REST_SHARE)
    assert list(sharded["alert_id"]) == list(whole["alert_id"])
    assert list(sharded["summary"]) == list(whole["summary"])
    assert [a.alert_id for a in helped] == list(whole["alert_id"])
    assert sorted(a.alert_id for a in judged) == sorted(whole["alert_id"])
    assert list(whole["alert_id"]) == [
        INJECTION_ALERT["alert_id"],
        DOWNGRADE_BESIDE_INJECTION["alert_id"],
    ]


def test_check_counts_them_as_alerts() -> None:
    done = _smtpscope("check", "-r", *BOTH, "--alerts-warn", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("SMTPSCOPE WARNING - alerts 2 above 0 - ")
    assert " alerts=2;0;;0 " in done.stdout
    for name, count in [(STRIPPING, 1), (INJECTION, 1)]:
        alone = _smtpscope("check", "-r", str(name), "--alerts-warn", "0")
        assert alone.returncode == 1
        assert f" alerts={count};0;;0 " in alone.stdout


def test_rules_turn_them_off(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[starttls_downgrade]\nenabled = false\n[starttls_injection]\nenabled = false\n"
    )
    assert read_captures(BOTH, rules=load_rules(rules)).alerts.empty


def _live_alerts(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    analyzer = LiveAnalyzer(
        pipeline.DEFAULT_PORTS,
        lambda table, record: rows.append(
            {"table": table, "kind": getattr(record, "kind", None), "record": record}
        ),
    )
    with open_capture(str(path)) as reader:
        for packet in reader:
            analyzer.feed(packet)
            analyzer.tick(packet.ts)
    analyzer.stop()
    return [row for row in rows if row["table"] == "alerts"]


def test_live_raises_the_injection_as_the_session_closes() -> None:
    alerts = _live_alerts(INJECTION)
    # Once when crossed, once when over (at the stop), with one id.
    assert [a["kind"] for a in alerts] == ["starttls_injection"] * 2
    first: Alert = alerts[0]["record"]
    assert first.alert_id == INJECTION_ALERT["alert_id"]
    assert first.summary == INJECTION_ALERT["summary"]


def test_live_does_not_judge_the_downgrade() -> None:
    # possible_downgrade needs every session to the server, later ones too:
    # live has no such anomaly and so no starttls_downgrade (README).
    assert _live_alerts(STRIPPING) == []


EHLO_MASKED = (
    b"250-mx.example.com\r\n250-XXXA\r\n250-SIZE\r\n250-XXXXXXXB\r\n250 XXXC\r\n"
)


def _plain(ehlo_reply: bytes, client: str, start: int) -> SessionResult:
    return session(
        [
            (S, b"220 mx.example.com ESMTP\r\n"),
            (C, b"EHLO c.example.org\r\n"),
            (S, ehlo_reply),
            (C, b"QUIT\r\n"),
            (S, b"221 bye\r\n"),
        ],
        start_seen=True,
        client=client,
        start=start,
    )


def test_a_reply_with_every_unknown_keyword_masked_raises_no_alert() -> None:
    # A box that masks every extension it does not know (Cisco PIX, as in
    # the public corpus) says nothing of STARTTLS: the anomaly alone.
    result = _plain(EHLO_MASKED, "198.51.100.7", 0)
    values = {
        name: [getattr(result.session, name)]
        for name in (
            "session_id",
            "start",
            "server_ip",
            "server_port",
            "starttls_offered",
            "capabilities",
            "tls",
            "helo_verb",
        )
    }
    ((_, anomaly),) = find(values)
    assert anomaly.detail == (
        "EHLO keyword 'XXXA' looks overwritten (STARTTLS removed on the path?)"
    )
    result.anomalies.append(anomaly)
    assert detect([result]) == []
    # One masked keyword of STARTTLS's length is the alert.
    lone = _plain(b"250-mx.example.com\r\n250 XXXXXXXA\r\n", "198.51.100.7", 0)
    lone.anomalies.append(anomaly)
    (alert,) = detect([lone])
    assert alert.kind == "starttls_downgrade"
    assert alert.summary.endswith("; keyword XXXXXXXA in its place.")


def test_a_masked_keyword_beside_starttls_raises_no_alert() -> None:
    # CHUNKING, 8BITMIME and SMTPUTF8 are as long as STARTTLS: a box that
    # masks one of them leaves XXXXXXXA while STARTTLS is still offered, and
    # the client could ask for TLS. The anomaly stays; no downgrade alert.
    result = _plain(
        b"250-mx.example.com\r\n250-XXXXXXXA\r\n250 STARTTLS\r\n",
        "198.51.100.7",
        0,
    )
    assert result.session.starttls_offered
    values = {
        name: [getattr(result.session, name)]
        for name in (
            "session_id",
            "start",
            "server_ip",
            "server_port",
            "starttls_offered",
            "capabilities",
            "tls",
            "helo_verb",
        )
    }
    ((_, anomaly),) = find(values)
    assert anomaly.detail == (
        "EHLO keyword 'XXXXXXXA' looks overwritten (STARTTLS removed on the path?)"
    )
    result.anomalies.append(anomaly)
    assert detect([result]) == []


def _injected_reply(client: str, start: int) -> SessionResult:
    return session(
        [
            (S, b"220 mx.example.com ESMTP\r\n"),
            (C, b"EHLO c.example.org\r\n"),
            (S, b"250-mx.example.com\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"220 go ahead\r\n250 injected\r\n"),
        ],
        start_seen=True,
        client=client,
        start=start,
    )


def test_server_side_injection_is_one_alert_per_server() -> None:
    minute = 60 * 1_000_000_000
    results = [
        _injected_reply("198.51.100.7", 0),
        _injected_reply("198.51.100.8", minute),
        _injected_reply("198.51.100.9", 2 * minute),
    ]
    (alert,) = detect(results)
    assert alert.kind == "starttls_injection"
    assert (alert.client_ip, alert.server_ip) == (None, "192.0.2.2")
    assert alert.count == 3 and alert.sessions == 3
    assert alert.session_ids == tuple(r.session.session_id for r in results)
    assert alert.examples == (
        "starttls_server_injection: 14 bytes after the 220: 250 injected\\r\\n",
    )
    assert alert.summary == (
        "192.0.2.2 sent bytes after its 220 to STARTTLS, before the TLS "
        "handshake, to 3 clients in 3 session(s): a client that queues them "
        "reads them as if sent inside TLS (STARTTLS reply injection)."
    )


def test_a_host_that_injects_as_client_and_as_server_gets_two_alerts() -> None:
    # The server side is keyed apart from a client of the same address.
    server_side = _injected_reply("198.51.100.7", 0)
    client_side = session(
        [
            (S, b"220 mx.example.net ESMTP\r\n"),
            (C, b"EHLO c.example.org\r\n"),
            (S, b"250-mx.example.net\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\nNOOP\r\n"),
            (S, b"220 go ahead\r\n"),
        ],
        start_seen=True,
        client="192.0.2.2",
        server="203.0.113.5",
        start=1_000_000_000,
    )
    alerts = detect([server_side, client_side])
    assert sorted((a.client_ip, a.server_ip) for a in alerts) == [
        ("192.0.2.2", "203.0.113.5"),
        ("198.51.100.7", "192.0.2.2"),
    ]
    assert {a.kind for a in alerts} == {"starttls_injection"}
