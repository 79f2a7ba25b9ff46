"""Streaming reader for pcap and pcapng captures, plain or gzip-compressed.

``open_capture`` turns a capture file (or ``-`` for standard input) into
``RawPacket`` records, in file order, without scapy and in bounded memory:
the file is read in 1 MiB chunks and only the records not yet yielded are
held, so memory stays within a few chunks plus the largest block (16 MiB)
whatever the file size.

Invariants:
- every packet stored before the first damage is yielded; the damage then
  surfaces as one ``CaptureError`` naming the byte offset of the record that
  could not be read, and no other exception escapes from bad input;
- offsets count bytes of the decompressed capture;
- timestamps are integer nanoseconds since the Unix epoch (UTC).

Formats follow draft-ietf-opsawg-pcap (classic pcap) and
draft-ietf-opsawg-pcapng (pcapng); gzip follows RFC 1952.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import sys
import zlib
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, BinaryIO, Final, NamedTuple

CHUNK_SIZE: Final = 1 << 20
# Larger than any snap length tcpdump or dumpcap writes (262144 is their
# maximum); a bigger record length means the file is damaged, not that the
# packet is big.
MAX_CAPLEN: Final = 262_144
# pcapng blocks are read whole; none of the block types we read comes close
# to this, so a bigger length is damage (and the cap bounds memory).
MAX_BLOCK_LEN: Final = 16 << 20
# Interfaces in one section. libpcap reads any number, and files of more
# than 16 MiB (capture.source.FAST_PATH_MIN_BYTES) go through it: at 65,536
# the Python reader called a small file of 70,000 damaged that libpcap read
# whole (found in review). Alike interfaces share one record, so most such
# files cost 8 bytes an interface; all different, about 100.
MAX_INTERFACES: Final = 1 << 20

_NS_PER_S: Final = 1_000_000_000
# pcap's link-type field carries FCS information in its top bits
# (draft-ietf-opsawg-pcap 4, "LinkType and additional information").
_LINKTYPE_MASK: Final = 0x03FF_FFFF

GZIP_MAGIC: Final = b"\x1f\x8b"
_PCAPNG_SHB: Final = b"\x0a\x0d\x0d\x0a"
# magic bytes -> (big endian, nanosecond timestamps, record header length)
_PCAP_MAGICS: Final[dict[bytes, tuple[bool, bool, int]]] = {
    b"\xd4\xc3\xb2\xa1": (False, False, 16),
    b"\xa1\xb2\xc3\xd4": (True, False, 16),
    b"\x4d\x3c\xb2\xa1": (False, True, 16),
    b"\xa1\xb2\x3c\x4d": (True, True, 16),
    # Alexey Kuznetzov's patched libpcap: 8 more bytes per record header.
    b"\x34\xcd\xb2\xa1": (False, False, 24),
    b"\xa1\xb2\xcd\x34": (True, False, 24),
}
# Other containers a user might hand us: say what they are, and what
# unpacks them to standard output (which a reader of '-' can then take).
_OTHER_MAGICS: Final[dict[bytes, tuple[str, str]]] = {
    b"\x28\xb5\x2f\xfd": ("zstd-compressed", "zstd -dc"),
    b"\xfd\x37\x7a\x58": ("xz-compressed", "xz -dc"),
    b"\x42\x5a\x68": ("bzip2-compressed", "bzip2 -dc"),
    b"\x04\x22\x4d\x18": ("lz4-compressed", "lz4 -dc"),
    b"\x50\x4b\x03\x04": ("a zip archive", "unzip -p"),
}

# pcapng block types (draft-ietf-opsawg-pcapng 4, 10.1).
_SHB: Final = 0x0A0D0D0A
_IDB: Final = 0x00000001
_PB: Final = 0x00000002  # obsolete Packet Block, appendix A
_SPB: Final = 0x00000003
_EPB: Final = 0x00000006
_OPT_END: Final = 0
_OPT_IF_TSRESOL: Final = 9
_OPT_IF_TSOFFSET: Final = 14


class RawPacket(NamedTuple):
    """One captured frame. A NamedTuple because a million are built per run."""

    ts: int  # nanoseconds since the Unix epoch, UTC
    linktype: int  # LINKTYPE_* value of the interface it was captured on
    data: bytes  # the captured bytes, possibly shorter than wire_len
    wire_len: int  # length of the frame on the wire
    offset: int  # byte offset of its record in the (decompressed) capture


# One packet of a Batch: (capture time in ns, start, stop) of its bytes in
# the batch's buffer.
Record = tuple[int, int, int]


class Batch(NamedTuple):
    """The packets found in one buffer of the capture, all of one link type.

    What ``CaptureReader.batches`` yields instead of one ``RawPacket`` per
    packet: a packet costs a plain tuple in a list rather than a NamedTuple,
    a generator step and a copy of its bytes, which adds up over a million
    packets. A reader takes ``data[start:stop]`` only of what it needs.
    """

    linktype: int
    data: bytes
    records: list[Record]


class CaptureError(Exception):
    """A capture that cannot be read (further): damaged, not a capture, unreadable.

    ``offset`` is the byte offset in the decompressed capture of the record
    that could not be read; 0 when the file is not a capture at all.
    ``inflated``: the capture is gzip-compressed, so the offset counts
    bytes of what it decompresses to, which the message says: a byte
    offset past the end of the file as stored reads as a mistake.
    """

    def __init__(
        self,
        path: str,
        offset: int,
        message: str,
        *,
        damaged: bool = True,
        inflated: bool = False,
    ) -> None:
        super().__init__(path, offset, message)
        self.path = path
        self.offset = offset
        self.message = message
        self.damaged = damaged
        self.inflated = inflated

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its keywords (a -j worker hands its errors over):
        # Exception's own pickling keeps only the positional arguments.
        return (_capture_error, (self.path, self.offset, self.message,
                                 self.damaged, self.inflated))  # fmt: skip

    def __str__(self) -> str:
        name = "<stdin>" if self.path == "-" else self.path
        if not self.damaged:
            return f"{name}: {self.message}"
        where = f"byte {self.offset}"
        if self.inflated:
            where += " of its decompressed data"
        return f"{name}: damaged at {where}: {self.message}"


def _capture_error(
    path: str, offset: int, message: str, damaged: bool, inflated: bool
) -> CaptureError:
    return CaptureError(path, offset, message, damaged=damaged, inflated=inflated)


class _SourceDamage(Exception):
    """The bytes under the capture format are bad: a gzip or read error."""


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (OSError, ValueError):
        return False


class _FileChunks:
    """Chunks of a file as stored on disk (or of standard input)."""

    def __init__(self, stream: BinaryIO, size: int = CHUNK_SIZE) -> None:
        self._stream = stream
        self._size = size
        self.raw_bytes = 0
        pipe = not _seekable(stream)
        self._read1: Callable[[int], bytes] | None = (
            getattr(stream, "read1", None) if pipe else None
        )

    def read(self) -> bytes:
        try:
            # read1 returns what a pipe holds now rather than waiting for a
            # whole chunk: "tcpdump -w - | smtpscope read -" then sees each
            # packet as it comes, and Ctrl-C loses nothing already written.
            chunk: bytes
            if self._read1 is not None:
                chunk = bytes(self._read1(self._size))
            else:
                chunk = self._stream.read(self._size)
        except OSError as exc:
            raise _SourceDamage(f"read error: {exc.strerror or exc}") from exc
        self.raw_bytes += len(chunk)
        return chunk


class _GzipChunks:
    """Decompressed chunks of a gzip stream (RFC 1952), member after member.

    The gzip framing is read here and zlib inflates the raw deflate data,
    so that every byte decompressed before a CRC or truncation error, or
    before damage inside the deflate data, is handed on before that error
    is raised (``gzip.GzipFile`` and zlib's own gzip mode can lose the last
    output along with the error).
    """

    def __init__(self, raw: _FileChunks, first: bytes) -> None:
        self._raw = raw
        self._carry = first  # compressed bytes read but not yet used
        self._inflate: Any = None  # zlib's Decompress, while inside a member
        self._crc = 0
        self._size = 0
        # The input of a call that failed, fed again from this position
        # (see read), and the damage to raise once what came before it is
        # handed on.
        self._replay: tuple[bytes, int] | None = None
        self._damage: _SourceDamage | None = None

    @property
    def raw_bytes(self) -> int:
        return self._raw.raw_bytes

    def read(self) -> bytes:
        while True:
            if self._damage is not None:
                raise self._damage
            inflate = self._inflate
            if inflate is None:
                if not self._start_member():
                    return b""
                continue
            if self._replay is not None:
                out = self._replay_some()
            elif inflate.eof:
                self._end_member()
                continue
            else:
                data = inflate.unconsumed_tail or self._compressed()
                if not data:
                    raise _SourceDamage("gzip data truncated")
                before = inflate.copy()
                try:
                    out = inflate.decompress(data, CHUNK_SIZE)
                except zlib.error:
                    # zlib hands on nothing of a call that fails, which lost
                    # up to a chunk's worth before the damage, and made a
                    # file and the same file piped in (read in pieces of
                    # other sizes) stop at different offsets. The same input
                    # again, a byte at a time from the state before the
                    # call, hands on every byte before the damage.
                    self._inflate = before
                    self._replay = (data, 0)
                    continue
            if out:
                self._crc = zlib.crc32(out, self._crc)
                self._size += len(out)
                return out

    def _replay_some(self) -> bytes:
        """Up to a chunk of what a failed call's input inflates to before
        its damage, fed again a byte at a time; the damage is raised at the
        next read."""
        assert self._replay is not None
        data, at = self._replay
        inflate = self._inflate
        pieces: list[bytes] = []
        size = 0
        while at < len(data) and size < CHUNK_SIZE and not inflate.eof:
            try:
                piece: bytes = inflate.decompress(data[at : at + 1])
            except zlib.error as exc:
                self._replay = None
                self._damage = _SourceDamage(f"gzip data damaged ({exc})")
                return b"".join(pieces)
            at += 1
            pieces.append(piece)
            size += len(piece)
        if at < len(data) and size >= CHUNK_SIZE:
            self._replay = (data, at)  # more before the damage
        else:
            # Fed again, the input inflated without the error (zlib is not
            # expected to do that): what is left goes on the usual way.
            self._replay = None
            self._carry = data[at:] + self._carry
        return b"".join(pieces)

    def _compressed(self) -> bytes:
        if self._carry:
            data, self._carry = self._carry, b""
            return data
        return self._raw.read()

    def _gather(self, need: int) -> bool:
        """Have at least ``need`` bytes in the carry; False at the end."""
        while len(self._carry) < need:
            more = self._raw.read()
            if not more:
                return False
            self._carry += more
        return True

    def _start_member(self) -> bool:
        """Read a member header (RFC 1952 2.3); False at a clean end."""
        # Trailing zeros are padding some tools add; gzip(1) ignores them too.
        while not self._carry.strip(b"\0"):
            self._carry = self._raw.read()
            if not self._carry:
                return False
        # The magic first, on as much of it as there is: a few stray bytes
        # after the last member (up to 9) were called a truncated header.
        self._gather(len(GZIP_MAGIC))
        magic = self._carry[: len(GZIP_MAGIC)]
        if magic != GZIP_MAGIC[: len(magic)]:
            raise _SourceDamage("unexpected bytes after the gzip data")
        if not self._gather(10):
            raise _SourceDamage("gzip header truncated")
        head = self._carry
        if head[2] != 8:
            raise _SourceDamage(f"gzip compression method {head[2]}, not deflate")
        flags = head[3]
        pos = 10
        if flags & 0x04:  # FEXTRA: a length, then that many bytes
            if not self._gather(pos + 2):
                raise _SourceDamage("gzip header truncated")
            pos += 2 + int.from_bytes(self._carry[pos : pos + 2], "little")
        for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
            if flags & flag:
                pos = self._past_zero(pos)
        if flags & 0x02:  # FHCRC
            pos += 2
        if not self._gather(pos):
            raise _SourceDamage("gzip header truncated")
        self._carry = self._carry[pos:]
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        return True

    def _past_zero(self, pos: int) -> int:
        while True:
            end = self._carry.find(b"\0", pos)
            if end >= 0:
                return end + 1
            if len(self._carry) > pos + (1 << 16):
                raise _SourceDamage("gzip header field longer than 64 KiB")
            if not self._gather(len(self._carry) + 1):
                raise _SourceDamage("gzip header truncated")

    def _end_member(self) -> None:
        """Check a member's trailer: CRC-32 and size of its data (RFC 1952 2.3.1)."""
        self._carry = self._inflate.unused_data + self._carry
        self._inflate = None
        if not self._gather(8):
            raise _SourceDamage("gzip data truncated (trailer missing)")
        crc, size = struct.unpack_from("<II", self._carry, 0)
        self._carry = self._carry[8:]
        if crc != self._crc:
            raise _SourceDamage("gzip CRC check failed")
        if size != self._size & 0xFFFFFFFF:
            raise _SourceDamage("gzip length check failed")


_Chunks = _FileChunks | _GzipChunks


class FileHead(NamedTuple):
    """What a capture's first bytes say of it."""

    format: str  # "pcap" or "pcapng"
    snaplen: int  # the file's, for pcap; 0 for pcapng, whose interfaces have theirs
    linktype: int  # the file's, or the first interface's
    # Whether a pcap file's times are in nanoseconds (microseconds else);
    # pcapng's interfaces say each their own.
    nano: bool = True
    # A pcapng file's first interface's if_tsresol option (4.2), as stored;
    # None without one (microseconds), and for pcap.
    tsresol: int | None = None


def file_head(head: bytes) -> FileHead | None:
    """The format, snaplen and link type the first bytes of a plain capture
    declare: a classic pcap header (standard layout: the 24-byte record
    variant gives None), or a pcapng Section Header Block followed by an
    Interface Description Block (4.1, 4.2), which ``head`` must hold (its
    time resolution is read when it holds the whole block). None for
    anything else."""
    if head[:4] == _PCAPNG_SHB:
        order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(head[8:12])
        if order is None:
            return None
        (section,) = struct.unpack_from(order + "I", head, 4)
        if len(head) < section + 10:
            return None
        kind, length, linktype = struct.unpack_from(order + "IIH", head, section)
        if kind != _IDB:
            return None
        tsresol = None
        if length >= 20 and len(head) >= section + length:
            options = _Section(order)._options(head, section + 16, section + length - 4)
            for code, value in options:
                if code == _OPT_IF_TSRESOL and value:
                    tsresol = value[0]
        return FileHead("pcapng", 0, linktype, tsresol=tsresol)
    layout = _PCAP_MAGICS.get(head[:4])
    if layout is None or layout[2] != 16 or len(head) < 24:
        return None
    order = ">" if layout[0] else "<"
    snaplen, linktype = struct.unpack_from(order + "II", head, 16)
    return FileHead("pcap", snaplen, linktype & _LINKTYPE_MASK, layout[1])


def is_gzip(path: str) -> bool:
    """Whether the file at ``path`` begins as gzip does (RFC 1952 2.3.1)."""
    try:
        with open(path, "rb") as stream:
            return stream.read(2) == GZIP_MAGIC
    except OSError:
        return False


class Inflated:
    """What a gzip-compressed capture decompresses to, a chunk at a time,
    for readers other than ``CaptureReader`` (libpcap, through a pipe).

    ``read`` gives every byte before damage, then raises ``CaptureError``
    at the decompressed offset where it stopped. ``name`` is the capture's
    name in that error; the stream is the caller's to close.
    """

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.name = name
        self._raw = _FileChunks(stream)
        self._chunks = _GzipChunks(self._raw, b"")
        self.bytes = 0  # decompressed, handed out so far

    def read(self) -> bytes:
        """The next chunk; empty at the end of the last gzip member."""
        try:
            out = self._chunks.read()
        except _SourceDamage as exc:
            raise CaptureError(self.name, self.bytes, str(exc), inflated=True) from None
        self.bytes += len(out)
        return out


class CaptureReader:
    """Iterator over the packets of one capture; also a context manager.

    Counters: ``packets_read`` (packets yielded; kept in a local while the
    loop runs and published at each chunk and at the end, so exact once
    iteration has stopped and at most a chunk behind before), ``bytes_read``
    (decompressed capture bytes read from the source so far, in whole chunks),
    ``raw_bytes_read`` (bytes read from the file as stored, for progress
    against ``size``, the stored size when known). ``format`` is "pcap" or
    "pcapng" and ``compressed`` tells whether the file was gzip-compressed,
    both known once iteration has started.

    ``batches`` is the other way to read the packets, for readers of many:
    use one or the other.
    """

    def __init__(
        self,
        path: str,
        stream: BinaryIO,
        *,
        owns_stream: bool,
        size: int | None,
        on_read: Callable[[int], None] | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.path = path
        self.size = size
        self.packets_read = 0
        self.bytes_read = 0
        self.format = ""
        self.compressed = False
        self._stream = stream
        self._owns_stream = owns_stream
        self._on_read = on_read
        self._file = _FileChunks(stream, chunk_size)
        self._chunks: _Chunks = self._file
        self._failure: str | None = None  # a source error, raised after the data
        self._packets = self._run()
        self._batches: Generator[Batch, None, None] | None = None

    @property
    def raw_bytes_read(self) -> int:
        return self._file.raw_bytes

    def __iter__(self) -> Iterator[RawPacket]:
        # The generator itself, not self: spares a Python call per packet.
        return self._packets

    def __next__(self) -> RawPacket:
        return next(self._packets)

    def batches(self) -> Iterator[Batch]:
        """The packets, a buffer at a time: the same packets as iterating.

        Classic pcap is read a chunk at a time, as iterating does, and each
        chunk's whole records make one batch. pcapng packets come one per
        batch: only classic pcap is read in bulk (the filtered stream
        libpcap writes, every large capture tcpdump writes).
        ``packets_read`` counts the packets of the batches handed out.
        Damage surfaces as when iterating, after the batches before it.
        """
        if self._batches is None:
            self._batches = self._run_batches()
        return self._batches

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._packets.close()
        if self._batches is not None:
            self._batches.close()
        if self._owns_stream:
            self._stream.close()

    # -- reading chunks -------------------------------------------------

    def _read(self) -> bytes:
        """The next decompressed chunk; b"" at the end or after a source error."""
        if self._failure is not None:
            return b""
        try:
            chunk = self._chunks.read()
        except _SourceDamage as exc:
            self._failure = str(exc)
            chunk = b""
        self.bytes_read += len(chunk)
        if self._on_read is not None:
            self._on_read(self._file.raw_bytes)
        return chunk

    def _refill(self, buf: bytes, pos: int, need: int) -> bytes:
        """``buf[pos:]`` extended by whole chunks until it holds ``need`` bytes.

        Returns fewer bytes only at the end of the data.
        """
        parts = [buf[pos:]]
        have = len(parts[0])
        while have < need:
            chunk = self._read()
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def _damage(self, offset: int, message: str) -> CaptureError:
        # A gzip or read error explains the shortfall better than its symptom.
        reason = self._failure if self._failure is not None else message
        return CaptureError(self.path, offset, reason, inflated=self.compressed)

    def _not_capture(self, message: str) -> CaptureError:
        return CaptureError(self.path, 0, message, damaged=False)

    # -- format detection -----------------------------------------------

    def _run(self) -> Generator[RawPacket, None, None]:
        head, layout = self._detect()
        if layout is None:
            yield from self._pcapng(head)
        else:
            yield from self._pcap(head, *layout)

    def _run_batches(self) -> Generator[Batch, None, None]:
        head, layout = self._detect()
        if layout is not None:
            for _, batch in self._pcap_batches(head, *layout):
                yield batch
            return
        for packet in self._pcapng(head):
            data = packet.data
            yield Batch(packet.linktype, data, [(packet.ts, 0, len(data))])

    def _detect(self) -> tuple[bytes, tuple[bool, bool, int] | None]:
        """The first bytes and, for classic pcap, its layout (None: pcapng).

        Raises ``CaptureError`` for anything else.
        """
        head = self._refill(b"", 0, 4)
        if not head:
            raise self._not_capture("empty file, not a pcap or pcapng file")
        if head.startswith(GZIP_MAGIC):
            # Detected by content, whatever the name says (RFC 1952 2.3.1).
            self.compressed = True
            self._chunks = _GzipChunks(self._file, head)
            self.bytes_read = 0
            head = self._refill(b"", 0, 4)
            if not head:
                if self._failure is not None:
                    raise self._damage(0, self._failure)
                raise self._not_capture("empty file inside gzip")
        magic = head[:4]
        if magic == _PCAPNG_SHB:
            self.format = "pcapng"
            return head, None
        layout = _PCAP_MAGICS.get(magic)
        if layout is not None:
            self.format = "pcap"
            return head, layout
        if self._failure is not None:
            raise self._damage(0, self._failure)
        if self.compressed and magic.startswith(GZIP_MAGIC):
            # A .pcap.gz gzipped again read as "not a pcap or pcapng file",
            # which sent its user looking for damage.
            raise self._not_capture(
                "compressed twice: gzip inside gzip, not a pcap or pcapng file "
                "(gunzip it once and read what it gives)"
            )
        inside = " inside gzip" if self.compressed else ""
        for other, (what, unpack) in _OTHER_MAGICS.items():
            if magic.startswith(other):
                # Inside gzip, gunzip comes first: the hint would mislead.
                hint = "" if inside else f" (unpack it first: {unpack} writes it out)"
                raise self._not_capture(
                    f"{what}{inside}, not a pcap or pcapng file{hint}"
                )
        raise self._not_capture("not a pcap or pcapng file")

    # -- classic pcap ---------------------------------------------------

    def _pcap(
        self, buf: bytes, big: bool, nano: bool, header_len: int
    ) -> Iterator[RawPacket]:
        """Classic pcap a packet at a time: the batches taken apart."""
        # A record header ends with the length on the wire, then, in the
        # 24-byte variant, 8 bytes more.
        wire_len_at = struct.Struct(">I" if big else "<I").unpack_from
        new = tuple.__new__  # skips NamedTuple's Python-level __new__
        packet = RawPacket
        count = 0
        try:
            for base, batch in self._pcap_batches(buf, big, nano, header_len):
                linktype, data, records = batch
                for ts, start, stop in records:
                    head = start - header_len
                    count += 1
                    yield new(
                        packet,
                        (
                            ts,
                            linktype,
                            data[start:stop],
                            wire_len_at(data, head + 12)[0],
                            base + head,
                        ),
                    )
        finally:
            self.packets_read = count

    def _pcap_batches(
        self, buf: bytes, big: bool, nano: bool, header_len: int
    ) -> Iterator[tuple[int, Batch]]:
        """Classic pcap, a chunk at a time: (offset of the batch's data, batch).

        Sets ``packets_read`` to the packets of the batches yielded so far.
        """
        order = ">" if big else "<"
        buf = self._refill(buf, 0, 24)
        if len(buf) < 24:
            raise self._damage(0, f"file header truncated at {len(buf)} of 24 bytes")
        linktype = struct.unpack_from(order + "I", buf, 20)[0] & _LINKTYPE_MASK
        # Locals rather than globals and attributes: this loop runs per packet.
        ns_per_s = _NS_PER_S
        frac_ns = 1 if nano else 1000
        max_caplen = MAX_CAPLEN
        # Time and captured length; the length on the wire is not needed.
        unpack = struct.Struct(order + "III").unpack_from
        count = 0
        base = 0  # offset of buf[0] in the capture
        pos = 24
        # Packets come many to a second: the second's nanoseconds are kept
        # rather than multiplied out again for each (a product of several
        # digits in Python).
        second = -1
        second_ns = 0
        while True:
            # Step 1: every whole record left in buf, found.
            end = len(buf)
            records: list[Record] = []
            add = records.append
            start = pos + header_len  # where the packet of the record at pos starts
            while start <= end:
                sec, frac, caplen = unpack(buf, pos)
                stop = start + caplen
                if stop > end or caplen > max_caplen:
                    break
                if sec != second:
                    second = sec
                    second_ns = sec * ns_per_s
                add((second_ns + frac * frac_ns, start, stop))
                pos = stop
                start = stop + header_len
            else:
                caplen = -1  # no whole record header left
            if records:
                count += len(records)
                self.packets_read = count
                yield base, Batch(linktype, buf, records)

            # Step 2: what stopped step 1: damage, the end of the data, or
            # a record that goes on in the next chunk.
            if caplen > MAX_CAPLEN:
                raise self._damage(
                    base + pos, f"record length {caplen} exceeds {MAX_CAPLEN}"
                )
            need = header_len if caplen < 0 else header_len + caplen
            base += pos
            rest = buf[pos:]
            chunk = self._read()
            if not rest and chunk:
                buf = chunk  # the records ended with the chunk
                pos = 0
                continue
            if caplen < 0 and len(rest) + len(chunk) >= header_len:
                # The record header goes on in the chunk: its length, then.
                caplen = unpack(rest + chunk[: header_len - len(rest)], 0)[2]
                if caplen > MAX_CAPLEN:
                    raise self._damage(
                        base, f"record length {caplen} exceeds {MAX_CAPLEN}"
                    )
                need = header_len + caplen
            if caplen >= 0 and len(rest) + len(chunk) >= need:
                # The record that goes on in the chunk makes a batch of its
                # own, and the walk goes on in the chunk itself: rest +
                # chunk would copy a whole chunk per chunk read.
                used = need - len(rest)
                joint = rest + chunk[:used]
                sec, frac, _ = unpack(joint, 0)
                count += 1
                self.packets_read = count
                ts = sec * ns_per_s + frac * frac_ns
                yield base, Batch(linktype, joint, [(ts, header_len, need)])
                base += len(rest)
                buf = chunk
                pos = used
                continue
            # A chunk too short to finish the record, or the end: gather.
            buf = self._refill(rest + chunk, 0, need)
            pos = 0
            end = len(buf)
            if end >= need:
                continue
            if caplen >= 0:
                raise self._damage(
                    base,
                    f"record truncated: {caplen} bytes of packet announced, "
                    f"{end - header_len} present",
                )
            if end == 0 and self._failure is None:
                return
            raise self._damage(
                base, f"record header truncated at {end} of {header_len} bytes"
            )

    # -- pcapng ---------------------------------------------------------

    def _pcapng(self, buf: bytes) -> Iterator[RawPacket]:
        section = _Section("<")
        new = tuple.__new__
        packet = RawPacket
        count = 0
        base = 0
        pos = 0
        end = len(buf)
        try:
            while True:
                # Step 1: have the whole block in buf[pos:pos + length].
                if end - pos < 12:
                    self.packets_read = count
                    base += pos
                    buf = self._refill(buf, pos, 12)
                    pos = 0
                    end = len(buf)
                    if end < 12:
                        if end == 0 and self._failure is None:
                            return
                        raise self._damage(
                            base, f"block header truncated at {end} of 12 bytes"
                        )
                if buf[pos : pos + 4] == _PCAPNG_SHB:
                    # The SHB's type reads the same in both byte orders; its
                    # byte-order magic sets the order of the section (4.1).
                    # The clock goes on from the section before: a Simple
                    # Packet Block, which has no time, takes its last one.
                    last_ts = section.last_ts
                    section = self._section_order(buf, base + pos, pos)
                    section.last_ts = last_ts
                btype, length = section.block_head(buf, pos)
                if length < 12 or length & 3 or length > MAX_BLOCK_LEN:
                    raise self._damage(base + pos, f"bad block length {length}")
                if end - pos < length:
                    self.packets_read = count
                    base += pos
                    buf = self._refill(buf, pos, length)
                    pos = 0
                    end = len(buf)
                    if end < length:
                        raise self._damage(
                            base,
                            f"block truncated: {length} bytes announced, {end} present",
                        )
                if section.block_tail(buf, pos + length - 4) != length:
                    raise self._damage(
                        base + pos, f"block length {length} does not match its trailer"
                    )

                # Step 2: packets out; other blocks noted or skipped.
                found = section.read_block(btype, buf, pos, length)
                if found is not None:
                    if isinstance(found, str):
                        raise self._damage(base + pos, found)
                    ts, linktype, start, caplen, wire_len = found
                    count += 1
                    yield new(
                        packet,
                        (
                            ts,
                            linktype,
                            buf[start : start + caplen],
                            wire_len,
                            base + pos,
                        ),
                    )
                pos += length
        finally:
            self.packets_read = count

    def _section_order(self, buf: bytes, offset: int, pos: int) -> _Section:
        bom = buf[pos + 8 : pos + 12]
        if bom == b"\x4d\x3c\x2b\x1a":
            return _Section("<")
        if bom == b"\x1a\x2b\x3c\x4d":
            return _Section(">")
        if offset == 0:
            raise self._not_capture("not a pcap or pcapng file")
        raise self._damage(offset, "section header with a bad byte-order magic")


_MAX_TS = 2**63 - 1
# The finest if_tsresol taken: attoseconds, 10^-18 s. A 64-bit tick count
# then still spans 18 s; finer ones are damage, not a clock.
_FINEST_UNITS = 10**18


class _Interface(NamedTuple):
    linktype: int
    snaplen: int
    ts_mul: int  # ns = ticks * ts_mul // ts_div + ts_offset
    ts_div: int
    ts_offset: int


# What a packet block yields: (ts, linktype, data start, caplen, wire_len),
# or a message saying why the block is damaged.
_Found = tuple[int, int, int, int, int] | str | None


class _Section:
    """One pcapng section: its byte order and its interfaces (4.1, 4.2)."""

    def __init__(self, order: str) -> None:
        self.interfaces: list[_Interface] = []
        self._alike: dict[_Interface, _Interface] = {}  # see MAX_INTERFACES
        self.last_ts = 0
        self._order = order
        head = struct.Struct(order + "II")
        self.block_head = head.unpack_from
        self._u32 = struct.Struct(order + "I").unpack_from
        self._u16 = struct.Struct(order + "H").unpack_from
        self._i64 = struct.Struct(order + "q").unpack_from
        self._epb = struct.Struct(order + "IIIII").unpack_from
        self._pb = struct.Struct(order + "HHIIII").unpack_from

    def read_block(self, btype: int, buf: bytes, pos: int, length: int) -> _Found:
        """A packet from a packet block; section and interface blocks noted.

        Other blocks (name resolution, statistics, custom...) are skipped.
        """
        if btype == _EPB:
            return self.enhanced(buf, pos, length)
        if btype == _SPB:
            return self.simple(buf, pos, length)
        if btype == _PB:
            return self.obsolete(buf, pos, length)
        if btype == _SHB:
            return self.start(buf, pos, length)
        if btype == _IDB:
            return self.add_interface(buf, pos, length)
        return None

    def block_tail(self, buf: bytes, pos: int) -> int:
        value: int = self._u32(buf, pos)[0]
        return value

    def start(self, buf: bytes, pos: int, length: int) -> str | None:
        """Section Header Block (4.1); returns why it is unusable, if it is."""
        if length < 28:
            return f"section header block of {length} bytes, less than 28"
        major = self._u16(buf, pos + 12)[0]
        if major != 1:
            # A new major version may lay blocks out differently (4.1).
            return f"pcapng major version {major}, only 1 is known"
        # Interfaces are numbered per section (4.2): a new SHB forgets them.
        self.interfaces = []
        self._alike = {}
        return None

    def add_interface(self, buf: bytes, pos: int, length: int) -> str | None:
        """Interface Description Block (4.2); returns why it is unusable."""
        if len(self.interfaces) >= MAX_INTERFACES:
            # Real captures have a handful; this bounds memory on garbage.
            return f"more than {MAX_INTERFACES} interfaces in one section"
        if length < 20:
            linktype, snaplen = 0, 0
        else:
            linktype = self._u16(buf, pos + 8)[0]
            snaplen = self._u32(buf, pos + 12)[0]
        units, offset_s = 1_000_000, 0  # microseconds unless told (4.2)
        for code, value in self._options(buf, pos + 16, pos + length - 4):
            if code == _OPT_IF_TSRESOL and len(value) >= 1:
                exp = value[0]
                # MSB clear: 10^-n seconds; MSB set: 2^-n seconds (4.2).
                units = 2 ** (exp & 0x7F) if exp & 0x80 else 10**exp
                if units > _FINEST_UNITS:
                    # A 64-bit count of such ticks spans less than a
                    # second: every packet would be stamped 1970.
                    shown = f"2^-{exp & 0x7F}" if exp & 0x80 else f"10^-{exp}"
                    return (
                        f"interface time resolution of {shown} s, finer than any clock"
                    )
            elif code == _OPT_IF_TSOFFSET and len(value) >= 8:
                offset_s = self._i64(value, 0)[0]
        common = math.gcd(_NS_PER_S, units)
        interface = _Interface(
            linktype,
            snaplen,
            _NS_PER_S // common,
            units // common,
            offset_s * _NS_PER_S,
        )
        self.interfaces.append(self._alike.setdefault(interface, interface))
        return None

    def _options(self, buf: bytes, pos: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """Options as (code, value) until opt_endofopt (3.5).

        A malformed option list ends the list rather than the capture:
        options only refine how packets are read.
        """
        while pos + 4 <= stop:
            code = self._u16(buf, pos)[0]
            size = self._u16(buf, pos + 2)[0]
            if code == _OPT_END or pos + 4 + size > stop:
                return
            yield code, buf[pos + 4 : pos + 4 + size]
            pos += 4 + ((size + 3) & ~3)

    def _interface(self, index: int) -> _Interface | str:
        if index >= len(self.interfaces):
            return f"packet for interface {index}, which the section never described"
        return self.interfaces[index]

    def _timestamp(self, iface: _Interface, high: int, low: int) -> int:
        ticks = (high << 32) | low
        ts = ticks * iface.ts_mul // iface.ts_div + iface.ts_offset
        self.last_ts = ts
        return ts

    def enhanced(self, buf: bytes, pos: int, length: int) -> _Found:
        """Enhanced Packet Block (4.3)."""
        if length < 32:
            return f"enhanced packet block of {length} bytes, less than 32"
        index, high, low, caplen, wire_len = self._epb(buf, pos + 8)
        return self._timed_packet(pos, length, index, high, low, caplen, wire_len)

    def simple(self, buf: bytes, pos: int, length: int) -> _Found:
        """Simple Packet Block (4.4): interface 0, no timestamp.

        Its time is taken to be that of the section's previous packet, so
        that the capture clock never runs backwards.
        """
        if length < 16:
            return f"simple packet block of {length} bytes, less than 16"
        iface = self._interface(0)
        if isinstance(iface, str):
            return iface
        wire_len = self._u32(buf, pos + 8)[0]
        caplen = min(wire_len, length - 16)
        if iface.snaplen:
            caplen = min(caplen, iface.snaplen)
        if caplen > MAX_CAPLEN:
            return f"record length {caplen} exceeds {MAX_CAPLEN}"
        return self.last_ts, iface.linktype, pos + 12, caplen, wire_len

    def obsolete(self, buf: bytes, pos: int, length: int) -> _Found:
        """Packet Block, obsoleted by the EPB (appendix A)."""
        if length < 32:
            return f"packet block of {length} bytes, less than 32"
        index, _drops, high, low, caplen, wire_len = self._pb(buf, pos + 8)
        return self._timed_packet(pos, length, index, high, low, caplen, wire_len)

    def _timed_packet(
        self,
        pos: int,
        length: int,
        index: int,
        high: int,
        low: int,
        caplen: int,
        wire_len: int,
    ) -> _Found:
        """What EPB and PB share after their fields: checks and the time."""
        if caplen > MAX_CAPLEN:
            return f"record length {caplen} exceeds {MAX_CAPLEN}"
        if 28 + caplen + 4 > length:
            return f"captured length {caplen} does not fit its {length}-byte block"
        iface = self._interface(index)
        if isinstance(iface, str):
            return iface
        ts = self._timestamp(iface, high, low)
        if not 0 <= ts <= _MAX_TS:
            # Nanoseconds since 1970 must fit 64 bits (until 2262): beyond
            # that the clock, the resolution or the offset is damaged.
            return f"timestamp of {ts} ns since 1970 is out of range"
        return ts, iface.linktype, pos + 28, caplen, wire_len


def open_capture(
    path: str,
    *,
    on_read: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> CaptureReader:
    """Open a capture for reading; ``-`` reads standard input.

    Raises ``CaptureError`` (not damaged) when the file cannot be opened.
    Everything about its content, including not being a capture at all, is
    reported by the iterator, after every packet that could be read.
    ``on_read`` is called with the stored bytes read so far after each chunk
    of ``chunk_size`` stored bytes: a reader of the first packets only reads
    less with a smaller one.
    """
    if path == "-":
        return CaptureReader(
            path,
            sys.stdin.buffer,
            owns_stream=False,
            size=None,
            on_read=on_read,
            chunk_size=chunk_size,
        )
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the reader owns and closes it
    except OSError as exc:
        raise CaptureError(
            path, 0, f"cannot open: {exc.strerror or exc}", damaged=False
        ) from exc
    try:
        info = os.fstat(stream.fileno())
    except OSError:
        info = None
    size = info.st_size if info is not None and stat.S_ISREG(info.st_mode) else None
    return CaptureReader(
        path,
        stream,
        owns_stream=True,
        size=size,
        on_read=on_read,
        chunk_size=chunk_size,
    )
