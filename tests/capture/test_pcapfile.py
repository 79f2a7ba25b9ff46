"""capture.pcapfile: every container variant, built by hand, and damage."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.pcapfile import (
    CaptureError,
    FileHead,
    RawPacket,
    file_head,
    open_capture,
)
from tests.capture.craft import (
    Frame,
    ng_block,
    ng_epb,
    ng_idb,
    ng_option,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap,
)

FRAMES = [
    Frame(1_600_000_000, 123_456, b"first packet"),
    Frame(1_600_000_001, 999_999, b"second", wire_len=1500),
    Frame(1_600_000_002, 0, b""),
]


def read_all(path: Path | str) -> list[RawPacket]:
    with open_capture(str(path)) as reader:
        return list(reader)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# -- classic pcap -------------------------------------------------------


@pytest.mark.parametrize("big", [False, True], ids=["little", "big"])
def test_pcap_microseconds(tmp_path: Path, big: bool) -> None:
    path = write(tmp_path, "us.pcap", pcap(FRAMES, big=big, linktype=1))
    packets = read_all(path)
    assert packets == [
        RawPacket(1_600_000_000_123_456_000, 1, b"first packet", 12, 24),
        RawPacket(1_600_000_001_999_999_000, 1, b"second", 1500, 24 + 16 + 12),
        RawPacket(1_600_000_002_000_000_000, 1, b"", 0, 24 + 16 + 12 + 16 + 6),
    ]


@pytest.mark.parametrize("big", [False, True], ids=["little", "big"])
def test_pcap_nanoseconds(tmp_path: Path, big: bool) -> None:
    frames = [Frame(1_700_000_000, 123_456_789, b"x"), Frame(5, 999_999_999, b"yz")]
    path = write(tmp_path, "ns.pcap", pcap(frames, big=big, nano=True, linktype=101))
    packets = read_all(path)
    assert [(p.ts, p.linktype, p.data) for p in packets] == [
        (1_700_000_000_123_456_789, 101, b"x"),
        (5_999_999_999, 101, b"yz"),
    ]


def test_pcap_link_type_field_keeps_only_the_link_type(tmp_path: Path) -> None:
    # draft-ietf-opsawg-pcap 4: FCS length lives in the top bits.
    content = bytearray(pcap(FRAMES[:1], linktype=1))
    struct.pack_into("<I", content, 20, (4 << 29) | (1 << 28) | 1)
    assert read_all(write(tmp_path, "fcs.pcap", bytes(content)))[0].linktype == 1


def test_counters(tmp_path: Path) -> None:
    content = pcap(FRAMES)
    with open_capture(str(write(tmp_path, "c.pcap", content))) as reader:
        assert reader.size == len(content)
        packets = list(reader)
        assert reader.packets_read == len(packets) == 3
        assert reader.bytes_read == reader.raw_bytes_read == len(content)
        assert reader.format == "pcap"
        assert not reader.compressed


def test_many_chunks(tmp_path: Path) -> None:
    # About 3.5 MiB, so records straddle the 1 MiB read chunks.
    frames = [
        Frame(i, i % 1_000_000, bytes([i % 251]) * (500 + i * 7 % 1500))
        for i in range(3500)
    ]
    content = pcap(frames)
    packets = read_all(write(tmp_path, "big.pcap", content))
    assert len(packets) == len(frames)
    offset = 24
    for frame, packet in zip(frames, packets, strict=True):
        assert packet.data == frame.data
        assert packet.offset == offset
        assert content[offset + 16 : offset + 16 + len(frame.data)] == frame.data
        offset += 16 + len(frame.data)


def test_pcap_with_kuznetzov_record_headers(tmp_path: Path) -> None:
    # Alexey Kuznetzov's patched libpcap: 8 more bytes (interface index,
    # protocol, packet type, padding) after each record's wire length.
    head = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 262144, 1)
    records = [
        struct.pack("<IIII", 7, 1, 3, 60) + b"\xee" * 8 + b"abc",
        struct.pack("<IIII", 8, 2, 2, 2) + b"\xee" * 8 + b"de",
    ]
    packets = read_all(write(tmp_path, "ss.pcap", head + b"".join(records)))
    assert packets == [
        RawPacket(7_000_001_000, 1, b"abc", 60, 24),
        RawPacket(8_000_002_000, 1, b"de", 2, 24 + 24 + 3),
    ]


# -- pcapng -------------------------------------------------------------


def two_sections() -> bytes:
    """Little-endian section with two interfaces, then a big-endian one."""
    first = (
        ng_shb("<")
        + ng_idb(1, "<")  # default resolution: microseconds
        + ng_idb(101, "<", tsresol=9)  # nanoseconds
        + ng_block(4, b"\0\0\0\0")  # name resolution block: skipped
        + ng_epb(0, 1_600_000_000_123_456, b"eth frame")
        + ng_epb(1, 1_600_000_000_123_456_789, b"raw ip", wire=100)
        + ng_block(0x40000BAD, b"custom block, skipped")
        + ng_spb(b"simple")
    )
    second = (
        ng_shb(">")
        + ng_idb(113, ">", tsresol=0x80 | 10)  # 2^-10 s
        + ng_pb(0, 3 * 1024 + 512, b"old block", ">")
    )
    return first + second


def test_pcapng_sections_interfaces_resolutions(tmp_path: Path) -> None:
    packets = read_all(write(tmp_path, "two.pcapng", two_sections()))
    assert [(p.ts, p.linktype, p.data, p.wire_len) for p in packets] == [
        (1_600_000_000_123_456_000, 1, b"eth frame", 9),
        (1_600_000_000_123_456_789, 101, b"raw ip", 100),
        # A simple packet block has no time: it keeps the previous one's.
        (1_600_000_000_123_456_789, 1, b"simple", 6),
        # 3.5 seconds in units of 1/1024 s.
        (3_500_000_000, 113, b"old block", 9),
    ]
    content = two_sections()
    for packet in packets:
        assert packet.data in content[packet.offset : packet.offset + 200]


def test_many_interfaces_in_one_section_are_read(tmp_path: Path) -> None:
    # Found in review: 70,000 interfaces made a small file "damaged" that
    # libpcap, which reads files over 16 MiB, read whole. Alike ones share
    # one record.
    from capture import pcapfile

    idbs = ng_idb(1, "<") * 69_999 + ng_idb(101, "<", tsresol=9)
    content = (
        ng_shb("<")
        + idbs
        + ng_epb(69_999, 1_600_000_000_123_456_789, b"raw ip")
        + ng_epb(3, 1_600_000_000_123_456, b"eth frame")
    )
    packets = read_all(write(tmp_path, "many.pcapng", content))
    assert [(p.ts, p.linktype, p.data) for p in packets] == [
        (1_600_000_000_123_456_789, 101, b"raw ip"),
        (1_600_000_000_123_456_000, 1, b"eth frame"),
    ]
    assert pcapfile.MAX_INTERFACES == 1 << 20


def test_a_simple_packet_block_keeps_the_time_across_sections(tmp_path: Path) -> None:
    # Found in review: a new section started its clock at 0, so a Simple
    # Packet Block right after it was stamped 1970.
    content = (
        ng_shb()
        + ng_idb(1)
        + ng_epb(0, 1_700_000_000_000_000, b"timed")
        + ng_shb(">")
        + ng_idb(1, ">")
        + ng_spb(b"untimed", ">")
    )
    packets = read_all(write(tmp_path, "spb.pcapng", content))
    assert [(p.ts, p.data) for p in packets] == [
        (1_700_000_000_000_000_000, b"timed"),
        (1_700_000_000_000_000_000, b"untimed"),
    ]


@pytest.mark.parametrize(("tsresol", "shown"), [(0x7F, "10^-127"), (0xFF, "2^-127")])
def test_a_time_resolution_finer_than_any_clock_is_damage(
    tmp_path: Path, tsresol: int, shown: str
) -> None:
    # 2^64 ticks of 10^-127 s are no time at all: every packet would be
    # stamped 1970, and its sessions split at random.
    content = ng_shb() + ng_idb(1, tsresol=tsresol) + ng_epb(0, 5, b"a")
    path = write(tmp_path, "res.pcapng", content)
    with pytest.raises(CaptureError) as raised:
        read_all(path)
    assert str(raised.value) == (
        f"{path}: damaged at byte {len(ng_shb())}: interface time resolution "
        f"of {shown} s, finer than any clock"
    )


def test_file_head_reads_the_first_interface_time_resolution() -> None:
    # What libpcap's path needs to know before it takes a pcapng file
    # (capture.source._resolution_read_otherwise).
    assert file_head(ng_shb() + ng_idb(1, tsresol=0x80 | 40)) == FileHead(
        "pcapng", 0, 1, tsresol=0x80 | 40
    )
    assert file_head(ng_shb() + ng_idb(1)) == FileHead("pcapng", 0, 1)
    # Cut within the interface block: its resolution is not known.
    assert file_head((ng_shb() + ng_idb(1, tsresol=9))[:-4]) == FileHead("pcapng", 0, 1)
    assert file_head(pcap(FRAMES[:1], linktype=1)) == FileHead(
        "pcap", 262144, 1, nano=False
    )


def test_pcapng_tsoffset(tmp_path: Path) -> None:
    idb_body = struct.pack("<HHI", 1, 0, 0) + ng_option(14, struct.pack("<q", 100))
    content = ng_shb() + ng_block(1, idb_body) + ng_epb(0, 5, b"a")
    (packet,) = read_all(write(tmp_path, "off.pcapng", content))
    assert packet.ts == 100_000_005_000


def test_pcapng_byte_offsets(tmp_path: Path) -> None:
    shb, idb = ng_shb(), ng_idb(1)
    epb = ng_epb(0, 1, b"abc")
    content = shb + idb + epb + epb
    packets = read_all(write(tmp_path, "o.pcapng", content))
    assert [p.offset for p in packets] == [
        len(shb) + len(idb),
        len(shb) + len(idb) + len(epb),
    ]


# -- compression and standard input -------------------------------------


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = write(tmp_path, "looks-plain.pcap", gzip.compress(pcap(FRAMES)))
    with open_capture(str(path)) as reader:
        packets = list(reader)
        assert reader.compressed
        assert reader.bytes_read == len(pcap(FRAMES))
    assert [p.data for p in packets] == [f.data for f in FRAMES]


def test_gzip_pcapng(tmp_path: Path) -> None:
    path = write(tmp_path, "x.pcapng.gz", gzip.compress(two_sections()))
    assert len(read_all(path)) == 4


def test_gzip_several_members(tmp_path: Path) -> None:
    content = pcap(FRAMES)
    joined = gzip.compress(content[:30]) + gzip.compress(content[30:])
    packets = read_all(write(tmp_path, "m.pcap.gz", joined))
    assert [p.data for p in packets] == [f.data for f in FRAMES]


def stdin_with(monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(content)))


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_stdin(monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    content = pcap(FRAMES)
    stdin_with(monkeypatch, gzip.compress(content) if compress else content)
    with open_capture("-") as reader:
        assert reader.size is None
        assert [p.data for p in reader] == [f.data for f in FRAMES]


def test_stdin_error_names_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin_with(monkeypatch, b"hello")
    with pytest.raises(CaptureError) as caught, open_capture("-") as reader:
        list(reader)
    assert str(caught.value) == "<stdin>: not a pcap or pcapng file"


# -- damage ---------------------------------------------------------------


def collect(path: Path) -> tuple[list[RawPacket], CaptureError | None]:
    packets: list[RawPacket] = []
    try:
        with open_capture(str(path)) as reader:
            packets.extend(reader)
    except CaptureError as error:
        return packets, error
    return packets, None


def test_truncated_mid_record(tmp_path: Path) -> None:
    content = pcap(FRAMES)
    third_record = 24 + 16 + 12 + 16 + 6
    # Cut inside the second record's packet bytes.
    path = write(tmp_path, "cut.pcap", content[: 24 + 16 + 12 + 16 + 3])
    packets, error = collect(path)
    assert [p.data for p in packets] == [b"first packet"]
    assert error is not None
    assert error.offset == 24 + 16 + 12
    assert error.path == str(path)
    assert "record truncated" in error.message
    # Cut inside the third record's header.
    packets, error = collect(write(tmp_path, "cut2.pcap", content[: third_record + 5]))
    assert len(packets) == 2
    assert error is not None and error.offset == third_record
    assert error.message == "record header truncated at 5 of 16 bytes"


def test_absurd_record_length(tmp_path: Path) -> None:
    content = bytearray(pcap(FRAMES))
    struct.pack_into("<I", content, 24 + 16 + 12 + 8, 0xFFFFFFFF)
    path = write(tmp_path, "capture.pcap", bytes(content))
    packets, error = collect(path)
    assert len(packets) == 1
    assert error is not None
    assert str(error) == (
        f"{path}: damaged at byte 52: record length 4294967295 exceeds 262144"
    )


def test_damage_in_a_gzip_capture_counts_its_decompressed_bytes(
    tmp_path: Path,
) -> None:
    # The offset is one in what the file decompresses to, which may lie past
    # the end of the file as stored: the message says which it is.
    content = bytearray(pcap(FRAMES))
    struct.pack_into("<I", content, 24 + 16 + 12 + 8, 0xFFFFFFFF)
    packed = gzip.compress(bytes(content))
    path = write(tmp_path, "capture.pcap.gz", packed)
    packets, error = collect(path)
    assert len(packets) == 1
    assert error is not None and error.inflated
    assert str(error) == (
        f"{path}: damaged at byte 52 of its decompressed data: "
        "record length 4294967295 exceeds 262144"
    )
    # Cut short, the gzip stream itself is the damage.
    path = write(tmp_path, "cut.pcap.gz", gzip.compress(pcap(FRAMES))[:-8])
    _, error = collect(path)
    assert error is not None
    assert str(error) == (
        f"{path}: damaged at byte {len(pcap(FRAMES))} of its decompressed data: "
        "gzip data truncated (trailer missing)"
    )


def test_a_capture_error_keeps_its_kind_through_pickling() -> None:
    # A -j worker hands its errors to the parent pickled.
    for error in (
        CaptureError("a.pcap.gz", 52, "cut", inflated=True),
        CaptureError("b.pcap", 0, "not a capture", damaged=False),
    ):
        again = pickle.loads(pickle.dumps(error))
        assert (again.damaged, again.inflated, str(again)) == (
            error.damaged,
            error.inflated,
            str(error),
        )


def test_garbage(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", b"Dear diary, today I captured nothing.")
    packets, error = collect(path)
    assert packets == []
    assert error is not None
    assert error.offset == 0
    assert str(error) == f"{path}: not a pcap or pcapng file"


@pytest.mark.parametrize(
    ("magic", "message"),
    [
        (
            b"\x28\xb5\x2f\xfd",
            "zstd-compressed, {} (unpack it first: zstd -dc writes it out)",
        ),
        (
            b"\xfd\x37\x7a\x58",
            "xz-compressed, {} (unpack it first: xz -dc writes it out)",
        ),
        (
            b"\x42\x5a\x68",
            "bzip2-compressed, {} (unpack it first: bzip2 -dc writes it out)",
        ),
        (
            b"\x04\x22\x4d\x18",
            "lz4-compressed, {} (unpack it first: lz4 -dc writes it out)",
        ),
        (
            b"\x50\x4b\x03\x04",
            "a zip archive, {} (unpack it first: unzip -p writes it out)",
        ),
    ],
)
def test_other_compression_is_named(tmp_path: Path, magic: bytes, message: str) -> None:
    packets, error = collect(write(tmp_path, "a.cmp", magic + b"\0" * 20))
    assert packets == []
    assert error is not None
    assert error.message == message.format("not a pcap or pcapng file")


def test_empty_file(tmp_path: Path) -> None:
    packets, error = collect(write(tmp_path, "empty.pcap", b""))
    assert packets == [] and error is not None
    assert error.offset == 0 and "empty" in error.message


def test_header_only_is_a_valid_empty_capture(tmp_path: Path) -> None:
    assert collect(write(tmp_path, "h.pcap", pcap([]))) == ([], None)


def test_short_file_header(tmp_path: Path) -> None:
    packets, error = collect(write(tmp_path, "h.pcap", pcap([])[:10]))
    assert packets == []
    assert error is not None and error.offset == 0 and error.damaged


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as caught:
        open_capture(str(tmp_path / "nope.pcap"))
    assert "cannot open" in str(caught.value)


def test_gzip_crc_error_after_all_packets(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(pcap(FRAMES)))
    compressed[-8] ^= 0xFF  # the CRC32 in the trailer (RFC 1952 2.3.1)
    packets, error = collect(write(tmp_path, "crc.pcap.gz", bytes(compressed)))
    assert len(packets) == 3
    assert error is not None
    assert error.offset == len(pcap(FRAMES))
    assert "gzip" in error.message


def test_gzip_truncated(tmp_path: Path) -> None:
    content = pcap(FRAMES * 50)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    compressed = compressor.compress(content) + compressor.flush()
    path = write(tmp_path, "t.pcap.gz", compressed[: len(compressed) // 2])
    packets, error = collect(path)
    assert error is not None and "gzip data truncated" in error.message
    assert 0 < len(packets) < 150
    assert error.offset == packets[-1].offset + 16 + len(packets[-1].data)


@pytest.mark.parametrize(
    ("stray", "said"),
    [
        (b"x", "unexpected bytes after the gzip data"),
        (b"xx", "unexpected bytes after the gzip data"),
        (b"123456789", "unexpected bytes after the gzip data"),
        (b"\0\0x", "unexpected bytes after the gzip data"),
        (b"y" * 80, "unexpected bytes after the gzip data"),
        # The start of another member, cut short: a truncated header.
        (b"\x1f", "gzip header truncated"),
        (b"\x1f\x8b\x08", "gzip header truncated"),
    ],
)
def test_stray_bytes_after_the_gzip_data(
    tmp_path: Path, stray: bytes, said: str
) -> None:
    # Found in review: up to 9 stray bytes were "gzip header truncated",
    # which 80 of them were not.
    path = write(tmp_path, "s.pcap.gz", gzip.compress(pcap(FRAMES)) + stray)
    packets, error = collect(path)
    assert len(packets) == 3
    assert str(error) == (
        f"{path}: damaged at byte {len(pcap(FRAMES))} of its decompressed data: {said}"
    )


def test_gzip_inside_gzip_is_named(tmp_path: Path) -> None:
    # Found in review: a .pcap.gz gzipped again was "not a pcap or pcapng
    # file", as if damaged.
    twice = gzip.compress(gzip.compress(pcap(FRAMES)))
    packets, error = collect(write(tmp_path, "twice.pcap.gz", twice))
    assert packets == []
    assert error is not None and not error.damaged
    assert str(error) == (
        f"{tmp_path / 'twice.pcap.gz'}: compressed twice: gzip inside gzip, not a "
        "pcap or pcapng file (gunzip it once and read what it gives)"
    )
    xz = gzip.compress(b"\xfd7zXZ\0" + b"\0" * 20)
    _, error = collect(write(tmp_path, "xz.gz", xz))
    assert str(error) == (
        f"{tmp_path / 'xz.gz'}: xz-compressed inside gzip, not a pcap or pcapng file"
    )


def _gzip_damaged_after(content: bytes) -> bytes:
    """A gzip member whose deflate data holds ``content`` whole, flushed to
    a byte boundary, then a block of the reserved type 3 (RFC 1951 3.2.3),
    which zlib refuses."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(content) + compressor.flush(zlib.Z_FULL_FLUSH)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + deflated + b"\xff" * 16


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_gzip_damage_keeps_everything_inflated_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # zlib hands on nothing of a call that fails: a whole chunk, here all
    # 120 packets, was lost (a capture piped in, read in smaller pieces,
    # lost less). Every packet before the damage is kept now.
    frames = [Frame(1_600_000_000 + n, n, bytes([n]) * 100) for n in range(120)]
    content = pcap(frames)
    damaged = _gzip_damaged_after(content)
    if how == "file":
        packets, error = collect(write(tmp_path, "d.pcap.gz", damaged))
    else:
        stdin_with(monkeypatch, damaged)
        packets, error = [], None
        try:
            with open_capture("-") as reader:
                packets.extend(reader)
        except CaptureError as caught:
            error = caught
    assert [p.data for p in packets] == [f.data for f in frames]
    assert error is not None and error.offset == len(content)
    assert (
        "gzip data damaged" in error.message and "invalid block type" in error.message
    )


def test_gzip_damage_after_more_than_a_chunk(tmp_path: Path) -> None:
    # Before the damage, more than a chunk (1 MiB) from one read: handed on
    # in chunks, then the damage.
    frames = [Frame(1_600_000_000, n, bytes([n % 256]) * 1400) for n in range(2000)]
    content = pcap(frames)
    packets, error = collect(
        write(tmp_path, "big.pcap.gz", _gzip_damaged_after(content))
    )
    assert len(packets) == 2000
    assert error is not None and error.offset == len(content)


def test_pcapng_bad_block_length(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, b"ok")
    bad = bytearray(ng_epb(0, 2, b"bad"))
    struct.pack_into("<I", bad, 4, 13)
    packets, error = collect(write(tmp_path, "b.pcapng", good + bytes(bad)))
    assert [p.data for p in packets] == [b"ok"]
    assert error is not None and error.offset == len(good)
    assert error.message == "bad block length 13"


def test_pcapng_trailer_mismatch(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1)
    bad = bytearray(ng_epb(0, 2, b"bad"))
    struct.pack_into("<I", bad, len(bad) - 4, 8)
    packets, error = collect(write(tmp_path, "t.pcapng", good + bytes(bad)))
    assert packets == [] and error is not None and error.offset == len(good)


def test_pcapng_caplen_bigger_than_block(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1)
    bad = bytearray(ng_epb(0, 2, b"abcd"))
    struct.pack_into("<I", bad, 20, 400)
    packets, error = collect(write(tmp_path, "c.pcapng", good + bytes(bad)))
    assert packets == []
    assert error is not None and "does not fit" in error.message


def test_pcapng_undefined_interface(tmp_path: Path) -> None:
    content = ng_shb() + ng_idb(1) + ng_epb(3, 2, b"abcd")
    packets, error = collect(write(tmp_path, "i.pcapng", content))
    assert packets == []
    assert error is not None and "interface 3" in error.message


# -- any damage: packets first, then one CaptureError ---------------------


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(pcap(FRAMES))))
def test_any_truncation_of_pcap(cut: int) -> None:
    content = pcap(FRAMES)
    ends = [24, 24 + 16 + 12, 24 + 16 + 12 + 16 + 6, len(content)]
    stream = io.BytesIO(content[:cut])
    packets, error = _read_stream(stream)
    whole = [end for end in ends[1:] if end <= cut]
    assert len(packets) == len(whole)
    if cut in ends:
        assert error is None
    else:
        assert error is not None
        assert error.offset == (0 if cut < 24 else max(e for e in ends if e <= cut))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), flips=st.lists(st.integers(0, 10_000), max_size=8))
def test_fuzz_never_raises_anything_else(data: bytes, flips: list[int]) -> None:
    for base in (pcap(FRAMES), two_sections()):
        content = bytearray(base + data)
        for flip in flips:
            content[flip % len(content)] ^= 0x5A
        _read_stream(io.BytesIO(bytes(content)))
        _read_stream(io.BytesIO(gzip.compress(bytes(content))[: 20 + len(data)]))


# -- batches: the same packets and the same damage as iterating ----------


Seen = list[tuple[int, int, bytes]]


def _batched(content: bytes) -> tuple[Seen, int, CaptureError | None]:
    from capture.pcapfile import CaptureReader

    seen: Seen = []
    reader = CaptureReader("mem", io.BytesIO(content), owns_stream=True, size=None)
    try:
        with reader:
            for linktype, data, records in reader.batches():
                seen += [(ts, linktype, data[a:b]) for ts, a, b in records]
    except CaptureError as error:
        return seen, reader.packets_read, error
    return seen, reader.packets_read, None


def _iterated(content: bytes) -> tuple[Seen, CaptureError | None]:
    packets, error = _read_stream(io.BytesIO(content))
    return [(p.ts, p.linktype, p.data) for p in packets], error


def _same_as_iterating(content: bytes) -> None:
    seen, count, error = _batched(content)
    packets, expected = _iterated(content)
    assert seen == packets
    assert count == len(packets)
    assert (error is None) == (expected is None)
    if error is not None and expected is not None:
        assert (error.offset, str(error)) == (expected.offset, str(expected))


def test_batches_across_chunks() -> None:
    frames = [
        Frame(i, i % 1_000_000, bytes([i % 251]) * (500 + i * 7 % 1500))
        for i in range(3500)
    ]
    content = pcap(frames, nano=True)
    seen, count, error = _batched(content)
    assert error is None and count == len(frames)
    assert [data for _, _, data in seen] == [f.data for f in frames]
    _same_as_iterating(content)
    # Cuts past the first chunk, in record headers and in packet bytes.
    for cut in (1_048_580, 1_048_742, 2_097_100, 3_000_001):
        _same_as_iterating(content[:cut])


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(pcap(FRAMES))))
def test_batches_any_truncation(cut: int) -> None:
    _same_as_iterating(pcap(FRAMES)[:cut])
    _same_as_iterating(pcap(FRAMES, big=True)[:cut])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), flips=st.lists(st.integers(0, 10_000), max_size=8))
def test_batches_fuzz(data: bytes, flips: list[int]) -> None:
    for base in (pcap(FRAMES), two_sections()):
        content = bytearray(base + data)
        for flip in flips:
            content[flip % len(content)] ^= 0x5A
        _same_as_iterating(bytes(content))
        _same_as_iterating(gzip.compress(bytes(content))[: 20 + len(data)])


def _read_stream(stream: io.BytesIO) -> tuple[list[RawPacket], CaptureError | None]:
    from capture.pcapfile import CaptureReader

    packets: list[RawPacket] = []
    reader = CaptureReader("mem", stream, owns_stream=True, size=None)
    try:
        with reader:
            packets.extend(reader)
    except CaptureError as error:
        return packets, error
    return packets, None


def test_pcapng_many_chunks(tmp_path: Path) -> None:
    # About 3.5 MiB of blocks, so blocks straddle the 1 MiB read chunks.
    datas = [bytes([i % 251]) * (500 + i * 7 % 1500) for i in range(3500)]
    content = (
        ng_shb() + ng_idb(1) + b"".join(ng_epb(0, i, d) for i, d in enumerate(datas))
    )
    with open_capture(str(write(tmp_path, "big.pcapng", content))) as reader:
        packets = list(reader)
        assert reader.packets_read == len(datas)
        assert reader.format == "pcapng"
    assert [p.data for p in packets] == datas
    assert [p.ts for p in packets] == [i * 1000 for i in range(len(datas))]


def test_pcapng_interface_flood_is_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap is 1,048,576 (20 MB of interface blocks): shown with 4.
    from capture import pcapfile

    monkeypatch.setattr(pcapfile, "MAX_INTERFACES", 4)
    content = ng_shb() + ng_idb(1) * 5
    packets, error = collect(write(tmp_path, "flood.pcapng", content))
    assert packets == []
    assert error is not None and "more than 4 interfaces" in error.message


def test_counter_is_exact_after_a_damaged_end(tmp_path: Path) -> None:
    content = pcap(FRAMES)
    with open_capture(str(write(tmp_path, "d.pcap", content[:-3]))) as reader:
        with pytest.raises(CaptureError):
            list(reader)
        assert reader.packets_read == 2


def test_pcapng_timestamp_beyond_64_bit_nanoseconds_is_damage(tmp_path: Path) -> None:
    # An EPB whose tick count, in nanoseconds, does not fit 64 bits (past
    # 2262): reported as damage at its offset, earlier packets kept.
    good = ng_epb(0, 1_700_000_000_000_000, b"first")
    bad = ng_epb(0, 2**64 - 1, b"second")
    head = ng_shb() + ng_idb(1)
    path = write(tmp_path, "ts.pcapng", head + good + bad)
    packets, error = collect(path)
    assert [p.data for p in packets] == [b"first"]
    assert error is not None and error.offset == len(head) + len(good)
    assert "out of range" in error.message


def test_a_pipe_is_read_as_packets_arrive() -> None:
    # "tcpdump -U -w - | smtpscope read -": the writer keeps the pipe open;
    # the packets already written must come out without waiting for more.
    import os
    import threading

    from capture.pcapfile import CaptureReader

    read_fd, write_fd = os.pipe()
    os.write(write_fd, pcap(FRAMES))
    got: list[bytes] = []

    def consume() -> None:
        stream = os.fdopen(read_fd, "rb")
        reader = CaptureReader("-", stream, owns_stream=True, size=None)
        for packet in reader:
            got.append(packet.data)
            if len(got) == len(FRAMES):
                return

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout=5)
    os.close(write_fd)
    assert len(got) == len(FRAMES)
