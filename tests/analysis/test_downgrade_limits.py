"""The limits of the check for STARTTLS stripping (``downgrade.Ledger``).

Found in review: the check kept about 45 bytes for each session whose
clear-text EHLO reply lacked STARTTLS and about 270 for each distinct
server, without a bound. Past its limits a session is counted as not
judged, and the run says so; below them nothing changes.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import downgrade, pipeline
from analysis.cli import main, unjudged_warning
from analysis.records import SessionRecord

ROOT = Path(__file__).parents[2]
STRIPPING = str(ROOT / "pcaps" / "stripping.pcap")
_STRIPPED = "EHLO reply without STARTTLS; 1 other session(s) to"
_MANGLED = "EHLO keyword 'XXXXXXXA' looks overwritten (STARTTLS removed on the path?)"


def _sessions() -> tuple[SessionRecord, SessionRecord, SessionRecord]:
    offered, mangled, stripped = (r.session for r in pipeline.analyze([STRIPPING]))
    return offered, mangled, stripped


def _replace(session: SessionRecord, server_ip: str) -> SessionRecord:
    return dataclasses.replace(session, server_ip=server_ip)


def test_past_the_limits_sessions_are_counted_not_judged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offered, _, stripped = _sessions()
    other_offered = _replace(offered, server_ip="192.0.2.7")
    other_stripped = _replace(stripped, "192.0.2.7")
    # Room for one server's offers and two suspects to IPv4 servers.
    monkeypatch.setattr(downgrade, "MOST_SERVERS", 1)
    monkeypatch.setattr(downgrade, "MOST_SUSPECT_BYTES", 24)
    sessions = [offered, stripped, other_offered, other_stripped, stripped]
    ledger = downgrade.Ledger()
    for position, session in enumerate(sessions):
        ledger.add(position, session)
    found = ledger.find(lambda i: (sessions[i].session_id, sessions[i].start))
    # The second server's offer was not counted, so its stripped session
    # is not flagged; the last session did not fit.
    assert [(p, a.detail) for p, a in found] == [
        (1, f"{_STRIPPED} 127.0.0.1:25 were offered it"),
    ]
    assert (ledger.unjudged, ledger.suspects.size) == (2, 24)
    assert ledger.offers(len(ledger)) == {("127.0.0.1", 25): 1}
    # Without limits (whole columns), all are judged.
    names = [field.name for field in dataclasses.fields(SessionRecord)]
    columns = {name: [getattr(s, name) for s in sessions] for name in names}
    assert [(p, a.detail) for p, a in downgrade.find(columns)] == [
        (1, f"{_STRIPPED} 127.0.0.1:25 were offered it"),
        (3, f"{_STRIPPED} 192.0.2.7:25 were offered it"),
        (4, f"{_STRIPPED} 127.0.0.1:25 were offered it"),
    ]


def test_what_a_cut_short_add_counted_as_unjudged_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offered, _, stripped = _sessions()
    monkeypatch.setattr(downgrade, "MOST_SUSPECT_BYTES", 0)
    ledger = downgrade.Ledger()
    ledger.add(0, offered)
    ledger.add(1, stripped)  # as if the owner never took it in
    assert (ledger.unjudged_within(1), ledger.unjudged_within(2)) == (0, 1)
    ledger.add(1, offered)
    assert ledger.unjudged == 0
    assert ledger.offers(2) == {("127.0.0.1", 25): 2}


def _downgrades(directory: Path) -> list[str]:
    with (directory / "anomalies.jsonl").open() as rows:
        return [
            row["detail"]
            for row in map(json.loads, rows)
            if row["kind"] == "possible_downgrade"
        ]


@pytest.mark.parametrize(
    ("limit", "value", "unjudged", "details"),
    [
        ("MOST_SERVERS", 0, 1, [_MANGLED]),
        ("MOST_SUSPECT_BYTES", 0, 2, []),
    ],
)
def test_a_run_past_the_limits_says_how_many_were_left_out(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    limit: str,
    value: int,
    unjudged: int,
    details: list[str],
) -> None:
    monkeypatch.setattr(downgrade, limit, value)
    assert main(["read", "-q", "-j", "1", "-o", str(tmp_path), STRIPPING]) == 0
    assert _downgrades(tmp_path) == details
    assert capsys.readouterr().err == f"smtpscope: {unjudged_warning(unjudged)}\n"


def test_below_the_limits_a_run_says_nothing_more(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["read", "-q", "-j", "1", "-o", str(tmp_path), STRIPPING]) == 0
    assert _downgrades(tmp_path) == [
        _MANGLED,
        f"{_STRIPPED} 127.0.0.1:25 were offered it",
    ]
    assert capsys.readouterr().err == ""


def test_the_warning_names_the_limits() -> None:
    assert unjudged_warning(1) == (
        "warning: 1 session was left out of the check for STARTTLS stripping "
        "(possible_downgrade), past what one process keeps for it (16 MiB of "
        "sessions whose clear-text EHLO reply lacked STARTTLS, about 12 bytes "
        "each, and 200,000 servers that offered it): a downgrade among them "
        "may have gone unreported"
    )


def test_the_plain_servers_shape_has_a_server_per_session_and_no_finding(
    tmp_path: Path,
) -> None:
    # bench/make_flood.py --plain-servers, the shape that measures what the
    # check keeps (bench/README.md): here 3 sessions.
    capture = tmp_path / "plain.pcap"
    make = [sys.executable, str(ROOT / "bench" / "make_flood.py")]
    subprocess.run(
        [*make, "--plain-servers", "3", str(capture)], check=True, capture_output=True
    )
    sessions = [r.session for r in pipeline.analyze([str(capture)])]
    assert [
        (s.client_ip, s.server_ip, s.server_port, s.starttls_offered, s.capabilities)
        for s in sessions
    ] == [
        (f"198.18.0.{n}", f"100.64.0.{n}", 25, False, ["PIPELINING", "8BITMIME"])
        for n in range(3)
    ]
    ledger = downgrade.Ledger()
    for position, session in enumerate(sessions):
        ledger.add(position, session)
    assert ledger.find(lambda i: ("", 0)) == []
    assert [position for position, _ in ledger.suspects] == [2, 1, 0]
    assert (ledger.suspects.size, ledger.offers(3), ledger.unjudged) == (36, {}, 0)
