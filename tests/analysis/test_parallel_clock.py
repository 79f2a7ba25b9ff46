"""``-j N`` and a packet stamped far ahead of the traffic around it.

One packet stamped ahead (a damaged timestamp, a clock that stepped forward
and back) used to move the capture's clock there: the sweep for idle
connections closed every open one, their next packets began sessions
caught mid-stream, and a worker that did not hold that packet's connection
kept its own, so ``-j 2`` gave other tables than one process. The
reassembler now holds such a packet back until the packet after it shows
whether time jumped (``capture.reassembly.Reassembler._hold_ahead``). Each case
below makes small captures, asserts the rows one process gives, and that
``-j 2``, ``-j 3`` and ``-j 4`` give the same tables, through the Python
reader and through libpcap's filter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from analysis import pipeline
from analysis.cli import clock_outliers_note, main
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.tables import read_captures
from tests.analysis.same import same_tables
from tests.analysis.test_parallel_boundary import (
    JOBS,
    T0,
    _check,
    _Conn,
    _ns,
    _port,
    _rows,
    _write,
)
from tests.capture.craft import Frame, pcap

HOUR = 3600


def _three() -> tuple[_Conn, _Conn, _Conn]:
    """Three connections, B's and C's each with another worker than A's for
    every -j in JOBS."""
    a = _Conn(_port())
    b = _Conn(_port(apart=(a.sport,)))
    c = _Conn(_port(apart=(a.sport,), taken=(b.sport,)))
    return a, b, c


def _in_order(*conns: list[Frame]) -> list[Frame]:
    return sorted((f for c in conns for f in c), key=lambda f: (f.ts_sec, f.ts_frac))


def _stamped(frames: list[Frame], at: Frame, ahead: int) -> list[Frame]:
    """``frames`` in the same order, ``at`` stamped ``ahead`` seconds later."""
    return [
        dataclasses.replace(f, ts_sec=f.ts_sec + ahead) if f is at else f
        for f in frames
    ]


def _same(paths: list[str], clean: list[str]) -> None:
    """One process and every -j in JOBS give the tables of ``clean``."""
    plain = read_captures(clean)
    assert plain.stats.clock_outliers == 0
    for jobs in (1, *JOBS):
        if jobs == 1:
            tables = read_captures(paths)
        else:
            with read_sharded(paths, pipeline.DEFAULT_PORTS, jobs) as spool:
                tables = build_tables(spool)
        same_tables(tables, plain)
        assert tables.stats.clock_outliers == 1
        assert tables.stats.rewinds == []


def _outlier(tmp_path: Path, ahead: int) -> tuple[str, str]:
    """A capture of three sessions that end with FINs, and the same with one
    plain ACK of B's, in the middle, stamped ``ahead`` seconds later."""
    a, b, c = _three()
    for n, conn in enumerate((a, b, c)):
        conn.open(T0 + n)
    for t in range(T0 + 10, T0 + 60, 10):
        a.command(t, b"NOOP")
        b.command(t + 1, b"NOOP")
        b.client(t + 2, flags=0x10)  # a plain ACK
        c.command(t + 3, b"NOOP")
    for n, conn in enumerate((a, b, c)):
        conn.quit(T0 + 70 + n)
    frames = _in_order(a.take(), b.take(), c.take())
    acks = [f for f in frames if f.ts_sec == T0 + 32]
    dirty = _stamped(frames, acks[0], ahead)
    clean_path = tmp_path / "clean.pcap"
    clean_path.write_bytes(pcap(frames))
    path = tmp_path / "dirty.pcap"
    path.write_bytes(pcap(dirty))
    return str(clean_path), str(path)


@pytest.mark.parametrize("ahead", [600, HOUR])
def test_one_packet_far_ahead_changes_no_table(
    tmp_path: Path, reader: str, ahead: int
) -> None:
    # Found in review: one packet of B's, stamped 600 s or an hour ahead,
    # closed A, B and C as idle in one process; their next packets began
    # sessions mid-stream (a message's lines read as commands), and each
    # -j worker but B's kept its own. B's ACK is read at B's time now, and
    # the tables are those of the capture without it, with every -j.
    clean, dirty = _outlier(tmp_path, ahead)
    rows = _rows(read_captures([clean]))
    assert [close for *_, close in rows] == ["fin", "fin", "fin"]
    _same([dirty], [clean])


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_run_says_how_many_packets_it_read_as_outliers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    _, dirty = _outlier(tmp_path, HOUR)
    assert main(["read", "-q", "-j", jobs, dirty]) == 0
    assert capsys.readouterr().err == (
        "smtpscope: note: 1 packet was stamped well ahead of the packets after "
        "it (a damaged timestamp, or a clock that stepped forward and back), "
        "so it was not taken for a jump in time that closes the open "
        "connections as idle\n"
    )


def test_the_note_counts_the_outliers() -> None:
    assert clock_outliers_note(2_000) == (
        "note: 2,000 packets were stamped well ahead of the packets after them "
        "(a damaged timestamp, or a clock that stepped forward and back), so "
        "they were not taken for a jump in time that closes the open "
        "connections as idle"
    )


@pytest.mark.parametrize("which", ["first", "last"])
def test_a_rotated_capture_with_a_packet_far_ahead_changes_no_table(
    tmp_path: Path, reader: str, which: str
) -> None:
    # Found in review: stamped an hour ahead as the first segment of the
    # second file of a rotated run, one ACK of A's closed A, B and C as
    # idle. As the last of the first file, it was the latest packet read,
    # so the second file was another recording (a note said so) and every
    # session was cut in two. Each -j worker judges it at the second file's
    # first segment as one process does (capture.source._capture_boundary).
    a, b, c = _three()
    for n, conn in enumerate((a, b, c)):
        conn.open(T0 + n)
    a.client(T0 + 5, flags=0x10)
    first = _in_order(a.take(), b.take(), c.take())
    a.client(T0 + 10, flags=0x10)
    b.command(T0 + 11, b"NOOP")
    c.command(T0 + 12, b"NOOP")
    for n, conn in enumerate((a, b, c)):
        conn.quit(T0 + 20 + n)
    second = _in_order(a.take(), b.take(), c.take())
    if which == "first":
        dirty = first, _stamped(second, second[0], HOUR)
    else:
        dirty = _stamped(first, first[-1], HOUR), second
    clean: list[str] = []
    paths: list[str] = []
    for n, (kept, stamped) in enumerate(zip((first, second), dirty, strict=True)):
        clean.append(str(tmp_path / f"{n}.pcap"))
        Path(clean[-1]).write_bytes(pcap(kept))
        paths.append(str(tmp_path / f"{n}-dirty.pcap"))
        Path(paths[-1]).write_bytes(pcap(stamped))
    _same(paths, clean)


def test_traffic_going_on_after_a_pause_closes_the_idle_ones_in_every_worker(
    tmp_path: Path, reader: str
) -> None:
    # A and B are silent from T0 + 10 s; C begins an hour later and goes
    # on: A and B close as idle, as they always did, in every worker.
    a, b, c = _three()
    a.open(T0)
    b.open(T0 + 10)
    c.open(T0 + HOUR)
    c.quit(T0 + HOUR + 5)
    path = _write(tmp_path / "pause.pcap", a.take(), b.take(), c.take())
    expected = [
        (a.session(_ns(T0)), a.sport, _ns(T0), a.last, "idle"),
        (b.session(_ns(T0 + 10)), b.sport, _ns(T0 + 10), b.last, "idle"),
        (c.session(_ns(T0 + HOUR)), c.sport, _ns(T0 + HOUR), c.last, "fin"),
    ]
    _check([path], expected, reader)


def test_one_packet_after_a_pause_at_the_end_closes_the_rest_as_idle(
    tmp_path: Path, reader: str
) -> None:
    # Nothing comes after C's SYN, an hour after A and B were last seen:
    # taken for the time, as it always was, so A and B close as idle, not
    # at the end of the capture, in the workers that did not see it too.
    a, b, c = _three()
    a.open(T0)
    b.open(T0 + 10)
    c.client(T0 + HOUR, flags=0x02)
    path = _write(tmp_path / "pause.pcap", a.take(), b.take(), c.take())
    syn = _ns(T0 + HOUR)
    expected = [
        (a.session(_ns(T0)), a.sport, _ns(T0), a.last, "idle"),
        (b.session(_ns(T0 + 10)), b.sport, _ns(T0 + 10), b.last, "idle"),
        (c.session(syn), c.sport, syn, syn, "end_of_capture"),
    ]
    _check([path], expected, reader)


def test_a_rotated_files_first_packet_of_a_worker_stamped_ahead_is_held_back(
    tmp_path: Path, reader: str
) -> None:
    # Found in review: A's ACK, stamped 20 minutes ahead, came after B's
    # first packet of the second file. One process held it back and, B's
    # next packet being well before it, read it at A's time. A's worker
    # held nothing: the clock counted from the file's first segment only
    # when the next packet was fed, and that was the ACK itself, which
    # swept there and closed A as idle. The worker now sweeps at the first
    # segment's point of the grid at the boundary, as one process does.
    a, b, _ = _three()
    a.open(T0)
    b.open(T0 + 1)
    first = _in_order(a.take(), b.take())
    b.command(T0 + 10, b"NOOP")
    a.client(T0 + 11, flags=0x10)
    b.command(T0 + 12, b"NOOP")
    a.command(T0 + 13, b"NOOP")
    a.quit(T0 + 20)
    b.quit(T0 + 21)
    second = _in_order(a.take(), b.take())
    ack = next(f for f in second if f.ts_sec == T0 + 11)
    paths = [_write(tmp_path / "1.pcap", first), str(tmp_path / "2.pcap")]
    Path(paths[1]).write_bytes(pcap(_stamped(second, ack, 1200)))
    expected = [
        (a.session(_ns(T0)), a.sport, _ns(T0), a.last, "fin"),
        (b.session(_ns(T0 + 1, 1)), b.sport, _ns(T0 + 1, 1), b.last, "fin"),
    ]
    _check(paths, expected, reader)


def test_a_workers_first_packet_of_the_run_stamped_ahead_is_held_back(
    tmp_path: Path, reader: str
) -> None:
    # Found in review: B's SYN, stamped an hour ahead, came after A's first
    # packets. One process held it back and read it as an outlier (its
    # 4-tuple has no connection to date it by: it opens one at its own
    # stamp). B's worker had read nothing before it, so nothing held it
    # back: it swept an hour ahead, and at the end, with every worker's
    # clock taken, A closed as idle rather than at the end of the capture.
    # Each worker now counts its clock from the run's first segment.
    a, b, _ = _three()
    a.open(T0)
    a.command(T0 + 20, b"NOOP")
    b.open(T0 + 2)
    b.quit(T0 + 3)  # within a sweep interval: B's worker keeps its clock
    frames = _in_order(a.take(), b.take())
    syn = next(f for f in frames if f.ts_sec == T0 + 2)
    path = tmp_path / "run.pcap"
    path.write_bytes(pcap(_stamped(frames, syn, HOUR)))
    rows = _rows(read_captures([str(path)]))
    assert rows[0] == (a.session(_ns(T0)), a.sport, _ns(T0), a.last, "end_of_capture")
    for jobs in JOBS:
        with read_sharded([str(path)], pipeline.DEFAULT_PORTS, jobs) as spool:
            same_tables(build_tables(spool), read_captures([str(path)]))


def test_a_rotated_files_first_segment_stamped_ahead_is_judged_by_the_next(
    tmp_path: Path, reader: str
) -> None:
    # Found in review: A's ACK, stamped 20 minutes ahead, was the first
    # segment of the second file; B's packet after it, well before it,
    # shows it an outlier, and one process read it at A's time. A's worker
    # judged it by A's next packet, after a real pause of 21 minutes, took
    # it for the time, closed A as idle there and began a session with it.
    # Every worker now learns the file's second segment too, where its
    # first is stamped ahead, and judges it by that.
    a, b, _ = _three()
    a.open(T0)
    b.open(T0 + 1)
    first = _in_order(a.take(), b.take())
    a.client(T0 + 10, flags=0x10)
    b.command(T0 + 11, b"NOOP")
    b.quit(T0 + 12)
    a.command(T0 + 1300, b"NOOP")
    a.quit(T0 + 1301)
    second = _in_order(a.take(), b.take())
    paths = [_write(tmp_path / "1.pcap", first), str(tmp_path / "2.pcap")]
    Path(paths[1]).write_bytes(pcap(_stamped(second, second[0], 1200)))
    rows = _rows(read_captures(paths))
    assert rows[:2] == [
        (a.session(_ns(T0)), a.sport, _ns(T0), _ns(T0, 6), "idle"),
        (b.session(_ns(T0 + 1, 1)), b.sport, _ns(T0 + 1, 1), _ns(T0 + 12, 13), "fin"),
    ]
    for jobs in JOBS:
        with read_sharded(paths, pipeline.DEFAULT_PORTS, jobs) as spool:
            same_tables(build_tables(spool), read_captures(paths))
