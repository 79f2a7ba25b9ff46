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
from analysis.tables import read_captures
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


@pytest.fixture(scope="module")
def snapped(tmp_path_factory: pytest.TempPathFactory) -> str:
    """auth.pcap with every record cut to SNAPLEN bytes, the file's snaplen
    set to it, as editcap -s writes it."""
    original = (PCAPS / "auth.pcap").read_bytes()
    assert original[:4] == b"\xd4\xc3\xb2\xa1"  # little-endian, microseconds
    header = bytearray(original[:24])
    struct.pack_into("<I", header, 16, SNAPLEN)
    out = bytearray(header)
    at = 24
    while at < len(original):
        sec, frac, caplen, wire_len = struct.unpack_from("<IIII", original, at)
        kept = original[at + 16 : at + 16 + min(caplen, SNAPLEN)]
        out += struct.pack("<IIII", sec, frac, len(kept), wire_len) + kept
        at += 16 + caplen
    path = tmp_path_factory.mktemp("snap") / "auth-s80.pcap"
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
