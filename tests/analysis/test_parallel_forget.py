"""Found in review: which closed 4-tuples a reader still remembered depended
on the other workers' connections, so a late packet could open a session
under ``-j N`` that one process counted as a packet after close.

``Reassembler._sweep`` forgets closed 4-tuples from the front of ``_closed``
(closing order) and stops at the first one closed too recently. That order
is not the order of the close times: a connection whose FIN exchange lacks
only the last ACK is closed on a later sweep but stamped with its last
packet's time. With another worker's connection closed in between, one
process stopped at that one and kept the 4-tuple; the worker, which never
saw it, forgot it. A closed 4-tuple is now remembered for the idle timeout
after its close time, judged by the late packet's own time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import pipeline
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.tables import read_captures
from capture import libpcap
from tests.analysis.same import same_tables
from tests.capture.craft import Frame, TcpPeers, pcap

CLIENT, SERVER = "192.0.2.1", "198.51.100.2"
A = 1_000_020  # a point of the 7.5 s sweep grid


class _Conn:
    def __init__(self, sport: int) -> None:
        self.sport = sport
        self.tcp = TcpPeers(CLIENT, sport, SERVER, 25, cseq=100, sseq=500)
        self.frames: list[Frame] = []

    def client(
        self, t: int, frac: int, payload: bytes = b"", flags: int = 0x18
    ) -> None:
        self.frames.append(Frame(t, frac, self.tcp.frame(True, payload, flags)))

    def server(
        self, t: int, frac: int, payload: bytes = b"", flags: int = 0x18
    ) -> None:
        self.frames.append(Frame(t, frac, self.tcp.frame(False, payload, flags)))

    def open(self, t: int) -> None:
        self.tcp.cseq -= 1
        self.client(t, 0, flags=0x02)
        self.tcp.sseq -= 1
        self.server(t, 1, flags=0x12)
        self.client(t, 2, flags=0x10)
        self.server(t, 3, b"220 ready\r\n")
        self.client(t, 4, b"EHLO x\r\n")
        self.server(t, 5, b"250 ok\r\n")


def _port(shard: int, jobs: int, start: int) -> int:
    return next(
        p
        for p in range(start, start + 1000)
        if libpcap.shard_of(CLIENT, p, SERVER, 25, jobs) == shard
    )


def _capture(path: Path, jobs: int, late: int) -> None:
    # X: both FINs at A - 1 s but no last ACK (closed on a later sweep,
    # stamped A - 1 s). Z, another worker's: FIN-closed at A + 1 s.
    # Then the server retransmits X's last reply ``late`` s after A.
    x = _Conn(_port(0, jobs, 40000))
    z = _Conn(_port(1, jobs, 41000))
    x.open(A - 50)
    x.client(A - 1, 1, b"QUIT\r\n")
    x.server(A - 1, 2, b"221 bye\r\n")
    x.server(A - 1, 3, flags=0x11)
    x.client(A - 1, 4, flags=0x11)
    z.open(A - 40)
    z.client(A + 1, 1, flags=0x11)
    z.server(A + 1, 2, flags=0x11)
    z.client(A + 1, 3, flags=0x10)
    x.tcp.sseq -= len(b"221 bye\r\n") + 1
    x.server(A + late, 0, b"221 bye\r\n")
    frames = sorted(x.frames + z.frames, key=lambda f: (f.ts_sec, f.ts_frac))
    path.write_bytes(pcap(frames))


@pytest.mark.parametrize("jobs", [2, 3, 4])
@pytest.mark.parametrize(
    ("late", "sessions"),
    [
        (598, 2),  # 599 s after X's close: a packet after close
        (602, 3),  # 603 s after: X is forgotten, the reply opens a session
    ],
)
def test_a_late_packet_after_a_lingering_close_gives_the_same_tables(
    tmp_path: Path, jobs: int, late: int, sessions: int
) -> None:
    capture = tmp_path / "linger.pcap"
    _capture(capture, jobs, late)
    plain = read_captures([str(capture)])
    assert len(plain.sessions) == sessions
    with read_sharded([str(capture)], pipeline.DEFAULT_PORTS, jobs) as spool:
        same_tables(build_tables(spool), plain)
