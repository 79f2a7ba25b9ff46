"""``-j N``: one capture set analysed by N worker processes.

Each worker reads every capture but keeps only the connections that hash to
it (``capture.libpcap.shard_of``: the same both ways, so a connection is
never split). Workers spool their results to files in a directory of the
parent's spool and return only a description of them (``SpoolPart``), so
nothing large crosses between processes. The parent replays all parts as
one spool: the tables are the same rows in the same order as a single
process gives, because session ids and row order depend only on the
traffic, and the detectors see every session at once.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from analysis import pipeline
from analysis.detect import Rules
from analysis.rowfiles import Format
from analysis.spool import Spool, SpoolPart


def read_sharded(
    paths: Sequence[str],
    ports: frozenset[int],
    jobs: int,
    spool: Spool | None = None,
) -> Spool:
    """Analyse ``paths`` in ``jobs`` processes into ``spool`` (or a new one).

    This process takes the first share itself while ``jobs - 1`` workers
    take the others, so no process sits idle. ``spool.stats`` is set to the
    merged statistics of all shares.
    """
    spool = spool if spool is not None else Spool()
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    directory = spool.scratch_directory()
    settings = _Settings(directory, spool.rules, spool.rows, spool.results)
    work = [(list(paths), ports, (k, jobs), settings) for k in range(jobs)]
    with ProcessPoolExecutor(max_workers=jobs - 1, mp_context=context) as pool:
        others = [pool.submit(_work, job) for job in work[1:]]
        parts = [_work(work[0])]
        parts += [future.result() for future in others]

    for part in parts:
        spool.adopt(part)
    spool.stats = _merged_stats([part.stats for part in parts])
    return spool


@dataclass(frozen=True, slots=True)
class _Settings:
    """What a worker's spool must share with the parent's."""

    directory: str
    rules: Rules | None
    rows: Format | None
    results: bool


def _work(
    job: tuple[list[str], frozenset[int], tuple[int, int], _Settings],
) -> SpoolPart:
    paths, ports, shard, settings = job
    spool = Spool(
        settings.directory,
        named=True,
        rules=settings.rules,
        rows=settings.rows,
        results=settings.results,
    )
    try:
        for result in pipeline.analyze(paths, ports, stats=spool.stats, shard=shard):
            spool.add(result)
        return spool.detach()
    except BaseException:
        spool.close()  # its file would not be adopted
        raise


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
        # Any share stopped early (Ctrl-C reaches every process, SIGTERM
        # at least this one) makes the whole run an interrupted one.
        interrupted=any(part.interrupted for part in parts),
    )
