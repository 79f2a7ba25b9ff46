"""TLS facts of real captures: the project's own and the public corpus.

The project's captures are in ``pcaps/`` (see its README; the TLS 1.2,
injection, stripping, SSL 2.0 hello and STARTTLS-inside-TLS ones are made
by ``pcaps/scripts/tls.py``, which records what it did in
``tls-captures.json``). JA3 values are cross-checked with tshark's own
``tls.handshake.ja3`` where tshark is installed; JA4 is checked against
FoxIO's example in test_tls.py, since tshark 4.0 has no JA4.

Decryption with a key log needs tshark. Those tests skip without it, except
under ``CI=true``, where tshark is installed by ``.ci/run`` and they must run.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import SmtpTables, read_captures
from analysis.cli import main
from analysis.tls import decrypt
from tests.analysis.rewrite import with_ends
from tests.corpus import CORPUS, in_ci, require_corpus

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
MADE = json.loads((PCAPS / "tls-captures.json").read_text())
CERT = MADE["starttls-tls12"]["cert_sha256"]
# Python's ssl (OpenSSL 3.0) without SNI: smtplib connects to 127.0.0.1.
JA4_TLS13 = "t13i181000_85036bcba153_d41ae481755e"
JA3_TLS13 = "8a9d5d0f12f7d43ee3af1c51d2998d99"
JA4_TLS12 = "t12i150600_d68b136fe8d9_e7e480e5a997"
JA3_TLS12 = "e9d8351d9365fe7b2c666bf31aad662f"

TLS_COLUMNS = (
    "tls",
    "tls_version",
    "tls_cipher",
    "tls_sni",
    "tls_ja3",
    "tls_ja4",
    "tls_handshake",
    "tls_alert",
    "cert_subject",
    "cert_issuer",
    "cert_sha256",
    "cert_self_signed",
    "starttls_offered",
    "starttls_attempted",
    "starttls_reply",
    "auth_cleartext",
    "tls_decrypted",
)


def needs_tshark() -> None:
    if decrypt.tshark_available():
        return
    if in_ci():
        pytest.fail("tshark is missing but CI is set: .ci/run installs it")
    pytest.skip("tshark is not installed")


@cache
def tables(name: str, keylog: bool = False) -> SmtpTables:
    key = PCAPS / name.replace(".pcap", ".keylog") if keylog else None
    return read_captures(PCAPS / name, tls_keylog=key)


def plain(value: Any) -> Any:
    if value is pd.NA or value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def session_tls(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{c: plain(row[c]) for c in TLS_COLUMNS} for _, row in frame.iterrows()]


NO_TLS: dict[str, Any] = dict.fromkeys(TLS_COLUMNS)
NO_TLS.update(
    tls="none",
    tls_handshake="none",
    starttls_offered=False,
    starttls_attempted=False,
    auth_cleartext=False,
    tls_decrypted=False,
)
TLS13 = {
    **NO_TLS,
    "tls": "starttls",
    "tls_version": "TLSv1.3",
    "tls_cipher": "TLS_AES_256_GCM_SHA384",
    "tls_ja3": JA3_TLS13,
    "tls_ja4": JA4_TLS13,
    "tls_handshake": "completed",
    "starttls_offered": True,
    "starttls_attempted": True,
    "starttls_reply": 220,
}
SELF = "CN=mail.smtpscope.test"
TLS12 = {
    **TLS13,
    "tls_version": "TLSv1.2",
    "tls_cipher": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "tls_ja3": JA3_TLS12,
    "tls_ja4": JA4_TLS12,
    "cert_subject": SELF,
    "cert_issuer": SELF,
    "cert_sha256": CERT,
    "cert_self_signed": True,
}
EXPECTED_SESSIONS: dict[str, list[dict[str, Any]]] = {
    "starttls.pcap": [TLS13],
    "implicit-tls-465.pcap": [
        {
            **TLS13,
            "tls": "implicit",
            "starttls_offered": False,
            "starttls_attempted": False,
            "starttls_reply": None,
        }
    ],
    "starttls-454.pcap": [
        {**NO_TLS, "starttls_offered": True, "starttls_attempted": True}
        | {"starttls_reply": 454}
    ],
    "starttls-tls12.pcap": [TLS12],
    "starttls-injection.pcap": [
        {
            **TLS12,
            "tls_sni": "mail.smtpscope.test",  # the raw client sends SNI
            "tls_ja3": "70e47b149c152d891341c87d58c2b327",
            "tls_ja4": "t12d150700_d68b136fe8d9_e7e480e5a997",
        }
    ],
    "stripping.pcap": [TLS13, NO_TLS, NO_TLS],
    "starttls-inside-tls.pcap": [
        {
            **TLS13,
            "tls_sni": "mail.smtpscope.test",  # the raw client sends SNI
            "tls_ja3": "93c7d42c0df602fb91589311534831f5",
            "tls_ja4": "t13d181100_85036bcba153_d41ae481755e",
        }
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SESSIONS))
def test_session_tls_columns(name: str) -> None:
    frame = tables(name).sessions
    assert session_tls(frame) == EXPECTED_SESSIONS[name]
    assert tables(name).stats.errors == []


def test_tls12_table_row_shows_the_certificate() -> None:
    row = tables("starttls-tls12.pcap").tls.iloc[0]
    assert row["mode"] == "starttls"
    assert row["outcome"] == "completed"
    assert row["client_version"] == "TLSv1.2"
    assert row["version"] == "TLSv1.2"
    assert row["cipher_id"] == 0xC02C
    assert row["cert_count"] == 1
    assert list(row["cert_sans"]) == ["mail.smtpscope.test"]
    assert list(row["chain_sha256"]) == [CERT]
    assert row["cert_not_after"] - row["cert_not_before"] == pd.Timedelta(days=3650)
    assert row["ja3_string"].startswith("771,49196-49200-49195-49199-")


def test_tls13_hides_the_certificate() -> None:
    row = tables("starttls.pcap").tls.iloc[0]
    assert (row["version"], row["cert_count"]) == ("TLSv1.3", 0)
    assert pd.isna(row["cert_sha256"])
    assert list(row["client_versions"]) == ["TLSv1.3", "TLSv1.2"]


def test_injection_is_reported_with_count_and_bytes() -> None:
    anomalies = tables("starttls-injection.pcap").anomalies
    assert list(anomalies["kind"]) == ["starttls_client_injection"]
    assert list(anomalies["detail"]) == ["6 bytes before the 220: NOOP\\r\\n"]


def test_stripping_is_flagged_as_possible_downgrade() -> None:
    t = tables("stripping.pcap")
    anomalies = t.anomalies
    assert list(anomalies["kind"]) == ["possible_downgrade"] * 2
    assert "'XXXXXXXA'" in anomalies["detail"].iloc[0]
    assert "1 other session(s) to 127.0.0.1:25" in anomalies["detail"].iloc[1]
    assert list(t.sessions["anomalies"]) == [0, 1, 1]
    assert list(anomalies["session_id"]) == list(t.sessions["session_id"][1:])


def test_an_sslv2_form_hello_after_starttls_is_the_clients_hello() -> None:
    # A real server's answer to it (OpenSSL 3.0 under aiosmtpd): nothing,
    # then FIN. Before, the hello was `not_tls` and the handshake failed.
    t = tables("sslv2-hello.pcap")
    (row,) = t.tls.to_dict("records")
    assert {k: plain(row[k]) for k in ("mode", "outcome", "client_version")} == {
        "mode": "starttls",
        "outcome": "incomplete",
        "client_version": "TLSv1.2",
    }
    assert list(row["cipher_suites"]) == [0xC02B, 0xC02F, 0x009C, 0x002F, 0x010080]
    assert list(row["extensions"]) == []
    assert [plain(row[k]) for k in ("ja3", "ja4", "version", "sni")] == [None] * 4
    assert list(zip(t.anomalies["kind"], t.anomalies["detail"], strict=True)) == [
        ("sslv2_hello", "client hello in SSL 2.0 form, offering TLSv1.2")
    ]
    (session,) = session_tls(t.sessions)
    assert (session["tls"], session["tls_handshake"]) == ("starttls", "incomplete")
    assert t.alerts.empty


def test_auth_in_clear_text_is_flagged() -> None:
    sessions = read_captures(PCAPS / "auth.pcap").sessions
    assert list(sessions["auth_cleartext"]) == [True] * 4


@pytest.mark.parametrize(
    "name",
    [
        "starttls.pcap",
        "implicit-tls-465.pcap",
        "starttls-tls12.pcap",
        "stripping.pcap",
        "starttls-inside-tls.pcap",
    ],
)
def test_ja3_agrees_with_tshark(name: str) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    out = subprocess.run(
        [
            *("tshark", "-r", str(PCAPS / name)),
            *("-Y", "tls.handshake.type == 1", "-T", "fields"),
            *("-e", "tls.handshake.ja3"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = [v for v in tables(name).tls["ja3"]]
    assert ours == out


# Decryption with a key log ---------------------------------------------------


DECRYPTED_VERBS = {
    "starttls.pcap": ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"],
    "implicit-tls-465.pcap": ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"],
    "starttls-tls12.pcap": ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"],
    "starttls-injection.pcap": ["EHLO", "QUIT"],
    "starttls-inside-tls.pcap": ["EHLO", "STARTTLS", "QUIT"],
}


@pytest.mark.parametrize("name", sorted(DECRYPTED_VERBS))
def test_decrypted_smtp_goes_through_the_parser(name: str) -> None:
    needs_tshark()
    t = tables(name, keylog=True)
    inside = t.commands[t.commands["tls"]]
    assert list(inside["verb"]) == DECRYPTED_VERBS[name]
    assert all(inside["reply_code"].notna())
    assert bool(t.sessions["tls_decrypted"].iloc[0])
    assert list(t.transactions["tls"]) == [True] * len(t.transactions)
    # The handshake facts do not change with decryption.
    got = session_tls(t.sessions)[0]
    assert got == {**EXPECTED_SESSIONS[name][0], "tls_decrypted": True}


INSIDE_465 = [
    ("EHLO", 250, True),
    ("MAIL", 250, True),
    ("RCPT", 250, True),
    ("DATA", 354, True),
    ("QUIT", 221, True),
]
INSIDE_TLS12 = [
    ("EHLO", 250, False),
    ("STARTTLS", 220, False),
    ("EHLO", 250, True),
    ("AUTH", 235, True),
    *INSIDE_465[1:],
]


@pytest.mark.parametrize(
    ("name", "client", "commands"),
    [
        # A client whose source port is an SMTP port, as the reviewer's was.
        ("implicit-tls-465.pcap", ("127.0.0.1", 587), INSIDE_465),
        # Two MTAs, both ends on port 25.
        ("starttls-tls12.pcap", ("127.0.0.2", 25), INSIDE_TLS12),
    ],
)
def test_decrypted_replies_follow_the_sessions_direction_on_smtp_ports(
    name: str,
    client: tuple[str, int],
    commands: list[tuple[str, int, bool]],
    tmp_path: Path,
) -> None:
    # Found in review: the direction of decrypted data was guessed from the
    # ports, so a client on an SMTP port had the server's replies taken for
    # its own (no greeting, no reply to any command inside TLS).
    needs_tshark()
    (session,) = tables(name).sessions.to_dict("records")
    moved = with_ends(
        str(PCAPS / name),
        tmp_path / name,
        {(session["client_ip"], session["client_port"]): client},
    )
    t = read_captures(moved, tls_keylog=PCAPS / name.replace(".pcap", ".keylog"))
    columns = ("client_ip", "client_port", "server_port", "greeting_code")
    assert [
        {c: plain(row[c]) for c in (*columns, "tls_decrypted")}
        for _, row in t.sessions.iterrows()
    ] == [
        {
            "client_ip": client[0],
            "client_port": client[1],
            "server_port": session["server_port"],
            "greeting_code": 220,
            "tls_decrypted": True,
        }
    ]
    rows = zip(*(t.commands[c] for c in ("verb", "reply_code", "tls")), strict=True)
    assert [(verb, plain(code), tls) for verb, code, tls in rows] == commands
    assert t.transactions["status"].tolist() == ["accepted"]
    assert t.anomalies.empty
    assert t.stats.errors == []


def test_a_220_to_starttls_inside_tls_is_reported_and_changes_no_posture() -> None:
    # A server answered 220 to a second STARTTLS, inside the first TLS
    # session (RFC 3207 4.2 has it refuse); the client sent QUIT there in
    # the clear of that session, which the server answered.
    needs_tshark()
    t = tables("starttls-inside-tls.pcap", keylog=True)
    rows = t.commands
    columns = (rows[c] for c in ("verb", "reply_code", "reply_text", "tls"))
    assert [
        (verb, plain(code), text, tls)
        for verb, code, text, tls in zip(*columns, strict=True)
    ] == [
        ("EHLO", 250, "mail.smtpscope.test\nSIZE 33554432\n8BITMIME\nSMTPUTF8"
         "\nSTARTTLS\nHELP", False),
        ("STARTTLS", 220, "Ready to start TLS", False),
        ("EHLO", 250, "mail.smtpscope.test\nSIZE 33554432\n8BITMIME\nSMTPUTF8"
         "\nAUTH LOGIN PLAIN\nHELP", True),
        ("STARTTLS", 220, "2.0.0 Ready to start TLS", True),
        ("QUIT", 221, "Bye", True),
    ]  # fmt: skip
    inner_220, quit_sent = rows["reply_ts"].iloc[3], rows["ts"].iloc[4]
    (session_id,) = t.sessions["session_id"]
    assert list(zip(*(t.anomalies[c] for c in t.anomalies), strict=True)) == [
        (session_id, inner_220, "starttls_inside_tls", "220 to STARTTLS in TLS"),
        (
            session_id,
            quit_sent,
            "plaintext_after_starttls",
            "client went on in clear text after the 220: QUIT\\r\\n",
        ),
    ]
    # The session's TLS is still the first one, begun at the first 220:
    # one handshake row, and the STARTTLS columns speak of clear text only.
    session = t.sessions.iloc[0]
    assert session_tls(t.sessions) == [
        {**EXPECTED_SESSIONS["starttls-inside-tls.pcap"][0], "tls_decrypted": True}
    ]
    assert session["tls_start"] == rows["reply_ts"].iloc[1]
    assert (session["close"], session["commands"], session["anomalies"]) == (
        "rst",
        5,
        2,
    )
    assert list(zip(t.tls["mode"], t.tls["outcome"], strict=True)) == [
        ("starttls", "completed")
    ]
    assert t.alerts.empty


def test_decrypted_auth_keeps_no_password() -> None:
    needs_tshark()
    t = tables("starttls-tls12.pcap", keylog=True)
    assert t.sessions["auth_user"].iloc[0] == "alice"
    assert t.sessions["auth_result"].iloc[0] == "success"
    assert t.transactions["status"].tolist() == ["accepted"]
    assert t.transactions["subject"].tolist() == ["Sent over TLS 1.2"]
    auth = t.commands[t.commands["verb"] == "AUTH"]
    assert auth["argument"].tolist() == ["PLAIN [redacted]"]
    text = "".join(frame.to_csv() for frame in t.frames().values())
    assert "throwaway" not in text  # the test password, in any form


def test_sessions_without_keys_stay_as_they_were() -> None:
    needs_tshark()
    # starttls.keylog holds only its own capture's secrets.
    t = read_captures(PCAPS / "stripping.pcap", tls_keylog=PCAPS / "starttls.keylog")
    assert not t.sessions["tls_decrypted"].any()
    assert not t.commands["tls"].any()
    keyed = read_captures(
        PCAPS / "stripping.pcap", tls_keylog=PCAPS / "stripping.keylog"
    )
    assert keyed.sessions["tls_decrypted"].tolist() == [True, False, False]


def test_a_keylog_that_decrypts_nothing_is_warned_of(
    capsys: pytest.CaptureFixture[str],
) -> None:
    needs_tshark()
    keylog = str(PCAPS / "implicit-tls-465.keylog")
    captures = [str(PCAPS / name) for name in ("stripping.pcap", "starttls.pcap")]
    assert main(["read", *captures, "--tls-keylog", keylog, "-q"]) == 0
    assert capsys.readouterr().err == (
        f"smtpscope: warning: {keylog} holds no secrets for any of the 2 TLS "
        "sessions, so none was decrypted (a key log written by another run of "
        "the client or server?)\n"
    )


def test_a_file_that_is_no_keylog_is_named_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Found in a trial: a script given by mistake got the same words as a
    # key log of another run.
    needs_tshark()
    other = tmp_path / "server.py"
    other.write_text("import smtplib\nprint('CLIENT_RANDOM is not at the start')\n")
    captures = [str(PCAPS / name) for name in ("stripping.pcap", "starttls.pcap")]
    assert main(["read", *captures, "--tls-keylog", str(other), "-q"]) == 0
    assert capsys.readouterr().err == (
        f"smtpscope: warning: {other} is not a key log (no CLIENT_RANDOM or "
        "*_TRAFFIC_SECRET lines in the NSS format): it holds no secrets for any "
        "of the 2 TLS sessions, so none was decrypted\n"
    )


def test_sessions_a_keylog_has_no_secrets_for_are_counted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    needs_tshark()
    keylog = str(PCAPS / "stripping.keylog")
    captures = [str(PCAPS / name) for name in ("stripping.pcap", "starttls.pcap")]
    assert main(["read", *captures, "--tls-keylog", keylog, "-q"]) == 0
    assert capsys.readouterr().err == (
        f"smtpscope: note: 1 of 2 TLS sessions was not decrypted: {keylog} "
        "holds no secrets for it\n"
    )
    # Every session decrypted, or no TLS at all: nothing to say.
    assert main(["read", captures[0], "--tls-keylog", keylog, "-q"]) == 0
    plain = str(PCAPS / "auth.pcap")
    assert main(["read", plain, "--tls-keylog", keylog, "-q"]) == 0
    assert capsys.readouterr().err == ""


def _cut_after_the_handshake(capture: Path, target: Path) -> str:
    """``capture`` (one TLS session) cut after the packet that completes its
    handshake, the client's Finished: no application data follows it."""
    raw = capture.read_bytes()
    end = 24
    while end < len(raw):
        end += 16 + struct.unpack_from("<I", raw, end + 8)[0]
        target.write_bytes(raw[:end])
        if read_captures(target).sessions["tls_handshake"].tolist() == ["completed"]:
            return str(target)
    raise AssertionError(f"{capture}: its handshake never completes")


def test_a_capture_cut_short_after_the_handshake_does_not_blame_the_keylog(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Found in review: a capture ending after the client's Finished was
    # "holds no secrets ... written by another run?", where the same key log
    # decrypts the whole capture. A session is decrypted once application
    # data is; the key log's client randoms say whose secrets it holds.
    needs_tshark()
    cut = _cut_after_the_handshake(PCAPS / "starttls.pcap", tmp_path / "cut.pcap")
    keylog = str(PCAPS / "starttls.keylog")
    assert main(["read", cut, "--tls-keylog", keylog, "-q"]) == 0
    assert capsys.readouterr().err == (
        f"smtpscope: warning: the TLS session was not decrypted: {keylog} holds "
        "its secrets, but no application data followed its handshake (a capture "
        "cut short?)\n"
    )
    # Beside a session it has no secrets for, and one it decrypts.
    tls12 = str(PCAPS / "starttls-tls12.pcap")
    assert main(["read", cut, tls12, "--tls-keylog", keylog, "-q"]) == 0
    assert capsys.readouterr().err == (
        f"smtpscope: warning: none of the 2 TLS sessions was decrypted: {keylog} "
        "holds no secrets for 1, and for 1 no application data followed its "
        "handshake (a capture cut short?)\n"
    )
    both = tmp_path / "both.keylog"
    both.write_bytes(
        (PCAPS / "starttls.keylog").read_bytes()
        + (PCAPS / "starttls-tls12.keylog").read_bytes()
    )
    assert main(["read", cut, tls12, "--tls-keylog", str(both), "-q"]) == 0
    assert capsys.readouterr().err == (
        f"smtpscope: note: 1 of 2 TLS sessions was not decrypted: {both} holds "
        "its secrets, but no application data followed its handshake (a capture "
        "cut short?)\n"
    )


@pytest.mark.parametrize(
    ("completed", "decrypted", "keyed", "said"),
    [
        (1, 0, 0, "warning: K holds no secrets for the TLS session, so it was not "
         "decrypted (a key log written by another run of the client or server?)"),
        (2, 0, 0, "warning: K holds no secrets for any of the 2 TLS sessions, so "
         "none was decrypted (a key log written by another run of the client or "
         "server?)"),
        (3, 1, 0, "note: 2 of 3 TLS sessions were not decrypted: K holds no "
         "secrets for them"),
        (1, 0, 1, "warning: the TLS session was not decrypted: K holds its "
         "secrets, but no application data followed its handshake (a capture "
         "cut short?)"),
        (2, 0, 2, "warning: none of the 2 TLS sessions was decrypted: K holds "
         "their secrets, but no application data followed their handshakes (a "
         "capture cut short?)"),
        (5, 0, 2, "warning: none of the 5 TLS sessions was decrypted: K holds no "
         "secrets for 3, and for 2 no application data followed their handshakes "
         "(a capture cut short?)"),
        (4, 1, 3, "note: 3 of 4 TLS sessions were not decrypted: K holds their "
         "secrets, but no application data followed their handshakes (a capture "
         "cut short?)"),
        (4, 2, 1, "note: 2 of 4 TLS sessions were not decrypted: K holds no "
         "secrets for 1, and for 1 no application data followed its handshake (a "
         "capture cut short?)"),
    ],
)  # fmt: skip
def test_what_is_said_of_sessions_a_keylog_did_not_decrypt(
    completed: int, decrypted: int, keyed: int, said: str, tmp_path: Path
) -> None:
    # "Another run" only where the key log holds no secrets for any session
    # it did not decrypt: one with some is of this run.
    from analysis.cli import _undecrypted_note
    from analysis.pipeline import RunStats

    keylog = tmp_path / "K"
    keylog.write_bytes((PCAPS / "starttls.keylog").read_bytes())
    stats = RunStats(tls_completed=completed, tls_decrypted=decrypted, tls_keyed=keyed)
    assert _undecrypted_note(stats, str(keylog)) == said.replace("K", str(keylog))


def test_the_client_randoms_of_a_keylog(tmp_path: Path) -> None:
    random = bytes(range(32))
    text = (
        "# TLS secrets log file\n"
        f"CLIENT_RANDOM {random.hex()} {'ab' * 48}\n"
        f"  SERVER_TRAFFIC_SECRET_0 {'11' * 32} {'cd' * 32}\r\n"
        f"RSA {'22' * 8} {'ef' * 48}\n"  # names a premaster secret, no random
        f"EXPORTER_SECRET {'33' * 32} {'01' * 32}\n"  # decrypts nothing
        f"CLIENT_RANDOM {'zz' * 32} {'ab' * 48}\n"  # not hex
        f"CLIENT_RANDOM {'44' * 16} {'ab' * 48}\n"  # too short
        f"CLIENT_RANDOM {'55' * 32}\n"  # no secret
    )
    path = tmp_path / "sslkeys.log"
    assert decrypt.keylog_client_randoms(str(path)) == frozenset()  # missing
    path.write_text(text)
    assert decrypt.keylog_client_randoms(str(path)) == {random, b"\x11" * 32}


def test_keylog_without_tshark_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(decrypt, "tshark_available", lambda: False)
    keylog = str(PCAPS / "starttls.keylog")
    status = main(["read", str(PCAPS / "starttls.pcap"), "--tls-keylog", keylog])
    assert status == 1
    err = capsys.readouterr().err
    assert "needs tshark, which is not installed" in err
    assert "apt-get install tshark" in err


def test_keylog_from_standard_input_is_a_usage_error() -> None:
    assert main(["read", "-", "--tls-keylog", "k"]) == 2


# The public corpus -------------------------------------------------------------

ZEEK = "zeek__zeek/testing__btest__Baseline__scripts.base.protocols.smtp.starttls__"
ZEEK_PCAP = "zeek__zeek/testing__btest__Traces__tls__smtp-starttls.pcap"
SURICATA_PCAP = "OISF__suricata-verify/tests__smtp-startssl__input.pcap"


def zeek_log(name: str) -> list[dict[str, str]]:
    lines = (CORPUS / f"{ZEEK}{name}.log").read_text().splitlines()
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    return [
        dict(zip(fields, line.split("\t"), strict=True))
        for line in lines
        if not line.startswith("#")
    ]


def test_zeek_starttls_matches_ssl_and_x509_logs() -> None:
    require_corpus()
    t = read_captures(CORPUS / ZEEK_PCAP)
    (ssl_row,) = zeek_log("ssl")
    certs = zeek_log("x509")
    (row,) = t.tls.to_dict("records")
    assert row["version"].replace(".", "") == ssl_row["version"]  # TLSv12
    assert row["cipher"] == ssl_row["cipher"]
    assert (row["outcome"] == "completed") == (ssl_row["established"] == "T")
    assert row["sni"] is pd.NA or pd.isna(row["sni"])
    assert ssl_row["server_name"] == "-"
    assert list(row["chain_sha256"]) == ssl_row["cert_chain_fps"].split(",")
    assert list(row["chain_sha256"]) == [c["fingerprint"] for c in certs]
    leaf = certs[0]
    assert row["cert_subject"] == leaf["certificate.subject"]
    assert row["cert_issuer"] == leaf["certificate.issuer"]
    assert ",".join(row["cert_sans"]) == leaf["san.dns"]
    assert row["cert_not_before"].timestamp() == float(
        leaf["certificate.not_valid_before"]
    )
    assert row["cert_not_after"].timestamp() == float(
        leaf["certificate.not_valid_after"]
    )
    assert row["cert_self_signed"] is False or not row["cert_self_signed"]
    session = t.sessions.iloc[0]
    assert (session["tls"], session["starttls_reply"]) == ("starttls", 220)
    assert session["tls_handshake"] == "completed"


def test_suricata_startssl_handshake() -> None:
    require_corpus()
    t = read_captures(CORPUS / SURICATA_PCAP)
    # suricata-verify's test.yaml: one SMTP event, helo desktop.unx.ca.
    assert t.sessions["helo"].tolist() == ["desktop.unx.ca"]
    (row,) = t.tls.to_dict("records")
    # tshark 4.0: tls.handshake.ja3 of this ClientHello.
    assert row["ja3"] == "8708213741ab46424b1fbfcc9517ba07"
    assert (row["version"], row["cipher"], row["outcome"]) == (
        "TLSv1.3",
        "TLS_AES_256_GCM_SHA384",
        "completed",
    )
    assert t.anomalies["kind"].tolist() == []


def test_a_failed_tshark_run_is_tried_once_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tshark has exited with status 255 at random under the test suite.
    calls: list[str] = []

    def flaky(
        path: str, keylog: str, decode_as: dict[str, str] | None = None
    ) -> dict[Any, Any]:
        calls.append(path)
        if len(calls) == 1:
            raise decrypt.DecryptError(f"tshark could not decrypt {path}: crashed")
        return {}

    monkeypatch.setattr(decrypt, "_read_once", flaky)
    assert decrypt._read("a.pcap", "k") == {}
    assert calls == ["a.pcap", "a.pcap"]

    def broken(
        path: str, keylog: str, decode_as: dict[str, str] | None = None
    ) -> dict[Any, Any]:
        calls.append(path)
        raise decrypt.DecryptError(f"tshark could not decrypt {path}: crashed")

    monkeypatch.setattr(decrypt, "_read_once", broken)
    with pytest.raises(decrypt.DecryptError, match="crashed"):
        decrypt._read("b.pcap", "k")
    assert calls[2:] == ["b.pcap", "b.pcap"]


def test_a_capture_cut_short_keeps_what_tshark_decrypted_before_the_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: tshark exits with status 2 on a capture cut short in
    # the middle of a packet (a tcpdump killed while it wrote), which ended
    # read --tls-keylog with a traceback and no tables at all.
    needs_tshark()
    whole = (PCAPS / "implicit-tls-465.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:-40])  # within the last packet, the server's ACK
    out = tmp_path / "out"
    keylog = str(PCAPS / "implicit-tls-465.keylog")
    assert main(["read", str(cut), "--tls-keylog", keylog, "-q", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"smtpscope: {cut}: damaged at byte {len(whole) - 82}: record truncated: "
        "66 bytes of packet announced, 26 present\n"
    )
    t = read_captures(cut, tls_keylog=keylog)
    inside = t.commands[t.commands["tls"]]
    assert list(inside["verb"]) == DECRYPTED_VERBS["implicit-tls-465.pcap"]
    assert list(inside["reply_code"]) == [250, 250, 250, 354, 221]
    assert t.sessions["tls_decrypted"].tolist() == [True]
    assert t.transactions["status"].tolist() == ["accepted"]


def test_a_file_that_is_no_capture_leaves_the_others_decrypted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: tshark refuses the file, which ended the decryption
    # of every capture, and read showed and wrote no session at all.
    needs_tshark()
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all\n" * 10)
    good = str(PCAPS / "implicit-tls-465.pcap")
    keylog = str(PCAPS / "implicit-tls-465.keylog")
    out = tmp_path / "out"
    code = main(["read", good, str(junk), "--tls-keylog", keylog, "-q", "-o", str(out)])
    assert code == 1
    assert capsys.readouterr().err == (
        f"smtpscope: {junk}: not a pcap or pcapng file\n"
    )
    t = read_captures([good, junk], tls_keylog=keylog)
    inside = t.commands[t.commands["tls"]]
    assert list(inside["verb"]) == DECRYPTED_VERBS["implicit-tls-465.pcap"]
    assert t.sessions["tls_decrypted"].tolist() == [True]
    assert t.transactions["status"].tolist() == ["accepted"]
