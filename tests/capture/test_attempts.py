"""capture.reassembly under a flood: attempts time out soon, and the number
of open connections is capped.

An attempt is a connection whose handshake began but never completed and
that carried no byte: what every SYN of a flood from spoofed addresses
leaves. Held for the whole idle timeout, a flood of a few thousand SYNs a
second would hold millions of them.
"""

from __future__ import annotations

import pytest

from capture.decode import ACK, FIN, RST, SYN, TcpSegment
from capture.reassembly import Reassembler
from capture.stream import (
    CloseReason,
    Direction,
    StreamClosed,
    StreamData,
    StreamGap,
    StreamOpened,
)
from tests.capture.craft import CLIENT, SERVER, seg
from tests.capture.test_reassembly import (
    C_ISN,
    PORTS,
    PSH_ACK,
    S_ISN,
    S,
    anomalies,
    c,
    closes,
    feed_all,
    handshake,
    s,
    stream,
)


def to_server(
    sender: tuple[str, int], seq: int, payload: bytes = b"", *, ack: int = 0,
    flags: int = PSH_ACK,
) -> TcpSegment:  # fmt: skip
    """A segment from ``sender`` to SERVER (``seg`` knows only CLIENT)."""
    src, sport = sender
    dst, dport = SERVER
    return TcpSegment(src, dst, sport, dport, seq, ack, flags, payload, False)


def syn_from(n: int, t: int = 0) -> tuple[int, TcpSegment]:
    """A SYN to the server from client number ``n``."""
    return t, to_server((f"198.18.0.{n}", 40000 + n), 7 * n, flags=SYN)


def to_client(receiver: tuple[str, int], seq: int, payload: bytes) -> TcpSegment:
    """A segment from SERVER to ``receiver``, with an acknowledgment. Bytes
    from the server prove a connection whose handshake was not captured."""
    src, sport = SERVER
    dst, dport = receiver
    return TcpSegment(src, dst, sport, dport, seq, 1, PSH_ACK, payload, False)


def other(t: int) -> tuple[int, TcpSegment]:
    """A packet of an unrelated connection: it moves the capture clock on."""
    return t, to_client(("10.9.9.9", 50000), 1, b"x")


def resumed(t: int) -> list[tuple[int, TcpSegment]]:
    """Traffic that goes on at ``t`` after a pause: two packets of an
    unrelated connection. One alone is held back until the packet after it
    shows that time went on (see Reassembler._hold_ahead)."""
    return [other(t), other(t + 1)]


PSH_RST = 0x08 | RST


def opened(events: list[object]) -> list[int]:
    return [e.conn.conn_id for e in events if isinstance(e, StreamOpened)]


def remembered(r: Reassembler) -> list[tuple[str, int, str, int]]:
    """The 4-tuples the reassembler knows, from the client's side."""
    return sorted({(k[0], k[2], k[1], k[3]) for k in r._flows if k[3] == 25})


# -- the attempt timeout ------------------------------------------------------


def test_an_unanswered_syn_is_closed_after_the_attempt_timeout() -> None:
    # Retransmitted after 1, 2, 4, 8 and 16 s, as Linux does: one attempt,
    # closed as idle a minute after its last SYN and stamped with it.
    r = Reassembler(PORTS)
    retries = [(t * S, seg(CLIENT, C_ISN, flags=SYN)) for t in (0, 1, 3, 7, 15, 31)]
    events = feed_all([*retries, *resumed(100 * S)], r, finish=False)
    assert closes(events) == [(0, CloseReason.IDLE, 31 * S)]
    closed = next(e for e in events if isinstance(e, StreamClosed))
    assert closed.conn.packets == [6, 0]


def test_an_attempt_answered_within_the_timeout_goes_on() -> None:
    late = [
        (0, seg(CLIENT, C_ISN, flags=SYN)),
        (50 * S, seg(SERVER, S_ISN, ack=C_ISN + 1, flags=SYN | ACK)),
        (50 * S + 1, seg(CLIENT, C_ISN + 1, ack=S_ISN + 1, flags=ACK)),
        (51 * S, s(0, b"220 hi\r\n")),
    ]
    events = feed_all(late)
    assert opened(events) == [0]
    assert closes(events) == [(0, CloseReason.END_OF_CAPTURE, 51 * S)]


def test_a_connection_past_its_handshake_keeps_the_idle_timeout() -> None:
    # Silent for 100 s after its handshake (a slow greeting, a tarpit): more
    # than an attempt may wait, far less than the idle timeout.
    r = Reassembler(PORTS)
    events = feed_all([*handshake(), other(90 * S), (100 * S, s(0, b"220 hi\r\n"))], r)
    assert opened(events) == [0, 1]
    assert closes(events) == [
        (0, CloseReason.END_OF_CAPTURE, 100 * S),
        (1, CloseReason.END_OF_CAPTURE, 90 * S),
    ]


def test_a_connection_that_sent_bytes_is_no_attempt() -> None:
    # Only the client's side was captured (asymmetric routing): the
    # handshake never completes here, but the client talks.
    events = feed_all(
        [
            (0, seg(CLIENT, C_ISN, flags=SYN)),
            (1 * S, c(0, b"EHLO x\r\n")),
            other(100 * S),
            (110 * S, c(8, b"QUIT\r\n")),
        ]
    )
    assert opened(events) == [0, 1]
    assert closes(events)[0] == (0, CloseReason.END_OF_CAPTURE, 110 * S)


def test_a_caught_connection_that_says_nothing_is_forgotten_soon() -> None:
    # No SYN in the capture and no byte: a stray ACK, or an ACK flood. It
    # is closed after the attempt timeout and forgotten at once, so its
    # 4-tuple's next packet, with bytes, is a connection caught again.
    r = Reassembler(PORTS)
    events = feed_all(
        [(0, c(0, flags=ACK)), other(100 * S), (110 * S, c(0, b"EHLO x\r\n"))], r
    )
    assert opened(events) == [0, 1, 2]
    assert closes(events)[0] == (0, CloseReason.IDLE, 0)
    assert r.stats.packets_after_close == 0


def test_a_caught_connection_that_spoke_keeps_the_idle_timeout() -> None:
    # Only the client's side, and a server slower than the attempt timeout
    # (a tarpit): found in review, the connection split in two there.
    events = feed_all(
        [(0, c(0, b"NOOP\r\n")), other(100 * S), (110 * S, c(6, b"EHLO x\r\n"))]
    )
    assert opened(events) == [0, 1]
    assert closes(events)[0] == (0, CloseReason.END_OF_CAPTURE, 110 * S)


def test_a_caught_connection_the_server_answered_keeps_the_idle_timeout() -> None:
    # No handshake captured: the server's ACK of the client's bytes shows it
    # knew the connection.
    noop = c(0, b"NOOP\r\n")
    events = feed_all(
        [
            (0, noop),
            (1, s(0, flags=ACK, ack=C_ISN + 1 + 6)),
            other(100 * S),
            (110 * S, c(6, b"EHLO x\r\n")),
        ]
    )
    assert opened(events) == [0, 1]
    assert closes(events)[0] == (0, CloseReason.END_OF_CAPTURE, 110 * S)
    conn = next(e.conn for e in events if isinstance(e, StreamOpened))
    assert conn.handshake_completed and conn.server_acked


def test_a_caught_client_whose_acks_moved_keeps_the_idle_timeout() -> None:
    # Only the client's side captured: its acknowledgments moved as the
    # server's replies, which the capture lacks, came in.
    events = feed_all(
        [
            (0, c(0, b"NOOP\r\n")),
            (1, c(6, b"RSET\r\n", ack=S_ISN + 1 + 40)),
            other(100 * S),
            (110 * S, c(12, b"EHLO x\r\n", ack=S_ISN + 1 + 80)),
        ]
    )
    assert opened(events) == [0, 1]
    assert closes(events)[0] == (0, CloseReason.END_OF_CAPTURE, 110 * S)


@pytest.mark.parametrize("answer", ["rst", "none"])
def test_one_caught_segment_nobody_answered_is_not_a_handshake(answer: str) -> None:
    # Found in review: one segment with commands from a spoofed address,
    # answered with a RST (as a stack answers a segment of a connection it
    # does not know) or not at all, made a session whose handshake had
    # completed, and forty of them alerts on that address. Its bytes wait
    # for proof, and it keeps the idle timeout (it spoke: no attempt).
    packets = [(0, c(0, b"MAIL FROM:<>\r\n"))]
    if answer == "rst":
        packets.append((1, s(0, flags=RST, ack=0)))
    events = feed_all([*packets, other(100 * S)])
    conn = next(e.conn for e in events if isinstance(e, StreamOpened))
    assert not conn.handshake_completed
    if answer == "rst":
        assert closes(events)[0] == (0, CloseReason.RST, 1)
    else:
        assert closes(events)[0] == (0, CloseReason.END_OF_CAPTURE, 0)


def test_a_caught_client_that_goes_on_completed_its_handshake() -> None:
    # Found in review: a capture of the client's side alone that began in
    # a message body, its acknowledgments still (the server says nothing
    # until the end of the data), had all but its first 4 KiB made a gap.
    # A second segment that goes on from the first shows a real client.
    events = feed_all(
        [(0, c(0, b"x" * 1448)), (1, c(1448, b"y" * 1448)), (2, c(2896, b"z"))]
    )
    conn = next(e.conn for e in events if isinstance(e, StreamOpened))
    assert conn.handshake_completed and conn.client_continued
    assert stream(events, Direction.CLIENT) == [b"x" * 1448 + b"y" * 1448 + b"z"]


def test_a_caught_client_resending_one_segment_did_not_go_on() -> None:
    events = feed_all([(0, c(0, b"MAIL FROM:<>\r\n")), (1, c(0, b"MAIL FROM:<>\r\n"))])
    conn = next(e.conn for e in events if isinstance(e, StreamOpened))
    assert not conn.handshake_completed and not conn.client_continued


def test_a_client_that_acked_finished_its_handshake() -> None:
    # Only the client's side captured: its ACK shows it had the SYN-ACK,
    # so a greeting slower than the attempt timeout (a tarpit) keeps the
    # connection whole. Found in review: the EHLO and QUIT were dropped.
    events = feed_all(
        [
            (0, seg(CLIENT, C_ISN, flags=SYN)),
            (1, c(0, flags=ACK)),
            other(100 * S),
            (110 * S, c(0, b"EHLO x\r\n")),
        ]
    )
    assert opened(events) == [0, 1]
    assert closes(events)[0] == (0, CloseReason.END_OF_CAPTURE, 110 * S)


def test_a_byte_after_an_attempt_closed_starts_a_connection() -> None:
    # Only the server's side captured: its SYN-ACK, then a greeting 90 s
    # later. The attempt was closed at 60 s and is still remembered, but a
    # byte cannot be a late packet of a connection that sent none.
    r = Reassembler(PORTS)
    events = feed_all(
        [
            (0, seg(SERVER, S_ISN, ack=C_ISN + 1, flags=SYN | ACK)),
            other(80 * S),
            (90 * S, s(0, b"220 hi\r\n")),
        ],
        r,
    )
    assert opened(events) == [0, 1, 2]
    assert closes(events)[0] == (0, CloseReason.IDLE, 0)
    assert r.stats.packets_after_close == 0


def test_a_rst_flood_is_not_remembered() -> None:
    # Each RST opens a connection and closes it at once: with nothing to be
    # late for, its 4-tuple is forgotten at once. Found in review: a
    # million of them held 688 MB, past any --max-connections.
    r = Reassembler(PORTS, max_connections=10)
    feed_all(
        [
            (n, to_server((f"198.18.{n >> 8}.{n & 255}", 40000), 1, flags=RST))
            for n in range(500)
        ],
        r,
        finish=False,
    )
    assert r._flows == {}
    assert r.stats.evicted == 0


def test_a_refused_attempt_is_remembered_for_the_attempt_timeout_only() -> None:
    r = Reassembler(PORTS)
    events = feed_all(
        [
            (0, seg(CLIENT, C_ISN, flags=SYN)),
            (1, seg(SERVER, 0, ack=C_ISN + 1, flags=RST | ACK)),
            (30 * S, seg(SERVER, 0, ack=C_ISN + 1, flags=RST | ACK)),  # late
            other(30 * S + 1),
        ],
        r,
        finish=False,
    )
    assert closes(events) == [(0, CloseReason.RST, 1)]
    assert r.stats.packets_after_close == 1
    assert remembered(r) == [(*CLIENT, *SERVER), ("10.9.9.9", 50000, *SERVER)]
    # A minute after the RST its 4-tuple is forgotten: a closed connection
    # costs memory too, and a flood closes thousands a second.
    feed_all(resumed(70 * S), r, finish=False)
    assert remembered(r) == [("10.9.9.9", 50000, *SERVER)]


def test_a_closed_connection_is_remembered_for_the_idle_timeout() -> None:
    r = Reassembler(PORTS)
    feed_all(
        [*handshake(), (5, c(0, b"x", flags=PSH_RST)), *resumed(70 * S)],
        r,
        finish=False,
    )
    assert remembered(r) == [("10.0.0.1", 40000, *SERVER), ("10.9.9.9", 50000, *SERVER)]


# -- the cap ------------------------------------------------------------------


def test_past_the_cap_the_oldest_attempts_are_evicted_first() -> None:
    # Three conversations, then a flood: at the eleventh open connection
    # two go (a tenth of ten, and the one too many), the oldest attempts.
    r = Reassembler(PORTS, max_connections=10)
    talks = [
        (t, to_client((f"10.0.0.{n}", 41000), 1, b"250 ok\r\n"))
        for n, t in ((1, 1), (2, 2), (3, 3))
    ]
    flood = [syn_from(n, 10 + n) for n in range(8)]
    events = feed_all([*talks, *flood], r, finish=False)
    assert closes(events) == [
        (3, CloseReason.EVICTED, 10),
        (4, CloseReason.EVICTED, 11),
    ]
    assert r.stats.evicted == 2
    assert r.open_connections == 9


def test_without_attempts_the_longest_silent_are_evicted() -> None:
    r = Reassembler(PORTS, max_connections=4)
    talks = [
        (t, to_client((f"10.0.0.{n}", 41000), 1, b"x"))
        for n, t in ((1, 1), (2, 2), (3, 3), (4, 4))
    ]
    again = (5, to_client(("10.0.0.1", 41000), 2, b"y"))  # 10.0.0.1 talks
    events = feed_all([*talks, again, (6, to_client(("10.0.0.5", 41000), 1, b"z"))], r)
    evicted = [(cid, ts) for cid, why, ts in closes(events) if why == "evicted"]
    assert evicted == [(1, 2)]  # 10.0.0.2: silent since 2
    assert r.stats.evicted == 1


def test_an_evicted_connection_is_forgotten_at_once() -> None:
    # Its room was wanted: a later packet starts a connection caught in the
    # middle, not a late packet of a closed one.
    r = Reassembler(PORTS, max_connections=1)
    events = feed_all(
        [
            (1, to_server(("10.0.0.1", 41000), 1, b"MAIL", ack=1)),
            (2, to_server(("10.0.0.2", 41000), 1, b"RCPT", ack=1)),
            (3, to_server(("10.0.0.1", 41000), 5, b" FROM", ack=1)),
        ],
        r,
    )
    assert opened(events) == [0, 1, 2]
    assert [(cid, why) for cid, why, _ in closes(events)] == [
        (0, CloseReason.EVICTED),
        (1, CloseReason.EVICTED),
        (2, CloseReason.END_OF_CAPTURE),
    ]
    assert r.stats.packets_after_close == 0
    assert r.stats.evicted == 2


def test_no_cap_by_default() -> None:
    r = Reassembler(PORTS)
    feed_all([syn_from(n, n) for n in range(300)], r, finish=False)
    assert r.open_connections == 300
    assert r.stats.evicted == 0


def test_a_rst_from_the_client_does_not_complete_the_handshake() -> None:
    # What a spoofed address answers to a SYN-ACK it never asked for.
    events = feed_all(
        [
            (0, seg(CLIENT, C_ISN, flags=SYN)),
            (1, seg(SERVER, S_ISN, ack=C_ISN + 1, flags=SYN | ACK)),
            (2, seg(CLIENT, C_ISN + 1, ack=S_ISN + 1, flags=RST | ACK)),
        ]
    )
    closed = next(e for e in events if isinstance(e, StreamClosed))
    assert (closed.conn.syn_ts, closed.conn.synack_ts, closed.conn.ack_ts) == (
        0,
        1,
        None,
    )
    assert closes(events) == [(0, CloseReason.RST, 2)]


@pytest.mark.parametrize(
    ("ack", "completes"),
    [
        (S_ISN + 1, True),  # the SYN-ACK acknowledged
        (S_ISN + 1 + (1 << 16), True),  # and 64 KiB the capture may have lost
        (S_ISN + 2 + (1 << 16), False),  # more than that: a guess
        (S_ISN, False),  # the SYN itself not acknowledged
        (S_ISN + 1_839_201_777, False),  # a spoofed flood's random number
    ],
)
def test_only_an_ack_of_the_synack_completes_the_handshake(
    ack: int, completes: bool
) -> None:
    # RFC 9293 3.10.7.3: a server in SYN-RECEIVED answers any other ACK with
    # a RST. Found in review: one such ACK per SYN hid a flood from syn_flood,
    # and its number was taken for gigabytes of the server's stream lost.
    r = Reassembler(PORTS)
    events = feed_all(
        [
            (0, seg(CLIENT, C_ISN, flags=SYN)),
            (1, seg(SERVER, S_ISN, ack=C_ISN + 1, flags=SYN | ACK)),
            (2, seg(CLIENT, C_ISN + 1, ack=ack, flags=ACK)),
            *resumed(100 * S),
        ],
        r,
        finish=False,
    )
    closed = [e for e in events if isinstance(e, StreamClosed)]
    if completes:
        assert closed == []
        conn = r._open[0].conn
        assert (conn.ack_ts, conn.client_acked, conn.handshake_completed) == (
            2,
            True,
            True,
        )
        return
    # An attempt: closed a minute after its last packet, no byte missing.
    assert closes(events) == [(0, CloseReason.IDLE, 2)]
    conn = closed[0].conn
    assert (conn.ack_ts, conn.client_acked, conn.handshake_completed) == (
        None,
        False,
        False,
    )
    assert not [e for e in events if isinstance(e, StreamGap)]


@pytest.mark.parametrize(("ack", "completes"), [(S_ISN + 1, True), (77, False)])
def test_an_ack_captured_before_the_synack_is_checked_when_it_comes(
    ack: int, completes: bool
) -> None:
    # A flood's ACK right behind its SYN can reach the tap before the
    # server's SYN-ACK leaves, as can a real one where two taps' clocks
    # differ. Without the SYN-ACK it is believed (one side captured).
    r = Reassembler(PORTS)
    feed_all(
        [
            (0, seg(CLIENT, C_ISN, flags=SYN)),
            (1, seg(CLIENT, C_ISN + 1, ack=ack, flags=ACK)),
        ],
        r,
        finish=False,
    )
    (flow,) = r._open.values()
    assert flow.conn.handshake_completed
    feed_all([(2, seg(SERVER, S_ISN, ack=C_ISN + 1, flags=SYN | ACK))], r, finish=False)
    assert flow.conn.handshake_completed is completes
    assert flow.conn.ack_ts is None  # no ACK came after the SYN-ACK


def test_a_handshake_opened_from_an_smtp_port_is_marked() -> None:
    # A SYN-ACK to port 25 answers a SYN sent from it: mostly one spoofed
    # with the mail server's address (backscatter). Found in review: its
    # sender was taken for the server, and the mail server for a client.
    # It is followed, with the roles its flags give, and marked: the session
    # table leaves it out, and its later packets are not taken for a
    # session caught after its start, with the roles the other way round.
    r = Reassembler(PORTS)
    events = feed_all(
        [
            (0, seg(CLIENT, S_ISN, ack=C_ISN + 1, flags=SYN | ACK)),  # to :25
            (1, seg(SERVER, C_ISN + 1, flags=RST)),  # the mail server resets it
            (2, seg(SERVER, C_ISN + 100, flags=SYN)),  # from :25 to :40000
            (3, seg(SERVER, C_ISN + 101, b"x", ack=S_ISN, flags=PSH_ACK)),
        ],
        r,
    )
    assert r.stats.handshakes_from_smtp_ports == 2  # connections, not packets
    opened = [e.conn for e in events if isinstance(e, StreamOpened)]
    assert [(o.client_port, o.server_port, o.from_smtp_port) for o in opened] == [
        (25, 40000, True),
        (25, 40000, True),
    ]
    assert closes(events) == [
        (0, CloseReason.RST, 1),
        (1, CloseReason.END_OF_CAPTURE, 3),
    ]
    # Between two SMTP ports, the SYN's sender is the client as ever.
    both = Reassembler(frozenset({25, 40000}))
    events = feed_all([(2, seg(SERVER, C_ISN, flags=SYN))], both)
    (opened_both,) = [e.conn for e in events if isinstance(e, StreamOpened)]
    assert (opened_both.client_port, opened_both.server_port) == (25, 40000)
    assert not opened_both.from_smtp_port
    assert both.stats.handshakes_from_smtp_ports == 0


def test_a_connection_evicted_with_both_fins_in_closes_as_fin() -> None:
    # Only its last ACK was missing: its row says fin, and the warning's
    # count of evicted connections leaves it out (found in review).
    r = Reassembler(PORTS, max_connections=1)
    events = feed_all(
        [
            *handshake(),
            (10, c(0, b"QUIT\r\n")),
            (11, s(0, b"221 bye\r\n", ack=C_ISN + 7, flags=PSH_ACK | FIN)),
            (12, c(6, ack=S_ISN + 10, flags=ACK | FIN)),
            (20, to_client(("10.0.0.9", 41000), 1, b"x")),  # not unproven
        ],
        r,
        finish=False,
    )
    assert closes(events) == [(0, CloseReason.FIN, 12)]
    assert r.stats.evicted == 0


def test_bytes_in_a_syn_do_not_prove_a_connection() -> None:
    # Found in review: SYNs carrying data (TCP Fast Open) were held for the
    # idle timeout, ten minutes, a flood of them past every other limit.
    r = Reassembler(PORTS)
    events = feed_all(
        [(0, seg(CLIENT, C_ISN, b"EHLO x\r\n", flags=SYN)), *resumed(100 * S)],
        r,
        finish=False,
    )
    assert closes(events) == [(0, CloseReason.IDLE, 0)]
    # Once the client acknowledges the SYN-ACK, it is a connection.
    events = feed_all(
        [
            (200 * S, seg(CLIENT, C_ISN, b"EHLO x\r\n", flags=SYN)),
            (200 * S + 1, seg(SERVER, S_ISN, ack=C_ISN + 9, flags=SYN | ACK)),
            (200 * S + 2, c(8, flags=ACK)),
            other(300 * S),
        ],
        r,
        finish=False,
    )
    assert closes(events) == []


def test_an_attempt_holds_little_of_what_it_sends_out_of_order() -> None:
    # Found in review: attempts that send data behind their SYN, past a
    # hole, each held up to a megabyte (300 of them took 371 MB). One that
    # has shown nothing of a conversation keeps at most 4 KiB out of order;
    # a connection whose handshake completed, a megabyte as before.
    hole_then = [(1 + n, c(1 + 1000 * n, b"x" * 1000, flags=0x08)) for n in range(6)]
    r = Reassembler(PORTS)
    events = feed_all([(0, seg(CLIENT, C_ISN, flags=SYN)), *hole_then], r, finish=False)
    assert [kind for kind, _ in anomalies(events)] == ["tcp_buffer_limit"]
    assert r.stats.buffer_limit_hits == 1

    proven = Reassembler(PORTS)
    events = feed_all([*handshake(), *hole_then], proven, finish=False)
    assert anomalies(events) == []
    assert proven.stats.buffer_limit_hits == 0


def test_a_syn_after_a_synack_sent_ahead_with_its_isn_is_a_connection() -> None:
    # Found in review: a client hid its whole session by sending, first, a
    # SYN-ACK to port 25 with its own SYN's ISN: the SYN then passed for a
    # retransmission of the connection opened from the SMTP port.
    r = Reassembler(PORTS)
    events = feed_all(
        [
            (0, seg(CLIENT, C_ISN, ack=777, flags=SYN | ACK)),  # to :25
            (1, seg(CLIENT, C_ISN, flags=SYN)),  # the same ISN, now a SYN
            (2, seg(SERVER, S_ISN, ack=C_ISN + 1, flags=SYN | ACK)),
        ],
        r,
    )
    opened = [e.conn for e in events if isinstance(e, StreamOpened)]
    assert [(o.client_port, o.server_port, o.from_smtp_port) for o in opened] == [
        (25, 40000, True),
        (40000, 25, False),
    ]
    assert closes(events)[0] == (0, CloseReason.REUSED, 0)


@pytest.mark.parametrize("taken", [8, 4, 0])
def test_a_fast_open_synack_captured_before_its_syn_is_one_connection(
    taken: int,
) -> None:
    # Two taps whose clocks differ put the SYN-ACK first; it acknowledges
    # what the server took of the SYN's data (RFC 7413): all, part or none.
    # Found in review: the SYN was taken for a new connection on the
    # 4-tuple, and an empty session came with it.
    r = Reassembler(PORTS)
    events = feed_all(
        [
            (0, seg(SERVER, S_ISN, ack=C_ISN + 1 + taken, flags=SYN | ACK)),
            (1, seg(CLIENT, C_ISN, b"EHLO x\r\n", flags=SYN)),
            (2, c(8, ack=S_ISN + 1, flags=ACK)),
        ],
        r,
    )
    assert len([e for e in events if isinstance(e, StreamOpened)]) == 1
    delivered = b"".join(e.data for e in events if isinstance(e, StreamData))
    assert delivered == b"EHLO x\r\n"
    assert [reason for _, reason, _ in closes(events)] == [CloseReason.END_OF_CAPTURE]
