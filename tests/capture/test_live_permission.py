"""Without the right to capture, ``smtpscope live`` says how to get it, exit 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import cli
from capture import libpcap

ROOT = Path(__file__).resolve().parents[2]


def test_permission_message_from_libpcap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(interface: str, *args: object, **kwargs: object) -> None:
        raise libpcap.CapturePermissionError(
            f"{interface}: socket: Operation not permitted"
        )

    monkeypatch.setattr(libpcap, "open_live", refuse)
    assert cli.main(["live", "-i", "eth9", "--no-dashboard"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no permission to capture on eth9" in err
    assert "CAP_NET_RAW and CAP_NET_ADMIN" in err and "setcap" in err


def test_a_filter_libpcap_cannot_compile_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(interface: str, *args: object, **kwargs: object) -> None:
        raise libpcap.FilterError("filter: can't parse filter expression: syntax error")

    monkeypatch.setattr(libpcap, "open_live", refuse)
    args = ["-i", "lo", "-f", "tcp port"]
    assert cli.main(["live", *args, "--no-dashboard"]) == 2
    assert capsys.readouterr().err == (
        "smtpscope: -f 'tcp port': can't parse filter expression: syntax error\n"
    )
    assert cli.main(["check", *args, "--duration", "1"]) == 3
    assert capsys.readouterr().out.startswith("SMTPSCOPE UNKNOWN - -f 'tcp port': ")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not libpcap.available(),
    reason="needs root (to drop the capabilities) and setpriv",
)
def test_real_capture_without_cap_net_raw() -> None:
    # Root without CAP_NET_RAW and CAP_NET_ADMIN in its bounding set: what
    # an unprivileged user meets.
    result = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw,-net_admin", "--inh-caps=-all",
         sys.executable, "-m", "analysis", "live", "-i", "lo", "--no-dashboard"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no permission to capture on lo" in result.stderr
    assert "Traceback" not in result.stderr
