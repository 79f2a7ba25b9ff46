"""The libpcap fast path keeps exactly what the Python path would decode."""

from __future__ import annotations

import gzip
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from capture import libpcap, source
from capture.decode import SMTP_PORTS, decode_tcp
from capture.pcapfile import CaptureReader, open_capture
from tests.capture.craft import (
    Frame,
    ethernet,
    ipv4,
    ipv6,
    ng_epb,
    ng_idb,
    ng_shb,
    pcap,
    tcp_header,
)

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.skipif(
    not libpcap.available(), reason="libpcap is not installed"
)


def _frames() -> list[Frame]:
    """SMTP and other traffic in every shape the BPF filter must handle."""
    rng = random.Random(7)
    frames: list[bytes] = []
    for i in range(300):
        sport = rng.randrange(1024, 65536)
        dport = rng.choice([25, 465, 587, 2525, 80, 443, 22])
        seg = tcp_header(sport, dport) + b"x" * rng.randrange(0, 40)
        if rng.random() < 0.5:
            seg = tcp_header(dport, sport) + b"reply"  # the server's side
        a, b = f"10.0.{i % 7}.{i % 250 + 1}", f"192.0.2.{i % 13 + 1}"
        kind = i % 6
        if kind == 0:
            frames.append(ethernet(ipv4(a, b, seg)))
        elif kind == 1:
            frames.append(ethernet(ipv4(a, b, seg), vlans=(0x8100,)))
        elif kind == 2:
            frames.append(ethernet(ipv4(a, b, seg), vlans=(0x88A8, 0x8100)))
        elif kind == 3:
            v6 = ipv6(f"2001:db8::{i:x}", "2001:db8:1::25", seg)
            frames.append(ethernet(v6, ethertype=0x86DD))
        elif kind == 4:
            # TCP behind a destination-options header: BPF cannot see it.
            v6 = ipv6(
                f"2001:db8::{i:x}", "2001:db8:1::25", seg, extensions=[(60, b"\0" * 7)]
            )
            frames.append(ethernet(v6, ethertype=0x86DD))
        else:
            udp = b"\x00\x35\x00\x35\x00\x08\x00\x00"
            frames.append(ethernet(ipv4(a, b, udp, proto=17)))
    return [Frame(1_700_000_000 + i, 0, data) for i, data in enumerate(frames)]


def _decoded(packets: object) -> list[tuple[object, ...]]:
    out = []
    for packet in packets:  # type: ignore[attr-defined]
        segment = decode_tcp(packet.linktype, packet.data, SMTP_PORTS)
        if segment is not None:
            out.append((packet.ts, *segment))
    return out


@pytest.fixture
def capture(tmp_path: Path) -> str:
    path = tmp_path / "mixed.pcap"
    path.write_bytes(pcap(_frames()))
    return str(path)


def test_filter_keeps_every_segment_the_decoder_wants(capture: str) -> None:
    with open_capture(capture) as reader:
        everything = _decoded(reader)
    with libpcap.open_filtered(capture, libpcap.smtp_filter(SMTP_PORTS)) as fast:
        kept = _decoded(fast)
        assert fast.error is None
    assert kept == everything
    assert len(everything) > 150


@pytest.mark.parametrize("parts", [2, 3])
def test_shards_split_connections_exactly(capture: str, parts: int) -> None:
    with open_capture(capture) as reader:
        everything = _decoded(reader)
    union = []
    for mine in range(parts):
        expression = libpcap.smtp_filter(SMTP_PORTS, (mine, parts))
        with libpcap.open_filtered(capture, expression) as fast:
            for row in _decoded(fast):
                _, src, dst, sport, dport, *_ = row
                if libpcap.shard_of(src, sport, dst, dport, parts) == mine:  # type: ignore[arg-type]
                    union.append(row)
    # Nothing lost (BPF and Python agree on the owner) and nothing doubled.
    assert sorted(union, key=repr) == sorted(everything, key=repr)


def test_shard_is_the_same_both_ways() -> None:
    for parts in (2, 3, 5):
        assert libpcap.shard_of("10.0.0.1", 25, "10.9.9.9", 41000, parts) == (
            libpcap.shard_of("10.9.9.9", 41000, "10.0.0.1", 25, parts)
        )
        assert libpcap.shard_of("::1", 587, "2001:db8::7", 5555, parts) == (
            libpcap.shard_of("2001:db8::7", 5555, "::1", 587, parts)
        )


def test_damage_is_reported_not_raised(tmp_path: Path) -> None:
    content = pcap(_frames())
    path = tmp_path / "cut.pcap"
    path.write_bytes(content[: len(content) - 5])
    with libpcap.open_filtered(str(path), libpcap.smtp_filter(SMTP_PORTS)) as fast:
        kept = list(fast)
        assert fast.error is not None
    assert kept


def test_unreadable_file_raises_libpcap_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"not a capture at all")
    with pytest.raises(libpcap.LibpcapError):
        libpcap.open_filtered(str(path), "tcp")


def test_missing_file_raises_libpcap_error_with_its_reason(tmp_path: Path) -> None:
    # Our own fopen fails first; libpcap's open then gives the message.
    with pytest.raises(libpcap.LibpcapError, match="No such file"):
        libpcap.open_filtered(str(tmp_path / "absent.pcap"), "tcp")


def test_filtered_pipe_reads_and_writes_in_large_blocks(tmp_path: Path) -> None:
    # glibc ignores a buffer size given without the memory: the streams
    # must carry buffers of their own, or stdio moves 4 KiB per call.
    path = tmp_path / "smtp.pcap"
    path.write_bytes(pcap(_frames()))
    pipe = libpcap.FilteredPipe(str(path), libpcap.smtp_filter(SMTP_PORTS))
    try:
        read_buffer, write_buffer = pipe._buffers
        assert len(read_buffer) == libpcap._READ_BUFFER_BYTES
        assert len(write_buffer) >= 64 * 1024
        assert pipe.stream.read()[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
        assert pipe.finish() is None
    finally:
        pipe.close()


# An SMTP delivery over IPv6 whose client sends every segment as an atomic
# fragment (RFC 6946: a Fragment header, offset 0, no more fragments), as a
# sender may to slip past filters; the server answers in plain IPv6.
_V6_CLIENT = ("2001:db8::1", 40001)
_V6_SERVER = ("2001:db8::25", 25)


def _atomic_fragment_conversation() -> list[bytes]:
    """The IPv6 packets of the delivery, from the SYN to the last ACK."""
    steps = [
        (_V6_CLIENT, 0x02, b""),  # SYN
        (_V6_SERVER, 0x12, b""),  # SYN-ACK
        (_V6_CLIENT, 0x10, b""),
        (_V6_SERVER, 0x18, b"220 mx.example.org ESMTP\r\n"),
        (_V6_CLIENT, 0x18, b"HELO atomic.example.com\r\n"),
        (_V6_SERVER, 0x18, b"250 mx.example.org\r\n"),
        (_V6_CLIENT, 0x18, b"MAIL FROM:<evader@example.net>\r\n"),
        (_V6_SERVER, 0x18, b"250 2.1.0 ok\r\n"),
        (_V6_CLIENT, 0x18, b"RCPT TO:<victim@example.org>\r\n"),
        (_V6_SERVER, 0x18, b"250 2.1.5 ok\r\n"),
        (_V6_CLIENT, 0x18, b"DATA\r\n"),
        (_V6_SERVER, 0x18, b"354 go\r\n"),
        (_V6_CLIENT, 0x18, b"Subject: hi\r\n\r\nhello\r\n.\r\n"),
        (_V6_SERVER, 0x18, b"250 2.0.0 Ok: queued as F1\r\n"),
        (_V6_CLIENT, 0x18, b"QUIT\r\n"),
        (_V6_SERVER, 0x18, b"221 bye\r\n"),
        (_V6_CLIENT, 0x11, b""),  # FIN
        (_V6_SERVER, 0x11, b""),
        (_V6_CLIENT, 0x10, b""),
    ]
    seqs = {_V6_CLIENT: 1000, _V6_SERVER: 5000}
    packets = []
    for n, (src, flags, data) in enumerate(steps):
        dst = _V6_SERVER if src == _V6_CLIENT else _V6_CLIENT
        ack = 0 if flags == 0x02 else seqs[dst]
        segment = tcp_header(src[1], dst[1], seqs[src], ack, flags) + data
        # Fragment header after its next-header byte: reserved, offset 0
        # with M clear, identification.
        fragment = [(44, struct.pack(">BHI", 0, 0, 7000 + n))]
        extensions = fragment if src == _V6_CLIENT else []
        packets.append(ipv6(src[0], dst[0], segment, extensions=extensions))
        seqs[src] += len(data) + (1 if flags & 0x03 else 0)
    return packets


_SLL = struct.pack(">HHH8sH", 0, 1, 6, b"\2" * 8, 0x86DD)
_SLL2 = struct.pack(">HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"\2" * 8)
# How each link type frames the packets: its number and the framing.
_V6_LINKS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "ethernet": (1, lambda p: ethernet(p, ethertype=0x86DD)),
    "802.1Q": (1, lambda p: ethernet(p, ethertype=0x86DD, vlans=(0x8100,))),
    "802.1ad": (1, lambda p: ethernet(p, ethertype=0x86DD, vlans=(0x88A8, 0x8100))),
    "linux cooked": (113, lambda p: _SLL + p),
    "linux cooked v2": (276, lambda p: _SLL2 + p),
    "raw ip": (101, lambda p: p),
}


def _v6_capture(tmp_path: Path, link: str) -> str:
    linktype, framed = _V6_LINKS[link]
    packets = _atomic_fragment_conversation()
    frames = [Frame(1_700_000_000, n * 1000, framed(p)) for n, p in enumerate(packets)]
    path = tmp_path / f"{link.replace(' ', '-')}.pcap"
    path.write_bytes(pcap(frames, linktype=linktype))
    return str(path)


# Each way of keeping tagged frames that libpcap compiles for the link type
# (``vlan`` is Ethernet's alone), where the frames have no tags it ignores.
_V6_FILTERS = [
    (link, tags)
    for link in sorted(_V6_LINKS)
    for tags in libpcap.TAGS
    if not (tags == "vlan" and _V6_LINKS[link][0] != 1)
    and not (tags == "none" and link.startswith("802.1"))
]


@pytest.mark.parametrize(("link", "tags"), _V6_FILTERS)
def test_tcp_behind_a_fragment_header_passes_every_filter(
    tmp_path: Path, link: str, tags: str
) -> None:
    # Found in review: "tcp and port 25" looks for the ports right after the
    # IPv6 header, and "ip6 proto 6" looks through a Fragment header, so the
    # client's half of such a conversation passed neither.
    path = _v6_capture(tmp_path, link)
    fast = libpcap.open_filtered(path, libpcap.smtp_filter(SMTP_PORTS, tags=tags))
    with fast:
        kept = _decoded(fast)
        assert fast.error is None
    with open_capture(path) as reader:
        everything = _decoded(reader)
    assert kept == everything
    assert len(everything) == 19


@pytest.mark.parametrize("link", sorted(_V6_LINKS))
def test_atomic_fragments_give_the_same_tables_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    from analysis.tables import read_captures
    from tests.analysis.same import same_tables

    path = _v6_capture(tmp_path, link)
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    assert source._fast_path(path) is not None
    fast = read_captures([path])
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    slow = read_captures([path])

    same_tables(fast, slow)
    sessions = fast.sessions[
        ["client_ip", "server_port", "helo", "client_packets", "server_packets"]
    ]
    assert sessions.values.tolist() == [
        ["2001:db8::1", 25, "atomic.example.com", 10, 9]
    ]
    mails = fast.transactions[["mail_from", "rcpt_to", "status", "queue_id"]]
    assert mails.values.tolist() == [
        ["evader@example.net", ["victim@example.org"], "accepted", "F1"]
    ]
    assert fast.anomalies.empty
    assert fast.stats.smtp_packets == 19


def snaplen(path: Path) -> int:
    """The snaplen libpcap's path reads ``path`` with; 0: it does not."""
    fast = source._fast_path(str(path))
    return fast.snaplen if fast is not None else 0


def test_fast_path_only_for_files_libpcap_reads_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpcap cuts packets to the header's snaplen; the Python reader keeps
    # what the record holds. A small snaplen goes to the Python reader.
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    content = bytearray(pcap(_frames()))
    full = tmp_path / "full.pcap"
    full.write_bytes(content)
    struct.pack_into("<I", content, 16, 64)
    small = tmp_path / "snap64.pcap"
    small.write_bytes(content)
    assert snaplen(full) == 262144
    assert snaplen(small) == 0


def test_vv_says_why_the_python_reader_takes_a_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by a new user: the README promised it at -vv, which said no
    # more than -v.
    from analysis.tables import read_captures

    content = bytearray(pcap(_frames()))
    struct.pack_into("<I", content, 16, 64)
    small = tmp_path / "snap64.pcap"
    small.write_bytes(content)
    null = tmp_path / "null.pcap"
    null.write_bytes(pcap(_frames(), linktype=0))
    caplog.set_level("DEBUG", logger="capture.source")
    read_captures([str(small)])
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    read_captures([str(small), str(null)])
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    read_captures([str(small)])
    said = [r.getMessage() for r in caplog.records if "Python reader" in r.message]
    assert said == [
        f"the Python reader takes {small}: {len(content):,} bytes, under the "
        f"{16 * 1024 * 1024:,} from which libpcap's filter pays",
        f"the Python reader takes {small}: snap length 64, which libpcap would "
        "cut packets to",
        f"the Python reader takes {null}: link type 0, which libpcap's filter "
        "reads otherwise",
        f"the Python reader takes {small}: SMTPSCOPE_NO_LIBPCAP is set",
    ]


def test_bsd_loopback_captures_are_left_to_the_python_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: LINKTYPE_NULL keeps the capturing host's byte order,
    # which libpcap's filter takes from the file and the decoder guesses per
    # frame: converted captures lost every session on the fast path.
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    null = tmp_path / "null.pcap"
    null.write_bytes(pcap(_frames(), linktype=0))
    ng = tmp_path / "null.pcapng"
    ng.write_bytes(ng_shb() + ng_idb(0) + ng_epb(0, 5, b"\2\0\0\0"))
    eth_ng = tmp_path / "eth.pcapng"
    eth_ng.write_bytes(ng_shb() + ng_idb(1) + ng_epb(0, 5, b"x" * 60))
    assert snaplen(null) == 0
    assert snaplen(ng) == 0
    assert snaplen(eth_ng) == 262144


@pytest.mark.parametrize("family", [24, 28, 30])
def test_openbsd_loopback_ipv6_is_read_whatever_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: int
) -> None:
    # Found in review: LINKTYPE_LOOP's filter, compiled on no file, tested
    # for this host's AF_INET6 (10 on Linux) where the file holds a BSD's,
    # and a capture of 16 MiB or more lost every IPv6 session, silently.
    from analysis.tables import read_captures

    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    header = struct.pack(">I", family)
    frames = [
        Frame(1_700_000_000, n * 1000, header + packet)
        for n, packet in enumerate(_atomic_fragment_conversation())
    ]
    path = tmp_path / "loop.pcap"
    path.write_bytes(pcap(frames, linktype=108))
    assert snaplen(path) == 0
    sessions = read_captures([str(path)]).sessions
    assert sessions[["client_ip", "helo"]].values.tolist() == [
        ["2001:db8::1", "atomic.example.com"]
    ]


@pytest.mark.parametrize("link", ["ethernet", "linux cooked", "linux cooked v2"])
def test_ipv6_under_the_ipv4_ethertype_gives_the_same_tables_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    # Found in review: behind a Linux cooked header, the Python reader read
    # the version the packet said, libpcap's filter the one the protocol
    # field named: 8 IPv6 sessions of 16 were lost at 16 MiB and over.
    from analysis.tables import read_captures
    from tests.analysis.same import same_tables

    linktype = _V6_LINKS[link][0]
    named_v4 = {
        "ethernet": lambda p: ethernet(p, ethertype=0x0800),
        "linux cooked": lambda p: _SLL[:-2] + b"\x08\x00" + p,
        "linux cooked v2": lambda p: b"\x08\x00" + _SLL2[2:] + p,
    }[link]
    frames = [
        Frame(1_700_000_000, n * 1000, named_v4(p))
        for n, p in enumerate(_atomic_fragment_conversation())
    ]
    path = tmp_path / "v6-named-v4.pcap"
    path.write_bytes(pcap(frames, linktype=linktype))
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    assert source._fast_path(str(path)) is not None
    fast = read_captures([str(path)])
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    slow = read_captures([str(path)])
    same_tables(fast, slow)
    assert fast.sessions.empty


def test_link_types_without_vlan_support_still_take_the_fast_path(
    tmp_path: Path,
) -> None:
    # Raw IPv4 (101): libpcap refuses "vlan" there; the filter drops it.
    seg = tcp_header(40000, 25) + b"EHLO x\r\n"
    frames = [Frame(1_700_000_000, 0, ipv4("192.0.2.1", "192.0.2.2", seg))]
    path = tmp_path / "raw.pcap"
    path.write_bytes(pcap(frames, linktype=101))
    pipe = source._open_pipe(str(path), SMTP_PORTS, (0, 1), True)
    try:
        with CaptureReader("raw", pipe.stream, owns_stream=True, size=None) as r:
            packets = list(r)
        assert pipe.finish() is None
    finally:
        pipe.close()
    assert [p.linktype for p in packets] == [101]


def _jumbo_conversation() -> list[Frame]:
    """A delivery whose message is one 65,549-byte frame (TSO on loopback)."""
    client, server = ("192.0.2.1", 40000), ("192.0.2.2", 25)
    body = b"Subject: big\r\n\r\n"
    body += b"x" * (65535 - 40 - len(body) - 5) + b"\r\n.\r\n"
    steps = [
        (server, b"220 mx\r\n"),
        (client, b"EHLO x\r\n"),
        (server, b"250 ok\r\n"),
        (client, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
        (server, b"250 ok\r\n250 ok\r\n354 go\r\n"),
        (client, body),
        (server, b"250 ok queued as J1\r\n"),
        (client, b"QUIT\r\n"),
        (server, b"221 bye\r\n"),
    ]
    seqs = {client: 1000, server: 5000}
    frames: list[Frame] = []

    def send(
        src: tuple[str, int], dst: tuple[str, int], flags: int, data: bytes
    ) -> None:
        seg = tcp_header(src[1], dst[1], seqs[src], seqs[dst], flags) + data
        frames.append(
            Frame(1_700_000_000, len(frames), ethernet(ipv4(src[0], dst[0], seg)))
        )
        seqs[src] += len(data) + (1 if flags & 0x03 else 0)

    send(client, server, 0x02, b"")  # SYN
    send(server, client, 0x12, b"")  # SYN-ACK
    send(client, server, 0x10, b"")
    for src, data in steps:
        send(src, server if src == client else client, 0x18, data)
    send(client, server, 0x11, b"")  # FIN from each side
    send(server, client, 0x11, b"")
    return frames


def test_a_record_longer_than_the_snaplen_is_read_whole_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpcap cuts such a record to the snaplen without a word, where the
    # Python reader keeps it: the fast path hands the file over to the
    # Python reader at the first record as long as the snaplen.
    from analysis import pipeline

    content = bytearray(pcap(_jumbo_conversation()))
    struct.pack_into("<I", content, 16, 65535)
    path = tmp_path / "jumbo.pcap"
    path.write_bytes(content)
    assert max(len(f.data) for f in _jumbo_conversation()) == 65549

    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    fast_stats = pipeline.RunStats()
    fast = list(pipeline.analyze([str(path)], stats=fast_stats))
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    slow = list(pipeline.analyze([str(path)]))

    assert fast == slow
    (transaction,) = fast[0].transactions
    assert (transaction.status, transaction.data_code) == ("accepted", 250)
    assert transaction.message_bytes == 65535 - 40 - 3
    assert not fast_stats.errors


@pytest.mark.skipif(not libpcap.available(), reason="libpcap not installed")
def test_a_pipe_lost_to_ctrl_c_does_not_keep_the_process_from_exiting(
    tmp_path: Path,
) -> None:
    # Found in review: a Ctrl-C after libpcap's thread had started but before
    # the reader's try block lost the pipe. libpcap stayed blocked writing
    # to it, and the process hung in exit(), where the C library flushes
    # libpcap's stream, after main had returned 130.
    capture = tmp_path / "big.pcap"
    make = [sys.executable, str(ROOT / "bench" / "make_capture.py")]
    subprocess.run(
        [*make, "--size", "24M", str(capture)], check=True, capture_output=True
    )
    lost = (
        "import sys\n"
        "from analysis import cli\n"
        "from capture import source\n"
        "real = source._open_pipe\n"
        "def lost(*args):\n"
        "    real(*args)  # its thread writes until the pipe is full\n"
        "    raise KeyboardInterrupt\n"
        "source._open_pipe = lost\n"
        f"sys.exit(cli.main(['read', {str(capture)!r}, '-q', '-j', '1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", lost],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 130
    assert "interrupted" in done.stderr


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_fraction_past_a_second_gives_the_same_time_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nano: bool, compressed: bool
) -> None:
    # Found in review: a microsecond pcap whose first SYN's fraction said
    # 5,000,000 (damaged or forged) started its session at 22:13:25 through
    # the Python reader, which adds what is stored, and at 22:13:20.705
    # through libpcap, which scaled it to nanoseconds and wrote that in 32
    # bits into its pipe. Read in the file's own precision, the fraction is
    # handed over as stored. Past 4.29 s of fraction, only that differed.
    from analysis.tables import read_captures
    from tests.analysis.same import same_tables

    unit = 1 if nano else 1000
    packets = _atomic_fragment_conversation()
    frames = [
        Frame(1_700_000_010, n * 1_000_000 // unit, ethernet(p, ethertype=0x86DD))
        for n, p in enumerate(packets)
    ]
    # Four seconds in nanoseconds, as many as the field holds; five in
    # microseconds, past what libpcap's 32 bits of nanoseconds hold.
    late = 4 if nano else 5
    frames[0] = Frame(1_700_000_000, late * 1_000_000_000 // unit, frames[0].data)
    content = pcap(frames, nano=nano)
    path = tmp_path / ("big.pcap.gz" if compressed else "big.pcap")
    path.write_bytes(gzip.compress(content) if compressed else content)
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    monkeypatch.setattr(source, "_INFLATED_MIN_BYTES", 0)
    fast_path = source._fast_path(str(path))
    assert fast_path is not None and fast_path.nano is nano
    fast = read_captures([str(path)])
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    slow = read_captures([str(path)])
    same_tables(fast, slow)
    assert fast.sessions["start"].tolist() == [
        pd.Timestamp(1_700_000_000 + late, unit="s", tz="UTC")
    ]


@pytest.mark.parametrize(
    ("tsresol", "through_libpcap"),
    [
        (6, True),
        (18, True),
        (19, False),
        (0x80 | 34, True),
        (0x80 | 35, False),
        (0x80 | 40, False),
    ],
    ids=["10^-6", "10^-18", "10^-19", "2^-34", "2^-35", "2^-40"],
)
def test_a_pcapng_time_resolution_libpcap_reads_otherwise_takes_the_python_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tsresol: int, through_libpcap: bool
) -> None:
    # Found in review: a pcapng capture of 16 MiB or more whose interface
    # counted time in 2^-40 s started its session at 00:25:54.001 through
    # libpcap (which multiplies the ticks of a second by 10^9 in 64 bits,
    # overflowing from 2^-35 s on) and at 00:25:54.554 through the Python
    # reader; one of 10^-19 s was read whole through libpcap and refused as
    # damage by the Python reader. The exit status and the tables depended
    # on the file's size.
    from analysis.tables import read_captures
    from tests.analysis.same import same_tables

    units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    # From 1 s after the epoch, a packet every 10 ms: 64 bits of ticks of
    # 10^-19 s hold 1.8 s.
    epbs = [
        ng_epb(0, units + n * (units // 100), ethernet(p, ethertype=0x86DD))
        for n, p in enumerate(_atomic_fragment_conversation())
    ]
    idb = ng_idb(1, tsresol=tsresol)
    path = tmp_path / "resolution.pcapng"
    path.write_bytes(ng_shb() + idb + b"".join(epbs))
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    assert (source._fast_path(str(path)) is not None) is through_libpcap
    fast = read_captures([str(path)])
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    slow = read_captures([str(path)])
    same_tables(fast, slow)
    assert [str(e) for e in fast.stats.errors] == [str(e) for e in slow.stats.errors]
    if tsresol == 19:
        assert [str(e) for e in fast.stats.errors] == [
            f"{path}: damaged at byte {len(ng_shb())}: interface time resolution "
            "of 10^-19 s, finer than any clock"
        ]
        assert fast.sessions.empty
        return
    assert fast.stats.errors == []
    # The last packet's ticks in nanoseconds, rounded down as both read them.
    end = (units + 18 * (units // 100)) * 10**9 // units
    sessions = fast.sessions[["start", "end", "helo", "client_packets", "close"]]
    assert sessions.values.tolist() == [
        [
            pd.Timestamp(1, unit="s", tz="UTC"),
            pd.Timestamp(end, unit="ns", tz="UTC"),
            "atomic.example.com",
            10,
            "fin",
        ]
    ]
    mails = fast.transactions[["mail_from", "rcpt_to", "status", "queue_id"]]
    assert mails.values.tolist() == [
        ["evader@example.net", ["victim@example.org"], "accepted", "F1"]
    ]


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_the_first_segment_reader_reads_times_unsigned_as_the_others(
    tmp_path: Path, big: bool, nano: bool
) -> None:
    # Found in review: libpcap widens the 32-bit fields of a pcap file in
    # this host's byte order as signed, and FilteredReader (which a -j
    # worker reads each later capture's first segment with) took a time
    # after 2038, or a fraction of 2**31 and more, as negative.
    times = [(1_700_000_000, 5), (2**31 + 5, 7), (2**32 - 1, 2**31), (9, 2**32 - 1)]
    frames = [
        Frame(sec, frac, ethernet(ipv4("192.0.2.1", "192.0.2.2", tcp_header(4000, 25))))
        for sec, frac in times
    ]
    path = tmp_path / "times.pcap"
    path.write_bytes(pcap(frames, big=big, nano=nano))
    with open_capture(str(path)) as reader:
        expected = [packet.ts for packet in reader]
    unit = 1 if nano else 1000
    assert expected == [sec * 10**9 + frac * unit for sec, frac in times]
    with libpcap.open_filtered(str(path), "tcp", nano=nano) as fast:
        assert [packet.ts for packet in fast] == expected


def test_smaller_captures_take_the_fast_path_in_a_large_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A capture rotated into small files: one of them alone is read by the
    # Python reader, which counts every packet; many of them together are
    # read through libpcap from LARGE_RUN_MIN_BYTES, and the tables are the
    # same. A compressed one keeps its own least size (found measuring: a
    # process to inflate each of 537 small files took 45 s, not 10).
    from analysis.tables import read_captures
    from tests.analysis.same import same_tables

    auth = ROOT / "pcaps" / "auth.pcap"
    size = auth.stat().st_size
    parts = []
    for name in ("a.pcap", "b.pcap"):
        part = tmp_path / name
        part.write_bytes(auth.read_bytes())
        parts.append(str(part))
    packed = tmp_path / "c.pcap.gz"
    packed.write_bytes(gzip.compress(auth.read_bytes()))
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 2 * size)
    monkeypatch.setattr(source, "_INFLATED_MIN_BYTES", 2 * packed.stat().st_size)
    monkeypatch.setattr(source, "LARGE_RUN_BYTES", 2 * size)
    monkeypatch.setattr(source, "LARGE_RUN_MIN_BYTES", packed.stat().st_size)

    assert not source.large_run(size) and source.large_run(2 * size)
    assert not source.large_run(None)  # standard input: not known
    assert source._fast_path(parts[0]) is None
    assert source._fast_path(parts[0], large=True) is not None
    assert source._fast_path(str(packed)) is None
    assert source._fast_path(str(packed), large=True) is None
    monkeypatch.setattr(source, "_INFLATED_MIN_BYTES", packed.stat().st_size)
    fast = source._fast_path(str(packed), large=True)
    assert fast is not None and fast.inflate

    alone = read_captures(parts[:1])
    assert not alone.stats.filtered
    together = read_captures(parts)
    assert together.stats.filtered
    assert together.stats.smtp_packets == 2 * alone.stats.smtp_packets
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    same_tables(together, read_captures(parts))


def test_a_filter_is_compiled_once_for_captures_read_one_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A capture rotated into 500 files compiled a -j worker's filter a
    # thousand times, half a millisecond each. Compiled once per link type,
    # snaplen and expression now, refusals included, with the same packets.
    calls: list[tuple[int, int, str]] = []
    real = libpcap._compile

    def counted(lib: object, linktype: int, snaplen: int, expression: str) -> object:
        calls.append((linktype, snaplen, expression))
        return real(lib, linktype, snaplen, expression)

    monkeypatch.setattr(libpcap, "_compile", counted)
    monkeypatch.setattr(libpcap, "_COMPILED", {})
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap(_frames()))
    expression = libpcap.smtp_filter(SMTP_PORTS, (1, 2))
    kept = []
    for _ in range(3):
        with libpcap.open_filtered(str(path), expression) as reader:
            kept.append([packet.data for packet in reader])
    assert calls == [(1, 262144, expression)]  # craft.pcap's snaplen
    assert kept[0] == kept[1] == kept[2] and kept[0]
    for _ in range(2):
        with pytest.raises(libpcap.FilterError, match="syntax error"):
            libpcap.open_filtered(str(path), "tcp port")
    assert len(calls) == 2


def test_a_user_filter_keeps_its_meaning_beside_the_smtp_filter(
    tmp_path: Path,
) -> None:
    # Found in a new user's check: live -f 'tcp port 587' captured nothing
    # and check -i -f said OK for no sessions. The SMTP filter's ``vlan``
    # terms move libpcap's offsets for what follows them, so the user's
    # expression, placed after, was read inside a tag on every frame.
    from capture.live import capture_filter

    def tcp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
        return ipv4("192.0.2.1", "198.51.100.2", tcp_header(sport, dport) + payload)

    frames = [
        ethernet(tcp(40000, 587)),  # 0: untagged, submission
        ethernet(tcp(40001, 25)),  # 1: untagged, port 25
        ethernet(tcp(40002, 587), vlans=(0x8100,)),  # 2: VLAN 100, submission
        ethernet(tcp(40003, 80)),  # 3: not SMTP
    ]
    path = tmp_path / "mixed.pcap"
    path.write_bytes(pcap([Frame(1_700_000_000, i, f) for i, f in enumerate(frames)]))

    def kept(user_filter: str | None) -> list[int]:
        expression = capture_filter(SMTP_PORTS, user_filter)
        with libpcap.open_filtered(str(path), expression, nano=False) as reader:
            return [packet.ts % 1_000_000_000 // 1000 for packet in reader]

    assert kept(None) == [0, 1, 2]
    # The user's expression means what it means to tcpdump: "tcp port 587"
    # is not looked for inside a tag; "vlan 100" moves the SMTP part into
    # the tag.
    assert kept("tcp port 587") == [0]
    assert kept("tcp port 587 or (vlan and tcp port 587)") == [0, 2]
    assert kept("tcp port 80") == []  # SMTP ports and the user's both
    assert kept("vlan 100") == [2]
    assert kept("vlan 200") == []
