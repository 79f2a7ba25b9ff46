"""A capture read twice: once per file, and a warning when sessions repeat.

Read twice, every session of a capture came twice under the same
session_id, which breaks every join on it.
"""

from __future__ import annotations

import json
import shutil
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
        "smtpscope: warning: 4 sessions have the session_id of another: the "
        "same connection, from the same first packet, was read twice (a "
        "capture given twice, or captures that overlap); all their rows are "
        "kept\n"
    )
