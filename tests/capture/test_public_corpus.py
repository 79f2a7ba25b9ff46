"""The reader, decoder and reassembler over every public capture.

The captures are read in place from ``../shared/pcaps/public`` beside the
checkout, or the folder ``SMTPSCOPE_CORPUS`` names (``tests.corpus``, see
that folder's README); none is copied into the project.
Where the folder is absent the tests skip, unless ``CI`` is set: there the
corpus must be present, so its absence fails.
"""

from __future__ import annotations

import csv

import pytest

from capture.decode import SMTP_PORTS, DecodeStats, decode_tcp
from capture.pcapfile import open_capture
from capture.source import SourceStats, iter_stream_events
from capture.stream import StreamClosed, StreamData, StreamGap, StreamOpened
from tests.corpus import CORPUS, MANIFEST, or_missing, require_corpus

pytestmark = pytest.mark.corpus


def manifest_rows() -> list[dict[str, str]]:
    if not MANIFEST.is_file():
        return []
    with MANIFEST.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


ROWS = manifest_rows()
# One stand-in row without the corpus, so that the tests below skip saying
# where they looked (require_corpus) rather than on an empty parameter set.
CASES = or_missing([pytest.param(row, id=row["path"]) for row in ROWS], 1)


def test_corpus_present() -> None:
    require_corpus()
    assert len(ROWS) > 0


@pytest.mark.parametrize("row", CASES)
def test_packet_count_matches_manifest(row: dict[str, str]) -> None:
    require_corpus()
    stats = DecodeStats()
    all_ports = frozenset(range(65536))
    with open_capture(str(CORPUS / row["path"])) as reader:
        count = 0
        for packet in reader:
            count += 1
            decode_tcp(packet.linktype, packet.data, all_ports, stats)
        assert reader.format == row["format"].removesuffix("+gzip")
        assert reader.compressed == row["format"].endswith("+gzip")
    assert count == int(row["packets"])
    assert stats.malformed == 0
    assert stats.unknown_linktype == 0


@pytest.mark.parametrize("row", CASES)
def test_streams_are_well_formed(row: dict[str, str]) -> None:
    require_corpus()
    ports = SMTP_PORTS | {1224}  # one capture serves SMTP on an odd port
    stats = SourceStats()
    opened: set[int] = set()
    closed: set[int] = set()
    for event in iter_stream_events([str(CORPUS / row["path"])], ports, stats=stats):
        conn_id = event.conn.conn_id
        if isinstance(event, StreamOpened):
            assert conn_id not in opened
            opened.add(conn_id)
        elif isinstance(event, StreamClosed):
            assert conn_id in opened and conn_id not in closed
            closed.add(conn_id)
        else:
            assert conn_id in opened and conn_id not in closed
            if isinstance(event, StreamData):
                assert event.data
            elif isinstance(event, StreamGap):
                assert event.size > 0
    assert stats.errors == []
    assert opened == closed
    assert stats.packets == int(row["packets"])
    if int(row["smtp_sessions"]) > 0:
        assert opened
