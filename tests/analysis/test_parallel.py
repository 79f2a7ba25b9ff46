"""The fast paths give the same tables as the plain one.

``-j N`` splits connections over worker processes and libpcap's BPF filter
skips non-SMTP packets in C; neither may change a single row.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import cli, pipeline
from analysis.offline import build_tables
from analysis.parallel import read_sharded
from analysis.tables import SmtpTables, read_captures
from capture import decode, libpcap, source
from tests import corpus
from tests.analysis import tls_port
from tests.analysis.rewrite import as_pcapng, reframed, retagged
from tests.analysis.same import same_tables
from tests.capture.craft import Frame, TcpPeers, ethernet, pcap, v4_tcp

PCAPS = sorted(str(p) for p in (Path(__file__).parents[2] / "pcaps").glob("**/*.pcap"))


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> SmtpTables:
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    tables = read_captures(PCAPS, implicit_tls_ports=tls_port.IMPLICIT_TLS)
    monkeypatch.delenv("SMTPSCOPE_NO_LIBPCAP")
    return tables


def test_project_captures_are_there() -> None:
    assert len(PCAPS) >= 20  # the lab captures and the abuse ones


@pytest.mark.parametrize("jobs", [2, 3])
def test_sharded_run_gives_the_same_tables(plain: SmtpTables, jobs: int) -> None:
    with read_sharded(
        PCAPS, tls_port.PORTS, jobs, implicit_tls_ports=tls_port.IMPLICIT_TLS
    ) as spool:
        tables = build_tables(spool)
    same_tables(tables, plain)
    assert len(tables.alerts) > 10  # detectors ran over all shards together
    assert tables.stats.captures == len(PCAPS)
    assert tables.stats.packets == plain.stats.packets
    assert tables.stats.errors == []


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
def test_libpcap_fast_path_gives_the_same_tables(
    plain: SmtpTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    tables = read_captures(PCAPS, implicit_tls_ports=tls_port.IMPLICIT_TLS)
    same_tables(tables, plain)
    assert tables.stats.filtered
    # Only the packets on SMTP ports were counted: all of them, here.
    assert tables.stats.packets == plain.stats.packets


def both_readers(
    paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[SmtpTables, SmtpTables]:
    """The tables of the Python reader and of the libpcap path, checked to
    be the same."""
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    reference = read_captures(paths)
    monkeypatch.delenv("SMTPSCOPE_NO_LIBPCAP")
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    fast = read_captures(paths)
    same_tables(fast, reference)
    return reference, fast


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
def test_pcapng_on_the_fast_path_gives_the_same_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dumpcap and Wireshark write pcapng: libpcap reads it as well. Where it
    # reads a file otherwise (two link types, a Simple Packet Block's time),
    # the Python reader takes over.
    paths = [as_pcapng(p, tmp_path / f"{n}.pcapng") for n, p in enumerate(PCAPS)]
    paths.append(as_pcapng(PCAPS[0], tmp_path / "simple.pcapng", simple_at=5))
    reference, fast = both_readers(paths, monkeypatch)
    assert fast.stats.filtered and fast.stats.errors == []
    with read_sharded(paths, pipeline.DEFAULT_PORTS, 2) as spool:
        same_tables(build_tables(spool), reference)


ETHERNET = [p for p in PCAPS if "sll2" not in p]


def rewritten(
    rewrite: Callable[[str, Path, str], str], form: str, directory: Path
) -> list[str]:
    """The project's Ethernet captures, each rewritten in ``form``."""
    return [rewrite(p, directory / f"{n}.pcap", form) for n, p in enumerate(ETHERNET)]


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
@pytest.mark.parametrize("form", ["three", "sll", "sll2"])
def test_tagged_frames_on_the_fast_path_give_the_same_tables(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: libpcap's filter looked through two tags at most, and
    # through none under a Linux cooked header, and dropped the rest.
    paths = rewritten(retagged, form, tmp_path)
    reference, fast = both_readers(paths, monkeypatch)
    assert len(reference.sessions) > 50 and fast.stats.filtered


_PPP_FORMS = [
    "pppoe",
    "vlan-pppoe",
    "sll-pppoe",
    "ppp",
    "ppp-short",
    "ppp-dir",
    "ppp-ether",
    "chdlc",
    "hdlc-cisco",
]


@pytest.mark.parametrize("form", _PPP_FORMS)
def test_packets_over_ppp_give_the_tables_of_the_same_packets_over_ethernet(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No kernel here has PPP, so the project's own captures are reframed:
    # the same IP packets, the same rows; and without scapy's help.
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    monkeypatch.setattr(decode, "_scapy_layer_class", lambda linktype: None)
    reference = read_captures(ETHERNET)
    tables = read_captures(rewritten(reframed, form, tmp_path))
    same_tables(tables, reference)
    assert len(tables.sessions) > 50


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
@pytest.mark.parametrize("form", _PPP_FORMS)
def test_packets_over_ppp_on_the_fast_path_give_the_same_tables(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpcap's filter must keep what the decoder reads: PPPoE frames behind
    # Ethernet, a tag or a cooked header, and each PPP link type. Where it
    # reads PPP's header at a fixed place (or has no filter for the link
    # type), the Python reader reads the file.
    paths = rewritten(reframed, form, tmp_path)
    reference, fast = both_readers(paths, monkeypatch)
    in_python = form in ("ppp", "ppp-short", "ppp-dir", "hdlc-cisco")
    assert len(reference.sessions) > 50 and fast.stats.filtered != in_python


@pytest.mark.skipif(not libpcap.available(), reason="libpcap is not installed")
def test_damage_on_the_fast_path_is_located_by_the_python_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = Path(PCAPS[0]).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    monkeypatch.setenv("SMTPSCOPE_NO_LIBPCAP", "1")
    reference = read_captures([str(cut)])
    monkeypatch.delenv("SMTPSCOPE_NO_LIBPCAP")
    monkeypatch.setattr(source, "FAST_PATH_MIN_BYTES", 0)
    fast = read_captures([str(cut)])
    same_tables(fast, reference)
    assert fast.stats.errors == reference.stats.errors
    assert len(fast.stats.errors) == 1 and "damaged at byte" in fast.stats.errors[0]


def test_jobs_default_to_one_per_cpu_for_large_captures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    small = PCAPS[:2]
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert cli._jobs(None, small) == 1  # the project captures are small
    assert cli._jobs(3, small) == 3
    assert cli._jobs(0, small) == 4
    monkeypatch.setattr(cli, "AUTO_JOBS_MIN_BYTES", 1)
    assert cli._jobs(None, small) == 4
    assert cli._jobs(1, small) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cli._jobs(None, small) == cli.AUTO_JOBS_MAX  # each reads it all
    assert cli._jobs(0, small) == 64
    assert cli._jobs(None, ["-"]) == 1  # nothing to measure on a pipe
    assert cli._jobs(None, [str(tmp_path / "missing.pcap")]) == 1
    # Each process would inflate a compressed capture whole: one reads it.
    compressed = tmp_path / "c.pcap.gz"
    compressed.write_bytes(gzip.compress(Path(small[0]).read_bytes()))
    assert cli._jobs(None, [*small, str(compressed)]) == 1
    assert cli._jobs(2, [str(compressed)]) == 2


def test_a_large_capture_is_read_sharded_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "AUTO_JOBS_MIN_BYTES", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    calls: list[int] = []
    real = cli.read_sharded

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "read_sharded", counted)
    assert cli.main(["read", *PCAPS[:3], "-q", "-o", str(tmp_path)]) == 0
    assert calls == [2]
    sharded = (tmp_path / "sessions.jsonl").read_bytes()
    assert cli.main(["read", *PCAPS[:3], "-q", "-o", str(tmp_path), "-j", "1"]) == 0
    assert calls == [2]
    assert (tmp_path / "sessions.jsonl").read_bytes() == sharded


def _idle_tail_capture(path: Path) -> None:
    """Two connections that two workers share out: A says one line and goes
    quiet; B, opened a second later, goes on past A's idle timeout (600 s)."""
    client, server = "192.0.2.1", "198.51.100.2"
    ports = iter(range(40000, 40100))
    a = next(p for p in ports if libpcap.shard_of(client, p, server, 25, 2) == 0)
    b = next(p for p in ports if libpcap.shard_of(client, p, server, 25, 2) == 1)

    def frames(sport: int, times: list[int]) -> list[Frame]:
        def sent(by_client: bool, frac: int, **kw: Any) -> Frame:
            ends = (
                (client, server, sport, 25)
                if by_client
                else (server, client, 25, sport)
            )
            return Frame(times[0], frac, ethernet(v4_tcp(*ends, **kw)))  # fmt: skip

        out = [
            sent(True, 0, seq=99, flags=0x02),
            sent(False, 1, seq=499, ack=100, flags=0x12),
            sent(True, 2, seq=100, ack=500, flags=0x10),
        ]
        line = b"220 ready\r\n"
        for n, t in enumerate(times):
            greeting = sent(False, 3, payload=line, seq=500 + n * len(line), ack=100)
            out.append(Frame(t, 3, greeting.data))
        return out

    both = frames(a, [1000]) + frames(b, [1001, 1100, 1300, 1500, 1700])
    path.write_bytes(pcap(sorted(both, key=lambda f: (f.ts_sec, f.ts_frac))))


@pytest.mark.parametrize("jobs", [2, 3])
def test_a_connection_idle_at_the_end_closes_as_idle_in_every_worker(
    tmp_path: Path, jobs: int
) -> None:
    # One process closes A as idle when B's packets take the clock past
    # A's timeout; the worker holding A alone sees none of them, and learns
    # the time at the end from the others (parallel._agree).
    capture = tmp_path / "idle-tail.pcap"
    _idle_tail_capture(capture)
    plain = read_captures([str(capture)])
    assert list(plain.sessions["close"]) == ["idle", "end_of_capture"]
    # A ends at its last packet, 3 µs after its first, though it was
    # closed only when its timeout ran out, 600 s later.
    last = pd.Timestamp(1000_000_003_000, unit="ns", tz="UTC")
    assert plain.sessions["end"].iloc[0] == last
    with read_sharded([str(capture)], pipeline.DEFAULT_PORTS, jobs) as spool:
        same_tables(build_tables(spool), plain)


def test_captures_of_different_days_give_the_same_tables_in_workers() -> None:
    # Found in review: the first capture's last session closed as idle in one
    # process (the second capture's packets take the clock on), as at the end
    # of its capture under -j 2.
    corpus.require_corpus()
    zeek = corpus.CORPUS / "zeek__zeek"
    paths = [
        str(zeek / "testing__btest__Traces__smtp-attachment-msg.pcap"),
        str(zeek / "testing__btest__Traces__smtp-mail-transactions-invalid.pcap"),
    ]
    plain = read_captures(paths)
    assert plain.sessions["close"].iloc[0] == "idle"
    for jobs in (2, 3):
        with read_sharded(paths, pipeline.DEFAULT_PORTS, jobs) as spool:
            same_tables(build_tables(spool), plain)


def _skewed_capture(path: Path, count: int, jobs: int) -> None:
    """``count`` connections open at once, all hashing to the first of
    ``jobs`` processes; each then sends a mail and closes with FINs."""
    client, server = "192.0.2.1", "198.51.100.2"
    ports = [
        p
        for p in range(30000, 40000)
        if libpcap.shard_of(client, p, server, 25, jobs) == 0
    ][:count]
    frames: list[Frame] = []
    peers = {p: TcpPeers(client, p, server, 25, cseq=999, sseq=4999) for p in ports}
    for n, tcp in enumerate(peers.values()):
        frames.append(Frame(1000 + n, 0, tcp.frame(True, b"", 0x02)))
        frames.append(Frame(1000 + n, 1, tcp.frame(False, b"", 0x12)))
        frames.append(Frame(1000 + n, 2, tcp.frame(True, b"", 0x10)))
        frames.append(Frame(1000 + n, 3, tcp.frame(False, b"220 mx\r\n", 0x18)))
    for n, tcp in enumerate(peers.values()):
        steps = [
            (True, b"EHLO c.example\r\n"),
            (False, b"250 mx\r\n"),
            (True, b"QUIT\r\n"),
            (False, b"221 bye\r\n"),
        ]
        for k, (by_client, line) in enumerate(steps):
            frames.append(Frame(1100 + n, k, tcp.frame(by_client, line, 0x18)))
        frames.append(Frame(1100 + n, 10, tcp.frame(True, b"", 0x11)))
        frames.append(Frame(1100 + n, 11, tcp.frame(False, b"", 0x11)))
        frames.append(Frame(1100 + n, 12, tcp.frame(True, b"", 0x10)))
    path.write_bytes(pcap(frames))


def test_a_process_can_reach_its_share_of_the_limit_below_the_limit(
    tmp_path: Path,
) -> None:
    # The README's example: 15 connections open at once, below a limit of
    # 20, all in the first of 2 processes, whose share is 10. Connections
    # are shared out by hash, not evenly: that process evicts, one process
    # reading all does not.
    capture = tmp_path / "skewed.pcap"
    _skewed_capture(capture, 15, 2)
    with read_sharded(
        [str(capture)], pipeline.DEFAULT_PORTS, 1, max_connections=20
    ) as spool:
        alone = build_tables(spool)
    assert alone.stats.evicted == 0
    assert list(alone.sessions["close"]) == ["fin"] * 15
    with read_sharded(
        [str(capture)], pipeline.DEFAULT_PORTS, 2, max_connections=20
    ) as spool:
        shared = build_tables(spool)
    # Past 10 open, the oldest are evicted until a tenth of the share is
    # free; their later packets start connections caught after their start
    # (closed by their FINs), which push out more.
    assert shared.stats.evicted == 12
    closes = shared.sessions["close"].value_counts().to_dict()
    assert closes == {"evicted": 12, "fin": 15}
