"""Live capture on Linux's "any" pseudo-interface (cooked headers: no ``vlan``
in BPF, tagged frames kept by their ether type)."""

from __future__ import annotations

import os
import sys

import pytest

from capture import libpcap
from capture.decode import SMTP_PORTS
from capture.live import LiveSource, capture_filter, capture_filters

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or os.geteuid() != 0
    or not libpcap.available(),
    reason="needs Linux, root and libpcap",
)


def test_any_interface_opens_with_the_filter_that_keeps_tags_by_ether_type() -> None:
    # libpcap has no "vlan" for Linux cooked captures: the plain filter fails
    # there, and the source falls back to the one that keeps tagged frames.
    with pytest.raises(libpcap.LibpcapError, match="filter"):
        LiveSource(["any"], capture_filter(SMTP_PORTS)).close()
    first, *fallback = capture_filters(SMTP_PORTS)
    source = LiveSource(["any"], first, fallback=fallback)
    try:
        assert len(source.captures) == 1
    finally:
        source.close()


def test_the_fallback_filters_are_each_compiled_once() -> None:
    # With a user's expression, vlan and ethertype make the same filter:
    # listed twice, it was compiled twice where it fails.
    plain = capture_filters(SMTP_PORTS)
    assert len(plain) == len(libpcap.TAGS) == len(set(plain))
    with_user = capture_filters(SMTP_PORTS, "host 192.0.2.1")
    assert with_user == [
        capture_filter(SMTP_PORTS, "host 192.0.2.1", tags="ethertype"),
        capture_filter(SMTP_PORTS, "host 192.0.2.1", tags="none"),
    ]
