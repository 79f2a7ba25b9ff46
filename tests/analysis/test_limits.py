"""Bounds that keep one hostile input from flooding memory or the tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.session import MAX_ANOMALIES_PER_KIND, SessionBuilder
from analysis.tls import decrypt
from capture.stream import Connection, Direction


def test_anomalies_of_one_kind_are_capped_per_session() -> None:
    conn = Connection(0, "192.0.2.1", 40000, "192.0.2.2", 25, first_ts=1)
    builder = SessionBuilder(conn, frozenset({465}))
    for i in range(MAX_ANOMALIES_PER_KIND + 50):
        builder.gap(Direction.CLIENT, 10, i)
    result = builder.close(1000, "fin")
    gaps = [a for a in result.anomalies if a.kind == "tcp_gap"]
    assert len(gaps) == MAX_ANOMALIES_PER_KIND
    assert gaps[-1].detail.endswith("(further tcp_gap not recorded)")
    # The session still counts every gap.
    assert result.session.gaps == MAX_ANOMALIES_PER_KIND + 50


def test_an_overlong_key_log_is_refused_before_tshark_runs(tmp_path: Path) -> None:
    keylog = tmp_path / "huge.keylog"
    line = "CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\n"
    keylog.write_text(line * (decrypt.MAX_KEYLOG_LINES + 1))
    with pytest.raises(decrypt.DecryptError, match="more than"):
        decrypt._check_keylog_size(str(keylog))
    keylog.write_text(line * 10)
    decrypt._check_keylog_size(str(keylog))
