"""libpcap through ctypes: live capture, and the fast path for large pcap files.

Most packets in a forensic capture are not SMTP. Handing each of them to
Python costs about a microsecond before any decoding; libpcap instead runs a
BPF filter in C while it reads, so only segments on the SMTP ports reach
Python. The pure-Python reader (``capture.pcapfile``) stays the reference: it
handles pcapng, gzip and standard input, counts every packet, and is used to
locate damage exactly when libpcap reports an error.

Nothing here is required for reading files: when libpcap cannot be loaded,
or cannot compile the filter for a link type, ``available()``/
``open_filtered`` say so and the caller falls back to the Python reader.

Live capture (``open_live``) has no fallback: it opens an interface with
pcap_create/pcap_activate, sets a kernel BPF filter and non-blocking mode,
and hands out the packets waiting in the ring, for a caller that waits on
``fileno()`` with select. Timestamps are nanoseconds where the platform can
give them (Linux can), else microseconds scaled up.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import logging
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, TypeVar

from capture.decode import (
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_PPP,
    LINKTYPE_PPP_HDLC,
    PPPOE_SESSION,
)
from capture.pcapfile import RawPacket

log = logging.getLogger(__name__)

_PRECISION_MICRO = 0  # PCAP_TSTAMP_PRECISION_MICRO
_PRECISION_NANO = 1  # PCAP_TSTAMP_PRECISION_NANO
_ERRBUF_SIZE = 256  # PCAP_ERRBUF_SIZE
_NS_PER_S = 1_000_000_000
_U32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1  # 2**32 / golden ratio, odd


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _PktHdr(ctypes.Structure):
    _fields_ = (
        ("ts", _Timeval),
        ("caplen", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    )


class _BpfProgram(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p))


# struct pcap_pkthdr: a struct timeval of two C longs, then two uint32.
_HDR = struct.Struct("@llII")
_HDR_SIZE = ctypes.sizeof(_PktHdr)
assert _HDR.size == _HDR_SIZE


class _Stat(ctypes.Structure):
    _fields_ = (
        ("ps_recv", ctypes.c_uint),
        ("ps_drop", ctypes.c_uint),
        ("ps_ifdrop", ctypes.c_uint),
    )


class LibpcapError(Exception):
    """libpcap refused: could not open, compile or read."""


class FilterError(LibpcapError):
    """libpcap cannot compile or set a filter expression."""


class CapturePermissionError(LibpcapError):
    """The process may not capture on the interface (no CAP_NET_RAW)."""


# pcap_activate's results (pcap/pcap.h) that the caller must tell apart.
_PCAP_ERROR_NO_SUCH_DEVICE = -5
_PCAP_ERROR_PERM_DENIED = -8
_PCAP_ERROR_PROMISC_PERM_DENIED = -11
_PCAP_ERROR_TSTAMP_PRECISION_NOTSUP = -12


# The names libpcap's shared library goes by (Debian's libpcap0.8 links the
# first to its libpcap.so.1.x; macOS has the last).
_SONAMES: Final = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.A.dylib")


def _load_pcap() -> Any | None:
    """libpcap's shared library, loaded, or None.

    The usual names are tried first: ``find_library`` runs ``ldconfig -p``
    in a subprocess, and forking a process that holds tens of MiB (each -j
    worker asked for itself) cost a few milliseconds and briefly showed as
    a third process in the benchmark's summed memory.
    """
    for name in _SONAMES:
        with contextlib.suppress(OSError):
            return ctypes.CDLL(name)
    found = ctypes.util.find_library("pcap")
    if found is None:
        return None
    try:
        return ctypes.CDLL(found)
    except OSError:
        return None


@functools.cache
def _lib() -> Any | None:
    lib = _load_pcap()
    if lib is None:
        return None
    try:
        lib.pcap_open_offline_with_tstamp_precision.restype = ctypes.c_void_p
        lib.pcap_open_offline_with_tstamp_precision.argtypes = (
            ctypes.c_char_p,
            ctypes.c_uint,
            ctypes.c_char_p,
        )
    except (OSError, AttributeError):
        return None
    lib.pcap_compile.argtypes = (
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    )
    lib.pcap_setfilter.argtypes = (ctypes.c_void_p, ctypes.POINTER(_BpfProgram))
    lib.pcap_freecode.argtypes = (ctypes.POINTER(_BpfProgram),)
    lib.pcap_next_ex.argtypes = (
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.POINTER(_PktHdr)),
        ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
    )
    lib.pcap_datalink.argtypes = (ctypes.c_void_p,)
    lib.pcap_snapshot.argtypes = (ctypes.c_void_p,)
    lib.pcap_close.argtypes = (ctypes.c_void_p,)
    lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_file.argtypes = (ctypes.c_void_p,)
    lib.pcap_file.restype = ctypes.c_void_p
    lib.pcap_fopen_offline_with_tstamp_precision.restype = ctypes.c_void_p
    lib.pcap_fopen_offline_with_tstamp_precision.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_char_p,
    )
    lib.pcap_dump_fopen.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    lib.pcap_dump_fopen.restype = ctypes.c_void_p
    lib.pcap_dump_close.argtypes = (ctypes.c_void_p,)
    lib.pcap_loop.argtypes = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
    )
    lib.pcap_breakloop.argtypes = (ctypes.c_void_p,)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
    _declare_live(lib)
    return lib


def _declare_live(lib: Any) -> None:
    """Prototypes of the calls live capture makes (libpcap 1.5 and later)."""
    handle = ctypes.c_void_p
    lib.pcap_create.restype = ctypes.c_void_p
    lib.pcap_create.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    for name in (
        "pcap_set_snaplen",
        "pcap_set_promisc",
        "pcap_set_timeout",
        "pcap_set_immediate_mode",
        "pcap_set_buffer_size",
        "pcap_set_tstamp_precision",
    ):
        getattr(lib, name).argtypes = (handle, ctypes.c_int)
    lib.pcap_activate.argtypes = (handle,)
    lib.pcap_statustostr.argtypes = (ctypes.c_int,)
    lib.pcap_statustostr.restype = ctypes.c_char_p
    lib.pcap_get_tstamp_precision.argtypes = (handle,)
    lib.pcap_setnonblock.argtypes = (handle, ctypes.c_int, ctypes.c_char_p)
    lib.pcap_get_selectable_fd.argtypes = (handle,)
    lib.pcap_stats.argtypes = (handle, ctypes.POINTER(_Stat))
    lib.pcap_breakloop.argtypes = (handle,)


@functools.cache
def _libc() -> Any:
    """The C library, for the stdio calls around libpcap's FILE streams."""
    libc = ctypes.CDLL(None)
    libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    libc.fopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = (ctypes.c_int, ctypes.c_char_p)
    libc.fdopen.restype = ctypes.c_void_p
    libc.ftell.argtypes = (ctypes.c_void_p,)
    libc.ftell.restype = ctypes.c_long
    libc.fclose.argtypes = (ctypes.c_void_p,)
    libc.setvbuf.argtypes = (
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_size_t,
    )
    return libc


def _position(lib: Any, handle: int | None) -> int:
    """How far libpcap has read into its file, for a progress bar."""
    if handle is None:
        return 0
    stream = lib.pcap_file(handle)
    return int(_libc().ftell(stream)) if stream else 0


def available() -> bool:
    return _lib() is not None


def shard_of(src_ip: str, sport: int, dst_ip: str, dport: int, parts: int) -> int:
    """Which of ``parts`` workers owns a connection.

    The XOR of both ports and the low 32 bits of both addresses is the same
    both ways; the multiply spreads values that share a stride. BPF computes
    the same in 32-bit arithmetic (``_bpf_shard``).
    """
    mixed = sport ^ dport ^ _low32(src_ip) ^ _low32(dst_ip)
    return ((((mixed * _GOLDEN) & 0xFFFFFFFF) >> 16) & 0xFFFF) % parts


def _low32(ip: str) -> int:
    if ":" in ip:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, ip)[12:], "big")
    return int.from_bytes(socket.inet_aton(ip), "big")


def _bpf_shard(mine: int, parts: int) -> str:
    v4 = "tcp[0:2] ^ tcp[2:2] ^ ip[12:4] ^ ip[16:4]"
    v6 = "ip6[40:2] ^ ip6[42:2] ^ ip6[20:4] ^ ip6[36:4]"
    return " or ".join(
        f"({proto} and (((({mixed}) * {_GOLDEN}) >> 16) & 0xffff) % {parts} = {mine})"
        for proto, mixed in (("ip", v4), ("ip6", v6))
    )


def smtp_filter(
    ports: Iterable[int], shard: tuple[int, int] = (0, 1), *, tags: str = "vlan"
) -> str:
    """A BPF expression keeping what ``decode_tcp`` could want.

    TCP on the given ports, and IPv6 packets whose next header is not TCP:
    their TCP may sit behind extension headers, which plain BPF does not
    walk. ``tags`` says how VLAN-tagged frames are kept (``TAGS`` lists the
    ways, the first that libpcap compiles for a link type is the one):
    ``vlan`` looks through one or two tags and keeps whatever has a third;
    ``ethertype`` keeps every tagged frame, for link types without ``vlan``
    (Linux cooked capture, as ``tcpdump -i any`` writes); ``none`` for
    link types that carry no tags (raw IP). ``vlan`` and ``ethertype``
    also keep every PPPoE session frame.
    """
    wanted = " or ".join(f"port {port}" for port in sorted(ports))
    tcp = f"(tcp and ({wanted}))"
    mine, parts = shard
    if parts > 1:
        # Keep this worker's share early, in C: the port sum decides, as in
        # the Python check after decoding, which remains the authority.
        tcp = f"({tcp} and ({_bpf_shard(mine, parts)}))"
    # The next-header byte itself (RFC 8200 3), not ``ip6 proto 6``: libpcap
    # makes that true of TCP behind a Fragment header too, where ``port``
    # looks for no TCP header, so an atomic fragment (RFC 6946) on an SMTP
    # port would pass neither test.
    v6 = "(ip6 and ip6[6] != 6)"
    base = f"({tcp} or {v6})"
    if tags == "none":
        return base
    # PPPoE session frames all pass, for the decoder to read: ``pppoes``
    # moves the offsets as ``vlan`` does, and both cannot come last.
    pppoe = f"ether proto {PPPOE_SESSION:#06x}"
    if tags == "ethertype":
        # The decoder reads any number of tags; BPF here reads none.
        tpids = " or ".join(f"ether proto {tpid:#06x}" for tpid in _TPIDS)
        return f"{base} or ({tpids} or {pppoe})"
    # Nested, because each ``vlan`` moves the offsets for everything after
    # it in the expression, alternatives included; a third tag is left to
    # the decoder.
    level = f"{pppoe} or {base}"
    return f"{level} or (vlan and ({level} or (vlan and ({level} or vlan))))"


def first_that_compiles(
    open_with: Callable[[str], _Opened], filters: Sequence[str]
) -> _Opened:
    """``open_with`` each of ``filters`` in turn until one compiles.

    libpcap compiles some expressions for some link types only: ``vlan``
    not for Linux cooked capture, ether types not for raw IP. The last
    filter's error, if it has one too, is raised.
    """
    for expression in filters[:-1]:
        try:
            return open_with(expression)
        except FilterError:
            continue
    return open_with(filters[-1])


_Opened = TypeVar("_Opened")


# How smtp_filter may keep tagged frames, the most selective first.
TAGS = ("vlan", "ethertype", "none")
# 802.1Q, 802.1ad and the older QinQ tag protocol identifiers.
_TPIDS = (0x8100, 0x88A8, 0x9100)


def compiles(linktype: int, expression: str) -> bool:
    """Whether libpcap can compile ``expression`` for captures of ``linktype``
    (and should: never for ``READ_OTHERWISE``).

    Asked before a stream is handed over that cannot be read twice, where
    ``_open_pipe`` would otherwise try the filter and retry without VLAN
    terms on a fresh open.
    """
    lib = _lib()
    if lib is None or linktype in READ_OTHERWISE:
        return False
    handle = lib.pcap_open_dead(linktype, 262_144)
    if not handle:
        return False
    try:
        program = _BpfProgram()
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, 0):
            return False
        lib.pcap_freecode(ctypes.byref(program))
        return True
    finally:
        lib.pcap_close(handle)


def open_filtered(path: str, expression: str, *, nano: bool = True) -> FilteredReader:
    """Open a classic pcap file with a BPF filter applied by libpcap; its
    times in microseconds unless ``nano`` (see _open_with_filter)."""
    lib, handle, buffer = _open_with_filter(path, expression, nano=nano)
    return FilteredReader(lib, handle, buffer, nano=nano)


def _open_with_filter(
    path: str, expression: str, fd: int | None = None, *, nano: bool = True
) -> tuple[Any, int, Any]:
    """libpcap's handle on ``path`` with the filter set, and its read buffer.

    With ``fd`` (the read end of a pipe that ``path``'s capture comes
    through), libpcap reads that instead, and owns it from then on: it is
    closed with the handle, or here on failure.

    ``nano``: hand times over in nanoseconds, as pcapng and nanosecond pcap
    files need; else in microseconds, as a microsecond pcap file holds them.
    libpcap scales a microsecond fraction to nanoseconds without a check,
    and pcap_dump writes it in 32 bits: a forged fraction of 5,000,000 came
    out another time than the Python reader's (found in review). Read as
    stored, it is handed over as stored.

    The buffer (None when libpcap opened the file itself) must outlive the
    handle: stdio reads into it until pcap_close.
    """
    lib = _lib()
    if lib is None:
        if fd is not None:
            os.close(fd)
        raise LibpcapError("libpcap is not available")
    errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
    precision = _PRECISION_NANO if nano else _PRECISION_MICRO
    handle, buffer = _open_buffered(lib, path, errbuf, fd, precision)
    if not handle and fd is not None:
        raise LibpcapError(errbuf.value.decode(errors="replace") or "cannot read")
    if not handle:
        handle = lib.pcap_open_offline_with_tstamp_precision(
            path.encode(), precision, errbuf
        )
    if not handle:
        raise LibpcapError(errbuf.value.decode(errors="replace"))
    try:
        _set_compiled_filter(lib, handle, expression)
    except LibpcapError:
        lib.pcap_close(handle)
        raise
    return lib, handle, buffer


# Filters compiled for capture files, by link type, snaplen and expression,
# kept for the next file: compiling a -j worker's filter takes about half a
# millisecond, and each worker compiled it twice per capture (for the
# capture's first segment, then to read it), so a capture rotated into 500
# files compiled the same filter a thousand times. A failure is kept too.
_COMPILED: dict[tuple[int, int, str], _BpfProgram | str] = {}
_COMPILED_MAX = 32


# Link types whose frames libpcap's filter reads otherwise than the decoder:
# files of them are read in Python whatever their size (capture.source), so
# that their tables do not depend on it, and no filter is compiled for them.
# - BSD loopback (LINKTYPE_NULL) stores its address family in the byte order
#   of the host that captured, which the file does not say: the decoder
#   guesses it from each frame, libpcap's filter takes the file's order and
#   dropped every frame of a capture converted between the two.
# - OpenBSD's loopback (LINKTYPE_LOOP) is big-endian always, but its IPv6
#   family is a BSD's (24, 28 or 30), and a filter compiled once per link
#   type (_COMPILED, on no file) tests for this host's: every IPv6 frame was
#   dropped (found in review).
# - PPP and PPP in HDLC framing (LINKTYPE_PPP, LINKTYPE_PPP_HDLC): libpcap's
#   filter takes the PPP protocol from bytes 2 and 3 always, where the
#   decoder also reads frames without HDLC's address and control bytes,
#   with the protocol in one byte, and Cisco's framing.
READ_OTHERWISE: Final = frozenset(
    {LINKTYPE_NULL, LINKTYPE_LOOP, LINKTYPE_PPP, LINKTYPE_PPP_HDLC}
)


def _set_compiled_filter(lib: Any, handle: int, expression: str) -> None:
    """``_set_filter`` for a capture file's handle, compiled once per link
    type, snaplen and expression (``_COMPILED``)."""
    key = (lib.pcap_datalink(handle), lib.pcap_snapshot(handle), expression)
    program = _COMPILED.get(key)
    if program is None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _forget_compiled(lib)
        program = _COMPILED[key] = _compile(lib, *key)
    if isinstance(program, str):
        raise FilterError(program)
    if lib.pcap_setfilter(handle, ctypes.byref(program)):  # libpcap copies it
        message = lib.pcap_geterr(handle).decode(errors="replace")
        raise FilterError(f"filter: {message}")


def _compile(
    lib: Any, linktype: int, snaplen: int, expression: str
) -> _BpfProgram | str:
    """``expression`` compiled for captures of ``linktype`` and ``snaplen``,
    or the error to raise for it."""
    if linktype in READ_OTHERWISE:
        return "filter: libpcap reads this link type's frames otherwise"
    dead = lib.pcap_open_dead(linktype, snaplen)
    if not dead:
        return "filter: libpcap could not compile for this link type"
    try:
        program = _BpfProgram()
        if lib.pcap_compile(dead, ctypes.byref(program), expression.encode(), 1, 0):
            return f"filter: {lib.pcap_geterr(dead).decode(errors='replace')}"
        return program
    finally:
        lib.pcap_close(dead)


def _forget_compiled(lib: Any) -> None:
    for program in _COMPILED.values():
        if isinstance(program, _BpfProgram):
            lib.pcap_freecode(ctypes.byref(program))
    _COMPILED.clear()


# stdio reads a file in blocks of its st_blksize, 4 KiB: a quarter of a
# million read calls per gigabyte, a third of libpcap's time in the kernel.
_READ_BUFFER_BYTES = 1 << 20
_IOFBF = 0  # setvbuf's full buffering (stdio.h)


def _open_buffered(
    lib: Any, path: str, errbuf: Any, fd: int | None, precision: int
) -> tuple[int | None, Any]:
    """libpcap on a stdio stream of ours with a large buffer: of ``path``,
    or of ``fd`` when given (closed here if it cannot be used).

    No handle when the file cannot be opened here or libpcap rejects it:
    the caller then lets pcap_open_offline try, for its error message.
    """
    libc = _libc()
    if fd is None:
        stream = libc.fopen(os.fsencode(path), b"rb")
    else:
        stream = libc.fdopen(fd, b"rb")
        if not stream:
            os.close(fd)
    if not stream:
        return None, None
    buffer = _stdio_buffer(libc, stream, _READ_BUFFER_BYTES)
    handle: int | None = lib.pcap_fopen_offline_with_tstamp_precision(
        stream, precision, errbuf
    )
    if not handle:
        libc.fclose(stream)  # libpcap leaves a stream it refused open
        return None, None
    return handle, buffer  # pcap_close closes the stream


def _stdio_buffer(libc: Any, stream: int, size: int) -> Any:
    """Give ``stream`` a buffer of ``size`` bytes; keep it while it is open.

    glibc ignores the size when setvbuf is not handed the memory itself.
    """
    buffer = ctypes.create_string_buffer(size)
    libc.setvbuf(stream, buffer, _IOFBF, size)
    return buffer


_STOPS = {signal.SIGINT, signal.SIGTERM}

# Linux pipes hold 64 KiB by default: Python drains that in about a
# millisecond, then sleeps until the libpcap thread is scheduled again and
# refills it. A pipe as large as an unprivileged process may ask for keeps
# libpcap far enough ahead that the reader rarely waits.
_PIPE_BYTES = 1 << 20


def widen_pipe(fd: int) -> None:
    """Ask for a pipe of _PIPE_BYTES: its writer then runs that far ahead."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    # Above the system's limit the call fails; the default size still works.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setsize, _PIPE_BYTES)


class FilteredPipe:
    """libpcap filters in a thread of its own and writes a pcap stream.

    ``pcap_loop`` with ``pcap_dump`` as its callback runs entirely in C, so
    ctypes releases the GIL for the whole pass: libpcap reads and filters
    the file on one core while Python decodes what passed on another, from
    the read end of a pipe, with the ordinary pcap reader.
    """

    def __init__(
        self, path: str, expression: str, fd: int | None = None, *, nano: bool = True
    ) -> None:
        # With ``fd``, the capture comes through that pipe (see
        # _open_with_filter), which is then closed with the rest. The stream
        # written is in the precision read (``nano``), which its header says.
        lib, handle, read_buffer = _open_with_filter(path, expression, fd, nano=nano)
        self._lib = lib
        self._handle: int | None = handle
        read_fd, write_fd = os.pipe()
        widen_pipe(write_fd)
        stream = _libc().fdopen(write_fd, b"wb")
        write_buffer = None
        if stream:
            # stdio buffers a pipe in 4 KiB: one write, and one wake-up of
            # the reader, per few packets, unless given more room.
            write_buffer = _stdio_buffer(_libc(), stream, _PIPE_BYTES // 16)
        dumper = lib.pcap_dump_fopen(handle, stream) if stream else None
        if not dumper:
            os.close(read_fd)
            if stream:
                _libc().fclose(stream)
            else:
                os.close(write_fd)
            lib.pcap_close(handle)
            raise LibpcapError("cannot write the filtered stream")
        self._dumper = dumper
        # stdio's memory for both streams, until pcap_close and
        # pcap_dump_close have closed them.
        self._buffers = (read_buffer, write_buffer)
        self.stream: BinaryIO = os.fdopen(read_fd, "rb", buffering=1 << 20)
        self.status = 0  # pcap_loop's result: 0 end of file, -1 error
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        # A pipe its reader lost (a Ctrl-C before the caller's try block)
        # would keep libpcap blocked in a write, and the process in exit(),
        # where the C library flushes libpcap's stream: closed at exit.
        atexit.register(self.close)
        # Ctrl-C can raise in Thread.start's wait, with the thread running
        # but not yet joinable: held back until it is (and never delivered
        # to libpcap's thread, which inherits this mask).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def _run(self) -> None:
        lib = self._lib
        callback = ctypes.cast(lib.pcap_dump, ctypes.c_void_p)
        self.status = lib.pcap_loop(self._handle, -1, callback, self._dumper)
        if self.status == -1:
            message = lib.pcap_geterr(self._handle)
            self.error = message.decode(errors="replace") if message else "error"
        lib.pcap_dump_close(self._dumper)  # closes the pipe: the reader ends

    def position(self) -> int:
        """How far libpcap has read into the file, for a progress bar."""
        return _position(self._lib, self._handle)

    def close(self) -> None:
        """Stop libpcap if it is still running and release everything."""
        if self._handle is None:
            return
        atexit.unregister(self.close)
        self._lib.pcap_breakloop(self._handle)
        self.stream.close()  # a blocked writer fails and sees the break
        if self._thread.ident is not None:  # started: see __init__
            self._thread.join()
        self._lib.pcap_close(self._handle)
        self._handle = None

    def finish(self) -> str | None:
        """Wait for libpcap to end; its error, if it stopped on damage."""
        self._thread.join()
        return self.error


class FilteredReader:
    """Iterates the packets that passed the filter, as ``RawPacket``.

    ``offset`` is -1: libpcap does not say where a record lies. ``error`` is
    set when reading stopped on damage rather than at the end of the file.
    """

    def __init__(
        self, lib: Any, handle: int, buffer: Any = None, *, nano: bool = True
    ) -> None:
        self._lib = lib
        self._handle: int | None = handle
        self._buffer = buffer  # stdio reads into it until pcap_close
        self._scale = 1 if nano else 1000  # the handle's fraction to ns
        self.linktype: int = lib.pcap_datalink(handle)
        self.packets_read = 0
        self.error: str | None = None

    def __enter__(self) -> FilteredReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._lib.pcap_close(self._handle)
            self._handle = None

    def position(self) -> int:
        """How far libpcap has read into the file, for a progress bar."""
        return _position(self._lib, self._handle)

    def __iter__(self) -> Iterator[RawPacket]:
        handle = self._handle
        if handle is None:
            return
        next_ex = self._lib.pcap_next_ex
        header = ctypes.POINTER(_PktHdr)()
        data = ctypes.POINTER(ctypes.c_ubyte)()
        href = ctypes.byref(header)
        dref = ctypes.byref(data)
        string_at = ctypes.string_at
        unpack = _HDR.unpack
        linktype = self.linktype
        scale = self._scale
        count = 0
        try:
            while True:
                status = next_ex(handle, href, dref)
                if status != 1:
                    break
                # One copy of the header and a struct unpack cost less than
                # walking the ctypes structure field by field.
                sec, frac, caplen, wire_len = unpack(string_at(header, _HDR_SIZE))
                count += 1
                # libpcap widens a pcap file's 32-bit fields as signed: past
                # 2038, or a forged fraction of 2**31 and more, came out
                # negative here where the pipe and the Python reader read
                # them unsigned (found in review: -j 2 then took the second
                # capture of a rotation dated 2040 for another recording).
                yield RawPacket(
                    (sec & _U32) * _NS_PER_S + (frac & _U32) * scale,
                    linktype,
                    string_at(data, caplen),
                    wire_len,
                    -1,
                )
        finally:
            self.packets_read = count
        if status == -1:
            message = self._lib.pcap_geterr(handle)
            self.error = message.decode(errors="replace") if message else "error"
            log.debug("libpcap stopped: %s", self.error)


@dataclass(frozen=True, slots=True)
class CaptureCounts:
    """libpcap's counters for one live handle since it was opened.

    ``received`` counts packets that passed the filter; ``dropped`` those
    the kernel had no room for in the ring; ``interface_dropped`` those the
    interface or its driver dropped, where the platform reports it.
    """

    received: int = 0
    dropped: int = 0
    interface_dropped: int = 0


def open_live(
    interface: str,
    expression: str,
    *,
    snaplen: int = 262144,
    promiscuous: bool = False,
    buffer_bytes: int = 16 << 20,
) -> LiveCapture:
    """Open ``interface`` for capture through a kernel BPF filter.

    Raises ``CapturePermissionError`` when the process lacks the privilege,
    ``LibpcapError`` for any other refusal (no such interface, a filter
    that does not compile).
    """
    lib = _lib()
    if lib is None:
        raise LibpcapError("libpcap is not available (install libpcap)")
    errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
    handle = lib.pcap_create(interface.encode(), errbuf)
    if not handle:
        raise LibpcapError(f"{interface}: {errbuf.value.decode(errors='replace')}")
    try:
        return _activate(
            lib, handle, interface, expression, snaplen, promiscuous, buffer_bytes
        )
    except BaseException:
        lib.pcap_close(handle)
        raise


def _activate(
    lib: Any,
    handle: int,
    interface: str,
    expression: str,
    snaplen: int,
    promiscuous: bool,
    buffer_bytes: int,
) -> LiveCapture:
    # Step 1: options, which only take effect before activation.
    lib.pcap_set_snaplen(handle, snaplen)
    lib.pcap_set_promisc(handle, int(promiscuous))
    # Immediate mode hands each packet over as it arrives instead of when a
    # ring block fills, so rows are written while the session is fresh.
    lib.pcap_set_immediate_mode(handle, 1)
    lib.pcap_set_timeout(handle, 100)
    lib.pcap_set_buffer_size(handle, buffer_bytes)
    nano = lib.pcap_set_tstamp_precision(handle, _PRECISION_NANO) == 0

    # Step 2: activation, where privileges and the interface are checked.
    status = lib.pcap_activate(handle)
    if status < 0:
        raise _activation_error(lib, handle, interface, status)
    if status > 0:
        log.warning("%s: %s", interface, _status_text(lib, handle, status))
    if nano and lib.pcap_get_tstamp_precision(handle) != _PRECISION_NANO:
        nano = False

    # Step 3: the kernel filter, then non-blocking reads for select.
    _set_filter(lib, handle, expression)
    errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
    if lib.pcap_setnonblock(handle, 1, errbuf) < 0:
        raise LibpcapError(f"{interface}: {errbuf.value.decode(errors='replace')}")
    fd = lib.pcap_get_selectable_fd(handle)
    if fd < 0:
        raise LibpcapError(f"{interface}: no selectable descriptor on this platform")
    return LiveCapture(lib, handle, interface, fd, nano)


def _activation_error(lib: Any, handle: int, interface: str, status: int) -> Exception:
    text = _status_text(lib, handle, status)
    if status in (_PCAP_ERROR_PERM_DENIED, _PCAP_ERROR_PROMISC_PERM_DENIED):
        return CapturePermissionError(f"{interface}: {text}")
    if status == _PCAP_ERROR_NO_SUCH_DEVICE:
        return LibpcapError(f"{interface}: no such interface ({text})")
    return LibpcapError(f"{interface}: {text}")


def _status_text(lib: Any, handle: int, status: int) -> str:
    # The generic statuses carry their detail in pcap_geterr; the specific
    # ones only in pcap_statustostr.
    detail = lib.pcap_geterr(handle) or b""
    summary = lib.pcap_statustostr(status) or b""
    text = detail.decode(errors="replace") or summary.decode(errors="replace")
    return text or f"libpcap status {status}"


def _set_filter(lib: Any, handle: int, expression: str) -> None:
    program = _BpfProgram()
    if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, 0):
        message = lib.pcap_geterr(handle).decode(errors="replace")
        raise FilterError(f"filter: {message}")
    failed = lib.pcap_setfilter(handle, ctypes.byref(program))
    lib.pcap_freecode(ctypes.byref(program))
    if failed:
        message = lib.pcap_geterr(handle).decode(errors="replace")
        raise FilterError(f"filter: {message}")


class LiveCapture:
    """One activated, filtered, non-blocking libpcap handle.

    Not thread-safe: one thread reads it. ``breakloop`` alone may be called
    from elsewhere (a signal handler), as libpcap allows.
    """

    def __init__(
        self, lib: Any, handle: int, interface: str, fd: int, nano: bool
    ) -> None:
        self._lib = lib
        self._handle: int | None = handle
        self.interface = interface
        self.linktype: int = lib.pcap_datalink(handle)
        self.nanosecond = nano
        self._fd = fd
        self._header = ctypes.POINTER(_PktHdr)()
        self._data = ctypes.POINTER(ctypes.c_ubyte)()
        self.error: str | None = None

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._fd

    def read(self, limit: int = 4096) -> list[RawPacket]:
        """The packets waiting now, at most ``limit`` of them; never blocks."""
        handle = self._handle
        if handle is None:
            return []
        next_ex = self._lib.pcap_next_ex
        href = ctypes.byref(self._header)
        dref = ctypes.byref(self._data)
        string_at = ctypes.string_at
        unpack = _HDR.unpack
        linktype = self.linktype
        scale = 1 if self.nanosecond else 1000
        packets: list[RawPacket] = []
        while len(packets) < limit:
            status = next_ex(handle, href, dref)
            if status != 1:
                if status < 0 and status != -2:  # -2: pcap_breakloop
                    message = self._lib.pcap_geterr(handle) or b"read error"
                    self.error = message.decode(errors="replace")
                break
            sec, frac, caplen, wire_len = unpack(string_at(self._header, _HDR_SIZE))
            packets.append(
                RawPacket(
                    sec * _NS_PER_S + frac * scale,
                    linktype,
                    string_at(self._data, caplen),
                    wire_len,
                    -1,
                )
            )
        return packets

    def counts(self) -> CaptureCounts:
        handle = self._handle
        if handle is None:
            return CaptureCounts()
        stat = _Stat()
        if self._lib.pcap_stats(handle, ctypes.byref(stat)) < 0:
            return CaptureCounts()
        return CaptureCounts(stat.ps_recv, stat.ps_drop, stat.ps_ifdrop)

    def breakloop(self) -> None:
        if self._handle is not None:
            self._lib.pcap_breakloop(self._handle)

    def close(self) -> None:
        if self._handle is not None:
            self._lib.pcap_close(self._handle)
            self._handle = None
