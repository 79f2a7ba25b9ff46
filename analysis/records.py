"""The rows smtpscope produces: one record type per table.

Records are filled in while a connection is being analysed and are final once
its ``StreamClosed`` has been handled. Field names are the public column names
of the ``sessions``, ``transactions``, ``commands``, ``anomalies`` and ``tls``
tables;
users' scripts depend on them, so fields are only ever added, never renamed.

Timestamps are integer nanoseconds since the Unix epoch (UTC); the table layer
turns them into timezone-aware datetimes. Durations are float seconds.
Strings that came off the wire are kept as decoded text (bytes outside ASCII
decoded as UTF-8 with backslash escapes for anything invalid) and are escaped
again by each view before they reach a terminal, a CSV cell or an HTML page.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def used_tls(tls: str, handshake: str) -> bool:
    """Whether a session counts as TLS in the report's, check's and live's
    TLS share: STARTTLS or implicit TLS whose handshake did not fail (an
    alert, or bytes that are not TLS, ended it: nothing was protected).
    One the capture caught inside TLS, or that ended during the handshake,
    counts."""
    return tls != "none" and handshake != "failed"


def content_verdict(txn: TransactionRecord) -> int | None:
    """The code of the verdict on a DATA message that no command row holds,
    for the counts of replies: the reply to its end of data. None for BDAT
    (its verdict is its LAST chunk's row) and for a DATA refused before any
    content, whose data_code is its own row's reply."""
    if txn.data_method == "DATA" and txn.message_complete is not None:
        return txn.data_code
    return None


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    start: int
    end: int
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    greeting_code: int | None = None
    greeting_text: str | None = None
    helo: str | None = None  # argument of the last EHLO/HELO/LHLO
    helo_verb: str | None = None
    capabilities: list[str] = field(default_factory=list)  # EHLO keywords
    tls: str = "none"  # none, starttls or implicit
    tls_start: int | None = None
    tls_client_bytes: int = 0
    tls_server_bytes: int = 0
    # The mechanism, user and result of one AUTH: the accepted one, else the
    # last refused for its credentials, else the last (SessionBuilder._show_auth).
    auth_mechanism: str | None = None
    auth_user: str | None = None
    # success, failure (credentials invalid), refused (for another reason),
    # cancelled, no_reply
    auth_result: str | None = None
    auth_attempts: int = 0
    auth_failures: int = 0  # AUTH commands refused for their credentials (535)
    commands: int = 0
    transactions: int = 0
    messages_accepted: int = 0
    client_bytes: int = 0  # application bytes delivered in order, each way
    server_bytes: int = 0
    handshake_rtt_s: float | None = None
    greeting_delay_s: float | None = None
    duration_s: float = 0.0
    close: str = ""  # fin, rst, idle, end_of_capture, reused
    gaps: int = 0
    gap_bytes: int = 0
    anomalies: int = 0
    handshake_seen: bool = False
    client_packets: int = 0
    server_packets: int = 0
    # TLS handshake, read without keys (see analysis.tls).
    tls_version: str | None = None  # negotiated, e.g. TLSv1.3
    tls_cipher: str | None = None
    tls_sni: str | None = None
    tls_ja3: str | None = None
    tls_ja4: str | None = None
    tls_handshake: str = "none"  # none, completed, failed, incomplete
    tls_alert: str | None = None  # first alert, e.g. "server fatal unknown_ca"
    cert_subject: str | None = None  # the server's own certificate
    cert_issuer: str | None = None
    cert_sha256: str | None = None
    cert_self_signed: bool | None = None
    # STARTTLS posture (RFC 3207).
    starttls_offered: bool = False  # a clear-text EHLO reply listed STARTTLS
    starttls_attempted: bool = False
    starttls_reply: int | None = None
    auth_cleartext: bool = False  # AUTH sent before any TLS
    tls_decrypted: bool = False  # the SMTP inside TLS was read with a key log
    synack_seen: bool = False  # the server's SYN-ACK, beside handshake_seen's SYN
    # Past the TCP handshake, as the capture shows (Connection.handshake_completed).
    handshake_completed: bool = False
    # The connection's Community ID (v1), as Zeek, Suricata and Arkime tag
    # it; every session the builder makes has one.
    community_id: str | None = None
    # AUTH commands accepted: auth_result tells of one AUTH only.
    auth_successes: int = 0
    # AUTH commands refused for another reason than their credentials (504
    # mechanism unknown, 534, 538, 432 and 454, 500 and 501, 503 ...), not
    # counting those the client cancelled: see analysis.smtp.auth.outcome.
    auth_other_refusals: int = 0


@dataclass(slots=True)
class TransactionRecord:
    session_id: str
    index: int  # 0-based position among this session's MAIL commands
    start: int
    mail_from: str | None = None  # the reverse-path without angle brackets
    mail_from_code: int | None = None
    mail_params: str | None = None  # ESMTP parameters after the address
    # Every RCPT, refused too, up to analysis.session.MAX_LISTED_RCPTS.
    rcpt_to: list[str] = field(default_factory=list)
    rcpt_codes: list[int | None] = field(default_factory=list)
    rcpts_accepted: int = 0
    data_method: str | None = None  # DATA or BDAT
    data_code: int | None = None  # final reply to the message content
    message_bytes: int | None = None  # after dot-unstuffing (DATA) or chunks
    data_duration_s: float | None = None
    queue_id: str | None = None
    date: str | None = None
    from_: str | None = None  # the From: header; column name is "from"
    to: str | None = None
    cc: str | None = None
    subject: str | None = None
    subject_decoded: str | None = None  # its =?charset?B/Q?...?= words decoded
    message_id: str | None = None
    status: str = "incomplete"  # accepted, rejected, reset, incomplete
    end: int | None = None  # when status got its value; None while incomplete
    tls: bool = False
    # None until content is sent (354 to DATA, a BDAT chunk); then false
    # when part of it was never seen or the message never reached its end.
    message_complete: bool | None = None
    # The final reply's RFC 3463 code and text, as data_code's (Zeek's
    # last_reply): why a message was refused is often only said there.
    data_enhanced: str | None = None
    data_reply: str | None = None
    # More of the message's headers, as Zeek's smtp.log has them.
    reply_to: str | None = None
    in_reply_to: str | None = None
    user_agent: str | None = None  # User-Agent, X-Mailer or X-User-Agent
    x_originating_ip: str | None = None  # its first address
    first_received: str | None = None  # the earliest hop's Received header
    second_received: str | None = None
    # Every RCPT of the transaction, listed in rcpt_to or not (the session's
    # list is capped: analysis.session.MAX_LISTED_RCPTS).
    rcpts_total: int = 0
    # LMTP only (RFC 2033 4.2): the reply to the message for each listed
    # RCPT, in rcpt_to's order; None for one refused, or still unanswered.
    rcpt_data_codes: list[int | None] = field(default_factory=list)


@dataclass(slots=True)
class CommandRecord:
    session_id: str
    ts: int
    verb: str  # upper-cased when it is a known verb, else as sent
    argument: str  # AUTH payloads are replaced by "[redacted]"
    reply_code: int | None = None
    reply_enhanced: str | None = None  # RFC 3463 class.subject.detail
    reply_text: str | None = None  # multi-line replies joined with "\n"
    reply_ts: int | None = None
    latency_s: float | None = None
    pipelined: bool = False  # sent before the previous command's reply
    tls: bool = False  # seen inside decrypted TLS


@dataclass(slots=True)
class AnomalyRecord:
    session_id: str
    ts: int
    kind: str
    detail: str


@dataclass(slots=True)
class TlsRecord:
    """One TLS handshake: its hellos, certificates and outcome."""

    session_id: str
    start: int  # first TLS byte
    mode: str  # starttls or implicit
    outcome: str = "incomplete"  # completed, failed, incomplete
    client_version: str | None = None  # legacy_version of the ClientHello
    client_versions: list[str] = field(default_factory=list)  # supported_versions
    cipher_suites: list[int] = field(default_factory=list)  # offered, wire order
    extensions: list[int] = field(default_factory=list)  # ClientHello, wire order
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    ja3: str | None = None
    ja3_string: str | None = None
    ja4: str | None = None
    ja4_r: str | None = None
    version: str | None = None  # negotiated
    cipher: str | None = None  # chosen by the server
    cipher_id: int | None = None
    hello_retry: bool = False  # the server sent a HelloRetryRequest
    alert: str | None = None
    cert_count: int = 0  # certificates the server sent in the clear
    cert_subject: str | None = None
    cert_issuer: str | None = None
    cert_sans: list[str] = field(default_factory=list)
    cert_not_before: int | None = None
    cert_not_after: int | None = None
    cert_sha256: str | None = None
    cert_self_signed: bool | None = None
    chain_sha256: list[str] = field(default_factory=list)
    end: int | None = None  # when the outcome was known


@dataclass(slots=True)
class SessionResult:
    """Everything one connection produced, handed over when it closes."""

    session: SessionRecord
    transactions: list[TransactionRecord]
    commands: list[CommandRecord]
    anomalies: list[AnomalyRecord]
    tls: list[TlsRecord] = field(default_factory=list)
    # The random of its ClientHello, which a key log names the secrets by:
    # a run with a key log counts it (pipeline). No column: it is not
    # spooled, nor part of the session's rows when results are compared.
    client_random: bytes | None = field(default=None, compare=False)
