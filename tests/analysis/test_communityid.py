"""The sessions' community_id against tshark's Community ID dissector.

Zeek, Suricata, Arkime and Wireshark tag flows with the same Community ID
(v1); arkime's expected values are checked in test_public_corpus.py, and
here every connection of the project's own captures, IPv6 included, against
tshark's ``communityid`` field.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from analysis import read_captures
from analysis.communityid import community_id
from tests.analysis import tls_port
from tests.analysis.test_tls_captures import needs_tshark

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"


def test_both_directions_give_one_value() -> None:
    # A session of arkime's smtp-data-521.pcap, as its .test file tags it.
    expected = "1:YM2Rp2Xas6R1dgz686pLShQRVJA="
    client, server = ("10.0.0.1", 56558), ("205.188.186.167", 587)
    assert community_id(*client, *server) == expected
    assert community_id(*server, *client) == expected
    # The same address on both ends: the ports decide the order.
    assert community_id("::1", 25, "::1", 40000) == community_id(
        "::1", 40000, "::1", 25
    )


@pytest.mark.parametrize("name", sorted(p.name for p in PCAPS.glob("*.pcap")))
def test_every_session_agrees_with_tshark(name: str) -> None:
    needs_tshark()
    fields = ["-T", "fields", "-e", "tcp.stream", "-e", "communityid"]
    output = subprocess.run(
        [
            "tshark",
            "-r",
            str(PCAPS / name),
            "--enable-protocol",
            "communityid",
            *fields,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    theirs = {
        line.split("\t")[1] for line in output.splitlines() if line.split("\t")[0]
    }
    tables = read_captures(PCAPS / name, implicit_tls_ports=tls_port.IMPLICIT_TLS)
    ours = set(tables.sessions["community_id"])
    assert ours == theirs
