"""The fast paths give the same tables as the plain one.

``-j N`` splits connections over worker processes and libpcap's BPF filter
skips non-SMTP packets in C; neither may change a single row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import cli, pipeline
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.tables import SmtpTables, read_captures
from capture import libpcap, source

PCAPS = sorted(str(p) for p in (Path(__file__).parents[2] / "pcaps").glob("**/*.pcap"))


def _same(left: SmtpTables, right: SmtpTables) -> None:
    for name, frame in left.frames().items():
        pd.testing.assert_frame_equal(frame, right.frames()[name], obj=name)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> SmtpTables:
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    tables = read_captures(PCAPS)
    monkeypatch.delenv("SMTPSCOPE_NO_LIBPCAP")
    return tables


def test_project_captures_are_there() -> None:
    assert len(PCAPS) >= 20  # the lab captures and the abuse ones


@pytest.mark.parametrize("jobs", [2, 3])
def test_sharded_run_gives_the_same_tables(plain: SmtpTables, jobs: int) -> None:
    with read_sharded(PCAPS, pipeline.DEFAULT_PORTS, jobs) as spool:
        tables = build_tables(spool)
    _same(tables, plain)
    assert len(tables.alerts) > 10  # detectors ran over all shards together
    assert tables.stats.captures == len(PCAPS)
    assert tables.stats.packets == plain.stats.packets
    assert tables.stats.errors == []


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
def test_libpcap_fast_path_gives_the_same_tables(
    plain: SmtpTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    tables = read_captures(PCAPS)
    _same(tables, plain)
    assert tables.stats.filtered
    # Only the packets on SMTP ports were counted: all of them, here.
    assert tables.stats.packets == plain.stats.packets


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
def test_damage_on_the_fast_path_is_located_by_the_python_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = Path(PCAPS[0]).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    reference = read_captures([str(cut)])
    monkeypatch.delenv("SMTPSCOPE_NO_LIBPCAP")
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    fast = read_captures([str(cut)])
    _same(fast, reference)
    assert fast.stats.errors == reference.stats.errors
    assert len(fast.stats.errors) == 1 and "damaged at byte" in fast.stats.errors[0]


def test_jobs_default_to_one_per_cpu_for_large_captures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    small = PCAPS[:2]
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert cli._jobs(None, small) == 1  # the project captures are small
    assert cli._jobs(3, small) == 3
    assert cli._jobs(0, small) == 4
    monkeypatch.setattr(cli, "AUTO_JOBS_MIN_BYTES", 1)
    assert cli._jobs(None, small) == 4
    assert cli._jobs(1, small) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cli._jobs(None, small) == cli.AUTO_JOBS_MAX  # each reads it all
    assert cli._jobs(0, small) == 64
    assert cli._jobs(None, ["-"]) == 1  # nothing to measure on a pipe
    assert cli._jobs(None, [str(tmp_path / "missing.pcap")]) == 1


def test_a_large_capture_is_read_sharded_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "AUTO_JOBS_MIN_BYTES", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    calls: list[int] = []
    real = cli.read_sharded

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "read_sharded", counted)
    assert cli.main(["read", *PCAPS[:3], "-q", "-o", str(tmp_path)]) == 0
    assert calls == [2]
    sharded = (tmp_path / "sessions.jsonl").read_bytes()
    assert cli.main(["read", *PCAPS[:3], "-q", "-o", str(tmp_path), "-j", "1"]) == 0
    assert calls == [2]
    assert (tmp_path / "sessions.jsonl").read_bytes() == sharded
