"""Captured packets to pcapng files, rotated by size or time.

Live capture keeps the packets it analysed so that an incident can be read
again later (``smtpscope read``). pcapng rather than classic pcap because
one file then holds several interfaces of different link types, each packet
naming its own, and keeps nanosecond timestamps (``if_tsresol`` 9).

Rotation follows tcpdump's ``-C`` and ``-G``: before a packet is written,
the file is closed and the next one started when it already holds
``max_bytes`` or when the packet is ``every_s`` seconds (capture time) past
the file's first packet. Rotated files are numbered ``NAME-00000.pcapng``,
``NAME-00001.pcapng``... so that a shell glob lists them in order; without
rotation the file is ``path`` itself.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END = 0
_OPT_IF_NAME = 2
_OPT_IF_TSRESOL = 9
_NS_PER_S = 1_000_000_000

_EPB_HEAD = struct.Struct("<IIIIIII")


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """What an Interface Description Block says of one capture interface."""

    name: str
    linktype: int
    snaplen: int


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def file_header(interfaces: Sequence[InterfaceInfo]) -> bytes:
    """Section header (pcapng 4.1) and one description per interface (4.2)."""
    section = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)  # length unknown
    blocks = [_block(_SHB, section)]
    for info in interfaces:
        options = (
            _option(_OPT_IF_NAME, info.name.encode())
            + _option(_OPT_IF_TSRESOL, bytes([9]))  # 10^-9 s
            + _option(_OPT_END, b"")
        )
        head = struct.pack("<HHI", info.linktype, 0, info.snaplen)
        blocks.append(_block(_IDB, head + options))
    return b"".join(blocks)


def packet_block(interface: int, ts_ns: int, data: bytes, wire_len: int) -> bytes:
    """An Enhanced Packet Block (4.3) with a nanosecond timestamp."""
    padded = _pad(data)
    length = 32 + len(padded)
    head = _EPB_HEAD.pack(
        _EPB,
        length,
        interface,
        (ts_ns >> 32) & 0xFFFFFFFF,
        ts_ns & 0xFFFFFFFF,
        len(data),
        wire_len,
    )
    return head + padded + struct.pack("<I", length)


class RotatingWriter:
    """Writes packets of ``interfaces`` to ``path``, rotating as configured.

    A write that fails after the first file is open (a full disk, a file
    the next rotation cannot create) is not raised: the writer keeps it in
    ``error``, closes its file and writes nothing more, so that the caller
    can stop as it chooses, with its other outputs whole.
    """

    def __init__(
        self,
        path: str | Path,
        interfaces: Sequence[InterfaceInfo],
        *,
        max_bytes: int | None = None,
        every_s: float | None = None,
    ) -> None:
        self._path = Path(path)
        self._header = file_header(interfaces)
        self._max_bytes = max_bytes
        self._every_ns = None if every_s is None else int(every_s * _NS_PER_S)
        self._rotating = max_bytes is not None or every_s is not None
        self._file: BinaryIO | None = None
        self._size = 0
        self._first_ts: int | None = None
        self.files: list[Path] = []  # every file started, in order
        self.packets = 0
        self.error: OSError | None = None
        self._open_next()

    def write(self, interface: int, ts_ns: int, data: bytes, wire_len: int) -> None:
        if self.error is not None:
            return
        try:
            if self._due(ts_ns):
                self._open_next()
            if self._first_ts is None:
                self._first_ts = ts_ns
            block = packet_block(interface, ts_ns, data, wire_len)
            assert self._file is not None
            self._file.write(block)
        except OSError as exc:
            self._failed(exc)
            return
        self._size += len(block)
        self.packets += 1

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._failed(exc)

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()  # closed even where its last flush fails
            except OSError as exc:
                self.error = self.error or exc

    def _failed(self, exc: OSError) -> None:
        self.error = exc
        self.close()

    def __enter__(self) -> RotatingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _due(self, ts_ns: int) -> bool:
        # A file always gets at least one packet, so a tiny -C cannot make
        # a file per header.
        if self._first_ts is None:
            return False
        if self._max_bytes is not None and self._size >= self._max_bytes:
            return True
        return self._every_ns is not None and ts_ns - self._first_ts >= self._every_ns

    def _open_next(self) -> None:
        self.close()
        if self.error is not None:
            raise self.error  # the file before could not be written whole
        path = self._path
        if self._rotating:
            suffix = self._path.suffix or ".pcapng"
            stem = self._path.name.removesuffix(self._path.suffix)
            path = self._path.with_name(f"{stem}-{len(self.files):05d}{suffix}")
        self._file = path.open("wb")
        self._file.write(self._header)
        self._size = len(self._header)
        self._first_ts = None
        self.files.append(path)
        log.info("writing packets to %s", path)
