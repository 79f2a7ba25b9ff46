"""Row-by-row table files equal the DataFrame exporter's, byte for byte.

``smtpscope read -o`` spools sessions to disk and writes rows without
pandas (``analysis.spool``, ``analysis.offline``, ``analysis.rowfiles``);
``read_captures`` plus ``write_tables`` is the reference it must match on
every capture we have, in both text formats.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis import pipeline
from analysis import spool as spool_module
from analysis.export import write_tables
from analysis.offline import build_tables, finish
from analysis.rowfiles import Format, TableFiles
from analysis.spool import Spool
from analysis.tables import read_captures
from tests import corpus
from tests.analysis.same import same_files

ROOT = Path(__file__).parents[2]
PROJECT = sorted(str(p) for p in (ROOT / "pcaps").glob("**/*.pcap*"))


def _spooled(paths: list[str], **options: Any) -> Spool:
    spool = Spool(**options)
    for result in pipeline.analyze(paths, pipeline.DEFAULT_PORTS, stats=spool.stats):
        spool.add(result)
    return spool


def _streamed(paths: list[str], out: Path, fmt: Format, **options: Any) -> None:
    # As the CLI does it: rows encoded as sessions arrive, no results kept,
    # the alerts parked on disk until the end.
    options = options or {"rows": fmt, "results": False}
    with _spooled(paths, **options) as spool, TableFiles(out, fmt) as files:
        finish(spool, files=files, keep_alerts=False)
        files.commit()


@pytest.mark.parametrize("fmt", [Format.JSONL, Format.CSV])
def test_project_captures_stream_to_the_same_files(tmp_path: Path, fmt: Format) -> None:
    paths = [p for p in PROJECT if not p.endswith(".keylog")]
    reference = tmp_path / "frames"
    write_tables(read_captures(paths).frames(), reference, fmt)
    _streamed(paths, tmp_path / "rows", fmt)
    same_files(tmp_path / "rows", reference)
    # From kept results, encoded at the end, as when the report is shown too.
    _streamed(paths, tmp_path / "late", fmt, results=True)
    same_files(tmp_path / "late", reference)
    # Something of every kind was compared.
    for table in ("sessions", "transactions", "commands", "anomalies", "tls"):
        assert (reference / f"{table}.{fmt.value}").stat().st_size > 200, table
    assert len((reference / f"alerts.{fmt.value}").read_text().splitlines()) > 10


@pytest.mark.parametrize("fmt", [Format.JSONL, Format.CSV])
@pytest.mark.parametrize("table_parts", [0, 1000])
def test_sessions_read_back_a_part_at_a_time_give_the_same_files(
    tmp_path: Path, fmt: Format, monkeypatch: pytest.MonkeyPatch, table_parts: int
) -> None:
    # With no batch every session counts as large: its parts go to the file
    # one by one as they are made and are read back one by one, the rows a
    # table at a time (with _TABLE_PARTS 0) and the result only when asked
    # for.
    paths = [p for p in PROJECT if not p.endswith(".keylog")]
    reference = tmp_path / "frames"
    write_tables(read_captures(paths).frames(), reference, fmt)
    monkeypatch.setattr(spool_module, "_BATCH", 0)
    monkeypatch.setattr(spool_module, "_TABLE_PARTS", table_parts)
    _streamed(paths, tmp_path / "rows", fmt)
    same_files(tmp_path / "rows", reference)
    _streamed(paths, tmp_path / "late", fmt, results=True)
    same_files(tmp_path / "late", reference)
    _streamed(paths, tmp_path / "both", fmt, rows=fmt, results=True)
    same_files(tmp_path / "both", reference)


@pytest.mark.parametrize("fmt", [Format.JSONL, Format.CSV])
def test_public_corpus_streams_to_the_same_files(tmp_path: Path, fmt: Format) -> None:
    corpus.require_corpus()
    # One capture at a time: each is its own run, as users read them.
    for i, capture_id in enumerate(sorted(corpus.CAPTURES)):
        found = corpus.capture(capture_id)
        reference = tmp_path / f"{i}-frames"
        write_tables(corpus.tables(capture_id).frames(), reference, fmt)
        rows = tmp_path / f"{i}-rows"
        with Spool(rows=fmt, results=False) as spool, TableFiles(rows, fmt) as files:
            for result in pipeline.analyze([str(found.file)], found.ports):
                spool.add(result)
            finish(spool, files=files, keep_alerts=False)
            files.commit()
        same_files(rows, reference)


def test_spool_replays_in_table_order_and_cleans_up(tmp_path: Path) -> None:
    paths = [p for p in PROJECT if p.endswith(".pcap")]
    with _spooled(paths) as spool:
        starts = [
            (r.result.session.start, r.result.session.session_id)
            for r in spool.replay()
        ]
        assert starts == sorted(starts)
        assert len(starts) == len(spool) > 20
        # Adding after a replay appends, and a second replay sees it.
        first = next(spool.replay()).result
        spool.add(first)
        assert len(list(spool.replay())) == len(starts) + 1
        scratch = spool.scratch_directory()
        assert os.path.isdir(scratch)
    assert not os.path.exists(scratch)


@pytest.mark.parametrize("batch", [1, 10_000, 1 << 30])
def test_adding_during_a_replay_keeps_every_session(
    monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    # Whether the sessions are written at once, in batches or only at the
    # replay, the replay's reads must not move where the next ones go.
    monkeypatch.setattr(spool_module, "_BATCH", batch)
    results = list(pipeline.analyze(PROJECT))
    with Spool() as spool:
        for result in results[:10]:
            spool.add(result)
        replay = spool.replay()
        next(replay)
        for result in results[10:]:
            spool.add(result)
            next(replay, None)
        back = [replayed.result for replayed in spool.replay()]
    assert back == sorted(
        results, key=lambda r: (r.session.start, r.session.session_id)
    )


def test_worker_parts_are_adopted_and_their_files_removed(tmp_path: Path) -> None:
    paths = [p for p in PROJECT if p.endswith(".pcap")]
    with Spool() as parent:
        directory = parent.scratch_directory()
        halves = [paths[::2], paths[1::2]]
        for half in halves:
            worker = Spool(directory, named=True)
            for result in pipeline.analyze(half, stats=worker.stats):
                worker.add(result)
            parent.adopt(worker.detach())
            # Read through the open file from then on: a kill leaves nothing.
            assert os.listdir(directory) == []
        tables = build_tables(parent)
    assert not os.path.exists(directory)
    whole = read_captures(paths)
    assert list(tables.sessions["session_id"]) == sorted(
        whole.sessions["session_id"], key=list(whole.sessions["session_id"]).index
    )
    assert len(tables.commands) == len(whole.commands)


def test_failed_table_files_leave_the_old_ones(tmp_path: Path) -> None:
    (tmp_path / "sessions.jsonl").write_text("old\n")
    with pytest.raises(RuntimeError), TableFiles(tmp_path, Format.JSONL) as files:
        files.write("sessions", [])
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.jsonl"]
    assert (tmp_path / "sessions.jsonl").read_text() == "old\n"


def test_spooled_results_come_back_equal() -> None:
    results = list(pipeline.analyze(PROJECT))
    assert any(r.tls for r in results) and any(r.anomalies for r in results)
    with Spool() as spool:
        for result in results:
            spool.add(result)
        back = [replayed.result for replayed in spool.replay()]
    # Replayed in table order: by start, then session id, then arrival.
    assert back == sorted(
        results, key=lambda r: (r.session.start, r.session.session_id)
    )


def test_a_quiet_run_writing_files_never_imports_pandas(tmp_path: Path) -> None:
    # pandas and pyarrow are most of a run's memory and start-up time; the
    # row-by-row path must not need them, nor rich, the live capture or the
    # metrics server (a separate interpreter, since the test process has
    # them loaded already).
    code = (
        "import sys; from analysis import cli; "
        f"status = cli.main(['read', {PROJECT[0]!r}, '-q', '-o', {str(tmp_path)!r}]); "
        "print(status, sorted(m for m in ('pandas', 'pyarrow', 'numpy', "
        "'cryptography', 'rich', 'analysis.liverun', 'capture.live', "
        "'http.server') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[-2] == "0 []"


def test_read_captures_leaves_its_warnings_to_the_caller(tmp_path: Path) -> None:
    # A library caller (a notebook) finds trouble in stats.errors; Python's
    # last-resort handler printed each warning on stderr besides.
    auth = Path(__file__).parents[2] / "pcaps" / "auth.pcap"
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(auth.read_bytes()[:3000])
    code = (
        "import sys\n"
        "from analysis.tables import read_captures\n"
        "print(len(read_captures([sys.argv[1]]).stats.errors))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(cut)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert (done.stdout, done.stderr) == ("1\n", "")
