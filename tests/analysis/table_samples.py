"""Hand-made ``SessionResult`` objects shared by the table, export, view and
CLI tests, so those tests do not depend on the parser or the pipeline.

``sample_results`` returns them in close order, which is deliberately not
start order. Strings carry the hostile content the views must neutralise.
"""

from __future__ import annotations

from typing import Any

from analysis.records import (
    AnomalyRecord,
    CommandRecord,
    SessionRecord,
    SessionResult,
    TlsRecord,
    TransactionRecord,
)

T0 = 1_704_164_645_123_456_789  # 2024-01-02T03:04:05.123456789Z
SECOND = 1_000_000_000

ESC_HELO = "evil\x1b[31mred"
MARKUP_HELO = "[bold]shout[/bold]"
FORMULA_SUBJECT = '=HYPERLINK("http://x")'
BIDI_FROM = "alice\u202egpj.exe"


def _command(
    sid: str, ts: int, verb: str, argument: str, code: int | None = None, **more: Any
) -> CommandRecord:
    return CommandRecord(sid, ts, verb, argument, reply_code=code, **more)


def plain_session() -> SessionResult:
    """A clean STARTTLS session with one accepted message to two recipients."""
    sid = "s-b"
    session = SessionRecord(
        session_id=sid,
        start=T0,
        end=T0 + 3 * SECOND,
        client_ip="192.0.2.10",
        client_port=40000,
        server_ip="198.51.100.1",
        server_port=25,
        greeting_code=220,
        greeting_text="mx.example ESMTP",
        helo="client.example",
        helo_verb="EHLO",
        capabilities=["PIPELINING", "STARTTLS", "SIZE 1000"],
        tls="starttls",
        tls_start=T0 + SECOND,
        auth_mechanism="PLAIN",
        auth_user="alice",
        auth_result="success",
        auth_attempts=1,
        auth_successes=1,
        commands=4,
        transactions=1,
        messages_accepted=1,
        client_bytes=1200,
        server_bytes=300,
        handshake_rtt_s=0.001,
        greeting_delay_s=0.05,
        duration_s=3.0,
        close="fin",
        handshake_seen=True,
        client_packets=12,
        server_packets=10,
    )
    transaction = TransactionRecord(
        session_id=sid,
        index=0,
        start=T0 + 2 * SECOND,
        mail_from="alice@example.org",
        mail_from_code=250,
        mail_params="SIZE=100",
        rcpt_to=["bob@example.net", "carol@example.net"],
        rcpt_codes=[250, 550],
        rcpts_accepted=1,
        data_method="DATA",
        data_code=250,
        message_bytes=100,
        data_duration_s=0.25,
        queue_id="ABC123",
        from_="Alice <alice@example.org>",
        to="bob@example.net",
        subject="hello",
        status="accepted",
        end=T0 + 2 * SECOND + 500,
        tls=True,
        message_complete=True,
    )
    after_mail = T0 + 2 * SECOND
    commands = [
        _command(
            sid,
            T0 + 100,
            "EHLO",
            "client.example",
            250,
            reply_text="hi",
            reply_ts=T0 + 200,
            latency_s=1e-7,
        ),
        _command(
            sid,
            after_mail,
            "MAIL",
            "FROM:<alice@example.org>",
            250,
            reply_enhanced="2.1.0",
            reply_text="ok",
            tls=True,
        ),
        # Two commands with the same timestamp keep their order.
        _command(
            sid,
            after_mail + 20,
            "RCPT",
            "TO:<bob@example.net>",
            250,
            tls=True,
            pipelined=True,
        ),
        _command(
            sid,
            after_mail + 20,
            "RCPT",
            "TO:<carol@example.net>",
            550,
            reply_enhanced="5.1.1",
            reply_text="no such user",
            tls=True,
            pipelined=True,
        ),
    ]
    handshake = TlsRecord(
        session_id=sid,
        start=T0 + SECOND,
        mode="starttls",
        outcome="completed",
        client_version="TLSv1.2",
        client_versions=["TLSv1.3", "TLSv1.2"],
        cipher_suites=[4865, 49199],
        extensions=[0, 43, 13],
        sni="mx.example",
        alpn=["smtp"],
        ja3="0" * 32,
        version="TLSv1.2",
        cipher="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        cipher_id=49199,
        cert_count=1,
        cert_subject="CN=mx.example",
        cert_issuer="CN=mx.example",
        cert_sans=["mx.example"],
        cert_not_before=T0 - 86400 * SECOND,
        cert_not_after=T0 + 86400 * SECOND,
        cert_sha256="ab" * 32,
        cert_self_signed=True,
        chain_sha256=["ab" * 32],
        end=T0 + SECOND + 5_000_000,
    )
    return SessionResult(session, [transaction], commands, [], [handshake])


def hostile_session() -> SessionResult:
    """An earlier session whose peer sends escape sequences and markup."""
    sid = "s-a"
    session = SessionRecord(
        session_id=sid,
        start=T0 - 10 * SECOND,
        end=T0 - 5 * SECOND,
        client_ip="203.0.113.7",
        client_port=50000,
        server_ip="198.51.100.1",
        server_port=587,
        greeting_code=554,
        greeting_text="go away " + MARKUP_HELO,
        helo=ESC_HELO,
        helo_verb="HELO",
        auth_mechanism="LOGIN",
        auth_result="failure",
        auth_attempts=3,
        auth_failures=3,
        commands=2,
        transactions=2,
        anomalies=2,
        duration_s=5.0,
        close="rst",
        gaps=1,
        gap_bytes=40,
    )
    transactions = [
        # Given out of order on purpose: the table sorts by index.
        TransactionRecord(
            sid,
            1,
            T0 - 6 * SECOND,
            mail_from=BIDI_FROM,
            rcpt_to=["x@y"],
            rcpt_codes=[None],
        ),
        TransactionRecord(
            sid,
            0,
            T0 - 7 * SECOND,
            mail_from="",
            mail_from_code=451,
            subject=FORMULA_SUBJECT,
            status="rejected",
        ),
    ]
    commands = [
        _command(sid, T0 - 9 * SECOND, "HELO", ESC_HELO),
        _command(sid, T0 - 8 * SECOND, "AUTH", "LOGIN [redacted]", 535),
    ]
    anomalies = [
        AnomalyRecord(sid, T0 - 6 * SECOND, "gap", "40 bytes missing\r\nfrom client"),
        AnomalyRecord(sid, T0 - 8 * SECOND, "markup", MARKUP_HELO),
    ]
    return SessionResult(session, transactions, commands, anomalies)


def twin_session() -> SessionResult:
    """Same start as ``plain_session``; a smaller id sorts it first."""
    session = SessionRecord(
        session_id="s-0",
        start=T0,
        end=T0 + SECOND,
        client_ip="192.0.2.10",
        client_port=40001,
        server_ip="198.51.100.1",
        server_port=2525,
        close="end_of_capture",
    )
    anomaly = AnomalyRecord("s-0", T0 + 5, "no_greeting", "server never spoke")
    return SessionResult(session, [], [], [anomaly])


def sample_results() -> list[SessionResult]:
    return [plain_session(), hostile_session(), twin_session()]
