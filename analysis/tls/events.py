"""Events the TLS parser emits, one per fact seen on the wire."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from analysis.tls.hello import ClientHello, ServerHello


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # an alert, or bytes that are not TLS, ended it
    INCOMPLETE = "incomplete"  # the connection ended during the handshake


@dataclass(frozen=True, slots=True)
class ClientHelloSeen:
    ts: int
    hello: ClientHello


@dataclass(frozen=True, slots=True)
class ServerHelloSeen:
    ts: int
    hello: ServerHello


@dataclass(frozen=True, slots=True)
class CertificatesSeen:
    """The server's certificate chain, in the clear (TLS 1.2 and older)."""

    ts: int
    chain: tuple[bytes, ...]  # DER, the server's own certificate first


@dataclass(frozen=True, slots=True)
class AlertSeen:
    ts: int
    from_client: bool
    level: int | None  # 1 warning, 2 fatal; None when not read
    description: str  # RFC 8446 6 name, "encrypted" or "malformed"


@dataclass(frozen=True, slots=True)
class HandshakeEnded:
    ts: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class TlsAnomalySeen:
    ts: int
    kind: str
    detail: str


TlsEvent = (
    ClientHelloSeen
    | ServerHelloSeen
    | CertificatesSeen
    | AlertSeen
    | HandshakeEnded
    | TlsAnomalySeen
)
