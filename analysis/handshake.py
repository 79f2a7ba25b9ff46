"""From a connection's TLS bytes to its ``tls`` row and session columns.

``HandshakeBuilder`` owns the TLS parser of one session. The SMTP parser
hands it the TLS bytes of each direction (``TlsBytesSeen``); it turns the TLS
events into one ``TlsRecord`` and copies the main facts onto the session row
when the connection closes.
"""

from __future__ import annotations

from analysis.records import AnomalyRecord, SessionRecord, TlsRecord
from analysis.tls import fingerprint, x509
from analysis.tls.events import (
    AlertSeen,
    CertificatesSeen,
    ClientHelloSeen,
    HandshakeEnded,
    ServerHelloSeen,
    TlsAnomalySeen,
    TlsEvent,
)
from analysis.tls.names import cipher_name, version_name
from analysis.tls.parser import TlsParser

# Certificates of a chain read and listed (chain_sha256); cert_count counts
# them all.
MAX_CHAIN = 100


class HandshakeBuilder:
    def __init__(self, session_id: str, ts: int, implicit: bool) -> None:
        self.record = TlsRecord(
            session_id=session_id,
            start=ts,
            mode="implicit" if implicit else "starttls",
        )
        self._parser = TlsParser()
        self.anomalies: list[AnomalyRecord] = []
        # Whether any TLS byte was seen, or lost in a gap: until then the
        # handshake has not begun, and ``start`` is when TLS was agreed.
        self.begun = False
        # The ClientHello's random, by which a key log names the secrets.
        self.client_random: bytes | None = None

    def data(self, from_client: bool, data: bytes, missing: int, ts: int) -> None:
        if not self.begun and (data or missing):
            self.begun = True
            self.record.start = ts  # the first TLS byte
        if missing:
            events = self._parser.gap(from_client, missing, ts)
        else:
            events = self._parser.feed(from_client, data, ts)
        if events:  # past the handshake, records pass by without any
            self._apply(events)

    def close(self, ts: int, session: SessionRecord) -> TlsRecord:
        self._apply(self._parser.close(ts))
        r = self.record
        session.tls_version = r.version
        session.tls_cipher = r.cipher
        session.tls_sni = r.sni
        session.tls_ja3 = r.ja3
        session.tls_ja4 = r.ja4
        session.tls_handshake = r.outcome
        session.tls_alert = r.alert
        session.cert_subject = r.cert_subject
        session.cert_issuer = r.cert_issuer
        session.cert_sha256 = r.cert_sha256
        session.cert_self_signed = r.cert_self_signed
        return r

    def _apply(self, events: list[TlsEvent]) -> None:
        r = self.record
        for event in events:
            if isinstance(event, ClientHelloSeen):
                self._client_hello(event)
            elif isinstance(event, ServerHelloSeen):
                hello = event.hello
                if hello.retry_request:
                    r.hello_retry = True
                    continue
                r.version = version_name(hello.version)
                r.cipher = cipher_name(hello.cipher_suite)
                r.cipher_id = hello.cipher_suite
            elif isinstance(event, CertificatesSeen):
                self._certificates(event)
            elif isinstance(event, AlertSeen):
                if r.alert is None:
                    r.alert = _alert_text(event)
            elif isinstance(event, HandshakeEnded):
                r.outcome = str(event.outcome)
                r.end = event.ts
            elif isinstance(event, TlsAnomalySeen):
                self.anomalies.append(
                    AnomalyRecord(r.session_id, event.ts, event.kind, event.detail)
                )

    def _client_hello(self, event: ClientHelloSeen) -> None:
        r = self.record
        hello = event.hello
        self.client_random = hello.random
        r.client_version = version_name(hello.legacy_version)
        r.client_versions = [
            version_name(v)
            for v in hello.supported_versions
            if not fingerprint.is_grease(v)
        ]
        r.cipher_suites = list(hello.cipher_suites)
        r.extensions = list(hello.extensions)
        r.sni = hello.server_name
        r.alpn = list(hello.alpn)
        if hello.sslv2_format:
            # JA3 and JA4 are defined over the TLS form of the message, and
            # tshark gives none for this one: a value here would match
            # nothing, and could be taken for another tool's.
            return
        r.ja3_string = fingerprint.ja3_string(hello)
        r.ja3 = fingerprint.ja3(hello)
        r.ja4 = fingerprint.ja4(hello)
        r.ja4_r = fingerprint.ja4_raw(hello)

    def _certificates(self, event: CertificatesSeen) -> None:
        r = self.record
        chain = event.chain
        r.cert_count = len(chain)
        if len(chain) > MAX_CHAIN:
            # Real chains are a few certificates long; one message can hold
            # 87,000 empty ones, each described, hashed and reported
            # unreadable: 86 MB for a 275 KB connection (found in review).
            self.anomalies.append(
                AnomalyRecord(
                    r.session_id,
                    event.ts,
                    "certificate_list_capped",
                    f"{len(chain):,} certificates sent; only the first "
                    f"{MAX_CHAIN} are read and listed",
                )
            )
            chain = chain[:MAX_CHAIN]
        infos = [x509.describe(der, leaf=i == 0) for i, der in enumerate(chain)]
        r.chain_sha256 = [info.sha256 for info in infos]
        if not infos:
            return
        leaf = infos[0]
        r.cert_subject = leaf.subject
        r.cert_issuer = leaf.issuer
        r.cert_sans = list(leaf.sans)
        r.cert_not_before = leaf.not_before
        r.cert_not_after = leaf.not_after
        r.cert_sha256 = leaf.sha256
        r.cert_self_signed = leaf.self_signed
        for info in infos:
            if info.error is not None:
                self.anomalies.append(
                    AnomalyRecord(
                        r.session_id,
                        event.ts,
                        "certificate_unreadable",
                        f"{info.sha256[:16]}: {info.error[:120]}",
                    )
                )


def _alert_text(event: AlertSeen) -> str:
    side = "client" if event.from_client else "server"
    level = {1: "warning", 2: "fatal"}.get(event.level or 0, "")
    return " ".join(part for part in (side, level, event.description) if part)
