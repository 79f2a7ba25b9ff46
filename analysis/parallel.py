"""``-j N``: one capture set analysed by N worker processes.

Each worker reads every capture but keeps only the connections that hash to
it (``capture.libpcap.shard_of``: the same both ways, so a connection is
never split). Workers return their ``TableBuilder``; merged and sorted, the
tables are the same rows in the same order as a single process gives,
because session ids and row order depend only on the traffic.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from analysis import pipeline
from analysis.detect import Rules
from analysis.tables import TableBuilder


def read_sharded(
    paths: Sequence[str],
    ports: frozenset[int],
    jobs: int,
    *,
    rules: Rules | None = None,
) -> TableBuilder:
    """Analyse ``paths`` in ``jobs`` processes and merge what they found.

    The detectors run on the merged builder, over every session at once, so
    alerts that count across connections see all of them.
    """
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    work = [(list(paths), ports, (k, jobs)) for k in range(jobs)]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        parts = list(pool.map(_work, work))

    merged = TableBuilder(rules=rules)
    for part in parts:
        merged.merge(part)
    merged.stats = _merged_stats([part.stats for part in parts])
    return merged


def _work(job: tuple[list[str], frozenset[int], tuple[int, int]]) -> TableBuilder:
    paths, ports, shard = job
    builder = TableBuilder()
    builder.add_all(pipeline.analyze(paths, ports, stats=builder.stats, shard=shard))
    return builder


def _merged_stats(parts: list[pipeline.RunStats]) -> pipeline.RunStats:
    """Every worker read every capture: count the files and errors once.

    Packets are counted once too, except behind libpcap's filter, where each
    worker only saw its share and the shares add up.
    """
    first = parts[0]
    filtered = any(part.filtered for part in parts)
    return pipeline.RunStats(
        captures=first.captures,
        packets=sum(p.packets for p in parts) if filtered else first.packets,
        bytes=first.bytes,
        smtp_packets=(
            sum(p.smtp_packets for p in parts) if filtered else first.smtp_packets
        ),
        errors=list(first.errors),
        filtered=filtered,
    )
