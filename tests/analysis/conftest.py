"""Fixtures shared by the tests of the -j runs (test_parallel_*)."""

from __future__ import annotations

import pytest

from capture import libpcap, source


@pytest.fixture(params=["python", "libpcap"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which reader every process, probes included, reads the captures with."""
    if request.param == "libpcap":
        if not libpcap.available():
            pytest.skip("libpcap is not installed")
        monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    else:
        monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    return str(request.param)
