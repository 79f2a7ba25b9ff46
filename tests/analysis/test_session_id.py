"""Session ids: stable, and spelled as base64's lower-case base 32."""

from __future__ import annotations

import base64
import random

from analysis.session import base32, session_id
from capture.stream import Connection


def test_base32_spells_digests_as_base64_does() -> None:
    draw = random.Random(5321)
    digests = [bytes(10), b"\xff" * 10] + [draw.randbytes(10) for _ in range(5000)]
    for digest in digests:
        assert base32(digest) == base64.b32encode(digest).decode().lower()


def test_a_session_id_depends_on_first_packet_time_and_4_tuple_only() -> None:
    conn = Connection(7, "192.0.2.1", 40000, "192.0.2.2", 25, first_ts=10**18)
    same = Connection(99, "192.0.2.1", 40000, "192.0.2.2", 25, first_ts=10**18)
    assert session_id(conn) == session_id(same) == "Swei4qfey6tmjgbuh"
