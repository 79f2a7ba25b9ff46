"""Packets written by the live capture's pcapng writer read back unchanged."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from capture.pcapfile import open_capture
from capture.pcapwriter import InterfaceInfo, RotatingWriter

PCAPS = Path(__file__).parents[2] / "pcaps"
INTERFACES = [InterfaceInfo("eth0", 1, 262144), InterfaceInfo("any", 276, 262144)]


def _packets() -> list[tuple[int, int, bytes, int]]:
    with open_capture(str(PCAPS / "rset-multi.pcap")) as reader:
        one = [(0, p.ts, p.data, p.wire_len) for p in reader]
    with open_capture(str(PCAPS / "sll2-any.pcap")) as reader:
        two = [(1, p.ts + 7, p.data, p.wire_len) for p in reader]
    return one + two


def _read(paths: list[Path]) -> list[tuple[int, int, bytes, int]]:
    out = []
    for path in paths:
        with open_capture(str(path)) as reader:
            for p in reader:
                out.append((0 if p.linktype == 1 else 1, p.ts, p.data, p.wire_len))
    return out


def test_one_file_keeps_every_packet_and_link_type(tmp_path: Path) -> None:
    packets = _packets()
    with RotatingWriter(tmp_path / "x.pcapng", INTERFACES) as writer:
        for packet in packets:
            writer.write(*packet)
    assert writer.files == [tmp_path / "x.pcapng"]
    assert _read(writer.files) == packets


def test_rotation_by_size_and_time(tmp_path: Path) -> None:
    packets = _packets()
    with RotatingWriter(tmp_path / "s.pcapng", INTERFACES, max_bytes=4000) as by_size:
        for packet in packets:
            by_size.write(*packet)
    assert len(by_size.files) >= 3
    assert [f.name for f in by_size.files[:2]] == ["s-00000.pcapng", "s-00001.pcapng"]
    assert all(f.stat().st_size < 4000 + 2000 for f in by_size.files)
    assert _read(by_size.files) == packets

    packets.sort(key=lambda p: p[1])  # live packets come in time order
    span = (packets[-1][1] - packets[0][1]) / 1e9
    with RotatingWriter(tmp_path / "t.pcap", INTERFACES, every_s=span / 3) as by_time:
        for packet in packets:
            by_time.write(*packet)
    assert 2 <= len(by_time.files) <= 4
    assert by_time.files[0].name == "t-00000.pcap"
    assert _read(by_time.files) == packets


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_kept_in_error_not_raised() -> None:
    # Found in review: live's -w on a full disk ended in a traceback, and the
    # rows it had not written yet were lost.
    packets = _packets()
    writer = RotatingWriter("/dev/full", INTERFACES)
    for packet in packets:
        writer.write(*packet)
    writer.flush()
    writer.close()
    assert writer.error is not None and writer.error.errno == errno.ENOSPC
    writer.write(*packets[0])  # nothing more is tried
    writer.close()


def test_a_rotation_that_cannot_open_its_file_is_kept_in_error(
    tmp_path: Path,
) -> None:
    packets = _packets()
    with RotatingWriter(tmp_path / "s.pcapng", INTERFACES, max_bytes=4000) as writer:
        (tmp_path / "s-00001.pcapng").mkdir()  # where the next file would go
        for packet in packets:
            writer.write(*packet)
    assert isinstance(writer.error, IsADirectoryError)
    assert writer.files == [tmp_path / "s-00000.pcapng"]
    assert _read(writer.files) == packets[: writer.packets]


def test_a_file_that_cannot_be_closed_ends_the_writing(tmp_path: Path) -> None:
    # Its last bytes failed to reach the disk at a rotation: no file is
    # begun after one left incomplete.
    packets = _packets()
    writer = RotatingWriter(tmp_path / "s.pcapng", INTERFACES, max_bytes=4000)
    first = writer._file
    assert first is not None

    class Full:
        def __getattr__(self, name: str) -> object:
            return getattr(first, name)

        def close(self) -> None:
            first.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    writer._file = Full()  # type: ignore[assignment]
    for packet in packets:
        writer.write(*packet)
    writer.close()
    assert writer.error is not None and writer.error.errno == errno.ENOSPC
    assert writer.files == [tmp_path / "s-00000.pcapng"]
