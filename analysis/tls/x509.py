"""A summary of one X.509 certificate (RFC 5280), read with ``cryptography``.

Only what an administrator checks is kept: names, validity, fingerprint and
whether the certificate signed itself. A certificate ``cryptography`` cannot
read still gets its fingerprint, which needs only the DER bytes.

The bytes come from whoever is at the other end of a connection, and
``cryptography`` raises more than ValueError on bad ones (DuplicateExtension,
InvalidVersion, ... each its own class, the set growing from one release
to the next): any exception from reading a certificate is that
certificate's error, never the run's.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

_NS = 1_000_000_000
# The times ns since the epoch can hold in 64 bits (1677 to 2262), as the
# tables keep them.
_NS_RANGE = range(-(2**63) + 1, 2**63)


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


def describe(der: bytes, *, leaf: bool = True) -> CertificateInfo:
    """``der`` summarised; whether it signed itself is judged for a
    ``leaf`` only (the tables keep it for the server's own certificate),
    ``None`` for the others: a signature check is the one costly step.

    ``cryptography`` warns about what a peer chose (a DSA key, a negative
    serial number): those warnings went to stderr, a peer's to choose, and
    are silenced here (found in review).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _describe(der, leaf)


def _describe(der: bytes, leaf: bool) -> CertificateInfo:
    # Imported here: cryptography takes longer to load than a run without
    # certificates (most of them) spends on TLS at all.
    from cryptography import x509

    digest = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
        not_before = _ns(cert.not_valid_before_utc)
        not_after = _ns(cert.not_valid_after_utc)
    except Exception as exc:  # see the module's docstring
        return CertificateInfo(digest, None, None, (), None, None, None, _text(exc))
    # Extensions are parsed when first asked for: a certificate whose names
    # and dates read still shows them when its extensions do not.
    error = None
    try:
        sans = _sans(cert)
    except Exception as exc:
        sans, error = (), f"extensions: {_text(exc)}"
    return CertificateInfo(
        sha256=digest,
        subject=subject,
        issuer=issuer,
        sans=sans,
        not_before=not_before,
        not_after=not_after,
        self_signed=_self_signed(cert) if leaf else None,
        error=error,
    )


def _text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _ns(moment: datetime) -> int | None:
    """ns since the epoch, or None past what 64 bits of them hold: notAfter
    99991231235959Z is RFC 5280's "no well-defined expiration date"
    (4.1.2.5), and real certificates carry it."""
    ns = int(moment.timestamp()) * _NS
    return ns if ns in _NS_RANGE else None


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    from cryptography import x509

    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names = extension.value
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return tuple(dns) + tuple(ips)


# A public exponent past this many bits is no real key's (they use 65537)
# and is not checked: OpenSSL takes any exponent up to 3072-bit moduli, and
# an exponent as long as the modulus made each check a full-size modular
# exponentiation, 6 ms a certificate, 100 in a chain: 4.5 s per MB of
# capture (found in review).
MAX_RSA_EXPONENT_BITS = 64
# DSA's modulus is bounded by what OpenSSL verifies (10,000 bits), past
# the largest size DSA certificates use (FIPS 186-4: 3072).
MAX_DSA_MODULUS_BITS = 3072


def _cheap_to_check(cert: x509.Certificate) -> bool:
    """Whether checking a signature with the certificate's key costs what
    a real key's check does."""
    from cryptography.hazmat.primitives.asymmetric import dsa, rsa

    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_numbers().e.bit_length() <= MAX_RSA_EXPONENT_BITS
    if isinstance(key, dsa.DSAPublicKey):
        return key.key_size <= MAX_DSA_MODULUS_BITS
    return True


def _self_signed(cert: x509.Certificate) -> bool | None:
    # Self-signed: issued by its own subject and its signature checks out
    # with its own public key (RFC 5280 6.1: a self-issued, self-signed cert).
    # None: a self-issued certificate whose key is too costly to check.
    if cert.issuer != cert.subject:
        return False
    try:
        if not _cheap_to_check(cert):
            return None
    except Exception:  # a key it cannot read: the check below fails too
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # InvalidSignature, or a key or algorithm it cannot use
        return False
    return True
