#!/usr/bin/env python3
"""Write a synthetic classic pcap of a given size for benchmarking smtpscope.

    python3 bench/make_capture.py --size 100M /tmp/smtpscope-bench/100M.pcap
    python3 bench/make_capture.py --size 1G /tmp/smtpscope-bench/1G.pcap

The capture holds complete SMTP sessions (about a fifth of the packets) among
HTTPS, HTTP and SSH bulk transfers (most of the bytes), on Ethernet with IPv4
or IPv6, interleaved in time. The same size and seed give the same bytes.
The ground truth, what an analyzer should find, is printed and written next
to the capture as ``OUT.truth.json`` (see ``synth_smtp`` for what is
counted). Nothing is sent anywhere: frames are built in memory and written
to the file. Sizes take K, M and G suffixes in powers of 1024.
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import BinaryIO

from synth_bulk import PORT_WEIGHTS, Budget, BulkKit, bulk_flow
from synth_smtp import KIND_WEIGHTS, Kit, SmtpSession, Truth, port_for
from synth_tcp import FaultCounts, Frame, TcpConn, Wire

DEFAULT_DIR = Path("/tmp/smtpscope-bench")
SMTP_PACKET_SHARE = 0.20
IPV6_SHARE = 0.15
FAULT_RATE = 0.005  # per SMTP segment, once for resending, once for swapping
START_US = 1_709_251_200 * 1_000_000  # 2024-03-01T00:00:00Z

# Classic pcap file header: magic, version 2.4, zone, sigfigs, snaplen,
# LINKTYPE_ETHERNET; records are little-endian like the header.
_FILE_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1)
_RECORD = struct.Struct("<IIII")
_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'100M' -> 104857600; a bare number is bytes."""
    clean = text.strip().upper().removesuffix("B")
    factor = _SUFFIXES.get(clean[-1:], 1)
    number = clean[:-1] if clean[-1:] in _SUFFIXES else clean
    try:
        size = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return size


class Hosts:
    """Documentation addresses (RFC 5737, RFC 3849) handed out per flow.

    Each flow gets a client address and port never used before in the
    capture, so no 4-tuple is reused.
    """

    def __init__(self, rng: Random) -> None:
        v4_clients = [*_net("198.51.100.0/24"), *_net("203.0.113.0/24")]
        self.clients = {False: v4_clients, True: _net("2001:db8:c::/120")}
        self.servers = {False: _net("192.0.2.0/26"), True: _net("2001:db8:25::/122")}
        self.web = {False: _net("192.0.2.64/26"), True: _net("2001:db8:80::/122")}
        self.rng = rng
        self.flows = 0

    def pair(self, ipv6: bool, smtp: bool) -> tuple[bytes, int, bytes]:
        """Client address, client port, server address."""
        clients = self.clients[ipv6]
        client = clients[self.flows % len(clients)]
        port = 32_768 + (self.flows // len(clients)) % 28_000
        self.flows += 1
        servers = self.servers[ipv6] if smtp else self.web[ipv6]
        return client, port, self.rng.choice(servers)


def _net(cidr: str) -> list[bytes]:
    return [address.packed for address in ipaddress.ip_network(cidr).hosts()]


@dataclass(slots=True)
class Flow:
    """One connection being written: where its frames come from."""

    frames: Iterator[Frame]
    smtp: bool
    packets: int = 0


class Generator:
    """Merges connections by time, starting new ones as the capture grows.

    ``bulk_flows`` transfers run at any time, each replaced when it ends.
    SMTP sessions are started on credit: every non-SMTP packet written earns
    ``share / (1 - share)`` of a packet, and a session is started whenever
    the credit covers the average size of the sessions finished so far. So
    the SMTP share of packets holds whatever the traffic mix, and the number
    of sessions open at once follows from it.
    """

    def __init__(self, seed: int, bulk_flows: int) -> None:
        self.rng = Random(seed)
        self.kit = Kit.build(self.rng)
        self.bulk_kit = BulkKit.build(self.rng)
        self.hosts = Hosts(self.rng)
        self.truth = Truth()
        self.faults = FaultCounts()
        self.budget = Budget()
        self.bulk_flows = bulk_flows
        self._kinds = list(KIND_WEIGHTS)
        self._kind_weights = list(KIND_WEIGHTS.values())
        self._ports = list(PORT_WEIGHTS)
        self._port_weights = list(PORT_WEIGHTS.values())

    def _wire(self, smtp: bool, port: int) -> Wire:
        ipv6 = self.rng.random() < IPV6_SHARE
        client, client_port, server = self.hosts.pair(ipv6, smtp)
        return Wire((client, client_port), (server, port), self.rng.getrandbits(16))

    def _smtp_flow(self, start_us: int) -> Flow:
        rng = self.rng
        kind = rng.choices(self._kinds, self._kind_weights)[0]
        wire = self._wire(True, port_for(kind, rng))
        rtt, pace = rng.randrange(500, 80_000), rng.randrange(12, 120)
        conn = TcpConn(wire, rng, start_us, rtt, pace, self.faults, FAULT_RATE)
        return Flow(SmtpSession(conn, rng, self.kit, self.truth, kind).frames(), True)

    def _bulk_flow(self, start_us: int) -> Flow:
        rng = self.rng
        self.truth.other_flows += 1
        port = rng.choices(self._ports, self._port_weights)[0]
        # 12 to 120 Mbit/s per transfer: one 1500-byte frame per 100-1000 us.
        rtt, pace = rng.randrange(500, 80_000), rng.randrange(100, 1000)
        conn = TcpConn(self._wire(False, port), rng, start_us, rtt, pace)
        return Flow(bulk_flow(conn, rng, self.bulk_kit, self.budget, port), False)

    def write(self, out: BinaryIO, target: int) -> None:
        """Write the capture until it is ``target`` bytes, then finish flows."""
        truth, rng = self.truth, self.rng
        out.write(_FILE_HEADER)
        written = len(_FILE_HEADER)
        heap: list[tuple[int, int, Flow, bytes, bytes | memoryview]] = []
        order = 0

        def push(flow: Flow) -> None:
            nonlocal order
            frame = next(flow.frames, None)
            if frame is not None:
                order += 1
                heapq.heappush(heap, (frame[0], order, flow, frame[1], frame[2]))

        earn = SMTP_PACKET_SHARE / (1 - SMTP_PACKET_SHARE)
        credit, finished, finished_packets = 0.0, 0, 0
        for slot in range(self.bulk_flows):
            push(self._bulk_flow(START_US + slot * rng.randrange(1000, 50_000)))
        pack, write = _RECORD.pack, out.write
        packets = 0
        while heap:
            ts, rank, flow, headers, payload = heap[0]
            size = len(headers) + len(payload)
            write(pack(ts // 1_000_000, ts % 1_000_000, size, size))
            write(headers)
            write(payload)
            written += 16 + size
            packets += 1
            flow.packets += 1
            if written >= target:
                self.budget.closing = True

            # This flow's next frame takes its place in the heap.
            frame = next(flow.frames, None)
            if frame is not None:
                heapq.heapreplace(heap, (frame[0], rank, flow, frame[1], frame[2]))
            else:
                heapq.heappop(heap)
                if flow.smtp:
                    finished += 1
                    finished_packets += flow.packets
                elif not self.budget.closing:
                    push(self._bulk_flow(ts + rng.randrange(100, 20_000)))

            # SMTP sessions start on the credit non-SMTP packets earn.
            if flow.smtp:
                truth.smtp_packets += 1
            elif not self.budget.closing:
                credit += earn
                average = finished_packets / finished if finished else 50.0
                while credit >= average:
                    credit -= average
                    push(self._smtp_flow(ts + rng.randrange(10, 5000)))
        truth.packets = packets
        truth.bytes = written
        truth.retransmitted_segments = self.faults.retransmitted
        truth.reordered_segments = self.faults.reordered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="pcap file to write")
    parser.add_argument(
        "--size", type=parse_size, default="100M", help="target size, e.g. 1G"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bulk-flows", type=int, default=4, help="non-SMTP transfers at once"
    )
    args = parser.parse_args(argv)

    target: int = args.size
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generator = Generator(args.seed, args.bulk_flows)
    with args.output.open("wb", buffering=8 << 20) as out:
        generator.write(out, target)
    elapsed = time.perf_counter() - started

    truth = generator.truth.as_json()
    truth_path = args.output.with_name(args.output.name + ".truth.json")
    meta = {"seed": args.seed, "target_bytes": target, "generator": "bench/1"}
    truth_path.write_text(json.dumps({**meta, **truth}, indent=2) + "\n")
    for key, value in truth.items():
        print(f"{key:26} {value}")
    print(f"{'wrote':26} {args.output} in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
