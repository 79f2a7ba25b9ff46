"""Equality of two runs' outputs, for tests that compare ways of reading."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.tables import SmtpTables


def same_tables(left: SmtpTables, right: SmtpTables) -> None:
    """Every table equal: rows, order, columns and dtypes."""
    for name, frame in left.frames().items():
        pd.testing.assert_frame_equal(frame, right.frames()[name], obj=name)


def same_files(left: Path, right: Path) -> None:
    """The same file names in both directories, byte for byte the same."""
    names = sorted(p.name for p in left.iterdir())
    assert names == sorted(p.name for p in right.iterdir())
    for name in names:
        assert (left / name).read_bytes() == (right / name).read_bytes(), name
