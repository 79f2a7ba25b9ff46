"""DataBody: the end of a message and its smuggling shapes, however split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.smtp.framing import DataBody, find_dot_line

PIECES = st.sampled_from([b".", b"a", b"\r\n", b"\n", b"\r", b"..", b"X"])


def _feed(wire: bytes, cuts: list[int]) -> tuple[object, ...]:
    body = DataBody(strict=True)
    start = 0
    for cut in [*cuts, len(wire)]:
        if cut <= start:
            continue
        end = body.feed(wire[start:cut], 0)
        if end >= 0:
            return (
                start + end,
                body.size,
                body.bare_lf_dot_lines,
                (body.cut_at_bare_lf_end()),
            )
        start = cut
    return -1, body.size, body.bare_lf_dot_lines, body.cut_at_bare_lf_end()


@settings(max_examples=1500, deadline=None)
@given(st.lists(PIECES, max_size=14), st.data())
def test_any_segmentation_gives_the_same_end_size_and_smuggling_shapes(
    pieces: list[bytes], data: st.DataObject
) -> None:
    # Where the sender splits its segments must not hide a bare-LF dot line
    # (a smuggler chooses the splits) nor change the message size.
    wire = b"Subject: a\r\n" + b"".join(pieces) + b"\r\n.\r\nQUIT\r\n"
    offsets = st.integers(1, len(wire) - 1)
    cuts = sorted(data.draw(st.lists(offsets, max_size=6, unique=True)))
    assert _feed(wire, cuts) == _feed(wire, [])


def test_bare_lf_dot_split_after_the_lf_is_still_seen() -> None:
    wire = b"Subject: s\r\n\r\nhate\n.\n\r\nQUIT\r\n"
    cut = wire.index(b".\n")
    assert _feed(wire, [cut])[2:] == _feed(wire, [])[2:]
    assert _feed(wire, [])[2] == 1


def test_empty_message_split_after_dot_cr_ends() -> None:
    assert _feed(b".\r\nQUIT\r\n", [2]) == (3, 0, 0, None)


def test_a_bare_lf_first_line_does_not_make_the_body_lenient() -> None:
    # The first line is the sender's to choose: a smuggler would start with
    # a bare LF to be read leniently. The CRLF end still ends the message.
    wire = b"x\nMAIL FROM:<a@b>\n.\r\nRCPT TO:<c@d>\r\n.\r\n"
    end, _size, bare, cut = _feed(wire, [])
    assert end == len(wire)
    assert bare == 1 and cut is not None


def test_find_dot_line_is_bytes_find_on_every_short_string() -> None:
    # Every string of up to 7 bytes over the bytes that matter (and one
    # that does not), from every start, including past the end.
    alphabet = (b"\n", b".", b"\r", b"\xe9")
    layer = [b""]
    everything = [b""]
    for _ in range(7):
        layer = [s + b for s in layer for b in alphabet]
        everything += layer
    for text in everything:
        for pos in range(len(text) + 2):
            assert find_dot_line(text, pos) == text.find(b"\n.", pos), (text, pos)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 3000))
def test_find_dot_line_is_bytes_find_on_any_bytes(text: bytes, pos: int) -> None:
    assert find_dot_line(text, pos) == text.find(b"\n.", pos)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\n.", b".", b"\n", b"\r\n", b"x" * 700, b"\xff"])))
def test_find_dot_line_is_bytes_find_on_long_dotted_text(pieces: list[bytes]) -> None:
    text = b"".join(pieces)
    for pos in range(0, len(text) + 1, 97):
        assert find_dot_line(text, pos) == text.find(b"\n.", pos)


def test_find_dot_line_exact_values() -> None:
    assert find_dot_line(b".\n.", 0) == 1  # a dot at 0 starts no pair
    assert find_dot_line(b"\n.", 0) == 0
    assert find_dot_line(b"\n.", 1) == -1
    assert find_dot_line(b"abc\r\n..\r\n", 0) == 4
    assert find_dot_line(b"a.b.c\n\n.", 0) == 6
    assert find_dot_line(b"QUJD\r\nREVG\r\n", 0) == -1  # base64: no dot


_HOSTILE_PIECES = (b".", b"..", b"\r\n", b"\n", b"\r", b"\r\n.\r\n", b"\n.\n")
HOSTILE = st.sampled_from(
    [*_HOSTILE_PIECES, b"\n.\r\n", b"\xc3\xa9", b"y" * 1500, b"z. z"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(HOSTILE, max_size=12), st.data())
def test_data_body_is_the_same_with_bytes_find(
    pieces: list[bytes], data: st.DataObject
) -> None:
    # The body as DataBody follows it with find_dot_line and with the
    # bytes.find it mirrors: non-ASCII, bare LF, lone CR, dot lines cut at
    # segment boundaries, lines longer than a segment.
    import analysis.smtp.framing as framing

    wire = b"Subject: a\r\n" + b"".join(pieces) + b"\r\n.\r\nQUIT\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=6)))
    fast = _feed(wire, cuts)
    general = framing.find_dot_line
    framing.find_dot_line = lambda buf, pos: buf.find(b"\n.", pos)
    try:
        assert _feed(wire, cuts) == fast
    finally:
        framing.find_dot_line = general
