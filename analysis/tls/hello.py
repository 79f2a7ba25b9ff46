"""ClientHello, ServerHello and Certificate message bodies (RFC 8446 4.1.2,
4.1.3; RFC 5246 7.4.1.2, 7.4.1.3, 7.4.2), and the SSL 2.0 form of a
ClientHello that old clients send to offer SSL 3.0 or TLS (RFC 5246 E.2).

Each parser takes one complete handshake message body and returns a frozen
record, or raises ``HelloError`` when the body does not follow the grammar;
the caller turns that into an anomaly. Lists keep wire order and GREASE
values (RFC 8701): the fingerprints drop GREASE themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

# Extension types (IANA "TLS ExtensionType Values").
EXT_SERVER_NAME = 0x0000  # RFC 6066 3
EXT_SUPPORTED_GROUPS = 0x000A  # RFC 8422 5.1.1
EXT_EC_POINT_FORMATS = 0x000B  # RFC 8422 5.1.2
EXT_SIGNATURE_ALGORITHMS = 0x000D  # RFC 8446 4.2.3
EXT_ALPN = 0x0010  # RFC 7301 3.1
EXT_SUPPORTED_VERSIONS = 0x002B  # RFC 8446 4.2.1

# RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest.
HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)


class HelloError(ValueError):
    """A handshake message body that does not parse."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    legacy_version: int
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]  # extension types in wire order
    server_name: str | None
    alpn_raw: tuple[bytes, ...]  # RFC 7301 3.1: opaque protocol names
    supported_versions: tuple[int, ...]
    supported_groups: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    sslv2_format: bool = False  # sent as an SSL 2.0 CLIENT-HELLO (RFC 5246 E.2)
    # What a key log names the handshake's secrets by (NSS key log format).
    random: bytes = b""

    @property
    def alpn(self) -> tuple[str, ...]:
        return tuple(p.decode("utf-8", "backslashreplace") for p in self.alpn_raw)


@dataclass(frozen=True, slots=True)
class ServerHello:
    legacy_version: int
    cipher_suite: int
    selected_version: int | None  # from supported_versions, TLS 1.3 only
    extensions: tuple[int, ...]
    retry_request: bool  # a HelloRetryRequest, not a real ServerHello

    @property
    def version(self) -> int:
        """The negotiated version (RFC 8446 4.2.1)."""
        return self.selected_version or self.legacy_version


class _Reader:
    """Bounds-checked big-endian reads over one message body."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def left(self) -> int:
        return self._end - self._pos

    def take(self, size: int) -> bytes:
        if size > self.left:
            raise HelloError(f"needs {size} bytes, {self.left} left")
        start = self._pos
        self._pos += size
        return self._data[start : self._pos]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        """A length-prefixed sub-vector (RFC 8446 3.4)."""
        size = self.uint(length_size)
        if size > self.left:
            raise HelloError(f"vector of {size} bytes, {self.left} left")
        sub = _Reader(self._data, self._pos, self._pos + size)
        self._pos += size
        return sub

    def uint16s(self) -> tuple[int, ...]:
        if self.left % 2:
            raise HelloError("odd length in a list of 16-bit values")
        return tuple(self.uint(2) for _ in range(self.left // 2))


def parse_client_hello(body: bytes) -> ClientHello:
    r = _Reader(body)
    legacy_version = r.uint(2)
    random = r.take(32)
    r.vector(1)  # legacy_session_id
    ciphers = r.vector(2).uint16s()
    r.vector(1)  # legacy_compression_methods
    found = _Extensions()
    if r.left:  # SSLv3-era hellos may end here (RFC 5246 7.4.1.2)
        extensions = r.vector(2)
        while extensions.left:
            kind = extensions.uint(2)
            found.client(kind, extensions.vector(2))
    return ClientHello(
        legacy_version=legacy_version,
        cipher_suites=ciphers,
        extensions=tuple(found.types),
        server_name=found.server_name,
        alpn_raw=found.alpn,
        supported_versions=found.versions,
        supported_groups=found.groups,
        ec_point_formats=found.point_formats,
        signature_algorithms=found.signature_algorithms,
        random=random,
    )


# RFC 5246 E.2: the SSL 2.0 CLIENT-HELLO's message type, the size of its
# cipher specs, and the bounds of its challenge.
V2_CLIENT_HELLO = 1
_V2_SPEC = 3
_V2_CHALLENGE = range(16, 33)
# The shortest CLIENT-HELLO: type, version, three lengths, one cipher spec
# and a 16-byte challenge.
_V2_SHORTEST = 1 + 2 + 6 + 3 + 16
# Its two-byte record header, message type and version.
V2_OPENING = 5


def starts_v2_client_hello(first: bytes) -> bool:
    """Whether a client's first bytes can begin an SSL 2.0 CLIENT-HELLO
    that offers SSL 2.0, SSL 3.0 or TLS (RFC 5246 E.2, RFC 6101 E.1).

    The first ``V2_OPENING`` bytes are judged: a record header with the top
    bit set and a length that fits the shortest hello, the message type,
    and a version of 0x0002 or 0x03xx. Fewer bytes are judged by those
    there are, so that a hello sent in tiny segments is still recognised;
    a caller that must see the whole opening checks the length first.
    """
    n = len(first)
    if not n or not first[0] & 0x80:
        return False
    if n >= 2 and ((first[0] & 0x7F) << 8 | first[1]) < _V2_SHORTEST:
        return False
    if n >= 3 and first[2] != V2_CLIENT_HELLO:
        return False
    if n >= 4 and first[3] not in (0, 3):
        return False
    return n < 5 or first[3] == 3 or first[4] == 2


def parse_v2_client_hello(message: bytes) -> ClientHello:
    """An SSL 2.0 CLIENT-HELLO, from its message type on (after the two
    bytes of record header), as a ClientHello with no extensions.

    Cipher specs are three bytes; those whose first byte is zero are the
    TLS cipher suites the client offers (RFC 5246 E.2) and are kept as
    such, SSL 2.0 kinds as their 24-bit values: both are what it offered.
    """
    r = _Reader(message)
    if r.uint(1) != V2_CLIENT_HELLO:
        raise HelloError("not an SSL 2.0 CLIENT-HELLO")
    version = r.uint(2)
    specs_size, session_size, challenge_size = r.uint(2), r.uint(2), r.uint(2)
    if specs_size % _V2_SPEC or session_size not in (0, 16):
        raise HelloError(f"cipher specs of {specs_size}, session id of {session_size}")
    if challenge_size not in _V2_CHALLENGE:
        raise HelloError(f"challenge of {challenge_size} bytes")
    specs = r.take(specs_size)
    r.take(session_size)
    challenge = r.take(challenge_size)
    if r.left:
        raise HelloError(f"{r.left} bytes after the challenge")
    ciphers = tuple(
        int.from_bytes(specs[at : at + _V2_SPEC], "big")
        for at in range(0, specs_size, _V2_SPEC)
    )
    return ClientHello(
        legacy_version=version,
        cipher_suites=ciphers,
        extensions=(),
        server_name=None,
        alpn_raw=(),
        supported_versions=(),
        supported_groups=(),
        ec_point_formats=(),
        signature_algorithms=(),
        sslv2_format=True,
        # The challenge, padded with leading zeros: the random of the TLS
        # handshake that follows (RFC 2246 E.1).
        random=challenge.rjust(32, b"\0"),
    )


def parse_server_hello(body: bytes) -> ServerHello:
    r = _Reader(body)
    legacy_version = r.uint(2)
    random = r.take(32)
    r.vector(1)  # legacy_session_id_echo
    cipher = r.uint(2)
    r.uint(1)  # legacy_compression_method
    types: list[int] = []
    selected: int | None = None
    if r.left:
        extensions = r.vector(2)
        while extensions.left:
            kind = extensions.uint(2)
            data = extensions.vector(2)
            types.append(kind)
            if kind == EXT_SUPPORTED_VERSIONS and data.left == 2:
                selected = data.uint(2)  # RFC 8446 4.2.1: one selected_version
    return ServerHello(
        legacy_version=legacy_version,
        cipher_suite=cipher,
        selected_version=selected,
        extensions=tuple(types),
        retry_request=random == HELLO_RETRY_RANDOM,
    )


def parse_certificate_list(body: bytes) -> tuple[bytes, ...]:
    """DER certificates of a TLS 1.2-or-older Certificate (RFC 5246 7.4.2)."""
    chain = _Reader(body).vector(3)
    certs: list[bytes] = []
    while chain.left:
        der = chain.vector(3)
        certs.append(der.take(der.left))
    return tuple(certs)


class _Extensions:
    """What a ClientHello's extensions say, filled one extension at a time."""

    def __init__(self) -> None:
        self.types: list[int] = []
        self.server_name: str | None = None
        self.alpn: tuple[bytes, ...] = ()
        self.versions: tuple[int, ...] = ()
        self.groups: tuple[int, ...] = ()
        self.point_formats: tuple[int, ...] = ()
        self.signature_algorithms: tuple[int, ...] = ()

    def client(self, kind: int, data: _Reader) -> None:
        self.types.append(kind)
        if kind == EXT_SERVER_NAME and data.left:
            self.server_name = _host_name(data.vector(2))
        elif kind == EXT_ALPN and data.left:
            names = data.vector(2)
            protocols = []
            while names.left:
                raw = names.vector(1)
                protocols.append(raw.take(raw.left))
            self.alpn = tuple(protocols)
        elif kind == EXT_SUPPORTED_VERSIONS:
            self.versions = data.vector(1).uint16s()
        elif kind == EXT_SUPPORTED_GROUPS:
            self.groups = data.vector(2).uint16s()
        elif kind == EXT_EC_POINT_FORMATS:
            formats = data.vector(1)
            self.point_formats = tuple(formats.take(formats.left))
        elif kind == EXT_SIGNATURE_ALGORITHMS:
            self.signature_algorithms = data.vector(2).uint16s()


def _host_name(names: _Reader) -> str | None:
    """The host_name of a server_name extension, decoded as UTF-8 with an
    invalid byte as ``\\xNN``, as all text from the wire is. RFC 6066 3
    has it ASCII (an IDN as its A-label), but clients send U-labels too,
    which decoded as ASCII showed escaped (found in review)."""
    # RFC 6066 3: a list of (type, name); type 0 is host_name, the only one.
    while names.left:
        kind = names.uint(1)
        name = names.vector(2)
        if kind == 0:
            return name.take(name.left).decode("utf-8", "backslashreplace")
    return None
