"""Alerts parked on disk at the end of ``read -o``, not held in memory.

``analysis.offline.finish`` used to keep every alert of the run in a list
until the end, and the detect helper pickled all of its own back: a flood
of distinct clients that each try to relay once made an alert (about 1 KB)
per client. With ``keep_alerts=False`` their rows wait in a scratch file
(``analysis.alertfile``); the files must not change by a byte, and the
scratch files must go whatever ends the run.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

import pytest

from analysis import alertfile, detecthelp
from analysis.alertfile import AlertFile
from analysis.detect import Alert
from analysis.offline import finish
from analysis.records import SessionResult
from analysis.rowfiles import Format, RowEncoder, TableFiles
from analysis.session import SessionBuilder
from analysis.spool import Spool
from analysis.views import ReportDigest
from capture.stream import Connection, Direction
from tests.analysis.same import same_files

C, S = Direction.CLIENT, Direction.SERVER
CLIENTS = 1200  # past detecthelp.MIN_SESSIONS: a helper is forked


def _relay_attempt(n: int, start: int) -> SessionResult:
    """Client ``n``'s one session: a RCPT to a foreign domain, refused."""
    client = f"10.0.{n // 250}.{n % 250 + 1}"
    conn = Connection(n, client, 40000 + n, "192.0.2.1", 25, first_ts=start)
    builder = SessionBuilder(conn, frozenset())
    steps = [
        (S, b"220 mx.victim.example ESMTP\r\n"),
        (C, b"EHLO host%d.client.example\r\n" % n),
        (S, b"250 mx.victim.example\r\n"),
        (C, b"MAIL FROM:<a@client.example>\r\n"),
        (S, b"250 2.1.0 Ok\r\n"),
        (C, b"RCPT TO:<x@foreign%d.example>\r\n" % n),
        (S, b"554 5.7.1 <x@foreign%d.example>: Relay access denied\r\n" % n),
        (C, b"QUIT\r\n"),
        (S, b"221 2.0.0 Bye\r\n"),
    ]
    for k, (side, data) in enumerate(steps, start=1):
        builder.data(side, data, start + k * 1000)
    return builder.close(start + 20_000, "fin")


@pytest.fixture(scope="module")
def flood() -> list[SessionResult]:
    # A session every millisecond; every tenth shares its start with the
    # one before, so that alerts also tie on first_seen.
    results = []
    for n in range(CLIENTS):
        start = 1_800_000_000 * 10**9 + (n - n % 10 // 9) * 1_000_000
        results.append(_relay_attempt(n, start))
    return results


def _spool(results: Iterable[SessionResult], fmt: Format) -> Spool:
    spool = Spool(rows=fmt, results=False)
    for result in results:
        spool.add(result)
    return spool


def _written(spool: Spool, out: Path, fmt: Format, *, helper: bool, keep: bool) -> None:
    with TableFiles(out, fmt) as files:
        finish(spool, files=files, helper=helper, keep_alerts=keep)
        files.commit()


@pytest.mark.parametrize("fmt", [Format.JSONL, Format.CSV])
@pytest.mark.parametrize("helper", [False, True])
def test_parked_alerts_are_written_as_kept_ones(
    flood: list[SessionResult],
    tmp_path: Path,
    fmt: Format,
    helper: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Read back a few rows at a time, so that runs of rows are cut.
    monkeypatch.setattr(alertfile, "_READ", 600)
    with _spool(flood, fmt) as spool:
        _written(spool, tmp_path / "kept", fmt, helper=False, keep=True)
        _written(spool, tmp_path / "parked", fmt, helper=helper, keep=False)
    same_files(tmp_path / "parked", tmp_path / "kept")
    rows = (tmp_path / "kept" / f"alerts.{fmt.value}").read_text().splitlines()
    assert len(rows) == CLIENTS + (fmt is Format.CSV)


class _Counting(TableFiles):
    """Table files that count the Alert objects alive when the alerts
    table is written: by then every alert of the run has been made."""

    alive: list[int]

    def write(self, table: str, records: Iterable[object]) -> None:
        if table == "alerts":
            self.alive.append(_alerts_alive())
        super().write(table, records)

    def write_encoded(self, table: str, text: str) -> None:
        if table == "alerts":
            self.alive.append(_alerts_alive())
        super().write_encoded(table, text)


def _alerts_alive() -> int:
    return sum(isinstance(o, Alert) for o in gc.get_objects())


@pytest.mark.parametrize("helper", [False, True])
def test_no_alert_is_held_until_the_end(
    flood: list[SessionResult], tmp_path: Path, helper: bool
) -> None:
    spool = _spool(flood, Format.JSONL)
    with spool, _Counting(tmp_path, Format.JSONL) as files:
        files.alive = []
        finish(spool, files=files, helper=helper, keep_alerts=False)
        files.commit()
    assert files.alive and max(files.alive) <= 5
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == CLIENTS


class _Failing(TableFiles):
    """Table files whose disk fills up after ``sessions`` sessions."""

    sessions = 0
    stop: type[BaseException] = OSError

    def write_text(self, texts: Iterable[str]) -> None:
        self.sessions -= 1
        if self.sessions < 0:
            raise self.stop(28, "No space left on device")
        super().write_text(texts)


@pytest.mark.parametrize("stop", [OSError, KeyboardInterrupt])
@pytest.mark.parametrize("sessions", [600, CLIENTS])
def test_scratch_files_go_however_finish_ends(
    flood: list[SessionResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop: type[BaseException],
    sessions: int,
) -> None:
    # Stopped in the replay, or at the alerts (the last session written,
    # the next write is the alerts' own, failing as the disk fills).
    opened: list[IO[bytes]] = []
    scratch_file = Spool.scratch_file

    def spied(self: Spool) -> IO[bytes]:
        opened.append(scratch_file(self))
        return opened[-1]

    monkeypatch.setattr(Spool, "scratch_file", spied)
    monkeypatch.setattr(detecthelp, "MIN_SESSIONS", 0)

    def full(self: TableFiles, table: str, text: str) -> None:
        raise stop(28, "No space left on device")

    monkeypatch.setattr(_Failing, "write_encoded", full)
    spool = _spool(flood, Format.JSONL)
    with spool, pytest.raises(stop), _Failing(tmp_path, Format.JSONL) as files:
        files.sessions, files.stop = sessions, stop
        finish(spool, files=files, helper=True, keep_alerts=False)
    # The table's own and the helper's, both closed, so deleted.
    assert len(opened) == 2
    assert all(handle.closed for handle in opened)
    assert list(tmp_path.iterdir()) == []


def _alert(first_seen: int, alert_id: str, summary: str = "s") -> Alert:
    return Alert(
        alert_id=alert_id,
        kind="relay_attempt",
        severity="low",
        client_ip="192.0.2.7",
        server_ip=None,
        first_seen=first_seen,
        last_seen=first_seen,
        count=1,
        threshold=1,
        window_s=3600.0,
        total=None,
        sessions=1,
        session_ids=("Sa",),
        examples=("C: RCPT TO:<x\udcff@example.org>",),
        summary=summary,
    )


def _parked(alerts: list[Alert], fmt: Format = Format.JSONL) -> Iterator[str]:
    with (
        Spool() as spool,
        AlertFile(
            RowEncoder(fmt, "alerts"), spool.scratch_file(), spool.directory
        ) as parked,
    ):
        for alert in alerts:
            parked.add(alert)
        assert len(parked) == len(alerts)
        yield from parked.texts()


@pytest.mark.parametrize("fmt", [Format.JSONL, Format.CSV])
def test_rows_come_back_as_a_stable_sort_orders_them(
    fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ties on first_seen, on both keys (told apart by their summary), a
    # first_seen beyond 64 bits, and text no codec could encode strictly.
    rng = random.Random(7)
    alerts = [
        _alert(
            rng.choice([5, 9, 2**64, -3]), rng.choice(["Ab", "Aa", "A\u00e9"]), str(i)
        )
        for i in range(300)
    ]
    encode = RowEncoder(fmt, "alerts")
    expected = encode(sorted(alerts, key=lambda a: (a.first_seen, a.alert_id)))
    for size in (1, 500, alertfile._READ):
        monkeypatch.setattr(alertfile, "_READ", size)
        assert "".join(_parked(alerts, fmt)) == expected
    assert list(_parked([])) == []


def test_the_digest_holds_only_the_alerts_it_may_show() -> None:
    rng = random.Random(3)
    severities = ["info", "low", "medium", "high", "critical"]
    alerts = [
        replace(_alert(rng.randrange(50), f"A{i:04}"), severity=rng.choice(severities))
        for i in range(500)
    ]
    digest = ReportDigest(limit=7)
    for alert in alerts:
        digest.add_alert(alert)
        assert len(digest._alerts_shown._held) <= 14
    rank = {name: -k for k, name in enumerate(severities)}
    first = sorted(alerts, key=lambda a: (rank[a.severity], a.first_seen, a.alert_id))
    assert digest._alerts_shown.first() == first[:7]
    assert digest.alerts == 500


@pytest.mark.parametrize("helper", [False, True])
def test_a_hook_sees_every_alert_none_kept(
    flood: list[SessionResult], helper: bool
) -> None:
    # check -r counts the alerts by kind as they come (found in review: it
    # kept them all to the end, though it only counts them).
    with _spool(flood, Format.JSONL) as spool:
        kept = finish(spool).alerts
        seen: list[Alert] = []
        done = finish(spool, helper=helper, keep_alerts=False, on_alert=seen.append)
    assert done.alerts == []
    assert sorted(seen, key=lambda a: (a.first_seen, a.alert_id)) == kept
    assert len(kept) == CLIENTS
