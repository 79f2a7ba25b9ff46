"""A session ends at its last packet, whatever closed its connection.

The README documents ``end`` as the connection's last packet and
``duration_s`` as first to last packet. An idle close is decided only a
timeout after the last packet, and a reused 4-tuple is noticed at the new
SYN: neither moment is part of the session. Found when idle sessions came
out 600 s longer than they were, and with anomalies, commands and
transaction ends stamped after their session's end.

Each case is a small capture made here; the rows are checked through the
offline path, ``-j N`` and live capture, which close idle connections on
different occasions (a later packet, the workers' agreed clock, a timer).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis import pipeline
from analysis.live import LiveAnalyzer
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.records import SessionResult
from analysis.session import SessionBuilder
from analysis.tables import SmtpTables, read_captures
from capture import libpcap
from capture.pcapfile import RawPacket, open_capture
from capture.stream import Connection, Direction
from tests.analysis.same import same_tables
from tests.capture.craft import Frame, TcpPeers, pcap

CLIENT, SERVER = "192.0.2.1", "198.51.100.2"
T0 = 1_700_000_000  # seconds; frames are placed in microseconds after it
SYN, FIN, RST, ACK, PSH = 0x02, 0x01, 0x04, 0x10, 0x08
US = 1_000  # one microsecond in nanoseconds


def _ns(us: int) -> int:
    """The time of a frame ``us`` microseconds after T0, in nanoseconds."""
    return T0 * 1_000_000_000 + us * US


def _stamp(us: int) -> pd.Timestamp:
    return pd.Timestamp(_ns(us), unit="ns", tz="UTC")


class _Conn:
    """One client's connection to SERVER:25, frame by frame."""

    def __init__(self, sport: int, isn: int = 99, server_isn: int = 499) -> None:
        self.sport = sport
        self.tcp = TcpPeers(CLIENT, sport, SERVER, 25, cseq=isn, sseq=server_isn)
        self.frames: list[Frame] = []

    def client(self, us: int, payload: bytes = b"", flags: int = PSH | ACK) -> None:
        self._frame(us, True, payload, flags)

    def server(self, us: int, payload: bytes = b"", flags: int = PSH | ACK) -> None:
        self._frame(us, False, payload, flags)

    def handshake(self, us: int) -> None:
        """SYN, SYN-ACK and ACK, a microsecond apart from ``us`` on."""
        self.client(us, flags=SYN)
        self.server(us + 1, flags=SYN | ACK)
        self.client(us + 2, flags=ACK)

    def _frame(self, us: int, by_client: bool, payload: bytes, flags: int) -> None:
        seconds, micros = divmod(us, 1_000_000)
        frame = self.tcp.frame(by_client, payload, flags)
        self.frames.append(Frame(T0 + seconds, micros, frame))


def _write(path: Path, *conns: _Conn) -> str:
    frames = sorted(
        (f for c in conns for f in c.frames), key=lambda f: (f.ts_sec, f.ts_frac)
    )
    path.write_bytes(pcap(frames))
    return str(path)


def _apart() -> tuple[int, int]:
    """Two client ports whose connections -j 2 gives to different workers."""
    ports = range(40000, 40100)
    first, second = (
        next(p for p in ports if libpcap.shard_of(CLIENT, p, SERVER, 25, 2) == k)
        for k in (0, 1)
    )
    return first, second


def _live(path: str, idle_timeout_s: float = 600.0) -> list[SessionResult]:
    """The sessions LiveAnalyzer closes, fed the capture with a tick a packet."""
    closed: list[SessionResult] = []
    analyzer = LiveAnalyzer(
        pipeline.DEFAULT_PORTS,
        lambda table, record: None,
        idle_timeout_s=idle_timeout_s,
        hooks=[closed.append],
    )
    with open_capture(path) as reader:
        for packet in reader:
            analyzer.feed(packet)
            analyzer.tick(packet.ts)
    analyzer.stop()
    return sorted(closed, key=lambda r: r.session.start)


def _same_in_workers(path: str, plain: SmtpTables) -> None:
    for jobs in (2, 3):
        with read_sharded([path], pipeline.DEFAULT_PORTS, jobs) as spool:
            same_tables(build_tables(spool), plain)


def test_the_builder_ends_a_session_at_its_last_packet() -> None:
    # Whoever closes it later (Reassembler.finish may be given a time): the
    # session's end is its connection's last packet.
    conn = Connection(0, CLIENT, 40000, SERVER, 25, first_ts=_ns(0))
    builder = SessionBuilder(conn, frozenset({465}))
    conn.last_ts = _ns(1_000_000)
    builder.data(Direction.SERVER, b"220 mx.example ESMTP\r\n", conn.last_ts)
    session = builder.close(_ns(601_000_000), "idle").session
    assert (session.start, session.end, session.duration_s) == (
        _ns(0),
        _ns(1_000_000),
        1.0,
    )


# -- idle ---------------------------------------------------------------


def _idle_capture(path: Path) -> str:
    """A, last heard 3.5 s after its SYN, waits for a reply it never gets and
    says half a line; B, another worker's under -j 2, goes on for 700 s and
    closes with FINs, taking the clock past A's idle timeout."""
    a_port, b_port = _apart()
    a, b = _Conn(a_port), _Conn(b_port)
    a.handshake(0)
    a.server(500_000, b"220 mx.example ESMTP\r\n")
    a.client(1_000_000, b"EHLO client.example\r\n")
    a.server(1_000_100, b"250 mx.example\r\n")
    a.client(2_000_000, b"MAIL FROM:<a@example.org>\r\n")
    a.server(2_000_100, b"250 ok\r\n")
    a.client(3_000_000, b"RCPT TO:<b@example.org>\r\n")
    a.client(3_500_000, b"RCPT TO:<c@exa")  # the last packet: no line end
    b.handshake(10_000_000)
    b.server(10_500_000, b"220 mx.example ESMTP\r\n")
    for minute in (5, 10):  # B's own quiet spells stay short of the timeout
        b.client(minute * 60_000_000, b"NOOP\r\n")
        b.server(minute * 60_000_000 + 100, b"250 ok\r\n")
    b.client(700_000_000, b"QUIT\r\n")
    b.server(700_000_100, b"221 bye\r\n")
    b.server(700_000_200, flags=FIN | ACK)
    b.client(700_000_300, flags=FIN | ACK)
    b.server(700_000_400, flags=ACK)
    return _write(path, a, b)


def test_an_idle_session_ends_at_its_last_packet(tmp_path: Path) -> None:
    path = _idle_capture(tmp_path / "idle.pcap")
    tables = read_captures(path)
    sessions = tables.sessions
    assert list(sessions["close"]) == ["idle", "fin"]
    a = sessions.iloc[0]
    assert a["start"] == _stamp(0)
    assert a["end"] == _stamp(3_500_000)
    assert a["duration_s"] == 3.5
    b = sessions.iloc[1]
    assert (b["start"], b["end"]) == (_stamp(10_000_000), _stamp(700_000_400))
    assert b["duration_s"] == 690.0004

    # What the close settles lies within the session: the half line as a
    # command, the anomalies of the close. The open transaction did not end
    # on the wire, so it has no end (the session's says when it closed).
    a_id = a["session_id"]
    commands = tables.commands[tables.commands["session_id"] == a_id]
    assert list(commands["argument"].iloc[-2:]) == ["TO:<b@example.org>", "TO:<c@exa"]
    assert commands["ts"].iloc[-1] == _stamp(3_500_000)
    transaction = tables.transactions.iloc[0]
    assert transaction["session_id"] == a_id
    assert transaction["status"] == "incomplete"
    assert pd.isna(transaction["end"])
    anomalies = tables.anomalies[tables.anomalies["session_id"] == a_id]
    assert list(anomalies["kind"]) == ["unterminated_line", "no_reply"]
    assert list(anomalies["ts"]) == [_stamp(3_500_000)] * 2

    _same_in_workers(path, tables)


def test_an_idle_session_ends_at_its_last_packet_live(tmp_path: Path) -> None:
    # Live closes A on a tick, or at B's packet 700 s in: the same end.
    path = _idle_capture(tmp_path / "idle.pcap")
    a, b = _live(path)
    assert (a.session.close, b.session.close) == ("idle", "fin")
    assert (a.session.start, a.session.end) == (_ns(0), _ns(3_500_000))
    assert a.session.duration_s == 3.5
    assert (a.transactions[0].status, a.transactions[0].end) == ("incomplete", None)
    assert [x.ts for x in a.anomalies] == [_ns(3_500_000)] * 2


def test_a_timer_closes_an_idle_session_at_its_last_packet() -> None:
    # No other traffic: live capture's timer alone finds A idle, 5 s of
    # wall clock after its last packet; its end is that packet still.
    a = _Conn(40000)
    a.handshake(0)
    a.server(250_000, b"220 mx.example ESMTP\r\n")
    closed: list[SessionResult] = []
    analyzer = LiveAnalyzer(
        pipeline.DEFAULT_PORTS,
        lambda table, record: None,
        idle_timeout_s=5,
        hooks=[closed.append],
    )
    for frame in a.frames:
        analyzer.feed(_raw(frame))
    analyzer.tick(_ns(250_000) + 5 * 10**9)
    assert closed == []
    analyzer.tick(_ns(250_000) + 5 * 10**9 + 1)
    assert [r.session.close for r in closed] == ["idle"]
    assert (closed[0].session.start, closed[0].session.end) == (_ns(0), _ns(250_000))
    assert closed[0].session.duration_s == 0.25


def _raw(frame: Frame) -> RawPacket:
    ts = frame.ts_sec * 1_000_000_000 + frame.ts_frac * US
    return RawPacket(ts, 1, frame.data, len(frame.data), 0)


# -- reused -------------------------------------------------------------


def _reused_capture(path: Path) -> str:
    """A says EHLO and is heard no more; 20 s later its client port sends a
    new SYN (another ISN), and that connection C delivers nothing and quits."""
    a = _Conn(40000, isn=99)
    a.handshake(0)
    a.server(100_000, b"220 mx.example ESMTP\r\n")
    a.client(200_000, b"EHLO client.example\r\n")
    a.server(300_000, b"250 mx.example\r\n")  # A's last packet
    # The server's ISN for it is another too (RFC 6528: its clock moved on).
    c = _Conn(40000, isn=7_000_000, server_isn=9_000_000)
    c.handshake(20_000_000)
    c.server(20_100_000, b"220 mx.example ESMTP\r\n")
    c.client(20_200_000, b"QUIT\r\n")
    c.server(20_300_000, b"221 bye\r\n")
    c.server(20_300_001, flags=FIN | ACK)
    c.client(20_300_002, flags=FIN | ACK)
    c.server(20_300_003, flags=ACK)
    return _write(path, a, c)


def test_a_reused_session_ends_at_its_last_packet(tmp_path: Path) -> None:
    path = _reused_capture(tmp_path / "reused.pcap")
    tables = read_captures(path)
    sessions = tables.sessions
    assert list(sessions["close"]) == ["reused", "fin"]
    a, c = sessions.iloc[0], sessions.iloc[1]
    assert (a["start"], a["end"]) == (_stamp(0), _stamp(300_000))
    assert a["duration_s"] == 0.3
    # The new SYN opens C; it is none of A's.
    assert (c["start"], c["end"]) == (_stamp(20_000_000), _stamp(20_300_003))
    assert c["duration_s"] == 0.300003
    assert (a["client_packets"], a["server_packets"]) == (3, 3)

    _same_in_workers(path, tables)
    live = _live(path)
    assert [(r.session.close, r.session.end) for r in live] == [
        ("reused", _ns(300_000)),
        ("fin", _ns(20_300_003)),
    ]


@pytest.mark.parametrize(
    ("close", "live_close"),
    [("fin", "fin"), ("rst", "rst"), ("end_of_capture", "interrupted")],
)
def test_other_closes_end_at_the_last_packet_as_before(
    tmp_path: Path, close: str, live_close: str
) -> None:
    # Each was stamped with its last packet already; live capture stopped
    # with the connection open closes it as interrupted.
    a = _Conn(40000)
    a.handshake(0)
    a.server(100_000, b"220 mx.example ESMTP\r\n")
    a.client(200_000, b"QUIT\r\n")
    a.server(300_000, b"221 bye\r\n")
    last = 300_000
    if close == "fin":
        a.server(300_001, flags=FIN | ACK)
        a.client(300_002, flags=FIN | ACK)
        a.server(300_003, flags=ACK)
        last = 300_003
    elif close == "rst":
        a.server(300_001, flags=RST | ACK)
        last = 300_001
    path = _write(tmp_path / "one.pcap", a)
    sessions = read_captures(path).sessions
    assert list(sessions["close"]) == [close]
    assert sessions["end"].iloc[0] == _stamp(last)
    assert sessions["duration_s"].iloc[0] == last / 1_000_000
    live = _live(path)
    assert [(r.session.close, r.session.end) for r in live] == [(live_close, _ns(last))]
