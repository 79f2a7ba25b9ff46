"""The TLS record and handshake layer of one connection, without keys.

``TlsParser`` is fed each direction's bytes from the first TLS byte on (after
STARTTLS's 220, or from the start on an implicit-TLS port) and returns
events. Records may be split across segments or packed several to a segment
(RFC 8446 5.1); handshake messages may span records, so each direction keeps
a record buffer and a handshake buffer, both bounded.

What can be seen without keys: the hellos, the server's certificates up to
TLS 1.2, alerts sent in the clear, and the change to encrypted records. The
handshake counts as completed when the client's first encrypted record after
a TLS 1.3 ServerHello arrives (its Finished, RFC 8446 4.4.4), or, up to TLS
1.2, when both sides have sent ChangeCipherSpec and a record after it (their
Finished, RFC 5246 7.4.9). A failure the server reports only inside the
encrypted channel (TLS 1.3) cannot be told from a success.

Bytes that do not frame as TLS records stop the parsing of that direction,
as does a TCP gap that does not fall inside a record being skipped. The one
other framing read is a client's first message in SSL 2.0 form, a
CLIENT-HELLO offering SSL 3.0 or TLS, which clients of OpenSSL before 1.0
sent by default (RFC 5246 E.2): the server answers it with TLS records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.smtp.syntax import show_bytes
from analysis.tls.events import (
    AlertSeen,
    CertificatesSeen,
    ClientHelloSeen,
    HandshakeEnded,
    Outcome,
    ServerHelloSeen,
    TlsAnomalySeen,
    TlsEvent,
)
from analysis.tls.hello import (
    HelloError,
    ServerHello,
    parse_certificate_list,
    parse_client_hello,
    parse_server_hello,
    parse_v2_client_hello,
    starts_v2_client_hello,
)
from analysis.tls.names import alert_name, version_name

# RFC 8446 5.1: record content types.
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
HEARTBEAT = 24  # RFC 6520
_CONTENT_TYPES = frozenset({20, 21, 22, 23, 24})

# RFC 8446 4: handshake message types.
CLIENT_HELLO = 1
SERVER_HELLO = 2
CERTIFICATE = 11

HEADER = 5
# RFC 5246 6.2.3: a ciphertext record is at most 2^14 + 2048 bytes.
MAX_RECORD = (1 << 14) + 2048
# A certificate chain of a few dozen certificates fits; more is hostile.
MAX_HANDSHAKE_MESSAGE = 256 * 1024
TLS_1_3 = 0x0304
# RFC 5246 E.2: an SSL 2.0 record header of two bytes, the top bit set.
_V2_HEADER = 2


@dataclass(slots=True)
class _Side:
    """One direction's record framing and handshake state."""

    from_client: bool
    buf: bytearray = field(default_factory=bytearray)
    skip: int = 0  # body bytes of the current record still to pass over
    skipping_type: int = 0
    handshake: bytearray = field(default_factory=bytearray)
    encrypted: bool = False  # records from here on cannot be read
    ccs: bool = False  # ChangeCipherSpec sent (TLS 1.2 and older)
    finished: bool = False  # a record after the ChangeCipherSpec
    dead: bool = False  # framing lost: nothing more is parsed
    records: int = 0
    v2_hello: bool = False  # buf holds the start of an SSL 2.0 CLIENT-HELLO

    @property
    def name(self) -> str:
        return "client" if self.from_client else "server"


class TlsParser:
    """Sans-IO reader of one connection's TLS handshake. Never raises."""

    def __init__(self) -> None:
        self._client = _Side(True)
        self._server = _Side(False)
        self._tls13 = False
        self._client_hello_seen = False
        self._server_hello_seen = False
        self._certificates_seen = False
        self.outcome: Outcome | None = None
        self.started = False

    # Public interface ----------------------------------------------------

    def feed(self, from_client: bool, data: bytes, ts: int) -> list[TlsEvent]:
        out: list[TlsEvent] = []
        self.started = True
        side = self._client if from_client else self._server
        if side.dead or not data:
            return out
        if side.skip > len(data):
            # All inside a record being passed over (most segments once the
            # handshake is done): what the loop below would do, in one step.
            side.skip -= len(data)
            return out
        view = memoryview(data)
        pos = 0
        while pos < len(view) and not side.dead:
            if side.skip:
                take = min(side.skip, len(view) - pos)
                side.skip -= take
                pos += take
                if not side.skip:
                    self._opaque_record(side, side.skipping_type, ts, out)
                continue
            pos = self._take_record(side, view, pos, ts, out)
        return out

    def gap(self, from_client: bool, size: int, ts: int) -> list[TlsEvent]:
        """Bytes the capture lost. Inside a skipped record framing survives."""
        side = self._client if from_client else self._server
        if side.skip > size:
            side.skip -= size
        else:
            side.dead = True
        return []

    def close(self, ts: int) -> list[TlsEvent]:
        out: list[TlsEvent] = []
        if self.started and self.outcome is None:
            self._end(Outcome.INCOMPLETE, ts, out)
        return out

    # Records -------------------------------------------------------------

    def _take_record(
        self, side: _Side, view: memoryview, pos: int, ts: int, out: list[TlsEvent]
    ) -> int:
        """Consume what belongs to the next record; return the new position."""
        need = HEADER - len(side.buf)
        if need > 0:
            side.buf += view[pos : pos + need]
            pos += min(need, len(view) - pos)
            if len(side.buf) < HEADER or not self._header_ok(side, ts, out):
                return len(view) if side.dead else pos
        if side.v2_hello:
            return self._take_v2_hello(side, view, pos, ts, out)
        kind = side.buf[0]
        length = int.from_bytes(side.buf[3:5], "big")
        if not self._wants_body(side, kind):
            # Encrypted content is passed over, never buffered.
            side.buf.clear()
            side.records += 1
            side.skip = length
            side.skipping_type = kind
            if not length:
                self._opaque_record(side, kind, ts, out)
            return pos
        missing = HEADER + length - len(side.buf)
        side.buf += view[pos : pos + missing]
        pos += min(missing, len(view) - pos)
        if len(side.buf) == HEADER + length:
            body = bytes(side.buf[HEADER:])
            side.buf.clear()
            side.records += 1
            self._record(side, kind, body, ts, out)
        return pos

    def _header_ok(self, side: _Side, ts: int, out: list[TlsEvent]) -> bool:
        head = bytes(side.buf)
        length = int.from_bytes(head[3:5], "big")
        # RFC 8446 5.1: a known content type, a 3.x version, a bounded length.
        if head[0] in _CONTENT_TYPES and head[1] == 3 and length <= MAX_RECORD:
            return True
        # A header is as long as the opening the SSL 2.0 test judges whole.
        if side.from_client and side.records == 0 and starts_v2_client_hello(head):
            side.v2_hello = True
            return True
        side.dead = True
        first = "first" if side.records == 0 else f"after {side.records} records"
        self._anomaly(
            out,
            ts,
            "not_tls",
            f"{side.name} bytes are not a TLS record ({first}): {show_bytes(head)}",
        )
        if self.outcome is None:
            self._end(Outcome.FAILED, ts, out)
        return False

    def _take_v2_hello(
        self, side: _Side, view: memoryview, pos: int, ts: int, out: list[TlsEvent]
    ) -> int:
        """Consume what belongs to an SSL 2.0 CLIENT-HELLO; the new position.

        Its two-byte header gives the length of the message after it, with
        the top bit set (RFC 5246 E.2).
        """
        total = _V2_HEADER + ((side.buf[0] & 0x7F) << 8 | side.buf[1])
        missing = total - len(side.buf)
        side.buf += view[pos : pos + missing]
        pos += min(missing, len(view) - pos)
        if len(side.buf) < total:
            return pos
        message = bytes(side.buf[_V2_HEADER:])
        side.buf.clear()
        side.v2_hello = False
        side.records += 1
        try:
            hello = parse_v2_client_hello(message)
        except HelloError as exc:
            self._anomaly(out, ts, "tls_malformed", f"client SSL 2.0 hello: {exc}")
            return pos
        offered = version_name(hello.legacy_version)
        self._anomaly(
            out, ts, "sslv2_hello", f"client hello in SSL 2.0 form, offering {offered}"
        )
        self._client_hello_seen = True
        out.append(ClientHelloSeen(ts, hello))
        return pos

    def _wants_body(self, side: _Side, kind: int) -> bool:
        if kind in (APPLICATION_DATA, HEARTBEAT):
            return False
        return not (side.encrypted and kind == HANDSHAKE)

    def _record(
        self, side: _Side, kind: int, body: bytes, ts: int, out: list[TlsEvent]
    ) -> None:
        if kind == CHANGE_CIPHER_SPEC:
            # In TLS 1.3 it is only a compatibility record (RFC 8446 D.4),
            # which may also come before the ServerHello: right after a
            # HelloRetryRequest, from the server, and before the second
            # ClientHello, from the client. Up to TLS 1.2 it always follows
            # the ServerHello (found in review: after a HelloRetryRequest
            # the compatibility records hid the real ServerHello, leaving
            # version and cipher empty, and the handshake was called
            # completed before the client had sent its Finished).
            if not self._tls13 and self._server_hello_seen:
                side.ccs = True
                side.encrypted = True
        elif kind == ALERT:
            self._alert(side, body, ts, out)
        elif kind == HANDSHAKE:
            self._handshake_fragment(side, body, ts, out)

    def _opaque_record(
        self, side: _Side, kind: int, ts: int, out: list[TlsEvent]
    ) -> None:
        """A record whose content cannot be read has been passed over."""
        if kind == HEARTBEAT or self.outcome is not None:
            return
        if self._tls13:
            if side.from_client:
                self._end(Outcome.COMPLETED, ts, out)
        elif side.ccs:
            side.finished = True
            if self._client.finished and self._server.finished:
                self._end(Outcome.COMPLETED, ts, out)

    def _alert(self, side: _Side, body: bytes, ts: int, out: list[TlsEvent]) -> None:
        # RFC 8446 6: level (1 warning, 2 fatal) and description. TLS 1.3
        # sends its encrypted alerts as application data (RFC 8446 5.2): an
        # alert record there is in the clear, as a client's is when it
        # refuses the ServerHello before it has keys.
        protected = side.encrypted and not self._tls13
        if protected and self.outcome is Outcome.COMPLETED:
            return  # most likely close_notify; its content cannot be read
        if protected:
            out.append(AlertSeen(ts, side.from_client, None, "encrypted"))
        elif len(body) != 2:
            # In the clear but not one alert (RFC 8446 5.1: an alert record
            # holds one, never a part or several): it was shown as
            # encrypted (found in review).
            out.append(AlertSeen(ts, side.from_client, None, "malformed"))
            self._anomaly(
                out, ts, "tls_malformed", f"{side.name} alert of {len(body)} bytes"
            )
        else:
            out.append(AlertSeen(ts, side.from_client, body[0], alert_name(body[1])))
        if self.outcome is None:
            self._end(Outcome.FAILED, ts, out)

    # Handshake messages --------------------------------------------------

    def _handshake_fragment(
        self, side: _Side, body: bytes, ts: int, out: list[TlsEvent]
    ) -> None:
        side.handshake += body
        while len(side.handshake) >= 4:
            kind = side.handshake[0]
            length = int.from_bytes(side.handshake[1:4], "big")
            if length > MAX_HANDSHAKE_MESSAGE:
                self._anomaly(
                    out, ts, "tls_malformed", f"{side.name} handshake of {length} bytes"
                )
                side.dead = True
                side.handshake.clear()
                return
            if len(side.handshake) < 4 + length:
                return
            message = bytes(side.handshake[4 : 4 + length])
            del side.handshake[: 4 + length]
            self._message(side, kind, message, ts, out)

    def _message(
        self, side: _Side, kind: int, body: bytes, ts: int, out: list[TlsEvent]
    ) -> None:
        try:
            if kind == CLIENT_HELLO and side.from_client:
                if not self._client_hello_seen:  # not the one after a retry
                    self._client_hello_seen = True
                    out.append(ClientHelloSeen(ts, parse_client_hello(body)))
            elif kind == SERVER_HELLO and not side.from_client:
                self._server_hello(parse_server_hello(body), ts, out)
            elif (
                kind == CERTIFICATE
                and not side.from_client
                and not self._tls13
                and not self._certificates_seen
            ):
                self._certificates_seen = True
                out.append(CertificatesSeen(ts, parse_certificate_list(body)))
        except HelloError as exc:
            self._anomaly(
                out, ts, "tls_malformed", f"{side.name} message {kind}: {exc}"
            )

    def _server_hello(self, hello: ServerHello, ts: int, out: list[TlsEvent]) -> None:
        out.append(ServerHelloSeen(ts, hello))
        if hello.retry_request or self._server_hello_seen:
            return
        self._server_hello_seen = True
        if hello.version >= TLS_1_3:
            # RFC 8446 2: everything after the ServerHello is encrypted.
            self._tls13 = True
            self._server.encrypted = True
            self._client.encrypted = True

    def _end(self, outcome: Outcome, ts: int, out: list[TlsEvent]) -> None:
        self.outcome = outcome
        out.append(HandshakeEnded(ts, outcome))

    def _anomaly(self, out: list[TlsEvent], ts: int, kind: str, detail: str) -> None:
        out.append(TlsAnomalySeen(ts, kind, detail))
