"""A summary of one X.509 certificate (RFC 5280), read with ``cryptography``.

Only what an administrator checks is kept: names, validity, fingerprint and
whether the certificate signed itself. A certificate ``cryptography`` cannot
read still gets its fingerprint, which needs only the DER bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    sha256: str  # hex of SHA-256 over the DER encoding
    subject: str | None  # RFC 4514 string, most specific name first
    issuer: str | None
    sans: tuple[str, ...]  # DNS names, then IP addresses (RFC 5280 4.2.1.6)
    not_before: int | None  # ns since the epoch
    not_after: int | None
    self_signed: bool | None  # None when the certificate could not be read
    error: str | None  # why it could not be read


def describe(der: bytes) -> CertificateInfo:
    # Imported here: cryptography takes longer to load than a run without
    # certificates (most of them) spends on TLS at all.
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    digest = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
        not_before = int(cert.not_valid_before_utc.timestamp()) * _NS
        not_after = int(cert.not_valid_after_utc.timestamp()) * _NS
    except (ValueError, UnsupportedAlgorithm) as exc:
        return CertificateInfo(digest, None, None, (), None, None, None, str(exc))
    return CertificateInfo(
        sha256=digest,
        subject=subject,
        issuer=issuer,
        sans=_sans(cert),
        not_before=not_before,
        not_after=not_after,
        self_signed=_self_signed(cert),
        error=None,
    )


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    from cryptography import x509

    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    names = extension.value
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return tuple(dns) + tuple(ips)


def _self_signed(cert: x509.Certificate) -> bool:
    # Self-signed: issued by its own subject and its signature checks out
    # with its own public key (RFC 5280 6.1: a self-issued, self-signed cert).
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True
