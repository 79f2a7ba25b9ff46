#!/usr/bin/env python3
"""Time smtpscope, tshark and tcpdump on one capture, side by side.

    python3 bench/run.py /tmp/smtpscope-bench/100M.pcap --runs 3
    python3 bench/run.py CAPTURE --json > result.json
    python3 bench/run.py 1G.pcap --baseline 100M.pcap   # memory against a smaller one

Each round runs every tool once, one after the other, so slow drift of the
machine touches them all alike; the figures are medians over the rounds.
Each child is reaped with ``os.wait4``, which gives its CPU time; its peak
resident set size (the largest single process among it and the children it
waited for) comes from GNU time where installed (see ``measure``). Because
``--jobs`` runs several processes at once, the summed RSS of the whole
process tree is also sampled every 10 ms from ``/proc`` ("tree RSS"; shared
pages are counted once per process, and a peak between two samples is
missed). The capture is read once beforehand so that every tool finds it
in the page cache.

The commands are the comparison the project's issue names:
- ``python -m analysis read CAPTURE -o OUT --format jsonl -q --jobs N`` (the
  ``smtpscope`` console script if this checkout has no ``analysis``), once
  per N of ``--jobs`` (default ``1,2``; the first is "smtpscope", the others
  "smtpscope-jN", and each later one is compared with the first);
- ``tshark -r CAPTURE -Y smtp -T fields -e frame.number
  -e smtp.req.command -e smtp.response.code`` with stdout to /dev/null;
- "tshark-prefiltered", not in the issue but what a tshark user would run
  on a large capture: the tcpdump below writing to a pipe into the same
  tshark (``-r -``), which then dissects only the SMTP ports' packets;
- ``tcpdump -r CAPTURE -w /dev/null 'tcp port 25 or tcp port 465 or tcp
  port 587'``;
- "bare-loop", the issue's yardstick: the same tcpdump writing to a pipe
  into ``bench/bare_loop.py``, a pure-Python loop that only splits each
  SMTP packet's payload into lines. It says how fast Python is here, so
  that figures from different machines can be compared;
- "split-2", a bound for ``--jobs 2``: two ``--jobs 1`` runs at once, each
  on one half of the capture's SMTP packets, split beforehand by
  smtpscope's own connection hash (tcpdump with the BPF filter a ``-j 2``
  worker uses; the split is not timed). Each process reads only its own
  packets and ends with half the sessions, so no ``-j 2`` of the whole
  capture, which must read all of it and end once, is quicker here; unless
  the halves are too small for smtpscope to read them through libpcap (under
  16 MiB, on captures under about 200 MB), which its note then says.
With ``--rotate MB``, smtpscope reads the capture cut into files of MB
megabytes (``tcpdump -C``, before the rounds), as a rotated capture is kept;
the other tools read it whole. A tool that is not installed is skipped with
a message. When the capture has a ``.truth.json`` sidecar (from
``make_capture.py``), smtpscope's row counts are checked against it; the
tables of every ``--jobs`` run must be those of the first, in every round.
Exit status: 0 when smtpscope ran, every tool that ran succeeded and the
checks matched; 1 otherwise; 2 for usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gzip
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
SMTP_FILTER = "tcp port 25 or tcp port 465 or tcp port 587"
TOOLS = ("smtpscope", "tshark", "tshark-prefiltered", "tcpdump", "bare-loop", "split-2")
TSHARK_FIELDS = ["-T", "fields", "-e", "frame.number", "-e", "smtp.req.command"]
TSHARK_FIELDS += ["-e", "smtp.response.code"]


@dataclass(frozen=True, slots=True)
class Command:
    """How to run one tool on the capture."""

    tool: str
    argv: list[str]
    cwd: Path | None = None
    version: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of one tool, as ``os.wait4`` reported it."""

    wall_s: float
    cpu_s: float
    max_rss_kb: int
    exit_code: int
    stderr_tail: str
    tree_rss_kb: int = 0  # sampled peak of the summed RSS of all its processes


@dataclass(slots=True)
class Result:
    command: Command
    samples: list[Sample] = field(default_factory=list)

    @property
    def failed(self) -> Sample | None:
        return next((s for s in self.samples if s.exit_code != 0), None)

    def summary(self, packets: int, size: int) -> dict[str, Any]:
        wall = statistics.median(s.wall_s for s in self.samples)
        return {
            "argv": self.command.argv,
            "version": self.command.version,
            "note": self.command.note,
            "wall_s": [round(s.wall_s, 4) for s in self.samples],
            "wall_median_s": round(wall, 4),
            "cpu_median_s": round(statistics.median(s.cpu_s for s in self.samples), 4),
            "peak_rss_kb": max(s.max_rss_kb for s in self.samples),
            "tree_rss_kb": max(s.tree_rss_kb for s in self.samples),
            "packets_per_s": round(packets / wall),
            "mb_per_s": round(size / wall / 1e6, 2),
        }


# -- finding the tools --------------------------------------------------------


def _first_line(argv: list[str], cwd: Path | None = None) -> str:
    """First line a command prints (a version string), or ''."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def _help_text(argv: list[str], cwd: Path | None) -> str | None:
    """``argv --help`` output, or None when the command does not run."""
    try:
        done = subprocess.run(
            [*argv, "--help"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def smtpscope_command(
    capture: Path | Sequence[Path],
    out: Path,
    jobs: int | None,
    tool: str = "smtpscope",
) -> Command | str:
    """The smtpscope command line on ``capture`` (one file, or the files a
    capture was cut into), or why it cannot run."""
    if (REPO / "analysis" / "__main__.py").exists():
        base, cwd = [sys.executable, "-m", "analysis"], REPO
    elif shutil.which("smtpscope"):
        base, cwd = ["smtpscope"], None
    else:
        return "no analysis package in this checkout and no smtpscope on PATH"
    help_text = _help_text([*base, "read"], cwd)
    if help_text is None:
        return f"'{' '.join(base)} read --help' failed: the CLI is not usable"

    files = [capture] if isinstance(capture, Path) else list(capture)
    argv = [*base, "read", *map(str, files), "-o", str(out), "--format", "jsonl"]
    notes = []
    if "--quiet" in help_text or " -q" in help_text:
        argv.append("-q" if " -q" in help_text else "--quiet")
    else:
        notes.append("no quiet flag; stdout goes to /dev/null")
    if jobs is not None:
        if "--jobs" in help_text:
            argv += ["--jobs", str(jobs)]
        else:
            notes.append(f"read has no --jobs option; --jobs {jobs} ignored")
    version = _first_line([*base, "--version"], cwd)
    return Command(tool, argv, cwd, version, "; ".join(notes))


def tshark_command(capture: Path) -> Command | str:
    if not shutil.which("tshark"):
        return "tshark is not installed (Debian package tshark)"
    argv = ["tshark", "-r", str(capture), "-Y", "smtp", *TSHARK_FIELDS]
    return Command("tshark", argv, version=_first_line(["tshark", "--version"]))


def tshark_prefiltered_command(capture: Path) -> Command | str:
    """tshark as a user who knows it runs it on a large capture: after a
    tcpdump pass that keeps only the SMTP ports, so that it dissects no
    other traffic. Not the issue's comparison, a fairer one beside it."""
    for tool, package in (("tshark", "tshark"), ("tcpdump", "tcpdump")):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian package {package})"
    if not shutil.which("bash"):
        return "bash is not installed (for its pipefail)"
    tcpdump = f"tcpdump -r {shlex.quote(str(capture))} -w - '{SMTP_FILTER}'"
    tshark = shlex.join(["tshark", "-r", "-", "-Y", "smtp", *TSHARK_FIELDS])
    argv = ["bash", "-c", f"set -o pipefail; {tcpdump} | {tshark}"]
    note = "tcpdump keeping the SMTP ports, into tshark"
    return Command("tshark-prefiltered", argv, note=note)


def tcpdump_command(capture: Path) -> Command | str:
    if not shutil.which("tcpdump"):
        return "tcpdump is not installed (Debian package tcpdump)"
    argv = ["tcpdump", "-r", str(capture), "-w", "/dev/null", SMTP_FILTER]
    return Command("tcpdump", argv, version=_first_line(["tcpdump", "--version"]))


def split_command(capture: Path, out: Path, scratch: Path) -> Command | str:
    """Two smtpscope processes at once on the capture's two shards
    (``split_shards``), the slower one's end the run's end."""
    if not shutil.which("tcpdump"):
        return "tcpdump is not installed (Debian package tcpdump)"
    runs = []
    for part in (0, 1):
        half = scratch / f"shard{part}.pcap"
        command = smtpscope_command(half, out / f"shard{part}", 1, "split-2")
        if isinstance(command, str):
            return command
        runs.append(shlex.join(command.argv))
    # The first in the background; both exit statuses count.
    script = f"{runs[0]} & first=$!; {runs[1]}; second=$?; wait $first; "
    script += "exit $(( $? | second ))"
    return Command(
        "split-2",
        ["sh", "-c", script],
        cwd=REPO,
        note="two --jobs 1 at once on the halves split by connection hash",
    )


def _slower_reader(scratch: Path) -> str | None:
    """Why split-2 is no bound for ``--jobs 2`` here, or None: shards under
    the size from which smtpscope reads a file through libpcap go through
    its Python reader, which a ``-j 2`` of the whole capture does not (found
    in review: on a 20 MB capture split-2 took 1.5 times -j 2's time)."""
    code = "from capture.source import FAST_PATH_MIN_BYTES as m; print(m)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        return None
    least = int(done.stdout)
    sizes = [(scratch / f"shard{part}.pcap").stat().st_size for part in (0, 1)]
    if min(sizes) >= least:
        return None
    return (
        f"no bound for --jobs 2 here: its shards ({sizes[0] / 1e6:,.1f} and "
        f"{sizes[1] / 1e6:,.1f} MB) are under the {least / 2**20:g} MiB from which "
        "smtpscope reads through libpcap, so its Python reader reads them"
    )


def split_shards(capture: Path, scratch: Path) -> str | None:
    """Write the capture's two shards as ``-j 2`` workers take them; None,
    or why they could not be written."""
    for part in (0, 1):
        # The filter comes from the checkout, as the workers build it.
        code = (
            "from capture.libpcap import smtp_filter; "
            f"print(smtp_filter([25, 465, 587, 2525], ({part}, 2)))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"no shard filter from this checkout: {done.stderr.strip()[-200:]}"
        half = scratch / f"shard{part}.pcap"
        argv = ["tcpdump", "-r", str(capture), "-w", str(half), done.stdout.strip()]
        cut = subprocess.run(argv, capture_output=True, text=True, check=False)
        if cut.returncode != 0:
            return f"tcpdump could not split the capture: {cut.stderr.strip()[-200:]}"
    return None


def rotate(capture: Path, megabytes: int, scratch: Path) -> list[Path] | str:
    """The capture cut into files of ``megabytes`` MB, as ``tcpdump -C``
    rotates a capture; or why it could not be cut."""
    if not shutil.which("tcpdump"):
        return "tcpdump is not installed (Debian package tcpdump)"
    folder = scratch / f"rotated-{capture.name}"
    folder.mkdir()
    argv = ["tcpdump", "-r", str(capture), "-w", str(folder / "part")]
    argv += ["-C", str(megabytes)]
    if os.geteuid() == 0:
        # Else tcpdump gives up root before it opens the second file, and
        # the user it becomes cannot write in the scratch directory.
        argv += ["-Z", "root"]
    cut = subprocess.run(argv, capture_output=True, text=True, check=False)
    parts = list(folder.iterdir())
    if cut.returncode != 0 or not parts:
        return f"tcpdump could not cut the capture: {cut.stderr.strip()[-200:]}"
    # part, part1, part2, ...: in the order written.
    return sorted(parts, key=lambda part: int(part.name[4:] or 0))


def bare_loop_command(capture: Path) -> Command | str:
    if not shutil.which("tcpdump"):
        return "tcpdump is not installed (Debian package tcpdump)"
    tcpdump = f"tcpdump -r {shlex.quote(str(capture))} -w - '{SMTP_FILTER}'"
    script = REPO / "bench" / "bare_loop.py"
    loop = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    # pipefail: tcpdump's failure (a damaged capture) is the run's, not
    # hidden behind the loop's exit status (found in review).
    if not shutil.which("bash"):
        return "bash is not installed (for its pipefail)"
    argv = ["bash", "-c", f"set -o pipefail; {tcpdump} | {loop}"]
    return Command("bare-loop", argv, note="tcpdump into bench/bare_loop.py")


# -- measuring ----------------------------------------------------------------


def _wait_for_group(group: int, timeout: float = 10.0) -> None:
    """Wait until no live process is left in process group ``group``; past
    ``timeout``, kill what is. Zombies do not count: the orphans of a
    group are reaped by another process, whenever it does."""
    deadline = time.monotonic() + timeout
    while _live_in_group(group):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            return
        time.sleep(0.02)


def _live_in_group(group: int) -> bool:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                # After the command, which is in parentheses and may hold
                # spaces: state, parent, process group.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


@functools.cache
def gnu_time() -> str | None:
    """GNU time's path, if installed (Debian package time)."""
    found = shutil.which("time")
    if found is None:
        return None
    try:
        done = subprocess.run(
            [found, "--version"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return found if "GNU" in done.stdout + done.stderr else None


def measure(command: Command) -> Sample:
    """Run ``command`` once with stdout to /dev/null; reap it with wait4.

    The peak RSS that wait4 reports is never below this script's own peak
    when it started the child: Linux counts the memory a process had
    before it called exec, and the child is a copy of this script until
    then. So the command runs under GNU time where it is installed, a small
    C program whose own few hundred KiB are all its child inherits: the
    peak it reports is the command's own (and that of the children the
    command waited for). Without it, wait4's figure is exact above this
    script's peak; at it, the largest ``VmHWM`` sampled from /proc (the
    peak since exec, of any process of the run) is taken instead, which a
    run shorter than the sampling interval can miss.
    """
    global _starting
    timer = gnu_time()
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as peak_file:
        argv = command.argv
        if timer is not None:
            argv = [timer, "-f", "%M", "-o", peak_file.name, *argv]
        floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        _starting = True  # a stop is held back until proc is known (_stop)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=command.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its whole tree stopped as one below
            )
            # GNU time's own process is not the command's: not summed.
            sampler = TreeRss(proc.pid, skip_root=timer is not None)
            sampler.start()
        finally:
            _starting = False
        try:
            if _stopped:
                raise KeyboardInterrupt
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            # Stopped (Ctrl-C, SIGTERM): the tool and what it started go too
            # (found in review: a split-2 run went on, orphaned).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            # The shell of split-2 ends at once, the two smtpscope it
            # started only once they have written what they read: they are
            # waited for too (found in a test, which saw them still running).
            _wait_for_group(proc.pid)
            sampler.stop()
            raise
        wall = time.perf_counter() - started
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped already
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
        timed = _time_peak(peak_file.read()) if timer is not None else None
    peak = usage.ru_maxrss  # kilobytes on Linux
    if timed is not None:
        peak = timed
    elif peak <= floor and sampler.hwm_kb:
        peak = sampler.hwm_kb
    return Sample(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_kb=peak,
        exit_code=proc.returncode,
        stderr_tail=tail,
        # A run shorter than the sampling interval may never be sampled at
        # its peak; the tree holds at least the largest process.
        tree_rss_kb=max(sampler.peak_kb, peak),
    )


def _time_peak(written: bytes) -> int | None:
    """The peak RSS in KiB that GNU time wrote (``-f %M``), or None. Its
    last line: a line saying the command was killed may come first."""
    lines = written.decode("ascii", "replace").split()
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


class TreeRss(threading.Thread):
    """Samples the summed RSS of a process and all its descendants, and the
    largest peak (``VmHWM``) of any one of them; with ``skip_root``, of its
    descendants only."""

    def __init__(
        self, pid: int, interval: float = 0.01, skip_root: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.skip_root = skip_root
        self.interval = interval
        self.peak_kb = 0
        self.hwm_kb = 0
        self._done = threading.Event()
        self._page_kb = os.sysconf("SC_PAGE_SIZE") // 1024

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, self._sample())
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def _sample(self) -> int:
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            try:
                if pid != self.pid or not self.skip_root:
                    with open(f"/proc/{pid}/statm") as statm:
                        total += int(statm.read().split()[1]) * self._page_kb
                    with open(f"/proc/{pid}/status") as status:
                        for line in status:
                            if line.startswith("VmHWM:"):
                                hwm = int(line.split()[1])
                                self.hwm_kb = max(self.hwm_kb, hwm)
                                break
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        todo += [int(child) for child in children.read().split()]
            except (OSError, ValueError, IndexError):
                continue  # the process ended between two reads
        return total


def compile_checkout() -> float:
    """Byte-compile the checkout's packages, as ``pip install .`` does (an
    editable install does not).

    Without it, a Python run with PYTHONDONTWRITEBYTECODE (as on the
    project's machines) compiles every module again in every round.
    """
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "analysis", "capture"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - started


def warm(capture: Path) -> float:
    """Read the whole capture once so that no tool pays for the disk."""
    started = time.perf_counter()
    # Into one small buffer: what this script holds when it starts a tool is
    # the least wait4 can report for it (see measure).
    buffer = bytearray(1 << 20)
    with capture.open("rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    return time.perf_counter() - started


# -- the capture --------------------------------------------------------------


def truth_of(capture: Path) -> dict[str, Any] | None:
    sidecar = capture.with_name(capture.name + ".truth.json")
    if not sidecar.exists():
        return None
    truth: dict[str, Any] = json.loads(sidecar.read_text())
    return truth


class _Reader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...


def count_packets(capture: Path) -> int:
    """Records in a pcap or pcapng file (gzip-compressed too)."""
    with capture.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(capture, "rb") as f:
        magic = f.read(4)
        if magic == b"\x0a\x0d\x0d\x0a":
            return _count_pcapng(f, magic)
        return _count_pcap(f, magic)


def _count_pcap(f: _Reader, magic: bytes) -> int:
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        record = struct.Struct("<8xI4x")
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        record = struct.Struct(">8xI4x")
    else:
        raise ValueError("not a pcap or pcapng file")
    f.read(20)
    count = 0
    while len(header := f.read(16)) == 16:
        (caplen,) = record.unpack(header)
        # Read, not skipped: a record cut short by the file's end is not one.
        if len(f.read(caplen)) < caplen:
            break
        count += 1
    return count


def _count_pcapng(f: _Reader, magic: bytes) -> int:
    # Each block: type, total length (the section header's byte-order magic
    # tells the endianness); packets are blocks 2, 3 and 6.
    head = magic + f.read(8)
    order = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    count = 0
    length = struct.unpack(order + "I", head[4:8])[0]
    f.seek(length - 12, 1)
    while len(block := f.read(8)) == 8:
        kind, length = struct.unpack(order + "II", block)
        count += kind in (2, 3, 6)
        f.seek(length - 8, 1)
    return count


def check_rows(out: Path, truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """smtpscope's row counts next to the ground truth."""
    sessions = _rows(out / "sessions.jsonl")
    transactions = _rows(out / "transactions.jsonl")
    accepted = sum(1 for t in transactions if t.get("status") == "accepted")
    found = {
        "sessions": len(sessions),
        "transactions": len(transactions),
        "messages_accepted": accepted,
    }
    return {
        key: {"expected": truth[key], "found": value, "match": truth[key] == value}
        for key, value in found.items()
    }


def check_shards(
    shards: list[Path], truth: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """split-2's row counts, its shards' summed, next to the ground truth."""
    checks = [check_rows(shard, truth) for shard in shards]
    return {
        key: {
            "expected": truth[key],
            "found": (found := sum(check[key]["found"] for check in checks)),
            "match": truth[key] == found,
        }
        for key in checks[0]
    }


# The tables smtpscope read writes with -o DIR.
TABLES = ("sessions", "transactions", "commands", "anomalies", "tls", "alerts")


def table_differences(out: Path, tools: list[str]) -> dict[str, list[str]]:
    """For each later smtpscope run, the files it wrote otherwise than the
    first run did (none when the same): a table written by only one, or
    with other bytes. The first run must have written every table."""
    if "smtpscope" not in tools:
        return {}
    first = out / "smtpscope"
    mine = _names(first)
    missing = [f"{name}.jsonl" for name in TABLES if f"{name}.jsonl" not in mine]
    found: dict[str, list[str]] = {}
    for tool in tools:
        if tool == "smtpscope":
            continue
        theirs = _names(out / tool)
        differ = [f"{name} (smtpscope wrote none)" for name in missing]
        differ += [f"{name} (only one wrote it)" for name in sorted(mine ^ theirs)]
        differ += [
            name
            for name in sorted(mine & theirs)
            if (out / tool / name).read_bytes() != (first / name).read_bytes()
        ]
        found[tool] = differ
    return found


def _names(folder: Path) -> set[str]:
    """The names of the files in ``folder``; none if it is missing."""
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- output -------------------------------------------------------------------


def ratios(
    tools: dict[str, dict[str, Any]],
    jobs: dict[str, int] | None = None,
    cpus: int | None = None,
) -> dict[str, dict[str, float]]:
    """Each smtpscope run against the others, from median wall and CPU times.

    Per smtpscope tool: ``throughput_vs_tshark`` (tshark's time over ours),
    ``throughput_vs_tshark_prefiltered`` (the same against tshark after a
    tcpdump pass), ``time_vs_tcpdump`` (ours over tcpdump's),
    ``time_vs_bare_loop`` (ours over the bare Python loop's) and, for the
    ``--jobs`` runs after the first, ``speedup_vs_smtpscope`` (the first's time over
    ours). CPU-time ratios (``_cpu``) hold up better than wall-time ones on
    a machine busy with other work; there is no CPU speedup, since more
    processes spend more CPU in all.

    With ``jobs`` (processes per tool) and ``cpus``, a ``--jobs`` run also
    gets ``speedup_ceiling``: the first run's wall time over its CPU time
    spread evenly on as many CPUs as this run can use. No split of the same
    work beats that; the first run may already use more than one CPU
    (libpcap filters in a thread of its own), which lowers the ceiling.
    """
    out: dict[str, dict[str, float]] = {}
    for name, ours in tools.items():
        if name == "split-2" and "wall_median_s" in ours:
            first = tools.get("smtpscope", {})
            if first.get("wall_median_s") and ours["wall_median_s"] > 0:
                bound = first["wall_median_s"] / ours["wall_median_s"]
                out[name] = {"speedup_vs_smtpscope": round(bound, 2)}
            continue
        if not name.startswith("smtpscope") or "wall_median_s" not in ours:
            continue
        found: dict[str, float] = {}
        comparisons = [
            ("tshark", "throughput_vs_tshark", False, True),
            ("tshark-prefiltered", "throughput_vs_tshark_prefiltered", False, True),
            ("tcpdump", "time_vs_tcpdump", True, True),
            ("bare-loop", "time_vs_bare_loop", True, True),
        ]
        if name != "smtpscope":
            comparisons.append(("smtpscope", "speedup_vs_smtpscope", False, False))
        for other, key, ours_on_top, with_cpu in comparisons:
            theirs = tools.get(other, {})
            if "wall_median_s" not in theirs:
                continue
            measures = [("wall_median_s", "")]
            if with_cpu:
                measures.append(("cpu_median_s", "_cpu"))
            for measure, suffix in measures:
                top, bottom = (ours, theirs) if ours_on_top else (theirs, ours)
                if bottom[measure] > 0:
                    found[key + suffix] = round(top[measure] / bottom[measure], 2)
        ceiling = _ceiling(name, tools, jobs or {}, cpus)
        if ceiling is not None:
            found["speedup_ceiling"] = ceiling
        out[name] = found
    return out


def _ceiling(
    name: str, tools: dict[str, dict[str, Any]], jobs: dict[str, int], cpus: int | None
) -> float | None:
    """``speedup_ceiling`` of the run ``name``, or None (see ``ratios``)."""
    first = tools.get("smtpscope", {})
    if name == "smtpscope" or name not in jobs or not cpus:
        return None
    if first.get("cpu_median_s", 0) <= 0 or "wall_median_s" not in first:
        return None
    usable = min(jobs[name] or cpus, cpus)
    spread = float(first["cpu_median_s"]) / usable
    # A single process that spent less CPU time than wall time (waiting on
    # the disk or another process) would give a ceiling above the number of
    # CPUs, which nothing reaches.
    return round(min(float(usable), float(first["wall_median_s"]) / spread), 2)


def print_table(report: dict[str, Any]) -> None:
    print(
        f"capture  {report['capture']}  {report['bytes'] / 1e6:,.1f} MB  "
        f"{report['packets']:,} packets ({report['packets_from']})"
    )
    rotated = report["rotated"]
    if rotated is not None:
        print(
            f"rotated  smtpscope reads it cut into {rotated['files']} files of "
            f"{rotated['megabytes']} MB (tcpdump -C); the other tools read it whole"
        )
    load = report["machine"]["load_average_before"][0]
    rounds = report["runs"]
    # One round is one sample: a new user read a single run's -j 2 at 0.82
    # times -j 1, where three runs of each put -j 2 ahead.
    medians = (
        "medians" if rounds >= 3 else "one sample each, noisy: use --runs 3 or more"
    )
    print(
        f"runs     {rounds} per tool, {medians}; peak RSS is the max "
        f"of the largest process, tree RSS of all processes summed; load "
        f"average {load} on {report['machine']['cpus']} CPUs before\n"
    )
    print(
        f"{'tool':18} {'wall s':>8} {'packets/s':>11} {'MB/s':>8} "
        f"{'CPU s':>7} {'peak RSS MiB':>13} {'tree RSS MiB':>13}"
    )
    for name, tool in report["tools"].items():
        if "wall_median_s" not in tool:
            print(f"{name:18} {tool['status']}: {tool['reason']}")
            continue
        print(
            f"{name:18} {tool['wall_median_s']:8.2f} {tool['packets_per_s']:11,} "
            f"{tool['mb_per_s']:8.1f} {tool['cpu_median_s']:7.2f} "
            f"{tool['peak_rss_kb'] / 1024:13.1f} {tool['tree_rss_kb'] / 1024:13.1f}"
        )
        if tool["note"]:
            print(f"{'':18} note: {tool['note']}")
    print()
    for name, found in report["ratios"].items():
        if name == "split-2":
            bound = report["tools"].get("split-2", {}).get("bound", True)
            print(
                f"split-2 vs smtpscope: {found['speedup_vs_smtpscope']:.2f}x the "
                "throughput by wall time "
                + (
                    "(the most --jobs 2 can reach here)"
                    if bound
                    else "(no bound here: see its note)"
                )
            )
            continue
        for key, other, meaning in (
            ("throughput_vs_tshark", "tshark", "the throughput"),
            (
                "throughput_vs_tshark_prefiltered",
                "tshark-prefiltered",
                "the throughput",
            ),
            ("time_vs_tcpdump", "tcpdump", "the time"),
            ("time_vs_bare_loop", "bare-loop", "the time"),
            ("speedup_vs_smtpscope", "smtpscope", "the throughput"),
        ):
            if key in found:
                cpu = found.get(key + "_cpu")
                cpu_text = f", {cpu:.2f}x by CPU time" if cpu is not None else ""
                if "speedup_ceiling" in found and key == "speedup_vs_smtpscope":
                    cpu_text = (
                        f" (ceiling {found['speedup_ceiling']:.2f}x: smtpscope's "
                        "CPU time spread evenly over the CPUs this run can use)"
                    )
                print(
                    f"{name} vs {other}: {found[key]:.2f}x {meaning} "
                    f"by wall time{cpu_text}"
                )
    check = report.get("truth_check")
    if isinstance(check, dict):
        for tool, rows in check.items():
            for key, row in rows.items():
                verdict = "match" if row["match"] else "MISMATCH"
                print(
                    f"truth {tool:14} {key:18} expected {row['expected']:>8,} "
                    f"found {row['found']:>8,}  {verdict}"
                )
    elif check:
        print(f"truth check: {check}")
    differences = report.get("table_differences", {})
    for tool, same in report.get("same_tables", {}).items():
        print(f"tables of {tool} {'equal' if same else 'DIFFER FROM'} smtpscope's")
        for line in differences.get(tool, [])[:10]:
            print(f"  {line}")
    base = report.get("baseline")
    if base:
        name = Path(base["capture"]).name
        for tool, found in base["memory"].items():
            if "growth" not in found:
                print(f"{tool} on {name}: {found.get('reason', 'no figures')}")
                continue
            growth = found["growth"]
            print(
                f"{tool} peak RSS {found['peak_rss_kb'] / 1024:.1f} MiB, "
                f"{found['baseline_peak_rss_kb'] / 1024:.1f} MiB on {name} "
                f"({base['bytes'] / 1e6:,.1f} MB): "
                + (f"{round(growth, 2) + 0.0:+.0%}" if growth is not None else "-")
            )
    if report.get("goals"):
        print()
        print_goals(report["goals"], report["bytes"])


# The goals (the top-level README's Speed section says which are met).
GOAL_VS_TSHARK = 10.0  # at least this many times tshark's throughput
GOAL_VS_TCPDUMP = 5.0  # within this many times tcpdump's time
GOAL_PEAK_MB = 150.0  # peak RSS, in MB of 10**6 bytes
GOAL_GROWTH = 0.20  # peak over the baseline capture's peak
GOAL_SPEEDUP = 1.7  # --jobs 2 over --jobs 1, on 2 CPUs


def goals(report: dict[str, Any], jobs: dict[str, int]) -> list[dict[str, Any]]:
    """Each of the issue's goals the run has a figure for, per smtpscope run:
    the goal, the run, its figure (by wall time for times) and whether it
    is met. ``jobs``: processes per smtpscope run."""
    found: list[dict[str, Any]] = []

    def judge(goal: str, run: str, figure: float, met: bool) -> None:
        found.append({"goal": goal, "run": run, "figure": figure, "met": met})

    for run, ratio in report["ratios"].items():
        if not run.startswith("smtpscope"):
            continue
        if "throughput_vs_tshark" in ratio:
            figure = ratio["throughput_vs_tshark"]
            judge("throughput >= 10x tshark's", run, figure, figure >= GOAL_VS_TSHARK)
        if "time_vs_tcpdump" in ratio:
            figure = ratio["time_vs_tcpdump"]
            judge("time <= 5x tcpdump's", run, figure, figure <= GOAL_VS_TCPDUMP)
        first_alone = jobs.get("smtpscope") == 1
        if "speedup_vs_smtpscope" in ratio and jobs.get(run) == 2 and first_alone:
            figure = ratio["speedup_vs_smtpscope"]
            judge("--jobs 2 >= 1.7x --jobs 1", run, figure, figure >= GOAL_SPEEDUP)
    for run, tool in report["tools"].items():
        if run.startswith("smtpscope") and "peak_rss_kb" in tool:
            megabytes = round(tool["peak_rss_kb"] * 1024 / 1e6, 1)
            judge("peak RSS < 150 MB", run, megabytes, megabytes < GOAL_PEAK_MB)
    for run, memory in report.get("baseline", {}).get("memory", {}).items():
        if memory.get("growth") is not None:
            growth = memory["growth"]
            judge("peak <= 1.2x the baseline's", run, growth, growth <= GOAL_GROWTH)
    for run, same in report.get("same_tables", {}).items():
        judge("same tables as the first run", run, float(same), same)
    return found


# Below this many bytes a capture is "small" to the goal lines: the time
# goals are set for the 1 GB capture, and on a small one start-up dominates.
GOALS_SIZE = 500_000_000
# The goals set on time, which a small capture does not judge.
TIME_GOALS = ("throughput >=", "time <=", "--jobs 2 >=")


def print_goals(found: list[dict[str, Any]], size: int) -> None:
    small = size < GOALS_SIZE
    if small:
        # A new user read the NOT MET lines of a 20 MB run as failures, and
        # another those of a 100 MB run, caveat and all: not judged at all.
        print(
            f"(the time goals are for the 1 GB capture: on {size / 1e6:,.0f} MB "
            "start-up dominates the times, which are not judged)"
        )
    for goal in found:
        figure = goal["figure"]
        verdict = "met" if goal["met"] else "NOT MET"
        if goal["goal"].startswith("same tables"):
            shown = "equal" if goal["met"] else "differ"
        elif goal["goal"].startswith("peak RSS"):
            # The goal is in MB, the table above in MiB: both, so that the
            # two figures read as one.
            shown = f"{figure:.1f} MB"
            verdict += f" ({figure * 1e6 / 2**20:.1f} MiB)"
        elif goal["goal"].startswith("peak <="):
            shown = f"{round(figure, 2) + 0.0:+.0%}"  # as the growth line
        else:
            shown = f"{figure:.2f}x"
        if small and goal["goal"].startswith(TIME_GOALS):
            verdict = "not judged"
        print(f"goal {goal['goal']:30} {goal['run']:24} {shown:>8}  {verdict}")


def memory_growth(
    tools: dict[str, dict[str, Any]], on_baseline: dict[str, Result]
) -> dict[str, dict[str, Any]]:
    """Per smtpscope run: its peak RSS on the capture and on the baseline
    (each the largest of the rounds), and how much larger the first is.

    The issue's flatness goal: memory should follow the connections open at
    once, not the size of the file, so a capture ten times larger should
    not take much more.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, result in on_baseline.items():
        here = tools.get(name, {}).get("peak_rss_kb")
        bad = result.failed
        if bad is not None:
            out[name] = {"status": "failed", "reason": f"exit {bad.exit_code}"}
            continue
        if here is None or not result.samples:
            continue
        there = max(s.max_rss_kb for s in result.samples)
        out[name] = {
            "peak_rss_kb": here,
            "baseline_peak_rss_kb": there,
            "baseline_wall_median_s": round(
                statistics.median(s.wall_s for s in result.samples), 4
            ),
            "growth": round(here / there - 1, 3) if there else None,
        }
    return out


# -- main ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path)
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--jobs",
        type=_job_list,
        default=[1, 2],
        help="comma list: one smtpscope run per value of read --jobs (default 1,2)",
    )
    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help=f"comma list of tools to run (default: all of {','.join(TOOLS)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="smtpscope output directory, relative to the current one "
        "(default: bench/out/CAPTURE_NAME in the checkout)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a smaller capture: smtpscope also runs on it in every round, and "
        "its peak memory is compared with the capture's",
    )
    parser.add_argument(
        "--rotate",
        type=int,
        metavar="MB",
        help="smtpscope reads the capture (and the baseline) cut into files "
        "of MB megabytes, as tcpdump -C rotates a capture (cut beforehand, "
        "not timed); the other tools read it whole",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument(
        "--no-warm", action="store_true", help="skip reading the capture first"
    )
    args = parser.parse_args(argv)
    unknown = set(args.tools.split(",")) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.rotate is not None and args.rotate < 1:
        parser.error("--rotate must be at least 1 (MB)")
    if not args.capture.is_file():
        parser.error(f"{args.capture} is not a file")
    if args.baseline is not None:
        if not args.baseline.is_file():
            parser.error(f"{args.baseline} is not a file")
        if args.baseline.resolve() == args.capture.resolve():
            parser.error("--baseline must be another capture than the one measured")
        if "smtpscope" not in args.tools.split(","):
            parser.error("--baseline compares smtpscope's runs: add it to --tools")
        args.baseline = args.baseline.resolve()
    # Absolute: smtpscope runs in the checkout, not in the caller's directory.
    args.capture = args.capture.resolve()
    return args


def _job_list(text: str) -> list[int]:
    try:
        jobs = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not jobs or min(jobs) < 0 or len(set(jobs)) != len(jobs):
        raise argparse.ArgumentTypeError(f"jobs must be distinct and >= 0: {text!r}")
    return jobs


def smtpscope_tools(jobs: list[int]) -> list[tuple[str, int]]:
    """(tool name, jobs) per smtpscope run: the first is plain "smtpscope"."""
    return [(f"smtpscope-j{n}" if i else "smtpscope", n) for i, n in enumerate(jobs)]


def commands(
    args: argparse.Namespace,
    out: Path,
    scratch: Path,
    parts: list[Path] | str | None = None,
) -> dict[str, Command | str]:
    """Each tool's command; ``parts``: the files smtpscope reads instead of
    the capture (``--rotate``), or why there are none."""
    wanted = args.tools.split(",")
    found: dict[str, Command | str] = {}
    for tool in TOOLS:
        if tool not in wanted:
            continue
        if tool == "smtpscope":
            for name, jobs in smtpscope_tools(args.jobs):
                if isinstance(parts, str):
                    found[name] = parts
                    continue
                reads = parts if parts is not None else args.capture
                found[name] = smtpscope_command(reads, out / name, jobs, name)
        elif tool == "tshark":
            found[tool] = tshark_command(args.capture)
        elif tool == "tshark-prefiltered":
            found[tool] = tshark_prefiltered_command(args.capture)
        elif tool == "tcpdump":
            found[tool] = tcpdump_command(args.capture)
        elif tool == "split-2":
            found[tool] = split_command(args.capture, out, scratch)
        else:
            found[tool] = bare_loop_command(args.capture)
    return found


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM as Ctrl-C: the tool running is stopped and the temporary
    # directory (split-2's shards, tens of MB) removed on the way out.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with tempfile.TemporaryDirectory(prefix="smtpscope-bench-") as scratch:
        return _run(args, Path(scratch))


# While measure starts a tool, a stop is only noted: raised in Popen, it
# would leave the tool running, started but not known to be stopped (found
# in a test: split-2's shell and its two smtpscope outlived the run).
_starting = False
_stopped = False


def _stop(signum: int, frame: object) -> None:
    global _stopped
    if _starting:
        _stopped = True
        return
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, scratch: Path) -> int:
    capture: Path = args.capture
    out: Path = (args.out or REPO / "bench" / "out" / capture.name).resolve()
    size = capture.stat().st_size
    truth = truth_of(capture)
    if truth is not None:
        packets, packets_from = int(truth["packets"]), "truth sidecar"
    else:
        packets, packets_from = count_packets(capture), "counted"

    # Find the tools, warm the page cache, then run the rounds.
    results: dict[str, Result] = {}
    report_tools: dict[str, dict[str, Any]] = {}
    parts: list[Path] | str | None = None
    baseline_parts: list[Path] | str | None = None
    if args.rotate is not None:
        log(f"cutting the capture into files of {args.rotate} MB for smtpscope")
        parts = rotate(capture, args.rotate, scratch)
        if args.baseline is not None:
            baseline_parts = rotate(args.baseline, args.rotate, scratch)
    found = commands(args, out, scratch, parts)
    split_bound = True
    split = found.get("split-2")
    if isinstance(split, Command):
        log("splitting the capture in two by connection hash for split-2")
        why = split_shards(args.capture, scratch)
        if why is not None:
            found["split-2"] = why
        else:
            slower = _slower_reader(scratch)
            if slower is not None:
                split_bound = False
                found["split-2"] = dataclasses.replace(split, note=slower)
    for tool, command in found.items():
        if isinstance(command, str):
            log(f"skipping {tool}: {command}")
            report_tools[tool] = {"status": "skipped", "reason": command}
        else:
            results[tool] = Result(command)
    # The same smtpscope runs on the baseline capture, in the same rounds.
    baseline: Path | None = args.baseline
    on_baseline: dict[str, Result] = {}
    if baseline is not None:
        base_out = out / "baseline"  # beside the tools' own directories
        base_reads = baseline_parts if baseline_parts is not None else baseline
        for name, jobs in smtpscope_tools(args.jobs):
            if name in results and not isinstance(base_reads, str):
                command = smtpscope_command(base_reads, base_out / name, jobs, name)
                if isinstance(command, Command):
                    on_baseline[name] = Result(command)
                    (base_out / name).mkdir(parents=True, exist_ok=True)
    if any(tool.startswith("smtpscope") for tool in results):
        log(f"compiling smtpscope's modules once: {compile_checkout():.2f} s")
    load_before = [round(x, 2) for x in os.getloadavg()]
    if not args.no_warm:
        log(f"reading {capture} once: {warm(capture):.2f} s")
        if baseline is not None:
            log(f"reading {baseline} once: {warm(baseline):.2f} s")
    # Where each run writes its tables, emptied before every run: tables a
    # run did not write must not be found there from the one before.
    folders: dict[str, list[Path]] = {
        tool: [out / tool] for tool in results if tool.startswith("smtpscope")
    }
    if "split-2" in results:
        folders["split-2"] = [out / f"shard{part}" for part in (0, 1)]
    base_folders = {tool: [out / "baseline" / tool] for tool in on_baseline}
    differences: dict[str, list[str]] = {}
    for round_no in range(1, args.runs + 1):
        for group, where, suffix in (
            (results, folders, ""),
            (on_baseline, base_folders, "  (baseline)"),
        ):
            for tool, result in group.items():
                if result.failed:
                    continue
                for folder in where.get(tool, []):
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir(parents=True)
                sample = measure(result.command)
                result.samples.append(sample)
                log(
                    f"round {round_no}/{args.runs} {tool:18} {sample.wall_s:8.2f} s"
                    f"  exit {sample.exit_code}{suffix}"
                )
            # Every round's tables, not only the last's, must be the same.
            alike = [
                t
                for t, r in group.items()
                if t.startswith("smtpscope") and not r.failed
            ]
            baseline_group = group is on_baseline
            base = out / "baseline" if baseline_group else out
            for tool, differ in table_differences(base, alike).items():
                name = f"{tool} (baseline)" if baseline_group else tool
                for file in differ:
                    differences.setdefault(name, []).append(f"round {round_no}: {file}")

    # Summaries, ratios and the check against the ground truth.
    ok = True
    for tool, result in results.items():
        bad = result.failed
        if bad is not None:
            ok = False
            reason = f"exit {bad.exit_code}: {bad.stderr_tail.strip()[-500:]}"
            report_tools[tool] = {"status": "failed", "reason": reason}
        else:
            report_tools[tool] = {"status": "ok", **result.summary(packets, size)}
            if tool == "split-2":
                report_tools[tool]["bound"] = split_bound
    order = [name for name, _ in smtpscope_tools(args.jobs)] + list(TOOLS[1:])
    report_tools = {t: report_tools[t] for t in order if t in report_tools}
    report: dict[str, Any] = {
        "capture": str(capture),
        "rotated": (
            {"megabytes": args.rotate, "files": len(parts)}
            if isinstance(parts, list)
            else None
        ),
        "bytes": size,
        "packets": packets,
        "packets_from": packets_from,
        "runs": args.runs,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "tools": report_tools,
        "ratios": ratios(
            report_tools, dict(smtpscope_tools(args.jobs)), os.cpu_count()
        ),
        "truth_check": None,
    }
    ran = [
        tool
        for tool, found in report_tools.items()
        if tool.startswith("smtpscope") and found.get("status") == "ok"
    ]
    if truth is None:
        report["truth_check"] = "no .truth.json sidecar next to the capture"
    elif ran:
        checks = {tool: check_rows(out / tool, truth) for tool in ran}
        if report_tools.get("split-2", {}).get("status") == "ok":
            shards = [out / f"shard{part}" for part in (0, 1)]
            checks["split-2"] = check_shards(shards, truth)
        report["truth_check"] = checks
        ok = ok and all(
            row["match"] for check in checks.values() for row in check.values()
        )
    else:
        report["truth_check"] = "smtpscope did not run"
    asked = [t for t in found if t.startswith("smtpscope") or t == "split-2"]
    if asked and all(report_tools[t]["status"] == "skipped" for t in asked):
        ok = False  # smtpscope could not run: nothing the run is for was measured
    report["same_tables"] = {
        tool: not differences.get(tool)
        for tool in [*ran, *(f"{t} (baseline)" for t in on_baseline)]
        if tool.split(" ")[0] != "smtpscope"
    }
    report["table_differences"] = differences
    if baseline is not None:
        report["baseline"] = {
            "capture": str(baseline),
            "bytes": baseline.stat().st_size,
            "memory": memory_growth(report_tools, on_baseline),
        }
        ok = ok and not any(r.failed for r in on_baseline.values())
    ok = ok and all(report["same_tables"].values())
    # Not part of ok: a goal not met is a finding, not a failed run.
    report["goals"] = goals(report, dict(smtpscope_tools(args.jobs)))

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
