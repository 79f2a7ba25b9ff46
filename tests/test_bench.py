"""bench/run.py, run for real on two small generated captures.

Not a timing test: it checks that the figures the issue asks for are
printed, here the peak memory on a capture against a smaller baseline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_peak_memory_is_compared_with_the_baseline(tmp_path: Path) -> None:
    small = make_capture(tmp_path / "small.pcap", "512K")
    large = make_capture(tmp_path / "large.pcap", "2M")
    run = [sys.executable, str(ROOT / "bench" / "run.py"), str(large)]
    options = ["--runs", "1", "--jobs", "1", "--tools", "smtpscope", "--json"]
    out = tmp_path / "out" / "large"
    done = subprocess.run(
        [*run, "--baseline", str(small), *options, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    memory = report["baseline"]["memory"]["smtpscope"]
    here, there = memory["peak_rss_kb"], memory["baseline_peak_rss_kb"]
    assert here == report["tools"]["smtpscope"]["peak_rss_kb"]
    assert there > 0
    assert memory["growth"] == round(here / there - 1, 3)
    assert report["baseline"]["capture"] == str(small.resolve())
    # The baseline's tables went under the run's own directory.
    assert (out / "baseline" / "smtpscope" / "sessions.jsonl").exists()


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_a_small_tool_is_not_given_the_memory_of_run_py(tmp_path: Path) -> None:
    # Found in a trial: wait4 gave tcpdump run.py's own peak (25 MiB, over
    # 8 MiB of it from reading the capture into the page cache), since
    # Linux counts what a child held before its exec.
    report, _ = _bench_json(tmp_path, "2M", ["--tools", "tcpdump", "--runs", "3"])
    tcpdump = report["tools"]["tcpdump"]
    if run_py().gnu_time() is None:
        # About 6 MiB here on a quiet machine, 19 MiB seen under load; run.py's
        # own peak, which it was given before, is 25 MiB and more.
        assert 0 < tcpdump["peak_rss_kb"] < 22 * 1024
        return
    # Found in review: sampled from /proc, a run of a few tens of
    # milliseconds showed 0.2, 6.1 or run.py's 16.6 MiB by the round (the
    # maximum over the rounds is shown). GNU time reports tcpdump's own,
    # about 6 MiB, every time.
    assert 2 * 1024 < tcpdump["peak_rss_kb"] < 12 * 1024


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_split_2_runs_on_the_two_shards_a_j2_run_reads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    options = ["--jobs", "1", "--tools", "smtpscope,split-2"]
    report, truth = _bench_json(tmp_path, "2M", options)
    assert report["tools"]["split-2"]["status"] == "ok"
    assert report["ratios"]["split-2"]["speedup_vs_smtpscope"] > 0
    # Shards this small go through smtpscope's Python reader, where a -j 2
    # of the whole capture reads through libpcap: no bound, and it says so.
    assert report["tools"]["split-2"]["bound"] is False
    assert report["tools"]["split-2"]["note"].startswith("no bound for --jobs 2")
    # Each shard holds whole connections, and between them all of them.
    found = [
        (out / f"shard{part}" / "sessions.jsonl").read_text().splitlines()
        for part in (0, 1)
    ]
    assert all(found)
    assert len(found[0]) + len(found[1]) == truth["sessions"]
    checked = report["truth_check"]["split-2"]
    assert checked["sessions"] == {
        "expected": truth["sessions"],
        "found": truth["sessions"],
        "match": True,
    }
    assert all(row["match"] for row in checked.values())


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_rotate_has_smtpscope_read_the_capture_cut_into_files(tmp_path: Path) -> None:
    # The several-captures case of --jobs: the same traffic, the same rows.
    out = tmp_path / "out"
    report, truth = _bench_json(
        tmp_path,
        "3M",
        ["--jobs", "1,2", "--tools", "smtpscope,tcpdump", "--rotate", "1"],
    )
    assert report["rotated"] == {"megabytes": 1, "files": 4}  # 3 MiB in 1 MB files
    for tool in ("smtpscope", "smtpscope-j2"):
        assert report["tools"][tool]["status"] == "ok"
        assert all(row["match"] for row in report["truth_check"][tool].values())
    assert report["same_tables"] == {"smtpscope-j2": True}
    sessions = (out / "smtpscope" / "sessions.jsonl").read_text().splitlines()
    assert len(sessions) == truth["sessions"]
    assert report["tools"]["tcpdump"]["status"] == "ok"  # on the whole file


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_sigterm_stops_the_tool_and_removes_the_shards(tmp_path: Path) -> None:
    # Found in review: the shards (tens of MB) stayed in /tmp, and the tool
    # that was running went on alone.
    capture = make_capture(tmp_path / "c.pcap", "8M")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = [sys.executable, str(ROOT / "bench" / "run.py"), str(capture)]
    options = ["--runs", "50", "--jobs", "1", "--tools", "split-2", "--no-warm"]
    env = {**os.environ, "TMPDIR": str(scratch)}
    bench = subprocess.Popen(
        [*run, *options, "--out", str(tmp_path / "out")],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert bench.stderr is not None
    for line in bench.stderr:
        if line.startswith("round 1/"):
            break  # a round ran: the next one is under way
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=60) != 0
    assert list(scratch.iterdir()) == []
    # No smtpscope reading the shards is left running.
    left = subprocess.run(
        ["pgrep", "-f", str(scratch)], capture_output=True, text=True, check=False
    )
    assert left.stdout == ""


def _bench_json(
    tmp_path: Path, size: str, options: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """run.py's JSON report for one round on a capture of ``size`` made in
    ``tmp_path`` (tables under ``tmp_path / "out"``), and its truth."""
    capture = make_capture(tmp_path / "c.pcap", size)
    run = [sys.executable, str(ROOT / "bench" / "run.py"), str(capture)]
    if "--runs" not in options:
        run += ["--runs", "1"]
    done = subprocess.run(
        [*run, *options, "--json", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    truth = json.loads((tmp_path / "c.pcap.truth.json").read_text())
    report: dict[str, Any] = json.loads(done.stdout)
    return report, truth


def run_py() -> Any:
    """bench/run.py as a module, for its functions."""
    spec = importlib.util.spec_from_file_location(
        "bench_run", ROOT / "bench" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_run", module)
    spec.loader.exec_module(module)
    return module


def test_table_differences_name_each_file(tmp_path: Path) -> None:
    # Found in review: a table only the -j 2 run wrote was ignored, one
    # only the first wrote ended run.py in a traceback, a first run that
    # wrote nothing compared as equal, and the report named no file.
    run = run_py()
    first, other = tmp_path / "smtpscope", tmp_path / "smtpscope-j2"
    first.mkdir()
    other.mkdir()
    assert run.table_differences(tmp_path, ["smtpscope", "smtpscope-j2"]) == {
        "smtpscope-j2": [f"{t}.jsonl (smtpscope wrote none)" for t in run.TABLES]
    }
    for table in run.TABLES:
        (first / f"{table}.jsonl").write_text("{}\n")
        (other / f"{table}.jsonl").write_text("{}\n")
    assert run.table_differences(tmp_path, ["smtpscope", "smtpscope-j2"]) == {
        "smtpscope-j2": []
    }
    (other / "alerts.jsonl").write_text("")
    (other / "old.jsonl").write_text("{}\n")
    (first / "tls.jsonl").unlink()
    assert run.table_differences(tmp_path, ["smtpscope", "smtpscope-j2"]) == {
        "smtpscope-j2": [
            "tls.jsonl (smtpscope wrote none)",
            "old.jsonl (only one wrote it)",
            "tls.jsonl (only one wrote it)",
            "alerts.jsonl",
        ]
    }


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_bare_loop_fails_with_its_tcpdump(tmp_path: Path) -> None:
    # Found in review: on a capture cut inside a record tcpdump failed, but
    # the shell gave the loop's exit status, and bare-loop showed as OK.
    capture = make_capture(tmp_path / "c.pcap", "1M")
    content = capture.read_bytes()
    capture.write_bytes(content[: len(content) - 100])
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "run.py"), str(capture)),
            *("--runs", "1", "--tools", "bare-loop", "--json"),
            *("--out", str(tmp_path / "out")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    bare = json.loads(done.stdout)["tools"]["bare-loop"]
    assert bare["status"] == "failed"
    assert "truncated" in bare["reason"]


def test_a_run_where_smtpscope_cannot_run_fails(tmp_path: Path) -> None:
    # Found in review: with no smtpscope to run, everything else was
    # measured and run.py exited 0, though nothing it is for was.
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copy(ROOT / "bench" / "run.py", bench / "run.py")
    capture = make_capture(tmp_path / "c.pcap", "512K")
    done = subprocess.run(
        [
            *(sys.executable, str(bench / "run.py"), str(capture), "--runs", "1"),
            *("--jobs", "1", "--tools", "smtpscope,split-2", "--json"),
            *("--out", str(tmp_path / "out")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done.stderr
    tools = json.loads(done.stdout)["tools"]
    assert tools["smtpscope"]["status"] == "skipped"


def make_capture(path: Path, size: str) -> Path:
    """A capture of ``size`` from bench/make_capture.py, with its truth."""
    make = [sys.executable, str(ROOT / "bench" / "make_capture.py")]
    subprocess.run([*make, "--size", size, str(path)], check=True, capture_output=True)
    return path


def test_goals_are_judged_from_the_ratios_and_peaks() -> None:
    # A new user found no verdicts in the run's output: only the README's
    # hand-written table said which goals were met.
    report: dict[str, Any] = {
        "ratios": {
            "smtpscope": {"throughput_vs_tshark": 9.05, "time_vs_tcpdump": 7.1},
            "smtpscope-j2": {
                "throughput_vs_tshark": 12.95,
                "time_vs_tcpdump": 4.97,
                "speedup_vs_smtpscope": 1.43,
            },
            "split-2": {"speedup_vs_smtpscope": 1.8},
        },
        "tools": {
            "smtpscope": {"peak_rss_kb": 36352},
            "smtpscope-j2": {"peak_rss_kb": 146485},
            "tshark": {"peak_rss_kb": 1792307},
        },
        "baseline": {"memory": {"smtpscope": {"growth": 0.2}}},
        "same_tables": {"smtpscope-j2": True},
    }
    found = run_py().goals(report, {"smtpscope": 1, "smtpscope-j2": 2})
    assert [(g["goal"], g["run"], g["figure"], g["met"]) for g in found] == [
        ("throughput >= 10x tshark's", "smtpscope", 9.05, False),
        ("time <= 5x tcpdump's", "smtpscope", 7.1, False),
        ("throughput >= 10x tshark's", "smtpscope-j2", 12.95, True),
        ("time <= 5x tcpdump's", "smtpscope-j2", 4.97, True),
        ("--jobs 2 >= 1.7x --jobs 1", "smtpscope-j2", 1.43, False),
        ("peak RSS < 150 MB", "smtpscope", 37.2, True),
        ("peak RSS < 150 MB", "smtpscope-j2", 150.0, False),
        ("peak <= 1.2x the baseline's", "smtpscope", 0.2, True),
        ("same tables as the first run", "smtpscope-j2", 1.0, True),
    ]


@pytest.mark.skipif(
    shutil.which("tcpdump") is None or shutil.which("tshark") is None,
    reason="tcpdump or tshark not installed",
)
def test_tshark_prefiltered_reads_what_tcpdump_keeps(tmp_path: Path) -> None:
    report, _ = _bench_json(
        tmp_path, "512K", ["--jobs", "1", "--tools", "smtpscope,tshark-prefiltered"]
    )
    tool = report["tools"]["tshark-prefiltered"]
    assert tool["status"] == "ok"
    assert tool["argv"][:2] == ["bash", "-c"]
    assert "| tshark -r - -Y smtp -T fields" in tool["argv"][2]
    assert "throughput_vs_tshark_prefiltered" in report["ratios"]["smtpscope"]


def test_goal_lines_on_a_small_capture_say_what_the_time_goals_are_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # New users read the NOT MET lines of a 20 MB and a 100 MB run as
    # failures: the time goals are not judged on a small capture; the
    # others are, and the peak is in MiB too, as in the table.
    found = [
        {"goal": "time <= 5x tcpdump's", "run": "smtpscope", "figure": 16.73},
        {"goal": "peak RSS < 150 MB", "run": "smtpscope", "figure": 31.1},
    ]
    run_py().print_goals([{**g, "met": i == 1} for i, g in enumerate(found)], 2_394_539)
    assert capsys.readouterr().out.splitlines() == [
        "(the time goals are for the 1 GB capture: on 2 MB start-up dominates "
        "the times, which are not judged)",
        "goal time <= 5x tcpdump's           smtpscope                  16.73x  "
        "not judged",
        "goal peak RSS < 150 MB              smtpscope                 31.1 MB  "
        "met (29.7 MiB)",
    ]
    run_py().print_goals([{**found[0], "met": False}], 1_074_000_000)
    assert capsys.readouterr().out.splitlines() == [
        "goal time <= 5x tcpdump's           smtpscope                  16.73x  "
        "NOT MET",
    ]
