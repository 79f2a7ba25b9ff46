"""The row encoders of ``analysis.rowfiles`` against the plain definitions."""

from __future__ import annotations

import time

import pytest

from analysis.rowfiles import iso_timestamp
from tests.analysis.table_samples import T0


@pytest.mark.parametrize(
    "ns",
    [0, 1, -1, 999_999_999, 1_000_000_000, -1_000_000_001, T0, 253402300799999999999],
)
def test_iso_timestamp_of_any_integer(ns: int) -> None:
    seconds, fraction = divmod(ns, 1_000_000_000)
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    assert iso_timestamp(ns) == f"{second}.{fraction:09d}Z"
