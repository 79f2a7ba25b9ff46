"""Captures whose snap length cut the SMTP packets short.

pcaps/auth.pcap cut to 80 bytes a packet, as ``tcpdump -s 80`` or
``editcap -s 80`` leaves it: the run counts the packets cut and the bytes
they lost, says so on stderr and in the summary, whichever reader and however
many processes read it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from analysis import parallel, pipeline
from analysis.cli import main
from analysis.smtp import auth
from analysis.tables import read_captures
from capture.decode import DecodeStats, decode_at
from tests.analysis.test_views import _summary_rows

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
SNAPLEN = 80
# Of auth.pcap's 124 packets, those longer than 80 bytes, and what they
# carried past them (tshark: frame.len > 80, the sum of frame.len - 80).
CUT = 45
CUT_BYTES = 1_384
WARNING = (
    "smtpscope: warning: 45 packets on the SMTP ports were cut short by the "
    "capture's snap length (1,384 bytes of payload not captured): what they "
    "held is missing from the tables, shown as tcp_gap anomalies, and the rows "
    "around the gaps are incomplete; capture whole packets (tcpdump -s 0) to "
    "see it\n"
)


HEADER_WARNING = (
    "smtpscope: warning: the capture's snap length cut packets on the SMTP "
    "ports inside their TCP headers, so they were dropped whole and their "
    "connections are missing from the tables; capture whole packets (tcpdump "
    "-s 0) to see them\n"
)


@pytest.fixture(scope="module")
def snapped(tmp_path_factory: pytest.TempPathFactory) -> str:
    """auth.pcap with every record cut to SNAPLEN bytes, the file's snaplen
    set to it, as editcap -s writes it."""
    return _cut(tmp_path_factory, SNAPLEN)


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> str:
    """auth.pcap cut to 40 bytes a packet: the TCP header's ports and no
    more (Ethernet 14, IPv4 20)."""
    return _cut(tmp_path_factory, 40)


def _cut(tmp_path_factory: pytest.TempPathFactory, snaplen: int) -> str:
    original = (PCAPS / "auth.pcap").read_bytes()
    assert original[:4] == b"\xd4\xc3\xb2\xa1"  # little-endian, microseconds
    header = bytearray(original[:24])
    struct.pack_into("<I", header, 16, snaplen)
    out = bytearray(header)
    at = 24
    while at < len(original):
        sec, frac, caplen, wire_len = struct.unpack_from("<IIII", original, at)
        kept = original[at + 16 : at + 16 + min(caplen, snaplen)]
        out += struct.pack("<IIII", sec, frac, len(kept), wire_len) + kept
        at += 16 + caplen
    path = tmp_path_factory.mktemp("snap") / f"auth-s{snaplen}.pcap"
    path.write_bytes(out)
    return str(path)


def test_the_cut_packets_and_bytes_are_counted(snapped: str, reader: str) -> None:
    tables = read_captures(snapped)
    assert (tables.stats.snap_cut, tables.stats.snap_cut_bytes) == (CUT, CUT_BYTES)
    # What they lost is where the streams have gaps, one per packet cut.
    assert int((tables.anomalies["kind"] == "tcp_gap").sum()) == CUT


def test_every_share_counts_its_own(snapped: str, reader: str) -> None:
    spool = parallel.read_sharded([snapped], pipeline.DEFAULT_PORTS, 2)
    with spool:
        stats = spool.stats
    assert (stats.snap_cut, stats.snap_cut_bytes) == (CUT, CUT_BYTES)


def test_a_whole_capture_counts_none() -> None:
    tables = read_captures(str(PCAPS / "auth.pcap"))
    assert (tables.stats.snap_cut, tables.stats.snap_cut_bytes) == (0, 0)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_read_warns_on_stderr(
    snapped: str, jobs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", "-q", "-j", jobs, "-o", str(tmp_path), snapped]) == 0
    assert capsys.readouterr() == ("", WARNING)


@pytest.mark.parametrize("report", ["digest", "tables"])
def test_the_summary_says_so(
    snapped: str, report: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The report from a digest of the sessions, or from the whole tables
    # (views.summarize), which Parquet output builds.
    output = ["-o", str(tmp_path), "--format", "parquet"]
    assert main(["read", snapped, *(output if report == "tables" else [])]) == 0
    out, err = capsys.readouterr()
    assert _summary_rows(out) == {
        "captures": "1",
        "packets": "124",
        "packets on SMTP ports": "124",
        "cut short": "45 packets on SMTP ports (snap length)",
    }
    assert err == WARNING
    assert main(["read", str(PCAPS / "auth.pcap")]) == 0
    assert "cut short" not in capsys.readouterr().out


def test_headers_cut_off_are_counted_and_said(
    headless: str, reader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: tcpdump -s 40 left nothing but a hint to try --port.
    tables = read_captures(headless)
    assert (tables.stats.header_cut, tables.stats.smtp_packets) == (124, 0)
    assert tables.stats.snap_cut == 0
    for jobs in ("1", "2"):
        assert main(["read", "-j", jobs, "-o", str(tmp_path), headless]) == 0
        out, err = capsys.readouterr()
        assert _summary_rows(out) == {
            "captures": "1",
            "packets": "124",
            "packets on SMTP ports": "0",
            "cut short": "TCP headers on SMTP ports (snap length)",
        }
        assert err == HEADER_WARNING


def test_a_packet_shorter_than_its_header_says_is_no_cut_header() -> None:
    # Damage, not the capture: the record holds the whole frame, which ends
    # inside the TCP header its IP header announced.
    stats = DecodeStats()
    frame = bytes(12) + b"\x08\x00" + _ipv4_header(total=24) + b"\x00\x19\x30\x39"
    assert decode_at(1, frame, 0, len(frame), frozenset({25}), stats) is None
    assert (stats.malformed, stats.header_cut) == (1, 0)
    # The same header announcing a whole TCP header, of which 4 bytes came.
    cut = bytes(12) + b"\x08\x00" + _ipv4_header(total=40) + b"\x00\x19\x30\x39"
    assert decode_at(1, cut, 0, len(cut), frozenset({25}), stats) is None
    assert (stats.malformed, stats.header_cut) == (2, 1)
    other = bytes(12) + b"\x08\x00" + _ipv4_header(total=40) + b"\x00\x50\x30\x39"
    assert decode_at(1, other, 0, len(other), frozenset({25}), stats) is None
    assert (stats.malformed, stats.header_cut) == (3, 1)  # not an SMTP port


def _ipv4_header(total: int) -> bytes:
    return struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0, bytes(4), bytes(4)
    )


def test_a_login_whose_verdict_the_cut_lost_is_no_success(snapped: str) -> None:
    # Found in a new user's trial: the 535 of the second session's login was
    # cut, the 221 to QUIT was paired with its AUTH, and 2xx read as success.
    tables = read_captures(snapped)
    rows = tables.sessions[["session_id", "auth_result"]].to_dict("records")
    assert rows == [
        {"session_id": "Szkyy4lfbfkthc33c", "auth_result": None},
        {"session_id": "St7q3wod27oerqxk3", "auth_result": "refused"},
        {"session_id": "Suhoxbsxnzi33qbfg", "auth_result": "success"},
        {"session_id": "Sxj2qo5m6mdksxfey", "auth_result": "refused"},
    ]


@pytest.mark.parametrize(
    ("code", "enhanced", "verdict"),
    [
        (235, "2.7.0", "success"),
        (250, None, "success"),  # an old server's way
        (221, "2.0.0", "refused"),  # QUIT's reply, paired across a gap
        (220, None, "refused"),  # a greeting
        (535, "5.7.8", "failure"),
        (454, "4.7.0", "refused"),
    ],
)
def test_what_a_reply_to_auth_says(
    code: int, enhanced: str | None, verdict: str
) -> None:
    assert auth.outcome(code, enhanced) == verdict


def test_check_is_no_ok_on_a_cut_capture(
    snapped: str, headless: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in a new user's trial: OK on both, the warnings on stderr only,
    # which a monitoring system drops.
    assert main(["check", "-r", snapped]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        "SMTPSCOPE WARNING - judged on what could be read: 45 packets on the "
        "SMTP ports cut short by the snap length - 4 sessions on auth-s80.pcap"
    )
    assert main(["check", "-r", headless]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        "SMTPSCOPE WARNING - judged on what could be read: TCP headers on the "
        "SMTP ports cut by the snap length - 0 sessions on auth-s40.pcap"
    )
