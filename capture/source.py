"""Capture files in, stream events out: reader, decoder and reassembler joined.

``iter_stream_events`` reads the captures one after the other through a
single ``Reassembler``, so a connection that runs from one file into the
next (a capture rotated by size or time) goes on as one connection. A
damaged or unreadable capture is recorded in ``SourceStats.errors`` and
reading goes on with the next one; once all are read, every connection
still open is closed with END_OF_CAPTURE.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from capture.decode import SMTP_PORTS, DecodeStats, decode_tcp
from capture.pcapfile import CaptureError, open_capture
from capture.reassembly import Reassembler, ReassemblyStats
from capture.stream import StreamEvent

log = logging.getLogger(__name__)

# Called about once per MiB read with (the capture being read, bytes read so
# far over all captures, their total stored size or None when unknown, as
# for standard input).
ProgressHook = Callable[[str, int, int | None], None]
ErrorHook = Callable[[CaptureError], None]


@dataclass(slots=True)
class SourceStats:
    captures: int = 0  # captures opened
    packets: int = 0  # packets read, all kinds
    bytes: int = 0  # bytes read from the capture files as stored
    smtp_packets: int = 0  # TCP segments on a watched port
    decode: DecodeStats = field(default_factory=DecodeStats)
    reassembly: ReassemblyStats = field(default_factory=ReassemblyStats)
    errors: list[CaptureError] = field(default_factory=list)


def iter_stream_events(
    paths: Sequence[str],
    ports: frozenset[int] = SMTP_PORTS,
    *,
    stats: SourceStats | None = None,
    on_error: ErrorHook | None = None,
    progress: ProgressHook | None = None,
    idle_timeout_s: float = 600.0,
    max_buffered_bytes: int = 1 << 20,
) -> Iterator[StreamEvent]:
    """Every stream event of the TCP connections on ``ports`` in ``paths``.

    ``-`` among the paths reads standard input. ``stats`` is filled in as
    reading goes; ``on_error`` is called with each ``CaptureError`` as it
    happens, after it has been added to ``stats.errors``.
    """
    if stats is None:
        stats = SourceStats()
    reassembler = Reassembler(
        ports, idle_timeout_s=idle_timeout_s, max_buffered_bytes=max_buffered_bytes
    )
    stats.reassembly = reassembler.stats
    total = _total_size(paths)
    done = 0  # stored bytes of the captures already finished

    for path in paths:
        try:
            yield from _one_capture(
                path, ports, reassembler, stats, done, total, progress
            )
        except CaptureError as error:
            stats.errors.append(error)
            log.warning("%s", error)
            if on_error is not None:
                on_error(error)
        done = stats.bytes
    yield from reassembler.finish()


def _one_capture(
    path: str,
    ports: frozenset[int],
    reassembler: Reassembler,
    stats: SourceStats,
    done: int,
    total: int | None,
    progress: ProgressHook | None,
) -> Iterator[StreamEvent]:
    on_read = None
    if progress is not None:
        on_read = _offset_progress(progress, path, done, total)
    decode_stats = stats.decode
    feed = reassembler.feed
    reader = open_capture(path, on_read=on_read)
    stats.captures += 1
    log.info("reading %s", path)
    try:
        with reader:
            for packet in reader:
                segment = decode_tcp(packet.linktype, packet.data, ports, decode_stats)
                if segment is not None:
                    events = feed(packet.ts, segment)
                    if events:
                        yield from events
    finally:
        stats.packets += reader.packets_read
        stats.bytes += reader.raw_bytes_read
        stats.smtp_packets = decode_stats.tcp


def _offset_progress(
    progress: ProgressHook, path: str, done: int, total: int | None
) -> Callable[[int], None]:
    """A reader's per-file byte count turned into a count over all files."""

    def on_read(raw: int) -> None:
        progress(path, done + raw, total)

    return on_read


def _total_size(paths: Sequence[str]) -> int | None:
    """Sum of the captures' stored sizes, None if one is unknown."""
    total = 0
    for path in paths:
        if path == "-":
            return None
        try:
            total += os.path.getsize(path)
        except OSError:
            return None
    return total
