"""The report of a ``ReportDigest`` is the report of the whole tables.

``smtpscope read`` without ``-q`` shows a summary, the alerts and the first
sessions. It used to build every table as DataFrames for that, so its memory
grew with the capture; ``ReportDigest`` keeps counts and the sessions shown.
Both must show the same, character and style for character and style: on
every project capture alone, on all of them together, and on the public
corpus read together.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from analysis import offline, pipeline, views
from analysis.spool import Spool
from tests.corpus import CAPTURES, require_corpus

PCAPS = sorted(
    str(p)
    for p in (Path(__file__).parents[2] / "pcaps").rglob("*")
    if p.suffix in {".pcap", ".pcapng", ".gz"}
)
# Wide, narrow enough to drop columns, and too narrow for most; every
# session, the default 20, and fewer than some captures' alerts.
SHAPES = [(160, None, True), (80, 20, True), (44, 3, False)]


def _spooled(paths: list[str], ports: frozenset[int]) -> Iterator[Spool]:
    with Spool(results=True) as spool:
        for result in pipeline.analyze(paths, ports, stats=spool.stats):
            spool.add(result)
        yield spool


def _text(shown: RenderableType, width: int) -> str:
    console = Console(
        file=io.StringIO(), width=width, record=True, color_system="truecolor"
    )
    console.print(shown)
    return console.export_text(styles=True)


def _both(spool: Spool, width: int, limit: int | None, summary: bool) -> list[str]:
    tables = offline.build_tables(spool)
    whole = views.report(tables, limit=limit, summary=summary, width=width)
    digest = views.ReportDigest(limit)
    offline.finish(spool, digest=digest, keep_alerts=False)
    digested = digest.report(spool.stats, summary=summary, width=width)
    return [_text(whole, width), _text(digested, width)]


def _check(paths: list[str], ports: frozenset[int] = pipeline.DEFAULT_PORTS) -> None:
    for spool in _spooled(paths, ports):
        for width, limit, summary in SHAPES:
            whole, digested = _both(spool, width, limit, summary)
            assert digested == whole, (width, limit, summary)


@pytest.mark.parametrize("path", PCAPS, ids=lambda p: Path(p).name)
def test_each_project_capture(path: str) -> None:
    _check([path])


def test_project_captures_together() -> None:
    _check(PCAPS)


@pytest.mark.corpus
def test_public_corpus_together() -> None:
    require_corpus()
    captures = sorted(CAPTURES.values(), key=lambda c: c.path)
    ports = frozenset().union(*(c.ports for c in captures))
    _check([str(c.file) for c in captures], ports)


def test_counts_of_a_known_capture() -> None:
    # The digest's numbers themselves: pcaps/auth.pcap, four sessions of
    # AUTH (pcaps/README.md): one refused password, one aborted AUTH LOGIN.
    auth = str(Path(__file__).parents[2] / "pcaps" / "auth.pcap")
    for spool in _spooled([auth], pipeline.DEFAULT_PORTS):
        digest = views.ReportDigest()
        offline.finish(spool, digest=digest)
        summary = digest.summary(spool.stats)
        assert summary == views.Summary(
            captures=1,
            packets=124,
            errors=0,
            packets_filtered=False,
            sessions=4,
            transactions=2,
            messages_accepted=2,
            tls_sessions=0,
            auth_successes=3,
            auth_failures=1,
            reply_classes={"2xx": 22, "3xx": 2, "4xx": 0, "5xx": 2, "other": 0},
            top_clients=[("127.0.0.1", 4)],
            alerts={},
            anomaly_kinds=[("auth_cleartext", 4)],
            smtp_packets=124,
            auth_attempts=5,  # the aborted AUTH LOGIN among them
        )
        assert summary == views.summarize(offline.build_tables(spool))


def test_a_refused_data_and_a_failed_handshake_are_counted_once_and_not_as_tls() -> (
    None
):
    # Found by a new user: a DATA refused before any content (its reply is
    # also its transaction's data_code) was counted twice among the
    # replies, and a STARTTLS whose handshake the server failed with an
    # alert counted in the TLS share check and live watch.
    from analysis.monitor import Monitor
    from analysis.tables import TableBuilder
    from tests.analysis.conversation import C, S, session

    refused = session(
        [
            (S, b"220 mx\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250 mx\r\n"),
            (C, b"MAIL FROM:<a@b>\r\n"),
            (S, b"250 ok\r\n"),
            (C, b"RCPT TO:<c@d>\r\n"),
            (S, b"550 no\r\n"),
            (C, b"DATA\r\n"),
            (S, b"503 5.5.1 no valid recipients\r\n"),
        ]
    )
    failed = session(
        [
            (S, b"220 mx\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"220 go ahead\r\n"),
            (C, bytes.fromhex("16030100050100000100")),
            (S, bytes.fromhex("15030300020228")),  # fatal handshake_failure
        ]
    )
    assert (failed.session.tls, failed.session.tls_handshake) == ("starttls", "failed")
    digest = views.ReportDigest()
    builder = TableBuilder()
    monitor = Monitor(0)
    for result in (refused, failed):
        digest.add(result)
        builder.add(result)
        monitor.add(result, 10**9)
    summary = digest.summary(pipeline.RunStats())
    assert summary.reply_classes == {
        "2xx": 6,
        "3xx": 0,
        "4xx": 0,
        "5xx": 2,
        "other": 0,
    }
    assert summary.tls_sessions == 0
    assert summary == views.summarize(builder.build())
    assert (monitor.tls_sessions, monitor.tls_share) == (0, 0.0)
    assert monitor.reply_classes["5xx"] == 2
