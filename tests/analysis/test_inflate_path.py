"""Gzip-compressed pcap through libpcap: the same tables as the Python reader.

A large .pcap.gz is inflated by a child process into a pipe that libpcap
filters (``capture.inflate``); the Python reader, which inflates and reads
every packet itself, stays the reference, for the rows and for the damage.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis import pipeline
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.tables import SmtpTables, read_captures
from capture import inflate, libpcap, source
from tests.analysis.rewrite import as_pcapng
from tests.analysis.same import same_tables

pytestmark = pytest.mark.skipif(not libpcap.available(), reason="no libpcap")

PCAPS = sorted((Path(__file__).parents[2] / "pcaps").glob("**/*.pcap"))


def python_reader(paths: list[str], monkeypatch: pytest.MonkeyPatch) -> SmtpTables:
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    tables = read_captures(paths)
    monkeypatch.delenv("SMTPSCOPE_NO_LIBPCAP")
    return tables


@pytest.fixture
def inflating(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[inflate.InflatePump]]:
    """Every capture takes the inflating path; the pumps made are kept."""
    monkeypatch.setattr(source, "_INFLATED_MIN_BYTES", 0)
    pumps: list[inflate.InflatePump] = []
    made = inflate.InflatePump

    def pump(path: str) -> inflate.InflatePump:
        pumps.append(made(path))
        return pumps[-1]

    monkeypatch.setattr(source, "InflatePump", pump)
    yield pumps
    # Each child was waited for: none is left running or a zombie.
    assert all(p._child.returncode is not None for p in pumps)


def gzipped_copies(captures: list[Path], tmp_path: Path) -> list[str]:
    """Each of ``captures`` gzipped into ``tmp_path``."""
    paths = []
    for n, capture in enumerate(captures):
        path = tmp_path / f"{n}-{capture.name}.gz"
        path.write_bytes(gzip.compress(capture.read_bytes()))
        paths.append(str(path))
    return paths


def gzipped(tmp_path: Path, *members: bytes, tail: bytes = b"") -> str:
    path = tmp_path / "capture.pcap.gz"
    path.write_bytes(b"".join(gzip.compress(m) for m in members) + tail)
    return str(path)


def test_every_project_capture_gives_the_same_tables(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inflating: list[inflate.InflatePump],
) -> None:
    paths = gzipped_copies(PCAPS, tmp_path)
    reference = python_reader(paths, monkeypatch)
    fast = read_captures(paths)
    same_tables(fast, reference)
    assert len(inflating) == len(PCAPS)
    assert fast.stats.filtered  # libpcap's filter was used
    assert fast.stats.errors == []
    assert fast.stats.bytes == reference.stats.bytes  # as stored


def test_members_and_trailing_zeros_are_read_as_gzip_reads_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inflating: list[inflate.InflatePump],
) -> None:
    whole = PCAPS[0].read_bytes()
    half = len(whole) // 2
    path = gzipped(tmp_path, whole[:half], whole[half:], tail=b"\0" * 512)
    reference = python_reader([str(PCAPS[0])], monkeypatch)
    fast = read_captures([path])
    same_tables(fast, reference)
    assert fast.stats.errors == [] and len(inflating) == 1


@pytest.mark.parametrize("damage", ["truncated", "flipped", "crc", "block", "stray"])
def test_damage_is_located_by_the_python_reader(
    damage: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inflating: list[inflate.InflatePump],
) -> None:
    capture = Path(PCAPS[0])
    compressed = bytearray(gzip.compress(capture.read_bytes()))
    if damage == "truncated":
        compressed = compressed[: len(compressed) * 2 // 3]
    elif damage == "flipped":
        compressed[len(compressed) // 2] ^= 0xFF
    elif damage == "block":
        # The whole capture, flushed to a byte boundary, then a block of
        # the reserved type 3, which zlib refuses (RFC 1951 3.2.3).
        deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = deflate.compress(capture.read_bytes())
        body += deflate.flush(zlib.Z_FULL_FLUSH)
        compressed = bytearray(compressed[:10] + body + b"\xff" * 16)
    elif damage == "stray":
        compressed += b"xx"  # two bytes after the gzip data
    else:
        compressed[-8] ^= 0xFF  # the CRC-32 in the trailer
    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(compressed)

    reference = python_reader([str(path)], monkeypatch)
    fast = read_captures([str(path)])
    same_tables(fast, reference)
    assert fast.stats.errors == reference.stats.errors
    assert len(fast.stats.errors) == 1
    if damage != "flipped":  # there the inflated bytes are bad pcap first
        assert "gzip" in fast.stats.errors[0]
    if damage == "stray":
        assert fast.stats.errors == [
            f"{path}: damaged at byte {capture.stat().st_size} of its decompressed "
            "data: unexpected bytes after the gzip data"
        ]
    if damage in ("crc", "block", "stray"):
        # Every packet came before the trailer, the refused block (what
        # zlib inflated in the call that found it is not lost) or the stray
        # bytes: all the sessions are there.
        assert len(fast.sessions) == len(read_captures([str(capture)]).sessions)


def test_a_run_stopped_early_ends_the_inflater(
    tmp_path: Path, inflating: list[inflate.InflatePump]
) -> None:
    # Many copies of a capture, so that the child is still inflating when
    # the first session is read and the generator closed (Ctrl-C, a
    # consumer that had enough).
    one = PCAPS[0].read_bytes()
    path = tmp_path / "long.pcap.gz"
    path.write_bytes(gzip.compress(one + one[24:] * 400, compresslevel=1))
    results = pipeline.analyze([str(path)])
    assert next(results) is not None
    results.close()
    (pump,) = inflating
    assert pump._child.returncode is not None


def test_sharded_workers_inflate_each_their_own(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inflating: list[inflate.InflatePump],
) -> None:
    paths = gzipped_copies(PCAPS[:6], tmp_path)
    reference = python_reader(paths, monkeypatch)
    with read_sharded(paths, pipeline.DEFAULT_PORTS, 2) as spool:
        tables = build_tables(spool)
    same_tables(tables, reference)
    assert tables.stats.errors == []


def test_the_child_reports_damage_in_its_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "bad.pcap.gz"
    path.write_bytes(gzip.compress(b"x" * 100_000)[:-20])
    pump = inflate.InflatePump(str(path))
    with open(pump.read_fd, "rb") as stream:
        inflated = stream.read()
    assert inflated and b"x" * len(inflated) == inflated
    assert pump.join() == (
        f"{path}: damaged at byte {len(inflated)} of its decompressed data: "
        "gzip data truncated"
    )
    assert zlib.decompressobj(31).decompress(path.read_bytes()) == inflated


def test_an_inflater_that_fails_hands_the_file_to_the_python_reader(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inflating: list[inflate.InflatePump],
) -> None:
    # A child that dies part way (out of memory, killed) leaves libpcap a
    # stream that ends early but cleanly: the rows must still be all there.
    path = tmp_path / "c.pcap.gz"
    path.write_bytes(gzip.compress(PCAPS[0].read_bytes()))
    popen = subprocess.Popen
    dies = [
        sys.executable,
        "-c",
        "import sys; print('boom', file=sys.stderr); sys.exit(1)",
    ]

    def dying(args: list[str], **kwargs: Any) -> Any:
        return popen(dies, **kwargs)

    monkeypatch.setattr(inflate.subprocess, "Popen", dying)
    reference = python_reader([str(PCAPS[0])], monkeypatch)
    tables = read_captures([str(path)])
    same_tables(tables, reference)
    assert tables.stats.errors == []
    (pump,) = inflating
    assert pump._child.returncode == 1


def test_gzipped_pcapng_gives_the_same_tables(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inflating: list[inflate.InflatePump],
) -> None:
    plain = [
        Path(as_pcapng(str(capture), tmp_path / f"{n}.pcapng"))
        for n, capture in enumerate(PCAPS[:8])
    ]
    paths = gzipped_copies(plain, tmp_path)
    reference = python_reader(paths, monkeypatch)
    fast = read_captures(paths)
    same_tables(fast, reference)
    assert len(inflating) == 8 and fast.stats.filtered
