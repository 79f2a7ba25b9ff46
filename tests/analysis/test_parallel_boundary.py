"""``-j N`` where a capture starts: another recording, or the same one.

One process takes a capture whose first segment comes before the last
packet of a connection read so far for another recording: it closes the
open ones first and forgets the closed ones (``Reassembler.start_capture``).
Captures are read in the time order of their first packets, so that is a
capture that overlaps the ones before it. A worker holds only some of the
connections, so the workers agree on that judgement through the parent
(``capture.source._capture_boundary``). Each case below makes small
captures where a worker's own view would judge otherwise, asserts the rows
one process gives, and that ``-j 2``, ``-j 3`` and ``-j 4`` give the same
tables, through the Python reader and through libpcap's filter.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from analysis import pipeline
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.session import session_id
from analysis.tables import SmtpTables, read_captures
from capture import libpcap, source
from capture.stream import Connection
from tests.analysis.same import same_tables
from tests.capture.craft import Frame, TcpPeers, ethernet, pcap, v4_tcp

CLIENT, SERVER = "192.0.2.1", "198.51.100.2"
T0 = 1_000_020  # a point of the 7.5 s sweep grid, in seconds
JOBS = (2, 3, 4)
SYN, FIN, ACK, PSH = 0x02, 0x01, 0x10, 0x08

# (session_id, client_port, start, end, close), times in ns.
Row = tuple[str, int, int, int, str]


def _port(apart: tuple[int, ...] = (), taken: tuple[int, ...] = ()) -> int:
    """The first client port from 40000, not ``taken``, whose connection
    lands with none of ``apart``'s, for every number of workers in JOBS."""
    return next(
        port
        for port in range(40000, 41000)
        if port not in apart + taken
        and all(
            libpcap.shard_of(CLIENT, port, SERVER, 25, jobs)
            != libpcap.shard_of(CLIENT, other, SERVER, 25, jobs)
            for other in apart
            for jobs in JOBS
        )
    )


class _Conn:
    """One client's connection to SERVER:25, frame by frame.

    Frames of one second are a microsecond apart; ``last`` is the time of
    the latest one and ``take`` hands over those made since the last take.
    """

    def __init__(self, sport: int) -> None:
        self.sport = sport
        self.tcp = TcpPeers(CLIENT, sport, SERVER, 25, cseq=99, sseq=499)
        self.last = 0
        self._frac = 0
        self._frames: list[Frame] = []

    def client(self, t: int, payload: bytes = b"", flags: int = PSH | ACK) -> None:
        self._frame(t, True, payload, flags)

    def server(self, t: int, payload: bytes = b"", flags: int = PSH | ACK) -> None:
        self._frame(t, False, payload, flags)

    def open(self, t: int) -> None:
        """Handshake, greeting and EHLO at second ``t``."""
        self.client(t, flags=SYN)
        self.server(t, flags=SYN | ACK)
        self.client(t, flags=ACK)
        self.server(t, b"220 ready\r\n")
        self.client(t, b"EHLO client.example\r\n")
        self.server(t, b"250 ok\r\n")

    def command(self, t: int, line: bytes) -> None:
        self.client(t, line + b"\r\n")
        self.server(t, b"250 ok\r\n")

    def quit(self, t: int, *, last_ack: bool = True) -> None:
        """QUIT and both FINs; without ``last_ack`` the connection lingers."""
        self.client(t, b"QUIT\r\n")
        self.server(t, b"221 bye\r\n")
        self.server(t, flags=FIN | ACK)
        self.client(t, flags=FIN | ACK)
        if last_ack:
            self.server(t, flags=ACK)

    def session(self, start: int) -> str:
        """The id of this 4-tuple's session whose first packet is at ``start``."""
        return session_id(Connection(0, CLIENT, self.sport, SERVER, 25, start))

    def take(self) -> list[Frame]:
        frames, self._frames = self._frames, []
        return frames

    def _frame(self, t: int, by_client: bool, payload: bytes, flags: int) -> None:
        self._frac += 1
        frame = self.tcp.frame(by_client, payload, flags)
        self._frames.append(Frame(t, self._frac, frame))
        self.last = t * 1_000_000_000 + self._frac * 1000


def _ns(t: int, frac: int = 1) -> int:
    """A frame's time: second ``t``, microsecond ``frac``."""
    return t * 1_000_000_000 + frac * 1000


def _write(path: Path, *conns: Iterable[Frame]) -> str:
    frames = sorted((f for c in conns for f in c), key=lambda f: (f.ts_sec, f.ts_frac))
    path.write_bytes(pcap(frames))
    return str(path)


def _rows(tables: SmtpTables) -> list[Row]:
    columns = tables.sessions[["session_id", "client_port", "start", "end", "close"]]
    return [
        (sid, int(port), start.value, end.value, close)
        for sid, port, start, end, close in columns.itertuples(index=False)
    ]


def _check(paths: list[str], expected: list[Row], reader: str, errors: int = 0) -> None:
    """One process gives ``expected``; every -j in JOBS gives its tables."""
    plain = read_captures(paths)
    assert _rows(plain) == expected
    assert len(plain.stats.errors) == errors
    assert plain.stats.filtered == (reader == "libpcap")
    for jobs in JOBS:
        with read_sharded(paths, pipeline.DEFAULT_PORTS, jobs) as spool:
            sharded = build_tables(spool)
        same_tables(sharded, plain)
        assert sharded.stats.errors == plain.stats.errors


# -- another recording, or the same one ---------------------------------

_MIDDLES = [
    None,
    "empty",  # a header and no packet
    "no smtp",  # a packet on port 80 only
    "not a capture",
    "missing",
    "damaged",  # cut inside its first record
    "segments, then damaged",  # C's first frames, then cut
]


@pytest.mark.parametrize("middle", _MIDDLES)
def test_a_capture_that_starts_before_the_open_connections_ended(
    tmp_path: Path, reader: str, middle: str | None
) -> None:
    # A and B are open at the end of the first capture, A last seen at
    # T0 + 10 s and B at T0 + 20 s, each with a different worker. The last
    # capture starts at T0 + 15 s (C, with yet another worker than A's), so
    # one process closes both first; A's 4-tuple then says more, after
    # A's last time: a session of its own. A's worker alone would have
    # found its first segment later than A, and joined them. A capture
    # in between that gives no segment leaves the check to the next.
    a = _Conn(_port())
    b = _Conn(_port(apart=(a.sport,)))
    c = _Conn(_port(apart=(a.sport,), taken=(b.sport,)))
    a.open(T0)
    a.command(T0 + 10, b"MAIL FROM:<a@example.org>")
    b.open(T0 + 5)
    b.command(T0 + 20, b"NOOP")
    paths = [_write(tmp_path / "1.pcap", a.take(), b.take())]
    a_last, b_last = a.last, b.last
    c.open(T0 + 15)
    in_middle = c.take() if middle == "segments, then damaged" else []
    paths += _middle(tmp_path / "2.pcap", middle, in_middle)
    a.command(T0 + 16, b"RCPT TO:<b@example.org>")
    a.quit(T0 + 17)
    paths.append(_write(tmp_path / "3.pcap", c.take(), a.take()))

    errors = 0 if middle in (None, "empty", "no smtp") else 1
    expected = [
        (a.session(_ns(T0)), a.sport, _ns(T0), a_last, "end_of_capture"),
        (b.session(_ns(T0 + 5)), b.sport, _ns(T0 + 5), b_last, "end_of_capture"),
        (c.session(_ns(T0 + 15)), c.sport, _ns(T0 + 15), c.last, "end_of_capture"),
        (a.session(_ns(T0 + 16, 9)), a.sport, _ns(T0 + 16, 9), a.last, "fin"),
    ]
    _check(paths, expected, reader, errors)


def _middle(path: Path, kind: str | None, frames: list[Frame]) -> list[str]:
    """A capture between the first and the last, as ``kind`` says."""
    web = ethernet(v4_tcp(sport=40999, dport=80, payload=b"GET / HTTP/1.0\r\n"))
    cut = b"\x00\x00\x00\x00" * 2 + b"\x00\x01\x00\x00" * 2 + b"short"
    if kind is None:
        return []
    if kind == "empty":
        path.write_bytes(pcap([]))
    elif kind == "no smtp":
        path.write_bytes(pcap([Frame(T0 + 12, 0, web)]))
    elif kind == "not a capture":
        path.write_bytes(b"this is not a capture\n" * 4)
    elif kind == "damaged":
        path.write_bytes(pcap([Frame(T0 + 12, 0, web)]) + cut)
    elif kind == "segments, then damaged":
        path.write_bytes(pcap(frames) + cut)
    return [str(path)]  # "missing" is never written


def test_a_rotated_capture_goes_on_with_its_connections(
    tmp_path: Path, reader: str
) -> None:
    # The second capture starts after every open connection was last seen:
    # the same recording, so A's QUIT ends A's session.
    a = _Conn(_port())
    b = _Conn(_port(apart=(a.sport,)))
    c = _Conn(_port(apart=(a.sport,), taken=(b.sport,)))
    a.open(T0)
    a.command(T0 + 10, b"MAIL FROM:<a@example.org>")
    b.open(T0 + 5)
    b.command(T0 + 20, b"NOOP")
    paths = [_write(tmp_path / "1.pcap", a.take(), b.take())]
    b_last = b.last
    a.command(T0 + 25, b"RCPT TO:<b@example.org>")
    a.quit(T0 + 26)
    c.open(T0 + 27)
    paths.append(_write(tmp_path / "2.pcap", a.take(), c.take()))

    expected = [
        (a.session(_ns(T0)), a.sport, _ns(T0), a.last, "fin"),
        (b.session(_ns(T0 + 5)), b.sport, _ns(T0 + 5), b_last, "end_of_capture"),
        (c.session(_ns(T0 + 27)), c.sport, _ns(T0 + 27), c.last, "end_of_capture"),
    ]
    _check(paths, expected, reader)


@pytest.mark.parametrize("more", [True, False])
def test_only_one_worker_holds_the_open_connection(
    tmp_path: Path, reader: str, more: bool
) -> None:
    # A alone is open, last seen at T0 + 20 s. The second capture starts
    # at T0 + 15 s with C, another worker's, so one process closes A. With
    # ``more``, A's 4-tuple goes on after A's last time (its worker alone
    # would join them); without, it is not seen again and E, yet another
    # worker's, goes on long past A's timeout (A's worker alone would close
    # A as idle; C is idle by then in every case).
    a = _Conn(_port())
    c = _Conn(_port(apart=(a.sport,)))
    e = _Conn(_port(apart=(a.sport,), taken=(c.sport,)))
    a.open(T0)
    a.command(T0 + 20, b"MAIL FROM:<a@example.org>")
    paths = [_write(tmp_path / "1.pcap", a.take())]
    a_last = a.last
    c.open(T0 + 15)
    if more:
        a.command(T0 + 25, b"RCPT TO:<b@example.org>")
        a.quit(T0 + 26)
    else:
        e.open(T0 + 1000)
        e.quit(T0 + 1001)
    paths.append(_write(tmp_path / "2.pcap", c.take(), a.take(), e.take()))

    a_row = (a.session(_ns(T0)), a.sport, _ns(T0), a_last, "end_of_capture")
    c_start = _ns(T0 + 15)
    if more:
        expected = [
            a_row,
            (c.session(c_start), c.sport, c_start, c.last, "end_of_capture"),
            (a.session(_ns(T0 + 25, 9)), a.sport, _ns(T0 + 25, 9), a.last, "fin"),
        ]
    else:
        expected = [
            a_row,
            (c.session(c_start), c.sport, c_start, c.last, "idle"),
            (e.session(_ns(T0 + 1000)), e.sport, _ns(T0 + 1000), e.last, "fin"),
        ]
    _check(paths, expected, reader)


# -- what one process had closed by the time the capture starts ----------


def test_a_capture_that_starts_before_a_closed_connection_ended(
    tmp_path: Path, reader: str
) -> None:
    # X's FINs are in at T0 + 200 s but not the last ACK; Z, another
    # worker's, closes at T0 + 300 s. The second capture starts at
    # T0 + 150 s, after A (open, last seen at T0 + 100 s) but before X and Z
    # ended: another recording, though nothing open says so. A is closed
    # first and its 4-tuple forgotten with Z's and X's, so A's later packets
    # are a session of their own, not late ones of a closed connection.
    a = _Conn(_port())
    x = _Conn(_port(apart=(a.sport,)))
    z = _Conn(_port(apart=(x.sport,), taken=(a.sport,)))
    a.open(T0)
    a.command(T0 + 100, b"MAIL FROM:<a@example.org>")
    a_last = a.last
    x.open(T0 + 10)
    x.quit(T0 + 200, last_ack=False)
    z.open(T0 + 250)
    z.quit(T0 + 300)
    paths = [_write(tmp_path / "1.pcap", a.take(), x.take(), z.take())]
    a.command(T0 + 150, b"RCPT TO:<b@example.org>")
    a.quit(T0 + 160)
    paths.append(_write(tmp_path / "2.pcap", a.take()))

    again = _ns(T0 + 150, 9)  # the RCPT, A's 9th frame
    expected = [
        (a.session(_ns(T0)), a.sport, _ns(T0), a_last, "end_of_capture"),
        (x.session(_ns(T0 + 10)), x.sport, _ns(T0 + 10), x.last, "fin"),
        (a.session(again), a.sport, again, a.last, "fin"),
        (z.session(_ns(T0 + 250)), z.sport, _ns(T0 + 250), z.last, "fin"),
    ]
    _check(paths, expected, reader)


def test_a_closed_connection_s_tuple_in_another_recording_is_a_new_session(
    tmp_path: Path, reader: str
) -> None:
    # X, last seen at T0 + 10 s, was closed as idle by one process when W's
    # traffic took the clock past its timeout. The second capture starts
    # at T0 + 5 s with X's 4-tuple: before W ended, so another recording,
    # and the packet a session of its own rather than one after X's close,
    # dropped. X's worker alone, with nothing of its own past T0 + 10 s
    # but X, judges with W's worker's last packet.
    x = _Conn(_port())
    w = _Conn(_port(apart=(x.sport,)))
    x.open(T0)
    x.command(T0 + 10, b"NOOP")
    x_last = x.last
    w.open(T0 + 20)
    w.command(T0 + 400, b"NOOP")
    w.command(T0 + 700, b"NOOP")
    w.quit(T0 + 701)
    paths = [_write(tmp_path / "1.pcap", x.take(), w.take())]
    x.tcp.cseq -= len(b"NOOP\r\n")
    x.command(T0 + 5, b"NOOP")
    paths.append(_write(tmp_path / "2.pcap", x.take()))

    again = _ns(T0 + 5, 9)  # the NOOP again, X's 9th frame
    expected = [
        (x.session(_ns(T0)), x.sport, _ns(T0), x_last, "idle"),
        (x.session(again), x.sport, again, x.last, "end_of_capture"),
        (w.session(_ns(T0 + 20)), w.sport, _ns(T0 + 20), w.last, "fin"),
    ]
    _check(paths, expected, reader)


def test_another_recording_is_judged_by_its_own_clock(
    tmp_path: Path, reader: str
) -> None:
    # The first capture runs from W at T0 to D hours later; the second,
    # another recording, starts with Y at T0 + 1 s and ends with Y open.
    # The clock the workers agree on for the end is counted from Y's
    # capture: were it the first's, Y would close as idle in Y's worker.
    d = _Conn(_port())
    y = _Conn(_port(apart=(d.sport,)))
    w = _Conn(_port(apart=(y.sport,), taken=(d.sport,)))
    w.open(T0)
    w.quit(T0)
    d.open(T0 + 10000)
    d.quit(T0 + 10001)
    paths = [_write(tmp_path / "1.pcap", w.take(), d.take())]
    y.open(T0 + 1)
    y.command(T0 + 50, b"MAIL FROM:<y@example.org>")
    paths.append(_write(tmp_path / "2.pcap", y.take()))

    expected = [
        (w.session(_ns(T0)), w.sport, _ns(T0), w.last, "fin"),
        (y.session(_ns(T0 + 1)), y.sport, _ns(T0 + 1), y.last, "end_of_capture"),
        (d.session(_ns(T0 + 10000)), d.sport, _ns(T0 + 10000), d.last, "fin"),
    ]
    _check(paths, expected, reader)


def test_one_process_neither_looks_ahead_nor_agrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # -j 1 reads as it always did: the first segment of each capture is
    # judged as it is fed.
    def refused(*args: object) -> None:
        raise AssertionError("one process looked for a first segment")

    monkeypatch.setattr(source, "first_segment_time", refused)
    a = _Conn(_port())
    a.open(T0)
    paths = [_write(tmp_path / "1.pcap", a.take())]
    a.command(T0 + 10, b"NOOP")
    paths.append(_write(tmp_path / "2.pcap", a.take()))
    assert len(read_captures(paths).sessions) == 1
    with read_sharded(paths, pipeline.DEFAULT_PORTS, 1) as spool:
        assert len(build_tables(spool).sessions) == 1
