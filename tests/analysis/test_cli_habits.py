"""What users of tcpdump and tshark type first, and what ``read`` makes of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.cli import main

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
AUTH = str(PCAPS / "auth.pcap")
RSET = str(PCAPS / "rset-multi.pcap")
FILTER_HINT = (
    "; read takes no packet filter: filter with tcpdump first, "
    "tcpdump -r CAPTURE -w - 'FILTER' | smtpscope read -\n"
)


def _tables(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    "argv",
    [
        ["-r", AUTH, RSET],  # a shell glob after one -r
        ["-r", AUTH, "-r", RSET],
        ["--read", RSET, AUTH],
        [AUTH, "-r", RSET],
    ],
)
def test_r_names_captures_as_the_arguments_do(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", "-q", "-o", str(tmp_path / "plain"), AUTH, RSET]) == 0
    assert main(["read", "-q", "-o", str(tmp_path / "r"), *argv]) == 0
    assert _tables(tmp_path / "r") == _tables(tmp_path / "plain")
    assert capsys.readouterr() == ("", "")


def test_no_capture_at_all_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "smtpscope read: error: the following arguments are required: "
        "CAPTURE (or -r CAPTURE)\n"
    )


@pytest.mark.parametrize(
    "name", ["host 192.0.2.7", "port 25", "tcp", "not port 80", "192.0.2.7 and port 25"]
)
def test_a_filter_after_the_capture_gets_a_hint(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # tcpdump -r F 'FILTER' habits: the capture is read, the filter is no
    # file, and the message says how to filter.
    assert main(["read", "-q", AUTH, name]) == 1
    assert capsys.readouterr() == (
        "",
        f"smtpscope: cannot read {name}: No such file or directory{FILTER_HINT}",
    )


def test_a_missing_file_gets_no_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "-q", AUTH, "mail-0412.pcap"]) == 1
    assert capsys.readouterr() == (
        "",
        "smtpscope: cannot read mail-0412.pcap: No such file or directory\n",
    )


def test_an_unquoted_filter_is_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    # Found in a new user's trial: one message a word, the hint repeated.
    assert main(["read", "-q", "-r", AUTH, "tcp", "port", "25"]) == 1
    assert capsys.readouterr() == (
        "",
        f"smtpscope: cannot read tcp port 25: No such file or directory{FILTER_HINT}",
    )
    # Up to the next file only: the captures after it are read.
    assert main(["read", "-q", "port", "25", AUTH, "mail-0412.pcap"]) == 1
    assert capsys.readouterr() == (
        "",
        f"smtpscope: cannot read port 25: No such file or directory{FILTER_HINT}"
        "smtpscope: cannot read mail-0412.pcap: No such file or directory\n",
    )
