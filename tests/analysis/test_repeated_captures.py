"""Captures read twice, or out of time order: what is read, and what is said.

Read twice, every session of a capture came twice under the same
session_id, which breaks every join on it. Given out of time order, the
parts of one capture split their sessions, and nothing said so.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from analysis.cli import main

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
    copy = tmp_path / "copy.pcap"
    shutil.copy(AUTH, copy)
    out = tmp_path / "out"
    assert main(["read", "-q", "-o", str(out), str(AUTH), str(copy)]) == 0
    ids = session_ids(out)
    assert len(ids) == 8 and len(set(ids)) == 4
    assert capsys.readouterr().err == (
        "smtpscope: note: 1 of the 2 captures (copy.pcap) begins before the "
        "ones given before it end, so it was read as another recording, with "
        "connections of its own; the parts of one capture must be given in "
        "time order\n"
        "smtpscope: warning: 4 sessions have the session_id of another: the "
        "same connection, from the same first packet, was read twice (a "
        "capture given twice, or captures that overlap); all their rows are "
        "kept\n"
    )


def halves(tmp_path: Path) -> tuple[Path, Path]:
    """rset-multi.pcap cut in two in the middle of its one session."""
    data = (AUTH.parent / "rset-multi.pcap").read_bytes()
    records, at = [], 24
    while at < len(data):
        (length,) = struct.unpack_from("<I", data, at + 8)
        records.append(data[at : at + 16 + length])
        at += 16 + length
    middle = len(records) // 2
    first, second = tmp_path / "part1.pcap", tmp_path / "part2.pcap"
    first.write_bytes(data[:24] + b"".join(records[:middle]))
    second.write_bytes(data[:24] + b"".join(records[middle:]))
    return first, second


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_parts_given_out_of_time_order_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    # The second half holds the FINs: nothing is open when the first half,
    # read after it, goes back in time. Its session is split in two.
    first, second = halves(tmp_path)
    out = tmp_path / "out"
    assert (
        main(["read", "-q", "-j", jobs, "-o", str(out), str(second), str(first)]) == 0
    )
    assert len(session_ids(out)) == 2
    assert capsys.readouterr().err == (
        "smtpscope: note: 1 of the 2 captures (part1.pcap) begins before the "
        "ones given before it end, so it was read as another recording, with "
        "connections of its own; the parts of one capture must be given in "
        "time order\n"
    )
    # In time order: one session, and nothing to say.
    assert (
        main(["read", "-q", "-j", jobs, "-o", str(out), str(first), str(second)]) == 0
    )
    assert len(session_ids(out)) == 1
    assert capsys.readouterr().err == ""
