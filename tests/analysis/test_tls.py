"""The sans-IO TLS parser, the fingerprints and the downgrade rules."""

from __future__ import annotations

import struct

import pytest

from analysis.downgrade import mangled_keyword
from analysis.records import AnomalyRecord, TlsRecord
from analysis.smtp.events import AnomalySeen, CommandSeen, TlsBytesSeen
from analysis.smtp.parser import SmtpParser
from analysis.tls import fingerprint
from analysis.tls.events import (
    AlertSeen,
    ClientHelloSeen,
    HandshakeEnded,
    Outcome,
    TlsAnomalySeen,
    TlsEvent,
)
from analysis.tls.hello import ClientHello, parse_client_hello
from analysis.tls.parser import TlsParser
from tests.analysis.conversation import C, S, session

# The example of FoxIO's JA4 specification (technical_details/JA4.md).
SPEC_CIPHERS = (
    0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
    0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035,
)  # fmt: skip
SPEC_EXTENSIONS = (
    0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005,
    0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015,
)  # fmt: skip
SPEC_SIGNATURES = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def spec_hello(grease: bool = False) -> ClientHello:
    g = (0x3A3A,) if grease else ()
    return ClientHello(
        legacy_version=0x0303,
        cipher_suites=g + SPEC_CIPHERS,
        extensions=g + SPEC_EXTENSIONS + g,
        server_name="example.com",
        alpn_raw=(b"h2", b"http/1.1"),
        supported_versions=(*g, 0x0304, 0x0303),
        supported_groups=(*g, 0x001D, 0x0017),
        ec_point_formats=(0,),
        signature_algorithms=SPEC_SIGNATURES,
    )


def test_ja4_of_the_specification_example() -> None:
    assert fingerprint.ja4(spec_hello()) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert fingerprint.ja4_raw(spec_hello()) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,"
        "c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,"
        "0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
    )


def test_grease_changes_no_fingerprint() -> None:
    assert fingerprint.ja4(spec_hello(True)) == fingerprint.ja4(spec_hello())
    assert fingerprint.ja3(spec_hello(True)) == fingerprint.ja3(spec_hello())
    assert fingerprint.is_grease(0xFAFA) and not fingerprint.is_grease(0x0A0B)


def test_ja3_string_fields() -> None:
    text = fingerprint.ja3_string(spec_hello(True))
    assert text.startswith("771,4865-4866-4867-")
    assert text.endswith(",29-23,0")


def test_ja4_alpn_and_no_sni_cases() -> None:
    plain = spec_hello()
    no_alpn = ClientHello(**{**_fields(plain), "alpn_raw": ()})
    assert fingerprint.ja4(no_alpn).startswith("t13d151600_")
    odd = ClientHello(**{**_fields(plain), "alpn_raw": (b"\xabx\x01",)})
    assert fingerprint.ja4(odd)[8:10] == "a1"  # hex digits at both ends
    no_sni = ClientHello(
        **{
            **_fields(plain),
            "extensions": tuple(e for e in SPEC_EXTENSIONS if e != 0),
            "server_name": None,
        }
    )
    assert fingerprint.ja4(no_sni).startswith("t13i1515h2_8daaf6152771_e5627efa2ab1")


def _fields(hello: ClientHello) -> dict[str, object]:
    return {name: getattr(hello, name) for name in ClientHello.__slots__}


# Wire encoding, to feed the parser ------------------------------------------


def _vec(size: int, data: bytes) -> bytes:
    return len(data).to_bytes(size, "big") + data


def _u16s(values: tuple[int, ...]) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def client_hello_body(sni: bytes = b"mail.example", alpn: bytes = b"smtp") -> bytes:
    extensions = [
        (0x0000, _vec(2, b"\x00" + _vec(2, sni))),
        (0x0010, _vec(2, _vec(1, alpn))),
        (0x002B, _vec(1, _u16s((0x0304, 0x0303)))),
        (0x000A, _vec(2, _u16s((0x001D,)))),
        (0x000D, _vec(2, _u16s((0x0403, 0x0804)))),
        (0x0015, b"\x00" * 300),  # padding, so the hello spans records below
    ]
    ext = b"".join(struct.pack("!H", t) + _vec(2, d) for t, d in extensions)
    return (
        b"\x03\x03"
        + b"\x11" * 32
        + _vec(1, b"\x22" * 32)
        + _vec(2, _u16s((0x1301, 0xC02F)))
        + _vec(1, b"\x00")
        + _vec(2, ext)
    )


def handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _vec(3, body)


def record(kind: int, fragment: bytes) -> bytes:
    return bytes([kind, 3, 3]) + _vec(2, fragment)


def feed_all(parser: TlsParser, chunks: list[tuple[bool, bytes]]) -> list[TlsEvent]:
    events: list[TlsEvent] = []
    for i, (from_client, data) in enumerate(chunks):
        events += parser.feed(from_client, data, i)
    return events


def test_client_hello_parses() -> None:
    hello = parse_client_hello(client_hello_body())
    assert hello.server_name == "mail.example"
    assert hello.alpn == ("smtp",)
    assert hello.cipher_suites == (0x1301, 0xC02F)
    assert hello.supported_versions == (0x0304, 0x0303)
    assert fingerprint.ja4(hello).startswith("t13d0206sp_")
    assert hello.random == b"\x11" * 32  # what a key log names it by


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"mail.example", "mail.example"),
        ("mäil.example".encode(), "mäil.example"),  # an IDN's U-label
        (b"m\xe4il.example", "m\\xe4il.example"),  # Latin-1: not UTF-8
    ],
)
def test_server_name_and_alpn_are_decoded_as_utf8(raw: bytes, text: str) -> None:
    # Found in review: the SNI was decoded as ASCII, so a UTF-8 name showed
    # escaped while all other text from the wire is decoded as UTF-8.
    hello = parse_client_hello(client_hello_body(sni=raw, alpn=raw))
    assert (hello.server_name, hello.alpn) == (text, (text,))
    # The fingerprints never read the name: JA4's "d" says one was sent.
    ascii_hello = parse_client_hello(client_hello_body(alpn=raw))
    assert fingerprint.ja4(hello) == fingerprint.ja4(ascii_hello)
    assert fingerprint.ja3(hello) == fingerprint.ja3(ascii_hello)


def test_record_split_byte_by_byte_and_message_across_records() -> None:
    message = handshake(1, client_hello_body())
    # The hello in three records, sent one byte per segment.
    wire = b"".join(record(22, message[i : i + 150]) for i in range(0, 450, 150))
    assert len(message) < 450
    parser = TlsParser()
    events = feed_all(parser, [(True, wire[i : i + 1]) for i in range(len(wire))])
    hellos = [e for e in events if isinstance(e, ClientHelloSeen)]
    assert [h.hello for h in hellos] == [parse_client_hello(client_hello_body())]


def test_several_records_in_one_segment_then_tls12_completion() -> None:
    server_hello = (
        b"\x03\x03" + b"\x33" * 32 + _vec(1, b"") + b"\xc0\x2f" + b"\x00" + _vec(2, b"")
    )
    flight = record(22, handshake(2, server_hello)) + record(22, handshake(14, b""))
    parser = TlsParser()
    events = feed_all(
        parser,
        [
            (True, record(22, handshake(1, client_hello_body()))),
            (False, flight),
            (True, record(20, b"\x01") + record(22, b"\x99" * 40)),
            (False, record(20, b"\x01")),
            (False, record(22, b"\x98" * 40)[:10]),  # Finished, split
        ],
    )
    assert parser.outcome is None
    events += parser.feed(False, record(22, b"\x98" * 40)[10:], 9)
    assert [e.outcome for e in events if isinstance(e, HandshakeEnded)] == [
        Outcome.COMPLETED
    ]


def test_fatal_alert_fails_the_handshake() -> None:
    parser = TlsParser()
    events = feed_all(
        parser,
        [
            (True, record(22, handshake(1, client_hello_body()))),
            (False, record(21, b"\x02\x28")),
        ],
    )
    alerts = [e for e in events if isinstance(e, AlertSeen)]
    assert alerts == [AlertSeen(1, False, 2, "handshake_failure")]
    assert parser.outcome is Outcome.FAILED


@pytest.mark.parametrize(
    "body",
    [b"", b"\x02", b"\x02\x28\x02\x28", b"\x02\x28" * 1000],
    ids=["empty", "one byte", "two alerts", "2000 bytes"],
)
def test_an_alert_record_in_the_clear_of_other_than_two_bytes_is_malformed(
    body: bytes,
) -> None:
    # Found in review: one of 2000 bytes was shown as "server encrypted".
    parser = TlsParser()
    events = feed_all(
        parser,
        [
            (True, record(22, handshake(1, client_hello_body()))),
            (False, record(21, body)),
        ],
    )
    detail = f"server alert of {len(body)} bytes"
    assert [e for e in events if not isinstance(e, ClientHelloSeen)] == [
        AlertSeen(1, False, None, "malformed"),
        TlsAnomalySeen(1, "tls_malformed", detail),
        HandshakeEnded(1, Outcome.FAILED),
    ]
    hello = record(22, handshake(1, client_hello_body()))
    result = session([(C, hello), (S, record(21, body))], port=465)
    sid = result.session.session_id
    assert (result.session.tls_alert, result.session.tls_handshake) == (
        "server malformed",
        "failed",
    )
    assert [(t.alert, t.outcome) for t in result.tls] == [
        ("server malformed", "failed")
    ]
    assert result.anomalies == [AnomalyRecord(sid, 2, "tls_malformed", detail)]


def test_an_alert_record_after_a_tls13_server_hello_is_read() -> None:
    # A client refusing the ServerHello has no keys yet and sends its alert
    # in the clear; it was shown as "client encrypted".
    versions = b"\x00\x2b\x00\x02\x03\x04"  # supported_versions: TLS 1.3
    server_hello = (
        b"\x03\x03" + b"\x33" * 32 + _vec(1, b"") + b"\x13\x01\x00" + _vec(2, versions)
    )
    parser = TlsParser()
    events = feed_all(
        parser,
        [
            (True, record(22, handshake(1, client_hello_body()))),
            (False, record(22, handshake(2, server_hello))),
            (True, record(21, b"\x02\x2f")),
        ],
    )
    assert [e for e in events if isinstance(e, (AlertSeen, HandshakeEnded))] == [
        AlertSeen(2, True, 2, "illegal_parameter"),
        HandshakeEnded(2, Outcome.FAILED),
    ]


def test_plain_text_where_tls_was_due() -> None:
    parser = TlsParser()
    events = parser.feed(True, b"EHLO client\r\n", 5)
    kinds = [e.kind for e in events if isinstance(e, TlsAnomalySeen)]
    assert kinds == ["not_tls"]
    assert parser.outcome is Outcome.FAILED
    assert parser.feed(True, b"more", 6) == []


def test_connection_ends_during_the_handshake() -> None:
    parser = TlsParser()
    feed_all(parser, [(True, record(22, handshake(1, client_hello_body()))[:20])])
    assert parser.close(9) == [HandshakeEnded(9, Outcome.INCOMPLETE)]


def test_gap_inside_a_skipped_record_keeps_framing() -> None:
    parser = TlsParser()
    parser.feed(True, record(23, b"\x00" * 100)[:10], 1)
    parser.gap(True, 50, 2)
    events = parser.feed(True, b"\x00" * 45 + record(21, b"\x02\x28"), 3)
    assert [type(e).__name__ for e in events] == ["AlertSeen", "HandshakeEnded"]


def test_mangled_keywords() -> None:
    assert mangled_keyword("XXXXXXXA")
    assert mangled_keyword("XXXXXXXX")
    assert not mangled_keyword("XEXCH50")
    assert not mangled_keyword("STARTTLS")
    assert not mangled_keyword("XXX")


# Traffic that is not what the port promises ---------------------------------


def test_http_on_an_smtp_port_is_recognised_not_parsed() -> None:
    p = SmtpParser()
    events = p.feed_client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    events += p.feed_server(b"HTTP/1.1 400 Bad Request\r\n\r\n", 2) + p.close(3)
    assert [(e.kind, e.detail[:22]) for e in events if isinstance(e, AnomalySeen)] == [
        ("not_smtp", "client speaks HTTP: GE")
    ]
    assert not [e for e in events if isinstance(e, CommandSeen)]


def test_ssh_server_on_an_smtp_port() -> None:
    p = SmtpParser()
    events = p.feed_server(b"SSH-2.0-OpenSSH_9.2\r\n", 1) + p.close(2)
    assert [e.kind for e in events if isinstance(e, AnomalySeen)] == ["not_smtp"]


def test_plain_smtp_on_the_implicit_tls_port_is_still_parsed() -> None:
    p = SmtpParser(implicit_tls=True)
    events = p.feed_server(b"220 mx ESMTP\r\n", 1) + p.feed_client(b"EHLO a\r\n", 2)
    assert [e.kind for e in events if isinstance(e, AnomalySeen)] == [
        "plaintext_on_tls_port"
    ]
    assert [e.verb for e in events if isinstance(e, CommandSeen)] == ["EHLO"]


def test_tls_on_a_plain_port_goes_to_the_tls_parser() -> None:
    p = SmtpParser()
    hello = record(22, handshake(1, client_hello_body()))
    events = p.feed_client(hello, 1)
    kinds = [e.kind for e in events if isinstance(e, AnomalySeen)]
    assert kinds == ["tls_on_plain_port"]
    sent = b"".join(e.data for e in events if isinstance(e, TlsBytesSeen))
    assert sent == hello


def test_server_injection_bytes_stay_out_of_the_tls_stream() -> None:
    p = SmtpParser()
    p.feed_server(b"220 mx\r\n", 1)
    p.feed_client(b"STARTTLS\r\n", 2)
    events = p.feed_server(b"220 go\r\n250 fake\r\n", 3)
    (anomaly,) = [e for e in events if isinstance(e, AnomalySeen)]
    assert anomaly.kind == "starttls_server_injection"
    assert anomaly.detail == "10 bytes after the 220: 250 fake\\r\\n"
    assert not [e for e in events if isinstance(e, TlsBytesSeen)]


# The SSL 2.0 form of a ClientHello (RFC 5246 E.2) -----------------------------

# Three TLS suites as specs (first byte zero) and SSL 2.0's RC4-128-MD5.
V2_SPECS = (0x00C02F, 0x00009C, 0x00002F, 0x010080)


def v2_client_hello(version: int = 0x0301, challenge: int = 16) -> bytes:
    specs = b"".join(spec.to_bytes(3, "big") for spec in V2_SPECS)
    body = (
        b"\x01"
        + struct.pack("!HHHH", version, len(specs), 0, challenge)
        + specs
        + b"\x5a" * challenge
    )
    return struct.pack("!H", 0x8000 | len(body)) + body


def test_an_sslv2_form_hello_byte_by_byte_then_a_tls_handshake() -> None:
    wire = v2_client_hello()
    server_hello = (
        b"\x03\x01" + b"\x33" * 32 + _vec(1, b"") + b"\x00\x2f" + b"\x00" + _vec(2, b"")
    )
    parser = TlsParser()
    events = feed_all(parser, [(True, wire[i : i + 1]) for i in range(len(wire))])
    events += feed_all(
        parser,
        [
            (False, record(22, handshake(2, server_hello) + handshake(14, b""))),
            (True, record(22, handshake(16, b"\x00" * 66))),
            (True, record(20, b"\x01") + record(22, b"\x99" * 40)),
            (False, record(20, b"\x01") + record(22, b"\x98" * 40)),
        ],
    )
    anomalies = [(e.kind, e.detail) for e in events if isinstance(e, TlsAnomalySeen)]
    assert anomalies == [
        ("sslv2_hello", "client hello in SSL 2.0 form, offering TLSv1.0")
    ]
    (seen,) = [e.hello for e in events if isinstance(e, ClientHelloSeen)]
    assert _fields(seen) == {
        "legacy_version": 0x0301,
        "cipher_suites": V2_SPECS,
        "extensions": (),
        "server_name": None,
        "alpn_raw": (),
        "supported_versions": (),
        "supported_groups": (),
        "ec_point_formats": (),
        "signature_algorithms": (),
        "sslv2_format": True,
        # The challenge, padded with leading zeros (RFC 2246 E.1).
        "random": b"\0" * 16 + b"\x5a" * 16,
    }
    assert parser.outcome is Outcome.COMPLETED


def test_a_malformed_sslv2_form_hello_keeps_the_framing() -> None:
    parser = TlsParser()
    events = parser.feed(True, v2_client_hello(challenge=8), 1)
    assert [(e.kind, e.detail) for e in events if isinstance(e, TlsAnomalySeen)] == [
        ("tls_malformed", "client SSL 2.0 hello: challenge of 8 bytes")
    ]
    assert not [e for e in events if isinstance(e, ClientHelloSeen)]
    # The next record is read as TLS: the hello's length was still good.
    alert = parser.feed(False, record(21, b"\x02\x28"), 2)
    assert [e for e in alert if isinstance(e, AlertSeen)] == [
        AlertSeen(2, False, 2, "handshake_failure")
    ]


def test_the_sslv2_form_is_read_only_as_a_clients_first_message() -> None:
    hello = v2_client_hello()
    for from_client, first in ((False, b""), (True, record(22, b"\x00" * 4))):
        parser = TlsParser()
        events = parser.feed(from_client, first + hello, 1)
        kinds = [e.kind for e in events if isinstance(e, TlsAnomalySeen)]
        assert kinds == ["not_tls"]
    # Nor any top-bit header whose message is not a CLIENT-HELLO (here an
    # SSL 2.0 SERVER-HELLO's type) or whose version is neither 2.0 nor 3.x.
    for changed in (b"\x04\x03\x01", b"\x01\x01\x00"):
        wire = hello[:2] + changed + hello[5:]
        events = TlsParser().feed(True, wire, 1)
        kinds = [e.kind for e in events if isinstance(e, TlsAnomalySeen)]
        assert kinds == ["not_tls"]


# Found in review: on port 465 the SMTP parser took only a TLS record's
# first byte for TLS, so an SSL 2.0-form hello became clear text there.
V2_OFFER = ("sslv2_hello", "client hello in SSL 2.0 form, offering TLSv1.0")
REFUSED = record(21, b"\x02\x28")  # fatal handshake_failure


def v2_row(sid: str, start: int, mode: str, outcome: str, end: int) -> TlsRecord:
    """The tls row of a v2_client_hello() that got REFUSED or nothing."""
    alert = "server fatal handshake_failure" if outcome == "failed" else None
    return TlsRecord(
        sid,
        start,
        mode,
        outcome,
        client_version="TLSv1.0",
        cipher_suites=list(V2_SPECS),
        alert=alert,
        end=end,
    )


def test_an_sslv2_form_hello_on_the_implicit_tls_port() -> None:
    result = session([(C, v2_client_hello()), (S, REFUSED)], port=465)
    sid = result.session.session_id
    assert result.session.tls == "implicit"
    assert result.commands == []
    assert result.anomalies == [AnomalyRecord(sid, 1, *V2_OFFER)]
    assert result.tls == [v2_row(sid, 1, "implicit", "failed", end=2)]


def test_an_sslv2_form_hello_on_port_465_a_byte_at_a_time() -> None:
    # The first byte alone decides, as a TLS record's 0x16 does there.
    wire = v2_client_hello()
    result = session([(C, wire[i : i + 1]) for i in range(len(wire))], port=465)
    sid = result.session.session_id
    assert (result.session.tls, result.commands) == ("implicit", [])
    assert result.anomalies == [AnomalyRecord(sid, len(wire), *V2_OFFER)]
    assert result.tls == [v2_row(sid, 1, "implicit", "incomplete", len(wire) + 1)]


def test_top_bit_bytes_that_are_no_sslv2_hello_stay_clear_text_on_465() -> None:
    # Type 4 (an SSL 2.0 SERVER-HELLO); version 0x0100, neither 2.0 nor 3.x.
    hello = v2_client_hello()
    for changed in (b"\x04\x03\x01", b"\x01\x01\x00"):
        wire = hello[:2] + changed + hello[5:]
        result = session([(C, wire)], port=465)
        assert (result.session.tls, result.tls) == ("none", [])
        kinds = [a.kind for a in result.anomalies]
        assert kinds == ["plaintext_on_tls_port", "unterminated_line"]


def test_an_sslv2_form_hello_where_smtp_commands_were_due() -> None:
    # As a TLS record there: no SMTP command starts with a top-bit byte.
    result = session([(S, b"220 mx\r\n"), (C, v2_client_hello()), (S, REFUSED)])
    sid = result.session.session_id
    assert (result.session.tls, result.commands) == ("implicit", [])
    assert result.anomalies == [
        AnomalyRecord(sid, 2, "tls_on_plain_port", "client began TLS at once"),
        AnomalyRecord(sid, 2, *V2_OFFER),
    ]
    assert result.tls == [v2_row(sid, 2, "implicit", "failed", end=3)]


def test_an_sslv2_form_hello_after_starttls_with_no_server_in_sight() -> None:
    result = session([(C, b"EHLO a\r\nSTARTTLS\r\n"), (C, v2_client_hello())])
    sid = result.session.session_id
    assert result.session.tls == "starttls"
    assert [c.verb for c in result.commands] == ["EHLO", "STARTTLS"]
    assert result.anomalies == [AnomalyRecord(sid, 2, *V2_OFFER)]
    assert result.tls == [v2_row(sid, 2, "starttls", "incomplete", end=3)]


def test_on_a_plain_port_an_sslv2_hello_needs_its_whole_opening() -> None:
    # Where commands are due, the five bytes of header, type and version
    # decide, not fewer: a hello cut after four stays a (binary) command,
    # as a TLS record cut after its first byte does. Not after a refused
    # STARTTLS, it is no TLS record skipped either (tls_not_agreed): a
    # server reads it as a line.
    wire = v2_client_hello()
    result = session([(S, b"220 mx\r\n"), (C, wire[:4]), (C, wire[4:])])
    assert (result.session.tls, result.tls) == ("none", [])
    assert len(result.commands) == 1
    assert [a.kind for a in result.anomalies] == ["unterminated_line", "no_reply"]


HELLO_RETRY_RANDOM = bytes.fromhex(
    "CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C"
)


def _tls13_server_hello(random: bytes, cipher: int) -> bytes:
    supported_versions = struct.pack("!HH", 0x002B, 2) + b"\x03\x04"
    return handshake(
        2,
        b"\x03\x03"
        + random
        + _vec(1, b"\x22" * 32)
        + struct.pack("!H", cipher)
        + b"\x00"
        + _vec(2, supported_versions),
    )


def test_a_hello_retry_request_with_compatibility_records() -> None:
    # RFC 8446 4.1.4 and D.4, as OpenSSL does it (found in review): the
    # server's HelloRetryRequest and a compatibility ChangeCipherSpec, the
    # client's ChangeCipherSpec and second ClientHello, then the real
    # ServerHello, whose version and cipher the row must carry.
    ccs = record(20, b"\x01")
    hello = record(22, handshake(1, client_hello_body()))
    result = session(
        [
            (C, hello),
            (S, record(22, _tls13_server_hello(HELLO_RETRY_RANDOM, 0x1301)) + ccs),
            (C, ccs + hello),
            (S, record(22, _tls13_server_hello(b"\x44" * 32, 0x1302))),
            (S, record(23, b"\x55" * 40)),  # EncryptedExtensions ... Finished
            (C, record(23, b"\x66" * 40)),  # the client's Finished
        ],
        port=465,
    )
    [tls] = result.tls
    assert (tls.hello_retry, tls.version, tls.cipher, tls.cipher_id) == (
        True,
        "TLSv1.3",
        "TLS_AES_256_GCM_SHA384",
        0x1302,
    )
    assert (tls.outcome, tls.end) == ("completed", 6)
    assert (result.session.tls_version, result.session.tls_handshake) == (
        "TLSv1.3",
        "completed",
    )
    assert result.anomalies == []
