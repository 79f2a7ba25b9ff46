"""The column layout of every table smtpscope produces, defined once.

``TABLES`` lists, per table, each column's public name, the record attribute
it is read from, its logical kind and a one-line description. The table
builder, the exporters and the generated documentation all read it, so a
column is added here and nowhere else. Column names are part of the public
interface: users' scripts and notebooks depend on them, so columns are only
ever appended, never renamed or reordered.

Each logical kind maps to exactly one pandas dtype (``DTYPE``); every table
has exactly these dtypes even when it has no rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """What a column holds, independent of any one storage format."""

    TIMESTAMP = "timestamp"  # integer ns since the epoch in the record
    FLOAT = "float"  # durations in seconds; missing is NaN
    INT = "int"  # counts and ports, never missing
    NULLABLE_INT = "nullable_int"  # reply codes and sizes that may be missing
    BOOL = "bool"
    NULLABLE_BOOL = "nullable_bool"  # yes, no or unknown
    STRING = "string"
    STRING_LIST = "string_list"  # Python list of str per cell
    INT_LIST = "int_list"  # Python list of int | None per cell


DTYPE: dict[Kind, str] = {
    Kind.TIMESTAMP: "datetime64[ns, UTC]",
    Kind.FLOAT: "float64",
    Kind.INT: "int64",
    Kind.NULLABLE_INT: "Int64",
    Kind.BOOL: "bool",
    Kind.NULLABLE_BOOL: "boolean",
    Kind.STRING: "string",
    Kind.STRING_LIST: "object",
    Kind.INT_LIST: "object",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    doc: str
    field: str = ""  # record attribute, when it differs from ``name``

    @property
    def attribute(self) -> str:
        return self.field or self.name

    @property
    def dtype(self) -> str:
        return DTYPE[self.kind]


_T = Kind.TIMESTAMP
_F = Kind.FLOAT
_I = Kind.INT
_NI = Kind.NULLABLE_INT
_B = Kind.BOOL
_NB = Kind.NULLABLE_BOOL
_S = Kind.STRING
_SL = Kind.STRING_LIST

# Why cert_self_signed may be missing (analysis.tls.x509).
_UNCHECKED = (
    " (missing when it cannot be read, or its key is too costly to check:"
    " an RSA exponent past 64 bits)"
)

SESSIONS: tuple[Column, ...] = (
    Column(
        "session_id",
        _S,
        "identifier shared by all rows of one connection, made from its first "
        "packet's time (to the nanosecond the capture records) and its "
        "addresses and ports: the same however the input is split into files "
        "or processes, but a capture of the same traffic in microseconds "
        "(tcpdump's pcap) gives other ids than one in nanoseconds (`live -w`, "
        "pcapng)",
    ),
    Column("start", _T, "first packet of the connection"),
    Column(
        "end",
        _T,
        "last packet of the connection: up to the ACK of its last FIN, its "
        "RST, or the last packet read",
    ),
    Column("client_ip", _S, "address of the side that opened the connection"),
    Column("client_port", _I, "client TCP port"),
    Column("server_ip", _S, "address of the SMTP server"),
    Column("server_port", _I, "server TCP port"),
    Column(
        "greeting_code",
        _NI,
        "reply code of the server greeting: the server's first reply, or on a "
        "connection caught after its start only a first reply of 220, 421 or "
        "554 (RFC 5321 3.1); missing when none was seen",
    ),
    Column("greeting_text", _S, "text of the server greeting"),
    Column(
        "helo",
        _S,
        "argument of the last EHLO, HELO or LHLO the server accepted "
        "(of the last sent, while none was)",
    ),
    Column("helo_verb", _S, "the verb of that command: EHLO, HELO or LHLO"),
    Column(
        "capabilities",
        Kind.STRING_LIST,
        "EHLO reply lines the server offered, each a keyword with its "
        "parameters (`SIZE 52428800`, `AUTH PLAIN LOGIN`)",
    ),
    Column(
        "tls",
        _S,
        "none, starttls or implicit; none where STARTTLS was agreed but the "
        "connection ended without a TLS byte, or went on in clear text. A "
        "connection caught after its start whose first bytes, both sides', are "
        "TLS records past the hellos (ChangeCipherSpec, alert or application "
        "data, version 3.x, a possible length) was caught inside TLS: implicit on an "
        "implicit-TLS port, starttls elsewhere (where SMTP is due, TLS follows "
        "STARTTLS); its handshake was not seen, so `tls_handshake` is none, "
        "`tls_start` is missing and the `tls` table has no row for it",
    ),
    Column(
        "tls_start",
        _T,
        "when TLS was agreed: the 220 to STARTTLS, or the first byte of the "
        "ClientHello on an implicit-TLS port; missing when tls is none or the "
        "connection was caught inside TLS (the tls table's start is the first "
        "TLS byte)",
    ),
    Column("tls_client_bytes", _I, "encrypted bytes from the client"),
    Column("tls_server_bytes", _I, "encrypted bytes from the server"),
    Column(
        "auth_mechanism",
        _S,
        "SASL mechanism of the session's AUTH: the accepted one, else the last"
        " refused for its credentials, else the last sent",
    ),
    Column(
        "auth_user",
        _S,
        "user name that same AUTH revealed (PLAIN, LOGIN), never another's",
    ),
    Column(
        "auth_result",
        _S,
        "outcome of that same AUTH: success, failure (credentials invalid: 535),"
        " refused (for another reason: 504, 534, 538, 454, 501 ...), cancelled"
        " (the client sent *) or no_reply",
    ),
    Column(
        "auth_attempts",
        _I,
        "AUTH commands sent (or answered, where the capture began inside one)",
    ),
    Column(
        "auth_failures",
        _I,
        "AUTH commands refused for their credentials (535, or an x.7.8 code):"
        " failed logins",
    ),
    Column("commands", _I, "commands sent by the client"),
    Column("transactions", _I, "MAIL commands sent by the client"),
    Column("messages_accepted", _I, "message contents the server accepted"),
    Column("client_bytes", _I, "application bytes from the client, in order"),
    Column("server_bytes", _I, "application bytes from the server, in order"),
    Column("handshake_rtt_s", _F, "SYN to ACK of the TCP handshake"),
    Column("greeting_delay_s", _F, "handshake to server greeting"),
    Column("duration_s", _F, "first to last packet"),
    Column(
        "close", _S, "fin, rst, idle, end_of_capture, reused, interrupted or evicted"
    ),
    Column("gaps", _I, "holes in either byte stream"),
    Column("gap_bytes", _I, "bytes missing in those holes"),
    Column("anomalies", _I, "rows this session has in the anomalies table"),
    Column("handshake_seen", _B, "whether the capture shows the SYN"),
    Column("client_packets", _I, "packets from the client"),
    Column("server_packets", _I, "packets from the server"),
    Column("tls_version", _S, "TLS version the server chose"),
    Column("tls_cipher", _S, "cipher suite the server chose"),
    Column("tls_sni", _S, "server name the client asked for (SNI)"),
    Column("tls_ja3", _S, "JA3 fingerprint of the ClientHello (MD5)"),
    Column("tls_ja4", _S, "JA4 fingerprint of the ClientHello"),
    Column(
        "tls_handshake",
        _S,
        "none, completed, failed or incomplete (none: no TLS, or a connection "
        "caught inside TLS, whose handshake the capture does not hold)",
    ),
    Column(
        "tls_alert",
        _S,
        "first TLS alert: side, level and description (`encrypted` when it "
        "cannot be read, `malformed` when sent in the clear but not two bytes)",
    ),
    Column("cert_subject", _S, "subject of the server certificate (TLS 1.2-)"),
    Column("cert_issuer", _S, "issuer of the server certificate"),
    Column("cert_sha256", _S, "SHA-256 of the server certificate (DER)"),
    Column(
        "cert_self_signed",
        _NB,
        "whether the server certificate signed itself" + _UNCHECKED,
    ),
    Column("starttls_offered", _B, "a clear-text EHLO reply listed STARTTLS"),
    Column("starttls_attempted", _B, "the client sent STARTTLS"),
    Column("starttls_reply", _NI, "reply code to STARTTLS"),
    Column("auth_cleartext", _B, "AUTH was sent before any TLS"),
    Column("tls_decrypted", _B, "SMTP inside TLS was read with a key log"),
    Column("synack_seen", _B, "whether the capture shows the server's SYN-ACK"),
    Column(
        "handshake_completed",
        _B,
        "whether the capture shows the TCP handshake completed (bytes in a SYN do"
        " not); caught after its start: whether the server answered the client"
        " (a byte or a plain ACK, not a RST alone), or the client's"
        " acknowledgments moved, or it sent a second segment in order",
    ),
    Column(
        "community_id",
        _S,
        "Community ID v1 of the connection, as Zeek, Suricata and Arkime tag it",
    ),
    Column(
        "auth_successes",
        _I,
        "AUTH commands accepted, a later AUTH refused or not",
    ),
    Column(
        "auth_other_refusals",
        _I,
        "AUTH commands refused for another reason than their credentials"
        " (504 mechanism unknown, 534, 538, 432, 454, 500, 501, 503 ...),"
        " those the client cancelled not counted",
    ),
)

TRANSACTIONS: tuple[Column, ...] = (
    Column("session_id", _S, "the session this transaction belongs to"),
    Column("index", _I, "0-based position among the session's MAIL commands"),
    Column("start", _T, "when MAIL was sent"),
    Column("mail_from", _S, "reverse-path without angle brackets"),
    Column("mail_from_code", _NI, "reply code to MAIL"),
    Column("mail_params", _S, "ESMTP parameters after the reverse-path"),
    Column(
        "rcpt_to",
        Kind.STRING_LIST,
        "every RCPT address, refused ones too (a session's first 50,000)",
    ),
    Column("rcpt_codes", Kind.INT_LIST, "reply code to each RCPT, same order"),
    Column("rcpts_accepted", _I, "RCPT commands the server accepted"),
    Column(
        "data_method",
        _S,
        "DATA or BDAT: the command data_code answers, whose content it "
        "carried (none where the server refused the command itself)",
    ),
    Column(
        "data_code",
        _NI,
        "final reply code to the message content; in LMTP, the first "
        "recipient's refusal, else the last recipient's reply",
    ),
    Column("message_bytes", _NI, "message size after dot-unstuffing"),
    Column(
        "data_duration_s",
        _F,
        "DATA: from the 354 to the final reply, the client's sending of the "
        "content included; BDAT: from the first BDAT to the final reply",
    ),
    Column("queue_id", _S, "queue identifier found in the final reply"),
    Column("date", _S, "Date: header"),
    Column("from", _S, "From: header", field="from_"),
    Column("to", _S, "To: header"),
    Column("cc", _S, "Cc: header"),
    Column("subject", _S, "Subject: header"),
    Column("subject_decoded", _S, "Subject: header, RFC 2047 encoded words decoded"),
    Column("message_id", _S, "Message-ID: header"),
    Column(
        "status",
        _S,
        "accepted, rejected, reset or incomplete (nothing on the wire ended "
        "it); in LMTP accepted when delivered to any recipient",
    ),
    Column(
        "end",
        _T,
        "when status got its value (the reply or RSET that settled it); "
        "missing exactly when status is incomplete",
    ),
    Column("tls", _B, "whether the transaction ran inside TLS"),
    Column(
        "message_complete",
        _NB,
        "missing when no content was sent (no 354 to DATA, no BDAT chunk); "
        "false when part of it was never "
        "seen or it never reached its end (a TCP gap, the end of the "
        "connection, a BDAT message abandoned or taken over by DATA)",
    ),
    Column("data_enhanced", _S, "RFC 3463 enhanced status code of the final reply"),
    Column(
        "data_reply", _S, "text of the final reply, lines of a multi-line one joined"
    ),
    Column("reply_to", _S, "Reply-To: header"),
    Column("in_reply_to", _S, "In-Reply-To: header"),
    Column("user_agent", _S, "User-Agent:, X-Mailer: or X-User-Agent: header"),
    Column("x_originating_ip", _S, "first address in the X-Originating-IP: header"),
    Column("first_received", _S, "the last Received: header: the first hop"),
    Column("second_received", _S, "the Received: header above it"),
    Column("rcpts_total", _I, "RCPT commands, those past rcpt_to's cap too"),
    Column(
        "rcpt_data_codes",
        Kind.INT_LIST,
        "LMTP only (RFC 2033 4.2): reply code to the message for each RCPT, "
        "same order as rcpt_to, missing for a refused one; empty in SMTP, "
        "where data_code answers for all",
    ),
)

COMMANDS: tuple[Column, ...] = (
    Column("session_id", _S, "the session this command belongs to"),
    Column("ts", _T, "when the command was sent"),
    Column("verb", _S, "upper-cased when known, else as sent"),
    Column("argument", _S, "rest of the line; AUTH payloads read [redacted]"),
    Column("reply_code", _NI, "reply code; missing when no reply was seen"),
    Column("reply_enhanced", _S, "RFC 3463 enhanced status code"),
    Column("reply_text", _S, "reply text, lines of a multi-line reply joined"),
    Column("reply_ts", _T, "when the reply was complete"),
    Column("latency_s", _F, "command to reply"),
    Column("pipelined", _B, "sent before the previous command's reply"),
    Column("tls", _B, "seen inside decrypted TLS"),
)

ANOMALIES: tuple[Column, ...] = (
    Column("session_id", _S, "the session the anomaly was found in"),
    Column("ts", _T, "when it was seen"),
    Column("kind", _S, "short machine-readable name"),
    Column("detail", _S, "human-readable explanation"),
)

ALERTS: tuple[Column, ...] = (
    Column("alert_id", _S, "stable identifier of the alert"),
    Column("kind", _S, "which detector raised it (see Detectors)"),
    Column("severity", _S, "info, low, medium, high or critical"),
    Column("client_ip", _S, "the client it is about; missing when many"),
    Column("server_ip", _S, "the server involved; missing when many"),
    Column("first_seen", _T, "first piece of evidence"),
    Column("last_seen", _T, "last piece of evidence"),
    Column(
        "count",
        _I,
        "the number that crossed the threshold (distinct values past 10,000 in "
        "one incident are estimated, within a few per cent, and the summary says "
        '"about")',
    ),
    Column("threshold", _I, "the rule's threshold or per-item limit"),
    Column("window_s", _F, "the rule's time window"),
    Column("total", _NI, "denominator of a ratio; items over a per-item limit"),
    Column("sessions", _I, "sessions holding the evidence"),
    Column(
        "session_ids",
        Kind.STRING_LIST,
        "those sessions' ids, of the first 1,000 hits (`sessions` counts all)",
    ),
    Column("examples", Kind.STRING_LIST, "a few commands and replies, escaped"),
    Column("summary", _S, "one sentence saying what happened"),
)

TLS: tuple[Column, ...] = (
    Column("session_id", _S, "the session the handshake belongs to"),
    Column("start", _T, "first TLS byte (or the first the capture lost)"),
    Column("mode", _S, "starttls or implicit"),
    Column("outcome", _S, "completed, failed or incomplete"),
    Column("client_version", _S, "legacy_version of the ClientHello"),
    Column("client_versions", _SL, "supported_versions the client offered"),
    Column("cipher_suites", Kind.INT_LIST, "cipher suites offered, wire order"),
    Column("extensions", Kind.INT_LIST, "ClientHello extension types, wire order"),
    Column("sni", _S, "server name (SNI)"),
    Column("alpn", _SL, "ALPN protocols offered"),
    Column("ja3", _S, "JA3 fingerprint (MD5 of ja3_string)"),
    Column("ja3_string", _S, "JA3 input string"),
    Column("ja4", _S, "JA4 fingerprint"),
    Column("ja4_r", _S, "JA4 before hashing (sorted)"),
    Column("version", _S, "TLS version the server chose"),
    Column("cipher", _S, "cipher suite the server chose"),
    Column("cipher_id", _NI, "its IANA number"),
    Column("hello_retry", _B, "the server sent a HelloRetryRequest"),
    Column(
        "alert",
        _S,
        "first alert: side, level and description (`encrypted` when it cannot "
        "be read, `malformed` when sent in the clear but not two bytes)",
    ),
    Column("cert_count", _I, "certificates the server sent in the clear"),
    Column("cert_subject", _S, "subject of the server certificate"),
    Column("cert_issuer", _S, "issuer of the server certificate"),
    Column("cert_sans", _SL, "its subject alternative names"),
    Column("cert_not_before", _T, "start of its validity"),
    Column(
        "cert_not_after",
        _T,
        "end of its validity; missing past 2262 (9999-12-31: no expiration)",
    ),
    Column("cert_sha256", _S, "SHA-256 of its DER encoding"),
    Column("cert_self_signed", _NB, "whether it signed itself" + _UNCHECKED),
    Column(
        "chain_sha256",
        _SL,
        "SHA-256 of every certificate sent, in order (the first 100; past them "
        "the anomaly `certificate_list_capped`)",
    ),
    Column("end", _T, "when the outcome was known"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "sessions": SESSIONS,
    "transactions": TRANSACTIONS,
    "commands": COMMANDS,
    "anomalies": ANOMALIES,
    "alerts": ALERTS,
    "tls": TLS,
}


def dtypes(table: str) -> dict[str, str]:
    """Column name to pandas dtype for one of ``TABLES``."""
    return {column.name: column.dtype for column in TABLES[table]}


def markdown() -> str:
    """The schema as Markdown tables, for the README and ``--help`` pages."""
    lines: list[str] = []
    for table, columns in TABLES.items():
        lines += [f"### {table}", "", "| column | dtype | meaning |", "|---|---|---|"]
        lines += [f"| `{c.name}` | `{c.dtype}` | {c.doc} |" for c in columns]
        lines.append("")
    return "\n".join(lines)
