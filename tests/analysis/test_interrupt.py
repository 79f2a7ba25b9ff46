"""Ctrl-C keeps what was read: the open sessions are closed as interrupted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis import cli, pipeline
from analysis.records import SessionResult
from analysis.tables import read_captures
from capture import source
from capture.stream import StreamClosed, StreamEvent
from tests.capture.craft import Frame, ethernet, pcap, v4_tcp

CAPTURE = str(Path(__file__).parents[2] / "pcaps" / "rset-multi.pcap")


def _interrupted_source(
    paths: list[str],
    handle: Callable[[StreamEvent], SessionResult | None],
    *args: Any,
    **kwargs: Any,
) -> Iterator[SessionResult]:
    """The real events of the capture, until Ctrl-C before the close."""

    def until_the_close(event: StreamEvent) -> SessionResult | None:
        if isinstance(event, StreamClosed):
            raise KeyboardInterrupt
        return handle(event)

    return source.handle_stream_events(paths, until_the_close, *args, **kwargs)


@pytest.fixture
def ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "handle_stream_events", _interrupted_source)


@pytest.mark.usefixtures("ctrl_c")
def test_open_sessions_are_kept_and_marked() -> None:
    tables = read_captures(CAPTURE)
    assert tables.stats.interrupted
    assert list(tables.sessions["close"]) == ["interrupted"]
    assert list(tables.transactions["status"]) == [
        "accepted",
        "accepted",
        "reset",
        "accepted",
    ]


@pytest.mark.usefixtures("ctrl_c")
def test_cli_shows_the_sessions_and_exits_130(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = cli.main(["read", CAPTURE, "-o", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 130
    assert "interrupted" in err
    assert "messages accepted" in out
    assert (tmp_path / "sessions.jsonl").read_text().count("\n") == 1


def test_nothing_on_the_smtp_ports_says_how_to_add_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    web = tmp_path / "web.pcap"
    frame = ethernet(v4_tcp(sport=40000, dport=80, payload=b"GET / HTTP/1.0\r\n"))
    web.write_bytes(pcap([Frame(1_700_000_000, 0, frame)]))
    status = cli.main(["read", str(web), "-q"])
    err = capsys.readouterr().err
    assert status == 0
    assert "no TCP connection on the SMTP ports (25, 465, 587, 2525)" in err
    assert "--port N" in err
