"""Decrypted TLS application data from tshark, driven through pyshark.

With an NSS key log (the SSLKEYLOGFILE format), tshark decrypts the TLS
sessions whose secrets it finds and hands each record's plaintext to the
next dissector. SMTP and IMF dissection is switched off here so that the
plaintext arrives as raw ``data``, which goes through smtpscope's own SMTP
parser. Sessions without keys give no plaintext and stay as they were.

This module alone needs tshark; nothing is imported from pyshark until a
key log is actually used.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with: apt-get install tshark"


class DecryptError(Exception):
    """Decryption cannot be done: tshark missing or failing."""


@dataclass(frozen=True, slots=True)
class DecryptedChunk:
    """Plaintext of one TLS record, or of the records one frame completed."""

    ts: int  # ns, the frame that completed the record
    from_client: bool
    data: bytes


# (client ip, client port, server ip, server port)
Endpoints = tuple[str, int, str, int]

# One end of a connection: (ip, port).
End = tuple[str, int]

# Both ends of a connection, the lesser first: the same whichever end
# sent a packet, and whichever end the session takes for the client.
Pair = tuple[End, End]


@dataclass(frozen=True, slots=True)
class _Sent:
    """Plaintext of one TLS record and the end that sent it."""

    ts: int  # ns, the frame that completed the record
    sender: End
    data: bytes


@dataclass(slots=True)
class _Stream:
    first_ts: int
    sent: list[_Sent]


def _pair(one: End, other: End) -> Pair:
    return (one, other) if one <= other else (other, one)


class DecryptedStreams:
    """Decrypted chunks per TCP connection, handed out once each.

    tshark's packets are kept by the end that sent them: which end is the
    client is the session's to say (the reassembler knows it from the SYN),
    not something to guess here from the ports, which failed when both
    ends were on SMTP ports (found in review: a client on source port 587
    had the server's decrypted replies taken for its own).
    """

    def __init__(self) -> None:
        self._streams: dict[Pair, list[_Stream]] = defaultdict(list)

    def __len__(self) -> int:
        return sum(len(streams) for streams in self._streams.values())

    def add(self, pair: Pair, sent: list[_Sent]) -> None:
        if sent:
            self._streams[pair].append(_Stream(sent[0].ts, sent))

    def take(self, key: Endpoints, first_ts: int) -> list[DecryptedChunk]:
        """The chunks of the connection with these endpoints opened at
        ``first_ts``: the earliest stream that began after it, each chunk
        from the client if the client of ``key`` sent it."""
        client_ip, client_port, server_ip, server_port = key
        client = (client_ip, client_port)
        streams = self._streams.get(_pair(client, (server_ip, server_port)))
        if not streams:
            return []
        candidates = [s for s in streams if s.first_ts >= first_ts]
        if not candidates:
            return []
        chosen = min(candidates, key=lambda s: s.first_ts)
        streams.remove(chosen)
        return [DecryptedChunk(s.ts, s.sender == client, s.data) for s in chosen.sent]


def tshark_available() -> bool:
    return shutil.which("tshark") is not None


def decrypt_captures(
    paths: Sequence[str], keylog: str, tls_ports: Iterable[int] = ()
) -> DecryptedStreams:
    """Decrypt every capture in ``paths`` with ``keylog``.

    ``tls_ports`` are the server ports that speak TLS from the first byte
    (--tls-port): tshark is told so (``_decode_as``), as it would otherwise
    hand a port it knows for another protocol (80, 143, 443...) to that
    protocol's dissector and find no TLS, or no plain ``data``, in it.
    """
    if not tshark_available():
        raise DecryptError(
            f"--tls-keylog needs tshark, which is not installed; {INSTALL_HINT}"
        )
    _check_keylog_size(keylog)
    streams = DecryptedStreams()
    for path in paths:
        for (_stream, pair), sent in _read(path, keylog, tls_ports).items():
            streams.add(pair, sent)
    log.info("decrypted %d TLS streams with the key log", len(streams))
    return streams


# tshark's time grows with the square of the key log's length (40,000 lines
# take seconds, 300,000 hours): past this, the user is asked to cut it down.
MAX_KEYLOG_LINES = 50_000


# A key log line is under 250 bytes (a TLS 1.3 secret of SHA-384 with its
# label and client random); MAX_KEYLOG_LINES of them fit well in this.
MAX_KEYLOG_BYTES = 64 << 20
_CHUNK = 1 << 20


# The labels of the NSS key log format that tshark reads (CLIENT_RANDOM for
# TLS 1.2 and before, the traffic secrets of TLS 1.3, RFC 8446 7.1).
_KEYLOG_LABELS = (
    b"CLIENT_RANDOM ",
    b"RSA ",
    b"CLIENT_EARLY_TRAFFIC_SECRET ",
    b"CLIENT_HANDSHAKE_TRAFFIC_SECRET ",
    b"SERVER_HANDSHAKE_TRAFFIC_SECRET ",
    b"CLIENT_TRAFFIC_SECRET_0 ",
    b"SERVER_TRAFFIC_SECRET_0 ",
)


def is_keylog(keylog: str) -> bool:
    """Whether the file holds at least one line of the NSS key log format;
    False also when it cannot be read."""
    try:
        with open(keylog, "rb") as handle:
            head = handle.read(MAX_KEYLOG_BYTES)
    except OSError:
        return False
    return any(
        line.lstrip().startswith(_KEYLOG_LABELS)
        for line in itertools.islice(head.splitlines(), MAX_KEYLOG_LINES)
    )


# The labels whose lines name a handshake by its client random and hold
# secrets tshark decrypts with (an RSA line names a premaster secret).
_RANDOM_LABELS = tuple(label for label in _KEYLOG_LABELS if label != b"RSA ")


def keylog_client_randoms(keylog: str) -> frozenset[bytes]:
    """The client randoms of the handshakes the key log holds secrets for;
    none when it cannot be read. A session whose ClientHello carried one
    has its secrets there, whether or not tshark then decrypted anything:
    a capture cut short after the handshake has nothing more to decrypt."""
    try:
        with open(keylog, "rb") as handle:
            head = handle.read(MAX_KEYLOG_BYTES)
    except OSError:
        return frozenset()
    randoms: set[bytes] = set()
    for line in itertools.islice(head.splitlines(), MAX_KEYLOG_LINES):
        words = line.split()
        if len(words) >= 3 and line.lstrip().startswith(_RANDOM_LABELS):
            with contextlib.suppress(ValueError):
                random = bytes.fromhex(words[1].decode("ascii", "replace"))
                if len(random) == 32:
                    randoms.add(random)
    return frozenset(randoms)


def _check_keylog_size(keylog: str) -> None:
    """Refuse a key log tshark would take hours over, reading it in chunks:
    counted line by line, a file without a newline (``/dev/zero``, a
    binary file named by mistake) was read whole into memory (found in
    review: a MemoryError traceback)."""
    lines = size = 0
    try:
        with open(keylog, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                size += len(chunk)
                lines += chunk.count(b"\n")
                if lines > MAX_KEYLOG_LINES:
                    raise DecryptError(
                        f"{keylog} has more than {MAX_KEYLOG_LINES} lines, which "
                        "tshark would take hours over; keep the lines of the "
                        "sessions wanted (grep their client randoms) and retry"
                    )
                if size > MAX_KEYLOG_BYTES:
                    raise DecryptError(
                        f"{keylog} is larger than {MAX_KEYLOG_BYTES} bytes, more "
                        f"than {MAX_KEYLOG_LINES} lines of a key log hold; keep "
                        "the lines of the sessions wanted and retry"
                    )
    except OSError as exc:
        raise DecryptError(f"cannot read {keylog}: {exc.strerror or exc}") from exc


def _decode_as(tls_ports: Iterable[int]) -> dict[str, str]:
    """tshark's decode-as rules for implicit-TLS ports: TLS on the TCP port,
    then SMTP inside it, which is switched off (see _read_once), so that
    the plaintext comes out as ``data`` whatever tshark takes the port for
    (HTTP on 443, say)."""
    rules: dict[str, str] = {}
    for port in sorted(set(tls_ports)):
        rules[f"tcp.port=={port}"] = "tls"
        rules[f"tls.port=={port}"] = "smtp"
    return rules


def _read(
    path: str, keylog: str, tls_ports: Iterable[int] = ()
) -> dict[tuple[int, Pair], list[_Sent]]:
    decode_as = _decode_as(tls_ports)
    try:
        return _read_once(path, keylog, decode_as)
    except DecryptError as exc:
        # tshark has exited with status 255 at random, twice in about ten
        # runs of the test suite and never when run alone (pyshark's "TShark
        # seems to have crashed"): one more try before giving up.
        log.info("%s; trying once more", exc)
        return _read_once(path, keylog, decode_as)


def _read_once(
    path: str, keylog: str, decode_as: dict[str, str] | None = None
) -> dict[tuple[int, Pair], list[_Sent]]:
    import pyshark

    capture = pyshark.FileCapture(
        path,
        keep_packets=False,
        display_filter="tls && data",
        override_prefs={"tls.keylog_file": keylog},
        decode_as=decode_as or None,
        disable_protocol="smtp",
        use_json=True,
    )
    found: dict[tuple[int, Pair], list[_Sent]] = defaultdict(list)
    error: Exception | None = None
    try:
        for packet in capture:
            _add_packet(packet, found)
    except Exception as exc:  # pyshark raises its own and asyncio errors
        error = exc
    closing = _close(capture)
    error = error or closing
    if error is None:
        return found
    # pyshark raises for tshark's exit status once tshark's output is read
    # to its end, while the packets are handed over or when the capture is
    # closed, and its message may miss tshark's last line on stderr, which
    # is complete once the capture is closed.
    said = f"{error} {getattr(capture, '_last_error_line', '')}"
    if any(words in said for words in _DAMAGE):
        # tshark stops at damage in the file, after handing over every
        # packet before it. smtpscope's own reader reports the damage; what
        # tshark decrypted before it stands (found in review: a capture cut
        # short in the middle of a packet, as a tcpdump killed while writing
        # leaves one, ended read --tls-keylog with a traceback and no
        # tables).
        log.info("tshark stopped at damage in %s: %s", path, error)
        return found
    raise DecryptError(f"tshark could not decrypt {path}: {error}") from error


# What tshark says of a capture damaged or cut short part way (wiretap's
# WTAP_ERR_SHORT_READ and WTAP_ERR_BAD_FILE), and of a file that is no
# capture at all (WTAP_ERR_FILE_UNKNOWN_FORMAT), which smtpscope's reader
# reports too: named among good captures, it ended the decryption of them
# all, and read showed and wrote no session (found in review).
_DAMAGE = (
    "appears to have been cut short",
    "appears to be damaged or corrupt",
    "isn't a capture file in a format TShark understands",
)


def _close(capture: Any) -> Exception | None:
    """Close ``capture``; the error pyshark raises for tshark's exit
    status, if any. pyshark keeps the process listed when closing raises,
    so its ``__del__`` would close it again and print the error as an
    "Exception ignored" traceback: the list is emptied here."""
    try:
        capture.close()
    except Exception as exc:
        capture._running_processes.clear()
        return exc
    return None


def _add_packet(packet: Any, found: dict[tuple[int, Pair], list[_Sent]]) -> None:
    network = packet.ip if hasattr(packet, "ip") else packet.ipv6
    sender = (str(network.src), int(packet.tcp.srcport))
    receiver = (str(network.dst), int(packet.tcp.dstport))
    # The timestamp is kept as text by pyshark: exact to the nanosecond.
    ts = int(Decimal(packet.sniff_timestamp) * 1_000_000_000)
    data = b"".join(
        bytes.fromhex(str(layer.data).replace(":", ""))
        for layer in packet.get_multiple_layers("data")
    )
    if data:
        key = (int(packet.tcp.stream), _pair(sender, receiver))
        found[key].append(_Sent(ts, sender, data))
