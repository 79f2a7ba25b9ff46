"""Bounds that keep one hostile input from flooding memory or the tables."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from analysis.pipeline import SessionTracker
from analysis.session import MAX_ANOMALIES_PER_KIND, SessionBuilder
from analysis.tls import decrypt
from capture.decode import SYN
from capture.reassembly import Reassembler
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


def test_a_connection_that_sends_nothing_costs_little_memory() -> None:
    # A SYN flood or port scan on port 25 opens a connection per SYN, each
    # held until the idle timeout: its reassembly state, parser and session
    # builder must stay small. 6.0 KB each before the parser and builder
    # lost their instance dicts and empty queues; 3.1 KB after.
    reassembler = Reassembler(frozenset({25}))
    tracker = SessionTracker()
    count = 5000
    segments = [
        ((f"10.1.{i >> 8}.{i & 255}", "10.0.0.1", 1024 + i, 25), 1000, 0, SYN, b"", 0)
        for i in range(count)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, segment in enumerate(segments):
            for event in reassembler.feed(1_700_000_000 * 10**9 + i, segment):
                tracker.handle(event)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(tracker.builders) == count
    assert held / count < 3500
