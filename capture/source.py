"""Capture files in, stream events out: reader, decoder and reassembler joined.

``iter_stream_events`` reads the captures one after the other through a
single ``Reassembler``, so a connection that runs from one file into the
next (a capture rotated by size or time) goes on as one connection. A
damaged or unreadable capture is recorded in ``SourceStats.errors`` and
reading goes on with the next one; once all are read, every connection
still open is closed with END_OF_CAPTURE.

A reader of one share of the connections (``shard``, for ``-j N``) must
make the judgements a reader of all makes where they depend on the others'
connections: whether a capture is another recording (its first segment
before the open connections were last seen), and which connections are
idle at the end. It learns what it needs from the other readers through
``clock``, in rounds that every reader goes through in the same order: at
each capture after the first that holds a segment, then at the end.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple, TypeVar

from capture import libpcap
from capture.decode import (
    ETH_IPV4_TCP_NO_PORTS,
    ETH_IPV6_TCP_NO_PORTS,
    LINKTYPE_ETHERNET,
    SMTP_PORTS,
    DecodeStats,
    FlowKey,
    Segment,
    decode_at,
    watched_key,
)
from capture.inflate import InflatePump
from capture.libpcap import shard_of
from capture.pcapfile import (
    GZIP_MAGIC,
    CaptureError,
    CaptureReader,
    Inflated,
    file_head,
    open_capture,
)
from capture.reassembly import Reassembler, ReassemblyStats
from capture.stream import CloseReason, StreamEvent

log = logging.getLogger(__name__)

# Called about once per MiB read with (the capture being read, bytes read so
# far over all captures, their total stored size or None when unknown, as
# for standard input).
ProgressHook = Callable[[str, int, int | None], None]
ErrorHook = Callable[[CaptureError], None]
# One round between the readers of a sharded run: the round's name and this
# reader's time in (None: it has none), the latest of all readers' out (None
# when none had one). See handle_stream_events.
ClockHook = Callable[[str, int | None], int | None]
# What handle_stream_events makes of the events.
T = TypeVar("T")


@dataclass(slots=True)
class SourceStats:
    captures: int = 0  # captures opened
    # Packets read, all kinds; of a capture read through libpcap's BPF
    # filter (see ``filtered``), only those that passed it.
    packets: int = 0
    bytes: int = 0  # bytes read from the capture files as stored
    # TCP segments on a watched port of this reader's connections (its
    # shard's, for -j), each once: the same count on either path.
    smtp_packets: int = 0
    # True once a capture was read through libpcap's BPF filter and not
    # handed over to the Python reader: then ``packets`` is not all of them.
    filtered: bool = False
    decode: DecodeStats = field(default_factory=DecodeStats)
    reassembly: ReassemblyStats = field(default_factory=ReassemblyStats)
    errors: list[CaptureError] = field(default_factory=list)
    # Captures of which nothing could be read: not opened, no capture at
    # all, or cut within their file header. Each is in errors too.
    unread: list[str] = field(default_factory=list)
    # Captures that began before the ones read before them had reached
    # (ReassemblyStats.rewinds): another recording, overlapping in time.
    rewinds: list[str] = field(default_factory=list)


def iter_stream_events(
    paths: Sequence[str],
    ports: frozenset[int] = SMTP_PORTS,
    *,
    stats: SourceStats | None = None,
    on_error: ErrorHook | None = None,
    progress: ProgressHook | None = None,
    shard: tuple[int, int] = (0, 1),
    idle_timeout_s: float = 600.0,
    max_buffered_bytes: int = 1 << 20,
    max_connections: int | None = None,
) -> Iterator[StreamEvent]:
    """Every stream event of the TCP connections on ``ports`` in ``paths``.

    ``-`` among the paths reads standard input. ``stats`` is filled in as
    reading goes; ``on_error`` is called with each ``CaptureError`` as it
    happens, after it has been added to ``stats.errors``.
    """
    return handle_stream_events(
        paths,
        _itself,
        ports,
        stats=stats,
        on_error=on_error,
        progress=progress,
        shard=shard,
        idle_timeout_s=idle_timeout_s,
        max_buffered_bytes=max_buffered_bytes,
        max_connections=max_connections,
    )


def _itself(event: StreamEvent) -> StreamEvent:
    return event


def handle_stream_events(
    paths: Sequence[str],
    handle: Callable[[StreamEvent], T | None],
    ports: frozenset[int] = SMTP_PORTS,
    *,
    stats: SourceStats | None = None,
    on_error: ErrorHook | None = None,
    progress: ProgressHook | None = None,
    shard: tuple[int, int] = (0, 1),
    idle_timeout_s: float = 600.0,
    max_buffered_bytes: int = 1 << 20,
    clock: ClockHook | None = None,
    max_connections: int | None = None,
) -> Iterator[T]:
    """``iter_stream_events``, each event handed to ``handle`` as it comes;
    yields what ``handle`` returns when that is not None.

    ``clock``, for one reader of several (``shard``): called for each
    round with this reader's time, it returns the latest of all readers'
    (see ``_capture_boundary`` for the rounds at the start of a capture).
    Once all is read, the round ``end`` takes this reader's
    ``Reassembler.clock``, and the last connections are closed by the
    latest of all.

    For a consumer of every event that yields little (the offline analysis
    yields a session per connection): an event no longer climbs through
    the three generators below to reach it, which cost about as much as
    the rest of passing it on.
    """
    if stats is None:
        stats = SourceStats()
    reassembler = Reassembler(
        ports,
        idle_timeout_s=idle_timeout_s,
        max_buffered_bytes=max_buffered_bytes,
        max_connections=max_connections,
    )
    stats.reassembly = reassembler.stats
    try:
        yield from _read_all(
            paths, handle, ports, stats, on_error, progress, shard, clock, reassembler
        )
    except KeyboardInterrupt:
        # Ctrl-C: the connections still open are closed as interrupted,
        # each after the bytes it held back (out of order, behind a hole):
        # they were read, and are not to be lost. Then the caller is told.
        for event in reassembler.finish(reason=CloseReason.INTERRUPTED):
            result = handle(event)
            if result is not None:
                yield result
        raise


def _read_all(
    paths: Sequence[str],
    handle: Callable[[StreamEvent], T | None],
    ports: frozenset[int],
    stats: SourceStats,
    on_error: ErrorHook | None,
    progress: ProgressHook | None,
    shard: tuple[int, int],
    clock: ClockHook | None,
    reassembler: Reassembler,
) -> Iterator[T]:
    """handle_stream_events' reading, capture by capture."""
    total = _total_size(paths)
    large = large_run(total)
    done = 0  # stored bytes of the captures already finished
    for number, path in enumerate(paths):
        # Judged at the capture's first segment: by the boundary's rounds
        # below (-j), or by the reassembler as it is fed.
        rewinds = reassembler.stats.rewinds
        if not number and clock is not None and shard[1] > 1:
            for event in _run_start(path, ports, reassembler, large):
                result = handle(event)
                if result is not None:
                    yield result
        elif number:
            reassembler.start_capture()
            if clock is not None and shard[1] > 1:
                boundary = _capture_boundary(
                    path, ports, reassembler, clock, number, large, shard
                )
                for event in boundary:
                    result = handle(event)
                    if result is not None:
                        yield result
        unknown = stats.decode.unknown_linktype
        errors: list[CaptureError] = []
        try:
            yield from _one_capture(
                path,
                ports,
                reassembler,
                stats,
                done,
                total,
                progress,
                shard,
                handle,
                large,
            )
        except CaptureError as damage:
            errors.append(damage)
            # Nothing of it was read: not opened, not a capture, or cut
            # within its file header.
            if not damage.damaged or damage.offset == 0:
                stats.unread.append(path)
        if reassembler.stats.rewinds > rewinds:
            stats.rewinds.append(path)
        skipped = stats.decode.unknown_linktype - unknown
        if skipped:
            # Else a capture of a link type nothing here decodes would read
            # as one without SMTP, and the run would end as a clean one.
            packets = "1 packet" if skipped == 1 else f"{skipped:,} packets"
            message = f"{packets} skipped: their link type is not one smtpscope decodes"
            errors.insert(0, CaptureError(path, 0, message, damaged=False))
        for problem in errors:
            stats.errors.append(problem)
            log.warning("%s", problem)
            if on_error is not None:
                on_error(problem)
        done = stats.bytes
    # With connections shared out between readers, the others may have read
    # on to a later time: connections idle by then close as idle here too.
    shared = clock("end", reassembler.clock) if clock is not None else None
    for event in reassembler.finish(clock=shared):
        result = handle(event)
        if result is not None:
            yield result


def _capture_boundary(
    path: str,
    ports: frozenset[int],
    reassembler: Reassembler,
    clock: ClockHook,
    number: int,
    large: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> list[StreamEvent]:
    """``start_capture``'s check for capture ``number``, as a reader of all
    connections makes it at the capture's first segment.

    Each reader finds that segment itself (``first_segment_time``). When
    there is none, the check waits for the next capture, as in a reader of
    all. Otherwise two rounds: the first agrees on the clock, and the
    connections idle by then are closed here as that reader closed them
    (it saw the others' packets go on); the second agrees on the last
    packet of any connection read so far (``Reassembler.reached``), which
    the first segment is judged by.
    """
    first = first_segment_time(path, ports, large)
    if first is None:
        return []
    # A packet this reader holds back, the last it read (stamped ahead:
    # Reassembler._hold_ahead), is judged by that segment as in a reader of all,
    # before the clock it may stand for is told.
    events = reassembler.next_segment_at(first)
    latest_clock = clock(f"capture {number} clock", reassembler.clock)
    if latest_clock is not None:
        events += reassembler.expire(latest_clock)
    latest = clock(f"capture {number} open", reassembler.reached)
    after: int | None = None
    holds_first = False
    if reassembler.holds_back(first, latest):
        # Stamped far ahead: a reader of all judges it by the segment after
        # it, which this reader may not hold (found in review: an ACK
        # stamped 22 minutes ahead, the first of a rotated file, and the
        # next packet of its worker's share came after a real pause, so the
        # worker took it for a pause where one process found it an outlier).
        # Rare: only then is the capture looked into a second time.
        segments = first_segments(path, ports, large, 2)
        if len(segments) == 2 and segments[0][0] == first:
            after = segments[1][0]
            holds_first = _owner_of(segments[0][1], shard) == shard[0]
    events += reassembler.new_capture(
        first, latest, after=after, holds_first=holds_first
    )
    return events


def _run_start(
    path: str, ports: frozenset[int], reassembler: Reassembler, large: bool = False
) -> list[StreamEvent]:
    """The first capture's first segment sweeps in a reader of all
    connections, and the clock counts from it: a reader of some (a -j
    worker) counts from it too, whether that segment is its own or not.

    Found in review: a worker whose first packet was stamped seven hours
    ahead, the second of the run, took it for the time (nothing before it
    to hold it back against), where one process held it back as an outlier
    (the packet before it, another worker's, had set the clock); the worker
    then swept there, and closed as idle a connection one process closed at
    the end of the capture. No round is needed: every worker finds the same
    segment in the same file. When the capture has none, the next one's
    boundary (``_capture_boundary``) sets the clock, as its first segment
    does in a reader of all.
    """
    first = first_segment_time(path, ports, large)
    if first is None:
        return []
    return reassembler.new_capture(first, None)


def first_segment_time(
    path: str, ports: frozenset[int], large: bool = False
) -> int | None:
    """When the first segment that a reader of all connections feeds from
    ``path`` was captured; None when it feeds none (nothing on ``ports``,
    not readable, damaged before that segment). A -j worker, which feeds
    only its own connections' segments, learns it so. ``large``: whether
    the run is a large one (``large_run``), as ``_one_capture`` judges it.

    The capture is read as ``_one_capture`` reads it for one reader, but
    only up to that segment: through libpcap's filter where that reader
    would use it, so that a large capture without SMTP costs a pass in C;
    from the start with the Python reader where libpcap refuses, stops on
    damage or hands over a record as long as the snaplen; decoded by
    ``decode_at``, of which the libpcap loop has a copy inline. It reads
    in small pieces, and libpcap without a thread or a pipe: reading as
    ``_one_capture`` does took 1.3 ms per capture (3.9 ms through libpcap),
    and every -j worker waits for it at every capture.
    """
    log.debug("looking for the first segment of %s", path)
    found = first_segments(path, ports, large, 1)
    return found[0][0] if found else None


def first_segments(
    path: str, ports: frozenset[int], large: bool = False, count: int = 2
) -> list[tuple[int, FlowKey]]:
    """The time and flow key of each of the first ``count`` segments that a
    reader of all connections feeds from ``path``, read as
    ``first_segment_time`` reads (fewer when the capture holds fewer, or
    when it is damaged or unreadable before them)."""
    found: list[tuple[int, FlowKey]] = []
    fast = _fast_path(path, large)
    if fast is not None and not fast.inflate:  # libpcap alone cannot inflate
        try:
            return _first_filtered(path, ports, fast, count)
        except libpcap.LibpcapError as stopped:
            log.debug("libpcap left %s to the Python reader: %s", path, stopped)
    try:
        with open_capture(path, chunk_size=_FIRST_CHUNK_BYTES) as reader:
            decode_stats = DecodeStats()
            for linktype, data, records in reader.batches():
                for ts, start, stop in records:
                    segment = decode_at(
                        linktype, data, start, stop, ports, decode_stats
                    )
                    if segment is not None:
                        found.append((ts, segment[0]))
                        if len(found) == count:
                            return found
    except CaptureError:
        pass
    return found


# Enough for the first segment of most captures, a sixteenth of a chunk.
_FIRST_CHUNK_BYTES = 64 * 1024


def in_time_order(paths: Sequence[str]) -> list[str]:
    """``paths`` once each, the regular files by the time of their first
    packet (those with none after them, ties in the order given); standard
    input and other files that are not regular (a named pipe, a device)
    stay where they were given.

    The files a capture was rotated into must be read in time order for
    connections to go on from one into the next, and names do not always
    sort so (tcpdump -C writes NAME, NAME1, ..., NAME10, which a shell
    glob lists before NAME2). mergecap and Zeek order their inputs by time
    too. A pipe cannot be looked into before it is read: what was read
    from it would be gone. A file named twice (the same device and inode)
    is read once: twice, its sessions would all come twice.
    """
    unique, _ = once_each(paths)
    regular = [i for i, path in enumerate(unique) if _regular(path)]
    firsts = {i: _first_packet_time(unique[i]) for i in regular}
    ordered = sorted(regular, key=lambda i: (firsts[i] is None, firsts[i] or 0, i))
    out = list(unique)
    for slot, i in zip(regular, ordered, strict=True):
        out[slot] = unique[i]
    return out


def once_each(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``paths`` with every file after its first mention left out, and the
    ones left out, each with the name it was first given by.

    The same file is the same device and inode, whatever the name.
    """
    first: dict[tuple[int, int], str] = {}
    once: list[str] = []
    repeats: list[tuple[str, str]] = []
    for path in paths:
        same = _file_identity(path)
        if same is None:  # standard input, or reading it will say what fails
            once.append(path)
        elif same in first:
            repeats.append((path, first[same]))
        else:
            first[same] = path
            once.append(path)
    return once, repeats


def _file_identity(path: str) -> tuple[int, int] | None:
    """The device and inode of a file; None for standard input or none."""
    if path == "-":
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _regular(path: str) -> bool:
    """Whether ``path`` is a regular file, or missing (reading will say)."""
    if path == "-":
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _first_packet_time(path: str) -> int | None:
    """When ``path``'s first packet was captured; None without one."""
    try:
        with open_capture(path, chunk_size=_FIRST_CHUNK_BYTES) as reader:
            for _, _, records in reader.batches():
                for ts, _, _ in records:
                    return ts
    except CaptureError:
        return None
    return None


def _first_filtered(
    path: str, ports: frozenset[int], fast: _FastPath, count: int
) -> list[tuple[int, FlowKey]]:
    """``first_segments`` through libpcap's filter for all connections.

    Raises ``LibpcapError`` where a reader of all connections goes on with
    the Python reader from the start before it feeds a segment.
    """
    reader = libpcap.first_that_compiles(
        lambda expression: libpcap.open_filtered(path, expression, nano=fast.nano),
        [libpcap.smtp_filter(ports, tags=tags) for tags in libpcap.TAGS],
    )
    snaplen = fast.snaplen
    decode_stats = DecodeStats()
    found: list[tuple[int, FlowKey]] = []
    with reader:
        for packet in reader:
            data = packet.data
            if len(data) >= snaplen or not packet.ts:
                raise libpcap.LibpcapError("a record the Python reader reads")
            segment = decode_at(
                packet.linktype, data, 0, len(data), ports, decode_stats
            )
            if segment is not None:
                found.append((packet.ts, segment[0]))
                if len(found) == count:
                    return found
    if reader.error is not None:
        raise libpcap.LibpcapError(reader.error)
    return found


def _one_capture(
    path: str,
    ports: frozenset[int],
    reassembler: Reassembler,
    stats: SourceStats,
    done: int,
    total: int | None,
    progress: ProgressHook | None,
    shard: tuple[int, int],
    handle: Callable[[StreamEvent], T | None],
    large: bool,
) -> Iterator[T]:
    """Read capture ``path``; ``large``: whether the run is a large one
    (``large_run`` of ``total``), which ``_read_all`` judged once."""
    on_read = None
    if progress is not None:
        on_read = _offset_progress(progress, path, done, total)
    decode_stats = stats.decode
    feed = reassembler.feed
    # With several workers each keeps the connections whose ports hash to
    # it: the hash is the same both ways, so a connection stays whole.
    mine, parts = shard
    sharded = parts > 1
    owners: dict[FlowKey, int] = {}  # see _owner
    skip = 0
    fast = _fast_path_or_why(path, large)
    if isinstance(fast, str):
        log.debug("the Python reader takes %s: %s", path, fast)
    else:
        delivered = yield from _filtered_capture(
            path, ports, reassembler, stats, on_read, shard, handle, fast
        )
        if delivered is None:
            return
        # libpcap stopped on damage: the Python reader finds exactly where,
        # after the segments libpcap already delivered.
        skip = delivered
        stats.captures -= 1
    reader = open_capture(path, on_read=on_read)
    stats.captures += 1
    log.info("reading %s", path)
    # Packets taken from the batches: if reading stops part way, the reader's
    # count would include the rest of the batch.
    taken = 0
    # Segments decoded here for another shard's connections: not this
    # reader's, so not in its smtp_packets (the other reader counts them).
    decoded_before = decode_stats.tcp
    other_shards = 0
    try:
        with reader:
            for linktype, data, records in reader.batches():
                for ts, start, stop in records:
                    taken += 1
                    segment = decode_at(
                        linktype, data, start, stop, ports, decode_stats
                    )
                    if segment is not None:
                        if sharded:
                            owner = owners.get(segment[0])
                            if owner is None:
                                owner = _owner(segment, parts, owners)
                            if owner != mine:
                                other_shards += 1
                                continue
                        if skip:
                            skip -= 1
                            continue
                        for event in feed(ts, segment):
                            result = handle(event)
                            if result is not None:
                                yield result
    finally:
        stats.packets += taken
        stats.bytes += reader.raw_bytes_read
        stats.smtp_packets += decode_stats.tcp - decoded_before - other_shards


# Below this size the Python reader is quick enough and counts every packet.
FAST_PATH_MIN_BYTES = 16 * 1024 * 1024
# In a run of captures that add up to this much (a capture rotated into
# files of a few MB, say), plain captures from LARGE_RUN_MIN_BYTES on go
# through libpcap too: the Python reader decodes every packet of them, SMTP
# or not, and every -j worker does so for all captures. The 1 GB benchmark
# capture cut into 108 files of 10 MB took 3.7 s in one process through the
# Python reader, 2.6 s through libpcap (-j 2: 2.8 and 2.0 s); cut into 537
# files of 2 MB, 3.6 and 3.1 s (-j 2: 3.1 and 2.9 s). At 1 MB a file the
# two paths cost one process the same. Compressed captures keep their own
# least size: each starts a process to inflate it, and 537 files of 2 MB
# gzipped took 45 s that way, 9.7 s through the Python reader.
LARGE_RUN_BYTES = 64 * 1024 * 1024
LARGE_RUN_MIN_BYTES = 1024 * 1024
_FULL_SNAPLEN = 65535


def _owner(segment: Segment, parts: int, owners: dict[FlowKey, int]) -> int:
    """The worker of ``parts`` that owns the segment's connection,
    remembered in ``owners`` by flow key: the hash takes a microsecond (it
    parses both addresses), and every segment asks."""
    if len(owners) >= _OWNERS_LIMIT:
        owners.clear()  # the open connections' keys come back at once
    src_ip, dst_ip, src_port, dst_port = key = segment[0]
    owner = owners[key] = shard_of(src_ip, src_port, dst_ip, dst_port, parts)
    return owner


_OWNERS_LIMIT = 4096  # as capture.decode's cache of flow keys


def _owner_of(key: FlowKey, shard: tuple[int, int]) -> int:
    """Which reader of ``shard``'s parts owns the connection of ``key``."""
    src_ip, dst_ip, src_port, dst_port = key
    return shard_of(src_ip, src_port, dst_ip, dst_port, shard[1])


# libpcap's stream is read a quarter MiB at a time, not a MiB as files are.
# Each read is a new bytes object whose size depends on how far libpcap's
# thread happened to be ahead, and reads of up to a MiB left the C heap
# holding 2 to 3 MiB more in some runs than in others: on the 1 GB benchmark
# capture, peaks of 35.2 to 37.9 MiB for the same input, against 35.4 to
# 35.6 at this size, in the same time.
_PIPE_CHUNK = 1 << 18


def large_run(total: int | None) -> bool:
    """Whether captures adding up to ``total`` stored bytes (None: not
    known, as with standard input) make a large run (``LARGE_RUN_BYTES``)."""
    return total is not None and total >= LARGE_RUN_BYTES


def _fast_path(path: str, large: bool = False) -> _FastPath | None:
    """How libpcap's path reads ``path``: a large pcap or pcapng file, plain
    or gzip-compressed (``inflate``), when libpcap is at hand; None for any
    other file, which the Python reader reads. ``large``: in a large run
    (see ``large_run``), where smaller plain files qualify too."""
    fast = _fast_path_or_why(path, large)
    return fast if isinstance(fast, _FastPath) else None


def _fast_path_or_why(path: str, large: bool) -> _FastPath | str:
    """``_fast_path``, or why the Python reader reads ``path`` (for -vv)."""
    if path == "-":
        return "standard input"
    if os.environ.get("SMTPSCOPE_NO_LIBPCAP"):
        return "SMTPSCOPE_NO_LIBPCAP is set"
    least_plain = FAST_PATH_MIN_BYTES
    if large:
        least_plain = min(least_plain, LARGE_RUN_MIN_BYTES)
    least_inflated = _INFLATED_MIN_BYTES
    try:
        size = os.path.getsize(path)
        if size < min(least_inflated, least_plain):
            # Too small either way; and a named pipe (size 0), opened for
            # its head, would lose it.
            return _too_small(size, least_plain)
        with open(path, "rb") as stream:
            head = stream.read(_HEAD_BYTES)
            inflate = head.startswith(GZIP_MAGIC)
            least = least_inflated if inflate else least_plain
            if size < least:
                return _too_small(size, least)
            if inflate:
                stream.seek(0)
                head = Inflated(stream, path).read()  # a MiB at most
    except (OSError, CaptureError) as error:
        return f"its head could not be read ({error})"  # the reader says more
    fast = _libpcap_reads(head)
    if isinstance(fast, str):
        return fast
    return fast._replace(inflate=True) if inflate else fast


def _too_small(size: int, least: int) -> str:
    return f"{size:,} bytes, under the {least:,} from which libpcap's filter pays"


# Enough for a pcapng Section Header Block and the first interface's block.
_HEAD_BYTES = 64 * 1024


# What libpcap takes a pcapng file's snaplen to be.
_PCAPNG_SNAPLEN = 262_144


class _FastPath(NamedTuple):
    """What libpcap's path needs to know of a capture, from its head.

    A pcapng file's snaplens are its interfaces' own, which libpcap does
    not cut packets to (it stops on a longer one, and the Python reader
    takes over): ``snaplen`` is then the largest libpcap takes.
    """

    snaplen: int
    linktype: int
    inflate: bool = False  # gzip-compressed: see capture.inflate
    # A pcap file in microseconds is read so (see libpcap.FilteredPipe).
    nano: bool = True


def _libpcap_reads(head: bytes) -> _FastPath | str:
    """What libpcap's path needs of the capture beginning with ``head``,
    when libpcap is at hand and may read it; else why not."""
    found = file_head(head)
    if found is None:
        return "not a capture format libpcap reads"
    if found.linktype in libpcap.READ_OTHERWISE:
        return f"link type {found.linktype}, which libpcap's filter reads otherwise"
    if not libpcap.available():
        return "libpcap could not be loaded"
    if found.format == "pcapng":
        otherwise = _resolution_read_otherwise(found.tsresol)
        if otherwise is not None:
            return otherwise
        return _FastPath(_PCAPNG_SNAPLEN, found.linktype)
    # libpcap cuts every packet to the header's snaplen, the Python reader
    # does not: with a small snaplen (records longer than it are damage, but
    # seen) the two would disagree, so only the Python reader reads those.
    if found.snaplen < _FULL_SNAPLEN:
        return f"snap length {found.snaplen}, which libpcap would cut packets to"
    return _FastPath(found.snaplen, found.linktype, nano=found.nano)


# The finest binary time resolution, 2^-34 s, that libpcap turns into
# nanoseconds as the Python reader does: it multiplies a tick count under
# 2^N by 10^9 in 64 bits, which overflow from 2^-35 s on, and a pcapng
# capture whose interface said 2^-40 s had other times through libpcap
# than through the Python reader (found in review). libpcap also reads
# decimal resolutions finer than 10^-18 s, which the Python reader
# refuses as damage (capture.pcapfile._FINEST_UNITS).
_LIBPCAP_FINEST_BINARY = 34
_FINEST_DECIMAL = 18


def _resolution_read_otherwise(tsresol: int | None) -> str | None:
    """Why libpcap's path would read the times of a pcapng capture whose
    first interface has the time resolution ``tsresol`` (if_tsresol as
    stored) otherwise than the Python reader; None when it reads them alike.
    Interfaces described further into the file are not looked at."""
    if tsresol is None:
        return None
    if tsresol & 0x80:
        if tsresol & 0x7F <= _LIBPCAP_FINEST_BINARY:
            return None
        shown = f"2^-{tsresol & 0x7F}"
    elif tsresol <= _FINEST_DECIMAL:
        return None
    else:
        shown = f"10^-{tsresol}"
    return f"interface time resolution of {shown} s, which libpcap reads otherwise"


# Captures compress about fourfold: this many compressed bytes hold about
# as much as FAST_PATH_MIN_BYTES uncompressed.
_INFLATED_MIN_BYTES = 4 * 1024 * 1024


def _open_inflating(
    path: str, ports: frozenset[int], shard: tuple[int, int], fast: _FastPath
) -> tuple[libpcap.FilteredPipe, InflatePump]:
    """libpcap's filtered stream of what ``path`` inflates to.

    The pipe cannot be read twice, so the filter is settled first: with
    VLAN terms where libpcap has them for the link type (see _open_pipe).
    """
    expressions = [libpcap.smtp_filter(ports, shard, tags=t) for t in libpcap.TAGS]
    expression = next(
        (e for e in expressions if libpcap.compiles(fast.linktype, e)),
        expressions[-1],
    )
    pump = InflatePump(path)
    try:
        pipe = libpcap.FilteredPipe(path, expression, pump.read_fd, nano=fast.nano)
    except libpcap.LibpcapError:
        pump.stop()  # its reader is gone
        raise
    return pipe, pump


def _open_pipe(
    path: str, ports: frozenset[int], shard: tuple[int, int], nano: bool
) -> libpcap.FilteredPipe:
    """Open libpcap's filtered stream, with the first way of keeping tagged
    frames that libpcap has for the file's link type (see smtp_filter)."""
    return libpcap.first_that_compiles(
        lambda expression: libpcap.FilteredPipe(path, expression, nano=nano),
        [libpcap.smtp_filter(ports, shard, tags=tags) for tags in libpcap.TAGS],
    )


def _filtered_capture(
    path: str,
    ports: frozenset[int],
    reassembler: Reassembler,
    stats: SourceStats,
    on_read: Callable[[int], None] | None,
    shard: tuple[int, int],
    handle: Callable[[StreamEvent], T | None],
    fast: _FastPath,
) -> Generator[T, None, int | None]:
    """Read ``path`` through libpcap with a BPF filter for ``ports``;
    decompressed on the way when ``fast.inflate`` (``capture.inflate``).

    Returns None when the file was read to its end, or the number of TCP
    segments delivered before libpcap (or the inflater) stopped on damage
    or libpcap handed over a record as long as ``fast.snaplen``.
    """
    stats.captures += 1
    filtered_before = stats.filtered  # put back if the Python reader takes over
    pump: InflatePump | None = None
    try:
        if not fast.inflate:
            pipe = _open_pipe(path, ports, shard, fast.nano)
        else:
            pipe, pump = _open_inflating(path, ports, shard, fast)
    except (libpcap.LibpcapError, OSError) as refused:
        log.info("libpcap fast path not used for %s: %s", path, refused)
        return 0
    # How far into the file as stored: libpcap's own stream is a pipe.
    position = pipe.position if pump is None else lambda: pump.raw_bytes
    stats.filtered = True
    log.info("reading %s through libpcap", path)
    # The loop below repeats the one in _one_capture on purpose: a shared
    # generator between them costs about 8 % of a run (measured on 1 GB).
    reader = CaptureReader(
        path, pipe.stream, owns_stream=True, size=None, chunk_size=_PIPE_CHUNK
    )
    decode_stats = stats.decode
    feed = reassembler.feed
    mine, parts = shard
    sharded = parts > 1
    owners: dict[FlowKey, int] = {}  # see _owner
    # The segments delivered are those decoded less those of other shards:
    # counted so rather than one by one.
    decoded_before = decode_stats.tcp
    other_shards = 0
    # What the counts were before this capture: where the Python reader
    # takes over, it reads and counts the capture again from its start.
    decoded = replace(decode_stats)
    taken = 0  # as in _one_capture
    stopped: str | None = None
    read_to_end = False
    snaplen = fast.snaplen
    # decode_at's fast path runs inline below, with these as locals: a call
    # and its global lookups per packet are a tenth of the packet path. Its
    # flow keys come from a cache of watched flows only, which spares
    # reading and testing the ports of every packet.
    eth_ipv4_tcp = ETH_IPV4_TCP_NO_PORTS
    eth_ipv6_tcp = ETH_IPV6_TCP_NO_PORTS
    watched: dict[bytes, FlowKey] = {}  # see watched_key
    try:
        with reader:
            for linktype, data, records in reader.batches():
                if on_read is not None:
                    on_read(position())  # a batch: at most a MiB read
                ethernet = linktype == LINKTYPE_ETHERNET
                for ts, start, stop in records:
                    size = stop - start
                    if size >= snaplen or not ts:
                        # libpcap cuts a record longer than the snaplen down
                        # to it without a word; the Python reader keeps it
                        # whole. This one may have been cut: the Python
                        # reader takes over from here. So it does at a
                        # time of 0, which libpcap gives a pcapng Simple
                        # Packet Block, and the Python reader the time of
                        # the packet before it.
                        raise _Clipped
                    taken += 1
                    segment: Segment | None = None
                    if ethernet and size >= 54:
                        # decode_at's fast path, inline: untagged Ethernet,
                        # then IPv4 with a 20-byte header and no
                        # fragmentation or IPv6 with TCP next, a sound TCP
                        # header, the whole packet captured. ``where`` is
                        # then the addresses and ports, side by side.
                        where: bytes | None = None
                        (ethertype, ver_ihl, total, frag, proto, seq, ack,
                         data_offset, flags) = eth_ipv4_tcp(data, start)  # fmt: skip
                        payload_at = 34 + ((data_offset >> 4) << 2)
                        wire_end = 14 + total
                        if (
                            ethertype == 0x0800
                            and ver_ihl == 0x45
                            and proto == 6
                            and not frag & 0x3FFF
                            and 54 <= payload_at <= wire_end <= size
                        ):
                            where = data[start + 26 : start + 38]
                        elif ethertype == 0x86DD and size >= 68:
                            (version, payload_len, next_header, seq, ack,
                             data_offset, flags,
                             ) = eth_ipv6_tcp(data, start)  # fmt: skip
                            payload_at = 54 + ((data_offset >> 4) << 2)
                            wire_end = 54 + payload_len
                            if (
                                version >> 4 == 6
                                and next_header == 6
                                and payload_len
                                and 74 <= payload_at <= wire_end <= size
                            ):
                                where = data[start + 22 : start + 58]
                        if where is not None:
                            # A key in watched is on a watched port.
                            key = watched.get(where)
                            if key is None:
                                key = watched_key(where, ports, watched)
                                if key is None:
                                    decode_stats.other_port += 1
                                    continue
                            decode_stats.tcp += 1
                            segment = (
                                key,
                                seq,
                                ack,
                                flags,
                                data[start + payload_at : start + wire_end],
                                0,
                            )
                    if segment is None:
                        segment = decode_at(
                            linktype, data, start, stop, ports, decode_stats
                        )
                    if segment is not None:
                        if sharded:
                            owner = owners.get(segment[0])
                            if owner is None:
                                owner = _owner(segment, parts, owners)
                            if owner != mine:
                                other_shards += 1
                                continue
                        for event in feed(ts, segment):
                            result = handle(event)
                            if result is not None:
                                yield result
        stopped = pipe.finish()
        read_to_end = stopped is None
    except _Clipped:
        stopped = "a record libpcap may have cut or left without a time"
    except CaptureError:
        # The stream libpcap writes is well formed unless it was cut short:
        # either way, the Python reader below says what is wrong with the file.
        stopped = pipe.finish() or "filtered stream ended early"
    finally:
        pipe.close()
        if pump is not None:
            # Damaged gzip ends the inflated capture early, which libpcap
            # may take for its end: the Python reader then finds the damage.
            # Stopped early, the inflater is not waited for.
            if read_to_end:
                stopped = pump.join()
            else:
                pump.stop()
        stats.packets += taken
        delivered = decode_stats.tcp - decoded_before - other_shards
        stats.smtp_packets += delivered
    if stopped is None:
        stats.bytes += os.path.getsize(path)
        return None
    log.debug("libpcap stopped on %s: %s", path, stopped)

    # Handed over: the Python reader reads the whole capture again, counts
    # every packet of it (not only those the filter passed) and decodes each
    # again. So what was counted here is taken back, the capture does not
    # count as filtered, and every count is the one a Python reader of the
    # file alone gives: the figures do not depend on where libpcap stopped.
    stats.packets -= taken
    stats.smtp_packets -= delivered
    _put_back(decode_stats, decoded)
    stats.filtered = filtered_before
    return delivered


def _put_back(decode_stats: DecodeStats, before: DecodeStats) -> None:
    """Set ``decode_stats`` in place (the readers hold it) to ``before``."""
    for counter in fields(DecodeStats):
        setattr(decode_stats, counter.name, getattr(before, counter.name))


class _Clipped(Exception):
    """libpcap handed over a record that it may have cut to the snaplen."""


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
