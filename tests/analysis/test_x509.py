"""Server certificates that ``cryptography`` reads in part or not at all.

The certificate comes from whoever is at the other end of the connection:
whatever it holds is that certificate's error, never the run's (found in
review: a duplicate extension, a bad version and a notAfter in 9999 each
ended the run with a traceback, or broke the Parquet output).
"""

from __future__ import annotations

import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from analysis.tls.x509 import describe

KEY = ec.generate_private_key(ec.SECP256R1())
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.org")])
UTC = datetime.UTC
START = datetime.datetime(2024, 1, 1, tzinfo=UTC)
START_NS = int(START.timestamp()) * 1_000_000_000

# DER of the OIDs of AuthorityKeyIdentifier (2.5.29.35) and
# SubjectKeyIdentifier (2.5.29.14), and of version v3 and a version 124.
AKI_OID, SKI_OID = bytes.fromhex("0603551d23"), bytes.fromhex("0603551d0e")
V3, V124 = bytes.fromhex("a003020102"), bytes.fromhex("a00302017c")


def certificate(not_after: datetime.datetime, *, key_ids: bool = False) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(KEY.public_key())
        .serial_number(12345)
        .not_valid_before(START)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("mx.example.org")]), False
        )
    )
    if key_ids:
        ski = x509.SubjectKeyIdentifier.from_public_key(KEY.public_key())
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        builder = builder.add_extension(ski, False).add_extension(aki, False)
    return builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_no_well_defined_expiration_is_a_missing_not_after() -> None:
    # RFC 5280 4.1.2.5: 99991231235959Z, past what ns in 64 bits can hold.
    der = certificate(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    info = describe(der)
    assert (info.subject, info.not_before, info.not_after, info.error) == (
        "CN=mx.example.org",
        START_NS,
        None,
        None,
    )
    assert info.sans == ("mx.example.org",)
    assert info.self_signed is True


def test_a_duplicate_extension_keeps_names_and_dates() -> None:
    # The AuthorityKeyIdentifier's OID turned into SubjectKeyIdentifier's:
    # cryptography raises DuplicateExtension, when the extensions are read.
    der = certificate(datetime.datetime(2030, 1, 1, tzinfo=UTC), key_ids=True)
    der = der.replace(AKI_OID, SKI_OID, 1)
    info = describe(der)
    assert (info.subject, info.not_before, info.sans) == (
        "CN=mx.example.org",
        START_NS,
        (),
    )
    assert info.error == "extensions: Duplicate 2.5.29.14 extension found"


def test_a_version_no_parser_knows_is_an_unreadable_certificate() -> None:
    der = certificate(datetime.datetime(2030, 1, 1, tzinfo=UTC)).replace(V3, V124, 1)
    info = describe(der)
    assert info.sha256 == hashlib.sha256(der).hexdigest()
    assert (info.subject, info.not_before, info.self_signed) == (None, None, None)
    assert info.error == "124 is not a valid X509 version"


def test_a_chain_past_its_cap_is_counted_but_only_its_start_read() -> None:
    # One Certificate message of 256 KiB can hold 87,000 empty certificates:
    # each was described, hashed and reported unreadable (86 MB for one
    # 275 KB connection, found in review).
    import hashlib

    from analysis.handshake import MAX_CHAIN, HandshakeBuilder
    from analysis.tls.events import CertificatesSeen

    leaf = certificate(datetime.datetime(2030, 1, 1, tzinfo=UTC))
    chain = (leaf, *(b"\x30\x01%c" % (i % 256) for i in range(MAX_CHAIN + 49)))
    builder = HandshakeBuilder("S1", 1, implicit=True)
    builder._apply([CertificatesSeen(7, chain)])
    record = builder.record
    assert record.cert_count == MAX_CHAIN + 50 == 150
    assert record.chain_sha256 == [
        hashlib.sha256(der).hexdigest() for der in chain[:MAX_CHAIN]
    ]
    assert record.cert_sans == ["mx.example.org"]
    kinds = [a.kind for a in builder.anomalies]
    assert kinds == ["certificate_list_capped"] + ["certificate_unreadable"] * 99
    assert builder.anomalies[0].detail == (
        "150 certificates sent; only the first 100 are read and listed"
    )


def test_a_costly_public_exponent_is_not_checked() -> None:
    # OpenSSL takes an RSA exponent as long as a 3072-bit modulus: each
    # check of a signature with it took 6 ms where a real key's takes 0.1,
    # 100 certificates a chain, 4.5 s per MB of capture (found in review).
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, 3072)
    modulus = key.public_key().public_numbers().n
    hostile = rsa.RSAPublicNumbers(modulus - 2, modulus).public_key()
    der = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(hostile)
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(datetime.datetime(2030, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    info = describe(der)
    assert (info.subject, info.self_signed, info.error) == (
        "CN=mx.example.org",
        None,
        None,
    )


def test_only_the_leaf_is_checked_for_a_self_signature() -> None:
    der = certificate(datetime.datetime(2030, 1, 1, tzinfo=UTC))
    assert describe(der).self_signed is True
    assert describe(der, leaf=False).self_signed is None
    assert describe(der, leaf=False).subject == "CN=mx.example.org"


def test_a_peer_chosen_key_makes_no_warning() -> None:
    # cryptography warns that DSA is deprecated: on stderr, at a peer's
    # choosing, during read and check (found in review).
    import warnings

    from cryptography.hazmat.primitives.asymmetric import dsa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = dsa.generate_private_key(2048)
        der = (
            x509.CertificateBuilder()
            .subject_name(NAME)
            .issuer_name(NAME)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(START)
            .not_valid_after(datetime.datetime(2030, 1, 1, tzinfo=UTC))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = describe(der)
    assert (info.self_signed, [str(w.message) for w in caught]) == (True, [])
