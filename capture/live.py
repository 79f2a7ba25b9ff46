"""Several live interfaces read as one packet source, without threads.

Each interface is a non-blocking libpcap handle with a selectable
descriptor; ``LiveSource.wait`` selects on all of them and returns what
the ready ones hold, merged in timestamp order so the reassembler sees one
clock. One thread does all the reading, so the analysis after it needs no
locks.

The kernel filter is the SMTP-port expression of ``capture.libpcap``, and
the user's own expression when one is given: a packet must pass both.
"""

from __future__ import annotations

import functools
import logging
import select
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from capture import libpcap
from capture.pcapfile import RawPacket

log = logging.getLogger(__name__)

# Packets taken from one interface per wake-up: bounds the time between two
# ticks of the caller under a flood.
BATCH = 4096


@dataclass(frozen=True, slots=True)
class InterfaceCounts:
    interface: str
    received: int  # passed the filter (libpcap's ps_recv)
    dropped: int  # no room in the kernel ring (ps_drop)
    interface_dropped: int  # dropped by the interface or driver (ps_ifdrop)


def capture_filter(
    ports: Iterable[int], user_filter: str | None = None, *, tags: str = "vlan"
) -> str:
    """The kernel filter: SMTP ports, and the user's expression if any.

    ``tags`` as for ``libpcap.smtp_filter``: libpcap cannot compile the
    VLAN terms for some link types (Linux cooked on ``any``), and
    ``LiveSource`` falls back to the next way on its own.
    """
    if not user_filter:
        return libpcap.smtp_filter(ports, tags=tags)
    # With the user's expression, tagged frames are kept by their ether type
    # rather than looked into with ``vlan``: each ``vlan`` moves libpcap's
    # offsets for everything after it in the expression, so the user's
    # expression after the SMTP part's was read inside a tag on every frame
    # ("tcp port 587" kept nothing: found in a new user's check, where live
    # -f captured no packet and check -i -f said OK for no sessions), and a
    # ``vlan`` of the user's before it would do the same to the SMTP part.
    # So the user's expression means what it means to tcpdump, and the
    # decoder reads the ports of the tagged frames it lets through.
    plain = "ethertype" if tags == "vlan" else tags
    return f"({libpcap.smtp_filter(ports, tags=plain)}) and ({user_filter})"


def capture_filters(ports: Iterable[int], user_filter: str | None = None) -> list[str]:
    """``capture_filter`` in each way of ``libpcap.TAGS``, the first first,
    each once: with a user's expression, ``vlan`` and ``ethertype`` give the
    same, which would be compiled twice for a link type that refuses it."""
    filters = (capture_filter(ports, user_filter, tags=tags) for tags in libpcap.TAGS)
    return list(dict.fromkeys(filters))


class LiveSource:
    """The interfaces named, opened and filtered; closed by ``close``."""

    def __init__(
        self,
        interfaces: Sequence[str],
        expression: str,
        *,
        snaplen: int = 262144,
        promiscuous: bool = False,
        fallback: str | Sequence[str] = (),
    ) -> None:
        # The filter may not compile for an interface's link type (no VLAN
        # on "any"): each fallback is tried in turn.
        expressions = [expression]
        expressions += [fallback] if isinstance(fallback, str) else fallback
        self.captures: list[libpcap.LiveCapture] = []
        try:
            for name in interfaces:
                opener = functools.partial(
                    libpcap.open_live, name, snaplen=snaplen, promiscuous=promiscuous
                )
                capture = libpcap.first_that_compiles(opener, expressions)
                self.captures.append(capture)
                log.info(
                    "capturing on %s (link type %d, %s timestamps)",
                    name,
                    capture.linktype,
                    "ns" if capture.nanosecond else "us",
                )
        except BaseException:
            self.close()
            raise
        self.snaplen = snaplen

    def wait(self, timeout_s: float) -> list[tuple[int, RawPacket]]:
        """Packets that arrive within ``timeout_s``, as (interface index, packet).

        Returns early, with what is there, as soon as any interface has
        packets; an empty list when none came in time.
        """
        if not self.captures:
            return []
        ready, _, _ = select.select(self.captures, [], [], timeout_s)
        return self._read(c for c in self.captures if c in ready)

    def drain(self) -> list[tuple[int, RawPacket]]:
        """Everything still waiting in the rings, for a clean stop."""
        packets: list[tuple[int, RawPacket]] = []
        while True:
            batch = self._read(self.captures)
            if not batch:
                return packets
            packets.extend(batch)

    def counts(self) -> list[InterfaceCounts]:
        result = []
        for capture in self.captures:
            c = capture.counts()
            result.append(
                InterfaceCounts(
                    capture.interface, c.received, c.dropped, c.interface_dropped
                )
            )
        return result

    def close(self) -> None:
        for capture in self.captures:
            capture.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(
        self, captures: Iterable[libpcap.LiveCapture]
    ) -> list[tuple[int, RawPacket]]:
        packets: list[tuple[int, RawPacket]] = []
        several = 0
        for capture in captures:
            index = self.captures.index(capture)
            batch = capture.read(BATCH)
            if capture.error is not None:
                log.warning("%s: %s", capture.interface, capture.error)
                capture.error = None
            if batch:
                several += 1
                packets.extend((index, packet) for packet in batch)
        if several > 1:
            # Each ring is in time order; merged, the reassembler sees one
            # clock (sort is stable, so equal times keep ring order).
            packets.sort(key=_packet_time)
        return packets


def _packet_time(item: tuple[int, RawPacket]) -> int:
    return item[1].ts
