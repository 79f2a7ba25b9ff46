"""Captures read twice, or out of time order: what is read, and what is said.

Read twice, every session of a capture came twice under the same
session_id, which breaks every join on it. Given out of time order, the
parts of one capture split their sessions and lost packets, and nothing
said so: they are read in time order now.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from analysis.cli import main
from capture.source import in_time_order

AUTH = Path(__file__).parents[2] / "pcaps" / "auth.pcap"


def session_ids(out: Path) -> list[str]:
    with (out / "sessions.jsonl").open() as rows:
        return [json.loads(row)["session_id"] for row in rows]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_same_file_twice_is_read_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    link = tmp_path / "link.pcap"
    link.symlink_to(AUTH)
    out = tmp_path / "out"
    captures = [str(AUTH), str(link), str(AUTH)]
    assert main(["read", "-q", "-j", jobs, "-o", str(out), *captures]) == 0
    ids = session_ids(out)
    assert len(ids) == len(set(ids)) == 4
    assert capsys.readouterr().err == (
        f"smtpscope: warning: {link}: the same file as {AUTH}, read once\n"
        f"smtpscope: warning: {AUTH}: the same file as {AUTH}, read once\n"
    )


def test_a_copy_read_beside_its_original_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another file, so read; its sessions are the original's, ids and all.
    # (rset-multi.pcap lasts 25 ms: more than a rotated file's first packet
    # may be older than the last before it, so the copy is another
    # recording, which a note says too.)
    original = AUTH.parent / "rset-multi.pcap"
    copy = tmp_path / "copy.pcap"
    shutil.copy(original, copy)
    out = tmp_path / "out"
    assert main(["read", "-q", "-o", str(out), str(original), str(copy)]) == 0
    ids = session_ids(out)
    assert len(ids) == 2 and len(set(ids)) == 1
    assert capsys.readouterr().err == (
        "smtpscope: note: 1 of the 2 captures (copy.pcap) overlaps in time the "
        "ones read before it, so it was read as another recording, with "
        "connections of its own\n"
        "smtpscope: warning: 1 session has the session_id of another: the "
        "same connection, from the same first packet, was read twice (a "
        "capture given twice, or captures that overlap); all their rows are "
        "kept\n"
    )


def parts(tmp_path: Path, count: int) -> list[Path]:
    """rset-multi.pcap (one session) cut into ``count`` files, as tcpdump
    -C names them: NAME, NAME1, NAME2, ..."""
    data = (AUTH.parent / "rset-multi.pcap").read_bytes()
    records, at = [], 24
    while at < len(data):
        (length,) = struct.unpack_from("<I", data, at + 8)
        records.append(data[at : at + 16 + length])
        at += 16 + length
    size = -(-len(records) // count)
    paths = []
    for n in range(count):
        path = tmp_path / ("mail.pcap" + (str(n) if n else ""))
        path.write_bytes(data[:24] + b"".join(records[n * size : (n + 1) * size]))
        paths.append(path)
    return paths


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_parts_are_read_in_time_order_whatever_their_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    # A shell glob lists mail.pcap10 before mail.pcap2: read in that order,
    # the session was cut in pieces and parts of it dropped as late packets.
    files = parts(tmp_path, 12)
    globbed = sorted(str(path) for path in files)
    assert globbed[2].endswith("mail.pcap10")
    out = tmp_path / "out"
    assert main(["read", "-q", "-j", jobs, "-o", str(out), *globbed]) == 0
    assert len(session_ids(out)) == 1
    with (out / "commands.jsonl").open() as rows:
        assert sum(1 for _ in rows) == 17
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_capture_that_overlaps_the_one_before_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    # The same session recorded twice, the second time from its fourth
    # packet: another recording, whose packets are a session of their own
    # (caught after its start), not late ones of the first, dropped.
    whole, *_ = parts(tmp_path, 1)
    data = whole.read_bytes()
    at = 24
    for _ in range(3):
        (length,) = struct.unpack_from("<I", data, at + 8)
        at += 16 + length
    later = tmp_path / "tap2.pcap"
    later.write_bytes(data[:24] + data[at:])
    out = tmp_path / "out"
    assert main(["read", "-q", "-j", jobs, "-o", str(out), str(whole), str(later)]) == 0
    assert len(session_ids(out)) == 2
    with (out / "commands.jsonl").open() as rows:
        assert sum(1 for _ in rows) == 34
    assert capsys.readouterr().err == (
        "smtpscope: note: 1 of the 2 captures (tap2.pcap) overlaps in time the "
        "ones read before it, so it was read as another recording, with "
        "connections of its own\n"
    )


def test_time_order_puts_captures_without_packets_last(tmp_path: Path) -> None:
    first, second, third = parts(tmp_path, 3)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(first.read_bytes()[:24])  # a header, no packet
    missing = str(tmp_path / "missing.pcap")
    given = [str(empty), str(third), missing, str(first), str(second)]
    assert in_time_order(given) == [
        str(first),
        str(second),
        str(third),
        str(empty),
        missing,
    ]
    # Standard input cannot be looked into first: it keeps its place.
    assert in_time_order([str(third), "-", str(first)]) == [
        str(first),
        "-",
        str(third),
    ]


def test_a_named_pipe_keeps_its_place_and_the_files_around_it_are_sorted(
    tmp_path: Path,
) -> None:
    # Looking into a pipe for its first packet would take that packet from
    # the read that follows: it is not looked into, and stays where it was
    # given; so do standard input and devices.
    first, second = parts(tmp_path, 2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    given = [str(second), str(fifo), str(first), "/dev/null"]
    assert in_time_order(given) == [str(first), str(fifo), str(second), "/dev/null"]
    # The same file twice is read once, by any name.
    link = tmp_path / "link.pcap"
    link.symlink_to(first)
    assert in_time_order([str(second), str(first), str(link)]) == [
        str(first),
        str(second),
    ]


def test_a_named_pipe_is_read_by_one_process(tmp_path: Path) -> None:
    # Found in review: with -j 2 each worker opened the pipe, the first
    # read what it held, and the run hung. A subprocess, to time it out.
    first, second, third = parts(tmp_path, 3)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"

    def feed() -> None:
        with fifo.open("wb") as pipe:
            pipe.write(third.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    argv = [sys.executable, "-m", "analysis", "read", "-q", "-j", "2", "-o", str(out)]
    done = subprocess.run(
        [*argv, str(second), str(first), str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    writer.join(timeout=10)
    # -j 2 was asked for: the note says why one process reads.
    note = f"reading with one process, not 2: {fifo} can be read only once"
    note = f"smtpscope: note: {note}\n"
    assert (done.returncode, done.stderr) == (0, note)
    assert len(session_ids(out)) == 1
    with (out / "commands.jsonl").open() as rows:
        assert sum(1 for _ in rows) == 17
