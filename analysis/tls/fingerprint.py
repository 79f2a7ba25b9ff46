"""JA3 and JA4 fingerprints of a ClientHello.

JA3 (Salesforce, 2017): "version,ciphers,extensions,groups,point formats" in
decimal, values within a field joined by "-", GREASE (RFC 8701) left out;
the fingerprint is the MD5 of that string.

JA4 (FoxIO, technical_details/JA4.md): ``t`` + two-character version +
``d``/``i`` for SNI + two-digit cipher and extension counts + first and last
characters of the first ALPN value, then ``_`` and the first 12 hex digits of
SHA-256 over the sorted cipher list, then ``_`` and the same over the sorted
extension list without SNI and ALPN, followed by ``_`` and the signature
algorithms in wire order. GREASE is ignored everywhere.
"""

from __future__ import annotations

import hashlib

from analysis.tls.hello import EXT_ALPN, EXT_SERVER_NAME, ClientHello

# JA4's two-character version codes.
_JA4_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0200: "s2",
    0x0100: "s1",
}
_EMPTY_HASH = "000000000000"


def is_grease(value: int) -> bool:
    """RFC 8701 2: 0x0a0a, 0x1a1a, ... 0xfafa."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def _clean(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if not is_grease(v)]


def ja3_string(hello: ClientHello) -> str:
    fields = (
        [hello.legacy_version],
        _clean(hello.cipher_suites),
        _clean(hello.extensions),
        _clean(hello.supported_groups),
        list(hello.ec_point_formats),
    )
    return ",".join("-".join(str(v) for v in field) for field in fields)


def ja3(hello: ClientHello) -> str:
    # MD5 is what JA3 is defined with; it identifies, it does not protect.
    return hashlib.md5(ja3_string(hello).encode(), usedforsecurity=False).hexdigest()


def _ja4_parts(hello: ClientHello) -> tuple[str, list[str], list[str], list[str]]:
    versions = _clean(hello.supported_versions)
    version = max(versions) if versions else hello.legacy_version
    ciphers = [f"{v:04x}" for v in _clean(hello.cipher_suites)]
    extensions = _clean(hello.extensions)
    sni = "d" if EXT_SERVER_NAME in extensions else "i"
    prefix = (
        f"t{_JA4_VERSIONS.get(version, '00')}{sni}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
        f"{_alpn_code(hello.alpn_raw)}"
    )
    kept = [f"{v:04x}" for v in extensions if v not in (EXT_SERVER_NAME, EXT_ALPN)]
    signatures = [f"{v:04x}" for v in _clean(hello.signature_algorithms)]
    return prefix, sorted(ciphers), sorted(kept), signatures


def _alpn_code(alpn: tuple[bytes, ...]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    raw = alpn[0]
    first, last = chr(raw[0]), chr(raw[-1])
    if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
        return first + last
    # Later JA4 text: a value that does not start and end with an ASCII
    # letter or digit is shown by the first and last hex digits instead.
    text = raw.hex()
    return text[0] + text[-1]


def _extension_text(extensions: list[str], signatures: list[str]) -> str:
    text = ",".join(extensions)
    return f"{text}_{','.join(signatures)}" if signatures else text


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else _EMPTY_HASH


def ja4(hello: ClientHello) -> str:
    prefix, ciphers, extensions, signatures = _ja4_parts(hello)
    cipher_hash = _hash12(",".join(ciphers))
    extension_hash = (
        _hash12(_extension_text(extensions, signatures)) if extensions else _EMPTY_HASH
    )
    return f"{prefix}_{cipher_hash}_{extension_hash}"


def ja4_raw(hello: ClientHello) -> str:
    """JA4_r: the same fields before hashing, sorted."""
    prefix, ciphers, extensions, signatures = _ja4_parts(hello)
    return f"{prefix}_{','.join(ciphers)}_{_extension_text(extensions, signatures)}"
