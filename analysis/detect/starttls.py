"""STARTTLS attacks: stripping on the path, and bytes injected around the 220.

RFC 3207 6 warns that an attacker on the path can delete STARTTLS from the
server's EHLO reply (a downgrade), and RFC 3207 4.2 and CVE-2011-0411 that
bytes sent in the clear after STARTTLS, before the TLS handshake, end up
read as if they came inside TLS. The parser and the cross-session check
(``analysis.downgrade``) already report both as anomalies; this module
turns them into observations:

- ``possible_downgrade`` counts per server: the server's reply is what was
  rewritten, so every client of a tampered path is one incident. It is
  found only once every session of a read is in, so an offline run's
  detectors are shown the session again with it (``AlertEngine.refreshed``).
- ``starttls_client_injection`` counts per client: the client sent the
  commands.
- ``starttls_server_injection`` counts per server (``server_side_key``): the
  bytes came from the server's side, whichever client received them.

Neither looks at ``[local] networks``: a downgrade or an injection on the
site's own clients is as much an attack as elsewhere.
"""

from __future__ import annotations

from analysis.detect.rules import Rules
from analysis.detect.window import (
    ObservationCells,
    PerSession,
    client_observation,
    server_observation,
    server_side_key,
)
from analysis.downgrade import KIND as DOWNGRADE
from analysis.downgrade import mangled_keyword
from analysis.escape import escape_controls
from analysis.records import AnomalyRecord, SessionRecord, SessionResult

CLIENT_INJECTION = "starttls_client_injection"
SERVER_INJECTION = "starttls_server_injection"
# The anomaly kinds this detector reads.
ANOMALY_KINDS = frozenset({DOWNGRADE, CLIENT_INJECTION, SERVER_INJECTION})
# A keyword overwritten in place keeps the length of the one it hides.
_STARTTLS_LENGTH = len("STARTTLS")


class StarttlsDetector(PerSession):
    KINDS = ("starttls_downgrade", "starttls_injection")

    def __init__(self, rules: Rules) -> None:
        del rules  # nothing site-specific: these attacks are attacks anywhere

    def extract(self, result: SessionResult) -> list[ObservationCells]:
        out = []
        reported: set[str] = set()
        for anomaly in result.anomalies:
            if anomaly.kind not in ANOMALY_KINDS or anomaly.kind in reported:
                continue
            reported.add(anomaly.kind)
            if anomaly.kind == DOWNGRADE:
                note = _stripped(result.session)
                if note is not None:
                    out.append(
                        server_observation(
                            result,
                            "starttls_downgrade",
                            anomaly.ts,
                            example=_shown(anomaly),
                            note=note,
                        )
                    )
            elif anomaly.kind == CLIENT_INJECTION:
                out.append(
                    client_observation(
                        result,
                        "starttls_injection",
                        anomaly.ts,
                        example=_shown(anomaly),
                    )
                )
            else:
                out.append(
                    server_observation(
                        result,
                        "starttls_injection",
                        anomaly.ts,
                        example=_shown(anomaly),
                        key=server_side_key(result.session.server_ip),
                    )
                )
        return out


def _shown(anomaly: AnomalyRecord) -> str:
    return escape_controls(f"{anomaly.kind}: {anomaly.detail}")


def _stripped(session: SessionRecord) -> str | None:
    """How the EHLO reply of a session flagged ``possible_downgrade`` lost
    STARTTLS, or None where the sign says nothing of STARTTLS itself.

    The check flags a reply with any keyword overwritten with X's. A box
    that rewrites STARTTLS alone (Cisco's ``XXXXXXXA``, an attacker) leaves
    one such keyword, of STARTTLS's length. A box that masks every
    extension it does not know (Cisco PIX's SMTP fixup) leaves several, of
    every length: STARTTLS may never have been offered at all, as in the
    public corpus's Exchange 2003 reply (``XXXA`` for TURN, ``XXXXXXXB``
    for CHUNKING, ``XXXC`` for VRFY, ...), so that is no alert, only the
    anomaly.
    """
    if session.starttls_offered:
        # The reply listed STARTTLS: nothing took its place, whatever else
        # was masked (CHUNKING, 8BITMIME and SMTPUTF8 have its length too).
        return None
    masked = [c for c in session.capabilities if mangled_keyword(c)]
    if not masked:
        return "STARTTLS missing where other sessions to the server got it"
    word = masked[0].split(" ", 1)[0]
    if len(masked) == 1 and len(word) == _STARTTLS_LENGTH:
        return f"keyword {escape_controls(word)} in its place"
    return None
