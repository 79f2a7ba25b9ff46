"""A connection that is a client's SYN alone is held without stream state
until its next packet (capture.reassembly, _Flow.syn_seq): what a SYN flood
opens by the ten thousand. Whatever comes next, the rows are those the full
state gives: checked here value by value on small captures made here, and
through ``-j 2``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import pipeline
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.tables import SmtpTables, read_captures
from capture import reassembly
from capture.decode import Segment, TcpSegment, compact
from capture.reassembly import Reassembler
from tests.analysis.same import same_tables
from tests.capture.craft import Frame, TcpPeers, pcap

CLIENT, SERVER = "192.0.2.1", "198.51.100.2"
T0 = 1_700_000_000  # seconds; frames are placed in microseconds after it
SYN, FIN, ACK, PSH = 0x02, 0x01, 0x10, 0x08

# The session columns these tests look at, in this order.
COLUMNS = [
    "start",
    "end",
    "close",
    "client_port",
    "client_packets",
    "server_packets",
    "client_bytes",
    "server_bytes",
    "handshake_seen",
    "synack_seen",
    "handshake_completed",
    "commands",
    "helo",
    "greeting_code",
    "anomalies",
]


def _at(us: int) -> pd.Timestamp:
    return pd.Timestamp((T0 * 1_000_000 + us) * 1_000, unit="ns", tz="UTC")


class _Talk:
    """Frames of connections to SERVER:25, each written as it goes."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def send(
        self, us: int, tcp: TcpPeers, by_client: bool, flags: int, payload: bytes = b""
    ) -> None:
        seconds, micros = divmod(us, 1_000_000)
        self.frames.append(
            Frame(T0 + seconds, micros, tcp.frame(by_client, payload, flags))
        )

    def conversation(self, tcp: TcpPeers, us: int) -> None:
        """SYN-ACK, ACK, greeting, EHLO and QUIT, then both FINs, from ``us``."""
        self.send(us, tcp, False, SYN | ACK)
        self.send(us + 1, tcp, True, ACK)
        self.send(us + 100, tcp, False, PSH | ACK, b"220 mx.example ESMTP\r\n")
        self.send(us + 200, tcp, True, PSH | ACK, b"EHLO client.example\r\n")
        self.send(us + 300, tcp, False, PSH | ACK, b"250 mx.example\r\n")
        self.send(us + 400, tcp, True, PSH | ACK, b"QUIT\r\n")
        self.send(us + 500, tcp, False, PSH | ACK, b"221 bye\r\n")
        self.send(us + 501, tcp, False, FIN | ACK)
        self.send(us + 502, tcp, True, FIN | ACK)
        self.send(us + 503, tcp, False, ACK)

    def tables(self, path: Path) -> SmtpTables:
        frames = sorted(self.frames, key=lambda f: (f.ts_sec, f.ts_frac))
        path.write_bytes(pcap(frames))
        tables = read_captures(str(path))
        with read_sharded([str(path)], pipeline.DEFAULT_PORTS, 2) as spool:
            same_tables(build_tables(spool), tables)
        return tables


def _peers(port: int, isn: int = 99, server_isn: int = 499) -> TcpPeers:
    return TcpPeers(CLIENT, port, SERVER, 25, cseq=isn, sseq=server_isn)


def _sessions(tables: SmtpTables) -> list[tuple[object, ...]]:
    rows = tables.sessions[COLUMNS].astype(object).itertuples(index=False)
    return [tuple(row) for row in rows]


def _commands(tables: SmtpTables) -> list[tuple[object, ...]]:
    rows = tables.commands[["verb", "argument", "reply_code", "ts"]]
    return [tuple(row) for row in rows.astype(object).itertuples(index=False)]


def _conversed(
    port: int, start: int, end: int, client_packets: int
) -> tuple[object, ...]:
    """The row of a session that had _Talk.conversation from its SYN-ACK on."""
    return (
        _at(start), _at(end), "fin", port, client_packets, 6, 27, 47,
        True, True, True, 2, "client.example", 220, 0,
    )  # fmt: skip


def _spoke(at: int) -> list[tuple[object, ...]]:
    """The command rows of _Talk.conversation begun at ``at``."""
    return [
        ("EHLO", "client.example", 250, _at(at + 200)),
        ("QUIT", "", 221, _at(at + 400)),
    ]


def test_a_syn_answered_seconds_later_makes_the_rows_it_made(tmp_path: Path) -> None:
    talk = _Talk()
    tcp = _peers(40000)
    talk.send(0, tcp, True, SYN)
    talk.conversation(tcp, 2_000_000)
    tables = talk.tables(tmp_path / "late.pcap")
    assert _sessions(tables) == [_conversed(40000, 0, 2_000_503, 5)]
    assert _commands(tables) == _spoke(2_000_000)
    assert list(tables.sessions["handshake_rtt_s"]) == [2.000001]


def test_a_retransmitted_syn_is_the_same_connection(tmp_path: Path) -> None:
    talk = _Talk()
    tcp = _peers(40001)
    talk.send(0, tcp, True, SYN)
    tcp.cseq = 99  # the same SYN again, a second later
    talk.send(1_000_000, tcp, True, SYN)
    talk.conversation(tcp, 1_500_000)
    # A SYN retransmitted and never answered: one attempt of two packets.
    alone = _peers(40002)
    talk.send(0, alone, True, SYN)
    alone.cseq = 99
    talk.send(1_000_000, alone, True, SYN)
    tables = talk.tables(tmp_path / "again.pcap")
    assert _sessions(tables) == [
        _conversed(40001, 0, 1_500_503, 6),
        (
            _at(0), _at(1_000_000), "end_of_capture", 40002, 2, 0, 0, 0,
            True, False, False, 0, pd.NA, pd.NA, 0,
        ),
    ]  # fmt: skip
    assert _commands(tables) == _spoke(1_500_000)


def test_a_syn_on_the_4_tuple_of_a_syn_alone_starts_another(tmp_path: Path) -> None:
    # Another ISN on the same ports: the first attempt ends as reused, and
    # the second is a whole session.
    talk = _Talk()
    talk.send(0, _peers(40003), True, SYN)
    again = _peers(40003, isn=7_000_000, server_isn=9_000_000)
    talk.send(3_000_000, again, True, SYN)
    talk.conversation(again, 3_000_010)
    tables = talk.tables(tmp_path / "reused.pcap")
    assert _sessions(tables) == [
        (
            _at(0), _at(0), "reused", 40003, 1, 0, 0, 0,
            True, False, False, 0, pd.NA, pd.NA, 0,
        ),
        _conversed(40003, 3_000_000, 3_000_513, 5),
    ]  # fmt: skip
    assert _commands(tables) == _spoke(3_000_010)


def test_a_fast_open_syn_with_its_command(tmp_path: Path) -> None:
    # TCP Fast Open (RFC 7413): the SYN carries the EHLO, which is no SYN
    # alone; the server greets and replies to it after its SYN-ACK.
    talk = _Talk()
    tcp = _peers(40004)
    talk.send(0, tcp, True, SYN, b"EHLO early.example\r\n")
    talk.send(10, tcp, False, SYN | ACK)
    talk.send(11, tcp, True, ACK)
    talk.send(100, tcp, False, PSH | ACK, b"220 mx.example ESMTP\r\n")
    talk.send(200, tcp, False, PSH | ACK, b"250 mx.example\r\n")
    talk.send(300, tcp, True, PSH | ACK, b"QUIT\r\n")
    talk.send(400, tcp, False, PSH | ACK, b"221 bye\r\n")
    tables = talk.tables(tmp_path / "tfo.pcap")
    assert _sessions(tables) == [
        (
            _at(0), _at(400), "end_of_capture", 40004, 3, 4, 26, 47,
            True, True, True, 2, "early.example", 220, 1,
        ),
    ]  # fmt: skip
    assert _commands(tables) == [
        ("EHLO", "early.example", 250, _at(0)),
        ("QUIT", "", 221, _at(300)),
    ]
    assert list(tables.anomalies["kind"]) == ["early_talker"]


# -- the reassembler's state ---------------------------------------------------


def _to_server(seq: int, flags: int, ack: int = 0, payload: bytes = b"") -> Segment:
    return compact(
        TcpSegment(CLIENT, SERVER, 40000, 25, seq, ack, flags, payload, False)
    )


def _from_server(seq: int, ack: int, flags: int) -> Segment:
    return compact(TcpSegment(SERVER, CLIENT, 25, 40000, seq, ack, flags, b"", False))


def _flow(r: Reassembler) -> reassembly._Flow:
    (flow,) = r._open.values()
    return flow


def test_a_syn_alone_holds_no_stream_state_until_its_next_packet() -> None:
    r = Reassembler(pipeline.DEFAULT_PORTS)
    r.feed(0, _to_server(99, SYN))
    flow = _flow(r)
    assert flow.halves is reassembly._SYN_ONLY
    assert flow.syn_seq == 99
    assert (flow.conn.syn_ts, flow.conn.packets) == (0, [1, 0])

    r.feed(1, _from_server(499, 100, SYN | ACK))
    client, server = flow.halves
    assert flow.syn_seq is None
    assert (client.isn, client.base, server.isn, server.base) == (99, 100, 499, 500)
    assert r._flows[("192.0.2.1", "198.51.100.2", 40000, 25)][3] is client
    # Nothing held back and nothing delivered yet: no buffers either.
    assert (client.pending, client.tail, server.pending, server.tail) == (
        (),
        b"",
        (),
        b"",
    )


def test_a_syn_with_other_flags_or_bytes_is_no_syn_alone() -> None:
    for seg in (
        _to_server(99, SYN, payload=b"EHLO x\r\n"),  # Fast Open
        _to_server(99, SYN | FIN),  # a scanner's probe
    ):
        r = Reassembler(pipeline.DEFAULT_PORTS)
        r.feed(0, seg)
        assert _flow(r).halves is not reassembly._SYN_ONLY
